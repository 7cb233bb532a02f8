import Foundation
import GatewayStore
import GatewayStoreEngines
import Logging
import MQTT
import Testing

/// One `swarm-gateway run` child process of a test cluster: its own data directory, HTTP and
/// cluster ports, an external broker, a log file (printed when a test fails on it).
final class GatewayChild: @unchecked Sendable {
    let name: String
    let dataDirectory: String
    let httpPort: Int
    let clusterPort: Int
    let logPath: String
    private(set) var process: Process?

    init(name: String, dataDirectory: String, httpPort: Int, clusterPort: Int, logDirectory: String) {
        self.name = name
        self.dataDirectory = dataDirectory
        self.httpPort = httpPort
        self.clusterPort = clusterPort
        self.logPath = "\(logDirectory)/\(name).log"
    }

    var base: String { "http://127.0.0.1:\(httpPort)" }
    var isRunning: Bool { process?.isRunning ?? false }

    /// Starts the node (seeds: the other nodes' cluster ports).
    func start(brokerPort: Int, seeds: [Int], store: String?, extra: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(swarmGatewayBinary))
        var arguments = [
            "run", "--node-name", name, "--cluster-listen", "127.0.0.1:\(clusterPort)", "--http-listen", "127.0.0.1:\(httpPort)",
            "--broker", "mqtt://127.0.0.1:\(brokerPort)", "--data-dir", dataDirectory, "--log-level", "info",
        ]
        if !seeds.isEmpty { arguments += ["--seeds", seeds.map { "127.0.0.1:\($0)" }.joined(separator: ",")] }
        if let store { arguments += ["--store", store] }
        process.arguments = arguments + extra
        process.environment = ["SWARM_GATEWAY_CLUSTER_SECRET": "durable-store-test-secret", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
    }

