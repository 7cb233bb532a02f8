import Foundation
import Glibc

/// SplitMix64: the seeded choices of the random fault cycles (a seed replays the same faults).
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One scenario's outcome, printed as a line and written to the JSON report.
struct Outcome: Codable {
    var scenario: String
    var passed: Bool
    /// Heal (or restart) → first passing check round, seconds.
    var convergeSeconds: Double?
    var detail: String
}

/// Options shared by the scenarios.
struct ScenarioOptions {
    var hold: Double = 3
    var convergeTimeout: Double = 30
    var twinSample: Int = 1000
    var cycles: Int = 5
    var seed: UInt64 = 1
}

/// The partition scenarios on a 5-node cluster (`Cluster.nodes` 1…5).
struct PartitionScenarios {
    let cluster: Cluster
    let options: ScenarioOptions
    var outcomes: [Outcome] = []

    init(cluster: Cluster, options: ScenarioOptions) {
        self.cluster = cluster
        self.options = options
    }

    var lab: Lab { cluster.lab }
    func node(_ i: Int) -> GatewayNode { cluster.nodes[i - 1] }

    /// Records the convergence after `since`; on a miss saves the dumps.
    mutating func measure(_ name: String, since: Double, detail: String = "") -> Bool {
        let result = cluster.converge(since: since, timeout: options.convergeTimeout, twinSample: options.twinSample)
        let passed = result.seconds != nil
        var text = detail
        if !passed {
            text += (text.isEmpty ? "" : "; ") + "not converged in \(Int(options.convergeTimeout)) s: " + result.lastProblems.prefix(6).joined(separator: "; ")
            cluster.saveDumps(name.replacingOccurrences(of: " ", with: "_").replacingOccurrences(of: "|", with: "-"))
        }
        let outcome = Outcome(scenario: name, passed: passed, convergeSeconds: result.seconds, detail: text)
        outcomes.append(outcome)
        cluster.log("\(passed ? "PASS" : "FAIL") \(name): converged \(result.seconds.map { String(format: "%.3f s", $0) } ?? "never") after \(result.rounds) rounds\(text.isEmpty ? "" : " — " + text)")
        return passed
    }

    /// Brings every node back (restarts stopped ones) and waits for a clean state.
    mutating func baseline(_ label: String) -> Bool {
        lab.healAll()
        for n in cluster.nodes where n.wrapper == 0 || !n.isRunning {
            n.kill9()
            try? cluster.start(n)
        }
        let result = cluster.converge(since: Proc.now(), timeout: options.convergeTimeout * 2, twinSample: 0)
        if result.seconds == nil {
            cluster.log("baseline before \(label) not reached: \(result.lastProblems.prefix(6).joined(separator: "; "))")
            cluster.saveDumps("baseline-\(label)")
        }
        return result.seconds != nil
    }

    mutating func partition(_ name: String, _ groups: [[Int]]) {
        guard baseline(name) else { return skip(name) }
        lab.partition(groups)
        Proc.sleep(options.hold)
        lab.healAll()
        _ = measure(name, since: Proc.now())
    }

    mutating func skip(_ name: String) {
        outcomes.append(Outcome(scenario: name, passed: false, convergeSeconds: nil, detail: "no clean baseline before the scenario"))
    }

    mutating func oneWay() {
        let name = "one-way cut gw-1 -> gw-2"
        guard baseline(name) else { return skip(name) }
        lab.cut(from: 1, to: 2)
        Proc.sleep(options.hold)
        lab.healAll()
        _ = measure(name, since: Proc.now())
    }

    mutating func flap(_ a: Int, _ b: Int, seconds: Double, rng: inout SeededRandom) {
        let name = "flapping link gw-\(a) <-> gw-\(b)"
        guard baseline(name) else { return skip(name) }
        let end = Proc.now() + seconds
        var toggles = 0
        var healed = Proc.now()
        while Proc.now() < end {
            if lab.activeCuts == 0 { lab.partition([[a], [b]]) } else { lab.healAll(); healed = Proc.now() }
            toggles += 1
            Proc.sleep(Double.random(in: 0.15...0.8, using: &rng))
        }
        if lab.activeCuts > 0 { lab.healAll(); healed = Proc.now() }
        _ = measure(name, since: healed, detail: "\(toggles) toggles in \(String(format: "%.1f", seconds)) s")
    }

