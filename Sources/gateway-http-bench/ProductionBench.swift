import DeviceSimulator
import Foundation
import Gateway
import GatewayHTTP
import HTTPTypes
import HummingbirdTesting
import Logging
import MQTT
import NIOCore
import ServiceLifecycle
import SwarmCore
import SwarmJSON
import SwarmNode
import SwarmTransport
import Synchronization

/// Q1 and Q2 of docs/benchmarks.md, release builds only:
///
/// - **Q2 provisioning**: `--provision` (10,000) `PUT /v1/devices/{id}` with a password and tags,
///   64 keep-alive connections spread over the 3 nodes' APIs; each answer means the login is in
///   the broker's password file and applied (``EmbeddedBrokerLogins`` waits for the reload), so
///   devices/s is counted until the last answer; then a random sample of `--verify` (1,000) of
///   them connects with its password through the device simulator (every one must), and one wrong
///   password is refused.
/// - **Q1 fleet search**: `--twins` (100,000) more devices provisioned with tags through the facade
///   (setup, 64 in flight), each given a reported state through the broker's ingress; then
///   `GET /v1/devices?where=…` on node 1, 7 times per expression, the median time and the matches.
///
/// The broker runs the strict ACL with managed logins (as the embedded broker of `swarm-gateway`
/// does). CPU time per operation: user + system time of this process (the 3 nodes, their HTTP
/// servers and the HTTP clients) and of the Mosquitto child, divided by the operations.
final class ProductionBench: Sendable {
    struct Figure: Codable {
        var id: String
        var label: String
        var value: Double
        var unit: String
        var setup: String
        var target: String?
        var met: Bool?
    }

    let options: Options
    let figures = Mutex<[Figure]>([])

    init(options: Options) {
        self.options = options
    }

    func record(_ id: String, _ label: String, _ value: Double, _ unit: String, setup: String, target: String? = nil, met: Bool? = nil) {
        figures.withLock { $0.append(Figure(id: id, label: label, value: value, unit: unit, setup: setup, target: target, met: met)) }
        let mark = met.map { $0 ? " ✔" : " ✘" } ?? ""
        say(String(format: "%-18@ %@: %.3f %@%@%@", id as NSString, label, value, unit, target.map { "  (target \($0))" } ?? "", mark))
    }

