import Foundation
import GatewayStore
import GatewayStoreEngines
import Logging
import MQTT
import NIOCore
import NIOPosix
import SQLiteNIO
import Testing

/// The durable store (docs/deployment.md) with real `swarm-gateway` processes, a real Mosquitto, real SQLite files and a real
/// PostgreSQL server: every node killed with SIGKILL and started again (the same node set, and a
/// smaller one with other names), every node stopped with SIGTERM at once, schema migration and
/// a store written by a newer build.
@Suite(
    "durable store: full-cluster restarts of real nodes", .serialized, .timeLimit(.minutes(10)),
    .enabled(if: swarmGatewayBinary != nil, "swarm-gateway is not built: run `swift build --build-tests` first"))
struct DurableStoreProcessTests {
    /// What the test writes before the restart: per device, its desired version and state, tags
    /// and groups (API writes: durable before the answer), and reported state and birth metadata
    /// (device data: written behind).
    struct Expected {
        var version: Int
        var desired: [String: Int]
        var tags: [String: String]
        var groups: [String]
        var reported: [String: Int]?
        var model: String?
    }

    /// Starts `names` (with `directories`) as one cluster on `broker`, waits until each is ready.
    func startCluster(
        _ names: [String], directories: [String], ports: [(http: Int, cluster: Int)], broker: EmbeddedBroker, store: TestStore,
        logs: String, extra: [String] = []
    ) async throws -> [GatewayChild] {
        let nodes = zip(names, zip(directories, ports)).map { name, rest in
            GatewayChild(name: name, dataDirectory: rest.0, httpPort: rest.1.http, clusterPort: rest.1.cluster, logDirectory: logs)
        }
        for node in nodes {
            try node.start(
                brokerPort: broker.port, seeds: nodes.filter { $0 !== node }.map(\.clusterPort), store: store.url, extra: extra)
        }
        for node in nodes {
            let ready = await node.waitReady(timeout: .seconds(90))
            if !ready { print("--- \(node.name) log ---\n\(node.log.suffix(4000))") }
            try #require(ready, "\(node.name) did not become ready")
        }
        // Every node sees the whole ring (so the writes below spread over every node).
        let formed = try await eventuallyTrue(timeout: .seconds(30)) {
            for node in nodes {
                let body = try await curl(["\(node.base)/v1/cluster/tracker"]).body
                if ((jsonObject(body)?["ringNodes"] as? [String]) ?? []).count != nodes.count { return false }
            }
            return true
        }
        try #require(formed, "the ring did not form")
        return nodes
    }

