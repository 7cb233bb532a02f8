import ArgumentParser
import Dispatch
import Foundation
import Glibc

/// `swarm-chaos`: the fault harness (docs/reliability.md). Real `swarm-gateway run`
/// processes in network namespaces on a bridge, a Mosquitto broker on the bridge address, a
/// simulated fleet; faults are routes in the namespaces and `kill -9`; every check goes through
/// the gateway's HTTP API.
@main
struct SwarmChaosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm-chaos",
        abstract: "Partitions in network namespaces, kill -9 under load, soak, broker faults, netem (needs root).",
        subcommands: [PartitionsCommand.self, KillCommand.self, SoakCommand.self, BrokerCommand.self, NetemCommand.self, CICommand.self, UpCommand.self, CleanupCommand.self])
}

struct CommonOptions: ParsableArguments {
    @Option(help: "swarm-gateway binary.")
    var gateway = ".build/debug/swarm-gateway"
    @Option(help: "swarm-devices binary.")
    var devicesBinary = ".build/debug/swarm-devices"
    @Option(help: "Fleet file.")
    var fleet = "devices/fleet-demo.json"
    @Option(help: "First three octets of the harness subnet (bridge .1, nodes .11…).")
    var subnet = "10.77.0"
    @Option(help: "Failure timeout of the nodes.")
    var failureTimeout = "1500ms"
    @Option(help: "Hard bound of the whole run in seconds (then everything is killed and removed).")
    var maxSeconds = 900
    @Option(help: "Write the JSON report here.")
    var report: String?
    @Option(help: "Node log level.")
    var logLevel = "info"
}

/// Everything one run owns, torn down on every exit path.
final class Run: @unchecked Sendable {
    nonisolated(unsafe) static var current: Run?
    let lab: Lab
    let workDir: String
    let setup: Setup
    private var signalSources: [any DispatchSourceSignal] = []
    private var watchdog: (any DispatchSourceTimer)?
    private let once = NSLock()
    private var tornDown = false

    init(common: CommonOptions, nodes: Int) throws {
        let prefix = "sgw\(getpid())"
        workDir = "/tmp/swarm-chaos/\(prefix)"
        try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
        Children.shared.setPidFile("\(workDir)/pids")
        lab = Lab(prefix: prefix, subnet: common.subnet, nodeCount: nodes)
        let secret = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        setup = Setup(
            gateway: Run.absolute(common.gateway), devices: Run.absolute(common.devicesBinary), fleetFile: Run.absolute(common.fleet),
            workDir: workDir, dataRoot: "\(workDir)/data-\(UUID().uuidString.prefix(8))", failureTimeout: common.failureTimeout, secret: secret, maxSeconds: common.maxSeconds, logLevel: common.logLevel)
        for path in [setup.gateway, setup.devices] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ValidationError("\(path) is not an executable (build it: swift build --product \((path as NSString).lastPathComponent))")
        }
        // Each simulated device and each broker connection is a descriptor: raise the soft limit
        // to the hard one for the broker and nodes (the children inherit it).
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        Cluster.t0 = Proc.now()
        Run.current = self
        installHandlers(maxSeconds: common.maxSeconds)
        try lab.create()
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    private func installHandlers(maxSeconds: Int) {
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            Glibc.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler { [self] in
                FileHandle.standardError.write(Data("swarm-chaos: signal \(signal): cleaning up\n".utf8))
                teardown()
                exit(130)
            }
            source.resume()
            signalSources.append(source)
        }
        let timer = DispatchSource.makeTimerSource(queue: .global())
        timer.schedule(deadline: .now() + .seconds(maxSeconds))
        timer.setEventHandler { [self] in
            FileHandle.standardError.write(Data("swarm-chaos: --max-seconds \(maxSeconds) reached: cleaning up\n".utf8))
            teardown()
            exit(124)
        }
        timer.resume()
        watchdog = timer
    }

    /// Kills every child by pid, removes namespaces, links and the bridge. Idempotent.
    func teardown() {
        once.lock()
        defer { once.unlock() }
        guard !tornDown else { return }
        tornDown = true
        Children.shared.killAll()
        lab.destroy()
        try? FileManager.default.removeItem(atPath: setup.dataRoot)
    }

    func writeReport<T: Encodable>(_ value: T, to path: String?) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(value) else { return }
        _ = FileManager.default.createFile(atPath: "\(workDir)/report.json", contents: data)
        if let path { _ = FileManager.default.createFile(atPath: path, contents: data) }
    }
}

