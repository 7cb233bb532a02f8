// gateway-bench: the gateway workloads M1, M2, M3, M5 of docs/benchmarks.md (release builds only), and
// the command round trip. One Mosquitto (EmbeddedBroker) on loopback; gateway nodes in this
// process (real SwarmNodes over loopback TCP, each with its DeviceGateway on the broker); devices
// from the simulator (in this process for M1, `swarm-devices` child processes for the larger
// fleets, which need more descriptors than one process may open). M4 (HTTP GETs) is measured with
// wrk against the HTTP API, see docs/benchmarks.md.
//
//   swift build -c release --product swarm-devices && swift build -c release --product gateway-bench
//   .build/release/gateway-bench [--nodes 3] [--devices 1000] [--fleet 10000] [--seconds 10] [--json FILE]
import DeviceSimulator
import Foundation
import Gateway
import GatewayStore
import Logging
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import SwarmTransport
import Synchronization

// MARK: - Options and figures

struct Options {
    var nodes = 3
    var devices = 1000
    var fleet = 10_000
    var seconds = 10.0
    var rate = 100.0
    var qos = 0
    var json: String?
    var workloads: Set<String> = ["M1", "RTT", "ACL", "M2", "M3", "M5"]
    /// E2: how long the webhook receiver refuses (s).
    var outage = 60.0
    /// The store of S1–S3: `sqlite` (per-node files in temporary directories) or a PostgreSQL
    /// server URL (`postgresql://USER:PASS@HOST:PORT/DB`; each workload creates a database of
    /// its own there with psql and drops it afterwards).
    var store = "sqlite"
    /// S2: twins to recover.
    var twins = 100_000
    /// S2 and S3: API calls in flight.
    var inFlight = 64
    /// S1: runs of each (store off, store on), alternating.
    var runs = 3

    static func parse() -> Options {
        var options = Options()
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            func value() -> String {
                guard let next = arguments.next() else { fatalError("missing value for \(argument)") }
                return next
            }
            switch argument {
            case "--nodes": options.nodes = Int(value()) ?? options.nodes
            case "--devices": options.devices = Int(value()) ?? options.devices
            case "--fleet": options.fleet = Int(value()) ?? options.fleet
            case "--seconds": options.seconds = Double(value()) ?? options.seconds
            case "--rate": options.rate = Double(value()) ?? options.rate
            case "--qos": options.qos = Int(value()) == 1 ? 1 : 0
            case "--json": options.json = value()
            case "--workloads": options.workloads = Set(value().split(separator: ",").map { $0.uppercased() })
            case "--store": options.store = value()
            case "--twins": options.twins = Int(value()) ?? options.twins
            case "--in-flight": options.inFlight = Int(value()) ?? options.inFlight
            case "--runs": options.runs = Int(value()) ?? options.runs
            case "--outage": options.outage = Double(value()) ?? options.outage
            default:
                say("usage: gateway-bench [--nodes 3] [--devices 1000] [--fleet 10000] [--seconds 10] [--rate 100] [--qos 0|1] [--workloads M1,RTT,ACL,M2,M3,M5,E1,E2,S1,S2,S3] [--outage 60] [--store sqlite|postgresql://USER:PASS@HOST:PORT/DB] [--twins 100000] [--in-flight 64] [--runs 3] [--json FILE]")
                exit(2)
            }
        }
        return options
    }
}

struct Figure: Codable {
    var id: String
    var label: String
    var value: Double
    var unit: String
    var setup: String
    var target: String?
    var met: Bool?
}

final class Report: @unchecked Sendable {
    var figures: [Figure] = []
    func record(_ id: String, _ label: String, _ value: Double, _ unit: String, setup: String, target: String? = nil, met: Bool? = nil) {
        figures.append(Figure(id: id, label: label, value: value, unit: unit, setup: setup, target: target, met: met))
        let mark = met.map { $0 ? " ✔" : " ✘" } ?? ""
        say(String(format: "%-14@ %@: %.2f %@%@%@", id as NSString, label, value, unit, target.map { "  (target \($0))" } ?? "", mark))
    }
}

