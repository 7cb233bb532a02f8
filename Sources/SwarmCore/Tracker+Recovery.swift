/// Conflicts, orphans and successor state: how the cluster gets back to exactly one copy of
/// every name after failures and partitions (ARCHITECTURE.md, “Failures, partitions and orphans” and “Successor state”).
///
/// **Conflicts.** When two origins claim a name, every node's view shows the same winner
/// (``Registry/prefers(_:over:owner:)``). Only the *loser's host* acts: it collects the loser's
/// state, offers it to the winner's host in a `conflictYield`, and once the winner accepted
/// (delivering `resolveConflict(state)` to the winning process) it unregisters the loser and
/// stops it with `die`. Waiting for acceptance, and never accepting while yielding, means nodes
/// whose views briefly disagree (a cycle A→B→C→A of "the other one wins") can never all give
/// up: every death is accepted by a copy that is not dying.
///
/// **Orphans.** When a peer is lost (crash, partition, new incarnation, drain), its factory
/// entries leave the view and become orphans here. The orphan's ring owner restarts it with its
/// groups (and its replicated state if it has one); every other node that knew the entry sends
/// the owner a hint until the name shows up in the view, so a restart never depends on the
/// owner having seen the original registration.
///
/// **Successor state.** A process may checkpoint its state; the host sends it to the name's
/// ring successor, the node that becomes owner if the host dies. A restart there resumes from
/// the last checkpoint (`endHandoff(state)` first).
extension Tracker.Instance {
    // MARK: - Conflicts

    mutating func evaluateConflict(_ name: String) {
        guard let claimants = registry.contested[name],
            let mine = claimants.first(where: { $0.pid.node == me }),
            let winner = registry.view[name], winner.pid != mine.pid,
            handoffs[name] == nil, yields[name] == nil, pendingStarts[name] == nil,
            (backoff[name]?.until ?? 0) <= now,
            reachable.contains(winner.host), connections[winner.host] == winner.pid.node
        else { return }
        let token = makeToken()
        yields[name] = Tracker.Yield(token: token, loser: mine.pid, winner: winner.pid, awaiting: nil)
        yieldTokens[token] = name
        trace("\(name): local \(mine.pid) loses to \(winner.pid); collecting state")
        emit(.collectState(token: token, pid: mine.pid, name: name))
    }

    /// The conflict loser's state was collected (nil if it had none or failed to answer).
    public mutating func onConflictState(token: UInt64, state: [UInt8]?, now: Instant) -> [Tracker.Directive] {
        begin(now)
        guard let name = yieldTokens.removeValue(forKey: token), var yield = yields[name], yield.token == token else {
            return finish()
        }
        guard localEntries[name]?.pid == yield.loser, let winner = registry.view[name], winner.pid == yield.winner,
            let node = connections[winner.host], node == winner.pid.node
        else {
            yields[name] = nil
            return finish()
        }
        yield.awaiting = (now + settings.requestTimeout, state, 1)
        yields[name] = yield
        send(node, .conflictYield(name: name, loser: yield.loser, winner: yield.winner, state: state))
        return finish()
    }

    mutating func receiveYield(name: String, loser: ProcessID, winner: ProcessID, state: [UInt8]?, from peer: NodeID) {
        if acceptedYields[name + "\u{0}" + loser.description] == winner, localEntries[name]?.pid == winner {
            send(peer, .conflictYieldReply(name: name, loser: loser, accepted: true))
            return
        }
        guard localEntries[name]?.pid == winner, handoffs[name] == nil else {
            send(peer, .conflictYieldReply(name: name, loser: loser, accepted: false))
            return
        }
        if yields[name] != nil {
            // Our copy is itself yielding (views still disagree: two or more nodes may each
            // think another one wins). A yielding copy never accepts, so every process that
            // dies was accepted by a copy that was not dying: one copy always survives. The
            // rejected side retries after a backoff, when the views have converged.
            send(peer, .conflictYieldReply(name: name, loser: loser, accepted: false))
            return
        }
        acceptedYields.remember(name + "\u{0}" + loser.description, winner)
        stats.conflictsWon += 1
        trace("\(name): \(winner) wins over \(loser)")
        if let state { emit(.resolveConflict(winner, state: state)) }
        send(peer, .conflictYieldReply(name: name, loser: loser, accepted: true))
        enqueueHandoffCheck(name)
    }

    mutating func yieldAnswered(name: String, loser: ProcessID, accepted: Bool) {
        guard let yield = yields[name], yield.loser == loser, yield.awaiting != nil else { return }
        yields[name] = nil
        if accepted {
            stats.conflictsYielded += 1
            trace("\(name): \(loser) yielded; die")
            removeProcess(loser, stop: .die)
        } else {
            scheduleRetry(name)
        }
    }

    // MARK: - Orphans

    mutating func adoptOrphans(_ entries: [RegistryEntry]) {
        for entry in entries.sorted(by: { $0.name < $1.name }) where entry.factory != nil {
            if orphans[entry.name] == nil {
                orphans[entry.name] = Tracker.Orphan(entry: entry, nextAction: now, attempts: 0)
            }
        }
    }

    mutating func receiveOrphans(_ entries: [RegistryEntry], from peer: NodeID) {
        for entry in entries where entry.factory != nil && registry.view[entry.name] == nil && orphans[entry.name] == nil {
            if entry.pid.node == me { continue }
            // A live host's entries are not orphans, unless the host itself says so (it stopped
            // them when it lost its quorum).
            let stoppedByHost = entry.pid.node == peer
            if !stoppedByHost, reachable.contains(entry.host), connections[entry.host] == entry.pid.node { continue }
            orphans[entry.name] = Tracker.Orphan(entry: entry, nextAction: now, attempts: 0, stoppedByHost: stoppedByHost)
        }
        reconcileOrphans()
    }

