import Foundation
import SwarmCore
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

/// The gateway against a real Mosquitto (free loopback port), real in-process SwarmNodes on
/// 127.0.0.1 and real libmosquitto device clients.
@Suite("Gateway with a real broker and in-process clusters", .serialized, .timeLimit(.minutes(3)))
struct GatewayClusterTests {
    @Test("birth and will: online with metadata and groups, then offline when the device drops")
    func presence() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(1, broker: broker) { members in
                let gateway = members[0].gateway
                try await withDevices(["p-1"], broker: broker, birth: { _ in
                    ["status": "online", "model": "TH-10", "firmware": "1.2.3", "groups": ["floor-1", "bad group!"]]
                }) { devices in
                    #expect(await eventually { (try? await gateway.twin("p-1"))?.online == true })
                    let twin = try #require(try await gateway.twin("p-1"))
                    #expect(twin.metadata == ["model": "TH-10", "firmware": "1.2.3"])
                    #expect(twin.groups == ["all", "floor-1"])
                    #expect(twin.connectedAt != nil && twin.lastSeen != nil)
                    #expect(twin.node == members[0].name)
                    #expect(try await gateway.groupMembers("floor-1") == ["p-1"])
                    // Abrupt loss of the connection (no DISCONNECT): the broker publishes the will.
                    devices[0].client.simulateConnectionLoss()
                    #expect(await eventually { (try? await gateway.twin("p-1"))?.online == false })
                    let offline = try #require(try await gateway.twin("p-1"))
                    #expect(offline.metadata["model"] == "TH-10", "metadata is kept while offline")
                }
                #expect(try await gateway.twin("never-seen") == nil)
                await #expect(throws: GatewayError.invalidName("bad/id")) { try await gateway.twin("bad/id") }
            }
        }
    }

    @Test("telemetry reaches the owner from every ingress node; gaps and duplicates counted; twin from every node")
    func telemetryAndTwins() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<6).map { "t-\($0)" }
                try await withDevices(ids, broker: broker) { devices in
                    for device in devices {
                        // 1…20 without 10, with 5 sent twice: 20 messages, 1 gap, 1 duplicate.
                        var seqs = Array(1...20).filter { $0 != 10 }
                        seqs.insert(5, at: 5)
                        for seq in seqs {
                            try await device.telemetry(["seq": .int(Int64(seq)), "temp": .int(Int64(seq)), "unit": "C"])
                        }
                    }
                    for id in ids {
                        let done = await eventually { await twinEverywhere(members, id) { $0.counters.telemetry == 20 } }
                        #expect(done, "\(id): telemetry did not all arrive")
                        let twin = try #require(try await members[2].gateway.twin(id))
                        #expect(twin.counters.seqGaps == 1, "\(id): \(twin.counters)")
                        #expect(twin.counters.seqDuplicates == 1, "\(id): \(twin.counters)")
                        #expect(twin.telemetry == ["temp": 20, "unit": "C"])
                        let owner = try #require(members[0].node.whereis(id))
                        #expect(twin.node == owner.node.name)
                    }
                    // Round robin over the share group: every node took part in ingress, and
                    // the devices are spread over more than one owner.
                    var ingressNodes = 0
                    var routed = 0
                    for member in members {
                        let stats = await member.gateway.stats()
                        if stats.received["telemetry", default: 0] > 0 { ingressNodes += 1 }
                        routed += stats.routed
                    }
                    #expect(ingressNodes == 3)
                    #expect(routed >= 6 * 21)
                    let view = try await members[1].gateway.clusterView()
                    #expect(view.nodes.count == 3 && view.devices == 6)
                    #expect(view.nodes.map(\.devices).reduce(0, +) == 6)
                    #expect(view.nodes.filter { $0.devices > 0 }.count >= 2)
                }
            }
        }
    }

    @Test("desired state: patch from any node, the device gets it retained with its version, delta follows reported")
    func desiredRoundTrip() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withDevices(["d-1"], broker: broker) { devices in
                    let device = devices[0]
                    #expect(await eventually { await twinEverywhere(members, "d-1") { $0.online } })
                    let first = try await members[2].gateway.patchDesired("d-1", ["led": "on", "rate": 5, "cfg": ["a": 1]])
                    #expect(first.version == 1)
                    #expect(first.delta == ["led": "on", "rate": 5, "cfg": ["a": 1]])
                    let second = try await members[1].gateway.patchDesired("d-1", ["rate": nil, "cfg": ["b": 2]])
                    #expect(second.version == 2 && second.desired == ["led": "on", "cfg": ["a": 1, "b": 2]])
                    #expect(await eventually {
                        device.messages(on: "state/desired").last.flatMap { try? JSONValue.parse($0.payload) }
                            == ["version": 2, "state": ["led": "on", "cfg": ["a": 1, "b": 2]]]
                    })
                    try await device.report(["led": "on", "cfg": ["a": 1, "b": 3], "fw": "x"])
                    #expect(await eventually { await twinEverywhere(members, "d-1") { $0.delta == ["cfg": ["b": 2]] } })
                    await #expect(throws: GatewayError.unknownDevice("nobody")) {
                        try await members[0].gateway.patchDesired("nobody", ["a": 1])
                    }
                    await #expect(throws: GatewayError.self) { try await members[0].gateway.patchDesired("d-1", [1, 2]) }
                }
                // The desired state is retained: a device that connects later gets it at once.
                try await withDevices(["d-1"], broker: broker, birth: { _ in nil }) { devices in
                    #expect(await eventually {
                        devices[0].messages(on: "state/desired").first.flatMap { try? JSONValue.parse($0.payload) }?["version"] == 2
                    })
                }
            }
        }
    }

    @Test("commands: round trip from every node (MQTT 5 response topic + correlation data), timeout, unknown device")
    func commands() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withDevices(["c-1"], broker: broker) { _ in
                    try await withDevices(["c-silent"], broker: broker, answers: false) { _ in
                        #expect(await eventually { await twinEverywhere(members, "c-1") { $0.online } })
                        #expect(await eventually { await twinEverywhere(members, "c-silent") { $0.online } })
                        var latencies: [Duration] = []
                        for round in 0..<10 {
                            for member in members {
                                let start = ContinuousClock.now
                                let reply = try await member.gateway.command("c-1", name: "blink", body: ["times": .int(Int64(round))], timeout: .seconds(5))
                                latencies.append(ContinuousClock.now - start)
                                #expect(reply == ["ok": true, "command": "blink", "echo": ["times": .int(Int64(round))]])
                            }
                        }
                        latencies.sort()
                        print("command round trip over 3 nodes, 30 commands: p50 \(latencies[15]), max \(latencies[29])")
                        let start = ContinuousClock.now
                        await #expect(throws: GatewayError.commandTimeout(device: "c-silent", command: "reboot")) {
                            try await members[1].gateway.command("c-silent", name: "reboot", body: [:], timeout: .milliseconds(400))
                        }
                        #expect(ContinuousClock.now - start < .seconds(10), "the 400 ms timeout answered: bounded, not hung (room for a loaded machine)")
                        await #expect(throws: GatewayError.unknownDevice("ghost")) {
                            try await members[0].gateway.command("ghost", name: "reboot", body: [:], timeout: .seconds(1))
                        }
                        await #expect(throws: GatewayError.invalidName("a/b")) {
                            try await members[0].gateway.command("c-1", name: "a/b", body: [:])
                        }
                        #expect(await eventually { await twinEverywhere(members, "c-1") { $0.counters.commandsAnswered == 30 } })
                        #expect(await eventually { await twinEverywhere(members, "c-silent") { $0.counters.commandsTimedOut == 1 } })
                        var timedOut = 0
                        for member in members { timedOut += await member.gateway.stats().commandsTimedOut }
                        #expect(timedOut == 1)
                    }
                }
            }
        }
    }

    @Test("groups: birth and API membership, publish reaches every member on devices/{id}/down and nobody else")
    func groupPublish() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<8).map { "g-\($0)" }
                try await withDevices(ids, broker: broker, birth: { id in
                    let index = Int(id.dropFirst(2))!
                    return index < 5 ? ["status": "online", "groups": ["lights"]] : ["status": "online"]
                }) { devices in
                    let lights = Array(ids[0..<5])
                    for id in ids { #expect(await eventually { await twinEverywhere(members, id) { $0.online } }) }
                    for member in members {
                        #expect(await eventually { (try? await member.gateway.groupMembers("lights")) == lights })
                    }
                    try await members[1].gateway.addToGroup("g-7", group: "lights")
                    try await members[2].gateway.removeFromGroup("g-0", group: "lights")
                    let expected = Array(ids[1..<5]) + ["g-7"]
                    for member in members {
                        #expect(await eventually { (try? await member.gateway.groupMembers("lights")) == expected })
                    }
                    #expect(try await members[0].gateway.twin("g-7")?.groups == ["all", "lights"])
                    let count = try await members[2].gateway.publish(group: "lights", body: ["scene": "evening"])
                    #expect(count == 5)
                    for device in devices {
                        if expected.contains(device.id) {
                            #expect(await eventually { device.messages(on: "down").count == 1 }, "\(device.id) got nothing")
                            #expect(try JSONValue.parse(device.messages(on: "down")[0].payload) == ["scene": "evening"])
                        }
                    }
                    try await Task.sleep(for: .milliseconds(300))
                    for device in devices where !expected.contains(device.id) {
                        #expect(device.messages(on: "down").isEmpty, "\(device.id) is not a member")
                    }
                    #expect(try await members[0].gateway.publish(group: "all", body: ["hello": true]) == 8)
                    for device in devices {
                        #expect(await eventually { device.messages(on: "down").count == (expected.contains(device.id) ? 2 : 1) })
                    }
                    #expect(try await members[0].gateway.publish(group: "empty", body: [:]) == 0)
                    await #expect(throws: GatewayError.self) { try await members[0].gateway.removeFromGroup("g-1", group: "all") }
                }
            }
        }
    }

    @Test("group query: every member answers with its twin or the selected fields; an unresponsive member is missing")
    func groupQuery() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<5).map { "q-\($0)" }
                try await withDevices(ids, broker: broker, birth: { _ in ["status": "online", "groups": ["meters"]] }) { devices in
                    for device in devices { try await device.report(["level": .int(Int64(device.id.dropFirst(2))!)]) }
                    #expect(await eventually {
                        await ids.asyncAllSatisfy { id in (try? await members[0].gateway.twin(id))?.reported["level"] != nil }
                    })
                    // A member that never answers in time.
                    _ = try await members[1].node.register("q-stuck", kind: "silent", groups: ["device-group:meters"])
                    #expect(await eventually { (try? await members[2].gateway.groupMembers("meters"))?.count == 6 })
                    let start = ContinuousClock.now
                    let result = try await members[2].gateway.query(group: "meters", fields: ["reported.level", "online", "nope.x"], timeout: .milliseconds(800))
                    #expect(ContinuousClock.now - start < .seconds(10), "the 800 ms query timeout answered: bounded, not hung")
                    #expect(result.missing == ["q-stuck"])
                    #expect(result.count == 5)
                    for id in ids {
                        #expect(result.replies[id] == ["reported.level": .int(Int64(id.dropFirst(2))!), "online": true, "nope.x": nil])
                    }
                    let full = try await members[0].gateway.query(group: "all", timeout: .seconds(2))
                    #expect(full.missing.isEmpty && full.count == 5)
                    #expect(full.replies["q-3"]?["id"] == "q-3")
                }
            }
        }
    }

    @Test("a node stopped without a drain: its devices' twins come back on the survivors with their checkpointed state")
    func nodeCrash() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<9).map { "k-\($0)" }
                try await withDevices(ids, broker: broker, birth: { _ in ["status": "online", "model": "K", "groups": ["crew"]] }) { devices in
                    for device in devices {
                        try await device.report(["mode": "auto", "n": .string(device.id)])
                        try await device.telemetry(["seq": 1, "v": 1])
                    }
                    #expect(await eventually {
                        await ids.asyncAllSatisfy { id in (try? await members[0].gateway.twin(id)).map { $0.counters.telemetry == 1 && $0.reported["mode"] == "auto" } ?? false }
                    })
                    for id in ids { _ = try await members[0].gateway.patchDesired(id, ["target": 21]) }
                    let victim = members[1]
                    let lost = await ids.asyncFilter { victim.node.whereis($0)?.node == victim.node.id }
                    try #require(!lost.isEmpty, "no device landed on \(victim.name)")
                    // Let the coalesced checkpoints go out, then stop the node abruptly.
                    try await Task.sleep(for: .milliseconds(800))
                    await victim.node.shutdown()
                    await victim.gateway.shutdown()
                    let survivors = [members[0], members[2]]
                    for id in lost {
                        let back = await eventually(timeout: .seconds(20)) {
                            await twinEverywhere(survivors, id) { $0.node != victim.name }
                        }
                        #expect(back, "\(id) was not restarted on a survivor")
                        let twin = try #require(try await survivors[1].gateway.twin(id))
                        #expect(twin.online && twin.metadata["model"] == "K", "\(id): presence lost")
                        #expect(twin.reported == ["mode": "auto", "n": .string(id)], "\(id): reported state lost")
                        #expect(twin.version == 1 && twin.desired == ["target": 21], "\(id): desired state lost")
                        #expect(twin.counters.telemetry == 1 && twin.telemetry == ["v": 1], "\(id): telemetry lost")
                        #expect(twin.groups == ["all", "crew"])
                    }
                    #expect(await eventually { (try? await survivors[0].gateway.groupMembers("crew"))?.count == ids.count })
                    // A restored process checkpoints its state (the restored bytes as they came) to
                    // its new ring successor: a second crash, of its new host, restores it again.
                    let second = try #require(survivors.first { host in lost.contains { host.node.whereis($0)?.node == host.node.id } })
                    let last = try #require(survivors.first { $0.name != second.name })
                    let movedTwice = await lost.asyncFilter { second.node.whereis($0)?.node == second.node.id }
                    try await Task.sleep(for: .milliseconds(800))
                    await second.node.shutdown()
                    await second.gateway.shutdown()
                    for id in movedTwice {
                        #expect(await eventually(timeout: .seconds(20)) { await twinEverywhere([last], id) { $0.node == last.name } })
                        let twin = try #require(try await last.gateway.twin(id))
                        #expect(twin.reported == ["mode": "auto", "n": .string(id)] && twin.desired == ["target": 21], "\(id): state lost in the second crash")
                        #expect(twin.counters.telemetry == 1 && twin.groups == ["all", "crew"])
                    }
                    // And the restarted processes keep working.
                    for device in devices where lost.contains(device.id) { try await device.telemetry(["seq": 2, "v": 2]) }
                    for id in lost {
                        #expect(await eventually { (try? await last.gateway.twin(id))?.telemetry["v"] == 2 })
                    }
                }
            }
        }
    }

    @Test("bad ids, malformed, wrong-shape and oversized payloads are rejected and counted; a good device keeps working")
    func badInput() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker, configure: { $0.maxPayloadBytes = 4096 }) { members in
                try await withDevices(["ok-1"], broker: broker) { devices in
                    let rogue = try MQTTClient(settings: clientSettings(broker, "rogue"), logger: quietLogger("rogue"))
                    try await rogue.connect()
                    let longID = String(repeating: "x", count: 129)
                    let junk: [(String, [UInt8])] = [
                        ("devices/bad id/telemetry", Array(#"{"a":1}"#.utf8)),
                        ("devices/\(longID)/status", Array("online".utf8)),
                        ("devices/é/state/reported", Array(#"{"a":1}"#.utf8)),
                        ("devices/ok-1/telemetry", Array("{not json".utf8)),
                        ("devices/ok-1/telemetry", [0xFF, 0xFE, 0x00]),
                        ("devices/ok-1/state/reported", Array("[1,2]".utf8)),
                        ("devices/ok-1/status", Array(#"{"status":"dancing"}"#.utf8)),
                        ("devices/ok-1/telemetry", Array(("{\"blob\":\"" + String(repeating: "z", count: 5000) + "\"}").utf8)),
                    ]
                    for (seq, round) in (0..<3).enumerated() {
                        for (topic, payload) in junk {
                            try await rogue.publish(MQTTMessage(topic: topic, payload: payload, qos: .atLeastOnce))
                        }
                        _ = round
                        try await devices[0].telemetry(["seq": .int(Int64(seq + 1)), "ok": true])
                    }
                    #expect(await eventually { await twinEverywhere(members, "ok-1") { $0.counters.telemetry == 3 && $0.online } })
                    func totals() async -> [String: Int] {
                        var sum: [String: Int] = [:]
                        for member in members {
                            for (key, value) in await member.gateway.stats().rejected { sum[key, default: 0] += value }
                        }
                        return sum
                    }
                    #expect(await eventually { await totals() == ["badID": 9, "malformed": 6, "badShape": 6, "oversized": 3, "badTopic": 0, "routeFailed": 0, "deleted": 0] })
                    let twin = try #require(try await members[0].gateway.twin("ok-1"))
                    #expect(twin.online && twin.reported == .emptyObject && twin.counters.seqGaps == 0)
                    #expect(members[0].node.whereis("bad id") == nil)
                    #expect(members[0].node.registered().map(\.name).filter { !$0.hasPrefix("gateway-node:") && !$0.hasPrefix("gateway-events:") } == ["ok-1"])
                    await rogue.close()
                }
            }
        }
    }
}

extension GatewayClusterTests {
    @Test("a drained node hands its devices over with their whole state, not only the checkpointed part")
    func drainHandsOff() async throws {
        try await withBroker { broker in
            // Long interval: after the birth, telemetry and reported changes are not checkpointed
            // during this test, so only the handoff can carry them.
            try await withGatewayCluster(3, broker: broker, configure: { $0.checkpointInterval = .seconds(120) }) { members in
                let ids = (0..<9).map { "h-\($0)" }
                try await withDevices(ids, broker: broker) { devices in
                    for id in ids { #expect(await eventually { await twinEverywhere(members, id) { $0.online } }) }
                    for device in devices {
                        try await device.report(["phase": "before-drain"])
                        try await device.telemetry(["seq": 1, "x": 7])
                    }
                    for id in ids {
                        #expect(await eventually { (try? await members[0].gateway.twin(id)).map { $0.reported["phase"] != nil && $0.counters.telemetry == 1 } ?? false })
                    }
                    let leaving = members[2]
                    let moved = await ids.asyncFilter { leaving.node.whereis($0)?.node == leaving.node.id }
                    try #require(!moved.isEmpty, "no device on \(leaving.name)")
                    #expect(await leaving.gateway.drain(timeout: .seconds(15)))
                    #expect(await leaving.gateway.isReady() == false)
                    let survivors = Array(members[0...1])
                    for id in moved {
                        #expect(await eventually { await twinEverywhere(survivors, id) { $0.node != leaving.name } })
                        let twin = try #require(try await survivors[0].gateway.twin(id))
                        #expect(twin.reported == ["phase": "before-drain"] && twin.telemetry == ["x": 7] && twin.online, "\(id): \(twin)")
                    }
                    // The drained node takes no more ingress; the others get everything.
                    for device in devices { try await device.telemetry(["seq": 2, "x": 8]) }
                    for id in ids {
                        #expect(await eventually { (try? await survivors[1].gateway.twin(id))?.counters.telemetry == 2 })
                    }
                }
            }
        }
    }

    @Test("two brokers: devices sharded over them, every node on both; downlink goes through each device's broker")
    func twoBrokers() async throws {
        try await withBroker { brokerA in
            try await withBroker { brokerB in
                try await withGatewayCluster(2, broker: brokerA, moreBrokers: [brokerB]) { members in
                    let onA = ["a-0", "a-1", "a-2"]
                    let onB = ["b-0", "b-1", "b-2"]
                    try await withDevices(onA, broker: brokerA) { devicesA in
                        try await withDevices(onB, broker: brokerB) { devicesB in
                            let idA = "\(brokerA.host):\(brokerA.port)"
                            let idB = "\(brokerB.host):\(brokerB.port)"
                            for id in onA { #expect(await eventually { await twinEverywhere(members, id) { $0.online && $0.broker == idA } }) }
                            for id in onB { #expect(await eventually { await twinEverywhere(members, id) { $0.online && $0.broker == idB } }) }
                            for member in members {
                                let stats = await member.gateway.stats()
                                #expect(stats.brokers.map(\.id) == [idA, idB] && stats.brokers.allSatisfy(\.connected))
                            }
                            // Commands from both nodes to devices on both brokers.
                            for member in members {
                                for id in ["a-1", "b-1"] {
                                    let reply = try await member.gateway.command(id, name: "ping", body: ["n": 1], timeout: .seconds(5))
                                    #expect(reply["ok"] == true)
                                }
                            }
                            _ = try await members[1].gateway.patchDesired("b-2", ["mode": "eco"])
                            _ = try await members[0].gateway.patchDesired("a-2", ["mode": "eco"])
                            #expect(await eventually { devicesB[2].messages(on: "state/desired").count == 1 })
                            #expect(await eventually { devicesA[2].messages(on: "state/desired").count == 1 })
                            #expect(try await members[0].gateway.publish(group: "all", body: ["all": true]) == 6)
                            for device in devicesA + devicesB {
                                #expect(await eventually { device.messages(on: "down").count == 1 }, "\(device.id)")
                            }
                            // Each downlink went through one broker only: nothing twice.
                            try await Task.sleep(for: .milliseconds(200))
                            for device in devicesA + devicesB { #expect(device.messages(on: "down").count == 1) }
                        }
                    }
                }
            }
        }
    }
}

extension GatewayClusterTests {
    @Test("a telemetry burst over 3 nodes: every message reaches its device, none rejected or lost")
    func telemetryBurst() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                let ids = (0..<10).map { "b-\($0)" }
                let perDevice = 300
                try await withDevices(ids, broker: broker) { devices in
                    for id in ids { #expect(await eventually { await twinEverywhere(members, id) { $0.online } }) }
                    let start = ContinuousClock.now
                    for seq in 1...perDevice {
                        for device in devices {
                            try device.client.publishWithoutWaiting(
                                MQTTMessage(
                                    topic: device.topics.telemetry(device.id),
                                    payload: JSONValue.object(["seq": .int(Int64(seq)), "v": .int(Int64(seq))]).serialized(),
                                    qos: .atLeastOnce))
                        }
                    }
                    let all = await eventually(timeout: .seconds(60)) {
                        await ids.asyncAllSatisfy { id in (try? await members[0].gateway.twin(id))?.counters.telemetry == Int64(perDevice) }
                    }
                    let elapsed = ContinuousClock.now - start
                    #expect(all, "not every telemetry message arrived")
                    print("telemetry burst: \(ids.count * perDevice) messages over 3 nodes (debug build) in \(elapsed)")
                    for id in ids {
                        let twin = try #require(try await members[1].gateway.twin(id))
                        #expect(twin.counters.seqGaps == 0 && twin.counters.seqDuplicates == 0, "\(id): \(twin.counters)")
                        #expect(twin.telemetry == ["v": .int(Int64(perDevice))])
                    }
                    var rejected = 0
                    for member in members { rejected += await member.gateway.stats().rejected.values.reduce(0, +) }
                    #expect(rejected == 0)
                }
            }
        }
    }

    @Test("a QoS 1 flood over 3 nodes with one lane of 2 places each: lanes overfill, the consumers wait, nothing is shed, every message is applied")
    func qos1FloodOverThreeNodes() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker, configure: { settings in
                // One lane of 2 places and a client queue of 8: any batch the consumer takes
                // overfills it, so the consumer and the client's network thread must wait.
                settings.ingressLanes = 1
                settings.ingressLaneCapacity = 1
                settings.ingressFlowControlLimit = 8
            }) { members in
                let ids = (0..<20).map { "q1-\($0)" }
                let perDevice = 500
                try await withDevices(ids, broker: broker) { devices in
                    for id in ids { #expect(await eventually { await twinEverywhere(members, id) { $0.online } }) }
                    for seq in 1...perDevice {
                        for device in devices {
                            try device.client.publishWithoutWaiting(
                                MQTTMessage(
                                    topic: device.topics.telemetry(device.id),
                                    payload: JSONValue.object(["seq": .int(Int64(seq)), "v": .int(Int64(seq))]).serialized(),
                                    qos: .atLeastOnce))
                        }
                    }
                    let all = await eventually(timeout: .seconds(90)) {
                        await ids.asyncAllSatisfy { id in (try? await members[0].gateway.twin(id))?.counters.telemetry == Int64(perDevice) }
                    }
                    #expect(all, "not every QoS 1 telemetry message was applied")
                    var shed = 0
                    var waits = 0
                    var rejected = 0
                    for member in members {
                        let stats = await member.gateway.stats()
                        shed += stats.shed.values.reduce(0, +)
                        waits += stats.ingressWaits
                        rejected += stats.rejected.values.reduce(0, +)
                    }
                    #expect(shed == 0, "QoS 1 messages were shed")
                    #expect(rejected == 0)
                    #expect(waits > 0, "the flood never overfilled a lane: the test did not test backpressure")
                    for id in ids {
                        let twin = try #require(try await members[2].gateway.twin(id))
                        #expect(twin.counters.seqGaps == 0 && twin.counters.seqDuplicates == 0, "\(id): \(twin.counters)")
                        #expect(twin.telemetry == ["v": .int(Int64(perDevice))])
                    }
                }
            }
        }
    }
}

extension Array where Element: Sendable {
    func asyncFilter(_ isIncluded: (Element) async throws -> Bool) async rethrows -> [Element] {
        var kept: [Element] = []
        for element in self where try await isIncluded(element) { kept.append(element) }
        return kept
    }
}
