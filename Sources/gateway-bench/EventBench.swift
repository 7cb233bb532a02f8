import AsyncHTTPClient
import DeviceSimulator
import Foundation
import Gateway
import GatewayHTTP
import GatewayStoreEngines
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

// E1 and E2: the event stream under M1's flood. E1: one SSE consumer of all
// telemetry on one node while the flood comes in through every node: events/s delivered, the
// ratio to the messages routed in the same run, CPU per event, and publish-to-SSE-line latency at
// 50 % of the limit. E2: a webhook sink to a local receiver: events/s delivered under the flood,
// and the catch-up rate after the receiver refused everything for `--outage` seconds.

/// Counts the events of a `GET /v1/events` stream; with `timing`, also the latency from each
/// telemetry's `ts` (ms, set by the simulator at publish) to the moment its line arrives.
final class SSECounter: Sendable {
    let events = Atomic<Int>(0)
    let timing = Atomic<Bool>(false)
    private let latencies = Mutex<[Double]>([])
    private let client = HTTPClient(eventLoopGroupProvider: .singleton)
    private let task = Mutex<Task<Void, Never>?>(nil)

    func start(port: Int, path: String) {
        let client = self.client
        let handle = Task {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = .GET
            guard let response = try? await client.execute(request, timeout: .hours(1)) else { return }
            // The scanner's state across chunks: the bytes of the line being read.
            var line: [UInt8] = []
            do {
                for try await chunk in response.body {
                    for byte in chunk.readableBytesView {
                        if byte != UInt8(ascii: "\n") {
                            line.append(byte)
                            continue
                        }
                        if line.count > 6, line[0] == UInt8(ascii: "d"), line[4] == UInt8(ascii: ":") {
                            self.events.add(1, ordering: .relaxed)
                            if self.timing.load(ordering: .relaxed), let sent = Self.ts(line) {
                                let now = Date().timeIntervalSince1970 * 1000
                                self.latencies.withLock { $0.append(now - Double(sent)) }
                            }
                        }
                        line.removeAll(keepingCapacity: true)
                    }
                }
            } catch {}
        }
        task.withLock { $0 = handle }
    }

    /// The first `"ts":` number after the event's `"data":`.
    static func ts(_ line: [UInt8]) -> Int64? {
        let data = Array(#""data":"#.utf8)
        let key = Array(#""ts":"#.utf8)
        guard let dataAt = find(data, in: line, from: 0), let keyAt = find(key, in: line, from: dataAt) else { return nil }
        var value: Int64 = 0
        var index = keyAt + key.count
        var digits = 0
        while index < line.count, line[index] >= UInt8(ascii: "0"), line[index] <= UInt8(ascii: "9") {
            value = value * 10 + Int64(line[index] - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        return digits > 0 ? value : nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] && Array(haystack[index..<(index + needle.count)]) == needle { return index }
            index += 1
        }
        return nil
    }

    func takeLatencies() -> [Double] {
        latencies.withLock { taken in
            defer { taken = [] }
            return taken.sorted()
        }
    }

    func stop() async {
        task.withLock { $0 }?.cancel()
        try? await client.shutdown()
    }
}

/// A webhook receiver: counts the events of every accepted POST; refuses (503) while `refusing`.
final class CountingReceiver: Sendable {
    let events = Atomic<Int>(0)
    let posts = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let refusing = Atomic<Bool>(false)
    /// The first and the last accepted POST (seconds since the epoch), and events then.
    private let accepted = Mutex<(first: Double?, last: Double?)>((nil, nil))
    private let app = Mutex<Task<Void, any Error>?>(nil)

    func start() async throws -> Int {
        let router = Router()
        router.post("/hook") { request, _ -> Response in
            if self.refusing.load(ordering: .relaxed) {
                self.refused.add(1, ordering: .relaxed)
                return Response(status: .serviceUnavailable)
            }
            let body = try await request.body.collect(upTo: 64 * 1024 * 1024)
            self.events.add(Self.arrayCount(body.readableBytesView), ordering: .relaxed)
            self.posts.add(1, ordering: .relaxed)
            let now = Date().timeIntervalSince1970
            self.accepted.withLock { state in
                if state.first == nil { state.first = now }
                state.last = now
            }
            return Response(status: .noContent)
        }
        let ports = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "bench.receiver")
        logger.logLevel = .critical
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { ports.continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
        app.withLock { $0 = Task { try await application.runService() } }
        var iterator = ports.stream.makeAsyncIterator()
        return await iterator.next() ?? 0
    }

    /// Forgets the first and last accepted POST.
    func resetWindow() { accepted.withLock { $0 = (nil, nil) } }

    /// Seconds between the first and the last accepted POST since ``resetWindow()``.
    var window: (first: Double?, last: Double?) { accepted.withLock { $0 } }

    /// The number of elements of a JSON array (depth-1 commas + 1), strings skipped.
    static func arrayCount(_ bytes: ByteBufferView) -> Int {
        var depth = 0
        var count = 0
        var inString = false
        var escaped = false
        var sawElement = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                if depth == 1 && !sawElement { sawElement = true }
                depth += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            case UInt8(ascii: ","): if depth == 1 { count += 1 }
            default: break
            }
        }
        return sawElement ? count + 1 : 0
    }

