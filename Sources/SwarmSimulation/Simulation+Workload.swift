import SwarmCore

// The workload: what applications do through the API during the chaos phase (register,
// whereis-or-register, unknown factory, register existing, unregister, join/leave, send and call
// by name, publish, multi-call, checkpoint, explicit handoff, process exit), and the steady casts
// of the planned phase, each recorded for the delivery checks.
extension Simulation {
    func request() -> RequestID {
        defer { nextRequest += 1 }
        return nextRequest
    }

    func envelope(from id: NodeID, to name: String, call: Bool, named: Bool = true) -> Envelope {
        defer { nextEnvelope += 1 }
        envelopes[nextEnvelope] = EnvelopeRecord(name: name, planned: planned, named: named)
        return Envelope(id: nextEnvelope, sender: id, callID: call ? nextEnvelope : nil, payload: [1])
    }

    func operation() {
        let live = liveNodes
        guard !live.isEmpty else { return }
        operationsDone += 1
        let node = random.pick(live)
        let id = node.id
        let name = random.pick(names)
        let roll = random.int(0...99)
        switch roll {
        case 0..<30:
            let kind = random.chance(0.03) ? "missing-kind" : "worker"
            let groupSet = [random.pick(groups)] + (random.chance(0.5) ? ["all"] : [])
            trace("op: \(id.name) register \(name) \(kind) groups=\(groupSet)")
            withTracker(id) {
                $0.onRegister(name: name, factory: FactorySpec(kind: kind), groups: groupSet, whereisOrRegister: roll < 10, request: self.request(), now: self.now)
            }
        case 30..<34:
            // Register an existing (non-factory) process under a fresh name.
            let pid = ProcessID(node: id, local: node.nextLocal)
            nodes[id.name]!.nextLocal += 1
            let fresh = "existing-\(operationsDone)"
            processes[pid] = Process(pid: pid, name: fresh, managed: false, lineage: fresh, started: now)
            trace("op: \(id.name) register existing \(fresh) \(pid)")
            withTracker(id) { $0.onRegisterExisting(name: fresh, pid: pid, request: self.request(), now: self.now) }
        case 34..<38:
            deliberatelyRemoved.insert(name)
            tombstones[name] = diskRevision
            trace("op: \(id.name) unregister \(name)")
            withTracker(id) { $0.onUnregister(name: name, request: self.request(), now: self.now) }
        case 38..<46:
            guard let pid = node.tracker.whereis(name) else { return }
            let group = random.pick(groups)
            let join = random.chance(0.7)
            trace("op: \(id.name) \(join ? "join" : "leave") \(group) \(pid)")
            withTracker(id) { $0.onGroup(group, pid: pid, join: join, request: self.request(), now: self.now) }
        case 46..<72:
            let call = random.chance(0.3)
            let message = envelope(from: id, to: name, call: call)
            withTracker(id) { $0.onSend(to: name, message, now: self.now) }
        case 72..<78:
            let group = random.pick(groups)
            let message = envelope(from: id, to: "group \(group)", call: false, named: false)
            withTracker(id) { $0.onPublish(group: group, message, now: self.now) }
        case 78..<82:
            let group = random.pick(groups)
            let members = node.tracker.members(of: group)
            for member in members {
                let message = envelope(from: id, to: "member of \(group)", call: true, named: false)
                withTracker(id) { $0.onSend(toProcesses: [member], message, now: self.now) }
            }
        case 82..<88:
            // A process checkpoints its state to its successor.
            guard let pid = node.tracker.whereis(name), processes[pid]?.managed == true,
                let host = nodes[pid.node.name], host.alive, host.id == pid.node
            else { return }
            checkpoint(pid, acknowledged: nextRequest % 2 == 0)
        case 88..<92:
            // Explicit Tracker.handoff(name, state) on the host.
            guard let pid = node.tracker.whereis(name), let process = processes[pid], let host = nodes[pid.node.name],
                host.alive, host.id == pid.node
            else { return }
            answeredStates[name, default: []].insert(process.stateBytes)
            trace("op: handoff \(name) from \(pid)")
            withTracker(pid.node) { $0.onHandoff(name: name, state: process.stateBytes, request: self.request(), now: self.now) }
        case 92..<96:
            // A process crashes or exits.
            guard let pid = node.tracker.whereis(name), pid.node == id, processes[pid] != nil else { return }
            deliberatelyRemoved.insert(name)
            tombstones[name] = diskRevision
            trace("op: \(pid) ends")
            processes[pid] = nil
            withTracker(id) { $0.onProcessEnded(pid, now: self.now) }
        default:
            _ = node.tracker.whereis(name)
            _ = node.tracker.registered()
        }
    }

    /// A process checkpoints its state to its successor and its host's disk. An acknowledged
    /// checkpoint is an API write: it adds a token (the write) to the state, is stored durably,
    /// and its token counts as kept once the tracker answers it done.
    func checkpoint(_ pid: ProcessID, acknowledged: Bool) {
        guard var process = processes[pid] else { return }
        var request: RequestID?
        if acknowledged {
            request = self.request()
            acknowledgedCheckpoints[request!] = pid.node
            process.tokens.insert(request!)
            pendingTokens[request!] = (process.name, request!)
            processes[pid] = process
        }
        let state = process.stateBytes
        checkpointStates[process.name, default: []].insert(state)
        writeRow(on: pid.node, process.name, state, durable: acknowledged)
        withTracker(pid.node) { $0.onCheckpoint(pid: pid, state: state, request: request, now: self.now) }
    }

    func plannedCast() {
        let live = liveNodes.filter { $0.tracker.selfState == .up }
        guard !live.isEmpty else { return }
        let node = random.pick(live)
        // The registered workload names, in name order (as `registered()` lists them).
        let tracker = node.tracker  // one copy, not one per name
        let registered = sortedNames.filter { tracker.whereis($0) != nil }
        guard !registered.isEmpty else { return }
        let name = random.pick(registered)
        let message = envelope(from: node.id, to: name, call: false)
        withTracker(node.id) { $0.onSend(to: name, message, now: self.now) }
    }
}
