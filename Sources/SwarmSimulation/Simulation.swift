import SwarmCore

/// A deterministic cluster of real ``Tracker/Instance``s on a simulated network and clock.
///
/// Phases: boot → chaos (workload + faults) → heal (every partition closed, crashed nodes
/// restarted) → settle (convergence measured) → planned topology changes under a steady cast
/// stream (a node joins, another drains: every cast must arrive exactly once) → quiet → final
/// invariant check. One seed decides every choice; a failing seed replays exactly with
/// `swift run swarm-sim --seed N --verbose`.
///
/// One concept per file: this file holds the run's state, its phases and the event loop;
/// `SimulationModel` the simulated world's types, `Simulation+Nodes` node start, crash and drain,
/// `Simulation+Network` the links (latency, FIFO order, partitions, drops, connections),
/// `Simulation+Shell` the directive interpreter and the simulated processes,
/// `Simulation+Workload` the API calls, `Simulation+Faults` the fault catalogue,
/// `Simulation+Invariants` the checks, `Simulation+Trace` the trace ring.
public final class Simulation {

    public let settings: SimulationSettings
    var random: SimRandom
    var queue = EventQueue<Event>()
    var now: Nanoseconds = 0
    var nodes: [String: Node] = [:]
    var processes: [ProcessID: Process] = [:]
    /// Directed links that drop every message (partitions, one-way cuts, flapping).
    var blocked: Set<Link> = []
    /// When the last message on each link arrives (a later one arrives after it: TCP order).
    var linkClock: [Link: Nanoseconds] = [:]
    var incarnations: UInt64 = 1
    var nextRequest: RequestID = 1
    var nextEnvelope: UInt64 = 1
    var envelopes: [UInt64: EnvelopeRecord] = [:]
    var names: [String] = []
    var groups = ["all", "g1", "g2", "g3"]
    var answeredStates: [String: Set<[UInt8]>] = [:]
    var checkpointStates: [String: Set<[UInt8]>] = [:]
    /// Acknowledged checkpoints not answered yet, by the node that waits; and those answered.
    var acknowledgedCheckpoints: [RequestID: NodeID] = [:]
    var answeredCheckpoints: Set<RequestID> = []
    /// Tokens of API writes (acknowledged checkpoints) waiting for their answer, and those
    /// answered done: the writes that must never be lost (``Simulation+Disk``).
    var pendingTokens: [RequestID: (name: String, token: UInt64)] = [:]
    var acknowledgedTokens: [String: Set<UInt64>] = [:]
    /// Each node name's disk (its durable store): per process name the row with the highest
    /// revision; rows written behind wait per node incarnation until the flush.
    var disks: [String: [String: DiskRow]] = [:]
    var pendingRows: [NodeID: [String: DiskRow]] = [:]
    var diskRevision: UInt64 = 0
    /// Names removed (unregistered, or their process ended) and the disk revision then: rows up
    /// to it are a deleted device's (the gateway's tombstones), never recovered.
    var tombstones: [String: UInt64] = [:]
    /// Rows recovered from disk waiting for their name's registration, and the registrations.
    var recoveredRows: [String: [DiskRow]] = [:]
    var recoveryRequests: [RequestID: (name: String, attempt: Int)] = [:]
    var diskRestarts = 0
    var writesChecked = 0
    var deliberatelyRemoved: Set<String> = []
    var everStarted: Set<String> = []
    var lostWithHost: Set<String> = []
    var violations: [String] = []
    var traceLines: [String] = []
    var traceStart = 0
    var events = 0
    var operationsDone = 0
    var faultsDone = 0
    var chaos = true
    var planned = false
    var crashed: [String] = []
    var joinedCounter = 0
    let strategyIsQuorum: Bool
    let initialCount: Int
    /// Trace lines are formatted and kept (``SimulationSettings/trace`` or `verbose`).
    let tracing: Bool
    /// Every node's filter (compiled once: its patterns are regexes).
    let filter = NodeFilter.default
    /// The workload's names in sorted order (the planned phase picks among the registered ones).
    var sortedNames: [String] = []

    public init(settings: SimulationSettings) {
        self.settings = settings
        self.tracing = settings.trace || settings.verbose
        var random = SimRandom(seed: settings.seed)
        self.initialCount = settings.nodeCount ?? random.int(5...7)
        self.strategyIsQuorum = settings.faults && random.chance(0.2)
        self.random = random
        for i in 0..<80 { names.append("name-\(i)") }
        sortedNames = names.sorted()
    }

    var seedNames: [String] { (0..<initialCount).map { "node-\($0)" } }

    var strategy: any PlacementStrategy {
        strategyIsQuorum ? StaticQuorumRingStrategy(quorumSize: initialCount / 2 + 1) : RingStrategy()
    }

    var liveNodes: [Node] { nodes.values.filter(\.alive).sorted { $0.name < $1.name } }

    // MARK: Running