/// A line on stdout, unbuffered (progress must show when the output is a pipe).
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

func seconds(_ duration: Duration) -> Double {
    let (whole, atto) = duration.components
    return Double(whole) + Double(atto) / 1e18
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

/// Bench loggers: errors only, or `BENCH_LOG` (trace, debug, info, notice, warning…).
let benchLogLevel = ProcessInfo.processInfo.environment["BENCH_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .error

func quiet(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = benchLogLevel
    return logger
}

// MARK: - Cluster

struct Member: Sendable {
    let node: SwarmNode
    let gateway: DeviceGateway
}

/// Publish-to-handled latencies (ms, from the telemetry's `ts`) seen by the device processes
/// while `recording` is set.
final class LatencyRecorder: Sendable {
    let recording = Atomic<Bool>(false)
    private let samples = Mutex<[Double]>([])

    func observe(_ kind: Gateway.DeviceTopics.Kind, _ payload: SwarmJSON.JSONValue) {
        guard kind == .telemetry, recording.load(ordering: .relaxed), let sent = payload["ts"]?.intValue else { return }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        samples.withLock { $0.append(Double(now - sent)) }
    }

    func take() -> [Double] {
        samples.withLock { taken in
            defer { taken = [] }
            return taken.sorted()
        }
    }
}

/// This process's resident memory and its peak, in MiB (`/proc/self/status`).
func memoryMiB() -> (rss: Double, peak: Double) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (.nan, .nan) }
    func field(_ name: String) -> Double {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return .nan }
        return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? .nan) / 1024
    }
    return (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) spent so far by this process, leaving out the device simulator's
/// loop threads (named `swarm-devices-N`, alive for the whole fleet run): the gateway nodes' share
/// of the process (the broker is a child process, not counted). The process total comes from
/// `getrusage` (it keeps the CPU of threads that ended: pool threads come and go), the simulator
/// threads' from `/proc/self/task/*/stat`; only differences over one fleet run are meaningful.
func gatewayThreadsCPU() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let process = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return .nan }
    var simulator = 0.0
    for task in tasks {
        let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
        guard comm.hasPrefix("swarm-devices"),
            let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { continue }
        // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
        simulator += (user + system) / tick
    }
    return process - simulator
}

final class GatewayCluster: Sendable {
    let members: [Member]
    let runner: Task<Void, Never>
    let latencies: LatencyRecorder

