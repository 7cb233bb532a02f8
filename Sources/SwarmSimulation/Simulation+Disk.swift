import SwarmCore

// The durable store as the gateway keeps it (docs/deployment.md, “Durable state”), and the "restart everything from disk"
// fault with its invariant: no acknowledged API write is lost.
//
// - **Disks.** Every node name has a disk: one row per process name, the highest revision wins
//   (revisions are a global counter here: a hybrid logical clock with perfect clocks). A host
//   writes its process's row at every checkpoint; the ring successor writes the checkpoints it
//   receives (replica rows). Acknowledged checkpoints — the API writes — are written at once
//   (durably, the successor's before its tracker acknowledges); the others are written behind:
//   ``writeBehindWindow`` later, lost if the node crashes first (kill -9).
// - **API writes** add a token to the process's state (``Process/tokens``), a grow-only set
//   carried by handoffs and checkpoints, united by conflict merges and by recovery, as a twin
//   carries its desired version. A token whose checkpoint the tracker answered `done` is
//   acknowledged: the write was answered 200.
// - **The fault** runs once per seed, after the final check (the cluster converged, so what the
//   invariant expects is exact): a burst of API writes and device data, then every node is
//   killed at once (rows written behind are lost), restarted with a new incarnation — in half of
//   the seeds without one node, whose disk is gone (the "3 back as 2" case) — and recovers: each
//   node reads its disk and offers every row to the name's owner, which registers the name and
//   merges every stored copy into the process that runs it.
// - **The invariant**: once the cluster converged again, every acknowledged token of a name that
//   was held by its process at the kill is held by the process that runs the name now.
extension Simulation {
    struct DiskRow {
        var revision: UInt64
        var state: [UInt8]
    }

    static let writeBehindWindow: Nanoseconds = .ms(500)

    /// A process whose state changed without an operation (a handoff or crash recovery ended, a
    /// conflict merged) checkpoints it, as a gateway device does at once.
    func checkpointAfterChange(_ pid: ProcessID) {
        guard let process = processes[pid], process.managed, let host = nodes[pid.node.name], host.alive, host.id == pid.node,
            host.tracker.whereis(process.name) == pid
        else { return }
        checkpoint(pid, acknowledged: false)
    }

    /// Writes `state` as `name`'s row on `node`'s disk: at once (`durable`) or behind.
    func writeRow(on node: NodeID, _ name: String, _ state: [UInt8], durable: Bool) {
        diskRevision += 1
        let row = DiskRow(revision: diskRevision, state: state)
        if durable {
            store(row, name, on: node.name)
        } else {
            if pendingRows[node] == nil { queue.push(now + Self.writeBehindWindow, .flushDisk(node)) }
            pendingRows[node, default: [:]][name] = row
        }
    }

    func flushDisk(_ node: NodeID) {
        guard let rows = pendingRows.removeValue(forKey: node), nodes[node.name]?.id == node, nodes[node.name]?.alive == true else { return }
        for (name, row) in rows.sorted(by: { $0.key < $1.key }) { store(row, name, on: node.name) }
    }

    private func store(_ row: DiskRow, _ name: String, on node: String) {
        if let held = disks[node]?[name], held.revision > row.revision { return }
        disks[node, default: [:]][name] = row
    }

    // MARK: The fault

