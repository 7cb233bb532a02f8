import DeviceSimulator
import MQTT
import SwarmJSON
import Testing

/// The simulator against a real mosquitto, observed by real MQTTClients.
@Suite("Fleet against a real broker", .timeLimit(.minutes(1)))
struct FleetRunnerTests {
    @Test("birth is retained with model, firmware and groups; a clean exit publishes offline")
    func birthAndCleanExit() async throws {
        try await withBroker { broker in
            let url = try BrokerURL.parse("mqtt://127.0.0.1:\(broker.port)")
            var settings = FleetRunner.Settings(broker: url)
            settings.threads = 1
            let runner = try FleetRunner(devices: [DeviceSpec(id: "dev-1", profile: try testProfile(telemetryIntervalMs: 0))], settings: settings)
            try runner.start()
            #expect(await runner.waitUntilConnected(timeout: .seconds(10)))
            // A subscriber that arrives after the birth gets it from the retained store.
            try await withObserver(broker, subscribe: ["devices/+/status"]) { _, inbox in
                #expect(await inbox.wait { !$0.isEmpty })
                let birth = try #require(inbox.all.first)
                #expect(birth.topic == "devices/dev-1/status")
                #expect(birth.retain)
                let value = try JSONValue.parse(birth.payload)
                #expect(value == ["status": "online", "model": "TEST-1", "firmware": "9.9.9", "groups": ["lab", "all-tests"]])
                let stats = await runner.stop(abruptFraction: 0)
                #expect(stats.cleanExits == 1)
                #expect(stats.abruptExits == 0)
                #expect(await inbox.wait { $0.count >= 2 })
                #expect(try JSONValue.parse(inbox.all[1].payload) == ["status": "offline"])
                // No will on top of it: the broker saw the DISCONNECT.
                try await Task.sleep(for: .milliseconds(200))
                #expect(inbox.all.count == 2)
            }
            // The offline status stays retained.
            try await withObserver(broker, subscribe: ["devices/dev-1/status"]) { _, inbox in
                #expect(await inbox.wait { !$0.isEmpty })
                #expect(inbox.all.first?.retain == true)
                let retained = try #require(inbox.all.first)
                #expect(try JSONValue.parse(retained.payload) == ["status": "offline"])
            }
        }
    }