    /// Runs the seed. A run without a trace that finds a violation runs the same seed again with
    /// the trace on, so the report of a failing seed carries its trace.
    public func run() -> SimulationReport {
        var report = runPhases()
        if !tracing && !report.violations.isEmpty {
            var traced = settings
            traced.trace = true
            report.trace = Simulation(settings: traced).runPhases().trace
        }
        return report
    }

    func runPhases() -> SimulationReport {
        for i in 0..<initialCount { startNode("node-\(i)", at: UInt64(random.int(0...50)) * .ms(1)) }
        let chaosEnd = Nanoseconds.seconds(2) + settings.chaosDuration
        // Spread the operations and faults over the chaos phase.
        for _ in 0..<settings.operations {
            queue.push(.seconds(2) + random.uint64(0...settings.chaosDuration), .operation)
        }
        let faultCount = settings.faults ? random.int(6...14) : 0
        for _ in 0..<faultCount {
            queue.push(.seconds(2) + random.uint64(0...settings.chaosDuration), .fault)
        }
        runUntil(chaosEnd)

        // Heal: close every partition, restart crashed nodes, stop dropping messages.
        chaos = false
        let healedAt = now
        note("=== heal: all links open, crashed nodes restart")
        blocked.removeAll()
        for name in crashed.sorted() where !(nodes[name]?.alive ?? false) { startNode(name, at: now + .ms(UInt64(random.int(1...200)))) }
        crashed.removeAll()

        var convergence: Nanoseconds?
        while now < healedAt + settings.convergenceBound + .seconds(15) {
            runUntil(now + .ms(250))
            if convergenceProblems().isEmpty {
                convergence = now - healedAt
                break
            }
        }
        if convergence == nil {
            violations.append("no convergence within \(Self.seconds(settings.convergenceBound + .seconds(15))) after heal: \(convergenceProblems().prefix(5))")
        } else if let convergence, convergence > settings.convergenceBound {
            violations.append("converged in \(Self.seconds(convergence)), over the bound of \(Self.seconds(settings.convergenceBound))")
        }

        // Planned topology changes under a steady cast stream.
        if settings.faults {
            planned = true
            note("=== planned phase: steady casts, one node joins, one drains")
            let start = now
            for i in 0..<300 { queue.push(start + UInt64(i) * .ms(10), .plannedCast) }
            joinedCounter += 1
            startNode("node-j\(joinedCounter)", at: start + .ms(500))
            let drainee = random.pick(liveNodes.map(\.name))
            runUntil(start + .ms(1200))
            note("drain \(drainee)")
            if let node = nodes[drainee], node.alive {
                let directives = node.tracker.onDrain(now: now)
                execute(node.id, directives)
            }
            runUntil(start + .seconds(6))
            planned = false
        }
        // Quiet period, then the final check.
        let quietEnd = now + .seconds(3)
        while now < quietEnd + .seconds(20) {
            runUntil(max(now + .ms(250), quietEnd))
            if convergenceProblems().isEmpty { break }
        }
        runUntil(now + .seconds(1))
        finalCheck()
        if settings.faults { diskRestartPhase() }
        return SimulationReport(
            seed: settings.seed, nodes: initialCount, operations: operationsDone, faults: faultsDone, events: events,
            violations: violations, convergence: convergence,
            plannedMessages: envelopes.values.filter(\.planned).count, strategy: strategy.summary,
            diskRestarts: diskRestarts, writesChecked: writesChecked, trace: orderedTrace())
    }

    func runUntil(_ end: Nanoseconds) {
        while let next = queue.nextTime, next <= end {
            let (time, event) = queue.pop()!
            now = time
            events += 1
            handle(event)
        }
        now = max(now, end)
    }

    func handle(_ event: Event) {
        switch event {
        case .tick(let id):
            withTracker(id) { $0.onTick(now: self.now) }
        case .deliver(let from, let to, let message):
            arrive(message, from: from, to: to)
        case .connect(let from, let to):
            connect(from, to: to)
        case .disconnect(let at, let peer):
            withTracker(at) { $0.onPeerDisconnected(peer, now: self.now) }
        case .started(let id, let order, let fail):
            factoryFinished(id, order, fail: fail)
        case .handoffAnswer(let id, let token, let pid):
            answerHandoff(id, token: token, pid: pid)
        case .stateCollected(let id, let token, let pid):
            let state = processes[pid]?.stateBytes
            withTracker(id) { $0.onConflictState(token: token, state: state, now: self.now) }
        case .operation:
            if chaos { operation() }
        case .fault:
            if chaos { fault() }
        case .plannedCast:
            plannedCast()
        case .setLink(let a, let b, let isBlocked):
            setLink(a, b, blocked: isBlocked)
        case .flushDisk(let id):
            flushDisk(id)
        case .diskOperation:
            diskOperation()
        case .recoverFromDisk(let id):
            recoverFromDisk(id)
        case .recoveryRegister(let name, let attempt):
            registerRecovered(name, attempt: attempt)
        case .checkpointAfterChange(let pid):
            checkpointAfterChange(pid)
        }
    }
}
