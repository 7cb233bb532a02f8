/// Peers, failure detection, gossip, replication, the ring, ticks and drain.
extension Tracker.Instance {
    // MARK: - Connections

    /// The shell finished a handshake with `peer` (either side dialled).
    public mutating func onPeerConnected(_ peer: NodeID, address: String, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard peer.name != me.name else { return finish() }
        if let known = connections[peer.name] {
            if known == peer {
                lastHeard[peer.name] = now
                if !reachable.contains(peer.name), selfRecordAllows(peer) {
                    becameReachable(peer)
                    updateRing()
                }
                return finish()
            }
            if known.incarnation > peer.incarnation { return finish() }  // a stale life
            peerLost(known, reason: "replaced by incarnation \(peer.incarnation)")
        }
        if let member = membership[peer.name], member.id.incarnation > peer.incarnation { return finish() }
        if membership[peer.name] == nil || membership[peer.name]!.id.incarnation < peer.incarnation {
            // Placeholder until the peer's own gossip arrives; supersedes any older life.
            mergeMember(Membership.Member(id: peer, address: address, state: .joining, version: 0))
        }
        connections[peer.name] = peer
        lastHeard[peer.name] = now
        trace("connected to \(peer)")
        becameReachable(peer)
        send(peer, .heartbeat(members: membership.sorted, seq: log.lastSeq))
        updateRing()
        return finish()
    }

    /// The connection to `peer` closed (for a crash the OS resets it at once: fast detection).
    public mutating func onPeerDisconnected(_ peer: NodeID, now: Instant) -> [Tracker.Directive] {
        begin(now)
        if connections[peer.name] == peer {
            peerLost(peer, reason: "disconnected")
            updateRing()
        }
        return finish()
    }

    /// The shell switched to a new connection to the same life of `peer` (a stalled connection
    /// replaced, or both sides dialled): what was written on the old one in its last moments may
    /// never arrive. Everything that waits for an answer from `peer` is sent again now — a
    /// conflict yield, a handoff offer, a catch-up request — instead of at its timeout (up to
    /// ``Tracker/Settings/requestTimeout`` for a yield): all of them are idempotent at the
    /// receiver. A heartbeat goes too, so that lost replication shows up in its digest.
    public mutating func onPeerReconnected(_ peer: NodeID, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard connections[peer.name] == peer else { return finish() }
        lastHeard[peer.name] = now
        trace("new connection to \(peer): re-sending what waits for it")
        send(peer, .heartbeat(members: membership.sorted, seq: log.lastSeq))
        if !reachable.contains(peer.name) {
            if selfRecordAllows(peer) {
                becameReachable(peer)
                updateRing()
            }
        } else if catchUpDeadline[peer.name] != nil {
            requestCatchUp(from: peer, after: catchUpPosition(of: peer))
        }
        for name in yields.keys.sorted() {
            guard let yield = yields[name], yield.winner.node == peer, let awaiting = yield.awaiting else { continue }
            yields[name]!.awaiting = (now + settings.requestTimeout, awaiting.state, awaiting.attempts)
            send(peer, .conflictYield(name: name, loser: yield.loser, winner: yield.winner, state: awaiting.state))
        }
        // Requests to `peer` (register, unregister, group): the request or its reply may have
        // been on the old connection. Re-sent with the same id; the owner answers a request it
        // already answered with the same reply (``answeredRequests``).
        for id in outstanding.keys.sorted() {
            guard var request = outstanding[id], request.target == peer else { continue }
            request.deadline = now + settings.requestTimeout
            outstanding[id] = request
            send(peer, request.message(id: id))
        }
        for name in handoffs.keys.sorted() {
            guard case .transferring(let target, let offer, _, let attempts) = handoffs[name]!.phase, target == peer else { continue }
            handoffs[name]!.phase = .transferring(target: target, offer: offer, deadline: now + settings.handoffOfferTimeout, attempts: attempts)
            send(peer, .handoffOffer(offer))
        }
        return finish()
    }