    /// Provisions `count` devices through alternating nodes and patches their desired state
    /// `patches` times; devices with an even index also report state and send a birth.
    func writeFleet(_ nodes: [GatewayChild], count: Int, patches: Int, broker: EmbeddedBroker) async throws -> [String: Expected] {
        var expected: [String: Expected] = [:]
        for index in 0..<count {
            let id = "dev-\(index)"
            let node = nodes[index % nodes.count]
            let groups = index % 2 == 0 ? ["all", "even"] : ["all"]
            let body = #"{"tags":{"site":"s\#(index % 3)"},"groups":\#(index % 2 == 0 ? #"["even"]"# : "[]")}"#
            let put = try await curl(["-X", "PUT", "-H", "Content-Type: application/json", "-d", body, "\(node.base)/v1/devices/\(id)"])
            try #require(put.status == 201, "PUT \(id): \(put)")
            var desired: [String: Int] = [:]
            var version = 0
            for patch in 1...patches {
                let answer = try await patchDesired(nodes[(index + patch) % nodes.count], id, #"{"level":\#(patch * 10 + index)}"#)
                try #require(answer.status == 200, "PATCH \(id): \(answer)")
                version = answer.version ?? -1
                desired["level"] = patch * 10 + index
            }
            expected[id] = Expected(version: version, desired: desired, tags: ["site": "s\(index % 3)"], groups: groups, reported: nil, model: nil)
        }
        // Device data for the even ones: a birth with metadata and a reported state.
        var settings = MQTTClient.Settings(host: "127.0.0.1", port: broker.port)
        settings.clientID = "fleet-writer-\(UInt16.random(in: 0...UInt16.max))"
        let client = try MQTTClient(settings: settings)
        try await client.connect()
        for index in stride(from: 0, to: count, by: 2) {
            let id = "dev-\(index)"
            _ = try await client.publish(MQTTMessage(topic: "devices/\(id)/status", payload: Array(#"{"status":"online","model":"m-\#(index)"}"#.utf8), qos: .atLeastOnce, retain: true))
            _ = try await client.publish(MQTTMessage(topic: "devices/\(id)/state/reported", payload: Array(#"{"fw":\#(index)}"#.utf8), qos: .atLeastOnce))
            expected[id]!.reported = ["fw": index]
            expected[id]!.model = "m-\(index)"
        }
        await client.close()
        return expected
    }

    /// Waits until the stores hold every expected device with its reported state (device data is
    /// written behind: this is the event the test waits for before killing every node).
    func waitStored(_ store: TestStore, _ nodes: [GatewayChild], _ expected: [String: Expected]) async throws {
        let stored = try await eventuallyTrue(timeout: .seconds(30)) {
            let states = try await store.storedStates(nodes)
            return expected.allSatisfy { id, want in
                guard let state = states[id], (state["version"] as? Int) == want.version else { return false }
                guard let reported = want.reported else { return true }
                return ((state["reported"] as? [String: Any])?["fw"] as? Int) == reported["fw"]
            }
        }
        try #require(stored, "the stores did not get every device within 30 s")
    }

    /// Checks every twin on `node` against `expected`; returns the problems.
    func check(_ node: GatewayChild, _ expected: [String: Expected]) async throws -> [String] {
        var problems: [String] = []
        for (id, want) in expected.sorted(by: { $0.key < $1.key }) {
            guard let twin = try await twin(node, id) else {
                problems.append("\(id): not served by \(node.name)")
                continue
            }
            if (twin["version"] as? Int) != want.version { problems.append("\(id): version \(twin["version"] ?? "nil"), expected \(want.version)") }
            if ((twin["desired"] as? [String: Any])?["level"] as? Int) != want.desired["level"] { problems.append("\(id): desired \(twin["desired"] ?? "nil")") }
            if ((twin["tags"] as? [String: Any])?["site"] as? String) != want.tags["site"] { problems.append("\(id): tags \(twin["tags"] ?? "nil")") }
            if ((twin["groups"] as? [String]) ?? []).sorted() != want.groups.sorted() { problems.append("\(id): groups \(twin["groups"] ?? "nil")") }
            if let reported = want.reported, ((twin["reported"] as? [String: Any])?["fw"] as? Int) != reported["fw"] {
                problems.append("\(id): reported \(twin["reported"] ?? "nil")")
            }
            if let model = want.model, ((twin["metadata"] as? [String: Any])?["model"] as? String) != model {
                problems.append("\(id): metadata \(twin["metadata"] ?? "nil")")
            }
        }
        return problems
    }

    /// Group membership as the cluster sees it (Swarm groups, not only the twins' lists).
    func members(_ node: GatewayChild, group: String) async throws -> Set<String> {
        let body = try await curl(["\(node.base)/v1/groups/\(group)"]).body
        return Set((jsonObject(body)?["members"] as? [String]) ?? [])
    }

    func ports(_ count: Int) throws -> [(http: Int, cluster: Int)] {
        try (0..<count).map { _ in (try freePort(), try freePort()) }
    }

    @Test("kill -9 of every node, then the same nodes again: every twin is back, the desired version continues, a version-checking device applies the next patch", arguments: StoreEngine.allCases)
    func fullClusterKillSameSet(_ engine: StoreEngine) async throws {
        let store = try TestStore.make(engine)
        defer { store.remove() }
        try await withScratchDirectory { scratch in
            try await withTestBroker { broker in
                let names = ["gw-1", "gw-2", "gw-3"]
                let directories = names.map { "\(scratch)/\($0)" }
                let ports = try ports(3)
                var nodes = try await startCluster(names, directories: directories, ports: ports, broker: broker, store: store, logs: scratch)
                defer { for node in nodes { node.kill9() } }
                let device = try VersionCheckingDevice(id: "dev-0", brokerPort: broker.port)
                try await device.start()
                let consumer = Task { await device.consume() }
                defer { consumer.cancel() }
                let expected = try await writeFleet(nodes, count: 24, patches: 3, broker: broker)
                #expect(await eventuallyTrue { device.applied == 3 }, "the device applied v3 before the restart")
                // A command queued for an offline device (odd ones never sent a birth).
                let queued = try await curl(["-X", "POST", "-d", #"{"reboot":true}"#, "\(nodes[0].base)/v1/devices/dev-3/commands/reboot?ttl=600"])
                try #require(queued.status == 202, "\(queued)")
                let commandID = try #require(jsonObject(queued.body)?["id"] as? String)
                try await waitStored(store, nodes, expected)

                for node in nodes { node.kill9() }
                let restarted = ContinuousClock.now
                nodes = try await startCluster(names, directories: directories, ports: ports, broker: broker, store: store, logs: scratch)
                print("\(engine): every node ready again \(ContinuousClock.now - restarted) after the restart")
                for node in nodes {
                    let problems = try await check(node, expected)
                    #expect(problems.isEmpty, "\(node.name): \(problems.prefix(10))")
                }
                #expect(try await members(nodes[1], group: "even") == Set(expected.filter { $0.value.groups.contains("even") }.keys))
                let command = try await curl(["\(nodes[2].base)/v1/devices/dev-3/commands/\(commandID)"])
                #expect(command.status == 200 && (jsonObject(command.body)?["status"] as? String) == "queued", "the queued command is back: \(command)")

                // The next patch is above every version before it, and the device takes it.
                let next = try await patchDesired(nodes[2], "dev-0", #"{"level":999}"#)
                #expect(next.status == 200 && next.version == expected["dev-0"]!.version + 1, "\(next)")
                #expect(await eventuallyTrue { device.applied == expected["dev-0"]!.version + 1 }, "the device applied the first patch after the restart (ignored: \(device.ignored))")
                for (id, want) in expected.prefix(6) where id != "dev-0" {
                    let answer = try await patchDesired(nodes[0], id, #"{"after":1}"#)
                    #expect(answer.status == 200 && answer.version == want.version + 1, "\(id): \(answer)")
                }
            }
        }
    }

    @Test("kill -9 of every node, then two nodes with other names on two of the three data directories: every twin is back (successor replicas), versions continue", arguments: StoreEngine.allCases)
    func fullClusterKillSmallerSet(_ engine: StoreEngine) async throws {
        let store = try TestStore.make(engine)
        defer { store.remove() }
        try await withScratchDirectory { scratch in
            try await withTestBroker { broker in
                let names = ["gw-1", "gw-2", "gw-3"]
                let directories = names.map { "\(scratch)/\($0)" }
                var nodes = try await startCluster(names, directories: directories, ports: try ports(3), broker: broker, store: store, logs: scratch)
                defer { for node in nodes { node.kill9() } }
                let expected = try await writeFleet(nodes, count: 30, patches: 2, broker: broker)
                try await waitStored(store, nodes, expected)
                for node in nodes { node.kill9() }

                // gw-3's disk is gone; the others come back under new names.
                let survivors = Array(directories.prefix(2))
                nodes = try await startCluster(["gw-x", "gw-y"], directories: survivors, ports: try ports(2), broker: broker, store: store, logs: scratch)
                for node in nodes {
                    let problems = try await check(node, expected)
                    #expect(problems.isEmpty, "\(node.name): \(problems.prefix(10))")
                }
                for (id, want) in expected.sorted(by: { $0.key < $1.key }).prefix(10) {
                    let answer = try await patchDesired(nodes[1], id, #"{"after":2}"#)
                    #expect(answer.status == 200 && answer.version == want.version + 1, "\(id): \(answer)")
                }
            }
        }
    }

    @Test("SIGTERM to every node at once: each exits in seconds (no peer to drain to, no 30 s wait), nothing is lost", arguments: StoreEngine.allCases)
    func simultaneousSigterm(_ engine: StoreEngine) async throws {
        let store = try TestStore.make(engine)
        defer { store.remove() }
        try await withScratchDirectory { scratch in
            try await withTestBroker { broker in
                let names = ["gw-1", "gw-2", "gw-3"]
                let directories = names.map { "\(scratch)/\($0)" }
                let ports = try ports(3)
                var nodes = try await startCluster(names, directories: directories, ports: ports, broker: broker, store: store, logs: scratch)
                defer { for node in nodes { node.kill9() } }
                let expected = try await writeFleet(nodes, count: 18, patches: 2, broker: broker)
                // Device data reached the owners (in memory) — every device's, since the three
                // nodes take shares of the broker's deliveries in no common order; it is flushed
                // by the shutdown.
                let seen = try await eventuallyTrue {
                    try await check(nodes[0], expected).isEmpty
                }
                let missing = seen ? [] : Array(try await check(nodes[0], expected).prefix(10))
                try #require(seen, "the twins never showed every device's data: \(missing)")

                let started = ContinuousClock.now
                for node in nodes { node.terminate() }
                var statuses: [Int32?] = []
                for node in nodes { statuses.append(await node.waitExit(timeout: .seconds(25))) }
                let took = ContinuousClock.now - started
                print("\(engine): all three nodes exited \(took) after SIGTERM: \(statuses)")
                #expect(statuses.allSatisfy { $0 == 0 }, "exit statuses \(statuses)")
                #expect(took < .seconds(10), "stopping took \(took) (drain timeout 30 s)")

                nodes = try await startCluster(names, directories: directories, ports: ports, broker: broker, store: store, logs: scratch)
                let problems = try await check(nodes[0], expected)
                #expect(problems.isEmpty, "\(problems.prefix(10))")
            }
        }
    }

    @Test("a store of an older schema is migrated at start and its devices served; a store of a newer schema stops the node with 78 naming the version")
    func migrationAndNewerSchema() async throws {
        try await withScratchDirectory { scratch in
            try await withTestBroker { broker in
                var quiet = Logger(label: "test.store")
                quiet.logLevel = .critical
                // A data directory written by a build that knew schema version 1 only.
                let directory = "\(scratch)/old"
                let old = SQLiteDeviceStore(directory: directory, logger: quiet)
                try await old.open(upTo: 1)
                let version = try? await old.schemaVersion()
                await old.close()
                #expect(version == 1)
                // A row as that build wrote it (its checkpoint JSON had no revision fields).
                let state = #"{"id":"legacy-1","online":false,"version":7,"desired":{"mode":"eco"},"tags":{"site":"old"},"groups":["all"]}"#
                try await withSQLite("\(directory)/\(SQLiteDeviceStore.fileName)") { connection in
                    _ = try await connection.query(
                        "INSERT INTO swarm_devices (id, role, desired_version, revision, node, state) VALUES ('legacy-1', 0, 7, 5, 'gw-old', ?)",
                        [.blob(ByteBuffer(bytes: Array(state.utf8)))])
                }

                let (http, cluster) = (try freePort(), try freePort())
                let node = GatewayChild(name: "gw-new", dataDirectory: directory, httpPort: http, clusterPort: cluster, logDirectory: scratch)
                try node.start(brokerPort: broker.port, seeds: [], store: nil)
                defer { node.kill9() }
                try #require(await node.waitReady(), "\(node.log.suffix(3000))")
                let served = try await twin(node, "legacy-1")
                #expect((served?["version"] as? Int) == 7 && ((served?["desired"] as? [String: Any])?["mode"] as? String) == "eco", "\(served ?? [:])")
                let next = try await patchDesired(node, "legacy-1", #"{"mode":"max"}"#)
                #expect(next.status == 200 && next.version == 8, "\(next)")
                #expect(node.log.contains("schema migrated to version \(latestSchemaVersion)"), "the migration is logged")
                node.terminate()
                #expect(await node.waitExit(timeout: .seconds(20)) == 0)

                // The same directory as written by a newer build.
                try await withSQLite("\(directory)/\(SQLiteDeviceStore.fileName)") { connection in
                    _ = try await connection.query("INSERT INTO swarm_schema (version, applied_at, build) VALUES (99, 0, 'a newer build')")
                }
                let (status, output) = try await runGateway([
                    "run", "--node-name", "gw-new", "--cluster-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    "--broker", "mqtt://127.0.0.1:\(broker.port)", "--data-dir", directory,
                ])
                #expect(status == 78, "\(output)")
                #expect(output.contains("schema version 99") && output.contains("newer build"), "\(output)")
            }
        }
    }
}

/// A connection of its own to the SQLite file at `path` for `body`, closed afterwards.
func withSQLite(_ path: String, _ body: (SQLiteConnection) async throws -> Void) async throws {
    var logger = Logger(label: "test.sqlite")
    logger.logLevel = .critical
    let connection = try await SQLiteConnection.open(
        storage: .file(path: path), threadPool: .singleton, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
    do {
        try await body(connection)
        try await connection.close()
    } catch {
        try? await connection.close()
        throw error
    }
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
func eventuallyTrue(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return try await condition()
}
