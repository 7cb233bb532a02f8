import SwarmCore

// Node lifecycle: start with a fresh incarnation (dialling the seeds), crash (peers see the
// connection reset), and the bookkeeping of names that are legitimately lost with a host.
extension Simulation {
    func startNode(_ name: String, at time: Nanoseconds) {
        incarnations += 1
        let id = NodeID(name: name, incarnation: incarnations)
        let node = Node(
            name: name, id: id, alive: true,
            tracker: Tracker.Instance(
                me: id, address: name, settings: settings.tracker, strategy: strategy, filter: filter,
                seeds: seedNames, expectsPeers: true, now: time))
        nodes[name] = node
        let directives = node.tracker.onStart(now: time)
        trace("start \(id)")
        // Dial the seeds (every initial node, as a headless-service DNS name would list them).
        for seed in seedNames where seed != name {
            queue.push(time + latency(), .connect(from: id, to: seed))
        }
        let saved = now
        now = max(now, time)
        execute(id, directives)
        now = saved
    }

    func crash(_ name: String) {
        guard let node = nodes[name], node.alive else { return }
        node.alive = false
        trace("CRASH \(node.id)")
        // Rows not written behind yet are lost with the process (kill -9).
        pendingRows[node.id] = nil
        for pid in processes.keys.sorted() where pid.node == node.id {
            let process = processes.removeValue(forKey: pid)!
            if process.managed && !knownElsewhere(process.name, pid: pid, except: name) {
                lostWithHost.insert(process.name)
            }
        }
        // Names only this node still knew (an orphan it kept after stopping it for lack of a
        // quorum) are lost with it: that is the static-quorum trade-off, not a protocol bug.
        // Likewise names whose host crashed before this node noticed: if no live node knows them
        // either, nobody is left to restart them (two failures in a row, the second before the
        // first was detected).
        let tracker = node.tracker  // read through a class property: one copy, not one per name
        for started in everStarted.sorted() {
            guard let pid = tracker.whereis(started), pid.node != node.id else { continue }
            let hostAlive = nodes[pid.node.name].map { $0.alive && $0.id == pid.node } ?? false
            if !hostAlive && !knownElsewhere(started, pid: pid, except: name) { lostWithHost.insert(started) }
        }
        for started in everStarted.sorted() {
            guard let lost = tracker.orphanedProcess(started) else { continue }
            if !knownElsewhere(started, pid: lost, except: name) { lostWithHost.insert(started) }
        }
        for other in liveNodes where other.tracker.connection(to: name) == node.id {
            if !isBlocked(name, other.name) {
                // The reset travels behind the data already sent on that connection (TCP order).
                let at = max(now + latency(), (linkClock[Link(name, other.name)] ?? 0) + 1)
                queue.push(at, .disconnect(at: other.id, peer: node.id))
            }
        }
    }

    func knownElsewhere(_ name: String, pid: ProcessID, except host: String) -> Bool {
        liveNodes.contains { node in
            guard node.name != host else { return false }
            let tracker = node.tracker
            return tracker.whereis(name) != nil || tracker.orphanedProcess(name) == pid || tracker.isStarting(name)
        }
    }
}
