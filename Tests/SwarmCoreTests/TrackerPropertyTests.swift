import PropertyBased
import Testing

@testable import SwarmCore

/// Random API calls, process ends, node crashes and restarts on a 3-node cluster with reliable
/// in-order delivery; once quiet, the cluster must have converged (ARCHITECTURE.md, “Replication”).
@Suite struct TrackerPropertyTests {
    @Test func randomOperationsConverge() async {
        await propertyCheck(count: 150, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SplitMix(seed: seed)
            var cluster = Cluster(three)
            // Handoff answers come late, in random order, and fail sometimes.
            cluster.handoffPolicy = nil
            var incarnations = ["gw-1": UInt64(1), "gw-2": 1, "gw-3": 1]
            let pool = (0..<10).map { "k\($0)" }
            var request: RequestID = 1
            var log: [String] = []
            for _ in 0..<40 {
                let live = cluster.nodes.keys.sorted()
                // Nodes that will stay: never crash or drain the last one of those.
                let staying = live.filter { !cluster.nodes[$0]!.draining }
                let node = live.randomElement(using: &rng)!
                let name = pool.randomElement(using: &rng)!
                request += 1
                switch Int.random(in: 0..<14, using: &rng) {
                case 0..<5:
                    let groups = ["a", "b"].filter { _ in rng.chance(0.5) }
                    log.append("register \(name) from \(node)")
                    cluster.on(node) { $0.onRegister(name: name, factory: worker, groups: groups, request: request, now: $1) }
                case 5, 6:
                    log.append("unregister \(name) from \(node)")
                    cluster.on(node) { $0.onUnregister(name: name, request: request, now: $1) }
                case 7:
                    let pid = cluster.newPid(on: node)
                    log.append("register existing \(name) → \(pid)")
                    cluster.on(node) { $0.onRegisterExisting(name: name, pid: pid, request: request, now: $1) }
                case 8:
                    // A process the shell already reported as started (ends are reported after starts).
                    let hosted = Set(cluster.nodes[node]!.localEntries.values.map(\.pid))
                    if let pid = cluster.running.keys.filter({ hosted.contains($0) }).sorted().first {
                        log.append("process \(pid) ends")
                        cluster.running[pid] = nil
                        cluster.on(node) { $0.onProcessEnded(pid, now: $1) }
                    }
                case 9:
                    let envelope = cluster.envelope(from: node)
                    log.append("send \(envelope.id) to \(name) from \(node)")
                    cluster.on(node) { $0.onSend(to: name, envelope, now: $1) }
                case 10:
                    if staying.count >= 2, staying.contains(node) {
                        log.append("drain \(node)")
                        cluster.on(node) { $0.onDrain(now: $1) }
                    }
                case 11:
                    if staying.count >= 2 || !staying.contains(node) {
                        let silently = rng.chance(0.3)
                        log.append("crash \(node)\(silently ? " silently" : "")")
                        cluster.crash(node, silently: silently)
                    }
                case 12:
                    if cluster.isolated.isEmpty, staying.count >= 2, staying.contains(node) {
                        log.append("isolate \(node)")
                        cluster.isolate(node)
                    } else if !cluster.isolated.isEmpty {
                        log.append("heal")
                        cluster.heal()
                    }
                default:
                    if let dead = three.first(where: { cluster.nodes[$0] == nil }) {
                        incarnations[dead]! += 1
                        log.append("restart \(dead)/\(incarnations[dead]!)")
                        cluster.addNode(dead, incarnation: incarnations[dead]!)
                        for other in live where !cluster.isolated.contains(other) { cluster.connect(dead, other) }
                    }
                }
                // Often let several operations overlap before delivering anything.
                if rng.chance(0.5) { cluster.settle() } else if !cluster.queue.isEmpty, rng.chance(0.5) { cluster.step() }
                if rng.chance(0.3) { cluster.tick(.ms(100)) }
                Self.answerSome(&cluster, rng: &rng)
                Self.exitDrained(&cluster, log: &log)
            }
            if !cluster.isolated.isEmpty {
                log.append("heal")
                cluster.heal()
            }
            for _ in 0..<60 {  // past the 5 s request timeout
                cluster.tick(.ms(100))
                Self.answerSome(&cluster, rng: &rng, all: true)
                Self.exitDrained(&cluster, log: &log)
            }
            #expect(cluster.violations.isEmpty, "seed \(seed): \(cluster.violations)")
            let view = cluster.nodes.values.first!.registry.view
            let names = Set(cluster.running.values).union(view.values.filter { $0.factory != nil }.map(\.name))
            if !Self.converged(cluster, names: names) { Issue.record("seed \(seed) did not converge after: \(log)") }
            checkConverged(cluster, names: names.sorted())
        }
    }