    /// Waits until `/readyz` answers 200 (recovery complete); false after `timeout` or when the
    /// process exits.
    func waitReady(timeout: Duration = .seconds(60)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard isRunning else { return false }
            if (try? await curl(["\(base)/readyz"]))?.status == 200 { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func kill9() {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    func terminate() {
        if let process, process.isRunning { kill(process.processIdentifier, SIGTERM) }
    }

    /// Waits for the process to exit; its status, or nil when it still runs after `timeout`.
    func waitExit(timeout: Duration) async -> Int32? {
        guard let process else { return nil }
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// A temporary directory for `body`, removed afterwards.
func withScratchDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("swarm-durable-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// A Mosquitto for the test (anonymous: the nodes and the test's devices use it without logins).
func withTestBroker<T>(_ body: (EmbeddedBroker) async throws -> T) async throws -> T {
    var settings = EmbeddedBroker.Settings()
    settings.stopTimeout = .seconds(3)
    var logger = Logger(label: "test.broker")
    logger.logLevel = .critical
    let broker = try EmbeddedBroker(settings: settings, logger: logger)
    try await broker.start()
    do {
        let result = try await body(broker)
        await broker.stop()
        return result
    } catch {
        await broker.stop()
        throw error
    }
}

/// Which store the nodes of a test use.
enum StoreEngine: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite, postgresql
    var description: String { rawValue }
}

/// The store a cluster test runs on: per-node SQLite files in the nodes' data directories, or a
/// fresh database on the test PostgreSQL server (`SWARM_TEST_POSTGRES_URL`, from
/// scripts/with-postgres.sh), dropped afterwards.
struct TestStore: Sendable {
    let engine: StoreEngine
    /// The `--store` value (nil: the SQLite default).
    let url: String?
    let database: String?

    static func make(_ engine: StoreEngine) throws -> TestStore {
        switch engine {
        case .sqlite:
            return TestStore(engine: .sqlite, url: nil, database: nil)
        case .postgresql:
            guard let server = ProcessInfo.processInfo.environment["SWARM_TEST_POSTGRES_URL"], !server.isEmpty else {
                throw ClusterTestFailure("SWARM_TEST_POSTGRES_URL is not set: run through scripts/test.sh or `bash scripts/with-postgres.sh swift test --skip-build --filter …`")
            }
            let name = "swarm_it_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12)
            try psql(server, "CREATE DATABASE \(name)")
            guard let slash = server.lastIndex(of: "/") else { throw ClusterTestFailure("bad SWARM_TEST_POSTGRES_URL") }
            return TestStore(engine: .postgresql, url: String(server[..<slash]) + "/" + name, database: String(name))
        }
    }

    func remove() {
        guard let database, let server = ProcessInfo.processInfo.environment["SWARM_TEST_POSTGRES_URL"] else { return }
        try? psql(server, "DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
    }

    /// Every device row the cluster stored (all nodes' SQLite files, or the shared database):
    /// per id, the row with the highest revision, as parsed JSON.
    func storedStates(_ nodes: [GatewayChild]) async throws -> [String: [String: Any]] {
        var best: [String: StoredDevice] = [:]
        func keep(_ rows: [StoredDevice]) {
            for row in rows where row.revision > (best[row.id]?.revision ?? .min) { best[row.id] = row }
        }
        switch engine {
        case .sqlite:
            for node in nodes {
                let file = (node.dataDirectory as NSString).appendingPathComponent(SQLiteDeviceStore.fileName)
                guard FileManager.default.fileExists(atPath: file) else { continue }
                let store = SQLiteDeviceStore(file: file, logger: quiet)
                try await store.openForInspection()
                do { keep(try await store.devices(after: nil, limit: 1_000_000)) } catch {
                    await store.close()
                    throw error
                }
                await store.close()
            }
        case .postgresql:
            guard let url, let components = URLComponents(string: url), let host = components.host, let user = components.user else {
                throw ClusterTestFailure("bad store URL")
            }
            let store = PostgresDeviceStore(
                settings: .init(host: host, port: components.port ?? 5432, username: user, password: components.password, database: database ?? ""),
                logger: quiet)
            try await store.open()
            do { keep(try await store.devices(after: nil, limit: 1_000_000)) } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
        return best.compactMapValues { try? JSONSerialization.jsonObject(with: Data($0.state)) as? [String: Any] }
    }

    private var quiet: Logger {
        var logger = Logger(label: "test.store")
        logger.logLevel = .critical
        return logger
    }
}

/// Runs `psql URL -c SQL` (Debian's postgresql-client), throwing on failure.
func psql(_ url: String, _ sql: String) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/psql")
    process.arguments = [url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]
    process.standardOutput = FileHandle.nullDevice
    let error = Pipe()
    process.standardError = error
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ClusterTestFailure("psql \(sql): \(String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))")
    }
}

struct ClusterTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// JSON of an HTTP answer body.
func jsonObject(_ body: String) -> [String: Any]? {
    try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
}

/// `GET /v1/devices/{id}` on `node`: the twin, or nil unless 200.
func twin(_ node: GatewayChild, _ id: String) async throws -> [String: Any]? {
    let answer = try await curl(["\(node.base)/v1/devices/\(id)"])
    return answer.status == 200 ? jsonObject(answer.body) : nil
}

/// A `PATCH /v1/devices/{id}/desired`: (status, version or nil).
func patchDesired(_ node: GatewayChild, _ id: String, _ body: String) async throws -> (status: Int, version: Int?, body: String) {
    let answer = try await curl(["-X", "PATCH", "-H", "Content-Type: application/json", "-d", body, "\(node.base)/v1/devices/\(id)/desired"])
    return (answer.status, jsonObject(answer.body)?["version"] as? Int, answer.body)
}

/// A device that applies desired state only when its version is above the last one it applied
/// (what the repo's simulated devices and real devices do). Records what it applied.
final class VersionCheckingDevice: Sendable {
    let id: String
    let client: MQTTClient
    private let state = LockedBox<(applied: Int, versions: [Int], ignored: [Int])>((0, [], []))

    init(id: String, brokerPort: Int) throws {
        self.id = id
        var settings = MQTTClient.Settings(host: "127.0.0.1", port: brokerPort)
        settings.clientID = "vc-\(id)-\(UInt16.random(in: 0...UInt16.max))"
        settings.connectTimeout = .seconds(5)
        client = try MQTTClient(settings: settings)
    }

    func start() async throws {
        try await client.connect()
        try await client.subscribe("devices/\(id)/state/desired", qos: .atLeastOnce)
    }

    func consume() async {
        for await message in client.messages where message.topic == "devices/\(id)/state/desired" {
            guard let body = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any], let version = body["version"] as? Int
            else { continue }
            state.withLock { state in
                if version > state.applied {
                    state.applied = version
                    state.versions.append(version)
                } else {
                    state.ignored.append(version)
                }
            }
        }
    }

    var applied: Int { state.withLock { $0.applied } }
    var ignored: [Int] { state.withLock { $0.ignored } }
}

/// A value behind a lock.
final class LockedBox<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
