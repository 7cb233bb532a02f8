import ArgumentParser
import Foundation

/// What one broker or netem phase measured.
struct FaultPhase: Codable {
    var scenario: String
    var passed: Bool
    /// From the end of the fault (broker answering again, route removed, netem removed) until
    /// every twin has counted new telemetry and is online.
    var recoverySeconds: Double?
    /// From the end of the fault until the partition checks pass (one copy of every device
    /// process, on its ring owner, identical registries, complete groups).
    var convergeSeconds: Double?
    var twinsAnswering: Int
    var twinsOffline: Int
    var gaps: Int
    var duplicates: Int
    var late: Int
    var detail: String
    var problems: [String]
}

extension Cluster {
    /// Kills the broker (SIGKILL: a crash, no will messages, no persistence).
    func killBroker() {
        guard broker != 0 else { return }
        Proc.killTree(broker)
        Children.shared.remove(broker)
        broker = 0
    }

    /// Polls every twin until each has counted telemetry beyond `base` and is online; the time
    /// from `since`, nil after `timeout`.
    func awaitTelemetryResumed(_ ids: [String], base: [String: TwinSample?], since: Double, timeout: Double) -> Double? {
        while Proc.now() - since < timeout {
            let t = Proc.now()
            let now = twins(ids)
            let resumed = ids.allSatisfy { id in
                guard let twin = now[id] ?? nil else { return false }
                return twin.online != false && twin.telemetry > ((base[id] ?? nil)?.telemetry ?? -1)
            }
            if resumed { return t - since }
            Proc.sleep(0.2)
        }
        return nil
    }

    /// Telemetry counters grown between two twin fetches, and the twins' state at the end.
    func phase(
        _ name: String, ids: [String], before: [String: TwinSample?], after: [String: TwinSample?],
        recovery: Double?, converge: Double?, detail: String, extra: [String] = []
    ) -> FaultPhase {
        var gaps = 0, dups = 0, late = 0
        for id in ids {
            guard let a = after[id] ?? nil else { continue }
            let b = before[id] ?? nil
            gaps += max(0, a.gaps - (b?.gaps ?? 0))
            dups += max(0, a.duplicates - (b?.duplicates ?? 0))
            late += max(0, a.late - (b?.late ?? 0))
        }
        let answering = after.values.filter { $0 != nil }.count
        let offline = after.values.filter { $0?.online == false }.count
        var problems = extra
        if answering != ids.count { problems.append("\(ids.count - answering) twins do not answer") }
        if offline > 0 { problems.append("\(offline) twins offline") }
        if recovery == nil { problems.append("telemetry did not resume on every twin") }
        if converge == nil { problems.append("checks did not pass") }
        if dups > 0 { problems.append("\(dups) duplicates") }
        let phase = FaultPhase(
            scenario: name, passed: problems.isEmpty, recoverySeconds: recovery, convergeSeconds: converge,
            twinsAnswering: answering, twinsOffline: offline, gaps: gaps, duplicates: dups, late: late, detail: detail, problems: problems)
        log("\(phase.passed ? "PASS" : "FAIL") \(name): telemetry resumed \(recovery.map { String(format: "%.3f s", $0) } ?? "never"), checks \(converge.map { String(format: "%.3f s", $0) } ?? "never"); gaps \(gaps), duplicates \(dups), late \(late)\(problems.isEmpty ? "" : " — " + problems.joined(separator: "; "))")
        return phase
    }
}

/// Broker faults under steady telemetry (3 nodes): the broker killed and restarted after
/// `outage` seconds; then one node's path to the broker cut for `cut` seconds.
struct BrokerFaults {
    let cluster: Cluster
    var devices: Int
    var rate: Double
    var outage: Double
    var cut: Double
    var settle: Double

