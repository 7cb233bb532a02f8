// swarm-bench: the cluster workloads W1–W7 of docs/benchmarks.md (release builds only).
//
// Three `SwarmNode`s in ONE process on 127.0.0.1, port 0, with real TCP between them (the
// nodes' own transports over loopback). Every figure is printed with its setup and its target;
// `--json FILE` writes them all; `--runs R` repeats the whole scenario on a fresh cluster and
// reports the median.
//
//   swift build -c release --product swarm-node && swift build -c release --product swarm-bench
//   .build/release/swarm-bench --n 10000 --runs 3 --json /tmp/w.json   (W6K needs swarm-node beside it)

import Foundation
import Logging
import NIOCore
import NIOPosix
import SwarmCore
import SwarmNode
import SwarmTransport
import Synchronization
import TestCertificates

// MARK: - Options

struct Options {
    var n = 10_000
    var runs = 3
    var workloads: Set<String> = ["W1", "W2", "W3", "W4", "W5", "W6", "W6K", "W7"]
    var json: String?
    var lookups = 1_000_000
    /// Mutual TLS between the nodes (`--tls`).
    var tls = false
    /// Internal: this process is one run started by the parent; write the figures to `childOut`.
    var childOut: String?

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var index = 1
        func value() -> String {
            index += 1
            guard index < arguments.count else {
                FileHandle.standardError.write(Data("missing value for \(arguments[index - 1])\n".utf8))
                exit(2)
            }
            return arguments[index]
        }
        while index < arguments.count {
            switch arguments[index] {
            case "--n": options.n = Int(value()) ?? options.n
            case "--runs": options.runs = max(1, Int(value()) ?? options.runs)
            case "--json": options.json = value()
            case "--lookups": options.lookups = Int(value()) ?? options.lookups
            case "--child-out": options.childOut = value()
            case "--tls": options.tls = true
            case "--workloads":
                options.workloads = Set(value().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() })
            case "-h", "--help":
                print("usage: swarm-bench [--n 10000] [--runs 3] [--workloads W1,W2,W3,W4,W5,W6,W6K,W7] [--lookups 1000000] [--json FILE] [--tls]")
                exit(0)
            default:
                FileHandle.standardError.write(Data("unknown argument \(arguments[index])\n".utf8))
                exit(2)
            }
            index += 1
        }
        return options
    }
}

// MARK: - Figures

enum Goal: Codable, Sendable {
    case atLeast(Double)
    case atMost(Double)

    func met(_ value: Double) -> Bool {
        switch self {
        case .atLeast(let goal): return value >= goal
        case .atMost(let goal): return value <= goal
        }
    }
}

struct Figure: Codable, Sendable {
    var id: String
    var label: String
    var setup: String
    var unit: String
    var values: [Double] = []
    var goal: Goal?
    var goalText: String?

    var median: Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }
}

final class Report: @unchecked Sendable {
    private let lock = NSLock()
    private var figures: [Figure] = []
    /// A child run rewrites its figures here after every record, so a run killed for taking too
    /// long still hands back what it measured.
    var sink: String?

    func record(
        _ id: String, _ label: String, setup: String, unit: String, _ value: Double,
        goal: Goal? = nil, goalText: String? = nil
    ) {
        lock.lock()
        defer { lock.unlock() }
        if let index = figures.firstIndex(where: { $0.id == id }) {
            figures[index].values.append(value)
        } else {
            figures.append(Figure(id: id, label: label, setup: setup, unit: unit, values: [value], goal: goal, goalText: goalText))
        }
        // Unbuffered, so the parent's log shows progress as it happens.
        FileHandle.standardOutput.write(Data("    \(id) \(label): \(format(value, unit))\n".utf8))
        if let sink, let data = try? JSONEncoder().encode(figures) {
            try? data.write(to: URL(fileURLWithPath: sink))
        }
    }

    /// Adds the figures of a child run.
    func merge(_ others: [Figure]) {
        lock.lock()
        defer { lock.unlock() }
        for other in others {
            if let index = figures.firstIndex(where: { $0.id == other.id }) {
                figures[index].values += other.values
            } else {
                figures.append(other)
            }
        }
    }

    var all: [Figure] {
        lock.lock()
        defer { lock.unlock() }
        return figures
    }
}

func format(_ value: Double, _ unit: String) -> String {
    if value.isNaN { return "n/a" }
    switch unit {
    case "/s":
        if value >= 1e6 { return String(format: "%.2f M/s", value / 1e6) }
        if value >= 1e3 { return String(format: "%.1f k/s", value / 1e3) }
        return String(format: "%.0f /s", value)
    case "µs": return String(format: "%.2f µs", value)
    case "µs/op": return String(format: "%.2f µs/op", value)
    case "ms": return String(format: "%.1f ms", value)
    case "x": return String(format: "%.2f×", value)
    case "B": return String(format: "%.0f B", value)
    default: return String(format: "%.0f %@", value, unit)
    }
}

