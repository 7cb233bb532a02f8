import Testing

@testable import SwarmCore

let worker = FactorySpec(kind: "worker", arguments: [1, 2, 3])

/// A tiny deterministic cluster: several `Tracker.Instance`s wired together by hand. Peer
/// messages go through one FIFO queue (so every link is in order), factory starts get pids
/// allocated here, and everything each process receives is recorded in order. No clock: the
/// test moves `now` and calls `tick`.
struct Cluster {
    enum Pending {
        case message(from: NodeID, to: NodeID, PeerMessage)
        case started(node: String, token: UInt64, Result<ProcessID, SwarmError>)
        case answer(node: String, token: UInt64, HandoffAnswer)
        case state(node: String, token: UInt64, [UInt8]?)
    }

    /// What a process received, in order.
    enum Received: Hashable, CustomStringConvertible {
        case endHandoff([UInt8])
        case message(UInt64)
        case resolveConflict([UInt8])
        var description: String {
            switch self {
            case .endHandoff(let s): return "endHandoff(\(s))"
            case .message(let id): return "msg#\(id)"
            case .resolveConflict(let s): return "resolveConflict(\(s))"
            }
        }
    }

    struct AskedHandoff {
        var node: String
        var token: UInt64
        var pid: ProcessID
        var name: String
    }

    var settings = Tracker.Settings()
    var strategy: any PlacementStrategy = RingStrategy()
    var nodes: [String: Tracker.Instance] = [:]
    var now: Instant = .seconds(100)
    var queue: [Pending] = []
    /// Every directive each node emitted, in order.
    var history: [String: [Tracker.Directive]] = [:]
    var replies: [String: [RequestID: Tracker.Reply]] = [:]
    var inbox: [ProcessID: [Received]] = [:]
    var running: [ProcessID: String] = [:]
    var stops: [ProcessID: Tracker.StopReason] = [:]
    var startOrders: [(node: String, order: Tracker.StartOrder)] = []
    var undelivered: [String: [(Envelope, SwarmError)]] = [:]
    /// Factory kinds every node knows.
    var factories: Set<String> = ["worker"]
    /// When set, starts wait in `heldStarts` until `completeStart`.
    var holdStarts = false
    var heldStarts: [(node: String, order: Tracker.StartOrder)] = []
    /// When set, every `beginHandoff` is answered with it; otherwise asks wait in `asked`.
    var handoffPolicy: HandoffAnswer?
    var asked: [AskedHandoff] = []
    var nextLocal: [String: UInt64] = [:]
    /// Nodes cut off from every other node (messages to and from them are lost).
    var isolated: Set<String> = []
    var nextEnvelope: UInt64 = 1
    /// Processes whose first message must be `endHandoff(state)`, until it arrived.
    var expectFirst: [ProcessID: [UInt8]] = [:]
    /// Broken invariants seen while carrying out directives.
    var violations: [String] = []
    /// What a conflict loser answers to `collectState`.
    var conflictState: [UInt8]?

    init(debug: Bool = false) {
        settings.debug = debug
    }

    /// A cluster of `names`, each up on its own and then connected pairwise.
    init(_ names: [String], debug: Bool = false) {
        self.init(debug: debug)
        for name in names { addNode(name) }
        for (i, a) in names.enumerated() {
            for b in names[(i + 1)...] { connect(a, b) }
        }
    }

    func id(_ node: String) -> NodeID { nodes[node]!.me }

    mutating func addNode(_ name: String, incarnation: UInt64 = 1) {
        var instance = Tracker.Instance(
            me: NodeID(name: name, incarnation: incarnation), address: name + ":7946", settings: settings,
            strategy: strategy, seeds: [], expectsPeers: false, now: now)
        let directives = instance.onStart(now: now)
        nodes[name] = instance
        feed(name, directives)
        settle()
    }

    mutating func connect(_ a: String, _ b: String) {
        let idA = id(a)
        let idB = id(b)
        on(a) { $0.onPeerConnected(idB, address: b + ":7946", now: $1) }
        on(b) { $0.onPeerConnected(idA, address: a + ":7946", now: $1) }
        settle()
    }