    /// Waits (bounded) until some live node's dump shows a handoff in flight.
    func awaitHandoff(timeout: Double, on which: [GatewayNode]) -> Bool {
        let deadline = Proc.now() + timeout
        while Proc.now() < deadline {
            for n in which where n.wrapper != 0 {
                if let dump = n.dump(), !dump.handoffs.isEmpty { return true }
            }
            Proc.sleep(0.01)
        }
        return false
    }

    /// `kill -9` of a joining node while the others hand devices to it.
    mutating func killJoiner() {
        let name = "kill -9 of a joining node during handoff"
        guard baseline(name) else { return skip(name) }
        let joiner = node(5)
        let killed = Proc.now()
        joiner.kill9()
        guard measure("  (gw-5 killed, 4 nodes)", since: killed) else { return }
        do { try cluster.start(joiner) } catch { return skip(name) }
        let seen = awaitHandoff(timeout: 8, on: cluster.nodes.filter { $0 !== joiner })
        let killedAgain = Proc.now()
        joiner.kill9()
        _ = measure(name, since: killedAgain, detail: seen ? "killed with handoffs in flight" : "no handoff observed before the kill")
    }

    /// `kill -9` of a draining node in the middle of its drain.
    mutating func killDraining() {
        let name = "kill -9 of a draining node"
        guard baseline(name) else { return skip(name) }
        let victim = node(4)
        guard victim.drain() else {
            outcomes.append(Outcome(scenario: name, passed: false, convergeSeconds: nil, detail: "POST /v1/cluster/drain refused"))
            return
        }
        let seen = awaitHandoff(timeout: 3, on: [victim])
        let killed = Proc.now()
        victim.kill9()
        _ = measure(name, since: killed, detail: seen ? "killed with handoffs in flight" : "no handoff observed before the kill")
    }

    /// `kill -9` and an immediate restart: the same name with a new incarnation.
    mutating func restartIncarnation() {
        let name = "restart with a new incarnation"
        guard baseline(name) else { return skip(name) }
        let victim = node(2)
        let before = victim.dump()?.incarnation
        let since = Proc.now()
        victim.kill9()
        do { try cluster.start(victim) } catch { return skip(name) }
        var detail = ""
        let passed = measure(name, since: since)
        if passed, let after = victim.dump()?.incarnation {
            detail = "incarnation \(before ?? 0) -> \(after)"
            if after == before { outcomes[outcomes.count - 1].passed = false; detail += " (unchanged!)" }
            outcomes[outcomes.count - 1].detail = detail
        }
    }

    /// Drain of a node on the minority side of a 3|2 split; heal; the drained node is gone.
    mutating func drainDuringPartition() {
        let name = "drain during a 3|2 partition"
        guard baseline(name) else { return skip(name) }
        lab.partition([[1, 2, 3], [4, 5]])
        Proc.sleep(options.hold)
        let victim = node(5)
        let accepted = victim.drain()
        let exit = victim.awaitExit(timeout: 20)
        lab.healAll()
        _ = measure(name, since: Proc.now(), detail: "drain \(accepted ? "accepted" : "refused"), node exit \(exit.map(String.init) ?? "killed after 20 s")")
    }

