import DeviceSimulator
import Logging
import MQTT
import SwarmJSON
import Synchronization

let testLogger: Logger = {
    var logger = Logger(label: "device-simulator-tests")
    logger.logLevel = .warning
    return logger
}()

/// A thread-safe list that test code polls with a deadline.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    func append(_ element: Element) { items.withLock { $0.append(element) } }
    var all: [Element] { items.withLock { $0 } }

    /// Polls every 5 ms until `predicate` holds or `timeout` passes; returns whether it held.
    @discardableResult
    func wait(timeout: Duration = .seconds(10), until predicate: ([Element]) -> Bool) async -> Bool {
        await eventually(timeout: timeout) { predicate(all) }
    }
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
}

/// Starts a real mosquitto on a free loopback port, runs `body`, stops the broker.
func withBroker<T>(
    _ configure: (inout EmbeddedBroker.Settings) -> Void = { _ in },
    _ body: (EmbeddedBroker) async throws -> T
) async throws -> T {
    var settings = EmbeddedBroker.Settings()
    settings.stopTimeout = .seconds(3)
    configure(&settings)
    let broker = try EmbeddedBroker(settings: settings, logger: testLogger)
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

/// An observer: a real MQTTClient whose messages are collected in an inbox.
func withObserver<T: Sendable>(
    _ broker: EmbeddedBroker,
    username: String? = nil,
    password: String? = nil,
    subscribe filters: [String],
    _ body: (MQTTClient, Inbox<MQTTMessage>) async throws -> T
) async throws -> T {
    var settings = broker.clientSettings()
    settings.clientID = "observer-" + String(UInt32.random(in: .min ... .max), radix: 16)
    settings.connectTimeout = .seconds(5)
    settings.operationTimeout = .seconds(5)
    settings.username = username
    settings.password = password
    let client = try MQTTClient(settings: settings, logger: testLogger)
    let inbox = Inbox<MQTTMessage>()
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { for await message in client.messages { inbox.append(message) } }
        do {
            try await client.connect()
            for filter in filters { try await client.subscribe(filter, qos: .atLeastOnce) }
            let result = try await body(client, inbox)
            await client.close()
            try await group.waitForAll()
            return result
        } catch {
            await client.close()
            group.cancelAll()
            throw error
        }
    }
}

/// A test profile: fast telemetry, a few commands with different behaviours.
func testProfile(telemetryIntervalMs: Int = 50, payloadBytes: Int = 0) throws -> DeviceProfile {
    let json = """
        {
          "model": "TEST-1", "firmware": "9.9.9", "groups": ["lab", "all-tests"], "keepAliveSeconds": 10,
          "telemetry": { "intervalMs": \(telemetryIntervalMs), "qos": 1, "payloadBytes": \(payloadBytes),
                         "fields": { "t": { "type": "walk", "start": 20, "step": 1 }, "n": { "type": "counter" } } },
          "reported": { "initial": { "mode": "auto", "setpoint": 20 } },
          "commands": {
            "reboot": { "reply": { "rebooting": true } },
            "slow": { "delayMs": 300 },
            "hang": { "respond": false },
            "get-state": {}
          }
        }
        """
    return try DeviceProfile.parse(try JSONValue.parse(json), name: "test", source: "test.json")
}

/// Runs a fleet of `ids` with the test profile against `broker`, runs `body`, and stops the
/// fleet (with `abruptFraction`) whatever happens.
func withFleet<T>(
    _ broker: EmbeddedBroker,
    ids: [String],
    profile: DeviceProfile? = nil,
    brokerURL: String? = nil,
    configure: (inout FleetRunner.Settings) -> Void = { _ in },
    _ body: (FleetRunner) async throws -> T
) async throws -> T {
    let url = try BrokerURL.parse(brokerURL ?? "mqtt://127.0.0.1:\(broker.port)")
    var settings = FleetRunner.Settings(broker: url)
    settings.threads = 1
    settings.stopTimeout = .seconds(3)
    configure(&settings)
    let profile = try profile ?? testProfile()
    let runner = try FleetRunner(devices: ids.map { DeviceSpec(id: $0, profile: profile) }, settings: settings)
    try runner.start()
    do {
        let result = try await body(runner)
        await runner.stop()
        return result
    } catch {
        await runner.stop()
        throw error
    }
}