    /// Runs one input on `node` and carries out its directives (messages are only queued).
    @discardableResult
    mutating func on(_ node: String, _ input: (inout Tracker.Instance, Instant) -> [Tracker.Directive]) -> [Tracker.Directive] {
        let directives = input(&nodes[node]!, now)
        feed(node, directives)
        return directives
    }

    mutating func feed(_ node: String, _ directives: [Tracker.Directive]) {
        history[node, default: []].append(contentsOf: directives)
        let me = id(node)
        for directive in directives {
            switch directive {
            case .send(let to, let message):
                queue.append(.message(from: me, to: to, message))
            case .startProcess(let order):
                startOrders.append((node, order))
                if holdStarts {
                    heldStarts.append((node, order))
                } else {
                    queue.append(.started(node: node, token: order.token, spawn(node, order)))
                }
            case .stopProcess(let pid, let reason):
                stops[pid] = reason
                running[pid] = nil
            case .beginHandoff(let token, let pid, let name):
                if let policy = handoffPolicy {
                    queue.append(.answer(node: node, token: token, policy))
                } else {
                    asked.append(AskedHandoff(node: node, token: token, pid: pid, name: name))
                }
            case .collectState(let token, _, _):
                queue.append(.state(node: node, token: token, conflictState))
            case .deliver(let pid, let envelopes):
                if expectFirst[pid] != nil { violations.append("\(pid) got \(envelopes.map(\.id)) before endHandoff") }
                inbox[pid, default: []].append(contentsOf: envelopes.map { .message($0.id) })
            case .endHandoff(let pid, let state):
                if let expected = expectFirst.removeValue(forKey: pid), expected != state {
                    violations.append("\(pid) endHandoff \(state), expected \(expected)")
                } else if inbox[pid] != nil {
                    violations.append("\(pid) endHandoff after other messages")
                }
                inbox[pid, default: []].append(.endHandoff(state))
            case .resolveConflict(let pid, let state):
                inbox[pid, default: []].append(.resolveConflict(state))
            case .reply(let request, let reply):
                replies[node, default: [:]][request] = reply
            case .undeliverable(let envelopes, let error):
                for envelope in envelopes { undelivered[node, default: []].append((envelope, error)) }
            case .connect, .ringChanged, .memberChanged, .drainComplete, .scheduleTick, .trace:
                break
            }
        }
    }

    mutating func newPid(on node: String) -> ProcessID {
        let local = (nextLocal[node] ?? 0) + 1
        nextLocal[node] = local
        return ProcessID(node: id(node), local: local)
    }

    mutating func spawn(_ node: String, _ order: Tracker.StartOrder) -> Result<ProcessID, SwarmError> {
        guard factories.contains(order.factory.kind) else { return .failure(.unknownFactory(order.factory.kind)) }
        let pid = newPid(on: node)
        running[pid] = order.name
        switch order.reason {
        case .handoff(let state?), .recover(let state): expectFirst[pid] = state
        case .handoff(nil), .register, .restart: break
        }
        return .success(pid)
    }

    /// Completes the held start at `index` the way the shell would.
    mutating func completeStart(_ index: Int = 0) {
        let (node, order) = heldStarts.remove(at: index)
        let result = spawn(node, order)
        on(node) { $0.onProcessStarted(token: order.token, result: result, now: $1) }
    }

    mutating func answer(_ asked: AskedHandoff, _ answer: HandoffAnswer) {
        on(asked.node) { $0.onHandoffAnswer(token: asked.token, answer: answer, now: $1) }
    }

