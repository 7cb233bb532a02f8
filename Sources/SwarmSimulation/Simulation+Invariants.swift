import SwarmCore

// The invariants. `convergenceProblems` is evaluated every 250 ms of simulated time after the
// heal (convergence is the first time it is empty) and at the end; `finalCheck` adds what only
// holds once the run is over. Checks made at the moment something happens (a message delivered
// twice, a handoff state no process gave, `endHandoff` not first) live in the shell, where they
// are observed.
//
// To add an invariant over the converged state: write a function returning its problems (empty
// when it holds) and append it in `convergenceProblems`; one that only holds at the end goes into
// `finalCheck`.
extension Simulation {
    /// What still differs from the converged state (empty when converged).
    func convergenceProblems() -> [String] {
        let live = liveNodes
        guard let first = live.first else { return ["no live node"] }
        let reference = Dictionary(uniqueKeysWithValues: first.tracker.registered().map { ($0.name, $0.pid) })
        var problems: [String] = []
        problems.append(contentsOf: ringProblems(live))
        problems.append(contentsOf: membershipProblems(live))
        problems.append(contentsOf: registryProblems(live, reference: reference))
        problems.append(contentsOf: inFlightProblems(live))
        problems.append(contentsOf: placementProblems(reference, ring: first.tracker))
        return problems
    }

    /// Every live node builds the same ring.
    func ringProblems(_ live: [Node]) -> [String] {
        let rings = Set(live.map { $0.tracker.ring.nodes })
        return rings.count != 1 ? ["rings differ: \(rings)"] : []
    }

    /// Every live node is up (or draining).
    func membershipProblems(_ live: [Node]) -> [String] {
        live.contains(where: { $0.tracker.selfState != .up && !$0.tracker.draining }) ? ["a node is not up"] : []
    }

    /// Every live node holds the same registry as the first.
    func registryProblems(_ live: [Node], reference: [String: ProcessID]) -> [String] {
        var problems: [String] = []
        for node in live.dropFirst() {
            let view = Dictionary(uniqueKeysWithValues: node.tracker.registered().map { ($0.name, $0.pid) })
            if view != reference { problems.append("\(node.name) registry differs from \(live[0].name)") }
        }
        return problems
    }

    /// Nothing waits: no pending start, request, handoff, yield or catch-up.
    func inFlightProblems(_ live: [Node]) -> [String] {
        live.filter { $0.tracker.inFlight > 0 }.map { "\($0.name) has in flight: \($0.tracker.inFlightDescription)" }
    }

    /// Every factory name runs exactly once, as the registry names it, on its ring owner (unless
    /// its process answers `.ignore`); no entry points at an ended process or a gone node.
    func placementProblems(_ view: [String: ProcessID], ring tracker: Tracker.Instance) -> [String] {
        var problems: [String] = []
        var running: [String: [ProcessID]] = [:]
        for (pid, process) in processes where process.managed { running[process.name, default: []].append(pid) }
        for (name, pids) in running.sorted(by: { $0.key < $1.key }) {
            if pids.count > 1 { problems.append("\(name) runs \(pids.count) times: \(pids.sorted())") }
            if view[name] == nil || !pids.contains(view[name]!) { problems.append("\(name) runs as \(pids.sorted()) but the registry says \(view[name].map(\.description) ?? "nothing")") }
        }
        for (name, pid) in view.sorted(by: { $0.key < $1.key }) {
            guard let process = processes[pid], let host = nodes[pid.node.name], host.alive, host.id == pid.node else {
                problems.append("\(name) → \(pid): no such live process")
                continue
            }
            if process.managed, behaviour(of: name) != 8, let owner = tracker.owner(of: name), owner != pid.node.name {
                problems.append("\(name) runs on \(pid.node.name), ring owner is \(owner)")
            }
        }
        return problems
    }

    /// The end of the run: the converged state holds, no started name vanished, and every
    /// planned-phase message arrived exactly once.
    func finalCheck() {
        let problems = convergenceProblems()
        for problem in problems.prefix(20) { violate("final state: \(problem)") }
        guard let first = liveNodes.first?.tracker else { return }
        // Every factory name that was not deliberately removed must still run.
        let quorumLost = strategyIsQuorum && first.ring.nodes.count < initialCount / 2 + 1
        if !quorumLost {
            for name in everStarted.sorted() where name.hasPrefix("name-") {
                if first.whereis(name) == nil && !deliberatelyRemoved.contains(name) && !lostWithHost.contains(name) {
                    violate("\(name) was started, never removed, and is gone")
                }
            }
        }
        // Acknowledged checkpoints of live nodes: every one answered.
        for (request, waiter) in acknowledgedCheckpoints.sorted(by: { $0.key < $1.key }) {
            if let node = nodes[waiter.name], node.alive, node.id == waiter { violate("acknowledged checkpoint #\(request) on \(waiter) never answered") }
        }
        // Planned-phase messages: exactly once.
        for (id, record) in envelopes.sorted(by: { $0.key < $1.key }) where record.planned && record.delivered != 1 && !record.failed {
            violate("planned-phase message \(id) to \(record.name) delivered \(record.delivered) times")
        }
    }
}
