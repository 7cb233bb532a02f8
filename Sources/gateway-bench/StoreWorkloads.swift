import DeviceSimulator
import Foundation
import Gateway
import GatewayStore
import GatewayStoreEngines
import SwarmJSON
import Synchronization

// The durable-store workloads (docs/benchmarks.md, "Durable store"):
// - S1: M1's telemetry flood with the store off and on, alternating runs, same process: the
//   routed rate with the store over the rate without it.
// - S2: `--twins` twins provisioned through the API (durable), every node stopped, a new
//   cluster started on the same stores: seconds until every twin is served again.
// - S3: `PATCH …/desired` through the gateway facade (what the HTTP route calls) at `--in-flight`
//   concurrent calls spread over the nodes: writes/s and latency percentiles, each write
//   committed to the store and acknowledged by the successor before it answers.

/// Per-node stores for one workload: SQLite files in a temporary directory, or a database of its
/// own on the PostgreSQL server of `--store` (created with psql, dropped by ``remove()``).
final class BenchStores: Sendable {
    let engine: String
    let directory: String
    let database: String?
    let serverURL: String?

    init(_ store: String) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-bench-store-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if store == "sqlite" {
            engine = "sqlite"
            database = nil
            serverURL = nil
        } else {
            engine = "postgresql"
            let name = "swarm_bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(10)
            try Self.psql(store, "CREATE DATABASE \(name)")
            database = String(name)
            serverURL = store
        }
    }

    /// The writer of node `index` (a fresh store object each call: a new cluster reopens them).
    @Sendable func writer(_ index: Int) async throws -> StoreWriter {
        let store: any DeviceStore
        if let database, let serverURL, let url = URLComponents(string: serverURL), let host = url.host, let user = url.user {
            store = PostgresDeviceStore(
                settings: .init(host: host, port: url.port ?? 5432, username: user, password: url.password, database: database),
                logger: quiet("bench.store"))
        } else {
            store = SQLiteDeviceStore(directory: "\(directory)/gw-\(index)", logger: quiet("bench.store"))
        }
        try await store.open()
        var settings = StoreSettings()
        settings.logger = quiet("bench.store")
        return StoreWriter(store: store, settings: settings)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
        if let database, let serverURL { try? Self.psql(serverURL, "DROP DATABASE IF EXISTS \(database) WITH (FORCE)") }
    }

    static func psql(_ url: String, _ sql: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
        process.arguments = [url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw GatewayError.cluster("psql failed: \(sql)") }
    }
}

/// What the store workloads need from the bench's top level.
struct StoreBench: Sendable {
    let options: Options
    let report: Report
    let port: Int
    let brokerURL: BrokerURL
    let base: String

    /// The M1 fleet (`runFleet` of main.swift, without its globals): `during` runs once every
    /// device is connected, then the fleet runs `seconds` more.
    func runFleet(_ count: Int, rate: Double, seconds duration: Double, during: @Sendable () async -> Void) async throws {
        var settings = FleetRunner.Settings(broker: brokerURL)
        settings.telemetryRate = rate
        settings.payloadBytes = 100
        settings.qos = options.qos
        let runner = try FleetRunner(devices: try fleetSpecs(count, rate: rate), settings: settings)
        try runner.start()
        _ = await runner.waitUntilConnected(timeout: .seconds(60))
        await during()
        try? await Task.sleep(for: .milliseconds(Int(duration * 1000)))
        _ = await runner.stop()
    }
}

/// A shared counter for ``concurrently(_:inFlight:_:)``.
final class NextIndex: Sendable {
    let value = Atomic<Int>(0)
    func take() -> Int { value.add(1, ordering: .relaxed).oldValue }
}