    /// Delivers everything in flight, including what that causes.
    mutating func settle() {
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            precondition(steps < 100_000, "cluster does not settle")
            step()
        }
    }

    /// Handles the first item in flight (what it causes is queued behind the rest).
    mutating func step() {
        switch queue.removeFirst() {
        case .message(let from, let to, let message):
            guard let target = nodes[to.name], target.me == to, nodes[from.name]?.me == from,
                !isolated.contains(from.name), !isolated.contains(to.name)
            else { return }
            on(to.name) { $0.onPeerMessage(message, from: from, now: $1) }
        case .started(let node, let token, let result):
            guard nodes[node] != nil else { return }
            on(node) { $0.onProcessStarted(token: token, result: result, now: $1) }
        case .answer(let node, let token, let answer):
            guard nodes[node] != nil else { return }
            on(node) { $0.onHandoffAnswer(token: token, answer: answer, now: $1) }
        case .state(let node, let token, let state):
            guard nodes[node] != nil else { return }
            on(node) { $0.onConflictState(token: token, state: state, now: $1) }
        }
    }

    /// Moves time forward and ticks every node, then settles.
    mutating func tick(_ step: Nanoseconds = .ms(50)) {
        now += step
        for node in nodes.keys.sorted() { on(node) { $0.onTick(now: $1) } }
        settle()
    }

    /// Ticks `count` times (50 ms each) and settles, losing up to `limit` peer messages that
    /// match `lose` (written on a connection that is then replaced); returns how many were lost.
    mutating func tick(_ count: Int, losing limit: Int, _ lose: (PeerMessage) -> Bool) -> Int {
        var lost = 0
        for _ in 0..<count {
            now += .ms(50)
            for node in nodes.keys.sorted() { on(node) { $0.onTick(now: $1) } }
            while let first = queue.first {
                if lost < limit, case .message(_, _, let message) = first, lose(message) {
                    queue.removeFirst()
                    lost += 1
                } else {
                    step()
                }
            }
        }
        return lost
    }

    /// The node dies: its connections reset on every peer (unless `silently`: then only the
    /// heartbeat timeout tells).
    mutating func crash(_ node: String, silently: Bool = false) {
        let dead = id(node)
        nodes[node] = nil
        isolated.remove(node)
        for pid in running.keys where pid.node == dead { running[pid] = nil }  // its processes die with it
        if !silently {
            for other in nodes.keys.sorted() { on(other) { $0.onPeerDisconnected(dead, now: $1) } }
        }
        settle()
    }

    /// Cuts `node` off from every other node; the connections reset on both sides.
    mutating func isolate(_ node: String) {
        isolated.insert(node)
        let cut = id(node)
        for other in nodes.keys.sorted() where other != node {
            let peer = id(other)
            on(node) { $0.onPeerDisconnected(peer, now: $1) }
            on(other) { $0.onPeerDisconnected(cut, now: $1) }
        }
        settle()
    }

    /// Ends every isolation: the nodes connect again.
    mutating func heal() {
        let cut = isolated.sorted()
        isolated = []
        for node in cut where nodes[node] != nil {
            for other in nodes.keys.sorted() where other != node { connect(node, other) }
        }
    }

    mutating func envelope(from node: String) -> Envelope {
        defer { nextEnvelope += 1 }
        return Envelope(id: nextEnvelope, sender: id(node), payload: Array("m\(nextEnvelope)".utf8))
    }

    /// Registers `name` from `node` and settles; returns the reply.
    @discardableResult
    mutating func register(_ name: String, from node: String, factory: FactorySpec = worker, groups: [String] = [], request: RequestID) -> RegistrationResult? {
        on(node) { $0.onRegister(name: name, factory: factory, groups: groups, request: request, now: $1) }
        settle()
        return registration(node, request)
    }

    func registration(_ node: String, _ request: RequestID) -> RegistrationResult? {
        if case .registration(let result)? = replies[node]?[request] { return result }
        return nil
    }

    func done(_ node: String, _ request: RequestID) -> SwarmError?? {
        if case .done(let error)? = replies[node]?[request] { return .some(error) }
        return nil
    }

    /// Every node's view of `name`.
    func whereis(_ name: String) -> Set<ProcessID?> { Set(nodes.values.map { $0.whereis(name) }) }
}

/// The first name `prefix-i` whose owner on a ring of `nodes` is `owner`.
func nameOwned(by owner: String, among nodes: [String], prefix: String = "dev", excluding: Set<String> = []) -> String {
    let ring = HashRing(nodes: nodes)
    for i in 0... {
        let candidate = "\(prefix)-\(i)"
        if !excluding.contains(candidate), ring.owner(of: candidate) == owner { return candidate }
    }
    fatalError("unreachable")
}

extension Tracker.Directive {
    var startOrder: Tracker.StartOrder? {
        if case .startProcess(let order) = self { return order }
        return nil
    }

    var sentMessage: (to: NodeID, message: PeerMessage)? {
        if case .send(let to, let message) = self { return (to, message) }
        return nil
    }

    var isTrace: Bool {
        if case .trace = self { return true }
        return false
    }

    var isDrainComplete: Bool {
        if case .drainComplete = self { return true }
        return false
    }
}

