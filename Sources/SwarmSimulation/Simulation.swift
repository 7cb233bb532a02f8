import SwarmCore

/// What one simulated run does. Everything not set here is drawn from the seed.
public struct SimulationSettings: Sendable {
    public var seed: UInt64
    /// Nodes at start; nil → 5 to 7, drawn from the seed.
    public var nodeCount: Int?
    /// Workload operations during the chaos phase (at least 200 for the CI seeds).
    public var operations = 220
    /// Inject faults (partitions, crashes, restarts, drains, joins, flapping links, drops).
    public var faults = true
    /// Length of the chaos phase in simulated time.
    public var chaosDuration: Nanoseconds = .seconds(20)
    /// Probability that any one message is lost in the chaos phase (a connection reset).
    public var dropProbability = 0.01
    /// Convergence must happen within this long after the final heal (stated in ARCHITECTURE.md).
    public var convergenceBound: Nanoseconds = .seconds(15)
    /// Print every trace line as it happens.
    public var verbose = false
    /// Trace lines kept for a failure report.
    public var traceCapacity = 4000
    public var tracker = Tracker.Settings()

    public init(seed: UInt64) { self.seed = seed }
}

/// The outcome of one run.
public struct SimulationReport: Sendable {
    public var seed: UInt64
    public var nodes: Int
    public var operations: Int
    public var faults: Int
    public var events: Int
    public var violations: [String]
    /// Simulated time from the final heal until every invariant held.
    public var convergence: Nanoseconds?
    public var plannedMessages: Int
    public var strategy: String
    /// The last trace lines (all of them when verbose).
    public var trace: [String]
}

/// A deterministic cluster of real ``Tracker/Instance``s on a simulated network and clock.
///
/// Phases: boot → chaos (workload + faults) → heal (every partition closed, crashed nodes
/// restarted) → settle (convergence measured) → planned topology changes under a steady cast
/// stream (a node joins, another drains: every cast must arrive exactly once) → quiet → final
/// invariant check. One seed decides every choice; a failing seed replays exactly with
/// `swift run swarm-sim --seed N --verbose`.
public final class Simulation {
    // MARK: Model

    struct Node {
        var name: String
        var id: NodeID
        var alive: Bool
        var tracker: Tracker.Instance
        var nextLocal: UInt64 = 1
    }

    struct Process {
        var pid: ProcessID
        var name: String
        var managed: Bool
        var counter: UInt64 = 0
        var lineage: String
        var started: Nanoseconds
        /// When set, the first delivery must be `endHandoff` with exactly this state.
        var expectFirst: [UInt8]?
        var receivedAnything = false
        var stateBytes: [UInt8] { Array("\(lineage):\(counter)".utf8) }
    }

    struct EnvelopeRecord {
        var name: String
        var planned: Bool
        var delivered = 0
        var excused = false
        var failed = false
        /// Addressed to one name (exactly one delivery) rather than to a set of processes.
        var named = true
        var receivers: Set<ProcessID> = []
    }

    enum Event {
        case tick(NodeID)
        case deliver(from: NodeID, to: NodeID, PeerMessage)
        case connect(from: NodeID, to: String)
        case disconnect(at: NodeID, peer: NodeID)
        case started(NodeID, Tracker.StartOrder, fail: Bool)
        case handoffAnswer(NodeID, token: UInt64, pid: ProcessID)
        case stateCollected(NodeID, token: UInt64, pid: ProcessID)
        case operation
        case fault
        case plannedCast
        case setLink(String, String, blocked: Bool)
    }

    public let settings: SimulationSettings
    var random: SimRandom
    var queue = EventQueue<Event>()
    var now: Nanoseconds = 0
    var nodes: [String: Node] = [:]
    var processes: [ProcessID: Process] = [:]
    var blocked: Set<[String]> = []  // directed links [from, to]
    var linkClock: [[String]: Nanoseconds] = [:]
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

    public init(settings: SimulationSettings) {
        self.settings = settings
        var random = SimRandom(seed: settings.seed)
        self.initialCount = settings.nodeCount ?? random.int(5...7)
        self.strategyIsQuorum = settings.faults && random.chance(0.2)
        self.random = random
        for i in 0..<80 { names.append("name-\(i)") }
    }

