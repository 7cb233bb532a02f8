import SwarmCore

// Node lifecycle: start with a fresh incarnation (dialling the seeds), crash (peers see the
// connection reset), and the bookkeeping of names that are legitimately lost with a host.
extension Simulation {
    func startNode(_ name: String, at time: Nanoseconds) {
        incarnations += 1
        let id = NodeID(name: name, incarnation: incarnations)
        var tracker = Tracker.Instance(
            me: id, address: name, settings: settings.tracker, strategy: strategy, filter: .default,
            seeds: seedNames, expectsPeers: true, now: time)
        nodes[name] = Node(name: name, id: id, alive: true, tracker: tracker)
        let directives = tracker.onStart(now: time)
        nodes[name]!.tracker = tracker
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
        guard var node = nodes[name], node.alive else { return }
        node.alive = false
        nodes[name] = node
        trace("CRASH \(node.id)")
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
        for started in everStarted.sorted() {
            guard let pid = node.tracker.whereis(started), pid.node != node.id else { continue }
            let hostAlive = nodes[pid.node.name].map { $0.alive && $0.id == pid.node } ?? false
            if !hostAlive && !knownElsewhere(started, pid: pid, except: name) { lostWithHost.insert(started) }
        }
        for started in everStarted.sorted() {
            guard let lost = node.tracker.orphanedProcess(started) else { continue }
            if !knownElsewhere(started, pid: lost, except: name) { lostWithHost.insert(started) }
        }
        for other in liveNodes where other.tracker.connection(to: name) == node.id {
            if !blocked.contains([name, other.name]) {
                // The reset travels behind the data already sent on that connection (TCP order).
                let at = max(now + latency(), (linkClock[[name, other.name]] ?? 0) + 1)
                queue.push(at, .disconnect(at: other.id, peer: node.id))
            }
        }
    }

    func knownElsewhere(_ name: String, pid: ProcessID, except host: String) -> Bool {
        liveNodes.contains { node in
            node.name != host
                && (node.tracker.whereis(name) != nil || node.tracker.orphanedProcess(name) == pid || node.tracker.isStarting(name))
        }
    }
}