    /// A message from a connected peer.
    public mutating func onPeerMessage(_ message: PeerMessage, from peer: NodeID, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard connections[peer.name] == peer else {
            trace("dropped message from unconnected \(peer)")
            return finish()
        }
        lastHeard[peer.name] = now
        if !reachable.contains(peer.name), selfRecordAllows(peer) {
            becameReachable(peer)
            updateRing()
        }
        if let id = message.requestID, let answered = answeredRequests[Tracker.AnsweredRequest(node: peer, id: id)] {
            // A request re-sent after a connection switch, already answered: the same answer.
            send(peer, answered)
            return finish()
        }
        switch message {
        case .heartbeat(let members, let seq):
            for member in members { mergeMember(member) }
            checkDigest(of: peer, seq: seq)
            updateRing()
        case .replicate(let changes):
            applyChanges(changes, from: peer)
        case .catchUp(let after):
            answerCatchUp(peer, after: after)
        case .snapshot(let seq, let entries):
            applySnapshot(entries, seq: seq, from: peer)
        case .registerRequest(let id, let name, let factory, let groups, let whereisOrRegister):
            if draining || owner(of: name) != me.name {
                send(peer, .notOwner(id: id, owner: owner(of: name)))
            } else {
                registerLocally(name: name, factory: factory, groups: groups, waiter: .remote(peer, id, whereisOrRegister: whereisOrRegister))
            }
        case .registerReply(let id, let result):
            if outstanding.removeValue(forKey: id) != nil { emit(.reply(id, .registration(result))) }
        case .notOwner(let id, _):
            reroute(id)
        case .unregisterRequest(let id, let name):
            if let entry = localEntries[name] {
                unregisterLocal(name: name, entry: entry, stop: .unregistered)
                reply(to: peer, id, .requestDone(id: id, error: nil))
            } else {
                reply(to: peer, id, .requestDone(id: id, error: .unknownName(name)))
            }
        case .groupRequest(let id, let group, let pid, let join):
            reply(to: peer, id, .requestDone(id: id, error: pid.node == me ? applyGroup(group, pid: pid, join: join) : .notRegistered(pid)))
        case .requestDone(let id, let error):
            if outstanding.removeValue(forKey: id) != nil { emit(.reply(id, .done(error))) }
        case .handoffOffer(let offer):
            receiveHandoffOffer(offer, from: peer)
        case .handoffAccepted(let id, let name, let pid):
            handoffAccepted(id: id, name: name, newPid: pid, from: peer)
        case .handoffRejected(let id, let name, let reason):
            handoffRejected(id: id, name: name, reason: reason, from: peer)
        case .conflictYield(let name, let loser, let winner, let state):
            receiveYield(name: name, loser: loser, winner: winner, state: state, from: peer)
        case .conflictYieldReply(let name, let loser, let accepted):
            yieldAnswered(name: name, loser: loser, accepted: accepted)
        case .orphans(let entries):
            receiveOrphans(entries, from: peer)
        case .checkpoint(let name, let pid, let version, let state):
            storeStandby(name: name, pid: pid, version: version, state: state)
        case .checkpointRequest(let id, let name, let pid, let version, let state):
            storeStandby(name: name, pid: pid, version: version, state: state)
            reply(to: peer, id, .requestDone(id: id, error: nil))
        case .named(let name, let envelopes):
            route(name, envelopes)
        case .toProcesses(let pids, let envelope):
            for pid in pids where pid.node == me { deliverToProcess(pid, envelope) }
        case .undeliverable(let envelopes, let error):
            for envelope in envelopes where envelope.sender == me {
                emit(.undeliverable([envelope], error))
            }
        case .goodbye:
            if var member = membership[peer.name], member.id == peer, member.state != .gone {
                member.state = .gone
                member.version += 1
                mergeMember(member)
                updateRing()
            }
        }
        return finish()
    }

    /// A peer whose own record says it is gone stays unreachable.
    func selfRecordAllows(_ peer: NodeID) -> Bool {
        guard let member = membership[peer.name] else { return true }
        return !(member.id == peer && member.state == .gone)
    }

    // MARK: - Reachability

    mutating func becameReachable(_ peer: NodeID) {
        reachable.insert(peer.name)
        // Whatever we held of it is stale: start over from a snapshot.
        let dropped = registry.resetForSnapshot(origin: peer, owner: ownerFunction)
        adoptOrphans(dropped)
        // Orphans of this very life are not orphans: it is back and will send its snapshot.
        for (name, orphan) in orphans where orphan.entry.pid.node == peer { orphans[name] = nil }
        requestCatchUp(from: peer, after: 0)
    }