/// Whether this process may create network namespaces (root with CAP_SYS_ADMIN).
func namespacesUsable() -> String? {
    let probe = "sgw\(getpid())-probe"
    let (status, output) = Proc.run(["ip", "netns", "add", probe])
    if status != 0 { return output.trimmingCharacters(in: .whitespacesAndNewlines) }
    Proc.run(["ip", "netns", "del", probe])
    return nil
}

func finish(_ outcomes: [Outcome], label: String) -> Int32 {
    let passed = outcomes.filter(\.passed).count
    let failed = outcomes.count - passed
    for o in outcomes {
        let time = o.convergeSeconds.map { String(format: "converged in %.3f s", $0) } ?? (o.passed ? "ok" : "not converged")
        print("\(o.passed ? "PASS" : "FAIL")  \(o.scenario): \(time)\(o.detail.isEmpty ? "" : " (\(o.detail))")")
    }
    print("\(label): \(passed) passed, \(failed) failed")
    return failed == 0 ? 0 : 1
}

struct PartitionsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partitions",
        abstract: "5 nodes: 3|2, 2|2|1, isolated node, one-way cut, flapping link, kill -9 during handoff and drain, restart, drain during a partition, N random cycles.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices in the fleet.") var devices = 200
    @Option(help: "Telemetry per device per second.") var rate = 0.5
    @Option(help: "Seconds each fault is held (longer than the failure timeout: both sides act).") var hold = 3.0
    @Option(help: "Random fault cycles.") var cycles = 5
    @Option(help: "Seed of the random cycles.") var seed: UInt64 = 1
    @Option(help: "Longest wait for convergence after a heal (s).") var convergeTimeout = 30.0
    @Option(help: "Twins checked for placement in each passing round (all when ≥ devices).") var twinSample = 1000
    @Option(help: "Comma-separated subset: split32,split221,isolate,oneway,flap,killjoin,killdrain,restart,drainpartition,shortisolate (cycles/4 isolations of 0.8–1.8 s),random.") var only: String?

    func run() throws {
        let run = try Run(common: common, nodes: 5)
        defer { run.teardown() }
        let outcomes = try Self.execute(run: run, devices: devices, rate: rate,
                                        options: ScenarioOptions(hold: hold, convergeTimeout: convergeTimeout, twinSample: twinSample, cycles: cycles, seed: seed),
                                        only: only.map { Set($0.split(separator: ",").map(String.init)) })
        run.writeReport(outcomes, to: common.report)
        let code = finish(outcomes, label: "partitions")
        run.teardown()
        if code != 0 { throw ExitCode(code) }
    }

    static func execute(run: Run, devices: Int, rate: Double, options: ScenarioOptions, only: Set<String>?) throws -> [Outcome] {
        let cluster = Cluster(lab: run.lab, setup: run.setup, nodeCount: 5)
        try cluster.startBroker()
        try cluster.startNodes()
        cluster.log("5 nodes ready; \(devices) devices at \(rate)/s")
        try cluster.startFleet(count: devices, rate: rate, duration: Double(run.setup.maxSeconds))
        _ = try cluster.awaitDevices(count: devices, timeout: 60 + Double(devices) / 40)
        var scenarios = PartitionScenarios(cluster: cluster, options: options)
        scenarios.runAll(only: only)
        cluster.stopAll()
        return scenarios.outcomes
    }
}

struct KillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "3 nodes under steady telemetry; kill -9 the busiest node.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices.") var devices = 10_000
    @Option(help: "Telemetry per device per second (default: the fleet profiles' rates).") var rate: Double?
    @Option(help: "Devices that get a desired state before the kill.") var desiredSample = 1000
    @Option(help: "Seconds of telemetry after the recovery before counting gaps.") var settle = 5.0

    func run() throws {
        let run = try Run(common: common, nodes: 3)
        defer { run.teardown() }
        let report = try Self.execute(run: run, devices: devices, rate: rate, desiredSample: desiredSample, settle: settle)
        run.writeReport(report, to: common.report)
        run.teardown()
        if !report.passed { throw ExitCode(1) }
    }

    static func execute(run: Run, devices: Int, rate: Double?, desiredSample: Int, settle: Double) throws -> KillUnderLoad.Report {
        let cluster = Cluster(lab: run.lab, setup: run.setup, nodeCount: 3)
        try cluster.startBroker()
        let report = try KillUnderLoad(cluster: cluster, devices: devices, rate: rate, settle: settle, desiredSample: desiredSample).run()
        cluster.stopAll()
        print(Self.describe(report))
        return report
    }

    static func describe(_ r: KillUnderLoad.Report) -> String {
        func s(_ v: Double?) -> String { v.map { String(format: "%.3f s", $0) } ?? "never" }
        return """
            kill -9 under load: \(r.devices) devices at \(r.rate.map { "\($0)/s" } ?? "profile rates"), victim \(r.victim) hosting \(r.victimDevices)
              failure detected (victim out of every survivor's ring): \(s(r.detectedSeconds))
              every device process running again: \(s(r.restoredSeconds))
              twins answering: \(r.twinsAnswering)/\(r.devices), on the dead node: \(r.twinsOnDeadNode)
              desired state survived: \(r.desiredSurvived)/\(r.desiredSet) (lost on the victim's devices: \(r.desiredLostOnVictim))
              telemetry gaps after the kill: \(r.gapsTotal) on \(r.devicesWithGaps) devices (max \(r.maxGapsPerDevice) per device; \(r.gapsOnVictimDevices) on the victim's devices)
              duplicates after the kill: \(r.duplicatesTotal) on \(r.devicesWithDuplicates) devices; late \(r.lateTotal)
              before the kill: gaps \(r.baselineGaps), duplicates \(r.baselineDuplicates)
            kill: \(r.passed ? 1 : 0) passed, \(r.passed ? 0 : 1) failed\(r.problems.isEmpty ? "" : " — " + r.problems.joined(separator: "; "))
            """
    }
}

struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "soak", abstract: "3 nodes, the fleet for a bounded period: memory, broker drops, lost/duplicated telemetry.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices.") var devices = 10_000
    @Option(help: "Telemetry per device per second (default: the fleet profiles' rates).") var rate: Double?
    @Option(help: "Seconds.") var seconds = 600.0

    func run() throws {
        let run = try Run(common: common, nodes: 3)
        defer { run.teardown() }
        let report = try Self.execute(run: run, devices: devices, rate: rate, seconds: seconds)
        run.writeReport(report, to: common.report)
        run.teardown()
        if !report.passed { throw ExitCode(1) }
    }

    static func execute(run: Run, devices: Int, rate: Double?, seconds: Double) throws -> Soak.Report {
        let cluster = Cluster(lab: run.lab, setup: run.setup, nodeCount: 3)
        try cluster.startBroker()
        let report = try Soak(cluster: cluster, devices: devices, rate: rate, seconds: seconds).run()
        cluster.stopAll()
        print(Self.describe(report))
        return report
    }

    static func describe(_ r: Soak.Report) -> String {
        let rss = r.rssStartKiB.keys.sorted().map { k in
            let a = r.rssStartKiB[k] ?? 0, b = r.rssEndKiB[k] ?? 0
            return "\(k) \(a / 1024)→\(b / 1024) MiB (\(b - a >= 0 ? "+" : "")\(b - a) KiB, max \((r.rssMaxKiB[k] ?? 0) / 1024) MiB)"
        }.joined(separator: ", ")
        return """
            soak: \(r.devices) devices at \(r.rate.map { "\($0)/s" } ?? "profile rates") for \(Int(r.seconds)) s
              RSS: \(rss)
              broker RSS: \(r.brokerRssStartKiB.map { "\($0 / 1024)" } ?? "?")→\(r.brokerRssEndKiB.map { "\($0 / 1024)" } ?? "?") MiB; $SYS dropped: \(r.brokerDroppedStart.map(String.init) ?? "?")→\(r.brokerDroppedEnd.map(String.init) ?? "?"); broker log lines about drops: \(r.brokerDropLogLines)
              telemetry sent \(r.telemetrySent.map(String.init) ?? "?") (skipped by backpressure \(r.telemetrySkipped.map(String.init) ?? "?")), received by twins \(r.telemetryReceived)
              gaps \(r.gaps) on \(r.devicesWithGaps) devices, duplicates \(r.duplicates), late \(r.late), routeFailed \(r.routeFailed.map(String.init) ?? "?")
            soak: \(r.passed ? 1 : 0) passed, \(r.passed ? 0 : 1) failed\(r.problems.isEmpty ? "" : " — " + r.problems.joined(separator: "; "))
            """
    }
}

