import Foundation
import MQTT
import SwarmCore
import SwarmJSON
import SwarmNode
import Synchronization
import Testing

@testable import Gateway

@Suite("Gateway ingress: bounded lanes and the overload policy (real broker)", .serialized, .timeLimit(.minutes(3)))
struct IngressOverloadTests {
    /// One node and its gateway, started without ``DeviceGateway/run()``: the test runs the broker
    /// consumer first and the lane task only when it chooses, so the lane fills exactly as it
    /// would behind a lane task that cannot keep up. Everything else is the real path: Mosquitto,
    /// the MQTT client, validation, the lane, the node and the device process.
    func withHeldLane(
        capacity: Int, flowControlLimit: Int = 4096, _ body: @escaping @Sendable (_ gateway: DeviceGateway, _ publisher: MQTTClient, _ startLane: @escaping @Sendable () -> Void) async throws -> Void
    ) async throws {
        try await withBroker { broker in
            var nodeSettings = SwarmNodeSettings(name: "gw-flood", secret: testSecret)
            nodeSettings.logger = quietLogger("test.flood.node")
            let node = SwarmNode(settings: nodeSettings)
            try await node.start()
            let nodeTask = Task { try? await node.run() }
            var settings = GatewaySettings(brokers: [GatewaySettings.Broker(client: clientSettings(broker, "gw-flood"))])
            settings.logger = quietLogger("test.flood.gateway")
            settings.shareGroup = "flood"
            settings.ingressLanes = 1
            settings.ingressLaneCapacity = capacity
            settings.ingressQoS = .atLeastOnce
            settings.ingressFlowControlLimit = flowControlLimit
            let gateway = try DeviceGateway(node: node, settings: settings)
            let publisher = try MQTTClient(settings: clientSettings(broker, "flood-device"), logger: quietLogger("test.flood.device"))
            let tasks = Mutex<[Task<Void, Never>]>([])
            var failure: (any Error)?
            do {
                let up = try await eventually { try await node.dump().state == "up" }
                try #require(up, "the node did not come up")
                try await gateway.start()
                let entry = gateway.runtime.brokers.entries[0]
                tasks.withLock { $0.append(Task { await gateway.consumeMessages(entry, index: 0) }) }
                try await publisher.connect()
                let lane = gateway.lanes[0]
                let slowPath = IngressSlowPath { id, items in await gateway.routeParked(id, items) }
                try await body(gateway, publisher) {
                    tasks.withLock { $0.append(Task { await gateway.consumeLane(lane, slowPath: slowPath) }) }
                }
            } catch {
                failure = error
            }
            await publisher.close()
            await gateway.shutdown()
            for task in tasks.withLock({ $0 }) { await task.value }
            await node.shutdown()
            await nodeTask.value
            if let failure { throw failure }
        }
    }

