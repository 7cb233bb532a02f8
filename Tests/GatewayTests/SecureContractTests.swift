import Foundation
import SwarmJSON
import Testing

@testable import Gateway
@testable import MQTT

@Suite("The device contract behind the shipped ACL file and a password file", .serialized)
struct SecureContractTests {
    static let gatewayPassword = gatewayTestPassword

    static func password(_ id: String) -> String { "pw-\(id)" }

    /// A broker with exactly `config/mosquitto.acl.example` and a password file holding the
    /// gateway user and `devices`.
    static func withSecureBroker<T>(devices: [String], _ body: (EmbeddedBroker) async throws -> T) async throws -> T {
        var settings = EmbeddedBroker.Settings()
        settings.allowAnonymous = false
        settings.aclRules = try shippedACL()
        settings.users = [.init("gateway", password: gatewayPassword)] + devices.map { .init($0, password: password($0)) }
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

    static func asGateway(_ settings: inout GatewaySettings) {
        for index in settings.brokers.indices {
            settings.brokers[index].client.username = "gateway"
            settings.brokers[index].client.password = gatewayPassword
        }
    }

    /// The broker refused a QoS 1 publish with reason 0x87 (not authorized).
    static func refused(_ client: MQTTClient, _ topic: String, _ payload: String, retain: Bool = false) async -> Bool {
        do {
            try await client.publish(MQTTMessage(topic: topic, string: payload, qos: .atLeastOnce, retain: retain))
            return false
        } catch let error as MQTTError {
            return error.code == .publishRejected && error.reasonCode == 0x87
        } catch {
            return false
        }
    }

    @Test("the embedded broker's generated rules are exactly the shipped ACL file's")
    func generatedRules() throws {
        let shipped = try shippedACL().map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        #expect(DeviceACL.rules() == shipped)
        #expect(DeviceACL.rules(topics: DeviceTopics(prefix: "site"), adminUser: nil).contains("pattern write site/%u/replies/#"))
    }

    @Test("birth, telemetry, reported, desired, commands and group publish work behind the strict ACL; a device cannot write another's topics, nor its own desired state or commands")
    func wholeContract() async throws {
        let ids = ["acl-a", "acl-b"]
        try await Self.withSecureBroker(devices: ids) { broker in
            try await withGatewayCluster(3, broker: broker, configure: { Self.asGateway(&$0) }) { members in
                try await withDevices(ids, broker: broker, password: { Self.password($0) }, birth: { _ in ["status": "online", "model": "t1", "groups": ["acl-group"]] }) { devices in
                    let (a, b) = (devices[0], devices[1])
                    // Birth: presence, metadata and groups.
                    #expect(await eventually { await twinEverywhere(members, "acl-a") { $0.online && $0.metadata["model"] == "t1" && $0.groups.contains("acl-group") } })
                    #expect(await eventually { await twinEverywhere(members, "acl-b") { $0.online } })
                    // Telemetry and reported state.
                    try await a.telemetry(["seq": 1, "temp": 21.5])
                    try await a.report(["mode": "eco"])
                    #expect(await eventually { await twinEverywhere(members, "acl-a") { $0.telemetry["temp"] == 21.5 && $0.reported == ["mode": "eco"] } })
                    // Desired state reaches the device, retained.
                    _ = try await members[1].gateway.patchDesired("acl-a", ["mode": "comfort"])
                    #expect(await eventually {
                        a.messages(on: "state/desired").last.flatMap { try? JSONValue.parse($0.payload) } == ["version": 1, "state": ["mode": "comfort"]]
                    })
                    // Commands from every node: the response topic is inside the device's subtree,
                    // and replies that reach another node than the waiting one are forwarded.
                    for round in 0..<4 {
                        for member in members {
                            let reply = try await member.gateway.command("acl-a", name: "blink", body: ["n": .int(Int64(round))], timeout: .seconds(5))
                            #expect(reply["echo"] == ["n": .int(Int64(round))])
                        }
                    }
                    let topics = Set(a.messages(on: "commands/blink").compactMap(\.properties.responseTopic))
                    #expect(topics == Set(members.map { "devices/acl-a/replies/\($0.gateway.nodeToken)" }))
                    // Group publish reaches both members.
                    #expect(try await members[2].gateway.publish(group: "acl-group", body: ["hello": true]) == 2)
                    #expect(await eventually { a.messages(on: "down").count == 1 && b.messages(on: "down").count == 1 })

                    // A device writing another device's topics changes nothing: the broker refuses.
                    let before = try #require(try await members[0].gateway.twin("acl-b"))
                    #expect(await Self.refused(a.client, "devices/acl-b/telemetry", #"{"temp":99}"#))
                    #expect(await Self.refused(a.client, "devices/acl-b/state/reported", #"{"mode":"hacked"}"#))
                    #expect(await Self.refused(a.client, "devices/acl-b/status", #"{"status":"offline"}"#, retain: true))
                    #expect(await Self.refused(a.client, "devices/acl-b/replies/gw-1", "{}"))
                    // Nor its own desired state, commands or downlinks.
                    #expect(await Self.refused(a.client, "devices/acl-a/state/desired", #"{"version":99,"state":{}}"#, retain: true))
                    #expect(await Self.refused(a.client, "devices/acl-a/commands/reboot", "{}"))
                    #expect(await Self.refused(a.client, "devices/acl-a/down", "{}"))
                    // A fence: acl-b's own next message arrives, and nothing of acl-a's came before it.
                    try await b.telemetry(["seq": 1, "temp": 20])
                    #expect(await eventually { await twinEverywhere(members, "acl-b") { $0.telemetry["temp"] == 20 } })
                    let after = try #require(try await members[0].gateway.twin("acl-b"))
                    #expect(after.online && after.reported == before.reported && after.counters.messages == before.counters.messages + 1)
                    #expect(after.counters.statusChanges == before.counters.statusChanges)
                    // The retained desired state on the broker is still the gateway's version 1.
                    var reader = clientSettings(broker, "reader")
                    reader.username = "gateway"
                    reader.password = Self.gatewayPassword
                    let client = try MQTTClient(settings: reader, logger: quietLogger("test.reader"))
                    try await client.connect()
                    try await client.subscribe("devices/acl-a/state/desired")
                    var iterator = client.messages.makeAsyncIterator()
                    let retained = await iterator.next()
                    #expect(retained.flatMap { try? JSONValue.parse($0.payload) } == ["version": 1, "state": ["mode": "comfort"]])
                    await client.close()
                    // And the device still works.
                    try await a.telemetry(["seq": 2, "temp": 22])
                    #expect(await eventually { await twinEverywhere(members, "acl-a") { $0.telemetry["temp"] == 22 } })
                }
            }
        }
    }

    @Test("logins: a wrong password and an anonymous client are refused; the gateway user must log in")
    func refusedLogins() async throws {
        try await Self.withSecureBroker(devices: ["acl-c"]) { broker in
            for (user, password) in [("acl-c", "wrong"), (nil, nil), ("gateway", "wrong")] as [(String?, String?)] {
                var settings = clientSettings(broker, "refused")
                settings.username = user
                settings.password = password
                settings.connectTimeout = .seconds(3)
                let client = try MQTTClient(settings: settings, logger: quietLogger("test.refused"))
                await #expect(throws: MQTTError.self) { try await client.connect() }
                await client.close()
            }
            var good = clientSettings(broker, "good")
            good.username = "acl-c"
            good.password = Self.password("acl-c")
            let client = try MQTTClient(settings: good, logger: quietLogger("test.good"))
            try await client.connect()
            await client.close()
        }
    }
}
