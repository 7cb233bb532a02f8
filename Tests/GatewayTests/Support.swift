import Foundation
import Logging
import SwarmCore
import SwarmJSON
import SwarmNode
import SwarmTransport
import Synchronization
import Testing

@testable import Gateway
@testable import MQTT

let testSecret = ClusterSecret("gateway-tests-cluster-secret")

func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["GATEWAY_TEST_LOG"] == nil ? .critical : .debug
    return logger
}

/// A thread-safe list that test code polls.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    func append(_ element: Element) { items.withLock { $0.append(element) } }
    var all: [Element] { items.withLock { $0 } }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

/// Starts a Mosquitto on a free loopback port for `body`, stops it afterwards whatever happens.
func withBroker<T>(_ body: (EmbeddedBroker) async throws -> T) async throws -> T {
    var settings = EmbeddedBroker.Settings()
    settings.startTimeout = .seconds(10)
    settings.stopTimeout = .seconds(3)
    let broker = try EmbeddedBroker(settings: settings, logger: quietLogger("test.broker"))
    try await broker.start()
    do {
        let result = try await body(broker)
        await broker.stop()
        return result
    } catch {
        await broker.stop()
        throw error
    }
}

func clientSettings(_ broker: EmbeddedBroker, _ id: String) -> MQTTClient.Settings {
    var settings = broker.clientSettings()
    settings.clientID = id + "-" + String(UInt32.random(in: .min ... .max), radix: 16)
    settings.connectTimeout = .seconds(5)
    settings.operationTimeout = .seconds(5)
    settings.keepAlive = .seconds(10)
    settings.reconnectDelay = .seconds(1)
    settings.maxReconnectDelay = .seconds(2)
    return settings
}

/// One node of a test cluster with its gateway.
struct Member: Sendable {
    let node: SwarmNode
    let gateway: DeviceGateway
    var name: String { node.id.name }
}

/// A process that never answers a call in time (a "missing" group member).
actor SilentProcess: SwarmProcess {
    func call(_ message: [UInt8]) async throws -> [UInt8] {
        try await Task.sleep(for: .seconds(3))
        return []
    }
}

/// Starts `count` in-process nodes on 127.0.0.1 (port 0, every node seeds the first), each with
/// its own gateway on `broker`; runs `body` once the ring has every node and every gateway is
/// subscribed; then shuts every gateway and node down, even on failure.
func withGatewayCluster(
    _ count: Int, broker: EmbeddedBroker, moreBrokers: [EmbeddedBroker] = [],
    configure: @escaping @Sendable (inout GatewaySettings) -> Void = { _ in },
    configureNode: @Sendable (_ index: Int, inout GatewaySettings) async throws -> Void = { _, _ in },
    _ body: @escaping @Sendable ([Member]) async throws -> Void
) async throws {
    func nodeSettings(_ name: String, seeds: [String]) -> SwarmNodeSettings {
        var settings = SwarmNodeSettings(name: name, secret: testSecret)
        settings.seeds = seeds
        settings.logger = quietLogger("test.\(name)")
        settings.drainTimeout = .seconds(10)
        // Shared CPU: a starved input loop must not look like a dead peer (a stopped node closes
        // its connections: detection is immediate anyway).
        settings.tracker.failureTimeout = .seconds(10)
        return settings
    }
    let silent: ProcessFactory = { _, _ in SilentProcess() }
    var members: [Member] = []
    var seed: String?
    for index in 1...count {
        let node = SwarmNode(settings: nodeSettings("gw-\(index)", seeds: seed.map { [$0] } ?? []), factories: ["silent": silent])
        try await node.start()
        if seed == nil { seed = await node.address }
        var settings = GatewaySettings(
            brokers: ([broker] + moreBrokers).map { GatewaySettings.Broker(client: clientSettings($0, "gw-\(index)")) })
        settings.logger = quietLogger("test.gateway.\(index)")
        settings.shareGroup = "test"
        configure(&settings)
        try await configureNode(index, &settings)
        members.append(Member(node: node, gateway: try DeviceGateway(node: node, settings: settings)))
    }
    let all = members
    try await withThrowingTaskGroup(of: Void.self) { group in
        for member in all {
            group.addTask { try await member.node.run() }
            group.addTask { try await member.gateway.run() }
        }
        var failure: (any Error)?
        do {
            let formed = try await eventually(timeout: .seconds(30)) {
                for member in all {
                    let dump = try await member.node.dump()
                    if dump.ringNodes.count != all.count || dump.state != "up" { return false }
                }
                return true
            }
            try #require(formed, "the \(all.count)-node ring did not form")
            let ready = await eventually { await all.asyncAllSatisfy { await $0.gateway.isReady() } }
            try #require(ready, "the gateways did not become ready")
            try await body(all)
        } catch {
            failure = error
        }
        for member in all { await member.gateway.shutdown() }
        for member in all { await member.node.shutdown() }
        try await group.waitForAll()
        if let failure { throw failure }
    }
}

