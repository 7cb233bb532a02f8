import Testing
@testable import MQTT

/// ``MQTTClient/Settings/flowControlLimit`` against a real Mosquitto: a consumer that stops
/// taking holds the broker back (the network thread waits), nothing is dropped, and closing a
/// client whose network thread waits does not hang.
@Suite("MQTTClient flow control against a real broker", .timeLimit(.minutes(1)))
struct FlowControlTests {
    @Test("a QoS 1 flood 40 times the client's queue: the network thread waits, then every message arrives once, in order")
    func floodIsHeldBack() async throws {
        try await withBroker { broker in
            var settings = testSettings(broker, "flow")
            settings.flowControlLimit = 25
            try await withClient(settings) { sub in
                try await sub.client.subscribe("flow/#", qos: .atLeastOnce)
                let total = 1000
                try await withClient(testSettings(broker, "flow-pub")) { pub in
                    for index in 0..<total {
                        try await pub.client.publish(topic: "flow/q1", string: "m-\(index)", qos: .atLeastOnce)
                    }
                }
                // Nobody took anything: 25 wait in the queue and the network thread waits.
                #expect(await eventually { sub.client.flowControlWaits >= 1 && sub.client.inboundQueued == 25 })
                #expect(sub.messages.all.isEmpty, "flow control must not feed the messages stream")
                var received: [String] = []
                while received.count < total, let batch = await sub.client.nextBatch() {
                    #expect(batch.count <= 25)
                    received += batch.map(\.payloadString)
                }
                #expect(received == (0..<total).map { "m-\($0)" })
                #expect(sub.client.droppedMessages == 0)
            }
        }
    }

    @Test("close() while the network thread waits for room returns; nextBatch then drains and ends")
    func closeWhileWaiting() async throws {
        try await withBroker { broker in
            var settings = testSettings(broker, "flow-close")
            settings.flowControlLimit = 5
            let client = try MQTTClient(settings: settings, logger: testLogger)
            try await client.connect()
            try await client.subscribe("close/#", qos: .atLeastOnce)
            try await withClient(testSettings(broker, "flow-close-pub")) { pub in
                for index in 0..<50 { try await pub.client.publish(topic: "close/x", string: "\(index)", qos: .atLeastOnce) }
            }
            #expect(await eventually { client.flowControlWaits >= 1 })
            await client.close()  // must not hang on the waiting network thread
            var drained = 0
            while let batch = await client.nextBatch() { drained += batch.count }
            #expect(drained == 5, "what was queued before the close is still handed out, then nil")
        }
    }
}