    /// Forgets a peer's entries (its factory names become orphans to restart). A silent peer
    /// keeps its connection (`keepConnection`): traffic on it makes the peer reachable again.
    mutating func peerLost(_ peer: NodeID, reason: String, keepConnection: Bool = false) {
        stats.peersLost += 1
        trace("lost \(peer): \(reason)")
        reachable.remove(peer.name)
        if connections[peer.name] == peer && !keepConnection { connections[peer.name] = nil }
        catchUpDeadline[peer.name] = nil
        let dropped = registry.resetForSnapshot(origin: peer, owner: ownerFunction)
        adoptOrphans(dropped)
        for name in handoffs.keys.sorted() {
            if case .transferring(let target, _, _, _) = handoffs[name]!.phase, target == peer {
                abortHandoff(name, reason: "target \(peer) lost")
            }
        }
        // Requests to the lost peer: registrations re-route when the ring changes; the others
        // fail now rather than at their deadline.
        for id in outstanding.keys.sorted() {
            guard let request = outstanding[id], request.target == peer else { continue }
            switch request.kind {
            case .register, .checkpoint: continue  // re-routed when the ring changes
            case .unregister(let name):
                outstanding[id] = nil
                emit(.reply(id, .done(.nameInTransition(name))))
            case .group(_, let pid, _):
                outstanding[id] = nil
                emit(.reply(id, .done(.notRegistered(pid))))
            }
        }
        for (name, yield) in yields where yield.winner.node == peer {
            yields[name] = nil
            yieldTokens[yield.token] = nil
        }
    }

    var ownerFunction: (String) -> String? {
        { [strategy, ring] name in strategy.owner(of: name, on: ring) }
    }

    // MARK: - Membership

    mutating func mergeMember(_ incoming: Membership.Member) {
        if incoming.id.name == me.name { return }  // we are the only author of our record
        let (changed, previous) = membership.merge(incoming)
        guard changed else { return }
        emit(.memberChanged(incoming))
        trace("member \(incoming) (was \(previous.map(\.description) ?? "unknown"))")
        if let previous, previous.id != incoming.id, connections[incoming.id.name] == previous.id {
            peerLost(previous.id, reason: "replaced by \(incoming.id)")
        }
        if incoming.state == .gone, let connected = connections[incoming.id.name], connected == incoming.id {
            peerLost(connected, reason: "gone")
        }
    }

    mutating func setSelfState(_ state: Membership.State) {
        guard var record = membership[me.name], record.state != state else { return }
        record.state = state
        record.version += 1
        membership.merge(record)
        emit(.memberChanged(record))
        trace("self → \(state)")
        for peer in connections.values.sorted() {
            send(peer, .heartbeat(members: membership.sorted, seq: log.lastSeq))
        }
        updateRing()
    }

    /// Rebuilds the ring from members that are up, admitted and reachable; reacts to a change.
    mutating func updateRing() {
        var nodes: [String] = []
        for member in membership.members.values where member.state == .up && filter.admits(member.id.name) {
            if member.id == me || (reachable.contains(member.id.name) && connections[member.id.name] == member.id) {
                nodes.append(member.id.name)
            }
        }
        nodes.sort()
        guard nodes != ring.nodes else { return }
        ring = HashRing(nodes: nodes)
        ringEpoch += 1
        registry.rerank(owner: ownerFunction)
        emit(.ringChanged(nodes: nodes))
        let epoch = ringEpoch
        trace("ring epoch \(epoch): \(nodes)")
        ringDidChange()
    }

    mutating func ringDidChange() {
        for name in localEntries.keys.sorted() { enqueueHandoffCheck(name) }
        for id in outstanding.keys.sorted() {
            guard let request = outstanding[id] else { continue }
            if case .register(let name, _, _, _) = request.kind, owner(of: name) != request.target.name {
                reroute(id)
            }
        }
        retargetCheckpointRequests()
        for name in checkpoints.keys.sorted() {
            let checkpoint = checkpoints[name]!
            let target = successor(of: name)
            if target != checkpoint.sentTo, let target, let node = connections[target] {
                checkpoints[name]!.sentTo = target
                send(node, .checkpoint(name: name, pid: checkpoint.pid, version: checkpoint.version, state: checkpoint.state))
            }
        }
        for name in orphans.keys { orphans[name]!.nextAction = 0 }
        reconcileOrphans()
        for name in registry.contested.keys.sorted() { evaluateConflict(name) }
    }

    /// The node that should hold `name`'s replicated state: the next node after this one.
    func successor(of name: String) -> String? {
        ring.preferenceList(of: name, count: 3).first { $0 != me.name }
    }

    // MARK: - Replication

    mutating func requestCatchUp(from peer: NodeID, after: UInt64) {
        stats.catchUpsRequested += 1
        catchUpDeadline[peer.name] = now + settings.catchUpTimeout
        send(peer, .catchUp(after: after))
    }

    /// Where a catch-up from `peer` starts: after what we applied of this life, or a snapshot.
    func catchUpPosition(of peer: NodeID) -> UInt64 {
        registry.replica(of: peer.name).flatMap { $0.id == peer && $0.synced ? $0.appliedSeq : nil } ?? 0
    }