    func stop() {
        app.withLock { $0 }?.cancel()
    }
}

final class EventBench {
    let options: Options
    let report: Report
    let brokerPort: Int
    let base: String
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-bench-events-\(getpid())").path

    init(options: Options, report: Report, brokerPort: Int, base: String) {
        self.options = options
        self.report = report
        self.brokerPort = brokerPort
        self.base = base
    }

    func fleet(_ count: Int, _ rate: Double, _ duration: Double, during: () async -> Void) async throws -> FleetStats {
        try await runFleet(count, rate: rate, seconds: duration, during: during)
    }

    /// A cluster whose nodes keep their events in `events.sqlite` in a directory of their own,
    /// with webhook POSTs over async-http-client.
    func cluster(_ name: String) async throws -> GatewayCluster {
        let root = self.root
        return try await GatewayCluster(count: options.nodes, brokerPort: brokerPort, qos: options.qos) { index, settings in
            settings.events.store = SQLiteEventStore(directory: "\(root)/\(name)/gw-\(index)", logger: quiet("bench.events"))
            settings.events.webhookTransport = HTTPWebhookTransport()
        }
    }

    /// The HTTP API of `member` on a free port (until `stop`).
    func api(_ member: Member) async throws -> (port: Int, stop: () -> Void) {
        var settings = GatewayHTTPSettings(host: "127.0.0.1", port: 0)
        settings.logger = quiet("bench.http")
        settings.logger.logLevel = .critical
        let server = GatewayHTTPServer(gateway: member.gateway, settings: settings)
        let task = Task { try await server.run() }
        return (try await server.listeningPort(), { task.cancel() })
    }

    /// The plain subscriber's rate (M1.limit of this run if M1 ran, else measured now).
    func limit() async throws -> Double {
        if let known = report.figures.first(where: { $0.id == "M1.limit" })?.value { return known }
        let brokerURL = try BrokerURL.parse("mqtt://127.0.0.1:\(brokerPort)")
        let plain = try PlainSubscriber(broker: brokerURL, filters: ["devices/+/telemetry"], qos: options.qos, receiveMaximum: 65_535)
        try await Task.sleep(for: .milliseconds(300))
        var start = 0
        var window = ContinuousClock.now
        _ = try await fleet(options.devices, options.rate, options.seconds) {
            try? await Task.sleep(for: .seconds(1))
            start = plain.messages
            window = ContinuousClock.now
        }
        let rate = Double(plain.messages - start) / seconds(ContinuousClock.now - window)
        plain.close()
        report.record("E.limit", "plain subscriber msgs/s (the limit of this run)", rate, "msg/s", setup: "\(base); \(options.devices) devices at \(Int(options.rate)) msg/s each")
        return rate
    }

