import Foundation
import SwarmCore
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

@Suite("Shadow-grade twins across handoff and node loss", .serialized)
struct ShadowClusterTests {
    @Test("the desired version never repeats: an answered patch survives the owner stopping at once (no drain), and the next one is +1; tags and reported version too")
    func versionSurvivesOwnerLoss() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<12).map { "vv-\($0)" }
                try await withDevices(ids, broker: broker) { devices in
                    #expect(await eventually { await ids.asyncAllSatisfy { id in await twinEverywhere(members, id) { $0.online } } })
                    let victim = members[1]
                    let lost = ids.filter { victim.node.whereis($0)?.node == victim.node.id }
                    try #require(!lost.isEmpty, "no device landed on \(victim.name)")
                    let caller = members[0]
                    for device in devices where lost.contains(device.id) { try await device.report(["rv": 1]) }
                    #expect(await eventually { await lost.asyncAllSatisfy { id in await twinEverywhere([caller], id) { $0.reportedVersion == 1 } } })
                    for id in lost {
                        for round in 1...3 { try await caller.gateway.patchDesired(id, ["round": .int(Int64(round))]) }
                        _ = try await caller.gateway.patchTags(id, ["owner": "ops"])
                    }
                    // Stopped right after the last answer: no sleep for checkpoints to leave.
                    await victim.node.shutdown()
                    await victim.gateway.shutdown()
                    let survivors = [members[0], members[2]]
                    for id in lost {
                        #expect(await eventually(timeout: .seconds(20)) { await twinEverywhere(survivors, id) { $0.node != victim.name } })
                        let twin = try #require(try await caller.gateway.twin(id))
                        #expect(twin.version == 3 && twin.desired == ["round": 3], "\(id): \(twin.version) \(twin.desired)")
                        #expect(twin.tags == ["owner": "ops"] && twin.reportedVersion >= 1)
                        let next = try await caller.gateway.patchDesired(id, ["round": 4], ifVersions: [3])
                        #expect(next.version == 4)
                    }
                    // The devices see only increasing versions.
                    for device in devices where lost.contains(device.id) {
                        #expect(await eventually {
                            device.messages(on: "state/desired").compactMap { try? JSONValue.parse($0.payload)["version"]?.intValue }.last == 4
                        })
                        let versions = device.messages(on: "state/desired").compactMap { try? JSONValue.parse($0.payload)["version"]?.intValue }
                        #expect(versions == versions.sorted() && Set(versions).count == versions.count, "\(device.id): \(versions)")
                    }
                }
            }
        }
    }

    @Test("a drain hands over tags, versions, lastUpdated and the reported version with the rest of the state")
    func drainCarriesShadow() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withDevices(["dh-1", "dh-2", "dh-3", "dh-4"], broker: broker) { devices in
                    for device in devices { try await device.report(["x": ["y": 1]]) }
                    #expect(await eventually { await ["dh-1", "dh-2", "dh-3", "dh-4"].asyncAllSatisfy { await twinEverywhere(members, $0) { $0.reportedVersion == 1 } } })
                    var before: [String: DeviceTwin] = [:]
                    for device in devices {
                        _ = try await members[0].gateway.patchDesired(device.id, ["t": 1])
                        _ = try await members[0].gateway.patchTags(device.id, ["site": .string(device.id)])
                        before[device.id] = try await members[0].gateway.twin(device.id)
                    }
                    let leaving = members[1]
                    let moving = devices.map(\.id).filter { leaving.node.whereis($0)?.node == leaving.node.id }
                    try #require(await leaving.gateway.drain(timeout: .seconds(10)))
                    for id in moving {
                        let twin = try #require(try await members[0].gateway.twin(id))
                        let old = try #require(before[id])
                        #expect(twin.node == members[0].name)
                        #expect(twin.tags == old.tags && twin.version == old.version && twin.reportedVersion == old.reportedVersion)
                        #expect(twin.lastUpdated == old.lastUpdated)
                    }
                }
            }
        }
    }
}
