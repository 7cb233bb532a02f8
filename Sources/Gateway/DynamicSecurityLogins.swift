import Logging
import MQTT
import SwarmJSON
import Synchronization

/// Device logins on external Mosquitto brokers through their dynamic security plugin: JSON
/// commands published to `$CONTROL/dynamic-security/v1`, answers on `…/v1/response`, over an
/// MQTT connection logged in as the plugin's admin client (one per broker). Effective at once, no
/// broker restart; deleting a client disconnects a device logged in with it (the plugin kicks it,
/// DISCONNECT reason 0x98).
///
/// A login is a plugin client without roles: the broker's ACL file (the strict rules of
/// `config/mosquitto.acl.example`, with `%u`) gives it the device's own topics. Mosquitto 2.0.11's
/// plugin has no `%u` in role ACLs, and it rewrites its whole JSON file after every change, so
/// each login costs time in proportion to the logins already there (docs/deployment.md).
///
/// With several brokers every change goes to each of them (a device may connect to any).
public final class DynamicSecurityLogins: DeviceLoginManager {
    /// The control topic of the plugin's API.
    public static let controlTopic = "$CONTROL/dynamic-security/v1"

    public let reservedNames: Set<String>
    /// How long one command waits for the plugin's answer. Default 10 s.
    public let timeout: Duration
    private let clients: [MQTTClient]
    private let waiting = Mutex<[String: CheckedContinuation<JSONValue, any Error>]>([:])
    private let consumers = Mutex<[Task<Void, Never>]>([])
    private let logger: Logger

    /// - Parameters:
    ///   - admins: one client setting per broker, with the admin's user name and password.
    ///   - reservedNames: logins a device must not take (the gateway's user, the admin's).
    public init(admins: [MQTTClient.Settings], reservedNames: Set<String> = [], timeout: Duration = .seconds(10), logger: Logger) throws {
        self.clients = try admins.map { try MQTTClient(settings: $0, logger: logger) }
        self.reservedNames = reservedNames.union(admins.compactMap(\.username))
        self.timeout = timeout
        self.logger = logger
    }

    /// Connects every admin client and subscribes to the plugin's answers.
    public func start() async throws {
        for client in clients {
            try await client.connect()
            try await client.subscribe(Self.controlTopic + "/response", qos: .atLeastOnce)
            let task = Task { [weak self] in
                for await message in client.messages { self?.handle(message) }
            }
            consumers.withLock { $0.append(task) }
        }
    }

    public func shutdown() async {
        for client in clients { await client.close() }
        let waiters = waiting.withLock { table in
            defer { table = [:] }
            return Array(table.values)
        }
        for waiter in waiters { waiter.resume(throwing: GatewayError.notRunning) }
    }

    public func setPassword(_ password: String, for id: String) async throws {
        guard !reservedNames.contains(id) else { throw GatewayError.invalidBody("'\(id)' is a reserved login name") }
        for client in clients {
            let created = try await run(client, ["command": "createClient", "username": .string(id), "password": .string(password)])
            if let error = created {
                guard error.contains("already exists") else { throw GatewayError.brokerUnavailable("createClient \(id): \(error)") }
                if let error = try await run(client, ["command": "setClientPassword", "username": .string(id), "password": .string(password)]) {
                    throw GatewayError.brokerUnavailable("setClientPassword \(id): \(error)")
                }
            }
        }
    }

    public func removeLogin(_ id: String) async throws {
        guard !reservedNames.contains(id) else { throw GatewayError.invalidBody("'\(id)' is a reserved login name") }
        for client in clients {
            if let error = try await run(client, ["command": "deleteClient", "username": .string(id)]), !error.contains("not found") {
                throw GatewayError.brokerUnavailable("deleteClient \(id): \(error)")
            }
        }
    }

    /// Sends one command and returns the plugin's error text, nil on success.
    private func run(_ client: MQTTClient, _ command: JSONValue) async throws -> String? {
        let key = (0..<12).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        var members = command.objectValue ?? [:]
        members["correlationData"] = .string(key)
        let body = JSONValue.object(["commands": .array([.object(members)])]).serialized()
        let timeout = self.timeout
        let answer: JSONValue = try await withThrowingTaskGroup(of: JSONValue.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { continuation in
                    self.waiting.withLock { $0[key] = continuation }
                    Task {
                        do {
                            try await client.publish(MQTTMessage(topic: Self.controlTopic, payload: body, qos: .atLeastOnce))
                        } catch {
                            self.fail(key, GatewayError.brokerUnavailable("dynamic security command not sent: \(error)"))
                        }
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                let error = GatewayError.brokerUnavailable("no answer from the dynamic security plugin within \(timeout)")
                self.fail(key, error)
                throw error
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        guard case .object(let fields) = answer else {
            throw GatewayError.brokerUnavailable("no answer from the dynamic security plugin within \(timeout)")
        }
        return fields["error"]?.stringValue
    }

    private func fail(_ key: String, _ error: any Error) {
        let waiter = waiting.withLock { $0.removeValue(forKey: key) }
        waiter?.resume(throwing: error)
    }

    private func handle(_ message: MQTTMessage) {
        guard let value = try? JSONValue.parse(message.payload), let responses = value["responses"]?.arrayValue else { return }
        for response in responses {
            guard let key = response["correlationData"]?.stringValue else { continue }
            let waiter = waiting.withLock { $0.removeValue(forKey: key) }
            waiter?.resume(returning: response)
        }
    }
}