    init(
        count: Int, brokerPort: Int, qos: Int = 0, username: String? = nil, password: String? = nil,
        configure: @Sendable (Int, inout GatewaySettings) -> Void = { _, _ in }, store: (@Sendable (Int) async throws -> StoreWriter)? = nil
    ) async throws {
        let latencies = LatencyRecorder()
        self.latencies = latencies
        var members: [Member] = []
        var seed: String?
        for index in 1...count {
            var settings = SwarmNodeSettings(name: "gw-\(index)", secret: ClusterSecret("gateway-bench-cluster-secret"))
            settings.seeds = seed.map { [$0] } ?? []
            settings.logger = quiet("bench.node")
            let node = SwarmNode(settings: settings)
            try await node.start()
            if seed == nil { seed = await node.address }
            var client = MQTTClient.Settings(host: "127.0.0.1", port: brokerPort)
            client.receiveMaximum = 65_535
            client.username = username
            client.password = password
            var gatewaySettings = GatewaySettings(brokers: [GatewaySettings.Broker(client: client)])
            gatewaySettings.logger = quiet("bench.gateway")
            gatewaySettings.shareGroup = "bench"
            gatewaySettings.ingressQoS = qos == 1 ? .atLeastOnce : .atMostOnce
            gatewaySettings.ingressObserver = { _, kind, payload in latencies.observe(kind, payload) }
            if let lanes = ProcessInfo.processInfo.environment["GW_LANES"].flatMap(Int.init) { gatewaySettings.ingressLanes = lanes }
            configure(index, &gatewaySettings)
            if let store { gatewaySettings.store = try await store(index) }
            members.append(Member(node: node, gateway: try DeviceGateway(node: node, settings: gatewaySettings)))
        }
        let all = members
        self.members = all
        runner = Task {
            await withTaskGroup(of: Void.self) { group in
                for member in all {
                    group.addTask { try? await member.node.run() }
                    group.addTask { try? await member.gateway.run() }
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            var ready = true
            for member in all {
                let dump = try await member.node.dump()
                let gatewayReady = await member.gateway.isReady()
                if dump.ringNodes.count != count || !gatewayReady { ready = false }
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw GatewayError.cluster("the \(count)-node gateway cluster did not become ready")
    }

    /// Messages received from the broker and routed to device processes, summed over nodes.
    func counters() async -> (received: Int, routed: Int, rejected: Int, shed: Int) {
        var received = 0
        var routed = 0
        var rejected = 0
        var shed = 0
        for member in members {
            let stats = await member.gateway.stats()
            received += stats.received.values.reduce(0, +)
            routed += stats.routed
            rejected += stats.rejected.values.reduce(0, +)
            shed += stats.shed.values.reduce(0, +)
        }
        return (received, routed, rejected, shed)
    }

    func shutdown() async {
        for member in members { await member.gateway.shutdown() }
        for member in members { await member.node.shutdown() }
        await runner.value
    }
}

/// The broker's `$SYS` dropped-publish counter (needs `sys_interval`): read by an MQTT client in
/// this process, waiting at most 5 s (a `mosquitto_sub` child read to EOF on a pool thread hung
/// the bench when the child never ended).
func brokerDropped(port: Int) async -> Int? {
    var settings = MQTTClient.Settings(host: "127.0.0.1", port: port)
    settings.connectTimeout = .seconds(5)
    settings.operationTimeout = .seconds(5)
    guard let client = try? MQTTClient(settings: settings, logger: quiet("bench.sys")) else { return nil }
    do {
        try await client.connect()
        try await client.subscribe("$SYS/broker/publish/messages/dropped", qos: .atMostOnce)
    } catch {
        await client.close()
        return nil
    }
    return await withTaskGroup(of: Int?.self) { group in
        group.addTask {
            for await message in client.messages {
                if let value = Int(String(decoding: message.payload, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) { return value }
            }
            return nil
        }
        group.addTask {
            try? await Task.sleep(for: .seconds(5))
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        await client.close()
        return first
    }
}

func fleetSpecs(_ count: Int, rate: Double?) throws -> [DeviceSpec] {
    let definition = try FleetDefinition.load(path: "devices/fleet-demo.json")
    return try definition.expand(count: count)
}

// MARK: - Workloads

let options = Options.parse()
let report = Report()
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = benchLogLevel
    return handler
}
var brokerSettings = EmbeddedBroker.Settings()
brokerSettings.maxQueuedMessages = 100_000
brokerSettings.maxInflightMessages = 1000
brokerSettings.extraConfiguration = ["sys_interval 1"]
let broker = try EmbeddedBroker(settings: brokerSettings, logger: quiet("bench.broker"))
try await broker.start()
let port = broker.port
let brokerURL = try BrokerURL.parse("mqtt://127.0.0.1:\(port)")
let base = "Mosquitto 2 on 127.0.0.1, \(options.nodes) gateway node(s) in this process, 2 cores"
say("gateway-bench: \(base); devices \(options.devices), fleet \(options.fleet)")

func runFleet(_ count: Int, rate: Double, seconds duration: Double, during: () async -> Void = {}) async throws -> FleetStats {
    var settings = FleetRunner.Settings(broker: brokerURL)
    settings.telemetryRate = rate
    settings.payloadBytes = 100
    settings.qos = options.qos
    let runner = try FleetRunner(devices: try fleetSpecs(count, rate: rate), settings: settings)
    try runner.start()
    _ = await runner.waitUntilConnected(timeout: .seconds(60))
    await during()
    try? await Task.sleep(for: .milliseconds(Int(duration * 1000)))
    return await runner.stop()
}

/// Command round trips backend → device → backend: 100 simulated thermostats (they answer
/// `ping`) on `broker`, `RTT_N` (600) commands from the cluster's nodes in turn, one at a time.
/// Returns the sorted latencies (ms) and the failures.
func commandRoundTrips(_ cluster: GatewayCluster, broker: BrokerURL) async throws -> (latencies: [Double], failures: Int) {
    var settings = FleetRunner.Settings(broker: broker)
    settings.telemetryRate = 0
    // Thermostats answer `ping` (the other demo profiles leave unknown commands unanswered).
    let specs = try fleetSpecs(600, rate: 0).filter { $0.id.hasPrefix("thermo-") }.prefix(100)
    let runner = try FleetRunner(devices: Array(specs), settings: settings)
    try runner.start()
    _ = await runner.waitUntilConnected(timeout: .seconds(30))
    let ids = specs.map(\.id)
    // Wait for every twin to be online (a command to an offline device is refused at once).
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
        let online = (try? await cluster.members[0].gateway.search(where: "online and id >= 'thermo-' and id < 'thermo.'", limit: 1000))?.matched ?? 0
        if online >= ids.count { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    var latencies: [Double] = []
    var failures = 0
    for index in 0..<(ProcessInfo.processInfo.environment["RTT_N"].flatMap { Int($0) } ?? 600) {
        let member = cluster.members[index % cluster.members.count]
        let id = ids[index % ids.count]
        let t0 = ContinuousClock.now
        do {
            _ = try await member.gateway.command(id, name: "ping", body: ["n": .int(Int64(index))], timeout: .seconds(5))
            latencies.append(seconds(ContinuousClock.now - t0) * 1000)
        } catch {
            failures += 1
            if failures <= 3 { say("command \(id) via \(member.node.id.name) failed: \(error)") }
        }
    }
    await runner.stop()
    return (latencies.sorted(), failures)
}

if options.workloads.contains("M1") {
    // (a) The limit: a plain libmosquitto subscriber that only counts, no gateway running.
    let plain = try PlainSubscriber(broker: brokerURL, filters: ["devices/+/telemetry"], qos: options.qos, receiveMaximum: 65_535)
    try await Task.sleep(for: .milliseconds(300))
    var plainStart = 0
    var plainWindow = ContinuousClock.now
    let plainStats = try await runFleet(options.devices, rate: options.rate, seconds: options.seconds) {
        try? await Task.sleep(for: .seconds(1))  // warm-up
        plainStart = plain.messages
        plainWindow = ContinuousClock.now
    }
    let plainRate = Double(plain.messages - plainStart) / seconds(ContinuousClock.now - plainWindow)
    plain.close()
    let setup = "\(base); \(options.devices) simulated devices (one process, epoll), telemetry 100 B QoS \(options.qos) offered at \(Int(options.rate)) msg/s each"
    report.record("M1.limit", "plain subscriber msgs/s (the limit)", plainRate, "msg/s", setup: setup)
    report.record("M1.offered", "devices' telemetry sent/s (limit run)", Double(plainStats.telemetrySent) / plainStats.elapsedSeconds, "msg/s", setup: setup)

    // (b) The gateway: every message routed to its device process.
    let cluster = try await GatewayCluster(count: options.nodes, brokerPort: port, qos: options.qos)
    var start = (received: 0, routed: 0, rejected: 0, shed: 0)
    var windowStart = ContinuousClock.now
    let droppedBefore = await brokerDropped(port: port) ?? 0
    var cpuStart = 0.0
    _ = try await runFleet(options.devices, rate: options.rate, seconds: options.seconds) {
        try? await Task.sleep(for: .seconds(1))
        start = await cluster.counters()
        cpuStart = gatewayThreadsCPU()
        windowStart = ContinuousClock.now
    }
    let end = await cluster.counters()
    let cpu = gatewayThreadsCPU() - cpuStart
    let window = seconds(ContinuousClock.now - windowStart)
    let routedRate = Double(end.routed - start.routed) / window
    let memory = memoryMiB()
    try? await Task.sleep(for: .seconds(2))
    let droppedAfter = await brokerDropped(port: port) ?? 0
    report.record("M1.received", "messages/s the gateway nodes took from the broker", Double(end.received - start.received) / window, "msg/s", setup: setup)
    report.record("M1.gateway", "messages/s routed to device processes", routedRate, "msg/s", setup: setup)
    report.record("M1.ratio", "gateway / plain subscriber", routedRate / plainRate, "x", setup: setup, target: "≥ 0.9", met: routedRate / plainRate >= 0.9)
    report.record("M1.dropped", "broker drops ($SYS publish/messages/dropped) during the gateway run", Double(droppedAfter - droppedBefore), "msgs", setup: setup, target: "0", met: droppedAfter == droppedBefore)
    report.record("M1.rejected", "messages rejected by the gateway", Double(end.rejected - start.rejected), "msgs", setup: setup)
    let shed = end.shed - start.shed
    report.record(
        "M1.shed", "telemetry shed by the overload policy (full ingress lanes; QoS 0 only)", Double(shed), "msgs", setup: setup,
        target: options.qos == 1 ? "0 at QoS 1" : nil, met: options.qos == 1 ? shed == 0 : nil)
    let cpuPerMessage = cpu / Double(max(1, end.routed - start.routed)) * 1e6
    report.record("M1.cpu.per.msg", "gateway CPU (user + system, every node, simulator threads excluded) per routed message", cpuPerMessage, "µs", setup: setup, target: "≤ 10 µs", met: cpuPerMessage <= 10)
    report.record("M1.cpu.cores", "gateway CPU during the window, in cores", cpu / window, "cores", setup: setup)
    report.record("M1.rss", "bench process RSS at the end of the flood (gateways, simulator, subscriber)", memory.rss, "MiB", setup: setup)
    report.record("M1.rss.peak", "bench process peak RSS so far", memory.peak, "MiB", setup: setup)


    if options.workloads.contains("RTT") {
        let (latencies, failures) = try await commandRoundTrips(cluster, broker: brokerURL)
        let rttSetup = "\(base); 100 simulated devices answering; 600 commands from every node in turn, one at a time"
        report.record("RTT.p50", "command round trip p50", percentile(latencies, 0.5), "ms", setup: rttSetup, target: "≤ 2 ms", met: percentile(latencies, 0.5) <= 2)
        report.record("RTT.p99", "command round trip p99", percentile(latencies, 0.99), "ms", setup: rttSetup)
        report.record("RTT.failed", "commands failed", Double(failures), "cmds", setup: rttSetup)
    }
    await cluster.shutdown()

    // (c) Latency at 50 % of the limit: publish (the telemetry's `ts`) to handled by the device
    // process, on a fresh cluster (the flood's backlog must not count).
    let halfCluster = try await GatewayCluster(count: options.nodes, brokerPort: port, qos: options.qos)
    let halfRate = plainRate / 2 / Double(options.devices)
    var halfStart = (received: 0, routed: 0, rejected: 0, shed: 0)
    var halfWindow = ContinuousClock.now
    _ = try await runFleet(options.devices, rate: halfRate, seconds: options.seconds) {
        try? await Task.sleep(for: .seconds(1))
        _ = halfCluster.latencies.take()
        halfCluster.latencies.recording.store(true, ordering: .relaxed)
        halfStart = await halfCluster.counters()
        halfWindow = ContinuousClock.now
    }
    let halfEnd = await halfCluster.counters()
    halfCluster.latencies.recording.store(false, ordering: .relaxed)
    let halfRouted = Double(halfEnd.routed - halfStart.routed) / seconds(ContinuousClock.now - halfWindow)
    let samples = halfCluster.latencies.take()
    await halfCluster.shutdown()
    let halfSetup = "\(setup); latency run offered \(String(format: "%.1f", halfRate)) msg/s per device (50 % of the limit)"
    report.record("M1.half.routed", "msgs/s routed at 50 % of the limit", halfRouted, "msg/s", setup: halfSetup)
    report.record("M1.half.p50", "publish-to-handled latency p50 at 50 % of the limit", percentile(samples, 0.5), "ms", setup: halfSetup)
    report.record("M1.half.p99", "publish-to-handled latency p99 at 50 % of the limit", percentile(samples, 0.99), "ms", setup: halfSetup)
    report.record("M1.half.samples", "telemetry messages timed", Double(samples.count), "msgs", setup: halfSetup)
}

try await runStoreWorkloads(StoreBench(options: options, report: report, port: port, brokerURL: brokerURL, base: base))

// ACL: the command round trip behind the strict ACL of the device contract (docs/gateway.md; config/mosquitto.acl.example's
// rules, a password file with the gateway login and one per device), beside the same round trip on
// the open broker, in this run.
if options.workloads.contains("ACL") {
    let open = try await GatewayCluster(count: options.nodes, brokerPort: port)
    let (openLatencies, openFailures) = try await commandRoundTrips(open, broker: brokerURL)
    await open.shutdown()
    let gatewayPassword = "bench-\(UInt64.random(in: 0...UInt64.max))"
    var secured = EmbeddedBroker.Settings()
    secured.allowAnonymous = false
    secured.aclRules = DeviceACL.rules()
    let thermostats = try fleetSpecs(600, rate: 0).filter { $0.id.hasPrefix("thermo-") }.prefix(100).map(\.id)
    secured.users = [.init(DeviceACL.defaultGatewayUser, password: gatewayPassword)] + thermostats.map { .init($0, password: "pw-\($0)") }
    let aclBroker = try EmbeddedBroker(settings: secured, logger: quiet("bench.broker.acl"))
    try await aclBroker.start()
    let cluster = try await GatewayCluster(count: options.nodes, brokerPort: aclBroker.port, username: DeviceACL.defaultGatewayUser, password: gatewayPassword)
    let (latencies, failures) = try await commandRoundTrips(cluster, broker: try BrokerURL.parse("mqtt://{id}:pw-{id}@127.0.0.1:\(aclBroker.port)"))
    await cluster.shutdown()
    await aclBroker.stop()
    let setup = "\(base); 100 simulated thermostats answering; 600 commands from every node in turn, one at a time"
    report.record("RTT.open.p50", "command round trip p50, open broker", percentile(openLatencies, 0.5), "ms", setup: setup)
    report.record("RTT.open.p99", "command round trip p99, open broker", percentile(openLatencies, 0.99), "ms", setup: setup)
    report.record("RTT.acl.p50", "command round trip p50 behind the strict ACL and a password file", percentile(latencies, 0.5), "ms", setup: setup, target: "≤ 1.44 ms (before the ACL)", met: percentile(latencies, 0.5) <= 1.44)
    report.record("RTT.acl.p99", "command round trip p99 behind the strict ACL", percentile(latencies, 0.99), "ms", setup: setup)
    report.record("RTT.acl.ratio", "p50 behind the ACL / p50 open", percentile(latencies, 0.5) / percentile(openLatencies, 0.5), "x", setup: setup)
    report.record("RTT.acl.failed", "commands failed (open + ACL)", Double(failures + openFailures), "cmds", setup: setup, target: "0", met: failures + openFailures == 0)
}

if !options.workloads.intersection(["E1", "E2"]).isEmpty {
    let bench = EventBench(options: options, report: report, brokerPort: port, base: base)
    if options.workloads.contains("E1") { try await bench.e1() }
    if options.workloads.contains("E2") { try await bench.e2() }
}

// M2, M3, M5: a fleet of `--fleet` devices from swarm-devices child processes.
if !options.workloads.intersection(["M2", "M3", "M5"]).isEmpty {
    let devicesBinary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("swarm-devices").path
    guard FileManager.default.isExecutableFile(atPath: devicesBinary) else {
        say("M2/M3/M5 skipped: swarm-devices is not built next to gateway-bench")
        exit(1)
    }
    let cluster = try await GatewayCluster(count: options.nodes, brokerPort: port)
    let gateway = cluster.members[0].gateway
    let setup = "\(base); \(options.fleet) devices from swarm-devices (2 processes), idle (no telemetry)"
    let connectStart = ContinuousClock.now
    let fleet = Process()
    fleet.executableURL = URL(fileURLWithPath: devicesBinary)
    fleet.arguments = ["run", "--broker", "mqtt://127.0.0.1:\(port)", "--fleet", "devices/fleet-demo.json", "--count", String(options.fleet),
                       "--rate", "0", "--abrupt-fraction", "0.3", "--progress", "60", "--json"]
    let output = Pipe()
    fleet.standardOutput = output
    fleet.standardError = FileHandle.nullDevice
    try fleet.run()
    var created: Duration?
    var online = 0
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        let members = (try? await gateway.groupMembers("all").count) ?? 0
        if members >= options.fleet {
            let query = try await gateway.query(group: "all", fields: ["online"], timeout: .seconds(10))
            online = query.replies.values.filter { $0 == ["online": true] }.count
            if online >= options.fleet { created = ContinuousClock.now - connectStart; break }
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    if options.workloads.contains("M5") {
        report.record("M5.online", "seconds until all D twins exist and are online (from the simulator's start)", created.map(seconds) ?? .nan, "s", setup: setup)
        report.record("M5.online.count", "twins online", Double(online), "devices", setup: setup)
    }
    if options.workloads.contains("M2") {
        let down = try PlainSubscriber(broker: brokerURL, filters: ["devices/+/down"], qos: 0, receiveMaximum: 65_535)
        try await Task.sleep(for: .milliseconds(500))
        let t0 = ContinuousClock.now
        let members = try await gateway.publish(group: "all", body: ["blink": 3])
        let end = ContinuousClock.now + .seconds(30)
        while down.messages < members, ContinuousClock.now < end { try await Task.sleep(for: .milliseconds(2)) }
        let took = seconds(ContinuousClock.now - t0)
        report.record("M2.broadcast", "publish to all: time until every member's down message left the broker (seen by a subscriber to devices/+/down)", took, "s", setup: "\(setup); group all = \(members)", target: "≤ 1 s", met: took <= 1 && down.messages >= members)
        report.record("M2.delivered", "down messages seen", Double(down.messages), "msgs", setup: setup)
        down.close()
    }
    if options.workloads.contains("M3") {
        let t0 = ContinuousClock.now
        let result = try await gateway.query(group: "all", fields: ["reported"], timeout: .seconds(10))
        let took = seconds(ContinuousClock.now - t0)
        report.record("M3.query", "query of all (fields reported): time", took, "s", setup: setup, target: "≤ 1 s with all replies", met: took <= 1 && result.missing.isEmpty)
        report.record("M3.replies", "replies", Double(result.replies.count), "replies", setup: setup)
        report.record("M3.missing", "missing", Double(result.missing.count), "devices", setup: setup)
    }
    // M5: disconnect (70 % clean, 30 % by will) and wait until every twin is offline.
    fleet.terminate()
    let t0 = ContinuousClock.now
    var offline = 0
    let end = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < end {
        let query = try await gateway.query(group: "all", fields: ["online"], timeout: .seconds(10))
        offline = query.replies.values.filter { $0 == ["online": false] }.count
        if offline >= options.fleet { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    fleet.waitUntilExit()
    if options.workloads.contains("M5") {
        report.record("M5.offline", "seconds from SIGTERM to the simulator until every twin is offline (30 % by will)", seconds(ContinuousClock.now - t0), "s", setup: setup)
        report.record("M5.offline.count", "twins offline", Double(offline), "devices", setup: setup, target: "all \(options.fleet)", met: offline == options.fleet)
        if let summary = try? JSONSerialization.jsonObject(with: output.fileHandleForReading.readDataToEndOfFile()) as? [String: Any] {
            if let connect = summary["connectSeconds"] as? Double { report.record("M5.connect", "simulator: seconds for D connects", connect, "s", setup: setup) }
        }
    }
    await cluster.shutdown()
}

await broker.stop()
if let path = options.json {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(report.figures).write(to: URL(fileURLWithPath: path))
    say("wrote \(path)")
}