// MARK: - Workers and counters

/// Casts received by every bench worker of the process (all three nodes).
final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func add() { value.add(1, ordering: .relaxed) }
    var current: Int { value.load(ordering: .relaxed) }
}

let castsReceived = Counter()

/// Hands out 0, 1, 2… to concurrent workers.
final class Ticket: Sendable {
    let value = Atomic<Int>(0)
    func take() -> Int { value.add(1, ordering: .relaxed).oldValue }
}
let pong: [UInt8] = Array("pong".utf8)
let ping: [UInt8] = Array("ping".utf8)

/// The trivial worker of docs/benchmarks.md: `ping` → `pong`, counts casts.
actor BenchWorker: SwarmProcess {
    let name: String
    init(name: String) { self.name = name }
    func receive(_ message: [UInt8]) async throws { castsReceived.add() }
    func call(_ message: [UInt8]) async throws -> [UInt8] { message == ping ? pong : message }
}

let benchFactory: ProcessFactory = { name, _ in BenchWorker(name: name) }

/// W5's process: counts its casts and moves with its count (`.resume`), so a lost or doubled
/// cast shows per name. Calls: `count` → the count as decimal text.
actor CountingWorker: SwarmProcess {
    var count = 0
    func receive(_ message: [UInt8]) async throws {
        count += 1
        castsReceived.add()
    }
    func call(_ message: [UInt8]) async throws -> [UInt8] { Array(String(count).utf8) }
    func beginHandoff() async -> HandoffAnswer { .resume(Array(String(count).utf8)) }
    func endHandoff(state: [UInt8]) async { count += Int(String(decoding: state, as: UTF8.self)) ?? 0 }
}

let countingFactory: ProcessFactory = { _, _ in CountingWorker() }

extension SwarmNode {
    /// How many of `names[from...]`, in order, resolve here (stops at the first that does not).
    /// Runs inside the node's isolation: one hop for the whole scan.
    func resolvedPrefix(_ names: [String], from: Int) -> Int {
        var index = from
        while index < names.count, whereis(names[index]) != nil { index += 1 }
        return index
    }

    /// `count` lookups of `names[order[i]]` inside the node's isolation (no actor hop per call),
    /// timed per batch of `batch` lookups. Returns (hits, per-batch durations in ns).
    func bulkWhereis(_ names: [String], _ order: [Int], batch: Int) -> (Int, [Double]) {
        var hits = 0
        var batches: [Double] = []
        batches.reserveCapacity(order.count / batch + 1)
        let clock = ContinuousClock()
        var start = clock.now
        for (position, index) in order.enumerated() {
            if whereis(names[index]) != nil { hits += 1 }
            if (position + 1) % batch == 0 {
                let now = clock.now
                batches.append(nanoseconds(now - start))
                start = now
            }
        }
        return (hits, batches)
    }

    /// Names whose process runs on `node` according to this node's replica.
    func names(_ names: [String], on node: NodeID) -> [String] {
        names.filter { whereis($0)?.node == node }
    }

    /// How many of `names[from...]`, in order, resolve here to a process not on `dead` (stops
    /// at the first that does not).
    func movedPrefix(_ names: [String], awayFrom dead: NodeID, from: Int) -> Int {
        var index = from
        while index < names.count, let pid = whereis(names[index]), pid.node != dead { index += 1 }
        return index
    }
}

// MARK: - Helpers

func nanoseconds(_ duration: Duration) -> Double {
    let (seconds, attoseconds) = duration.components
    return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
}

func seconds(_ duration: Duration) -> Double { nanoseconds(duration) / 1e9 }

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let index = min(sorted.count - 1, max(0, Int((Double(sorted.count) * p).rounded(.up)) - 1))
    return sorted[index]
}

/// Resident set size of this process (VmRSS of /proc/self/status), bytes.
func residentBytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return .nan }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").compactMap { Int($0) }
        if let kib = digits.first { return Double(kib) * 1024 }
    }
    return .nan
}

/// Polls `condition` (every `interval`) until it holds or `timeout` passes; returns the elapsed
/// time from `start` when it held, nil on timeout.
func waitUntil(
    from start: ContinuousClock.Instant, timeout: Duration = .seconds(60), interval: Duration = .microseconds(200),
    _ condition: () async throws -> Bool
) async rethrows -> Duration? {
    let deadline = start + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return ContinuousClock.now - start }
        try? await Task.sleep(for: interval)
    }
    return try await condition() ? ContinuousClock.now - start : nil
}

/// Runs `total` operations with `inFlight` concurrent workers pulling indices; returns the wall time.
func concurrently(
    _ total: Int, inFlight: Int, _ operation: @escaping @Sendable (Int) async throws -> Void
) async throws -> Duration {
    let next = Ticket()
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<inFlight {
            group.addTask {
                while true {
                    let index = next.take()
                    if index >= total { return }
                    try await operation(index)
                }
            }
        }
        try await group.waitForAll()
    }
    return ContinuousClock.now - start
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
}