    func e1() async throws {
        let limit = try await limit()
        let setup = "\(base); \(options.devices) simulated devices, telemetry 100 B QoS \(options.qos) at \(Int(options.rate)) msg/s each (flood); events.sqlite per node; one SSE consumer of types=telemetry on gw-2 (HTTP, in this process)"
        // (a) Under the flood.
        let cluster = try await cluster("e1")
        let consumerNode = cluster.members[min(1, cluster.members.count - 1)]
        let http = try await api(consumerNode)
        let consumer = SSECounter()
        consumer.start(port: http.port, path: "/v1/events?types=telemetry")
        try await Task.sleep(for: .milliseconds(500))
        var routedStart = 0
        var eventsStart = 0
        var cpuStart = 0.0
        var windowStart = ContinuousClock.now
        _ = try await fleet(options.devices, options.rate, options.seconds) {
            try? await Task.sleep(for: .seconds(1))
            routedStart = await cluster.counters().routed
            eventsStart = consumer.events.load(ordering: .relaxed)
            cpuStart = gatewayThreadsCPU()
            windowStart = ContinuousClock.now
        }
        let window = seconds(ContinuousClock.now - windowStart)
        let routed = Double(await cluster.counters().routed - routedStart) / window
        let delivered = Double(consumer.events.load(ordering: .relaxed) - eventsStart) / window
        let cpu = gatewayThreadsCPU() - cpuStart
        // How long the stream takes to catch up with what was routed (the consumer's lag).
        let released = consumerNode.gateway.events.stats
        let caughtUp = ContinuousClock.now
        while consumer.events.load(ordering: .relaxed) < released.released - 50_000, ContinuousClock.now - caughtUp < .seconds(30) {
            try await Task.sleep(for: .milliseconds(50))
        }
        report.record("E1.routed", "messages/s routed to device processes (with the stream on)", routed, "msg/s", setup: setup)
        report.record("E1.delivered", "telemetry events/s delivered to the SSE consumer", delivered, "events/s", setup: setup)
        report.record("E1.ratio", "SSE events delivered / messages routed, same run", delivered / max(1, routed), "x", setup: setup, target: "≥ 0.9", met: delivered / max(1, routed) >= 0.9)
        report.record("E1.ratio.limit", "SSE events delivered / the plain subscriber's limit", delivered / max(1, limit), "x", setup: setup)
        report.record("E1.cpu.per.event", "gateway CPU (every node, HTTP and consumer included, simulator excluded) per event delivered", cpu / max(1, delivered * window) * 1e6, "µs", setup: setup)
        let stats = consumerNode.gateway.events.stats
        report.record("E1.late", "events dropped as late on the consumer's node", Double(stats.late), "events", setup: setup, target: "0", met: stats.late == 0)
        report.record("E1.gaps", "seq gaps in the consumer node's log", Double(stats.gaps), "seqs", setup: setup)
        await consumer.stop()
        http.stop()
        await cluster.shutdown()

        // (b) Latency at 50 % of the limit, on a fresh cluster.
        let half = try await self.cluster("e1-half")
        let halfNode = half.members[min(1, half.members.count - 1)]
        let halfAPI = try await api(halfNode)
        let timed = SSECounter()
        timed.start(port: halfAPI.port, path: "/v1/events?types=telemetry")
        try await Task.sleep(for: .milliseconds(500))
        let rate = limit / 2 / Double(options.devices)
        var halfStart = 0
        var halfWindow = ContinuousClock.now
        _ = try await fleet(options.devices, rate, options.seconds) {
            try? await Task.sleep(for: .seconds(1))
            _ = timed.takeLatencies()
            timed.timing.store(true, ordering: .relaxed)
            halfStart = timed.events.load(ordering: .relaxed)
            halfWindow = ContinuousClock.now
        }
        timed.timing.store(false, ordering: .relaxed)
        let halfDelivered = Double(timed.events.load(ordering: .relaxed) - halfStart) / seconds(ContinuousClock.now - halfWindow)
        let samples = timed.takeLatencies()
        let halfSetup = "\(setup); latency run offered \(String(format: "%.1f", rate)) msg/s per device (50 % of the limit)"
        report.record("E1.half.delivered", "events/s delivered at 50 % of the limit", halfDelivered, "events/s", setup: halfSetup)
        report.record("E1.half.p50", "publish-to-SSE-line latency p50 at 50 % of the limit", percentile(samples, 0.5), "ms", setup: halfSetup)
        report.record("E1.half.p99", "publish-to-SSE-line latency p99 at 50 % of the limit", percentile(samples, 0.99), "ms", setup: halfSetup, target: "≤ 50 ms", met: percentile(samples, 0.99) <= 50)
        report.record("E1.half.samples", "events timed", Double(samples.count), "events", setup: halfSetup)
        await timed.stop()
        halfAPI.stop()
        await half.shutdown()
        try? FileManager.default.removeItem(atPath: root)
    }