/// Runs `count` calls of `call(i)` with `inFlight` at a time; returns the latencies (ms, sorted)
/// and the failures.
func concurrently(_ count: Int, inFlight: Int, _ call: @escaping @Sendable (Int) async throws -> Void) async -> (latencies: [Double], failures: Int) {
    let next = NextIndex()
    return await withTaskGroup(of: ([Double], Int).self) { group in
        for _ in 0..<inFlight {
            group.addTask {
                var latencies: [Double] = []
                var failures = 0
                while true {
                    let index = next.take()
                    guard index < count else { break }
                    let t0 = ContinuousClock.now
                    do {
                        try await call(index)
                        latencies.append(seconds(ContinuousClock.now - t0) * 1000)
                    } catch {
                        failures += 1
                        if failures <= 2 { say("call \(index) failed: \(error)") }
                    }
                }
                return (latencies, failures)
            }
        }
        var all: [Double] = []
        var failures = 0
        for await (latencies, failed) in group {
            all += latencies
            failures += failed
        }
        return (all.sorted(), failures)
    }
}

func runStoreWorkloads(_ bench: StoreBench) async throws {
    let engine = bench.options.store == "sqlite" ? "sqlite" : "postgresql"
    if bench.options.workloads.contains("S1") { try await storeS1(bench, engine) }
    if bench.options.workloads.contains("S3") { try await storeS3(bench, engine) }
    if bench.options.workloads.contains("S2") { try await storeS2(bench, engine) }
}

/// S1: the M1 flood with the store off, then on, `--runs` times, alternating.
func storeS1(_ bench: StoreBench, _ engine: String) async throws {
    let (options, report, port, base) = (bench.options, bench.report, bench.port, bench.base)
    let setup = "\(base); \(options.devices) simulated devices, telemetry 100 B QoS \(options.qos) at \(Int(options.rate)) msg/s each, \(Int(options.seconds)) s window; store \(engine); runs alternate store off / on"
    var off: [Double] = []
    var on: [Double] = []
    var cpuOff: [Double] = []
    var cpuOn: [Double] = []
    var rowsWritten = 0
    for run in 1...max(1, options.runs) {
        for withStore in [false, true] {
            let stores = withStore ? try BenchStores(options.store) : nil
            let cluster = try await GatewayCluster(count: options.nodes, brokerPort: port, qos: options.qos, store: stores.map { $0.writer })
            let window = Window()
            try await bench.runFleet(options.devices, rate: options.rate, seconds: options.seconds) {
                try? await Task.sleep(for: .seconds(1))
                window.begin(await cluster.counters().routed)
            }
            let end = await cluster.counters()
            let (routed, cpu, elapsed) = window.end(end.routed)
            let rate = Double(routed) / elapsed
            if withStore {
                on.append(rate)
                cpuOn.append(cpu / Double(max(1, routed)) * 1e6)
                rowsWritten += cluster.members.compactMap { $0.gateway.storeStats?.rowsWritten }.reduce(0, +)
            } else {
                off.append(rate)
                cpuOff.append(cpu / Double(max(1, routed)) * 1e6)
            }
            say("S1 run \(run) store \(withStore ? "on " : "off"): \(Int(rate)) msg/s routed")
            await cluster.shutdown()
            stores?.remove()
        }
    }
    let medianOff = percentile(off.sorted(), 0.5)
    let medianOn = percentile(on.sorted(), 0.5)
    report.record("S1.\(engine).off", "M1 routed msg/s, store off (median of \(off.count))", medianOff, "msg/s", setup: setup)
    report.record("S1.\(engine).on", "M1 routed msg/s, store on (median of \(on.count))", medianOn, "msg/s", setup: setup)
    report.record("S1.\(engine).ratio", "store on / store off", medianOn / medianOff, "x", setup: setup, target: "≥ 0.95", met: medianOn / medianOff >= 0.95)
    report.record("S1.\(engine).cpu.off", "gateway CPU per routed message, store off", percentile(cpuOff.sorted(), 0.5), "µs", setup: setup)
    report.record("S1.\(engine).cpu.on", "gateway CPU per routed message, store on", percentile(cpuOn.sorted(), 0.5), "µs", setup: setup)
    report.record("S1.\(engine).rows", "rows the stores wrote in the store-on runs (owned + replica, after coalescing)", Double(rowsWritten), "rows", setup: setup)
}

