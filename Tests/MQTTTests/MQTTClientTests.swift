import FoundationEssentials
@testable import MQTT
import Testing

/// The lines of config/mosquitto.acl.example in this repository.
func exampleACL() -> [String] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let text = (try? String(contentsOfFile: root.appendingPathComponent("config/mosquitto.acl.example").path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
}

/// MQTTClient against a real Mosquitto started per test on a free loopback port.
@Suite("MQTTClient against a real broker", .timeLimit(.minutes(1)))
struct MQTTClientTests {
    @Test("publish/subscribe round trip at QoS 0 and QoS 1")
    func roundTrip() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "sub")) { sub in
                #expect(try await sub.client.subscribe("rt/#", qos: .atLeastOnce) == .atLeastOnce)
                try await withClient(testSettings(broker, "pub")) { pub in
                    for index in 0..<10 {
                        try await pub.client.publish(topic: "rt/q0", string: "zero-\(index)", qos: .atMostOnce)
                    }
                    for index in 0..<10 {
                        let result = try await pub.client.publish(topic: "rt/q1", string: "one-\(index)", qos: .atLeastOnce)
                        #expect(result.reasonCode == 0)
                    }
                }
                let received = await sub.messages.wait(for: 20)
                #expect(received.count == 20)
                let zero = received.filter { $0.topic == "rt/q0" }
                let one = received.filter { $0.topic == "rt/q1" }
                #expect(zero.payloadStrings == (0..<10).map { "zero-\($0)" })
                #expect(one.payloadStrings == (0..<10).map { "one-\($0)" })
                #expect(zero.allSatisfy { $0.qos == .atMostOnce && !$0.retain })
                #expect(one.allSatisfy { $0.qos == .atLeastOnce && !$0.retain })
            }
        }
    }

    @Test("binary payloads arrive byte for byte, and fire-and-forget leaves no bookkeeping behind")
    func binaryAndFireAndForget() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "sub")) { sub in
                try await sub.client.subscribe("bin/#", qos: .atLeastOnce)
                let payload = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
                try await sub.client.publish(MQTTMessage(topic: "bin/x", payload: payload, qos: .atLeastOnce))
                try await sub.client.publish(MQTTMessage(topic: "bin/empty", payload: [], qos: .atMostOnce))
                for index in 0..<200 {
                    try sub.client.publishWithoutWaiting(
                        MQTTMessage(topic: "bin/f", string: "\(index)", qos: index.isMultiple(of: 2) ? .atMostOnce : .atLeastOnce)
                    )
                }
                let received = await sub.messages.wait(for: 202)
                #expect(received.count == 202)
                #expect(received.first { $0.topic == "bin/x" }?.payload == payload)
                #expect(received.first { $0.topic == "bin/empty" }?.payload == [])
                let drained = await eventually(timeout: .seconds(5)) { sub.client.pendingAcknowledgementEntries == 0 }
                #expect(drained, "ack entries left: \(sub.client.pendingAcknowledgementEntries)")
            }
        }
    }

    @Test("shared subscription: two members split the messages and together get all of them")
    func sharedSubscription() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "node-a")) { nodeA in
                try await withClient(testSettings(broker, "node-b")) { nodeB in
                    try await nodeA.client.subscribe("$share/gw/devices/+/up", qos: .atLeastOnce)
                    try await nodeB.client.subscribe("$share/gw/devices/+/up", qos: .atLeastOnce)
                    let total = 200
                    try await withClient(testSettings(broker, "devices")) { devices in
                        for index in 0..<total {
                            try await devices.client.publish(topic: "devices/dev\(index % 7)/up", string: "\(index)", qos: .atLeastOnce)
                        }
                    }
                    let deadlineReached = await nodeA.messages.wait(timeout: .seconds(10)) { _ in
                        nodeA.messages.all.count + nodeB.messages.all.count >= total
                    }
                    #expect(deadlineReached)
                    let a = nodeA.messages.all.payloadStrings
                    let b = nodeB.messages.all.payloadStrings
                    #expect(a.count + b.count == total, "a=\(a.count) b=\(b.count)")
                    #expect(!a.isEmpty && !b.isEmpty, "a=\(a.count) b=\(b.count)")
                    #expect(Set(a).isDisjoint(with: Set(b)))
                    #expect(Set(a).union(b) == Set((0..<total).map(String.init)))
                }
            }
        }
    }

    @Test("will is published when the connection breaks without DISCONNECT, and not on a clean close")
    func willMessage() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "watcher")) { watcher in
                try await watcher.client.subscribe("devices/+/status", qos: .atLeastOnce)

                // Abrupt loss: the socket is shut down under the client, no DISCONNECT is sent.
                var abrupt = testSettings(broker, "dev42")
                abrupt.will = MQTTMessage(
                    topic: "devices/dev42/status", string: "offline", qos: .atLeastOnce, retain: true,
                    properties: MQTTProperties(userProperties: [MQTTUserProperty("reason", "will")])
                )
                try await withClient(abrupt) { device in
                    try await device.client.publish(topic: "devices/dev42/status", string: "online", qos: .atLeastOnce, retain: true)
                    #expect(await watcher.messages.wait { $0.payloadStrings.contains("online") })
                    device.client.simulateConnectionLoss()
                    #expect(await device.events.wait { events in
                        events.contains { if case .disconnected(let code, _) = $0 { return code != 0 } else { return false } }
                    })
                }
                let will = await watcher.messages.wait { $0.payloadStrings.contains("offline") }
                #expect(will)
                let offline = watcher.messages.all.first { $0.payloadString == "offline" }
                #expect(offline?.topic == "devices/dev42/status")
                #expect(offline?.qos == .atLeastOnce)
                #expect(offline?.properties[userProperty: "reason"] == "will")

                // The will was retained: a late subscriber gets it from the retained store.
                try await withClient(testSettings(broker, "late")) { late in
                    try await late.client.subscribe("devices/dev42/status", qos: .atLeastOnce)
                    let retained = await late.messages.wait(for: 1)
                    #expect(retained.first?.payloadString == "offline")
                    #expect(retained.first?.retain == true)
                }

                // A clean close discards the will; close(publishWill: true) sends it.
                var graceful = testSettings(broker, "dev43")
                graceful.will = MQTTMessage(topic: "devices/dev43/status", string: "offline", qos: .atLeastOnce)
                try await withClient(graceful) { device in
                    try await device.client.publish(topic: "devices/dev43/status", string: "online", qos: .atLeastOnce)
                    await device.client.close()
                }
                var withWill = testSettings(broker, "dev44")
                withWill.will = MQTTMessage(topic: "devices/dev44/status", string: "offline", qos: .atLeastOnce)
                try await withClient(withWill) { device in
                    await device.client.close(publishWill: true)
                }
                #expect(await watcher.messages.wait { messages in
                    messages.contains { $0.topic == "devices/dev44/status" && $0.payloadString == "offline" }
                })
                let dev43 = watcher.messages.all.filter { $0.topic == "devices/dev43/status" }.payloadStrings
                #expect(dev43 == ["online"])
            }
        }
    }

    @Test("MQTT 5 request/response: response topic, correlation data and user properties arrive intact")
    func requestResponse() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "device")) { device in
                try await device.client.subscribe("devices/d1/commands/#", qos: .atLeastOnce)
                try await withClient(testSettings(broker, "gateway")) { gateway in
                    try await gateway.client.subscribe("gw/replies/node1", qos: .atLeastOnce)
                    let correlation: [UInt8] = [0, 1, 2, 0xFF, 0x80, 0, 42]
                    let userProperties = [
                        MQTTUserProperty("trace", "abc-123"),
                        MQTTUserProperty("dup", "1"),
                        MQTTUserProperty("dup", "2"),
                        MQTTUserProperty("unicode", "grüße ✓"),
                    ]
                    let started = ContinuousClock.now
                    try await gateway.client.publish(MQTTMessage(
                        topic: "devices/d1/commands/reboot",
                        string: #"{"delay":1}"#,
                        qos: .atLeastOnce,
                        properties: MQTTProperties(
                            responseTopic: "gw/replies/node1",
                            correlationData: correlation,
                            userProperties: userProperties,
                            messageExpiryInterval: 30,
                            contentType: "application/json"
                        )
                    ))
                    let requests = await device.messages.wait(for: 1)
                    let request = try #require(requests.first)
                    #expect(request.topic == "devices/d1/commands/reboot")
                    #expect(request.payloadString == #"{"delay":1}"#)
                    #expect(request.properties.responseTopic == "gw/replies/node1")
                    #expect(request.properties.correlationData == correlation)
                    #expect(request.properties.userProperties == userProperties)
                    #expect(request.properties.contentType == "application/json")
                    let expiry = try #require(request.properties.messageExpiryInterval)
                    #expect(expiry > 0 && expiry <= 30)

                    // The device answers on the response topic with the same correlation data.
                    try await device.client.publish(MQTTMessage(
                        topic: try #require(request.properties.responseTopic),
                        string: #"{"ok":true}"#,
                        qos: .atLeastOnce,
                        properties: MQTTProperties(correlationData: request.properties.correlationData)
                    ))
                    let replies = await gateway.messages.wait(for: 1)
                    let roundTrip = ContinuousClock.now - started
                    let reply = try #require(replies.first)
                    #expect(reply.payloadString == #"{"ok":true}"#)
                    #expect(reply.properties.correlationData == correlation)
                    #expect(reply.properties.responseTopic == nil)
                    print("request/response round trip (TCP_NODELAY both sides): \(roundTrip)")
                }
            }
        }
    }

    @Test("username/password: a wrong password is refused with a clear error; ACL confines devices")
    func authentication() async throws {
        try await withBroker({ settings in
            settings.allowAnonymous = false
            settings.users = [.init("gateway", password: "gw-secret"), .init("dev1", password: "dev1-pw")]
            // The ACL shipped as config/mosquitto.acl.example.
            settings.aclRules = exampleACL()
        }) { broker in
            #expect(exampleACL().contains("pattern write devices/%u/replies/#"))
            #expect(!exampleACL().contains { $0.hasPrefix("pattern readwrite") }, "the strict contract: no device reads and writes")
            var wrong = testSettings(broker, "intruder")
            wrong.username = "gateway"
            wrong.password = "not-the-password"
            let refused = try await #require(throws: MQTTError.self) {
                try await withClient(wrong) { _ in }
            }
            // Mosquitto 2.0.11 answers a wrong password with 0x87 "Not authorized" (measured),
            // not 0x86 "Bad user name or password".
            #expect(refused.code == .connectionRefused)
            #expect(refused.reasonCode == 0x87 || refused.reasonCode == 0x86)
            #expect(refused.description.contains("Not authorized") || refused.description.contains("Bad user name or password"), "\(refused)")

            let anonymous = try await #require(throws: MQTTError.self) {
                try await withClient(testSettings(broker, "anonymous")) { _ in }
            }
            #expect(anonymous.code == .connectionRefused)

            var gatewaySettings = testSettings(broker, "gateway")
            gatewaySettings.username = "gateway"
            gatewaySettings.password = "gw-secret"
            var deviceSettings = testSettings(broker, "dev1")
            deviceSettings.username = "dev1"
            deviceSettings.password = "dev1-pw"
            try await withClient(gatewaySettings) { gateway in
                try await gateway.client.subscribe("devices/#", qos: .atLeastOnce)
                try await withClient(deviceSettings) { device in
                    try await device.client.publish(topic: "devices/dev1/telemetry", string: "ok", qos: .atLeastOnce)
                    let denied = try await #require(throws: MQTTError.self) {
                        try await device.client.publish(topic: "devices/dev2/telemetry", string: "spoof", qos: .atLeastOnce)
                    }
                    #expect(denied.code == .publishRejected)
                    #expect(denied.reasonCode == 0x87)
                    // Command replies go to a response topic inside the device's own subtree.
                    try await device.client.publish(topic: "devices/dev1/replies/node1", string: "reply", qos: .atLeastOnce)
                    // A device may not write its own desired state.
                    let own = try await #require(throws: MQTTError.self) {
                        try await device.client.publish(topic: "devices/dev1/state/desired", string: "{}", qos: .atLeastOnce, retain: true)
                    }
                    #expect(own.reasonCode == 0x87)
                }
                #expect(await gateway.messages.wait { $0.payloadStrings.contains("ok") && $0.payloadStrings.contains("reply") })
                #expect(!gateway.messages.all.payloadStrings.contains("spoof"))
            }
        }
    }

    @Test("retained message reaches a later subscriber with retain set, and can be cleared")
    func retainedMessage() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "gateway")) { gateway in
                try await gateway.client.publish(
                    topic: "devices/d9/state/desired", string: #"{"version":3}"#, qos: .atLeastOnce, retain: true
                )
                try await withClient(testSettings(broker, "device")) { device in
                    try await device.client.subscribe("devices/d9/state/desired", qos: .atLeastOnce)
                    let first = await device.messages.wait(for: 1)
                    #expect(first.first?.payloadString == #"{"version":3}"#)
                    #expect(first.first?.retain == true)
                    // A live forward of a retained publish arrives with retain == false.
                    try await gateway.client.publish(topic: "devices/d9/state/desired", string: #"{"version":4}"#, qos: .atLeastOnce, retain: true)
                    let second = await device.messages.wait(for: 2)
                    #expect(second.last?.payloadString == #"{"version":4}"#)
                    #expect(second.last?.retain == false)
                }
                // An empty retained payload clears it.
                try await gateway.client.publish(MQTTMessage(topic: "devices/d9/state/desired", payload: [], qos: .atLeastOnce, retain: true))
                try await withClient(testSettings(broker, "late")) { late in
                    try await late.client.subscribe("devices/d9/state/desired", qos: .atLeastOnce)
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(late.messages.all.isEmpty)
                }
            }
        }
    }

    @Test("reconnects after the broker restarts on the same port, resubscribes, and messages flow again")
    func reconnectAfterBrokerRestart() async throws {
        try await withBroker { broker in
            let port = broker.port
            try await withClient(testSettings(broker, "node")) { node in
                try await node.client.subscribe("re/#", qos: .atLeastOnce)
                try await withClient(testSettings(broker, "before")) { pub in
                    try await pub.client.publish(topic: "re/a", string: "before", qos: .atLeastOnce)
                }
                #expect(await node.messages.wait { $0.payloadStrings == ["before"] })

                await broker.stop()
                #expect(await node.events.wait { _ in node.disconnectedCount >= 1 })
                #expect(!node.client.isConnected)
                // While the broker is down, QoS 0 fails at once; QoS 1 is queued by libmosquitto.
                let offline = try #require(throws: MQTTError.self) {
                    try node.client.publishWithoutWaiting(MQTTMessage(topic: "re/x", string: "lost", qos: .atMostOnce))
                }
                #expect(offline.code == .notConnected)

                try await broker.start()
                #expect(broker.port == port)
                #expect(await node.events.wait(timeout: .seconds(10)) { _ in node.connectedCount >= 2 })
                #expect(node.client.isConnected)
                #expect(node.client.connectionCount == 2)
                #expect(node.client.subscriptions == ["re/#"])

                // Once the renewal is acknowledged, messages flow again.
                #expect(await node.events.wait { _ in !node.renewals.isEmpty })
                #expect(node.renewals.first?.count == 1)
                #expect(node.renewals.first?.refused == [])
                try await withClient(testSettings(broker, "after")) { pub in
                    try await pub.client.publish(topic: "re/b", string: "after", qos: .atLeastOnce)
                }
                #expect(await node.messages.wait { $0.payloadStrings == ["before", "after"] })
            }
        }
    }

    @Test("while the broker is down QoS 0 fails fast; a QoS 1 publish is queued and acknowledged after the reconnect")
    func publishWhileBrokerDown() async throws {
        try await withBroker { broker in
            try await withClient(testSettings(broker, "watcher")) { watcher in
                try await watcher.client.subscribe("queued/#", qos: .atLeastOnce)
                var settings = testSettings(broker, "publisher")
                settings.operationTimeout = .seconds(15)
                try await withClient(settings) { publisher in
                    await broker.stop()
                    #expect(await publisher.events.wait { _ in publisher.disconnectedCount >= 1 })
                    let started = ContinuousClock.now
                    let error = try await #require(throws: MQTTError.self) {
                        try await publisher.client.publish(topic: "queued/x", string: "qos0 while down", qos: .atMostOnce)
                    }
                    #expect(error.code == .notConnected)
                    #expect(error.mosquittoCode == 4)
                    #expect(ContinuousClock.now - started < .seconds(1))
                    let subscribeError = try await #require(throws: MQTTError.self) {
                        try await publisher.client.subscribe("later/#")
                    }
                    #expect(subscribeError.code == .notConnected)

                    async let queued = publisher.client.publish(topic: "queued/y", string: "qos1 while down", qos: .atLeastOnce)
                    try await Task.sleep(for: .milliseconds(200))
                    try await broker.start()
                    let ack = try await queued
                    #expect(ack.reasonCode == 0 || ack.reasonCode == 0x10)
                    #expect(publisher.connectedCount >= 2)
                    // The subscription made while down was kept and renewed on reconnect.
                    #expect(publisher.client.subscriptions == ["later/#"])
                    #expect(await publisher.events.wait { _ in !publisher.renewals.isEmpty })
                    #expect(await watcher.events.wait { _ in !watcher.renewals.isEmpty })
                    try await publisher.client.publish(topic: "queued/z", string: "after", qos: .atLeastOnce)
                    #expect(await watcher.messages.wait { $0.payloadStrings.contains("after") })
                    #expect(!watcher.messages.all.payloadStrings.contains("qos0 while down"))
                }
            }
        }
    }

    @Test("connect() to a port where nothing listens times out with a clear error")
    func connectTimeout() async throws {
        let port = try EmbeddedBroker.freePort(host: "127.0.0.1")
        var settings = MQTTClient.Settings(host: "127.0.0.1", port: port)
        settings.connectTimeout = .milliseconds(1500)
        let started = ContinuousClock.now
        let error = try await #require(throws: MQTTError.self) {
            try await withClient(settings) { _ in }
        }
        #expect(error.code == .timedOut)
        #expect(error.message.contains("127.0.0.1:\(port)"))
        // Bounded, not hung (a loaded machine took 6.8 s for the 1.5 s timeout).
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("unsubscribe stops delivery; invalid filters are rejected; closed clients refuse work")
    func unsubscribeAndMisuse() async throws {
        try await withBroker { broker in
            let client = try await withClient(testSettings(broker, "c")) { c in
                try await c.client.subscribe("u/#", qos: .atMostOnce)
                try await c.client.publish(topic: "u/1", string: "one", qos: .atLeastOnce)
                #expect(await c.messages.wait { $0.count == 1 })
                try await c.client.unsubscribe("u/#")
                #expect(c.client.subscriptions.isEmpty)
                try await c.client.publish(topic: "u/2", string: "two", qos: .atLeastOnce)
                try await Task.sleep(for: .milliseconds(200))
                #expect(c.messages.all.payloadStrings == ["one"])

                let invalid = try await #require(throws: MQTTError.self) {
                    try await c.client.subscribe("bad/#/filter")
                }
                #expect(invalid.code == .invalidArgument)
                let badTopic = try #require(throws: MQTTError.self) {
                    try c.client.publishWithoutWaiting(MQTTMessage(topic: "wild/+", string: "x"))
                }
                #expect(badTopic.code == .library)
                return c.client
            }
            let closed = try await #require(throws: MQTTError.self) {
                try await client.publish(topic: "u/3", string: "after close")
            }
            #expect(closed.code == .closed)
            await #expect(throws: MQTTError.self) { try await client.connect() }
        }
    }

    @Test("several brokers at once, one client each, stay separate")
    func severalBrokers() async throws {
        try await withBroker { first in
            try await withBroker { second in
                #expect(first.port != second.port)
                try await withClient(testSettings(first, "one")) { one in
                    try await withClient(testSettings(second, "two")) { two in
                        try await one.client.subscribe("x/#")
                        try await two.client.subscribe("x/#")
                        try await one.client.publish(topic: "x/1", string: "from-first", qos: .atLeastOnce)
                        try await two.client.publish(topic: "x/2", string: "from-second", qos: .atLeastOnce)
                        #expect(await one.messages.wait { !$0.isEmpty })
                        #expect(await two.messages.wait { !$0.isEmpty })
                        try await Task.sleep(for: .milliseconds(100))
                        #expect(one.messages.all.payloadStrings == ["from-first"])
                        #expect(two.messages.all.payloadStrings == ["from-second"])
                    }
                }
            }
        }
    }
}