// MARK: - Cluster

let secret = ClusterSecret("swarm-bench-cluster-secret-0123456789")

/// With `--tls`, the throwaway CA (made by the openssl CLI) whose certificates the nodes present
/// to each other; one per process.
let benchCA: TestCertificateAuthority? = {
    guard CommandLine.arguments.contains("--tls") else { return nil }
    do {
        return try TestCertificateAuthority(name: "swarm-bench-ca")
    } catch {
        fatalError("--tls: cannot make the test CA: \(error)")
    }
}()

func nodeSettings(_ name: String, seeds: [String]) -> SwarmNodeSettings {
    var settings = SwarmNodeSettings(name: name, secret: secret)
    if let benchCA {
        do {
            settings.security = try benchCA.security(for: name)
        } catch {
            fatalError("--tls: \(error)")
        }
    }
    settings.seeds = seeds
    var logger = Logger(label: "bench.\(name)")
    logger.logLevel = .error
    settings.logger = logger
    return settings
}

struct Cluster {
    var nodes: [SwarmNode]
    var runner: Task<Void, Never>

    static let factories: [String: ProcessFactory] = ["worker": benchFactory, "counter": countingFactory]

    static func start(_ count: Int) async throws -> Cluster {
        let first = SwarmNode(settings: nodeSettings("node-1", seeds: []), factories: factories)
        try await first.start()
        guard let seed = await first.address else { throw BenchFailure(description: "node-1 has no address") }
        var nodes = [first]
        for index in 2...count {
            let node = SwarmNode(settings: nodeSettings("node-\(index)", seeds: [seed]), factories: factories)
            try await node.start()
            nodes.append(node)
        }
        let all = nodes
        let runner = Task {
            await withTaskGroup(of: Void.self) { group in
                for node in all { group.addTask { try? await node.run() } }
            }
        }
        let formed = try await waitUntil(from: .now, timeout: .seconds(30), interval: .milliseconds(20)) {
            for node in all {
                let dump = try await node.dump()
                if dump.ringNodes.count != count || dump.state != "up" { return false }
            }
            return true
        }
        guard formed != nil else { throw BenchFailure(description: "the \(count)-node ring did not form") }
        return Cluster(nodes: all, runner: runner)
    }

    func shutdown() async {
        for node in nodes { await node.shutdown() }
        await runner.value
    }
}

// MARK: - Bare NIO echo (the floor of a loopback round trip)

final class EchoServerHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }
}

/// Touched only on its channel's event loop.
final class EchoClientHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var pending: EventLoopPromise<Void>?
    var expected = 0
    var received = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        if received >= expected, let promise = pending {
            pending = nil
            received = 0
            promise.succeed(())
        }
    }
}

/// Round trips of a 4-byte message to a NIO echo server on loopback, timed one by one from an
/// async task (as a `call` is). Returns sorted latencies in µs.
func echoRoundTrips(_ count: Int) async throws -> [Double] {
    let group = MultiThreadedEventLoopGroup.singleton
    let server = try await ServerBootstrap(group: group)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in channel.pipeline.addHandler(EchoServerHandler()) }
        .bind(host: "127.0.0.1", port: 0).get()
    guard let port = server.localAddress?.port else { throw BenchFailure(description: "echo server has no port") }
    let handler = EchoClientHandler()
    let client = try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in channel.pipeline.addHandler(handler) }
        .connect(host: "127.0.0.1", port: port).get()
    var latencies: [Double] = []
    latencies.reserveCapacity(count)
    let clock = ContinuousClock()
    for _ in 0..<count {
        let start = clock.now
        try await client.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            let promise = client.eventLoop.makePromise(of: Void.self)
            handler.pending = promise
            handler.expected = 4
            var buffer = client.allocator.buffer(capacity: 4)
            buffer.writeBytes(ping)
            client.writeAndFlush(buffer, promise: nil)
            return promise.futureResult
        }.get()
        latencies.append(nanoseconds(clock.now - start) / 1000)
    }
    try await client.close().get()
    try await server.close().get()
    return latencies.sorted()
}

// MARK: - One run

func runOnce(_ options: Options, run: Int, report: Report) async throws {
    let n = options.n
    let w = options.workloads
    let base = "3 nodes in 1 process, loopback TCP, N=\(n)"
    print("run \(run + 1)/\(options.runs): starting 3 nodes")
    let cluster = try await Cluster.start(3)
    let nodes = cluster.nodes
    do {
        try await scenario(options, base: base, nodes: nodes, cluster: cluster, report: report, w: w, n: n)
    } catch {
        await cluster.shutdown()
        throw error
    }
    await cluster.shutdown()
    if w.contains("W5") { try await joinUnderCasts(options, report: report) }
    if w.contains("W6K") { try await killNineWorkload(options, report: report) }
}

