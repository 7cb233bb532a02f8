import Foundation
import GatewayHTTP
import HTTPTypes
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

@Suite("Queued commands over HTTP (real broker, cluster, devices)", .serialized, .timeLimit(.minutes(3)))
struct QueuedCommandHTTPTests {
    /// The names of the commands `device` received, in arrival order.
    static func commandNames(_ device: TestDevice) -> [String] {
        let prefix = "devices/\(device.id)/commands/"
        return device.received.all.filter { $0.topic.hasPrefix(prefix) }.map { String($0.topic.dropFirst(prefix.count)) }
    }

    static func status(_ api: APINode, _ id: String, _ command: String) async throws -> JSONValue? {
        try await api.request(.get, "/v1/devices/\(id)/commands/\(command)").json
    }

    @Test("?ttl queues for an offline device (202 queued): delivered at its birth in queue order and answered; an expired one never; online at once (sent); 409 deviceOffline for the synchronous form; 429 over 100 pending; 400 bad ttl; 404 unknown")
    func queued() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withAPI(members) { api in
                    #expect(try await api[0].request(.put, "/v1/devices/qc-1", body: "{}").status == 201)
                    // Offline: the synchronous form answers at once.
                    let start = ContinuousClock.now
                    let offline = try await api[1].request(.post, "/v1/devices/qc-1/commands/reboot?timeout=5000", body: "{}")
                    #expect(offline.status == 409 && offline.code == "deviceOffline", "\(offline)")
                    #expect(ContinuousClock.now - start < .seconds(2))

                    var ids: [String] = []
                    for (index, name) in ["first", "second", "third"].enumerated() {
                        let queued = try await api[index].request(.post, "/v1/devices/qc-1/commands/\(name)?ttl=120", body: #"{"n":\#(index)}"#)
                        #expect(queued.status == 202 && queued.json?["status"] == "queued", "\(queued)")
                        ids.append(try #require(queued.json?["id"]?.stringValue))
                    }
                    let short = try await api[2].request(.post, "/v1/devices/qc-1/commands/stale?ttl=1", body: "{}")
                    #expect(short.status == 202)
                    let staleID = try #require(short.json?["id"]?.stringValue)
                    #expect(try await eventually(timeout: .seconds(10)) { try await Self.status(api[0], "qc-1", staleID)?["status"] == "expired" })
                    let listed = try await api[1].request(.get, "/v1/devices/qc-1/commands")
                    #expect(listed.json?["commands"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["first", "second", "third", "stale"])
                    #expect(listed.json?["commands"]?.arrayValue?.compactMap { $0["status"]?.stringValue } == ["queued", "queued", "queued", "expired"])
                    let one = try #require(try await Self.status(api[2], "qc-1", ids[1]))
                    #expect(one["name"] == "second" && one["body"] == ["n": 1] && one["status"] == "queued")
                    #expect(one["createdAt"]?.stringValue?.hasSuffix("Z") == true && one["expiresAt"] != nil && one["reply"] == nil)

                    let queuedIDs = ids
                    try await withDevices(["qc-1"], broker: broker) { devices in
                        let device = devices[0]
                        #expect(await eventually { Self.commandNames(device).count >= 3 })
                        #expect(Self.commandNames(device) == ["first", "second", "third"], "in queue order, the expired one never")
                        for (index, id) in queuedIDs.enumerated() {
                            #expect(try await eventually { try await Self.status(api[index], "qc-1", id)?["status"] == "answered" })
                            let answered = try await Self.status(api[(index + 1) % 3], "qc-1", id)
                            #expect(answered?["reply"]?["echo"] == ["n": .int(Int64(index))], "\(String(describing: answered))")
                            #expect(answered?["sentAt"] != nil)
                        }
                        // Online: sent at once, answered.
                        let now = try await api[1].request(.post, "/v1/devices/qc-1/commands/blink?ttl=60", body: #"{"times":2}"#)
                        #expect(now.status == 202 && now.json?["status"] == "sent", "\(now)")
                        let nowID = try #require(now.json?["id"]?.stringValue)
                        #expect(try await eventually { try await Self.status(api[0], "qc-1", nowID)?["reply"]?["echo"] == ["times": 2] })
                        try await Task.sleep(for: .milliseconds(300))
                        #expect(!Self.commandNames(device).contains("stale"))
                        #expect(Self.commandNames(device) == ["first", "second", "third", "blink"])
                    }

                    // At most 100 pending.
                    #expect(try await api[0].request(.put, "/v1/devices/qc-full", body: "{}").status == 201)
                    for index in 0..<100 {
                        let queued = try await api[index % 3].request(.post, "/v1/devices/qc-full/commands/c\(index)?ttl=600", body: "{}")
                        try #require(queued.status == 202, "\(index): \(queued)")
                    }
                    let over = try await api[1].request(.post, "/v1/devices/qc-full/commands/more?ttl=600", body: "{}")
                    #expect(over.status == 429 && over.code == "tooManyCommands", "\(over)")

                    for ttl in ["0", "-1", "x", "2592001", "1.5"] {
                        let answer = try await api[0].request(.post, "/v1/devices/qc-1/commands/x?ttl=\(ttl)", body: "{}")
                        #expect(answer.status == 400 && answer.code == "invalidTTL", "\(ttl): \(answer)")
                    }
                    let unknown = try await api[0].request(.get, "/v1/devices/qc-1/commands/0123456789abcdef0123456789abcdef")
                    #expect(unknown.status == 404 && unknown.code == "unknownCommand", "\(unknown)")
                    let nobody = try await api[0].request(.post, "/v1/devices/nobody/commands/x?ttl=5", body: "{}")
                    #expect(nobody.status == 404 && nobody.code == "unknownDevice", "\(nobody)")
                }
            }
        }
    }

    @Test("the queue moves with the device when its node drains: delivered by the new owner at the next birth")
    func handoff() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withAPI(members) { api in
                    #expect(try await api[0].request(.put, "/v1/devices/qh-1", body: "{}").status == 201)
                    var ids: [String] = []
                    for name in ["a", "b"] {
                        let queued = try await api[0].request(.post, "/v1/devices/qh-1/commands/\(name)?ttl=120", body: "{}")
                        ids.append(try #require(queued.json?["id"]?.stringValue))
                    }
                    let owner = try #require(try await members[0].gateway.twin("qh-1")).node
                    let index = try #require(members.firstIndex { $0.name == owner })
                    let other = (index + 1) % 3
                    #expect(await members[index].gateway.drain(timeout: .seconds(20)))
                    #expect(await eventually {
                        guard let twin = try? await members[other].gateway.twin("qh-1") else { return false }
                        return twin.node != owner
                    })
                    let moved = try await api[other].request(.get, "/v1/devices/qh-1/commands")
                    #expect(moved.json?["commands"]?.arrayValue?.compactMap { $0["status"]?.stringValue } == ["queued", "queued"], "\(moved)")
                    let queuedIDs = ids
                    try await withDevices(["qh-1"], broker: broker) { devices in
                        #expect(await eventually { Self.commandNames(devices[0]) == ["a", "b"] })
                        let node = api[other]
                        for id in queuedIDs {
                            let answered = try await eventually { try await Self.status(node, "qh-1", id)?["status"] == "answered" }
                            #expect(answered, "\(id)")
                        }
                    }
                }
            }
        }
    }
}