/// A simulated device: a real libmosquitto client with a retained `offline` will. It records
/// what it receives on its own topics and, when `answers` is set, answers every command on the
/// response topic with the same correlation data: `{"ok": true, "command": name, "echo": body}`.
final class TestDevice: Sendable {
    let id: String
    let client: MQTTClient
    let received = Inbox<MQTTMessage>()
    let answers: Bool
    let topics = DeviceTopics()

    /// With a `password`, the device logs in with its id as the user name (the ACL's `%u`).
    init(id: String, broker: EmbeddedBroker, answers: Bool = true, password: String? = nil) throws {
        self.id = id
        self.answers = answers
        var settings = clientSettings(broker, "dev-\(id)")
        if let password {
            settings.username = id
            settings.password = password
        }
        settings.will = MQTTMessage(topic: DeviceTopics().status(id), string: #"{"status":"offline"}"#, qos: .atLeastOnce, retain: true)
        client = try MQTTClient(settings: settings, logger: quietLogger("test.device"))
    }

    /// Connects, subscribes to its downlink topics and publishes its retained birth.
    func start(birth: JSONValue? = nil) async throws {
        try await client.connect()
        try await client.subscribe("\(topics.prefix)/\(id)/#", qos: .atLeastOnce)
        if let birth { try await publishBirth(birth) }
    }

    func publishBirth(_ birth: JSONValue) async throws {
        try await client.publish(MQTTMessage(topic: topics.status(id), payload: birth.serialized(), qos: .atLeastOnce, retain: true))
    }

    func telemetry(_ value: JSONValue) async throws {
        try await client.publish(MQTTMessage(topic: topics.telemetry(id), payload: value.serialized(), qos: .atLeastOnce))
    }

    func report(_ value: JSONValue) async throws {
        try await client.publish(MQTTMessage(topic: topics.reported(id), payload: value.serialized(), qos: .atLeastOnce))
    }

    /// Consumes inbound messages until the client closes.
    func consume() async {
        for await message in client.messages {
            received.append(message)
            let commandPrefix = "\(topics.prefix)/\(id)/commands/"
            if answers, message.topic.hasPrefix(commandPrefix), let responseTopic = message.properties.responseTopic {
                let name = String(message.topic.dropFirst(commandPrefix.count))
                let body = (try? JSONValue.parse(message.payload)) ?? .null
                let reply: JSONValue = ["ok": true, "command": .string(name), "echo": body]
                _ = try? client.publishWithoutWaiting(
                    MQTTMessage(
                        topic: responseTopic, payload: reply.serialized(), qos: .atLeastOnce,
                        properties: MQTTProperties(correlationData: message.properties.correlationData)))
            }
        }
    }

    func messages(on suffix: String) -> [MQTTMessage] {
        received.all.filter { $0.topic == "\(topics.prefix)/\(id)/\(suffix)" }
    }
}

/// Creates devices, runs their consumers, starts them with `birth(id)`, runs `body`, and closes
/// every device (gracefully: no will) afterwards.
func withDevices(
    _ ids: [String], broker: EmbeddedBroker, answers: Bool = true, password: @escaping @Sendable (String) -> String? = { _ in nil },
    birth: @escaping @Sendable (String) -> JSONValue? = { _ in ["status": "online"] },
    _ body: @escaping @Sendable ([TestDevice]) async throws -> Void
) async throws {
    let devices = try ids.map { try TestDevice(id: $0, broker: broker, answers: answers, password: password($0)) }
    try await withThrowingTaskGroup(of: Void.self) { group in
        for device in devices { group.addTask { await device.consume() } }
        var failure: (any Error)?
        do {
            for device in devices { try await device.start(birth: birth(device.id)) }
            try await body(devices)
        } catch {
            failure = error
        }
        for device in devices { await device.client.close() }
        try await group.waitForAll()
        if let failure { throw failure }
    }
}

extension Array where Element: Sendable {
    func asyncAllSatisfy(_ predicate: (Element) async throws -> Bool) async rethrows -> Bool {
        for element in self where try await !predicate(element) { return false }
        return true
    }
}

/// The twin of `id` from every member; true when every member answers one satisfying `check`.
func twinEverywhere(_ members: [Member], _ id: String, _ check: (DeviceTwin) -> Bool) async -> Bool {
    for member in members {
        guard let twin = try? await member.gateway.twin(id), check(twin) else { return false }
    }
    return true
}
