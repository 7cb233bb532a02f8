import Foundation
import GatewayHTTP
import HTTPTypes
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

/// Retained messages on `topics` now: subscribes to them, then to a fence topic holding a
/// retained marker published just before; the broker sends retained messages in subscription
/// order, so whatever the topics hold arrives before the marker.
func retainedMessages(_ broker: EmbeddedBroker, _ topics: [String]) async throws -> [MQTTMessage] {
    var settings = clientSettings(broker, "retained-check")
    settings.username = "gateway"
    settings.password = gatewayTestPassword
    let client = try MQTTClient(settings: settings, logger: quietLogger("test.retained"))
    try await client.connect()
    let fence = "devices/fence-\(UInt32.random(in: 0...UInt32.max))/status"
    try await client.publish(MQTTMessage(topic: fence, string: "fence", qos: .atLeastOnce, retain: true))
    for topic in topics { try await client.subscribe(topic) }
    try await client.subscribe(fence)
    var found: [MQTTMessage] = []
    for await message in client.messages {
        if message.topic == fence { break }
        found.append(message)
    }
    try await client.publish(MQTTMessage(topic: fence, payload: [], qos: .atLeastOnce, retain: true))
    await client.close()
    return found
}

@Suite("Provisioning, deletion and shadow-grade twins over HTTP (real broker, cluster, HTTP)", .serialized, .timeLimit(.minutes(3)))
struct ProvisioningTests {
    static func secureCluster(_ broker: EmbeddedBroker, _ count: Int, managed: Bool = true, _ body: @escaping @Sendable ([Member], [APINode]) async throws -> Void) async throws {
        let logins = managed ? EmbeddedBrokerLogins(broker: broker) : nil
        try await withGatewayCluster(count, broker: broker, configure: { settings in
            for index in settings.brokers.indices {
                settings.brokers[index].client.username = "gateway"
                settings.brokers[index].client.password = gatewayTestPassword
            }
            settings.logins = logins
        }) { members in
            try await withAPI(members) { api in try await body(members, api) }
        }
    }