/// A measuring window: routed count, CPU and time from ``begin(_:)`` to ``end(_:)``.
final class Window: Sendable {
    private let start = Mutex<(routed: Int, cpu: Double, at: ContinuousClock.Instant)>((0, 0, .now))

    func begin(_ routed: Int) {
        start.withLock { $0 = (routed, gatewayThreadsCPU(), .now) }
    }

    func end(_ routed: Int) -> (routed: Int, cpu: Double, seconds: Double) {
        let begun = start.withLock { $0 }
        return (routed - begun.routed, gatewayThreadsCPU() - begun.cpu, seconds(ContinuousClock.now - begun.at))
    }
}

/// Provisions `count` twins with `inFlight` calls at a time over the nodes; returns the rate
/// and the failures.
func provision(_ cluster: GatewayCluster, count: Int, inFlight: Int) async -> (rate: Double, latencies: [Double], failures: Int) {
    let members = cluster.members
    let t0 = ContinuousClock.now
    let (latencies, failures) = await concurrently(count, inFlight: inFlight) { index in
        _ = try await members[index % members.count].gateway.provision(
            "twin-\(index)", tags: ["n": .int(Int64(index))], groups: index % 10 == 0 ? ["tenth"] : [])
    }
    return (Double(count - failures) / seconds(ContinuousClock.now - t0), latencies, failures)
}

/// S3: PATCH desired at `--in-flight` over the nodes, for `--seconds`.
func storeS3(_ bench: StoreBench, _ engine: String) async throws {
    let (options, report, port, base) = (bench.options, bench.report, bench.port, bench.base)
    let stores = try BenchStores(options.store)
    defer { stores.remove() }
    let cluster = try await GatewayCluster(count: options.nodes, brokerPort: port, store: stores.writer)
    let devices = 1000
    let provisioned = await provision(cluster, count: devices, inFlight: options.inFlight)
    let members = cluster.members
    let setup = "\(base); store \(engine); \(devices) provisioned twins; patchDesired (the route's facade call) with \(options.inFlight) in flight over the \(options.nodes) nodes, \(Int(options.seconds)) s; each answers after the store commit and the successor's acknowledgement, then publishes the desired state (retained, QoS 1)"
    let total = Int(options.seconds * 40_000)
    let deadline = ContinuousClock.now + .milliseconds(Int(options.seconds * 1000))
    let stopped = Atomic<Bool>(false)
    let done = Atomic<Int>(0)
    let cpu0 = gatewayThreadsCPU()
    let t0 = ContinuousClock.now
    let (latencies, failures) = await concurrently(total, inFlight: options.inFlight) { index in
        guard !stopped.load(ordering: .relaxed) else { return }
        if ContinuousClock.now >= deadline {
            stopped.store(true, ordering: .relaxed)
            return
        }
        let id = "twin-\(Int.random(in: 0..<devices))"
        _ = try await members[index % members.count].gateway.patchDesiredJSON(id, ["level": .int(Int64(index))])
        done.add(1, ordering: .relaxed)
    }
    let elapsed = seconds(ContinuousClock.now - t0)
    let cpu = gatewayThreadsCPU() - cpu0
    let writes = done.load(ordering: .relaxed)
    // The stopped calls returned at once: keep the latencies of real writes only (the fastest
    // entries beyond the count are the no-op returns after the deadline).
    let real = Array(latencies.suffix(writes))
    var commits = 0
    var durable = 0
    for member in members {
        if let stats = member.gateway.storeStats {
            commits += stats.commits
            durable += stats.durableWrites
        }
    }
    report.record("S3.\(engine).provision", "provisioning (durable PUT) rate, \(options.inFlight) in flight", provisioned.rate, "twins/s", setup: setup)
    report.record("S3.\(engine).rate", "durable desired-state writes/s", Double(writes) / elapsed, "writes/s", setup: setup, target: "≥ 10,000/s", met: Double(writes) / elapsed >= 10_000)
    report.record("S3.\(engine).p50", "write latency p50", percentile(real, 0.5), "ms", setup: setup)
    report.record("S3.\(engine).p99", "write latency p99", percentile(real, 0.99), "ms", setup: setup, target: "≤ 20 ms", met: percentile(real, 0.99) <= 20)
    report.record("S3.\(engine).failed", "writes failed", Double(failures), "writes", setup: setup)
    report.record("S3.\(engine).cpu.per.write", "gateway CPU per write (every node)", cpu / Double(max(1, writes)) * 1e6, "µs", setup: setup)
    report.record("S3.\(engine).group", "durable writes per store transaction (group commit)", Double(durable) / Double(max(1, commits)), "writes/txn", setup: setup)
    await cluster.shutdown()
}