    /// `cycles` random faults (seeded): split into 2 or 3 groups, isolate one node, one-way cut,
    /// flapping link, kill -9 + restart; each held 0.5–3.5 s, then healed and checked.
    mutating func randomCycles(rng: inout SeededRandom) {
        var times: [Double] = []
        for cycle in 1...max(1, options.cycles) {
            guard baseline("cycle \(cycle)") else {
                skip("random cycle \(cycle)")
                continue
            }
            let hold = Double.random(in: 0.5...3.5, using: &rng)
            let kind = Int.random(in: 0..<6, using: &rng)
            var description = ""
            var healedAt: Double?
            var nodes = Array(1...cluster.nodes.count)
            nodes.shuffle(using: &rng)
            switch kind {
            case 0:
                let k = Int.random(in: 1...(nodes.count - 1), using: &rng)
                let groups = [Array(nodes[..<k]).sorted(), Array(nodes[k...]).sorted()]
                description = "split \(groups)"
                lab.partition(groups)
                Proc.sleep(hold)
            case 1:
                let a = Int.random(in: 1...(nodes.count - 2), using: &rng)
                let b = Int.random(in: (a + 1)...(nodes.count - 1), using: &rng)
                let groups = [Array(nodes[..<a]).sorted(), Array(nodes[a..<b]).sorted(), Array(nodes[b...]).sorted()]
                description = "split \(groups)"
                lab.partition(groups)
                Proc.sleep(hold)
            case 2:
                description = "isolate gw-\(nodes[0])"
                lab.partition([[nodes[0]], Array(nodes[1...])])
                Proc.sleep(hold)
            case 3:
                description = "one-way gw-\(nodes[0]) -> gw-\(nodes[1])"
                lab.cut(from: nodes[0], to: nodes[1])
                Proc.sleep(hold)
            case 4:
                description = "flap gw-\(nodes[0]) <-> gw-\(nodes[1])"
                let end = Proc.now() + hold
                while Proc.now() < end {
                    if lab.activeCuts == 0 { lab.partition([[nodes[0]], [nodes[1]]]) } else { lab.healAll(); healedAt = Proc.now() }
                    Proc.sleep(Double.random(in: 0.1...0.6, using: &rng))
                }
            default:
                description = "kill -9 + restart gw-\(nodes[0]) (time from the restart)"
                node(nodes[0]).kill9()
                Proc.sleep(hold)
                healedAt = Proc.now()
                try? cluster.start(node(nodes[0]))
            }
            if lab.activeCuts > 0 || healedAt == nil {
                lab.healAll()
                healedAt = Proc.now()
            }
            let name = "random cycle \(cycle): \(description), held \(String(format: "%.1f", hold)) s"
            if measure(name, since: healedAt!), let seconds = outcomes.last?.convergeSeconds { times.append(seconds) }
        }
        if !times.isEmpty {
            let sorted = times.sorted()
            cluster.log(String(format: "random cycles: %d converged of %d; convergence median %.3f s, p90 %.3f s, max %.3f s",
                               times.count, options.cycles, sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.9))], sorted.last!))
        }
    }

    /// Isolations shorter than or close to the failure timeout, repeated: the heals where a
    /// connection silenced by the cut can stay silent after it (TCP retransmission backoff).
    mutating func shortIsolations(count: Int, rng: inout SeededRandom) {
        var times: [Double] = []
        for i in 1...max(1, count) {
            let victim = Int.random(in: 1...cluster.nodes.count, using: &rng)
            let hold = Double.random(in: 0.8...1.8, using: &rng)
            let name = "short isolation \(i): gw-\(victim), held \(String(format: "%.2f", hold)) s"
            guard baseline(name) else { skip(name); continue }
            lab.partition([[victim], Array(1...cluster.nodes.count).filter { $0 != victim }])
            Proc.sleep(hold)
            lab.healAll()
            if measure(name, since: Proc.now()), let seconds = outcomes.last?.convergeSeconds { times.append(seconds) }
        }
        if !times.isEmpty {
            let sorted = times.sorted()
            cluster.log(String(format: "short isolations: %d converged of %d; convergence median %.3f s, max %.3f s",
                               times.count, count, sorted[sorted.count / 2], sorted.last!))
        }
    }

    mutating func runAll(only: Set<String>?) {
        var rng = SeededRandom(seed: options.seed)
        func wanted(_ key: String) -> Bool { only == nil || only!.contains(key) }
        if wanted("split32") { partition("3|2 split", [[1, 2, 3], [4, 5]]) }
        if wanted("split221") { partition("2|2|1 split", [[1, 2], [3, 4], [5]]) }
        if wanted("isolate") { partition("one node isolated (gw-3)", [[3], [1, 2, 4, 5]]) }
        if wanted("oneway") { oneWay() }
        if wanted("flap") { flap(2, 4, seconds: max(2, options.hold * 1.5), rng: &rng) }
        if wanted("killjoin") { killJoiner() }
        if wanted("killdrain") { killDraining() }
        if wanted("restart") { restartIncarnation() }
        if wanted("drainpartition") { drainDuringPartition() }
        if wanted("shortisolate") { shortIsolations(count: max(1, options.cycles / 4), rng: &rng) }
        if wanted("random") { randomCycles(rng: &rng) }
    }
}