    @Test("a flood beyond a lane's bound sheds QoS 0 telemetry, counted exactly; status and reported are never shed, in order")
    func shedsTelemetryKeepsPresence() async throws {
        try await withHeldLane(capacity: 16) { gateway, publisher, startLane in
            let topics = DeviceTopics()
            let id = "flood-1"
            func publish(_ topic: String, _ value: JSONValue, qos: MQTTQoS = .atLeastOnce) async throws {
                try await publisher.publish(MQTTMessage(topic: topic, payload: value.serialized(), qos: qos))
            }
            // Telemetry at QoS 0 (the subscription is QoS 1; the broker delivers the lower):
            // the only kind a lane may shed.
            func telemetry(_ range: ClosedRange<Int>) async throws {
                for seq in range { try await publish(topics.telemetry(id), ["seq": .int(Int64(seq)), "v": .int(Int64(seq))], qos: .atMostOnce) }
            }
            func received() async -> Int { await gateway.stats().received.values.reduce(0, +) }

            // Nobody takes from the lane: 1 status + 15 telemetry fill it to 16; the next 85
            // telemetry are shed; two status messages still go in (17, 18); 100 more telemetry
            // are shed; the reported patch goes in (19).
            try await publish(topics.status(id), ["status": "online", "model": "m1"])
            try await telemetry(1...100)
            try await publish(topics.status(id), ["status": "offline"])
            try await publish(topics.status(id), ["status": "online", "model": "m2"])
            try await telemetry(101...200)
            try await publish(topics.reported(id), ["fw": "1.2"])
            #expect(await eventually { await received() == 204 }, "the gateway did not take every message")
            var stats = await gateway.stats()
            #expect(stats.shed == ["status": 0, "telemetry": 185, "reported": 0])
            #expect(stats.ingressQueued == 19)
            #expect(stats.ingressWaits == 0)
            #expect(stats.routed == 0)

            // Status beyond twice the bound: 13 more fill the lane to 32; the 14th waits (the
            // broker consumer stops reading: backpressure), and so do the 2 after it.
            for index in 0..<16 {
                try await publish(topics.status(id), ["status": index % 2 == 0 ? "offline" : "online", "n": .int(Int64(index))])
            }
            #expect(await eventually { await gateway.stats().ingressWaits == 1 })
            stats = await gateway.stats()
            #expect(stats.ingressQueued == 32)
            // The consumer takes the client's queue in batches: the two after the waiting one may
            // have come in its batch (admitted, held by the waiting consumer), or not yet.
            #expect((218...220).contains(stats.received.values.reduce(0, +)), "the consumer went on while the lane was full")
            #expect(stats.shed["status"] == 0)

            // The lane task starts: everything queued is routed, in order; nothing else is lost.
            startLane()
            #expect(await eventually { await gateway.stats().routed == 35 }, "not every queued message was routed")
            let done = await eventually {
                guard let twin = try? await gateway.twin(id) else { return false }
                return twin.counters.statusChanges == 19 && twin.counters.reportedUpdates == 1 && twin.counters.telemetry == 15
            }
            #expect(done, "the device process did not apply every status, reported and queued telemetry message")
            let twin = try #require(try await gateway.twin(id))
            #expect(twin.telemetry == ["v": 15], "the newest queued telemetry is the last applied")
            #expect(twin.counters.seqOutOfOrder == 0 && twin.counters.seqDuplicates == 0)
            #expect(twin.reported == ["fw": "1.2"])
            // The last status sent (index 15: online) is the one the twin shows.
            #expect(twin.online && twin.metadata["n"] == 15)
            stats = await gateway.stats()
            #expect(stats.shed == ["status": 0, "telemetry": 185, "reported": 0])
            #expect(stats.rejected.values.reduce(0, +) == 0)
            #expect(stats.received.values.reduce(0, +) == stats.routed + stats.shed.values.reduce(0, +))
            #expect(stats.ingressQueued == 0)
        }
    }

    @Test("a QoS 1 flood far beyond the lane and the client's queue: nothing shed, the broker held back, every message applied in order")
    func qos1FloodIsHeldBackNotShed() async throws {
        // Lane: 2 × 8 places; the client's queue: 32. 1,500 QoS 1 messages are 45 times that.
        try await withHeldLane(capacity: 8, flowControlLimit: 32) { gateway, publisher, startLane in
            try await Self.qos1Flood(gateway, publisher, startLane)
        }
    }

    static func qos1Flood(_ gateway: DeviceGateway, _ publisher: MQTTClient, _ startLane: @Sendable () -> Void) async throws {
        let topics = DeviceTopics()
        let id = "flood-q1"
        let total = 1500
        let online = JSONValue.object(["status": "online"]).serialized()
        try await publisher.publish(MQTTMessage(topic: topics.status(id), payload: online, qos: .atLeastOnce))
        for seq in 1...total {
            let body = JSONValue.object(["seq": .int(Int64(seq)), "v": .int(Int64(seq))]).serialized()
            // Accepted by the broker (PUBACK) whatever the gateway does meanwhile.
            try await publisher.publish(MQTTMessage(topic: topics.telemetry(id), payload: body, qos: .atLeastOnce))
        }
        let client = gateway.runtime.brokers.entries[0].client
        // Nobody takes from the lane: the consumer waits on it, the client's queue fills and its
        // network thread waits: the broker holds the rest.
        let held = await eventually { await gateway.stats().ingressWaits >= 1 && client.flowControlWaits >= 1 }
        #expect(held, "neither the consumer nor the network thread waited")
        let during = await gateway.stats()
        #expect(during.ingressQueued == 16)
        #expect(during.received.values.reduce(0, +) < total, "the consumer took everything although the lane was full")
        #expect(during.shed.values.reduce(0, +) == 0)
        #expect(client.droppedMessages == 0)

        startLane()
        let applied = await eventually(timeout: .seconds(30)) {
            guard let twin = try? await gateway.twin(id) else { return false }
            return twin.counters.telemetry == total
        }
        #expect(applied, "not every QoS 1 message was applied")
        guard let twin = try await gateway.twin(id) else {
            Issue.record("no twin for \(id)")
            return
        }
        #expect(twin.telemetry == ["v": .int(Int64(total))], "the last message is the last applied")
        #expect(twin.counters.seqOutOfOrder == 0 && twin.counters.seqDuplicates == 0 && twin.counters.seqGaps == 0)
        let after = await gateway.stats()
        #expect(after.shed.values.reduce(0, +) == 0)
        #expect(after.received.values.reduce(0, +) == total + 1)
        #expect(after.routed == total + 1)
        #expect(after.ingressQueued == 0)
    }
}