    func run() throws -> [FaultPhase] {
        try cluster.startNodes()
        try cluster.startFleet(count: devices, rate: rate, duration: Double(cluster.setup.maxSeconds))
        let ids = try cluster.awaitDevices(count: devices, timeout: 60 + Double(devices) / 40)
        guard cluster.converge(since: Proc.now(), timeout: 60, twinSample: 0).seconds != nil else {
            throw Proc.Failure(description: "no clean state before the broker faults")
        }
        Proc.sleep(2)
        var phases: [FaultPhase] = []

        // 1. Broker restart.
        var before = cluster.twins(ids)
        cluster.log("kill -9 of the broker; restarting it after \(outage) s")
        let killed = Proc.now()
        cluster.killBroker()
        Proc.sleep(outage)
        try cluster.startBroker()
        let up = Proc.now()
        let base = cluster.twins(ids)
        var converged = cluster.converge(since: up, timeout: 30, twinSample: devices).seconds
        var resumed = cluster.awaitTelemetryResumed(ids, base: base, since: up, timeout: 60)
        Proc.sleep(settle)
        var after = cluster.twins(ids)
        phases.append(cluster.phase(
            "broker kill -9 + restart after \(String(format: "%.1f", outage)) s", ids: ids, before: before, after: after,
            recovery: resumed, converge: converged,
            detail: String(format: "broker answering %.2f s after the kill; times from then", up - killed)))

        // 2. One node cut from the broker (the cluster links stay).
        let victim = 2
        before = cluster.twins(ids)
        cluster.log("cutting gw-\(victim) from the broker for \(cut) s")
        let cutAt = Proc.now()
        cluster.lab.cutBroker(victim)
        Proc.sleep(cut / 2)
        // Halfway: the node keeps its device processes (the cluster links are intact).
        let during = cluster.converge(since: Proc.now(), timeout: cut / 2, twinSample: devices)
        let duringTwins = cluster.twins(ids)
        Proc.sleep(max(0, cutAt + cut - Proc.now()))
        cluster.lab.restoreBroker(victim)
        let healed = Proc.now()
        let baseCut = cluster.twins(ids)
        converged = cluster.converge(since: healed, timeout: 30, twinSample: devices).seconds
        resumed = cluster.awaitTelemetryResumed(ids, base: baseCut, since: healed, timeout: 60)
        Proc.sleep(settle)
        after = cluster.twins(ids)
        var extra: [String] = []
        if during.seconds == nil { extra.append("during the cut: \(during.lastProblems.prefix(3).joined(separator: "; "))") }
        let lostDuring = duringTwins.values.filter { $0 == nil }.count
        if lostDuring > 0 { extra.append("\(lostDuring) twins did not answer during the cut") }
        phases.append(cluster.phase(
            "gw-\(victim) cut from the broker for \(String(format: "%.1f", cut)) s", ids: ids, before: before, after: after,
            recovery: resumed, converge: converged,
            detail: "during the cut: checks \(during.seconds != nil ? "passed" : "failed"), \(ids.count - lostDuring)/\(ids.count) twins answered", extra: extra))
        return phases
    }
}

/// `tc netem` on every node's veth (3 nodes): steady telemetry, then a node restart (handoffs
/// to the new incarnation) under the same impairment.
struct NetemFaults {
    let cluster: Cluster
    var devices: Int
    var rate: Double
    var specs: [String]
    var seconds: Double
    var settle: Double

    func run() throws -> [FaultPhase] {
        // Before starting anything: is netem there at all?
        if let error = cluster.lab.setNetem(1, ["delay", "1ms"]) {
            let reason = "tc qdisc … netem failed (\(error)); needs iproute2's tc and the kernel's sch_netem"
            print("SKIPPED netem: \(reason)")
            cluster.log("SKIPPED netem: \(reason)")
            return []
        }
        cluster.lab.clearNetem(1)
        try cluster.startNodes()
        try cluster.startFleet(count: devices, rate: rate, duration: Double(cluster.setup.maxSeconds))
        let ids = try cluster.awaitDevices(count: devices, timeout: 60 + Double(devices) / 40)
        guard cluster.converge(since: Proc.now(), timeout: 60, twinSample: 0).seconds != nil else {
            throw Proc.Failure(description: "no clean state before netem")
        }
        var phases: [FaultPhase] = []
        let count = cluster.nodes.count
        for spec in specs {
            let words = spec.split(separator: " ").map(String.init)
            for node in 1...count {
                if let error = cluster.lab.setNetem(node, words) {
                    for n in 1...count { cluster.lab.clearNetem(n) }
                    throw Proc.Failure(description: "netem \(spec) refused: \(error)")
                }
            }
            // Steady telemetry under the impairment.
            var before = cluster.twins(ids)
            Proc.sleep(seconds)
            let steady = cluster.converge(since: Proc.now(), timeout: 30, twinSample: devices)
            var after = cluster.twins(ids)
            phases.append(cluster.phase(
                "netem \(spec): steady telemetry \(Int(seconds)) s", ids: ids, before: before, after: after,
                recovery: 0, converge: steady.seconds, detail: "checks while impaired"))
            // A restart with a new incarnation: its devices come back to it by handoff.
            before = after
            let node = cluster.nodes[count - 1]
            node.kill9()
            _ = cluster.converge(since: Proc.now(), timeout: 30, twinSample: 0)
            let restarted = Proc.now()
            try cluster.start(node)
            let converged = cluster.converge(since: restarted, timeout: 30, twinSample: devices).seconds
            let resumed = cluster.awaitTelemetryResumed(ids, base: cluster.twins(ids), since: Proc.now(), timeout: 30)
            Proc.sleep(settle)
            after = cluster.twins(ids)
            phases.append(cluster.phase(
                "netem \(spec): kill -9 + restart of \(node.name), handoffs back", ids: ids, before: before, after: after,
                recovery: resumed, converge: converged, detail: "convergence from the restart, impaired"))
            for n in 1...count { cluster.lab.clearNetem(n) }
        }
        return phases
    }
}