/// S2: `--twins` twins, every node stopped, a new cluster on the same stores: until every twin
/// is served again.
func storeS2(_ bench: StoreBench, _ engine: String) async throws {
    let (options, report, port, base) = (bench.options, bench.report, bench.port, bench.base)
    let stores = try BenchStores(options.store)
    defer { stores.remove() }
    let count = options.twins
    let setup = "\(base); store \(engine); \(count) twins provisioned through the API (durable), every node stopped, \(options.nodes) new nodes on the same stores"
    let first = try await GatewayCluster(count: options.nodes, brokerPort: port, store: stores.writer)
    let provisioned = await provision(first, count: count, inFlight: options.inFlight)
    say("S2: \(count) twins provisioned at \(Int(provisioned.rate))/s (\(provisioned.failures) failed)")
    await first.shutdown()

    // Every node again: from the first node's start until every node has recovered and every
    // node's registry holds every twin.
    let t0 = ContinuousClock.now
    let cpu0 = gatewayThreadsCPU()
    let second = try await GatewayCluster(count: options.nodes, brokerPort: port, store: stores.writer)
    var served: Duration?
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        var all = true
        for member in second.members {
            let groups = member.gateway.groups()
            let known = groups.first { $0.group == "all" }?.members ?? 0
            if !member.gateway.recoveryStatus.complete || known < count - provisioned.failures { all = false }
        }
        if all {
            served = ContinuousClock.now - t0
            break
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    let cpu = gatewayThreadsCPU() - cpu0
    // A sample of the twins, read back through different nodes: their stored tags.
    var wrong = 0
    for sample in 0..<500 {
        let index = Int.random(in: 0..<count)
        let member = second.members[sample % second.members.count]
        let twin = try? await member.gateway.twin("twin-\(index)")
        if twin?.tags["n"] != .int(Int64(index)) { wrong += 1 }
    }
    let tenth = (try? await second.members[0].gateway.groupMembers("tenth").count) ?? 0
    report.record("S2.\(engine).provision", "provisioning (durable PUT) rate, \(options.inFlight) in flight", provisioned.rate, "twins/s", setup: setup)
    report.record("S2.\(engine).recovery", "seconds from the restart until every twin is served again", served.map(seconds) ?? .nan, "s", setup: setup, target: "≤ 10 s", met: (served.map(seconds) ?? .infinity) <= 10)
    report.record("S2.\(engine).cpu", "gateway CPU during the recovery (every node)", cpu, "s", setup: setup)
    report.record("S2.\(engine).wrong", "sampled twins (500) served without their stored tags", Double(wrong), "twins", setup: setup, target: "0", met: wrong == 0)
    report.record("S2.\(engine).groups", "members of group tenth after the restart (provisioned: every tenth twin)", Double(tenth), "twins", setup: setup, target: "\(count / 10)", met: tenth == count / 10)
    await second.shutdown()
}