    func e2() async throws {
        let limit = try await limit()
        let setup = "\(base); \(options.devices) simulated devices, telemetry 100 B QoS \(options.qos); events.sqlite per node; one webhook sink (types telemetry, batches of 500) to a receiver in this process (Hummingbird, counting)"
        let receiver = CountingReceiver()
        let receiverPort = try await receiver.start()
        let cluster = try await cluster("e2")
        _ = try await cluster.members[0].gateway.createWebhook(url: "http://127.0.0.1:\(receiverPort)/hook", types: ["telemetry"], secret: "bench")
        try await Task.sleep(for: .milliseconds(500))
        // (a) Under the flood.
        var routedStart = 0
        var eventsStart = 0
        var postsStart = 0
        var cpuStart = 0.0
        var windowStart = ContinuousClock.now
        _ = try await fleet(options.devices, options.rate, options.seconds) {
            try? await Task.sleep(for: .seconds(1))
            routedStart = await cluster.counters().routed
            eventsStart = receiver.events.load(ordering: .relaxed)
            postsStart = receiver.posts.load(ordering: .relaxed)
            cpuStart = gatewayThreadsCPU()
            windowStart = ContinuousClock.now
        }
        let window = seconds(ContinuousClock.now - windowStart)
        let routed = Double(await cluster.counters().routed - routedStart) / window
        let deliveredCount = receiver.events.load(ordering: .relaxed) - eventsStart
        let delivered = Double(deliveredCount) / window
        let cpu = gatewayThreadsCPU() - cpuStart
        let posts = receiver.posts.load(ordering: .relaxed) - postsStart
        report.record("E2.routed", "messages/s routed (with the sink on)", routed, "msg/s", setup: setup)
        report.record("E2.delivered", "telemetry events/s delivered to the receiver under the flood", delivered, "events/s", setup: setup, target: "≥ 50,000", met: delivered >= 50_000)
        report.record("E2.ratio", "events delivered / messages routed, same run", delivered / max(1, routed), "x", setup: setup)
        report.record("E2.batch", "events per POST", Double(deliveredCount) / Double(max(1, posts)), "events", setup: setup)
        report.record("E2.cpu.per.event", "gateway CPU (every node, receiver included, simulator excluded) per event delivered", cpu / Double(max(1, deliveredCount)) * 1e6, "µs", setup: setup)
        // Everything sent so far delivered, then (b): the receiver refuses for `outage` s while
        // devices send at 25 % of the limit; then it accepts, the devices stop, and the sink
        // catches up.
        let settle = ContinuousClock.now
        var last = -1
        while receiver.events.load(ordering: .relaxed) != last, ContinuousClock.now - settle < .seconds(60) {
            last = receiver.events.load(ordering: .relaxed)
            try await Task.sleep(for: .seconds(1))
        }
        receiver.refusing.store(true, ordering: .relaxed)
        let before = receiver.events.load(ordering: .relaxed)
        let outageRate = limit / 4 / Double(options.devices)
        let outageStats = try await fleet(options.devices, outageRate, options.outage) {}
        let backlogStart = ContinuousClock.now
        let accepting = Date().timeIntervalSince1970
        receiver.resetWindow()
        receiver.refusing.store(false, ordering: .relaxed)
        var caughtUp: Double?
        var delivering = receiver.events.load(ordering: .relaxed)
        var still = ContinuousClock.now
        while ContinuousClock.now - backlogStart < .seconds(300) {
            try await Task.sleep(for: .milliseconds(100))
            let now = receiver.events.load(ordering: .relaxed)
            if now != delivering {
                delivering = now
                still = ContinuousClock.now
                caughtUp = seconds(still - backlogStart)
            } else if ContinuousClock.now - still > .seconds(3) && now > before {
                break
            }
        }
        let backlog = receiver.events.load(ordering: .relaxed) - before
        let outageSetup = "\(setup); receiver refusing (503) for \(Int(options.outage)) s while the devices send \(String(format: "%.1f", outageRate)) msg/s each (25 % of the limit), then accepting; devices stopped"
        report.record("E2.outage.backlog", "events delivered after the outage (sent during it)", Double(backlog), "events", setup: outageSetup)
        report.record("E2.outage.sent", "telemetry messages the devices sent during the outage", Double(outageStats.telemetrySent), "msgs", setup: outageSetup)
        report.record("E2.outage.refused", "POST attempts refused during the outage (backoff)", Double(receiver.refused.load(ordering: .relaxed)), "posts", setup: outageSetup)
        let (first, lastPost) = receiver.window
        let deliveringSeconds = (lastPost ?? 0) - (first ?? 0)
        report.record("E2.catchup.wait", "catch-up: seconds from accepting again to the first POST (the sink's backoff, ≤ 30 s)", (first ?? .nan) - accepting, "s", setup: outageSetup)
        report.record("E2.catchup.rate", "catch-up: backlog events/s from the first to the last POST of the catch-up", Double(backlog) / max(0.001, deliveringSeconds), "events/s", setup: outageSetup, target: "≥ 50,000", met: Double(backlog) / max(0.001, deliveringSeconds) >= 50_000)
        report.record("E2.catchup.seconds", "catch-up: seconds from accepting again to the last event of the backlog", caughtUp ?? .nan, "s", setup: outageSetup)
        let status = try await cluster.members[1].gateway.webhooks().first
        report.record("E2.dropped", "events the sink dropped past retention", Double(status?.dropped ?? -1), "events", setup: outageSetup, target: "0", met: status?.dropped == 0)
        receiver.stop()
        await cluster.shutdown()
        try? FileManager.default.removeItem(atPath: root)
    }
}