    func diskRestartPhase() {
        let live = liveNodes
        guard live.count >= 2 else { return }
        diskRestarts += 1
        note("=== disk phase: API writes and device data, then every node killed and restarted from disk")
        // A burst of API writes (every one acknowledged) and of device data (written behind).
        let start = now
        for i in 0..<60 { queue.push(start + UInt64(i) * .ms(20), .diskOperation) }
        let killAt = start + .ms(1200) + random.uint64(0...(.ms(400)))
        runUntil(killAt)

        // What must survive: the acknowledged writes each running process holds now (a process
        // that answers a handoff with `.restart`, or `.ignore` — a restart during a drain — gives
        // its state up by design; a gateway device never does).
        var expected: [String: Set<UInt64>] = [:]
        for process in processes.values where process.managed && ![6, 7, 8].contains(behaviour(of: process.name)) {
            let kept = process.tokens.intersection(acknowledgedTokens[process.name] ?? [])
            if !kept.isEmpty { expected[process.name, default: []].formUnion(kept) }
        }
        var restart = live.map(\.name)
        if !strategyIsQuorum && restart.count >= 3 && random.chance(0.5) {
            let gone = random.pick(restart)
            restart.removeAll { $0 == gone }
            disks[gone] = nil
            note("disk phase: \(gone) does not come back (its disk is gone)")
        }
        note("disk phase: kill -9 of \(live.map(\.name)); \(expected.values.reduce(0) { $0 + $1.count }) acknowledged write(s) held")
        for node in live { crash(node.name) }
        for name in restart { startNode(name, at: now + .ms(UInt64(random.int(20...300)))) }
        // Each node reads its disk once the ring has formed (the gateway waits for a settled ring).
        let recoverAt = now + .ms(2500)
        for name in restart.sorted() {
            if let node = nodes[name] { queue.push(recoverAt, .recoverFromDisk(node.id)) }
        }

        // Converged again, then the invariant.
        let deadline = recoverAt + .seconds(20)
        runUntil(recoverAt + .ms(500))
        while now < deadline {
            runUntil(now + .ms(250))
            if convergenceProblems().isEmpty && recoveryRequests.isEmpty && recoveredRows.isEmpty { break }
        }
        if !convergenceProblems().isEmpty {
            violate("disk phase: no convergence within 20 s of the recovery: \(convergenceProblems().prefix(5))")
            return
        }
        guard let registry = liveNodes.first?.tracker else { return }
        if strategyIsQuorum && registry.ring.nodes.count < initialCount / 2 + 1 { return }
        for (name, tokens) in expected.sorted(by: { $0.key < $1.key }) {
            writesChecked += tokens.count
            guard let pid = registry.whereis(name), let process = processes[pid] else {
                violate("disk phase: \(name) (\(tokens.count) acknowledged write(s)) is not running after the restart from disk")
                continue
            }
            let missing = tokens.subtracting(process.tokens)
            if !missing.isEmpty {
                violate("disk phase: \(name) lost acknowledged write(s) \(missing.sorted()) in the restart from disk (holds \(process.tokens.sorted()))")
            }
        }
    }

    /// One operation of the disk phase: an acknowledged checkpoint (an API write) or a
    /// checkpoint written behind (device data) of a running process, or a message to it.
    func diskOperation() {
        let running = processes.values.filter { process in
            process.managed && nodes[process.pid.node.name].map { $0.alive && $0.id == process.pid.node } == true
        }.sorted { $0.pid < $1.pid }
        guard !running.isEmpty else { return }
        let process = random.pick(running)
        switch random.int(0...9) {
        case 0...4: checkpoint(process.pid, acknowledged: true)
        case 5...7: checkpoint(process.pid, acknowledged: false)
        default:
            let message = envelope(from: process.pid.node, to: process.name, call: false)
            withTracker(process.pid.node) { $0.onSend(to: process.name, message, now: self.now) }
        }
    }

    /// A restarted node reads its disk: every row goes to its name's owner (as the gateway's
    /// recovery sends it), which registers the name.
    func recoverFromDisk(_ id: NodeID) {
        guard let node = nodes[id.name], node.alive, node.id == id else { return }
        let tracker = node.tracker
        for (name, row) in (disks[id.name] ?? [:]).sorted(by: { $0.key < $1.key }) where row.revision > (tombstones[name] ?? 0) {
            let first = recoveredRows[name] == nil
            recoveredRows[name, default: []].append(row)
            if first {
                let owner = tracker.owner(of: name) ?? id.name
                queue.push(now + latency(), .recoveryRegister(name, attempt: 0))
                trace("recovery: \(id.name) offers \(name) to \(owner)")
            }
        }
    }

    /// Registers a recovered name from its owner (any live node when the owner is unknown).
    func registerRecovered(_ name: String, attempt: Int) {
        guard recoveredRows[name] != nil else { return }
        let live = liveNodes
        guard !live.isEmpty else { return }
        let owner = live.first.flatMap { $0.tracker.owner(of: name) }
        let node = live.first { $0.name == owner } ?? live[0]
        let request = self.request()
        recoveryRequests[request] = (name, attempt)
        trace("recovery: \(node.name) registers \(name) (attempt \(attempt + 1))")
        withTracker(node.id) {
            $0.onRegister(name: name, factory: FactorySpec(kind: "worker"), groups: ["all"], whereisOrRegister: true, request: request, now: self.now)
        }
    }

    /// The answer to a recovery registration: every stored copy of the name is merged into the
    /// process that runs it; a failure is retried.
    func recoveryRegistered(_ name: String, attempt: Int, _ reply: Tracker.Reply) {
        let pid: ProcessID?
        switch reply {
        case .registration(.registered(let registered)), .registration(.alreadyRegistered(let registered)): pid = registered
        default: pid = nil
        }
        guard let pid, var process = processes[pid] else {
            if recoveredRows[name] != nil && attempt < 20 { queue.push(now + .ms(300), .recoveryRegister(name, attempt: attempt + 1)) }
            return
        }
        for row in recoveredRows.removeValue(forKey: name) ?? [] {
            process.tokens.formUnion(Process.parse(row.state).tokens)
        }
        processes[pid] = process
        trace("recovery: \(pid) takes in the stored copies of \(name)")
    }
}
