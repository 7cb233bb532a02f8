import Glibc
@testable import MQTT
import Testing

/// Opt-in measurements (`MQTT_BENCH=1 swift test --filter Throughput`): rates on a shared 2-core
/// machine are floors, not targets, so these only print numbers and check that nothing was lost.
@Suite(
    "MQTT throughput (opt-in: MQTT_BENCH=1)",
    .enabled(if: getenv("MQTT_BENCH") != nil),
    .serialized,
    .timeLimit(.minutes(2))
)
struct ThroughputTests {
    private func rate(_ count: Int, _ elapsed: Duration) -> Int {
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Int(Double(count) / seconds)
    }

    @Test("QoS 0 and QoS 1 bursts through the AsyncStream", arguments: [MQTTQoS.atMostOnce, .atLeastOnce])
    func burst(qos: MQTTQoS) async throws {
        let total = qos == .atMostOnce ? 100_000 : 20_000
        try await withBroker { broker in
            try await withClient(testSettings(broker, "sink")) { sink in
                try await sink.client.subscribe("bench/#", qos: qos)
                let payload = [UInt8](repeating: 0x61, count: 100)
                let started = ContinuousClock.now
                try await withClient(testSettings(broker, "source")) { source in
                    for index in 0..<total {
                        try source.client.publishWithoutWaiting(MQTTMessage(topic: "bench/\(index % 1000)", payload: payload, qos: qos))
                    }
                    _ = await sink.messages.wait(for: total, timeout: .seconds(60))
                }
                let elapsed = ContinuousClock.now - started
                let received = sink.messages.all.count
                print("burst qos=\(qos.rawValue): \(received)/\(total) received in \(elapsed) = \(rate(received, elapsed)) msg/s")
                #expect(received == total)
            }
        }
    }

    @Test("request/response round trips (TCP_NODELAY on broker and clients)")
    func requestResponseLatency() async throws {
        try await withBroker { broker in
            let device = try MQTTClient(settings: testSettings(broker, "device"), logger: testLogger)
            let gateway = try MQTTClient(settings: testSettings(broker, "gateway"), logger: testLogger)
            try await device.connect()
            try await gateway.connect()
            try await device.subscribe("devices/d1/commands/#", qos: .atLeastOnce)
            try await gateway.subscribe("devices/d1/replies/gw", qos: .atLeastOnce)
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The device answers every command on its response topic with the same correlation data.
                group.addTask {
                    for await request in device.messages {
                        try device.publishWithoutWaiting(MQTTMessage(
                            topic: request.properties.responseTopic ?? "", string: "pong", qos: .atLeastOnce,
                            properties: MQTTProperties(correlationData: request.properties.correlationData)
                        ))
                    }
                }
                var replies = gateway.messages.makeAsyncIterator()
                var samples: [Duration] = []
                for index in 0..<500 {
                    let correlation = Array("\(index)".utf8)
                    let started = ContinuousClock.now
                    try gateway.publishWithoutWaiting(MQTTMessage(
                        topic: "devices/d1/commands/ping", string: "\(index)", qos: .atLeastOnce,
                        properties: MQTTProperties(responseTopic: "devices/d1/replies/gw", correlationData: correlation)
                    ))
                    let reply = try #require(await replies.next())
                    samples.append(ContinuousClock.now - started)
                    #expect(reply.properties.correlationData == correlation)
                }
                samples.sort()
                print("request/response RTT over 500 (QoS 1 both ways): p50 \(samples[250]), p99 \(samples[495]), max \(samples[499])")
                await device.close()
                await gateway.close()
                try await group.waitForAll()
            }
        }
    }
}
