import Foundation
import SwarmJSON
import Synchronization
import Testing

@testable import Gateway
@testable import MQTT

@Suite("Device logins managed by the gateway (real Mosquitto)", .serialized)
struct DeviceLoginTests {
    @Test("password hashes: Mosquitto accepts them; verify checks them; known PBKDF2-HMAC-SHA512 vector")
    func hashes() throws {
        // RFC 6070-style vector for PBKDF2-HMAC-SHA512 ("password", "salt", 1 iteration).
        let derived = MosquittoPassword.pbkdf2SHA512(password: Array("password".utf8), salt: Array("salt".utf8), iterations: 1)
        #expect(derived.map { String(format: "%02x", $0) }.joined().hasPrefix("867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252"))
        // BoringSSL's PBKDF2 and the Swift loop agree (salts and passwords of several lengths).
        for (password, salt, rounds) in [("", "", 1), ("pw", "0123456789ab", 101), (String(repeating: "é", count: 200), "s", 7)] {
            #expect(
                MosquittoPassword.pbkdf2SHA512(password: Array(password.utf8), salt: Array(salt.utf8), iterations: rounds)
                    == MosquittoPassword.pbkdf2SHA512Reference(password: Array(password.utf8), salt: Array(salt.utf8), iterations: rounds),
                "\(password.prefix(8)), \(salt), \(rounds)")
        }
        let hash = MosquittoPassword.hash("s3cret")
        #expect(hash.hasPrefix("$7$101$"))
        #expect(MosquittoPassword.verify("s3cret", against: hash))
        #expect(!MosquittoPassword.verify("s3cret!", against: hash))
    }

    @Test("embedded password file: a new login connects at once, a wrong password and anonymous are refused, removal disconnects a live client; bursts share reloads")
    func embeddedLogins() async throws {
        try await withLoginBroker(managed: true) { broker in
            let logins = EmbeddedBrokerLogins(broker: broker)
            #expect(await login(broker, "dev-x", "s3cret") == nil)
            try await logins.setPassword("s3cret", for: "dev-x")
            let live = try #require(await login(broker, "dev-x", "s3cret"))
            #expect(await login(broker, "dev-x", "wrong") == nil)
            #expect(await login(broker, nil, nil) == nil)
            await #expect(throws: GatewayError.self) { try await logins.setPassword("x", for: "gateway") }
            await #expect(throws: GatewayError.self) { try await logins.setPassword("x", for: "a:b") }
            // Removal: the live client is disconnected and cannot log in again.
            try await logins.removeLogin("dev-x")
            #expect(await disconnected(live))
            await live.close()
            #expect(await login(broker, "dev-x", "s3cret") == nil)
            try await logins.removeLogin("never-there")
            // A burst of 200 concurrent logins: every one works, in far fewer reloads.
            let reloadsBefore = broker.log().components(separatedBy: "Reloading config.").count
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<200 { group.addTask { try await logins.setPassword("pw-\(index)", for: "burst-\(index)") } }
                try await group.waitForAll()
            }
            let reloads = broker.log().components(separatedBy: "Reloading config.").count - reloadsBefore
            print("200 concurrent logins: \(reloads) reloads")
            #expect(reloads >= 1 && reloads < 100)
            for index in [0, 99, 199] {
                let client = try #require(await login(broker, "burst-\(index)", "pw-\(index)"))
                await client.close()
            }
            #expect(broker.managedLogins.count == 200)
        }
    }

    @Test("dynamic security plugin: create, password change, delete kicks a live client; the ACL file gives the login its own topics only")
    func dynamicSecurityLogins() async throws {
        try await withLoginBroker(managed: false, dynamicSecurity: true) { broker in
            var admin = clientSettings(broker, "admin")
            admin.username = "swarm-admin"
            admin.password = "admin-test-password"
            let logins = try DynamicSecurityLogins(admins: [admin], reservedNames: ["gateway"], logger: quietLogger("test.dynsec"))
            try await logins.start()
            do {
                try await logins.setPassword("first", for: "dyn-1")
                let client = try #require(await login(broker, "dyn-1", "first"))
                _ = try await client.publish(topic: "devices/dyn-1/telemetry", string: "{}", qos: .atLeastOnce)
                await #expect(throws: MQTTError.self) { try await client.publish(topic: "devices/dyn-2/telemetry", string: "{}", qos: .atLeastOnce) }
                await client.close()
                try await logins.setPassword("second", for: "dyn-1")
                #expect(await login(broker, "dyn-1", "first") == nil)
                let live = try #require(await login(broker, "dyn-1", "second"))
                #expect(await login(broker, nil, nil) == nil)
                try await logins.removeLogin("dyn-1")
                #expect(await disconnected(live))
                await live.close()
                #expect(await login(broker, "dyn-1", "second") == nil)
                try await logins.removeLogin("dyn-1")
                await #expect(throws: GatewayError.self) { try await logins.setPassword("x", for: "swarm-admin") }
            } catch {
                await logins.shutdown()
                throw error
            }
            await logins.shutdown()
        }
    }
}