    /// Successor state: a drain under steady traffic loses no message and delivers none twice; every
    /// moved process gets `endHandoff` first.
    @Test func drainUnderTrafficLosesNoMessage() async {
        await propertyCheck(count: 40, input: Gen.uint64(in: 0...UInt64.max)) { seed in
            var rng = SplitMix(seed: seed)
            var cluster = Cluster(three)
            var names: [String] = []
            for i in 0..<9 {
                names.append("t\(i)")
                _ = cluster.register("t\(i)", from: three[i % 3], request: RequestID(i + 1))
            }
            let drained = three.randomElement(using: &rng)!
            let senders = three.filter { $0 != drained }
            cluster.on(drained) { $0.onDrain(now: $1) }
            var sent: [UInt64] = []
            var rounds = 0
            while !cluster.nodes[drained]!.drainComplete, rounds < 200 {
                rounds += 1
                for name in names {
                    let from = rng.chance(0.3) ? drained : senders.randomElement(using: &rng)!
                    let envelope = cluster.envelope(from: from)
                    sent.append(envelope.id)
                    cluster.on(from) { $0.onSend(to: name, envelope, now: $1) }
                    if rng.chance(0.3), !cluster.queue.isEmpty { cluster.step() }
                }
                Self.answerSome(&cluster, rng: &rng)
                if rng.chance(0.5) { cluster.settle() }
                if rng.chance(0.4) { cluster.tick(.ms(50)) }
            }
            cluster.settle()
            #expect(cluster.nodes[drained]!.drainComplete, "seed \(seed): drain did not complete")
            // The drained node exits; traffic goes on.
            cluster.crash(drained)
            for _ in 0..<3 {
                for name in names {
                    let envelope = cluster.envelope(from: senders.randomElement(using: &rng)!)
                    sent.append(envelope.id)
                    cluster.on(envelope.sender.name) { $0.onSend(to: name, envelope, now: $1) }
                }
                cluster.tick()
            }
            var received: [UInt64: Int] = [:]
            for events in cluster.inbox.values {
                for case .message(let id) in events { received[id, default: 0] += 1 }
            }
            let lost = sent.filter { received[$0] == nil }
            let twice = received.filter { $0.value > 1 }.map(\.key)
            #expect(lost.isEmpty, "seed \(seed): \(lost.count) of \(sent.count) lost")
            #expect(twice.isEmpty, "seed \(seed): delivered twice: \(twice)")
            #expect(cluster.undelivered.isEmpty, "seed \(seed): \(cluster.undelivered.values.flatMap { $0 }.map(\.1))")
            #expect(cluster.violations.isEmpty, "seed \(seed): \(cluster.violations)")
            for name in names {
                #expect(cluster.whereis(name).count == 1)
                #expect(cluster.nodes[senders[0]]!.whereis(name)?.node.name != drained)
            }
        }
    }

    /// Answers pending `beginHandoff`s: restart, resume or failed; `all` answers every one.
    static func answerSome(_ cluster: inout Cluster, rng: inout SplitMix, all: Bool = false) {
        var pending = cluster.asked
        cluster.asked = []
        pending.shuffle(using: &rng)
        for ask in pending {
            guard cluster.nodes[ask.node] != nil else { continue }
            if !all && rng.chance(0.4) {
                cluster.asked.append(ask)
                continue
            }
            let answer: HandoffAnswer
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4: answer = .restart
            case 4..<8: answer = .resume([UInt8(ask.token & 0xff)])
            default: answer = .failed("busy")
            }
            cluster.answer(ask, answer)
            if rng.chance(0.5) { cluster.settle() }
        }
        if all { cluster.settle() }
    }

    /// A node whose drain completed exits.
    static func exitDrained(_ cluster: inout Cluster, log: inout [String]) {
        for node in cluster.nodes.keys.sorted() where cluster.nodes[node]!.drainComplete {
            log.append("\(node) exits after its drain")
            cluster.crash(node)
        }
    }

    static func converged(_ cluster: Cluster, names: Set<String>) -> Bool {
        let nodes = cluster.nodes.values.sorted { $0.me < $1.me }
        guard nodes.allSatisfy({ $0.ring == nodes[0].ring && $0.registry.view == nodes[0].registry.view && $0.inFlight == 0 }) else { return false }
        for name in names {
            let copies = cluster.running.filter { $0.value == name }.map(\.key)
            guard copies.count == 1, copies[0].node.name == nodes[0].ring.owner(of: name), cluster.whereis(name) == [copies[0]] else { return false }
        }
        return true
    }
}