    mutating func checkDigest(of peer: NodeID, seq: UInt64) {
        guard reachable.contains(peer.name) else { return }
        if let deadline = catchUpDeadline[peer.name], deadline > now { return }
        guard let replica = registry.replica(of: peer.name), replica.id == peer, replica.synced else {
            requestCatchUp(from: peer, after: 0)
            return
        }
        if replica.appliedSeq < seq { requestCatchUp(from: peer, after: replica.appliedSeq) }
    }

    mutating func applyChanges(_ changes: [SequencedChange], from peer: NodeID) {
        guard reachable.contains(peer.name) else { return }
        var affected: [String] = []
        var removed: [(String, ProcessID)] = []
        let outcome = registry.apply(changes, from: peer, owner: ownerFunction) { change in
            affected.append(change.change.name)
            if case .remove(let name, let pid) = change.change { removed.append((name, pid)) }
        }
        stats.changesApplied += UInt64(affected.count)
        for (name, pid) in removed where standby[name]?.pid == pid { standby[name] = nil }
        for name in affected { afterViewChange(name) }
        switch outcome {
        case .applied, .duplicate:
            if let replica = registry.replica(of: peer.name), replica.appliedSeq >= (changes.last?.seq ?? 0) {
                catchUpDeadline[peer.name] = nil
            }
        case .gap(let after):
            if (catchUpDeadline[peer.name] ?? 0) <= now { requestCatchUp(from: peer, after: after) }
        case .ignored:
            if (catchUpDeadline[peer.name] ?? 0) <= now { requestCatchUp(from: peer, after: 0) }
        }
    }

    mutating func answerCatchUp(_ peer: NodeID, after: UInt64) {
        if after > 0, let changes = log.changes(after: after) {
            if !changes.isEmpty { send(peer, .replicate(changes: changes)) }
            return
        }
        stats.snapshotsSent += 1
        send(peer, .snapshot(seq: log.lastSeq, entries: localEntries.values.sorted { $0.name < $1.name }))
    }

    mutating func applySnapshot(_ entries: [RegistryEntry], seq: UInt64, from peer: NodeID) {
        guard reachable.contains(peer.name) else { return }
        stats.snapshotsApplied += 1
        catchUpDeadline[peer.name] = nil
        let removed = registry.applySnapshot(from: peer, seq: seq, entries: entries, owner: ownerFunction)
        for entry in removed where standby[entry.name]?.pid == entry.pid { standby[entry.name] = nil }
        for entry in entries { afterViewChange(entry.name) }
        for entry in removed.sorted(by: { $0.name < $1.name }) { afterViewChange(entry.name) }
    }

    // MARK: - Requests

    /// Re-sends a register request to the current owner, or fails it.
    mutating func reroute(_ id: RequestID) {
        guard var request = outstanding[id] else { return }
        guard case .register(let name, let factory, let groups, let whereisOrRegister) = request.kind else {
            outstanding[id] = nil
            emit(.reply(id, .done(.nameInTransition(""))))
            return
        }
        request.attempts += 1
        if let existing = registry.whereis(name) {
            outstanding[id] = nil
            emit(.reply(id, .registration(.alreadyRegistered(existing))))
            return
        }
        guard request.attempts <= settings.maxRouteAttempts else {
            outstanding[id] = nil
            emit(.reply(id, .registration(.failed(.tooManyAttempts))))
            return
        }
        guard let owner = owner(of: name) else {
            outstanding[id] = nil
            emit(.reply(id, .registration(.failed(.noNodeAvailable))))
            return
        }
        if owner == me.name {
            outstanding[id] = nil
            registerLocally(name: name, factory: factory, groups: groups, waiter: .local(id, whereisOrRegister: whereisOrRegister))
        } else if let target = connections[owner] {
            request.target = target
            request.deadline = now + settings.requestTimeout
            outstanding[id] = request
            send(target, .registerRequest(id: id, name: name, factory: factory, groups: groups, whereisOrRegister: whereisOrRegister))
        } else {
            outstanding[id] = nil
            emit(.reply(id, .registration(.failed(.noNodeAvailable))))
        }
    }

    // MARK: - Time

