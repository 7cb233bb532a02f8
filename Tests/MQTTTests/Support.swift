import Logging
@testable import MQTT
import Synchronization

/// A quiet logger for tests (warnings and errors only).
let testLogger: Logger = {
    var logger = Logger(label: "mqtt-tests")
    logger.logLevel = .warning
    return logger
}()

/// A thread-safe list that test code polls with a deadline.
final class Inbox<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])

    func append(_ element: Element) {
        items.withLock { $0.append(element) }
    }

    var all: [Element] { items.withLock { $0 } }

    /// Polls every 5 ms until `predicate` holds or `timeout` passes; returns whether it held.
    @discardableResult
    func wait(timeout: Duration = .seconds(10), until predicate: ([Element]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if predicate(all) { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits until at least `count` elements arrived (or `timeout`); returns everything so far.
    func wait(for count: Int, timeout: Duration = .seconds(10)) async -> [Element] {
        await wait(timeout: timeout) { $0.count >= count }
        return all
    }
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while true {
        if condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
}

/// A client plus collectors fed by one consumer task per stream.
struct ClientHarness: Sendable {
    let client: MQTTClient
    let messages: Inbox<MQTTMessage>
    let events: Inbox<MQTTConnectionEvent>

    var connectedCount: Int {
        events.all.filter { if case .connected = $0 { return true } else { return false } }.count
    }
    /// The `.subscriptionsRenewed` events so far.
    var renewals: [(count: Int, refused: [String])] {
        events.all.compactMap { if case .subscriptionsRenewed(let count, let refused) = $0 { return (count, refused) } else { return nil } }
    }
    var disconnectedCount: Int {
        events.all.filter { if case .disconnected = $0 { return true } else { return false } }.count
    }
}

/// Starts a broker, runs `body`, and stops the broker whatever happens.
@discardableResult
func withBroker<T>(
    _ configure: (inout EmbeddedBroker.Settings) -> Void = { _ in },
    _ body: (EmbeddedBroker) async throws -> T
) async throws -> T {
    var settings = EmbeddedBroker.Settings()
    settings.startTimeout = .seconds(10)
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

/// Client settings for tests: short timeouts so that no test can hang.
func testSettings(_ broker: EmbeddedBroker, _ id: String) -> MQTTClient.Settings {
    var settings = broker.clientSettings()
    settings.clientID = id + "-" + String(UInt32.random(in: .min ... .max), radix: 16)
    settings.connectTimeout = .seconds(5)
    settings.operationTimeout = .seconds(5)
    settings.keepAlive = .seconds(10)
    settings.reconnectDelay = .seconds(1)
    settings.maxReconnectDelay = .seconds(2)
    return settings
}

/// Creates a client, consumes its streams into inboxes, connects (unless told not to), runs
/// `body`, and closes the client whatever happens. The consumers end when the client closes.
@discardableResult
func withClient<T: Sendable>(
    _ settings: MQTTClient.Settings,
    connect: Bool = true,
    _ body: (ClientHarness) async throws -> T
) async throws -> T {
    let client = try MQTTClient(settings: settings, logger: testLogger)
    let harness = ClientHarness(client: client, messages: Inbox(), events: Inbox())
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { for await message in client.messages { harness.messages.append(message) } }
        group.addTask { for await event in client.events { harness.events.append(event) } }
        do {
            if connect { try await client.connect() }
            let result = try await body(harness)
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

extension Array where Element == MQTTMessage {
    var payloadStrings: [String] { map(\.payloadString) }
}
