import Foundation
import Synchronization
import Testing

@testable import Gateway
@testable import MQTT

// Brokers behind the shipped strict ACL, logins and disconnections, for the GatewayTests and
// (through a link to this file) the GatewayHTTPTests.

/// The password of the `gateway` user of the test brokers.
let gatewayTestPassword = "gateway-test-password"

/// The repository's `config/` directory (tests run the shipped files, not copies of them).
let configDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("config").path

/// The shipped strict ACL file, as lines.
func shippedACL() throws -> [String] {
    try String(contentsOfFile: configDirectory + "/mosquitto.acl.example", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        .map(String.init)
}

/// A broker behind the shipped ACL with the gateway user; `managed` adds the managed password
/// file, `dynamicSecurity` the plugin with its admin `swarm-admin`.
func withLoginBroker<T>(managed: Bool, dynamicSecurity: Bool = false, _ body: (EmbeddedBroker) async throws -> T) async throws -> T {
    var settings = EmbeddedBroker.Settings()
    settings.allowAnonymous = false
    settings.aclRules = try shippedACL()
    settings.users = [.init("gateway", password: gatewayTestPassword)]
    settings.managedLogins = managed
    if dynamicSecurity { settings.dynamicSecurityAdmin = .init("swarm-admin", password: "admin-test-password") }
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

/// Connects as `user`/`password`; nil when the broker refuses (or the connection fails).
func login(_ broker: EmbeddedBroker, _ user: String?, _ password: String?) async -> MQTTClient? {
    var settings = clientSettings(broker, "login")
    settings.username = user
    settings.password = password
    settings.connectTimeout = .seconds(3)
    guard let client = try? MQTTClient(settings: settings, logger: quietLogger("test.login")) else { return nil }
    do {
        try await client.connect()
        return client
    } catch {
        await client.close()
        return nil
    }
}

/// True once `client` reported a disconnection.
func disconnected(_ client: MQTTClient, within timeout: Duration = .seconds(5)) async -> Bool {
    let seen = Atomic<Bool>(false)
    let task = Task {
        for await event in client.events {
            if case .disconnected = event {
                seen.store(true, ordering: .relaxed)
                return
            }
        }
    }
    defer { task.cancel() }
    return await eventually(timeout: timeout) { seen.load(ordering: .relaxed) }
}