    var seedNames: [String] { (0..<initialCount).map { "node-\($0)" } }

    var strategy: any PlacementStrategy {
        strategyIsQuorum ? StaticQuorumRingStrategy(quorumSize: initialCount / 2 + 1) : RingStrategy()
    }

    var liveNodes: [Node] { nodes.values.filter(\.alive).sorted { $0.name < $1.name } }

    // MARK: Running

    public func run() -> SimulationReport {
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
            if var node = nodes[drainee], node.alive {
                let directives = node.tracker.onDrain(now: now)
                nodes[drainee] = node
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
        return SimulationReport(
            seed: settings.seed, nodes: initialCount, operations: operationsDone, faults: faultsDone, events: events,
            violations: violations, convergence: convergence,
            plannedMessages: envelopes.values.filter(\.planned).count, strategy: strategy.summary,
            trace: orderedTrace())
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

    // MARK: Nodes

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

    func latency() -> Nanoseconds { .ms(1) / 2 + random.uint64(0...(.ms(4))) }

    // MARK: Events

    func handle(_ event: Event) {
        switch event {
        case .tick(let id):
            withTracker(id) { $0.onTick(now: self.now) }
        case .deliver(let from, let to, let message):
            guard let node = nodes[to.name], node.alive, node.id == to, !blocked.contains([from.name, to.name]) else {
                dropped(message, reason: "in flight")
                return
            }
            trace("\(from.name) → \(to.name) \(Self.describe(message))")
            withTracker(to) { $0.onPeerMessage(message, from: from, now: self.now) }
        case .connect(let from, let to):
            guard let source = nodes[from.name], source.alive, source.id == from,
                let target = nodes[to], target.alive,
                !blocked.contains([from.name, to]), !blocked.contains([to, from.name])
            else { return }
            trace("connected \(from) ⇄ \(target.id)")
            withTracker(target.id) { $0.onPeerConnected(from, address: from.name, now: self.now) }
            withTracker(from) { $0.onPeerConnected(target.id, address: to, now: self.now) }
        case .disconnect(let at, let peer):
            withTracker(at) { $0.onPeerDisconnected(peer, now: self.now) }
        case .started(let id, let order, let fail):
            guard let node = nodes[id.name], node.alive, node.id == id else { return }
            let result: Result<ProcessID, SwarmError>
            if order.factory.kind != "worker" {
                result = .failure(.unknownFactory(order.factory.kind))
            } else if fail {
                result = .failure(.startFailed("simulated factory failure"))
            } else {
                let pid = ProcessID(node: id, local: nodes[id.name]!.nextLocal)
                nodes[id.name]!.nextLocal += 1
                var process = Process(pid: pid, name: order.name, managed: true, lineage: "\(order.name)@\(pid.local)", started: now)
                switch order.reason {
                case .handoff(let state?):
                    process.expectFirst = state
                    if !(answeredStates[order.name]?.contains(state) ?? false) {
                        violate("\(order.name): handoff state \(String(decoding: state, as: UTF8.self)) was never given by a process")
                    }
                case .recover(let state):
                    process.expectFirst = state
                    if !(checkpointStates[order.name]?.contains(state) ?? false) {
                        violate("\(order.name): recovered state \(String(decoding: state, as: UTF8.self)) was never checkpointed")
                    }
                default: break
                }
                processes[pid] = process
                everStarted.insert(order.name)
                result = .success(pid)
            }
            withTracker(id) { $0.onProcessStarted(token: order.token, result: result, now: self.now) }
        case .handoffAnswer(let id, let token, let pid):
            let answer: HandoffAnswer
            if let process = processes[pid] {
                switch behaviour(of: process.name) {
                case 0, 1, 2, 3, 4, 5: answer = .resume(process.stateBytes)
                case 6, 7: answer = .restart
                case 8: answer = .ignore
                default: answer = random.chance(0.5) ? .failed("simulated timeout") : .resume(process.stateBytes)
                }
                if case .resume(let state) = answer { answeredStates[process.name, default: []].insert(state) }
            } else {
                answer = .failed("process gone")
            }
            trace("\(pid) answers \(answer)")
            withTracker(id) { $0.onHandoffAnswer(token: token, answer: answer, now: self.now) }
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
            guard chaos else { return }
            trace("link \(a) ⇄ \(b) \(isBlocked ? "down" : "up")")
            if isBlocked {
                blocked.insert([a, b])
                blocked.insert([b, a])
            } else {
                blocked.remove([a, b])
                blocked.remove([b, a])
            }
        }
    }

    /// 0–5 resume, 6–7 restart, 8 ignore, 9 flaky: decided by the name, fixed for the run.
    func behaviour(of name: String) -> Int { Int(HashRing.hash(name) % 10) }

    func withTracker(_ id: NodeID, _ body: (inout Tracker.Instance) -> [Tracker.Directive]) {
        guard var node = nodes[id.name], node.alive, node.id == id else { return }
        let directives = body(&node.tracker)
        nodes[id.name]!.tracker = node.tracker
        execute(id, directives)
    }

    // MARK: The shell: carrying out directives

    func execute(_ id: NodeID, _ directives: [Tracker.Directive]) {
        for directive in directives {
            switch directive {
            case .send(let to, let message):
                if chaos && settings.faults && random.chance(settings.dropProbability) {
                    dropped(message, reason: "dropped by network")
                    continue
                }
                if blocked.contains([id.name, to.name]) {
                    dropped(message, reason: "partition")
                    continue
                }
                let key = [id.name, to.name]
                let at = max(now + latency(), (linkClock[key] ?? 0) + 1)
                linkClock[key] = at
                queue.push(at, .deliver(from: id, to: to, message))
            case .connect(_, let address):
                queue.push(now + latency(), .connect(from: id, to: address))
            case .startProcess(let order):
                trace("\(id.name) start \(order.name) (\(order.reason))")
                queue.push(now + random.uint64(.ms(1) / 2 ... .ms(5)), .started(id, order, fail: chaos && random.chance(0.03)))
            case .stopProcess(let pid, let reason):
                trace("\(id.name) stop \(pid) (\(reason))")
                processes[pid] = nil
            case .beginHandoff(let token, let pid, _):
                queue.push(now + random.uint64(.ms(1) / 5 ... .ms(3)), .handoffAnswer(id, token: token, pid: pid))
            case .collectState(let token, let pid, _):
                queue.push(now + random.uint64(.ms(1) / 5 ... .ms(3)), .stateCollected(id, token: token, pid: pid))
            case .deliver(let pid, let batch):
                if settings.verbose { trace("\(id.name) deliver #\(batch.map(\.id)) to \(pid)") }
                for envelope in batch { deliver(envelope, to: pid) }
            case .endHandoff(let pid, let state):
                guard var process = processes[pid] else { break }
                if process.receivedAnything {
                    violate("\(process.name): endHandoff reached \(pid) after another message")
                }
                if let expected = process.expectFirst, expected != state {
                    violate("\(process.name): endHandoff state differs from the handed-off state")
                }
                process.expectFirst = nil
                process.receivedAnything = true
                if let separator = state.lastIndex(of: UInt8(ascii: ":")) {
                    process.lineage = String(decoding: state[..<separator], as: UTF8.self)
                    process.counter = UInt64(String(decoding: state[(separator + 1)...], as: UTF8.self)) ?? 0
                }
                processes[pid] = process
            case .resolveConflict(let pid, _):
                trace("\(pid) resolveConflict")
            case .reply(let request, let reply):
                trace("\(id.name) reply #\(request): \(reply)")
                if acknowledgedCheckpoints.removeValue(forKey: request) != nil {
                    answeredCheckpoints.insert(request)
                    if reply != .done(nil) && reply != .done(.timeout) { violate("acknowledged checkpoint #\(request) answered \(reply)") }
                } else if answeredCheckpoints.contains(request) {
                    violate("acknowledged checkpoint #\(request) answered twice")
                }
            case .undeliverable(let batch, let error):
                for envelope in batch {
                    envelopes[envelope.id]?.failed = true
                    if envelopes[envelope.id]?.planned == true {
                        violate("planned-phase message \(envelope.id) to \(envelopes[envelope.id]!.name) undeliverable: \(error)")
                    }
                }
            case .ringChanged(let ringNodes):
                trace("\(id.name) ring \(ringNodes)")
            case .memberChanged(let member):
                trace("\(id.name) member \(member)")
            case .drainComplete:
                trace("\(id.name) drain complete: exits")
                if let node = nodes[id.name], node.id == id, node.alive {
                    for pid in processes.keys.sorted() where pid.node == id {
                        if processes[pid]!.managed { violate("\(pid) still running on \(id.name) after its drain completed") }
                        processes[pid] = nil
                    }
                    crash(id.name)
                }
            case .scheduleTick(let after):
                queue.push(now + after, .tick(id))
            case .trace(let text):
                trace(text)
            }
        }
    }

    func deliver(_ envelope: Envelope, to pid: ProcessID) {
        guard var process = processes[pid] else {
            if var record = envelopes[envelope.id], record.planned {
                record.excused = false
                envelopes[envelope.id] = record
                violate("planned-phase message \(envelope.id) to \(record.name) delivered to ended process \(pid)")
            }
            return
        }
        if process.expectFirst != nil {
            violate("\(process.name): \(pid) got a message before endHandoff")
        }
        process.receivedAnything = true
        process.counter += 1
        processes[pid] = process
        if var record = envelopes[envelope.id] {
            record.delivered += 1
            let firstForThisProcess = record.receivers.insert(pid).inserted
            if record.named ? record.delivered > 1 : !firstForThisProcess {
                violate("message \(envelope.id) to \(record.name) delivered twice (\(pid))")
            }
            envelopes[envelope.id] = record
        }
    }

    func dropped(_ message: PeerMessage, reason: String) {
        switch message {
        case .named(_, let batch):
            for envelope in batch { excuse(envelope, reason) }
        case .toProcesses(_, let envelope):
            excuse(envelope, reason)
        default:
            break
        }
    }

    func excuse(_ envelope: Envelope, _ reason: String) {
        guard var record = envelopes[envelope.id] else { return }
        if record.planned { violate("planned-phase message \(envelope.id) to \(record.name) lost: \(reason)") }
        record.excused = true
        envelopes[envelope.id] = record
    }

    // MARK: Workload

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
            guard let pid = node.tracker.whereis(name), let process = processes[pid], process.managed,
                let host = nodes[pid.node.name], host.alive, host.id == pid.node
            else { return }
            checkpointStates[process.name, default: []].insert(process.stateBytes)
            // Every other checkpoint waits for the successor's acknowledgement (no extra random draw).
            var request: RequestID?
            if nextRequest % 2 == 0 {
                request = self.request()
                acknowledgedCheckpoints[request!] = pid.node
            }
            withTracker(pid.node) { $0.onCheckpoint(pid: pid, state: process.stateBytes, request: request, now: self.now) }
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
            trace("op: \(pid) ends")
            processes[pid] = nil
            withTracker(id) { $0.onProcessEnded(pid, now: self.now) }
        default:
            _ = node.tracker.whereis(name)
            _ = node.tracker.registered()
        }
    }