/// The short version of all three for scripts/test.sh.
struct CICommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ci", abstract: "Short partitions + kill -9 + soak + broker faults + netem (scripts/test.sh); skips when namespaces cannot be created.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Devices.") var devices = 200
    @Option(help: "Random fault cycles.") var cycles = 5
    @Option(help: "Soak seconds.") var soakSeconds = 45.0
    @Option(help: "Seed.") var seed: UInt64 = 1

    func run() throws {
        if let reason = namespacesUsable() {
            print("swarm-chaos: SKIPPED: cannot create network namespaces (\(reason)); the chaos step needs root with CAP_SYS_ADMIN")
            return
        }
        var outcomes: [Outcome] = []
        let started = Proc.now()
        for stale in Lab.stalePrefixes() { Lab.cleanup(prefix: stale) }
        func part(_ name: String, nodes: Int, _ body: (Run) throws -> [Outcome]) {
            do {
                let run = try Run(common: common, nodes: nodes)
                defer { run.teardown() }
                outcomes += try body(run)
            } catch {
                outcomes.append(Outcome(scenario: name, passed: false, convergeSeconds: nil, detail: "\(error)"))
            }
        }
        part("partitions", nodes: 5) { run in
            try PartitionsCommand.execute(
                run: run, devices: devices, rate: 0.5,
                options: ScenarioOptions(hold: 2.5, convergeTimeout: 30, twinSample: devices, cycles: cycles, seed: seed), only: nil)
        }
        part("kill -9 under load", nodes: 3) { run in
            let r = try KillCommand.execute(run: run, devices: devices, rate: 2, desiredSample: devices, settle: 3)
            return [Outcome(scenario: "kill -9 under load (time: every device process running again)", passed: r.passed, convergeSeconds: r.restoredSeconds,
                            detail: "gaps \(r.gapsTotal), duplicates \(r.duplicatesTotal), desired \(r.desiredSurvived)/\(r.desiredSet)\(r.problems.isEmpty ? "" : "; " + r.problems.joined(separator: "; "))")]
        }
        part("soak", nodes: 3) { run in
            let r = try SoakCommand.execute(run: run, devices: devices, rate: 2, seconds: soakSeconds)
            return [Outcome(scenario: "soak \(Int(soakSeconds)) s", passed: r.passed, convergeSeconds: nil,
                            detail: "dropped \((r.brokerDroppedEnd ?? 0) - (r.brokerDroppedStart ?? 0)), sent \(r.telemetrySent ?? -1), received \(r.telemetryReceived), gaps \(r.gaps), duplicates \(r.duplicates)\(r.problems.isEmpty ? "" : "; " + r.problems.joined(separator: "; "))")]
        }
        part("broker faults", nodes: 3) { run in
            try BrokerCommand.execute(run: run, devices: devices, rate: 1, outage: 2, cut: 4, settle: 2).map(\.outcome)
        }
        part("netem", nodes: 3) { run in
            try NetemCommand.execute(run: run, devices: devices, rate: 1, specs: "delay 20ms 10ms loss 2%", seconds: 3, settle: 1).map(\.outcome)
        }
        print(String(format: "chaos step took %.0f s", Proc.now() - started))
        let code = finish(outcomes, label: "chaos")
        if code != 0 { throw ExitCode(code) }
    }
}

struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Remove leftovers (namespaces, links, children) of runs whose harness is gone, or of --prefix.")
    @Option(help: "Prefix of one run (sgw<pid>); default: every stale run.") var prefix: String?

    func run() throws {
        let prefixes = prefix.map { [$0] } ?? Lab.stalePrefixes()
        for p in prefixes {
            Lab.cleanup(prefix: p)
            print("removed leftovers of \(p)")
        }
        if prefixes.isEmpty { print("no leftovers") }
    }
}

/// The lab for manual experiments: the bridge, N nodes, the broker and a fleet, kept for
/// `--seconds` (or until Ctrl-C), then removed. Prints the addresses and namespace names.
struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Start the lab (nodes, broker, fleet) and keep it for --seconds or until Ctrl-C.")
    @OptionGroup var common: CommonOptions
    @Option(help: "Gateway nodes.") var nodes = 5
    @Option(help: "Devices (0 = no fleet).") var devices = 100
    @Option(help: "Telemetry per device per second.") var rate = 0.5
    @Option(help: "Seconds to keep the lab.") var seconds = 60.0

    func run() throws {
        let run = try Run(common: common, nodes: nodes)
        defer { run.teardown() }
        let cluster = Cluster(lab: run.lab, setup: run.setup, nodeCount: nodes)
        try cluster.startBroker()
        for node in cluster.nodes { try cluster.start(node) }
        if devices > 0 { try cluster.startFleet(count: devices, rate: rate, duration: seconds) }
        for node in cluster.nodes {
            print("\(node.name): pid \(node.pid), namespace \(node.namespace), API http://\(node.address):\(node.httpPort), cluster \(node.address):\(node.clusterPort)")
        }
        print("broker mqtt://\(run.lab.brokerAddress):1883; logs in \(run.workDir); cut A->B: ip -n NS_A route add blackhole ADDR_B/32")
        Proc.sleep(seconds)
        cluster.stopAll()
    }
}
