import Foundation
import GatewayStore
import GatewayStoreEngines
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import Testing

func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["GATEWAY_TEST_LOG"] == nil ? .critical : .debug
    return logger
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// A fresh temporary directory, removed by `body`'s end.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("swarm-store-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

func device(_ id: String, revision: Int64, version: Int64 = 0, role: StoredRole = .owned, node: String = "gw-1", body: String? = nil) -> StoredDevice {
    let text = body ?? #"{"id":"\#(id)","version":\#(version),"revision":\#(revision)}"#
    return StoredDevice(id: id, role: role, desiredVersion: version, revision: revision, node: node, state: Array(text.utf8))
}

/// Runs `body` while `store`'s writer runs; closes the writer afterwards.
func withWriter<T>(_ store: any DeviceStore, settings: StoreSettings = StoreSettings(), _ body: (StoreWriter) async throws -> T) async throws -> T {
    let writer = StoreWriter(store: store, settings: settings)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await writer.run() }
        do {
            let result = try await body(writer)
            await writer.close()
            try await group.waitForAll()
            return result
        } catch {
            await writer.close()
            try? await group.waitForAll()
            throw error
        }
    }
}

// MARK: - PostgreSQL

/// The test server: `SWARM_TEST_POSTGRES_URL` (`postgresql://USER:PASS@HOST:PORT/DB`), which
/// `scripts/test.sh` and `scripts/with-postgres.sh` set after starting a throwaway cluster. A test
/// that needs it fails — it never skips — when it is missing.
struct TestPostgres {
    var host: String
    var port: Int
    var username: String
    var password: String?
    var database: String

    static func fromEnvironment() throws -> TestPostgres {
        guard let text = ProcessInfo.processInfo.environment["SWARM_TEST_POSTGRES_URL"], !text.isEmpty else {
            throw TestFailure(
                "SWARM_TEST_POSTGRES_URL is not set: these tests need a real PostgreSQL server. Run them through scripts/test.sh, or "
                    + "`bash scripts/with-postgres.sh swift test --skip-build --filter GatewayStoreTests`, which starts a throwaway one.")
        }
        guard let url = URLComponents(string: text), let host = url.host, let user = url.user else {
            throw TestFailure("SWARM_TEST_POSTGRES_URL=\(text) is not postgresql://USER:PASS@HOST:PORT/DB")
        }
        return TestPostgres(
            host: host, port: url.port ?? 5432, username: user, password: url.password,
            database: url.path.hasPrefix("/") ? String(url.path.dropFirst()) : "postgres")
    }

    func settings(database: String) -> PostgresDeviceStore.Settings {
        PostgresDeviceStore.Settings(host: host, port: port, username: username, password: password, database: database)
    }

    func connect(database: String? = nil) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database ?? self.database, tls: .disable)
        return try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: Int.random(in: 1...1_000_000),
            logger: quietLogger("test.pg"))
    }

    /// Runs one statement on the server's maintenance database (or `database`).
    func execute(_ sql: String, database: String? = nil) async throws {
        let connection = try await connect(database: database)
        do {
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: quietLogger("test.pg"))
            try await connection.close()
        } catch {
            try? await connection.close()
            throw error
        }
    }
}

/// A database of its own for `body` on the test server, dropped afterwards.
func withTestDatabase<T>(_ body: (TestPostgres, String) async throws -> T) async throws -> T {
    let server = try TestPostgres.fromEnvironment()
    let name = "swarm_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
    try await server.execute("CREATE DATABASE \(name)")
    do {
        let result = try await body(server, String(name))
        try? await server.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        return result
    } catch {
        try? await server.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        throw error
    }
}

/// A value behind a lock, shareable with tasks.
final class Box<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Both engines

/// Which engine a parameterized test runs on.
enum Engine: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite, postgresql
    var description: String { rawValue }
}

/// Runs `body` with a fresh, opened store of `engine`; closes it afterwards. `reader` is a second
/// store on the same database (another connection) for checking what is on disk.
func withStore<T>(_ engine: Engine, _ body: (_ store: any DeviceStore, _ reopen: @Sendable () -> any DeviceStore) async throws -> T) async throws -> T {
    switch engine {
    case .sqlite:
        return try await withTemporaryDirectory { directory in
            let store = SQLiteDeviceStore(directory: directory, logger: quietLogger("test.sqlite"))
            try await store.open()
            do {
                let result = try await body(store, { SQLiteDeviceStore(directory: directory, logger: quietLogger("test.sqlite")) })
                await store.close()
                return result
            } catch {
                await store.close()
                throw error
            }
        }
    case .postgresql:
        return try await withTestDatabase { server, database in
            let settings = server.settings(database: database)
            let store = PostgresDeviceStore(settings: settings, logger: quietLogger("test.pg"))
            try await store.open()
            do {
                let result = try await body(store, { PostgresDeviceStore(settings: settings, logger: quietLogger("test.pg")) })
                await store.close()
                return result
            } catch {
                await store.close()
                throw error
            }
        }
    }
}
