import Foundation
import MQTT
import Synchronization
import Testing

/// Three `swarm-gateway` processes on one test broker, for `body` (HTTP base URLs and the
/// processes by node name); every process is killed afterwards.
func withGatewayProcesses(
    _ names: [String], broker: EmbeddedBroker, _ body: ([String: String], [String: Process]) async throws -> Void
) async throws {
    let binary = try #require(swarmGatewayBinary)
    let data = FileManager.default.temporaryDirectory.appendingPathComponent("gw-processes-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: data) }
    var processes: [String: Process] = [:]
    var bases: [String: String] = [:]
    defer {
        for process in processes.values where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes.values { process.waitUntilExit() }
    }
    var seed: String?
    for name in names {
        let (cluster, http) = (try freePort(), try freePort())
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "run", "--node-name", name, "--cluster-listen", "127.0.0.1:\(cluster)", "--http-listen", "127.0.0.1:\(http)",
            "--broker", "mqtt://127.0.0.1:\(broker.port)", "--data-dir", data.appendingPathComponent(name).path, "--log-level", "error",
        ] + (seed.map { ["--seeds", $0] } ?? [])
        process.environment = ["SWARM_GATEWAY_CLUSTER_SECRET": "queued-command-test-secret", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        processes[name] = process
        bases[name] = "http://127.0.0.1:\(http)"
        if seed == nil { seed = "127.0.0.1:\(cluster)" }
        var ready = false
        for _ in 0..<300 where !ready {
            ready = (try? await curl(["\(bases[name]!)/readyz"]))?.status == 200
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(ready, "\(name) did not become ready")
    }
    // Every node sees the whole ring.
    for (name, base) in bases {
        var ring: [String] = []
        for _ in 0..<300 where ring.count < names.count {
            let body = (try? await curl(["\(base)/v1/cluster/tracker"]))?.body ?? ""
            ring = ((try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["ringNodes"] as? [String]) ?? []
            if ring.count < names.count { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(ring.count == names.count, "\(name) sees the ring \(ring)")
    }
    try await body(bases, processes)
}

@Suite(
    "Queued commands across node processes", .serialized, .timeLimit(.minutes(5)),
    .enabled(if: swarmGatewayBinary != nil, "swarm-gateway is not built: run `swift build --build-tests` first"))
struct QueuedCommandProcessTests {
    @Test("kill -9 of the owner while commands are queued: a survivor holds the queue and delivers it, in order, when the device comes back; the expired one never")
    func killOwner() async throws {
        var settings = EmbeddedBroker.Settings()
        settings.startTimeout = .seconds(10)
        settings.stopTimeout = .seconds(3)
        let broker = try EmbeddedBroker(settings: settings)
        try await broker.start()
        do {
            try await Self.scenario(broker)
        } catch {
            await broker.stop()
            throw error
        }
        await broker.stop()
    }

    static func scenario(_ broker: EmbeddedBroker) async throws {
        try await withGatewayProcesses(["gw-q1", "gw-q2", "gw-q3"], broker: broker) { bases, processes in
            let any = bases["gw-q1"]!
            #expect(try await curl(["-X", "PUT", "-d", "{}", "\(any)/v1/devices/qk-1"]).status == 201)
            var ids: [String] = []
            for (index, name) in ["one", "two", "three"].enumerated() {
                let base = bases[["gw-q1", "gw-q2", "gw-q3"][index]]!
                let queued = try await curl(["-X", "POST", "-d", #"{"n":\#(index)}"#, "\(base)/v1/devices/qk-1/commands/\(name)?ttl=300"])
                #expect(queued.status == 202, "\(queued)")
                ids.append(try #require(jsonObject(queued.body)?["id"] as? String))
            }
            let stale = try await curl(["-X", "POST", "-d", "{}", "\(any)/v1/devices/qk-1/commands/stale?ttl=1"])
            let staleID = try #require(jsonObject(stale.body)?["id"] as? String)

            let owner = try #require(jsonObject(try await curl(["\(any)/v1/devices/qk-1"]).body)?["node"] as? String)
            let victim = try #require(processes[owner])
            kill(victim.processIdentifier, SIGKILL)
            victim.waitUntilExit()
            let survivor = try #require(bases.first { $0.key != owner }?.value)

            // The device runs again on a survivor, with its queue (the replica of its last checkpoint).
            var host: String?
            var statuses: [String] = []
            for _ in 0..<200 {
                let twin = jsonObject(try await curl(["\(survivor)/v1/devices/qk-1"]).body)
                host = twin?["node"] as? String
                let list = jsonObject(try await curl(["\(survivor)/v1/devices/qk-1/commands"]).body)
                statuses = ((list?["commands"] as? [[String: Any]]) ?? []).compactMap { $0["status"] as? String }
                if let host, host != owner, statuses == ["queued", "queued", "queued", "expired"] { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(host != nil && host != owner, "recovered on a survivor, not \(owner)")
            #expect(statuses == ["queued", "queued", "queued", "expired"])

            // The device comes back: subscribes, announces itself, answers what arrives.
            var deviceSettings = broker.clientSettings()
            deviceSettings.clientID = "qk-1"
            let device = try MQTTClient(settings: deviceSettings)
            try await device.connect()
            try await device.subscribe("devices/qk-1/commands/+", qos: .atLeastOnce)
            let received = Mutex<[String]>([])
            let consumer = Task {
                for await message in device.messages {
                    let name = String(message.topic.split(separator: "/").last ?? "")
                    received.withLock { $0.append(name) }
                    if let topic = message.properties.responseTopic {
                        _ = try? await device.publish(MQTTMessage(
                            topic: topic, payload: Array(#"{"done":"\#(name)"}"#.utf8), qos: .atLeastOnce,
                            properties: MQTTProperties(correlationData: message.properties.correlationData)))
                    }
                }
            }
            _ = try await device.publish(MQTTMessage(topic: "devices/qk-1/status", payload: Array(#"{"status":"online"}"#.utf8), qos: .atLeastOnce, retain: true))
            var answered: [String] = []
            for _ in 0..<200 {
                answered = []
                for id in ids {
                    let status = jsonObject(try await curl(["\(survivor)/v1/devices/qk-1/commands/\(id)"]).body)
                    if status?["status"] as? String == "answered", let reply = status?["reply"] as? [String: Any] { answered.append(reply["done"] as? String ?? "?") }
                }
                if answered.count == 3 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(answered == ["one", "two", "three"])
            #expect(received.withLock { $0 } == ["one", "two", "three"], "delivered once each, in queue order; the expired one never")
            let staleStatus = jsonObject(try await curl(["\(survivor)/v1/devices/qk-1/commands/\(staleID)"]).body)
            #expect(staleStatus?["status"] as? String == "expired")
            consumer.cancel()
            await device.close()
            for (name, process) in processes where name != owner { kill(process.processIdentifier, SIGTERM) }
            let deadline = ContinuousClock.now + .seconds(40)
            while processes.values.contains(where: \.isRunning) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        }
    }
}