    /// User + system CPU seconds of a process (`/proc/PID/stat`).
    static func cpuSeconds(_ pid: Int32? = nil) -> Double {
        let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return .nan }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return .nan }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (whole, atto) = duration.components
        return Double(whole) + Double(atto) / 1e18
    }

    func run() async throws {
        let gatewayPassword = "bench-gateway-\(UInt64.random(in: 0...UInt64.max))"
        var brokerSettings = EmbeddedBroker.Settings()
        brokerSettings.maxQueuedMessages = 200_000
        brokerSettings.allowAnonymous = false
        brokerSettings.aclRules = DeviceACL.rules()
        brokerSettings.users = [.init(DeviceACL.defaultGatewayUser, password: gatewayPassword)]
        brokerSettings.managedLogins = true
        let broker = try EmbeddedBroker(settings: brokerSettings, logger: quiet("bench.broker"))
        try await broker.start()
        let logins = EmbeddedBrokerLogins(broker: broker)
        func client(_ id: String) -> MQTTClient.Settings {
            var settings = clientSettings(broker, id)
            settings.username = DeviceACL.defaultGatewayUser
            settings.password = gatewayPassword
            return settings
        }

        var nodes: [SwarmNode] = []
        var gateways: [DeviceGateway] = []
        var seed: String?
        for index in 1...options.nodes {
            var settings = SwarmNodeSettings(name: "gw-\(index)", secret: ClusterSecret("gateway-http-bench-secret"))
            settings.seeds = seed.map { [$0] } ?? []
            settings.logger = quiet("bench.node")
            settings.tracker.failureTimeout = .seconds(10)
            let node = SwarmNode(settings: settings)
            try await node.start()
            if seed == nil { seed = await node.address }
            var gatewaySettings = GatewaySettings(brokers: [GatewaySettings.Broker(client: client("bench-gw-\(index)"))])
            gatewaySettings.logger = quiet("bench.gateway")
            gatewaySettings.logins = logins
            gatewaySettings.queryTimeout = .seconds(30)
            nodes.append(node)
            gateways.append(try DeviceGateway(node: node, settings: gatewaySettings))
        }
        let servers = gateways.map { gateway -> GatewayHTTPServer in
            var settings = GatewayHTTPSettings(host: "127.0.0.1", port: 0)
            settings.logger = quiet("bench.http")
            return GatewayHTTPServer(gateway: gateway, settings: settings)
        }
        let allNodes = nodes
        let allGateways = gateways
        let base = "Mosquitto 2 (strict ACL, managed password file) on 127.0.0.1, \(options.nodes) gateway nodes in one process with their HTTP APIs, 2 cores"

        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in allNodes { group.addTask { try await node.run() } }
            for gateway in allGateways { group.addTask { try await gateway.run() } }
            let services = ServiceGroup(services: servers, logger: quiet("bench.services"))
            group.addTask { try await services.run() }
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                var ready = true
                for node in allNodes where (try? await node.dump())?.ringNodes.count != allNodes.count { ready = false }
                for gateway in allGateways where !(await gateway.isReady()) { ready = false }
                if ready { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            var ports: [Int] = []
            for server in servers { ports.append(try await server.listeningPort()) }

            if options.workloads.contains("Q2") {
                try await provisioning(ports: ports, broker: broker, setup: base)
            }
            if options.workloads.contains("Q1") {
                try await search(gateways: allGateways, ports: ports, broker: broker, publisher: client, setup: base)
            }

            await services.triggerGracefulShutdown()
            for gateway in allGateways { await gateway.shutdown() }
            for node in allNodes { await node.shutdown() }
            try await group.waitForAll()
        }
        await broker.stop()
        if let path = options.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(figures.withLock { $0 }).write(to: URL(fileURLWithPath: path))
            say("wrote \(path)")
        }
    }

    /// `count` requests from `connections` keep-alive clients spread over `ports`; `request(i)`
    /// makes the i-th. Returns the statuses.
    static func load(ports: [Int], connections: Int, count: Int, _ request: @escaping @Sendable (Int) -> TestClient.Request) async throws -> [Int] {
        let next = Ticket()
        return try await withThrowingTaskGroup(of: [Int].self) { group in
            for connection in 0..<connections {
                group.addTask {
                    let port = ports[connection % ports.count]
                    return try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(60))) { client in
                        var statuses: [Int] = []
                        while true {
                            let index = next.take()
                            guard index < count else { break }
                            let response = try await client.execute(request(index))
                            statuses.append(Int(response.status.code))
                            if response.status.code >= 300, statuses.filter({ $0 >= 300 }).count <= 2 {
                                say("status \(response.status.code): \(String(buffer: response.body ?? ByteBuffer()).prefix(300))")
                            }
                        }
                        return statuses
                    }
                }
            }
            var all: [Int] = []
            for try await statuses in group { all += statuses }
            return all
        }
    }

    // MARK: Q2

    func provisioning(ports: [Int], broker: EmbeddedBroker, setup base: String) async throws {
        let count = options.provision
        let ids = (0..<count).map { String(format: "pv-%06d", $0) }
        let setup = "\(base); \(count) PUT /v1/devices/{id} with a password and tags, 64 keep-alive connections over the \(ports.count) APIs"
        let cpu0 = Self.cpuSeconds()
        let brokerCPU0 = broker.processID.map { Self.cpuSeconds($0) } ?? .nan
        let start = ContinuousClock.now
        let statuses = try await Self.load(ports: ports, connections: 64, count: count) { index in
            let body: JSONValue = ["password": .string("pw-\(ids[index])"), "tags": ["batch": "q2", "n": .int(Int64(index))]]
            return TestClient.Request("/v1/devices/\(ids[index])", method: .put, headers: [.contentType: "application/json"], body: ByteBuffer(bytes: body.serialized()))
        }
        let took = Self.seconds(ContinuousClock.now - start)
        let cpu = Self.cpuSeconds() - cpu0
        let brokerCPU = (broker.processID.map { Self.cpuSeconds($0) } ?? .nan) - brokerCPU0
        let created = statuses.filter { $0 == 201 }.count
        let histogram = Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count).sorted { $0.key < $1.key }
        say("Q2 statuses: \(histogram.map { "\($0.key): \($0.value)" }.joined(separator: ", "))")
        let rate = Double(count) / took
        record("Q2.rate", "provisioning PUTs with passwords answered (each login applied on the broker): devices/s", rate, "devices/s", setup: setup, target: "≥ 2,000/s", met: rate >= 2000 && created == count)
        record("Q2.seconds", "time for all of them", took, "s", setup: setup)
        record("Q2.created", "answered 201", Double(created), "devices", setup: setup, target: "all \(count)", met: created == count)
        record("Q2.cpu", "CPU per provisioning, gateway process (3 nodes, HTTP servers and clients)", cpu / Double(count) * 1e6, "µs", setup: setup)
        record("Q2.cpu.broker", "CPU per provisioning, Mosquitto (password file reloads)", brokerCPU / Double(count) * 1e6, "µs", setup: setup)

        // Every answer means connectable: a random sample connects with its password now.
        let sample = Array(ids.shuffled().prefix(options.verify))
        let definition = try FleetDefinition.load(path: "devices/fleet-demo.json")
        let profile = try require(try definition.expand(count: 1).first, "a device profile").profile
        var fleet = FleetRunner.Settings(broker: try BrokerURL.parse("mqtt://{id}:pw-{id}@127.0.0.1:\(broker.port)"))
        fleet.telemetryRate = 0
        let verifyStart = ContinuousClock.now
        let runner = try FleetRunner(devices: sample.map { DeviceSpec(id: $0, profile: profile) }, settings: fleet)
        try runner.start()
        _ = await runner.waitUntilConnected(timeout: .seconds(60))
        let connectTime = Self.seconds(ContinuousClock.now - verifyStart)
        let stats = await runner.stop()
        record("Q2.verify", "of a random sample, connected with their passwords right after", Double(stats.everConnected), "devices", setup: "\(setup); sample of \(sample.count)", target: "all \(sample.count)", met: stats.everConnected == sample.count)
        record("Q2.verify.seconds", "seconds for the sample's connects", connectTime, "s", setup: setup)
        var wrong = broker.clientSettings()
        wrong.clientID = "q2-wrong"
        wrong.username = ids[0]
        wrong.password = "not-the-password"
        wrong.connectTimeout = .seconds(5)
        let refused = try MQTTClient(settings: wrong, logger: quiet("bench.wrong"))
        let wrongRefused = (try? await refused.connect()) == nil
        await refused.close()
        record("Q2.wrongPassword", "a wrong password refused (1 = yes)", wrongRefused ? 1 : 0, "", setup: setup, target: "1", met: wrongRefused)
    }

    // MARK: Q1

    func search(
        gateways: [DeviceGateway], ports: [Int], broker: EmbeddedBroker, publisher: (String) -> MQTTClient.Settings, setup base: String
    ) async throws {
        let count = options.twins
        let ids = (0..<count).map { String(format: "tw-%06d", $0) }
        let sites = 50
        // Setup: provisioned with tags through the facades (64 in flight), then a reported state
        // each through the broker (8 publishers, QoS 1), as devices would.
        let setupStart = ContinuousClock.now
        let next = Ticket()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<64 {
                let gateway = gateways[worker % gateways.count]
                group.addTask {
                    while true {
                        let index = next.take()
                        guard index < count else { return }
                        let tags: JSONValue = ["site": .string("site-\(index % sites)"), "floor": .int(Int64(index % 10)), "fleet": "q1"]
                        _ = try await gateway.provision(ids[index], tags: tags)
                    }
                }
            }
            try await group.waitForAll()
        }
        let provisioned = Self.seconds(ContinuousClock.now - setupStart)
        let publishers = try (0..<8).map { try MQTTClient(settings: publisher("bench-reported-\($0)"), logger: quiet("bench.reported")) }
        for client in publishers { try await client.connect() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, client) in publishers.enumerated() {
                group.addTask {
                    for number in stride(from: index, to: count, by: publishers.count) {
                        let reported: JSONValue = ["battery": ["level": .int(Int64((number / sites) % 100))], "firmware": .string("1.\(number % 5)")]
                        _ = try await client.publish(MQTTMessage(topic: "devices/\(ids[number])/state/reported", payload: reported.serialized(), qos: .atLeastOnce))
                    }
                }
            }
            try await group.waitForAll()
        }
        for client in publishers { await client.close() }
        // Wait until every node's index shows every reported state.
        let waitDeadline = ContinuousClock.now + .seconds(120)
        var seen = 0
        while ContinuousClock.now < waitDeadline {
            seen = (try? await gateways[0].search(where: "exists(reported.battery) and tags.fleet = 'q1'", limit: 1))?.matched ?? 0
            if seen >= count { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let ready = Self.seconds(ContinuousClock.now - setupStart)
        var perNode: [String] = []
        for gateway in gateways { perNode.append("\(gateway.node.id.name) \(await gateway.stats().localDevices)") }
        let setup = "\(base); \(count) twins with tags and reported state (\(perNode.joined(separator: ", ")) device processes), GET on node 1's API, 7 runs each, the median"
        record("Q1.setup.provisioned", "setup: seconds to provision the twins with tags (facade, 64 in flight)", provisioned, "s", setup: setup)
        record("Q1.setup.ready", "setup: seconds until every reported state is searchable", ready, "s", setup: setup)
        record("Q1.twins", "twins with reported state seen by the search", Double(seen), "twins", setup: setup, target: "\(count)", met: seen >= count)

        let expressions: [(String, String, Int)] = [
            ("Q1.selective", "tags.site = 'site-7' and reported.battery.level < 20", 100),
            ("Q1.broad", "reported.battery.level >= 50 and exists(tags.floor)", 1000),
            ("Q1.groups", "'all' in groups and not (tags.floor = 3 or reported.firmware = '1.2')", 100),
        ]
        let port = ports[0]
        for (id, expression, limit) in expressions {
            var allowed = CharacterSet.alphanumerics
            allowed.insert(charactersIn: "-._~")
            let uri = "/v1/devices?limit=\(limit)&where=\(expression.addingPercentEncoding(withAllowedCharacters: allowed)!)"
            let cpu0 = Self.cpuSeconds()
            let (runs, matched, page) = try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(60))) { client in
                var times: [Double] = []
                var matched = -1
                var page = 0
                for _ in 0..<7 {
                    let t0 = ContinuousClock.now
                    let response = try await client.execute(TestClient.Request(uri, method: .get))
                    times.append(Self.seconds(ContinuousClock.now - t0) * 1000)
                    let json = try JSONValue.parse(Array(response.body.map { Array($0.readableBytesView) } ?? []))
                    matched = Int(json["matched"]?.intValue ?? -1)
                    page = json["devices"]?.arrayValue?.count ?? -1
                }
                return (times, matched, page)
            }
            let cpu = (Self.cpuSeconds() - cpu0) / 7
            var times = runs
            times.sort()
            let median = times[times.count / 2]
            let querySetup = "\(setup); where=\(expression); limit \(limit)"
            record("\(id).ms", "GET /v1/devices?where= over \(count) twins: median time", median, "ms", setup: querySetup, target: "≤ 200 ms", met: median <= 200)
            record("\(id).max", "slowest of the 7", times.last ?? .nan, "ms", setup: querySetup)
            record("\(id).matched", "matching devices (page of \(page))", Double(matched), "devices", setup: querySetup)
            record("\(id).cpu", "CPU per search (all 3 nodes, this process)", cpu * 1000, "ms", setup: querySetup)
        }
        // Walking every page of the selective query.
        let walkStart = ContinuousClock.now
        var walked = 0
        var cursor: String?
        var pages = 0
        repeat {
            let result = try await gateways[1].search(where: expressions[0].1, limit: 100, cursor: cursor)
            walked += result.devices.count
            cursor = result.next
            pages += 1
        } while cursor != nil
        record("Q1.walk.ms", "all pages of the selective query (limit 100) from node 2's facade", Self.seconds(ContinuousClock.now - walkStart) * 1000, "ms", setup: "\(setup); \(pages) pages, \(walked) ids")
    }
}

/// `#require` for a bench: throws when nil.
func require<T>(_ value: T?, _ what: String) throws -> T {
    guard let value else { throw GatewayError.cluster("missing \(what)") }
    return value
}

/// Hands out 0, 1, 2, … to concurrent workers.
final class Ticket: Sendable {
    private let value = Atomic<Int>(0)
    func take() -> Int { value.add(1, ordering: .relaxed).oldValue }
}