    func plannedCast() {
        let live = liveNodes.filter { $0.tracker.selfState == .up }
        guard !live.isEmpty else { return }
        let node = random.pick(live)
        let registered = node.tracker.registered().filter { $0.name.hasPrefix("name-") }
        guard !registered.isEmpty else { return }
        let name = random.pick(registered).name
        let message = envelope(from: node.id, to: name, call: false)
        withTracker(node.id) { $0.onSend(to: name, message, now: self.now) }
    }

    // MARK: Faults

    func fault() {
        faultsDone += 1
        let live = liveNodes.map(\.name)
        let all = nodes.keys.sorted()
        switch random.int(0...99) {
        case 0..<20:
            // Symmetric partition into two or three sides.
            let sides = random.chance(0.3) ? 3 : 2
            var assignment: [String: Int] = [:]
            for name in all { assignment[name] = random.int(0...(sides - 1)) }
            note("fault: partition \(all.map { "\($0):\(assignment[$0]!)" })")
            for a in all { for b in all where assignment[a] != assignment[b] { blocked.insert([a, b]) } }
        case 20..<28:
            guard live.count >= 2 else { return }
            let a = random.pick(live)
            let b = random.pick(live.filter { $0 != a })
            note("fault: one-way cut \(a) → \(b)")
            blocked.insert([a, b])
        case 28..<42:
            note("fault: heal all links")
            blocked.removeAll()
        case 42..<56:
            guard live.count > 2 else { return }
            let victim = random.pick(live)
            note("fault: crash \(victim)")
            crash(victim)
            crashed.append(victim)
        case 56..<68:
            guard let name = crashed.first(where: { !(nodes[$0]?.alive ?? false) }) else { return }
            crashed.removeAll { $0 == name }
            note("fault: restart \(name) with a new incarnation")
            startNode(name, at: now)
        case 68..<76:
            guard live.count > 3 else { return }
            let drainee = random.pick(live)
            note("fault: drain \(drainee)")
            withTracker(nodes[drainee]!.id) { $0.onDrain(now: self.now) }
            crashed.append(drainee)  // restarted (new incarnation) at the heal
        case 76..<84:
            joinedCounter += 1
            note("fault: node-j\(joinedCounter) joins")
            startNode("node-j\(joinedCounter)", at: now)
        default:
            guard live.count >= 2 else { return }
            let a = random.pick(live)
            let b = random.pick(live.filter { $0 != a })
            note("fault: flapping link \(a) ⇄ \(b)")
            var at = now
            for i in 0..<8 {
                queue.push(at, .setLink(a, b, blocked: i % 2 == 0))
                at += random.uint64(.ms(200)...(.ms(2500)))
            }
        }
    }

