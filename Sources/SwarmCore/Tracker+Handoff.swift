/// Handoff as a transaction (ARCHITECTURE.md, “Handoff as a transaction”).
///
/// When the ring gives one of our factory names to another live node T:
/// 1. We start holding every message addressed to the name and ask the process
///    ``Tracker/Directive/beginHandoff(token:pid:name:)``.
/// 2. `.ignore` → release the held messages to it, ask again at the next ring change (during a
///    drain `.ignore` counts as `.restart`: the node is going away). A failure or timeout →
///    release, retry with backoff. `.restart` / `.resume(state)` → send T a ``HandoffOffer``.
/// 3. T starts the process from the factory; its first message is `endHandoff(state)`. T
///    registers it and answers `handoffAccepted` (idempotently, by offer id). If T already hosts
///    a copy it gives that copy `resolveConflict(state)` and accepts with it. If T is not the
///    owner by its own ring, or the start fails, it answers `handoffRejected`.
/// 4. On acceptance we unregister our entry, stop the old process and forward the held messages
///    to T (and keep forwarding late arrivals for a while). On rejection, timeout, or loss of T
///    we release the held messages to the old process, which never stopped: nothing is lost and
///    the name is never unknown.
extension Tracker.Instance {
    mutating func enqueueHandoffCheck(_ name: String) {
        if handoffQueued.insert(name).inserted { handoffQueue.append(name) }
    }

    /// Processes queued ownership checks within the concurrency limit.
    mutating func handoffTick() {
        // Transfers whose offer went unanswered.
        for name in handoffs.keys.sorted() {
            guard let handoff = handoffs[name], case .transferring(let target, let offer, let deadline, let attempts) = handoff.phase,
                deadline <= now
            else { continue }
            if attempts >= settings.handoffOfferAttempts {
                abortHandoff(name, reason: "no answer from \(target)")
            } else {
                handoffs[name]!.phase = .transferring(target: target, offer: offer, deadline: now + settings.handoffOfferTimeout, attempts: attempts + 1)
                send(target, .handoffOffer(offer))
            }
        }
        if !backoff.isEmpty {
            for name in backoff.keys.sorted() where backoff[name]!.until <= now {
                backoff[name] = nil
                enqueueHandoffCheck(name)
            }
        }
        guard !handoffQueue.isEmpty else { return }
        var index = 0
        while index < handoffQueue.count, handoffs.count < settings.maxConcurrentHandoffs {
            let name = handoffQueue[index]
            index += 1
            handoffQueued.remove(name)
            checkOwnership(name)
        }
        handoffQueue.removeFirst(index)
    }

    /// Starts a handoff if one of our factory names now belongs to another node.
    mutating func checkOwnership(_ name: String) {
        guard let entry = localEntries[name], entry.factory != nil, handoffs[name] == nil, backoff[name] == nil
        else { return }
        if yields[name] != nil {
            // A conflict is being settled first; look again afterwards.
            scheduleRetry(name)
            return
        }
        guard let owner = owner(of: name) else {
            // Draining with no other node in reach: keep it running; the drain waits until a
            // node is reachable again rather than losing the process.
            if draining && ring.isEmpty { return }
            // No node may host it (quorum lost, or the last node drains): stop it, keep it as an
            // orphan here so that it comes back when an owner exists again.
            trace("no owner for \(name): stopping \(entry.pid)")
            unregisterLocal(name: name, entry: entry, stop: .die)
            orphans[name] = Tracker.Orphan(entry: entry, nextAction: now, attempts: 0, stoppedByHost: true)
            return
        }
        if owner == me.name {
            ignoredAtEpoch[name] = nil
            return
        }
        if ignoredAtEpoch[name] == ringEpoch && !draining { return }
        guard connections[owner] != nil else { return }
        let token = makeToken()
        handoffs[name] = Tracker.OutgoingHandoff(phase: .asking(token: token), pid: entry.pid)
        handoffTokens[token] = name
        stats.handoffsStarted += 1
        trace("begin handoff of \(name) (\(entry.pid)) to \(owner)")
        emit(.beginHandoff(token: token, pid: entry.pid, name: name))
    }

    /// The process answered `beginHandoff`.
    public mutating func onHandoffAnswer(token: UInt64, answer: HandoffAnswer, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard let name = handoffTokens.removeValue(forKey: token), let handoff = handoffs[name],
            case .asking = handoff.phase
        else { return finish() }
        guard let entry = localEntries[name], entry.pid == handoff.pid, let factory = entry.factory else {
            handoffs[name] = nil
            for envelope in handoff.held { undeliverable(envelope, .unknownName(name)) }
            return finish()
        }
        var state: [UInt8]?
        switch answer {
        case .ignore where !draining:
            trace("\(name) answered ignore: stays here")
            ignoredAtEpoch[name] = ringEpoch
            releaseHeld(name)
            return finish()
        case .failed(let why):
            trace("handoff of \(name) failed: \(why)")
            stats.handoffsFailed += 1
            releaseHeld(name)
            scheduleRetry(name)
            return finish()
        case .ignore, .restart:
            state = nil
        case .resume(let resumeState):
            state = resumeState
        }
        guard let owner = owner(of: name), owner != me.name, let target = connections[owner] else {
            releaseHeld(name)
            enqueueHandoffCheck(name)
            return finish()
        }
        transfer(name, entry: entry, factory: factory, state: state, to: target)
        return finish()
    }

