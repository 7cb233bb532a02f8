@testable import MQTT
import Testing

/// Lifetime, concurrency and back-pressure behaviour of MQTTClient.
@Suite("MQTTClient lifecycle", .timeLimit(.minutes(1)))
struct LifecycleTests {
    @Test("close() during connect() ends the wait at once with .closed")
    func closeDuringConnect() async throws {
        let port = try EmbeddedBroker.freePort(host: "127.0.0.1")
        var settings = MQTTClient.Settings(host: "127.0.0.1", port: port)
        settings.connectTimeout = .seconds(20)
        let client = try MQTTClient(settings: settings, logger: testLogger)
        let started = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let error = try await #require(throws: MQTTError.self) { try await client.connect() }
                #expect(error.code == .closed)
            }
            try await Task.sleep(for: .milliseconds(300))
            await client.close()
            try await group.waitForAll()
        }
        // Far below the 20 s connect timeout: close() ended the wait (a loaded machine took 5.7 s).
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(!client.isConnected)
    }

    @Test("close() while reconnecting (broker gone, long backoff) returns promptly")
    func closeWhileReconnecting() async throws {
        try await withBroker { broker in
            var settings = testSettings(broker, "backoff")
            settings.reconnectDelay = .seconds(20)
            settings.maxReconnectDelay = .seconds(20)
            try await withClient(settings) { client in
                await broker.stop()
                #expect(await client.events.wait { _ in client.disconnectedCount >= 1 })
                try await Task.sleep(for: .milliseconds(200))  // now in the 20 s reconnect sleep
                let started = ContinuousClock.now
                await client.client.close()
                #expect(ContinuousClock.now - started < .seconds(2))
            }
        }
    }

    @Test("clients dropped without close() stop their network thread and free everything")
    func dropWithoutClose() async throws {
        try await withBroker { broker in
            for index in 0..<20 {
                let client = try MQTTClient(settings: testSettings(broker, "drop\(index)"), logger: testLogger)
                try await client.connect()
                try await client.subscribe("drop/#")
                try await client.publish(topic: "drop/\(index)", string: "x", qos: .atLeastOnce)
                // `client` goes out of scope here: deinit disconnects, joins, destroys.
            }
            try await withClient(testSettings(broker, "after")) { after in
                try await after.client.publish(topic: "drop/after", string: "still fine", qos: .atLeastOnce)
            }
            let disconnects = broker.log().split(separator: "\n").filter { $0.hasSuffix(" disconnected.") }
            #expect(disconnects.count >= 20)
        }
    }

    @Test("500 concurrent QoS 1 publishes from many tasks all complete and leave no bookkeeping")
    func concurrentPublishes() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "sink")) { sink in
                try await sink.client.subscribe("many/#", qos: .atLeastOnce)
                try await withClient(testSettings(broker, "source")) { source in
                    try await withThrowingTaskGroup(of: MQTTPublishResult.self) { group in
                        for index in 0..<500 {
                            group.addTask {
                                try await source.client.publish(topic: "many/\(index % 10)", string: "\(index)", qos: .atLeastOnce)
                            }
                        }
                        var ids = Set<Int32>()
                        for try await result in group { ids.insert(result.messageID) }
                        #expect(ids.count == 500)
                    }
                    #expect(source.client.pendingAcknowledgementEntries == 0)
                }
                let received = await sink.messages.wait(for: 500)
                #expect(Set(received.payloadStrings) == Set((0..<500).map(String.init)))
            }
        }
    }

    @Test("a bounded inbound buffer keeps the oldest messages and counts the dropped ones")
    func boundedInboundBuffer() async throws {
        try await withBroker { broker in
            var settings = testSettings(broker, "slow")
            settings.inboundBufferLimit = 10
            // No consumer until the end: the stream buffers at most 10 messages.
            let client = try MQTTClient(settings: settings, logger: testLogger)
            try await client.connect()
            try await client.subscribe("slow/#", qos: .atMostOnce)
            for index in 0..<50 {
                try await client.publish(topic: "slow/x", string: "\(index)", qos: .atMostOnce)
            }
            #expect(await eventually { client.droppedMessages == 40 })
            await client.close()
            var kept: [String] = []
            for await message in client.messages { kept.append(message.payloadString) }
            #expect(kept == (0..<10).map(String.init))
        }
    }

    @Test("libmosquitto is initialised once however many clients start concurrently")
    func concurrentCreation() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<16 {
                group.addTask {
                    let client = try MQTTClient(settings: MQTTClient.Settings(host: "127.0.0.1", port: 1883 + index), logger: testLogger)
                    await client.close()
                }
            }
            try await group.waitForAll()
        }
        #expect(MQTTClient.libraryVersion.hasPrefix("2."))
    }
}