    /// Call every ``Tracker/Settings/tickInterval`` with the current time.
    public mutating func onTick(now: Instant) -> [Tracker.Directive] {
        begin(now)
        // Failure detection.
        for name in reachable.sorted() {
            if let heard = lastHeard[name], now > heard + settings.failureTimeout, let peer = connections[name] {
                peerLost(peer, reason: "unreachable", keepConnection: true)
                updateRing()
            }
        }
        // Heartbeats (gossip + digest).
        if now >= nextHeartbeat {
            nextHeartbeat = now + settings.heartbeatInterval
            let members = membership.sorted
            for peer in connections.values.sorted() {
                send(peer, .heartbeat(members: members, seq: log.lastSeq))
            }
            // Dial members we know but are not connected to, or whose connection went silent
            // (it may have restarted behind a partition).
            for member in members where member.id.name != me.name && member.state != .gone {
                let name = member.id.name
                if connections[name] == nil || !reachable.contains(name), (lastDial[name] ?? 0) + settings.failureTimeout <= now {
                    lastDial[name] = now
                    emit(.connect(name: name, address: member.address))
                }
            }
            // Keep dialling seeds whose address no connected member has (a restarted node
            // knows nobody else; a seed may be down or behind a partition for a while).
            if !seeds.isEmpty {
                var connectedAddresses = Set<String>()
                for (name, id) in connections where reachable.contains(name) {
                    if let member = membership[name], member.id == id { connectedAddresses.insert(member.address) }
                }
                for seed in seeds where !connectedAddresses.contains(seed) {
                    let key = "seed:" + seed
                    if (lastDial[key] ?? 0) + settings.failureTimeout <= now {
                        lastDial[key] = now
                        emit(.connect(name: "", address: seed))
                    }
                }
            }
        }
        // Re-ask for catch-ups that went unanswered.
        for name in catchUpDeadline.keys.sorted() {
            if let deadline = catchUpDeadline[name], deadline <= now, let peer = connections[name], reachable.contains(name) {
                requestCatchUp(from: peer, after: catchUpPosition(of: peer))
            }
        }
        // Joining → up once every reachable peer sent its snapshot, or after the grace period.
        if selfState == .joining {
            let synced = reachable.allSatisfy { registry.replica(of: $0)?.synced == true }
            if (synced && !reachable.isEmpty) || now >= startedAt + settings.joinGracePeriod {
                setSelfState(.up)
            }
        }
        // Request deadlines.
        for id in outstanding.keys.sorted() {
            guard let request = outstanding[id], request.deadline <= now else { continue }
            outstanding[id] = nil
            if case .register = request.kind {
                emit(.reply(id, .registration(.failed(.timeout))))
            } else {
                emit(.reply(id, .done(.timeout)))
            }
        }
        for (name, moved) in forwarding where moved.until <= now { forwarding[name] = nil }
        handoffTick()
        recoveryTick()
        drainTick()
        emit(.scheduleTick(after: settings.tickInterval))
        return finish()
    }

    // MARK: - Drain

    /// Graceful leave (SIGTERM or the admin API): leave the ring first, hand off every process
    /// with its state (rate-limited by ``Tracker/Settings/maxConcurrentHandoffs``), then
    /// announce `gone` and emit ``Tracker/Directive/drainComplete``.
    public mutating func onDrain(now: Instant) -> [Tracker.Directive] {
        begin(now)
        if !draining {
            draining = true
            let count = localEntries.count
            trace("drain requested: \(count) local names")
            setSelfState(.draining)
        }
        drainTick()
        return finish()
    }

    /// Names still to be handed off before the drain completes: our factory processes, and
    /// the ones we stopped for lack of an owner (quorum lost) until a new owner restarted them.
    public var drainRemaining: Int {
        localEntries.values.reduce(0) { $0 + ($1.factory != nil ? 1 : 0) }
            + orphans.values.reduce(0) { $0 + ($1.stoppedByHost && $1.entry.pid.node == me ? 1 : 0) }
    }

    mutating func drainTick() {
        guard draining, !drainComplete else { return }
        // A node connected to no peer has nowhere to hand its processes. If it was configured
        // without peers, or every other member it knows of has left (`gone`: the cluster is
        // shutting down), its drain is complete at once (the processes stop with it). Otherwise
        // it keeps waiting — a peer that is merely unreachable may come back (a rolling update,
        // a partition).
        let othersGone = membership.sorted.allSatisfy { $0.id.name == me.name || $0.state == .gone }
        let alone = connections.isEmpty && (!expectsPeers || othersGone)
        guard alone || (drainRemaining == 0 && handoffs.isEmpty) else { return }
        let remaining = drainRemaining
        if alone && remaining > 0 { trace("drain: no peer to hand \(remaining) name(s) to; complete") }
        drainComplete = true
        guard var record = membership[me.name] else { return }
        record.state = .gone
        record.version += 1
        membership.merge(record)
        emit(.memberChanged(record))
        for peer in connections.values.sorted() {
            send(peer, .heartbeat(members: membership.sorted, seq: log.lastSeq))
            send(peer, .goodbye)
        }
        emit(.drainComplete)
    }
}