/// W5: M = 3N/2 names on 2 nodes (so that about N/2 — 5,000 for N = 10k — move), a third node
/// starts and joins while node 1 casts to random names at a steady rate. Measures the time from
/// the third node's start until every name lives on its ring owner on all three nodes with no
/// handoff in flight, and checks every name's count against the casts sent to it.
func joinUnderCasts(_ options: Options, report: Report) async throws {
    let m = options.n * 3 / 2
    let rate = 20_000
    print("W5: starting 2 nodes, registering \(m) names")
    let cluster = try await Cluster.start(2)
    let nodes = cluster.nodes
    let names = (0..<m).map { "j-\($0)" }
    _ = try await concurrently(m, inFlight: 64) { index in
        let result = try await nodes[0].register(names[index], kind: "counter")
        guard result.pid != nil else { throw BenchFailure(description: "W5 register: \(result)") }
    }
    guard await waitUntil(from: .now, timeout: .seconds(60), interval: .milliseconds(5), {
        names.allSatisfy { nodes[1].whereis($0) != nil }
    }) != nil else { throw BenchFailure(description: "W5: names did not converge on 2 nodes") }

    // The sender: `rate` casts/s from node 1, in batches every 10 ms, counted per name.
    let stop = Atomic<Bool>(false)
    let sender = Task { () -> (sent: [Int], errors: Int) in
        var sent = Array(repeating: 0, count: m)
        var errors = 0
        var generator = SystemRandomNumberGenerator()
        let clock = ContinuousClock()
        var next = clock.now
        while !stop.load(ordering: .relaxed) {
            for _ in 0..<(rate / 100) {
                let index = Int.random(in: 0..<m, using: &generator)
                do {
                    try await nodes[0].send(names[index], ping)
                    sent[index] += 1
                } catch {
                    errors += 1
                }
            }
            next = next + .milliseconds(10)
            try? await clock.sleep(until: next)
        }
        return (sent, errors)
    }
    try? await Task.sleep(for: .milliseconds(300))

    let third = SwarmNode(settings: nodeSettings("node-3", seeds: [await nodes[0].address!]), factories: Cluster.factories)
    let start = ContinuousClock.now
    try await third.start()
    let runner = Task { try? await third.run() }
    let all = nodes + [third]
    var cursor = 0
    let settled = await waitUntil(from: start, timeout: .seconds(120), interval: .milliseconds(5)) {
        // Every name on its ring owner, as every node sees it…
        while cursor < names.count {
            let name = names[cursor]
            var placed = true
            for node in all {
                guard let owner = node.owner(of: name), node.whereis(name)?.node.name == owner
                else { placed = false; break }
            }
            if !placed { return false }
            cursor += 1
        }
        // …the ring has all three everywhere, and no handoff is in flight.
        for node in all {
            guard let dump = try? await node.dump(), dump.ringNodes.count == 3, dump.handoffs.isEmpty else { return false }
        }
        return true
    }
    let moved = names.filter { third.whereis($0)?.node == third.id }.count
    try? await Task.sleep(for: .milliseconds(500))
    stop.store(true, ordering: .relaxed)
    let (sent, errors) = await sender.value
    let totalSent = sent.reduce(0, +)
    // Let the last casts land, then read every name's count.
    var counted = Array(repeating: 0, count: m)
    for attempt in 0..<50 {
        var total = 0
        for (index, name) in names.enumerated() {
            counted[index] = Int(String(decoding: (try? await nodes[0].call(name, ping)) ?? [], as: UTF8.self)) ?? 0
            total += counted[index]
        }
        if total >= totalSent || attempt == 49 { break }
        try? await Task.sleep(for: .milliseconds(100))
    }
    var lost = 0
    var doubled = 0
    for index in 0..<m {
        if counted[index] < sent[index] { lost += sent[index] - counted[index] } else { doubled += counted[index] - sent[index] }
    }
    let setup = "3 nodes in 1 process, loopback TCP, \(m) names on 2 nodes, node 3 joins; \(moved) names moved to it; casts from node 1 at \(rate)/s to random names"
    report.record("W5.join", "time until every name lives on its ring owner (all 3 nodes agree, no handoff in flight), from node 3's start", setup: setup, unit: "ms",
        settled.map { nanoseconds($0) / 1e6 } ?? .nan, goal: .atMost(1000), goalText: "≤ 1 s (~5k handed off)")
    report.record("W5.moved", "names handed off to node 3 (with .resume state)", setup: setup, unit: "names", Double(moved))
    report.record("W5.sent", "casts sent during the run (accepted by the API)", setup: setup, unit: "msgs", Double(totalSent))
    report.record("W5.send.errors", "casts the API refused (name unknown at the sender)", setup: setup, unit: "msgs", Double(errors))
    report.record("W5.lost", "casts lost (per name: sent − counted, summed)", setup: setup, unit: "msgs", Double(lost), goal: .atMost(0), goalText: "0")
    report.record("W5.doubled", "casts counted twice (per name: counted − sent, summed)", setup: setup, unit: "msgs", Double(doubled), goal: .atMost(0), goalText: "0")
    await third.shutdown()
    _ = await runner.value
    await cluster.shutdown()
}

