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
        capacity: Int, _ body: @escaping @Sendable (_ gateway: DeviceGateway, _ publisher: MQTTClient, _ startLane: @escaping @Sendable () -> Void) async throws -> Void
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
                try await body(gateway, publisher) {
                    tasks.withLock { $0.append(Task { await gateway.consumeLane(lane) }) }
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

    @Test("a flood beyond a lane's bound sheds telemetry, counted exactly; status and reported are never shed, in order")
    func shedsTelemetryKeepsPresence() async throws {
        try await withHeldLane(capacity: 16) { gateway, publisher, startLane in
            let topics = DeviceTopics()
            let id = "flood-1"
            func publish(_ topic: String, _ value: JSONValue) async throws {
                try await publisher.publish(MQTTMessage(topic: topic, payload: value.serialized(), qos: .atLeastOnce))
            }
            func telemetry(_ range: ClosedRange<Int>) async throws {
                for seq in range { try await publish(topics.telemetry(id), ["seq": .int(Int64(seq)), "v": .int(Int64(seq))]) }
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
            #expect(stats.received.values.reduce(0, +) == 218, "the consumer went on while the lane was full")
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
}