    // MARK: Checks

    /// What still differs from the converged state (empty when converged).
    func convergenceProblems() -> [String] {
        var problems: [String] = []
        let live = liveNodes
        guard let first = live.first else { return ["no live node"] }
        let rings = Set(live.map { $0.tracker.ring.nodes })
        if rings.count != 1 { problems.append("rings differ: \(rings)") }
        if live.contains(where: { $0.tracker.selfState != .up && !$0.tracker.draining }) { problems.append("a node is not up") }
        let reference = Dictionary(uniqueKeysWithValues: first.tracker.registered().map { ($0.name, $0.pid) })
        for node in live.dropFirst() {
            let view = Dictionary(uniqueKeysWithValues: node.tracker.registered().map { ($0.name, $0.pid) })
            if view != reference { problems.append("\(node.name) registry differs from \(first.name)") }
        }
        for node in live where node.tracker.inFlight > 0 {
            problems.append("\(node.name) has in flight: \(node.tracker.inFlightDescription)")
        }
        problems.append(contentsOf: placementProblems(reference, ring: first.tracker))
        return problems
    }

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

    func finalCheck() {
        let problems = convergenceProblems()
        for problem in problems.prefix(20) { violate("final state: \(problem)") }
        guard let first = liveNodes.first else { return }
        // Every factory name that was not deliberately removed must still run.
        let quorumLost = strategyIsQuorum && first.tracker.ring.nodes.count < initialCount / 2 + 1
        if !quorumLost {
            for name in everStarted.sorted() where name.hasPrefix("name-") {
                if first.tracker.whereis(name) == nil && !deliberatelyRemoved.contains(name) && !lostWithHost.contains(name) {
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

    // MARK: Trace

    func violate(_ text: String) {
        violations.append("t=\(Self.seconds(now)) \(text)")
        trace("VIOLATION: \(text)")
    }

    func note(_ text: String) { trace(text) }

    func trace(_ text: String) {
        let line = "t=\(Self.seconds(now)) \(text)"
        if settings.verbose { print(line) }
        if traceLines.count < settings.traceCapacity {
            traceLines.append(line)
        } else {
            traceLines[traceStart] = line
            traceStart = (traceStart + 1) % settings.traceCapacity
        }
    }

    func orderedTrace() -> [String] { Array(traceLines[traceStart...] + traceLines[..<traceStart]) }

    public static func seconds(_ ns: Nanoseconds) -> String {
        let ms = ns / 1_000_000
        let fraction = String(ms % 1000)
        return "\(ms / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)s"
    }

    static func describe(_ message: PeerMessage) -> String {
        switch message {
        case .heartbeat(let members, let seq): return "heartbeat(\(members.count) members, seq \(seq))"
        case .replicate(let changes): return "replicate(\(changes.first?.seq ?? 0)…\(changes.last?.seq ?? 0))"
        case .snapshot(let seq, let entries): return "snapshot(seq \(seq), \(entries.count) entries)"
        case .named(let name, let batch): return "named(\(name), #\(batch.map(\.id)))"
        default: return "\(message)"
        }
    }
}