extension FaultPhase {
    var outcome: Outcome {
        Outcome(
            scenario: scenario, passed: passed, convergeSeconds: convergeSeconds,
            detail: "telemetry resumed \(recoverySeconds.map { String(format: "%.3f s", $0) } ?? "never"); twins \(twinsAnswering) answering, \(twinsOffline) offline; gaps \(gaps), duplicates \(duplicates), late \(late); \(detail)\(problems.isEmpty ? "" : "; " + problems.joined(separator: "; "))")
    }
}

/// A fresh 3-node run with the broker: `body`'s phases, the JSON report and the outcome lines.
private func runFaultCommand(common: CommonOptions, label: String, _ body: (Cluster) throws -> [FaultPhase]) throws {
    let run = try Run(common: common, nodes: 3)
    defer { run.teardown() }
    let phases = try withBrokerCluster(run: run, body)
    run.writeReport(phases, to: common.report)
    run.teardown()
    let code = finish(phases.map(\.outcome), label: label)
    if code != 0 { throw ExitCode(code) }
}

private func withBrokerCluster(run: Run, _ body: (Cluster) throws -> [FaultPhase]) throws -> [FaultPhase] {
    let cluster = Cluster(lab: run.lab, setup: run.setup, nodeCount: 3)
    try cluster.startBroker()
    defer { cluster.stopAll() }
    return try body(cluster)
}

struct BrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker", abstract: "3 nodes under telemetry: broker kill -9 + restart, then one node cut from the broker.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices.") var devices = 200
    @Option(help: "Telemetry per device per second.") var rate = 1.0
    @Option(help: "Seconds the broker stays down.") var outage = 3.0
    @Option(help: "Seconds gw-2 stays cut from the broker.") var cut = 6.0
    @Option(help: "Seconds of telemetry after the recovery before counting gaps.") var settle = 3.0

    func run() throws {
        try runFaultCommand(common: common, label: "broker") { cluster in
            try BrokerFaults(cluster: cluster, devices: devices, rate: rate, outage: outage, cut: cut, settle: settle).run()
        }
    }

    static func execute(run: Run, devices: Int, rate: Double, outage: Double, cut: Double, settle: Double) throws -> [FaultPhase] {
        try withBrokerCluster(run: run) { cluster in
            try BrokerFaults(cluster: cluster, devices: devices, rate: rate, outage: outage, cut: cut, settle: settle).run()
        }
    }
}

struct NetemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netem", abstract: "3 nodes with tc netem delay/loss/reordering on every veth: steady telemetry, then a restart with handoffs.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices.") var devices = 200
    @Option(help: "Telemetry per device per second.") var rate = 1.0
    @Option(help: "netem specs, ';'-separated (jitter reorders packets).") var specs = "delay 20ms 10ms loss 1%;delay 20ms 10ms loss 5%"
    @Option(help: "Seconds of steady telemetry per spec.") var seconds = 10.0
    @Option(help: "Seconds of telemetry after the restart before counting gaps.") var settle = 3.0

    func run() throws {
        try runFaultCommand(common: common, label: "netem") { cluster in
            try NetemFaults(cluster: cluster, devices: devices, rate: rate, specs: Self.list(specs), seconds: seconds, settle: settle).run()
        }
    }

    static func list(_ specs: String) -> [String] {
        specs.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    static func execute(run: Run, devices: Int, rate: Double, specs: String, seconds: Double, settle: Double) throws -> [FaultPhase] {
        try withBrokerCluster(run: run) { cluster in
            try NetemFaults(cluster: cluster, devices: devices, rate: rate, specs: list(specs), seconds: seconds, settle: settle).run()
        }
    }
}