    @Test("an abrupt exit closes the socket without DISCONNECT: the broker publishes the will")
    func abruptExitSendsWill() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: ["devices/+/status"]) { _, inbox in
                let url = try BrokerURL.parse("mqtt://127.0.0.1:\(broker.port)")
                var settings = FleetRunner.Settings(broker: url)
                settings.threads = 1
                let runner = try FleetRunner(devices: [DeviceSpec(id: "dev-w", profile: try testProfile(telemetryIntervalMs: 0))], settings: settings)
                try runner.start()
                #expect(await inbox.wait { $0.count >= 1 })
                #expect(try JSONValue.parse(inbox.all[0].payload)["status"] == "online")
                let stats = await runner.stop(abruptFraction: 1)
                #expect(stats.abruptExits == 1)
                #expect(stats.cleanExits == 0)
                // The device itself never publishes offline on an abrupt exit: this is the will.
                #expect(await inbox.wait { $0.count >= 2 })
                #expect(inbox.all[1].topic == "devices/dev-w/status")
                #expect(try JSONValue.parse(inbox.all[1].payload) == ["status": "offline"])
            }
        }
    }

    @Test("abrupt fraction splits the fleet evenly")
    func abruptFraction() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: ["devices/+/status"]) { _, inbox in
                let ids = (1...10).map { "frac-\($0)" }
                try await withFleet(broker, ids: ids, profile: try testProfile(telemetryIntervalMs: 0)) { runner in
                    #expect(await runner.waitUntilConnected(timeout: .seconds(10)))
                    let stats = await runner.stop(abruptFraction: 0.3)
                    #expect(stats.abruptExits == 3)
                    #expect(stats.cleanExits == 7)
                    let offline = { (messages: [MQTTMessage]) in
                        messages.filter { (try? JSONValue.parse($0.payload)["status"]) == "offline" }.count
                    }
                    let complete = await inbox.wait { offline($0) == 10 }
                    #expect(complete, "status messages: \(inbox.all.map { "\($0.topic) \($0.payloadString)" })")
                }
            }
        }
    }

    @Test("telemetry carries an increasing seq from 1 and the profile's fields")
    func telemetrySequence() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: ["devices/tele-1/telemetry"]) { _, inbox in
                try await withFleet(broker, ids: ["tele-1"], profile: try testProfile(telemetryIntervalMs: 20, payloadBytes: 100)) { runner in
                    #expect(await inbox.wait { $0.count >= 10 })
                    let values = try inbox.all.prefix(10).map { try JSONValue.parse($0.payload) }
                    let seqs = values.compactMap { $0["seq"]?.intValue }
                    #expect(seqs == Array(1...10))
                    for value in values {
                        #expect(value["t"]?.doubleValue != nil)
                        #expect(value["n"]?.intValue != nil)
                        #expect(value["ts"]?.intValue != nil)
                    }
                    #expect(inbox.all.allSatisfy { $0.payload.count == 100 })
                    #expect(runner.stats().telemetrySent >= 10)
                }
            }
        }
    }

    @Test("a command is answered on the response topic with the same correlation data")
    func commandRoundTrip() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: ["replies/#"]) { client, inbox in
                try await withFleet(broker, ids: ["cmd-1"]) { runner in
                    #expect(await runner.waitUntilConnected(timeout: .seconds(10)))
                    try await Task.sleep(for: .milliseconds(100))  // SUBACK of the device
                    func request(_ name: String, _ correlation: [UInt8]) async throws {
                        try await client.publish(
                            MQTTMessage(
                                topic: "devices/cmd-1/commands/\(name)", string: #"{"arg":1}"#, qos: .atLeastOnce,
                                properties: MQTTProperties(responseTopic: "replies/gw-1", correlationData: correlation)))
                    }
                    try await request("reboot", [1, 2, 3])
                    #expect(await inbox.wait { $0.count >= 1 })
                    let reply = inbox.all[0]
                    #expect(reply.topic == "replies/gw-1")
                    #expect(reply.properties.correlationData == [1, 2, 3])
                    let body = try JSONValue.parse(reply.payload)
                    #expect(body["ok"] == true)
                    #expect(body["command"] == "reboot")
                    #expect(body["device"] == "cmd-1")
                    #expect(body["rebooting"] == true)
                    #expect(body["request"] == ["arg": 1])

                    // Never answered (timeout testing), then a slow one, then an unknown one.
                    try await request("hang", [9])
                    // Before the request: the device's delay starts when it receives it, which can
                    // be before `request` returns on a loaded machine.
                    let sent = ContinuousClock.now
                    try await request("slow", [7])
                    try await request("nope", [8])
                    #expect(await inbox.wait { $0.count >= 3 })
                    let byCorrelation = Dictionary(inbox.all.map { ($0.properties.correlationData ?? [], $0) }, uniquingKeysWith: { a, _ in a })
                    #expect(byCorrelation[[9]] == nil)
                    let slow = try #require(byCorrelation[[7]])
                    #expect(try JSONValue.parse(slow.payload)["ok"] == true)
                    #expect(ContinuousClock.now - sent >= .milliseconds(250))
                    let unknown = try #require(byCorrelation[[8]])
                    #expect(try JSONValue.parse(unknown.payload)["ok"] == false)
                    try await Task.sleep(for: .milliseconds(200))
                    #expect(byCorrelation[[9]] == nil && inbox.all.count == 3)
                    let stats = runner.stats()
                    #expect(stats.commandsReceived == 4)
                    #expect(stats.commandsAnswered == 3)
                    #expect(stats.commandsUnanswered == 1)
                }
            }
        }
    }

    @Test("desired state is applied and reported back; an older version is ignored")
    func desiredState() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: ["devices/des-1/state/reported"]) { client, inbox in
                try await withFleet(broker, ids: ["des-1"]) { runner in
                    // After connecting the device reports its whole initial document.
                    #expect(await inbox.wait { $0.count >= 1 })
                    #expect(try JSONValue.parse(inbox.all[0].payload) == ["mode": "auto", "setpoint": 20])
                    try await client.publish(
                        topic: "devices/des-1/state/desired", string: #"{"version":3,"state":{"setpoint":23,"mode":"eco"}}"#,
                        qos: .atLeastOnce, retain: true)
                    #expect(await inbox.wait { $0.count >= 2 })
                    #expect(try JSONValue.parse(inbox.all[1].payload) == ["setpoint": 23, "mode": "eco"])
                    try await client.publish(
                        topic: "devices/des-1/state/desired", string: #"{"version":2,"state":{"setpoint":1}}"#, qos: .atLeastOnce)
                    try await client.publish(topic: "devices/des-1/state/desired", string: "not json", qos: .atLeastOnce)
                    #expect(await eventually { runner.stats().desiredStale == 1 && runner.stats().desiredInvalid == 1 })
                    #expect(runner.stats().desiredApplied == 1)
                    #expect(inbox.all.count == 2)
                }
            }
        }
    }

    @Test("broadcasts on down are counted")
    func broadcasts() async throws {
        try await withBroker { broker in
            try await withObserver(broker, subscribe: []) { client, _ in
                try await withFleet(broker, ids: ["b-1", "b-2"]) { runner in
                    #expect(await runner.waitUntilConnected(timeout: .seconds(10)))
                    try await Task.sleep(for: .milliseconds(100))
                    for id in ["b-1", "b-2"] {
                        for index in 0..<3 {
                            try await client.publish(topic: "devices/\(id)/down", string: #"{"n":\#(index)}"#, qos: .atLeastOnce)
                        }
                    }
                    #expect(await eventually { runner.stats().broadcastsReceived == 6 })
                }
            }
        }
    }

    @Test("{id} credentials work with the per-device ACL pattern devices/%u/#")
    func perDeviceCredentials() async throws {
        try await withBroker({ settings in
            settings.allowAnonymous = false
            settings.users = [.init("acl-1", password: "pw-acl-1"), .init("gateway", password: "gw")]
            settings.aclRules = ["user gateway", "topic readwrite devices/#", "pattern readwrite devices/%u/#"]
        }) { broker in
            try await withObserver(broker, username: "gateway", password: "gw", subscribe: ["devices/+/status"]) { _, inbox in
                try await withFleet(broker, ids: ["acl-1"], brokerURL: "mqtt://{id}:pw-{id}@127.0.0.1:\(broker.port)") { runner in
                    #expect(await runner.waitUntilConnected(timeout: .seconds(10)))
                    #expect(await inbox.wait { !$0.isEmpty })
                    #expect(inbox.all[0].topic == "devices/acl-1/status")
                    #expect(await eventually { runner.stats().telemetrySent >= 3 })
                    #expect(runner.stats().rejected == 0)
                }
            }
        }
    }
}