    /// Restarts the orphans we own; hints the others to their owners.
    mutating func reconcileOrphans() {
        guard !orphans.isEmpty else { return }
        var due: [String] = []
        for (name, orphan) in orphans where orphan.nextAction <= now { due.append(name) }
        guard !due.isEmpty else { return }
        due.sort()
        var hints: [String: [RegistryEntry]] = [:]
        for name in due {
            guard var orphan = orphans[name] else { continue }
            let entry = orphan.entry
            if registry.view[name] != nil
                || (!orphan.stoppedByHost && reachable.contains(entry.host) && connections[entry.host] == entry.pid.node)
            {
                orphans[name] = nil
                continue
            }
            if pendingStarts[name] != nil { continue }
            guard let owner = owner(of: name), let factory = entry.factory else {
                orphan.nextAction = now + settings.orphanHintInterval
                orphans[name] = orphan
                continue
            }
            if owner == me.name {
                var reason = Tracker.StartReason.restart
                if let saved = standby[name], saved.pid == entry.pid { reason = .recover(state: saved.state) }
                stats.restartsAfterFailure += 1
                trace("restart orphan \(name) (was \(entry.pid)) \(reason)")
                orphan.nextAction = now + settings.requestTimeout
                orphans[name] = orphan
                startProcess(name: name, factory: factory, groups: entry.groups, reason: reason, replaces: entry.pid)
            } else if let node = connections[owner] {
                if let saved = standby[name], saved.pid == entry.pid {
                    send(node, .checkpoint(name: name, pid: saved.pid, version: saved.version, state: saved.state))
                }
                hints[owner, default: []].append(entry)
                orphan.nextAction = now + settings.orphanHintInterval
                orphans[name] = orphan
            } else {
                orphan.nextAction = now + settings.orphanHintInterval
                orphans[name] = orphan
            }
        }
        for owner in hints.keys.sorted() {
            if let node = connections[owner] { send(node, .orphans(hints[owner]!)) }
        }
    }

    mutating func recoveryTick() {
        for name in yields.keys.sorted() {
            guard let yield = yields[name], let awaiting = yield.awaiting, awaiting.deadline <= now else { continue }
            if awaiting.attempts < 3, let node = connections[yield.winner.node.name], node == yield.winner.node {
                yields[name]!.awaiting = (now + settings.requestTimeout, awaiting.state, awaiting.attempts + 1)
                send(node, .conflictYield(name: name, loser: yield.loser, winner: yield.winner, state: awaiting.state))
            } else {
                yields[name] = nil
                scheduleRetry(name)
            }
        }
        for name in registry.contested.keys.sorted() { evaluateConflict(name) }
        reconcileOrphans()
    }

    // MARK: - Successor state

    /// A local process asks for its state to be replicated to its ring successor (ARCHITECTURE.md, “Successor state”): a
    /// restart after a crash of this node resumes from the last checkpoint.
    ///
    /// With a `request`, the checkpoint is acknowledged: `.reply(request, .done(nil))` once the
    /// successor of the process's first factory name holds it (a `checkpointRequest` answered
    /// with `requestDone`), at once when there is no successor to hold it (a single node), and
    /// `.done(.timeout)` after ``Tracker/Settings/requestTimeout``. When the ring gives the name
    /// another successor meanwhile, the request goes to the new one. Further names of the
    /// process are checkpointed without waiting.
    public mutating func onCheckpoint(pid: ProcessID, state: [UInt8], request: RequestID? = nil, now: Instant) -> [Tracker.Directive] {
        begin(now)
        var waiting = request
        for name in localNames[pid] ?? [] where localEntries[name]?.factory != nil {
            let version = (checkpoints[name]?.version ?? 0) + 1
            let target = successor(of: name)
            checkpoints[name] = Tracker.Checkpoint(pid: pid, version: version, state: state, sentTo: target)
            guard let target, let node = connections[target] else { continue }
            if let id = waiting {
                waiting = nil
                outstanding[id] = Tracker.Outstanding(
                    kind: .checkpoint(name: name, pid: pid, version: version, state: state), target: node,
                    deadline: now + settings.requestTimeout, attempts: 1)
                send(node, .checkpointRequest(id: id, name: name, pid: pid, version: version, state: state))
            } else {
                send(node, .checkpoint(name: name, pid: pid, version: version, state: state))
            }
        }
        if let waiting { emit(.reply(waiting, .done(nil))) }
        return finish()
    }

    /// A peer's checkpoint (acknowledged or not): kept unless a newer one of the same process is.
    mutating func storeStandby(name: String, pid: ProcessID, version: UInt64, state: [UInt8]) {
        if let current = standby[name], current.pid == pid, current.version >= version { return }
        standby[name] = Tracker.Standby(pid: pid, version: version, state: state)
    }

    /// After a ring change: acknowledged checkpoints still waiting go to their name's new
    /// successor (same request id), or are answered when there is none.
    mutating func retargetCheckpointRequests() {
        for id in outstanding.keys.sorted() {
            guard var request = outstanding[id], case .checkpoint(let name, _, _, _) = request.kind else { continue }
            let target = successor(of: name)
            if target == request.target.name { continue }
            if let target, let node = connections[target] {
                request.target = node
                request.deadline = now + settings.requestTimeout
                outstanding[id] = request
                send(node, request.message(id: id))
            } else {
                outstanding[id] = nil
                emit(.reply(id, .done(nil)))
            }
        }
    }
}