/// CPU seconds (user + system) this process has used so far: all 3 nodes together, the figure
/// beside each rate that does not depend on what else runs on the machine.
func processCPU() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

extension Report {
    /// Records `<id>.cpu`: process CPU since `start` (a ``processCPU()`` reading) per operation.
    func recordCPU(_ id: String, since start: Double, operations: Int, setup: String) {
        record("\(id).cpu", "CPU per operation (user + system, all 3 nodes) beside \(id)", setup: setup, unit: "µs/op",
            (processCPU() - start) / Double(max(1, operations)) * 1e6)
    }
}

func scenario(
    _ options: Options, base: String, nodes: [SwarmNode], cluster: Cluster, report: Report, w: Set<String>, n: Int
) async throws {
    let rssBefore = residentBytes()
    let sequential = (0..<n).map { "s-\($0)" }
    let parallel = (0..<n).map { "p-\($0)" }

    // W1 (always run: the later workloads need the names).
    func converge(_ names: [String], from start: ContinuousClock.Instant) async throws -> Duration {
        var cursors = Array(repeating: 0, count: nodes.count)
        let elapsed = await waitUntil(from: start, timeout: .seconds(120), interval: .microseconds(500)) {
            for (index, node) in nodes.enumerated() {
                cursors[index] = await node.resolvedPrefix(names, from: cursors[index])
                if cursors[index] < names.count { return false }
            }
            return true
        }
        guard let elapsed else { throw BenchFailure(description: "names did not converge: \(cursors)") }
        return elapsed
    }
    do {
        let cpu = processCPU()
        let start = ContinuousClock.now
        for name in sequential {
            let result = try await nodes[0].register(name, kind: "worker")
            guard result.pid != nil else { throw BenchFailure(description: "register \(name): \(result)") }
        }
        let wall = ContinuousClock.now - start
        let cpuUsed = processCPU() - cpu
        let converged = try await converge(sequential, from: start)
        if w.contains("W1") {
            report.record("W1.seq.rate", "registrations/s, sequential", setup: "\(base), from node 1, 1 in flight", unit: "/s", Double(n) / seconds(wall))
            report.recordCPU("W1.seq.rate", since: processCPU() - cpuUsed, operations: n, setup: "\(base), from node 1, 1 in flight")
            report.record("W1.seq.converge", "time until all 3 nodes resolve all N (from first register), sequential", setup: "\(base), 1 in flight", unit: "ms", nanoseconds(converged) / 1e6)
        }
    }
    do {
        let cpu = processCPU()
        let start = ContinuousClock.now
        let node = nodes[0]
        let wall = try await concurrently(n, inFlight: 64) { index in
            let result = try await node.register(parallel[index], kind: "worker")
            guard result.pid != nil else { throw BenchFailure(description: "register \(parallel[index]): \(result)") }
        }
        let cpuUsed = processCPU() - cpu
        let converged = try await converge(parallel, from: start)
        if w.contains("W1") {
            report.record("W1.par.rate", "registrations/s, 64 in flight", setup: "\(base), from node 1, 64 in flight", unit: "/s", Double(n) / seconds(wall), goal: .atLeast(200_000), goalText: "≥ 200k/s")
            report.recordCPU("W1.par.rate", since: processCPU() - cpuUsed, operations: n, setup: "\(base), from node 1, 64 in flight")
            report.record("W1.par.converge", "time until all 3 nodes resolve all N (from first register), 64 in flight", setup: "\(base), 64 in flight", unit: "ms", nanoseconds(converged) / 1e6)
        }
    }

    // W7: memory with 2N registered (both W1 sets), three replicas and 2N processes in one process.
    if w.contains("W7") {
        try? await Task.sleep(for: .milliseconds(200))
        let rssAfter = residentBytes()
        let perRegistration = (rssAfter - rssBefore) / Double(2 * n)
        report.record("W7.rss.delta", "process RSS growth with 2N registered (3 replicas + 2N workers)", setup: "\(base) ×2 sets, VmRSS before/after", unit: "B", rssAfter - rssBefore)
        report.record("W7.per.reg.cluster", "bytes per registration, all 3 replicas + its process", setup: "\(base) ×2 sets, RSS delta / 2N", unit: "B", perRegistration)
        report.record("W7.per.reg.node", "bytes per registration per node (cluster figure / 3)", setup: "\(base) ×2 sets, RSS delta / 2N / 3", unit: "B", perRegistration / 3, goal: .atMost(1024), goalText: "≤ 1 KiB")
    }

    // W2: lookups on node 2.
    if w.contains("W2") {
        var generator = SystemRandomNumberGenerator()
        let count = options.lookups
        let order = (0..<count).map { _ in Int.random(in: 0..<n, using: &generator) }
        let node = nodes[1]
        let setup = "\(base), on node 2, \(count) lookups of random names, 1 caller"
        // (a) through the public API from a task outside the node: a nonisolated read under the tracker lock.
        var hits = 0
        let cpu = processCPU()
        let start = ContinuousClock.now
        for index in order {
            if node.whereis(parallel[index]) != nil { hits += 1 }
        }
        let wall = ContinuousClock.now - start
        guard hits == count else { throw BenchFailure(description: "W2: \(count - hits) lookups missed") }
        report.record("W2.api.rate", "lookups/s via the public API (nonisolated read, no actor hop)", setup: setup, unit: "/s", Double(count) / seconds(wall), goal: .atLeast(10_000_000), goalText: "≥ 10M/s")
        report.recordCPU("W2.api.rate", since: cpu, operations: count, setup: setup)
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        let clock = ContinuousClock()
        for index in order {
            let t0 = clock.now
            _ = node.whereis(parallel[index])
            latencies.append(nanoseconds(clock.now - t0) / 1000)
        }
        latencies.sort()
        report.record("W2.api.p50", "lookup p50 via API (per-call timed)", setup: setup, unit: "µs", percentile(latencies, 0.5))
        report.record("W2.api.p99", "lookup p99 via API (per-call timed)", setup: setup, unit: "µs", percentile(latencies, 0.99))
        // (b) inside the node's isolation (the replica read alone), timed per batch of 1,000.
        let (bulkHits, batches) = await node.bulkWhereis(parallel, order, batch: 1000)
        guard bulkHits == count else { throw BenchFailure(description: "W2 bulk: \(count - bulkHits) lookups missed") }
        let total = batches.reduce(0, +)
        let perLookup = batches.map { $0 / 1000 / 1000 }.sorted()
        report.record("W2.iso.rate", "lookups/s inside the node's isolation (bench extension, no hop)", setup: setup, unit: "/s", Double(batches.count * 1000) / (total / 1e9), goal: .atLeast(10_000_000), goalText: "≥ 10M/s")
        report.record("W2.iso.p50", "lookup p50 inside isolation (batch-timed, 1,000/batch)", setup: setup, unit: "µs", percentile(perLookup, 0.5))
        report.record("W2.iso.p99", "lookup p99 inside isolation (batch-timed, 1,000/batch)", setup: setup, unit: "µs", percentile(perLookup, 0.99))
    }

    // W3: calls and casts from node 1.
    if w.contains("W3") {
        let node = nodes[0]
        let me = node.id
        let remote = await nodes[0].names(parallel, on: me).count
        let remoteShare = 1 - Double(remote) / Double(n)
        var generator = SystemRandomNumberGenerator()
        let singleCalls = min(20_000, 2 * n)
        let setup1 = "\(base), from node 1 to random names (\(Int(remoteShare * 100))% remote), payload 4 B, 1 caller"
        var latencies: [Double] = []
        latencies.reserveCapacity(singleCalls)
        let clock = ContinuousClock()
        let cpu1 = processCPU()
        let start = clock.now
        for _ in 0..<singleCalls {
            let name = parallel[Int.random(in: 0..<n, using: &generator)]
            let t0 = clock.now
            let reply = try await node.call(name, ping)
            latencies.append(nanoseconds(clock.now - t0) / 1000)
            guard reply == pong else { throw BenchFailure(description: "W3: bad reply") }
        }
        let wall = clock.now - start
        report.recordCPU("W3.call1.rate", since: cpu1, operations: singleCalls, setup: setup1)
        latencies.sort()
        let callP50 = percentile(latencies, 0.5)
        report.record("W3.call1.rate", "calls/s, 1 caller", setup: setup1, unit: "/s", Double(singleCalls) / seconds(wall))
        report.record("W3.call1.p50", "call p50, 1 caller", setup: setup1, unit: "µs", callP50)
        report.record("W3.call1.p99", "call p99, 1 caller", setup: setup1, unit: "µs", percentile(latencies, 0.99))

        let echo = try await echoRoundTrips(singleCalls)
        let echoP50 = percentile(echo, 0.5)
        let echoSetup = "bare NIO TCP echo on loopback, 4 B, 1 client, same process and run"
        report.record("W3.echo.p50", "echo round trip p50", setup: echoSetup, unit: "µs", echoP50)
        report.record("W3.echo.p99", "echo round trip p99", setup: echoSetup, unit: "µs", percentile(echo, 0.99))
        report.record("W3.call.echo.ratio", "call p50 / echo p50", setup: "same run", unit: "x", callP50 / echoP50, goal: .atMost(2), goalText: "≤ 2×")

        let manyCalls = max(64_000, 4 * n)
        let setup64 = "\(base), from node 1 to random names (\(Int(remoteShare * 100))% remote), payload 4 B, 64 callers"
        let failed = Ticket()
        let cpu64 = processCPU()
        let wall64 = try await concurrently(manyCalls, inFlight: 64) { index in
            let name = parallel[(index &* 7919) % n]
            do { _ = try await node.call(name, ping) } catch { _ = failed.take() }
        }
        let failedCalls = failed.value.load(ordering: .relaxed)
        report.record("W3.call64.rate", "calls/s answered, 64 concurrent callers", setup: setup64, unit: "/s", Double(manyCalls - failedCalls) / seconds(wall64), goal: .atLeast(150_000), goalText: "≥ 150k/s")
        report.recordCPU("W3.call64.rate", since: cpu64, operations: manyCalls, setup: setup64)
        report.record("W3.call64.failed", "calls failed (5 s timeout), 64 concurrent callers, of \(manyCalls)", setup: setup64, unit: "calls", Double(failedCalls))

        let casts = max(200_000, 20 * n)
        let setupCast = "\(base), from node 1 to random names (\(Int(remoteShare * 100))% remote), payload 4 B, 1 sender, \(casts) casts"
        let before = castsReceived.current
        let cpuCast = processCPU()
        let castStart = clock.now
        var sendErrors = 0
        for index in 0..<casts {
            do { try await node.send(parallel[(index &* 7919) % n], ping) } catch { sendErrors += 1 }
        }
        let sent = clock.now - castStart
        let received = await waitUntil(from: castStart, timeout: .seconds(60), interval: .microseconds(500)) {
            castsReceived.current - before >= casts - sendErrors
        }
        let got = castsReceived.current - before
        report.record("W3.cast.sent", "casts/s sent (API returns)", setup: setupCast, unit: "/s", Double(casts) / seconds(sent))
        report.record("W3.cast.rate", "casts/s received at the workers", setup: setupCast, unit: "/s",
            Double(got) / seconds(received ?? (clock.now - castStart)), goal: .atLeast(1_000_000), goalText: "≥ 1M/s")
        report.recordCPU("W3.cast.rate", since: cpuCast, operations: casts, setup: setupCast)
        report.record("W3.cast.lost", "casts lost (sent − received)", setup: setupCast, unit: "msgs", Double(casts - got))
        // Lost or stuck? The window above counts from the first send; keep counting for up to
        // 120 s more: what arrives late was queued, what never arrives was lost.
        if got < casts - sendErrors {
            let late = await waitUntil(from: clock.now, timeout: .seconds(120), interval: .milliseconds(10)) {
                castsReceived.current - before >= casts - sendErrors
            }
            let finally = castsReceived.current - before
            report.record("W3.cast.missing.end", "casts still not received 120 s after the window", setup: setupCast, unit: "msgs", Double(casts - sendErrors - finally))
            report.record("W3.cast.late.ms", "time after the window until the last cast arrived (n/a: some never did)", setup: setupCast, unit: "ms", late.map { nanoseconds($0) / 1e6 } ?? .nan)
        }
        var overflowed = 0
        for node in nodes { overflowed += await node.framesOverflowed }
        report.record("W3.cast.overflowed", "frames dropped at a full peer queue (all nodes, whole run so far)", setup: setupCast, unit: "frames", Double(overflowed))
    }

    // W4: groups, over every registered name (both W1 sets: 2N members, 20k for N = 10k, the
    // size the targets are stated for).
    if w.contains("W4") {
        let node = nodes[0]
        let everyone = sequential + parallel
        let size = everyone.count
        var pids: [ProcessID] = []
        pids.reserveCapacity(size)
        for name in everyone {
            guard let pid = node.whereis(name) else { throw BenchFailure(description: "W4: \(name) unknown") }
            pids.append(pid)
        }
        let members = pids
        let setup = "3 nodes in 1 process, loopback TCP, group \"all\" of \(size) members (2N), from node 1"
        let cpuJoin = processCPU()
        let joinStart = ContinuousClock.now
        let joinWall = try await concurrently(size, inFlight: 64) { index in try await node.join("all", members[index]) }
        let joined = await waitUntil(from: joinStart, timeout: .seconds(120), interval: .milliseconds(10)) {
            for node in nodes {
                if node.members("all").count < size { return false }
            }
            return true
        }
        guard let joined else { throw BenchFailure(description: "W4: group did not converge") }
        report.record("W4.join.rate", "joins/s, 64 in flight", setup: setup, unit: "/s", Double(size) / seconds(joinWall))
        report.recordCPU("W4.join.rate", since: cpuJoin, operations: size, setup: setup)
        report.record("W4.join.converge", "time until all 3 nodes list N members", setup: setup, unit: "ms", nanoseconds(joined) / 1e6)

        let before = castsReceived.current
        let cpuPublish = processCPU()
        let start = ContinuousClock.now
        try await node.publish("all", ping)
        let published = await waitUntil(from: start, timeout: .seconds(30), interval: .microseconds(100)) {
            castsReceived.current - before >= size
        }
        report.record("W4.publish", "publish: time until every member received it", setup: "\(setup), payload 4 B", unit: "ms",
            published.map { nanoseconds($0) / 1e6 } ?? .nan, goal: .atMost(20), goalText: "≤ 20 ms (stated for 20k members)")
        report.recordCPU("W4.publish", since: cpuPublish, operations: size, setup: "\(setup), per member")
        report.record("W4.publish.lost", "publish: members that did not receive it", setup: setup, unit: "msgs", Double(size - (castsReceived.current - before)))

        let cpuMulti = processCPU()
        let multiStart = ContinuousClock.now
        let result = await node.multiCall("all", ping, timeout: .seconds(30))
        let multiWall = ContinuousClock.now - multiStart
        report.record("W4.multicall", "multiCall(all, ping) time", setup: "\(setup), payload 4 B", unit: "ms", nanoseconds(multiWall) / 1e6,
            goal: .atMost(100), goalText: "≤ 100 ms (stated for 20k members)")
        report.recordCPU("W4.multicall", since: cpuMulti, operations: size, setup: "\(setup), per member")
        report.record("W4.multicall.replies", "multiCall replies", setup: setup, unit: "replies", Double(result.replies.count))
        report.record("W4.multicall.failures", "multiCall failures", setup: setup, unit: "failures", Double(result.failures))
    }

    // W6 (in-process): node 3 stops abruptly (`shutdown()`: connections closed, no drain, no
    // handoff) — the peers see what a `kill -9` gives them: the TCP connections drop.
    if w.contains("W6") {
        // The earlier workloads load the 2 cores heavily: start from a settled cluster (every
        // ring of 3, no handoff in flight, every name on its owner as node 1 sees it).
        let everyName = sequential + parallel
        let settleStart = ContinuousClock.now
        let settled = await waitUntil(from: settleStart, timeout: .seconds(60), interval: .milliseconds(20)) {
            for node in nodes {
                guard let dump = try? await node.dump(), dump.ringNodes.count == 3, dump.handoffs.isEmpty else { return false }
            }
            return everyName.allSatisfy { name in nodes[0].whereis(name)?.node.name == nodes[0].owner(of: name) }
        }
        report.record("W6.settle", "wait for a settled cluster before W6 (rings of 3, names on their owners)", setup: base, unit: "ms",
            settled.map { nanoseconds($0) / 1e6 } ?? .nan)
        let dead = nodes[2]
        let deadID = dead.id
        let all = sequential + parallel
        let held = await nodes[0].names(all, on: deadID)
        let setup = "3 nodes in 1 process, loopback TCP, 2N=\(2 * n) registered, node 3 stopped abruptly (in-process, not kill -9), \(held.count) names on it"
        // Node 3's own `shutdown()` (stopping its processes, then closing its connections) runs
        // in this process too; the survivors' clock starts when it returns, i.e. when its
        // connections are closed — what a `kill -9` gives the peers at once.
        let shutdownStart = ContinuousClock.now
        await dead.shutdown()
        let start = ContinuousClock.now
        report.record("W6.shutdown", "node 3 shutdown() duration (in-process artefact, not part of W6)", setup: setup, unit: "ms", nanoseconds(start - shutdownStart) / 1e6)
        let survivors = [nodes[0], nodes[1]]
        let detected = try await waitUntil(from: start, timeout: .seconds(60), interval: .milliseconds(2)) {
            for node in survivors {
                if try await node.dump().ringNodes.count != 2 { return false }
            }
            return true
        }
        var cursors = [0, 0]
        let recovered = await waitUntil(from: start, timeout: .seconds(120), interval: .milliseconds(2)) {
            for (index, node) in survivors.enumerated() {
                cursors[index] = await node.movedPrefix(held, awayFrom: deadID, from: cursors[index])
                if cursors[index] < held.count { return false }
            }
            return true
        }
        let detectedMs = detected.map { nanoseconds($0) / 1e6 } ?? .nan
        report.record("W6.detect", "failure detection (both survivors' rings drop node 3), from its connections closing", setup: setup, unit: "ms", detectedMs)
        report.record("W6.recover", "time until every name it held resolves to a survivor on both survivors, from its connections closing", setup: setup, unit: "ms",
            recovered.map { nanoseconds($0) / 1e6 } ?? .nan, goal: .atMost(detectedMs + 500), goalText: "≤ detection + 500 ms")
    }
}