    mutating func transfer(_ name: String, entry: RegistryEntry, factory: FactorySpec, state: [UInt8]?, to target: NodeID) {
        let offer = HandoffOffer(id: nextHandoffID, name: name, factory: factory, groups: entry.groups, state: state, from: entry.pid)
        nextHandoffID += 1
        if handoffs[name] == nil {
            handoffs[name] = Tracker.OutgoingHandoff(phase: .asking(token: 0), pid: entry.pid)
        }
        handoffs[name]!.phase = .transferring(target: target, offer: offer, deadline: now + settings.handoffOfferTimeout, attempts: 1)
        trace("offer \(name) to \(target) (state: \(state.map { "\($0.count)B" } ?? "none"))")
        send(target, .handoffOffer(offer))
    }

    /// Swarm's `Tracker.handoff(name, state)`: hand one of our processes to its ring owner now,
    /// with `state`, without asking it `beginHandoff`. A process already on its owner stays.
    public mutating func onHandoff(name: String, state: [UInt8], request: RequestID, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard let entry = localEntries[name], let factory = entry.factory else {
            emit(.reply(request, .done(.unknownName(name))))
            return finish()
        }
        guard handoffs[name] == nil, yields[name] == nil else {
            emit(.reply(request, .done(.nameInTransition(name))))
            return finish()
        }
        guard let owner = owner(of: name) else {
            emit(.reply(request, .done(.noNodeAvailable)))
            return finish()
        }
        if owner != me.name, let target = connections[owner] {
            stats.handoffsStarted += 1
            transfer(name, entry: entry, factory: factory, state: state, to: target)
        }
        emit(.reply(request, .done(nil)))
        return finish()
    }

    /// The offer reached us, the new owner.
    mutating func receiveHandoffOffer(_ offer: HandoffOffer, from peer: NodeID) {
        let key = Tracker.HandoffKey(source: peer, id: offer.id)
        if let pid = acceptedHandoffs[key] {
            // A repeated offer (our acceptance was lost). Repeat it only while the process we
            // accepted with still holds the name: if it has since ended (a conflict yield, a
            // crash), accepting again would make the sender stop the last live copy.
            if localNames[pid]?.contains(offer.name) == true {
                send(peer, .handoffAccepted(id: offer.id, name: offer.name, pid: pid))
            } else {
                send(peer, .handoffRejected(id: offer.id, name: offer.name, reason: "the process that took it (\(pid)) has ended"))
            }
            return
        }
        if let pending = pendingStarts[offer.name], pending.handoff == key { return }  // starting
        if draining || yields[offer.name] != nil || handoffs[offer.name] != nil {
            // Our copy is leaving (drain, handoff or a conflict yield in flight): accepting would
            // hand the name to a process about to stop.
            send(peer, .handoffRejected(id: offer.id, name: offer.name, reason: "\(me.name) cannot take it now"))
            return
        }
        if let existing = localEntries[offer.name] {
            // We already host a copy (a concurrent registration, a partition leftover): it stays
            // and merges what the old one knew.
            trace("handoff of \(offer.name) meets local \(existing.pid): resolveConflict")
            if let state = offer.state { emit(.resolveConflict(existing.pid, state: state)) }
            acceptedHandoffs.remember(key, existing.pid)
            send(peer, .handoffAccepted(id: offer.id, name: offer.name, pid: existing.pid))
            return
        }
        guard owner(of: offer.name) == me.name else {
            send(peer, .handoffRejected(id: offer.id, name: offer.name, reason: "\(me.name) is not the owner by its ring"))
            return
        }
        guard pendingStarts[offer.name] == nil else {
            send(peer, .handoffRejected(id: offer.id, name: offer.name, reason: "name is being started"))
            return
        }
        stats.handoffsReceived += 1
        startProcess(name: offer.name, factory: offer.factory, groups: offer.groups, reason: .handoff(state: offer.state), handoff: key)
    }

    mutating func handoffAccepted(id: UInt64, name: String, newPid: ProcessID, from peer: NodeID) {
        guard let handoff = handoffs[name], case .transferring(let target, let offer, _, _) = handoff.phase,
            offer.id == id, target == peer
        else {
            if cancelledOffers[id] == name {
                // The name was unregistered (or its process ended) after the offer left: the
                // target must not keep it.
                trace("handoff of \(name) accepted after it was cancelled: asking \(peer) to unregister")
                send(peer, .unregisterRequest(id: 0, name: name))
            }
            return
        }
        handoffs[name] = nil
        stats.handoffsCompleted += 1
        trace("handoff of \(name) done: now \(newPid)")
        // The process moved: it stops here, with any other name it had.
        if localNames[handoff.pid] != nil {
            removeProcess(handoff.pid, stop: .handedOff)
        }
        forwarding[name] = (peer, now + settings.forwardingTTL)
        if !handoff.held.isEmpty { forward(name, handoff.held, to: peer) }
    }

    mutating func handoffRejected(id: UInt64, name: String, reason: String, from peer: NodeID) {
        guard let handoff = handoffs[name], case .transferring(let target, let offer, _, _) = handoff.phase,
            offer.id == id, target == peer
        else { return }
        abortHandoff(name, reason: "rejected by \(peer): \(reason)")
    }

    /// Gives up on a handoff: the old process, which never stopped, gets the held messages.
    mutating func abortHandoff(_ name: String, reason: String) {
        guard handoffs[name] != nil else { return }
        trace("handoff of \(name) aborted: \(reason)")
        stats.handoffsFailed += 1
        releaseHeld(name)
        scheduleRetry(name)
    }

    mutating func releaseHeld(_ name: String) {
        guard let handoff = handoffs.removeValue(forKey: name) else { return }
        if case .asking(let token) = handoff.phase { handoffTokens[token] = nil }
        if !handoff.held.isEmpty { route(name, handoff.held) }
    }

    mutating func scheduleRetry(_ name: String) {
        let attempts = (backoff[name]?.attempts ?? 0) + 1
        backoff[name] = Tracker.Backoff(until: now + backoffDelay(attempts: attempts), attempts: attempts)
    }
}