    @Test("PUT creates a device offline with its login (201, then 200); it logs in with exactly its rights; wrong password and anonymous refused; DELETE stops it, revokes and disconnects the login, clears its retained topics; then 404")
    func provisionAndDelete() async throws {
        try await withLoginBroker(managed: true) { broker in
            try await Self.secureCluster(broker, 3) { members, api in
                let put = try await api[0].request(.put, "/v1/devices/pv-1", body: #"{"password":"pv-secret","tags":{"site":"lab"},"groups":["field"]}"#)
                #expect(put.status == 201, "\(put)")
                #expect(put.headers[.eTag] == "\"0\"")
                #expect(put.json?["online"] == false && put.json?["lastSeen"] == .null && put.json?["tags"] == ["site": "lab"])
                #expect(put.json?["groups"] == ["all", "field"])
                // The twin exists offline before first contact, on every node.
                for node in api {
                    let twin = try await node.request(.get, "/v1/devices/pv-1")
                    #expect(twin.status == 200 && twin.json?["online"] == false, "\(twin)")
                }
                // Again: 200, the tags replaced, the password unchanged.
                let again = try await api[1].request(.put, "/v1/devices/pv-1", body: #"{"tags":{"site":"depot","rack":3}}"#)
                #expect(again.status == 200 && again.json?["tags"] == ["site": "depot", "rack": 3], "\(again)")
                #expect((try await api[2].request(.get, "/v1/groups/field")).json?["members"] == ["pv-1"])

                #expect(await login(broker, "pv-1", "wrong") == nil)
                #expect(await login(broker, nil, nil) == nil)
                try await withDevices(["pv-1"], broker: broker, password: { _ in "pv-secret" }, birth: { _ in ["status": "online", "model": "P1"] }) { devices in
                    let device = devices[0]
                    #expect(await eventually { await twinEverywhere(members, "pv-1") { $0.online && $0.metadata["model"] == "P1" } })
                    try await device.telemetry(["seq": 1, "temp": 19.5])
                    #expect(await eventually { await twinEverywhere(members, "pv-1") { $0.telemetry["temp"] == 19.5 } })
                    let desired = try await api[2].request(.patch, "/v1/devices/pv-1/desired", body: #"{"mode":"eco"}"#)
                    #expect(desired.status == 200)
                    #expect(await eventually { device.messages(on: "state/desired").count == 1 })
                    // Exactly its own rights: not another device's topics, not its own desired state.
                    await #expect(throws: MQTTError.self) { try await device.client.publish(topic: "devices/pv-2/telemetry", string: "{}", qos: .atLeastOnce) }
                    await #expect(throws: MQTTError.self) { try await device.client.publish(topic: "devices/pv-1/state/desired", string: "{}", qos: .atLeastOnce) }
                    let reply = try await api[1].request(.post, "/v1/devices/pv-1/commands/ping?timeout=5000", body: "{}")
                    #expect(reply.status == 200 && reply.json?["reply"]?["ok"] == true, "\(reply)")

                    // Delete: 204, then 404 everywhere, out of its group, login gone, disconnected.
                    let deleted = try await api[1].request(.delete, "/v1/devices/pv-1")
                    #expect(deleted.status == 204, "\(deleted)")
                    #expect(await disconnected(device.client))
                    for node in api {
                        let gone = try await node.request(.get, "/v1/devices/pv-1")
                        #expect(gone.status == 404 && gone.code == "unknownDevice", "\(gone)")
                    }
                    #expect((try await api[0].request(.get, "/v1/groups/field")).json?["members"] == [])
                    #expect(await login(broker, "pv-1", "pv-secret") == nil, "the login is revoked")
                    // The broker published the kicked device's will: dropped as a deleted device's, and
                    // the retained status and desired state are empty.
                    #expect(try await retainedMessages(broker, ["devices/pv-1/status", "devices/pv-1/state/desired"]).isEmpty)
                    #expect(try await api[0].request(.delete, "/v1/devices/pv-1").status == 404)
                }
                // Nothing brought it back (its will, its reconnect attempts).
                #expect(members.allSatisfy { $0.node.whereis("pv-1") == nil })
                // Provisioned again: a new device, a working login.
                let recreated = try await api[2].request(.put, "/v1/devices/pv-1", body: #"{"password":"new-secret"}"#)
                #expect(recreated.status == 201 && recreated.json?["tags"] == [:], "\(recreated)")
                let client = try #require(await login(broker, "pv-1", "new-secret"))
                await client.close()
            }
        }
    }

    @Test("bad provisioning bodies are 400; a password without managed logins is 422 credentialsNotManaged")
    func badProvisioning() async throws {
        try await withLoginBroker(managed: true) { broker in
            try await Self.secureCluster(broker, 1) { _, api in
                for body in [#"{"pasword":"x"}"#, #"{"tags":[1]}"#, #"{"groups":"g"}"#, #"{"groups":["a b"]}"#, #"{"password":""}"#, "[1]", #"{"password":5}"#] {
                    let answer = try await api[0].request(.put, "/v1/devices/bad-pv", body: body)
                    #expect(answer.status == 400, "\(body): \(answer)")
                }
                let reserved = try await api[0].request(.put, "/v1/devices/gateway", body: #"{"password":"x"}"#)
                #expect(reserved.status == 400, "\(reserved)")
                #expect(try await api[0].request(.put, "/v1/devices/bad%20id", body: "{}").code == "invalidName")
                #expect(try await api[0].request(.get, "/v1/devices/bad-pv").status == 404, "nothing was created")
            }
        }
        try await withLoginBroker(managed: false) { broker in
            try await Self.secureCluster(broker, 1, managed: false) { _, api in
                let refused = try await api[0].request(.put, "/v1/devices/nm-1", body: #"{"password":"x"}"#)
                #expect(refused.status == 422 && refused.code == "credentialsNotManaged", "\(refused)")
                #expect(try await api[0].request(.get, "/v1/devices/nm-1").status == 404)
                let plain = try await api[0].request(.put, "/v1/devices/nm-1", body: #"{"tags":{"a":1}}"#)
                #expect(plain.status == 201, "\(plain)")
            }
        }
    }

    @Test("ETag and If-Match: a stale version is 412 versionConflict and changes nothing; tags never reach the device; reportedVersion and lastUpdated per leaf")
    func shadowTwins() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    try await withDevices(["sh-1"], broker: broker) { devices in
                        let device = devices[0]
                        #expect(await eventually { await twinEverywhere(members, "sh-1") { $0.online } })
                        let start = try await api[0].request(.get, "/v1/devices/sh-1")
                        #expect(start.headers[.eTag] == "\"0\"" && start.json?["reportedVersion"] == 0)
                        #expect(start.json?["lastUpdated"] == ["reported": [:], "desired": [:]])

                        var headers = HTTPFields()
                        headers[.ifMatch] = "\"0\""
                        let first = try await api[1].request(.patch, "/v1/devices/sh-1/desired", body: #"{"led":"on","cfg":{"a":1,"b":2}}"#, headers: headers)
                        #expect(first.status == 200 && first.headers[.eTag] == "\"1\"", "\(first)")
                        // The same If-Match again: the version moved on, so 412 and nothing changes.
                        let stale = try await api[0].request(.patch, "/v1/devices/sh-1/desired", body: #"{"led":"off"}"#, headers: headers)
                        #expect(stale.status == 412 && stale.code == "versionConflict" && stale.json?["version"] == 1, "\(stale)")
                        let unchanged = try await api[1].request(.get, "/v1/devices/sh-1")
                        #expect(unchanged.json?["version"] == 1 && unchanged.json?["desired"]?["led"] == "on")
                        #expect(device.messages(on: "state/desired").allSatisfy { !$0.payloadString.contains("off") })
                        for tag in [#"W/"1""#, #""7", "2""#, "*"] {
                            headers[.ifMatch] = tag
                            let ok = try await api[0].request(.patch, "/v1/devices/sh-1/desired", body: #"{"cfg":{"b":3}}"#, headers: headers)
                            #expect(ok.status == 200, "\(tag): \(ok)")
                        }
                        headers[.ifMatch] = "version-one"
                        #expect(try await api[0].request(.patch, "/v1/devices/sh-1/desired", body: "{}", headers: headers).code == "invalidIfMatch")
                        // Without If-Match it applies.
                        let last = try await api[1].request(.patch, "/v1/devices/sh-1/desired", body: #"{"led":"blink"}"#)
                        #expect(last.status == 200 && last.headers[.eTag] == "\"5\"")

                        // lastUpdated.desired: RFC 3339 UTC times at every leaf; cfg.a untouched since the first patch.
                        let desiredTimes = try #require(last.json?["lastUpdated"]?["desired"])
                        let a = try #require(desiredTimes["cfg"]?["a"]?.stringValue)
                        let b = try #require(desiredTimes["cfg"]?["b"]?.stringValue)
                        let led = try #require(desiredTimes["led"]?.stringValue)
                        for time in [a, b, led] { #expect(Self.isRFC3339UTC(time), "\(time)") }
                        #expect(a <= b && b <= led)
                        #expect(a == first.json?["lastUpdated"]?["desired"]?["cfg"]?["a"]?.stringValue)

                        // Tags: merge patch, backend only.
                        let tagged = try await api[0].request(.patch, "/v1/devices/sh-1/tags", body: #"{"owner":"tag-secret-xyz","rack":7}"#)
                        #expect(tagged.status == 200 && tagged.json?["tags"] == ["owner": "tag-secret-xyz", "rack": 7], "\(tagged)")
                        let untagged = try await api[1].request(.patch, "/v1/devices/sh-1/tags", body: #"{"rack":null}"#)
                        #expect(untagged.json?["tags"] == ["owner": "tag-secret-xyz"])
                        #expect(try await api[1].request(.patch, "/v1/devices/sh-1/tags", body: "[1]").status == 400)

                        // Reported: +1 per change, none for a patch that changes nothing; times per leaf.
                        try await device.report(["fw": ["major": 1, "minor": 2], "mode": "eco"])
                        #expect(await eventually { await twinEverywhere(members, "sh-1") { $0.reportedVersion == 1 } })
                        let r1 = try #require(try await members[0].gateway.twin("sh-1"))
                        try await device.report(["mode": "eco"])
                        try await device.report(["fw": ["minor": 3]])
                        #expect(await eventually { await twinEverywhere(members, "sh-1") { $0.reportedVersion == 2 && $0.reported["fw"]?["minor"] == 3 } })
                        let r2 = try #require(try await members[1].gateway.twin("sh-1"))
                        #expect(r2.counters.reportedUpdates == 3, "three reports, two changes")
                        #expect(r2.lastUpdated.reported["fw"]?["major"] == r1.lastUpdated.reported["fw"]?["major"])
                        #expect(r2.lastUpdated.reported["mode"] == r1.lastUpdated.reported["mode"])
                        let minor1 = try #require(r1.lastUpdated.reported["fw"]?["minor"]?.stringValue)
                        let minor2 = try #require(r2.lastUpdated.reported["fw"]?["minor"]?.stringValue)
                        #expect(minor1 <= minor2 && Self.isRFC3339UTC(minor2))

                        // Tags never reached the device: nothing it received mentions them.
                        #expect(!device.received.all.contains { $0.payloadString.contains("tag-secret-xyz") || $0.payloadString.contains("\"tags\"") })
                    }
                }
            }
        }
    }

    /// `2025-01-31T12:34:56.789Z`.
    static func isRFC3339UTC(_ text: String) -> Bool {
        let pattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
        return text.wholeMatch(of: pattern) != nil
    }
}
