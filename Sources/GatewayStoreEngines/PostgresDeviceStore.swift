import Foundation
import GatewayStore
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// The shared engine: one PostgreSQL database for every node of the cluster, through
/// `vapor/postgres-nio`. A node writes the rows of the devices it hosts; there are no replica
/// rows (the database itself is the shared copy).
///
/// - **Two connections of its own** (one writes, one reads), made on first use and again after
///   any failure — at most once per ``Settings/reconnectDelay`` — rather than a pool: a store
///   that is down shows up at once as a failed transaction (the writer reports it and retries)
///   instead of requests waiting in a pool's queue, and it is used again within a second of coming
///   back.
/// - **One statement per table per batch**: rows travel as arrays and are expanded by `UNNEST`
///   (fixed parameter count, any batch size). Puts are conditional on the revision, and on no
///   tombstone at least as new, so a node that still flushes an older copy of a device cannot
///   overwrite the row the device's current host wrote.
/// - **Migrations race-safe**: every node of a cluster may start at once; each migration step
///   inserts its `swarm_schema` row first, in the step's transaction, so a concurrent migrator
///   waits on that row and then fails on its key, re-reads the version, and goes on.
/// - Wire-compatible databases (CockroachDB, YugabyteDB) take the same statements; see
///   docs/deployment.md for what was and was not tested there.
public actor PostgresDeviceStore: DeviceStore {
    /// Where the database is.
    public struct Settings: Sendable {
        public var host: String
        public var port: Int
        public var username: String
        public var password: String?
        public var database: String
        /// TLS to the server. Default `.disable`.
        public var tls: TLSMode = .disable
        /// Time to connect and authenticate. Default 2 s.
        public var connectTimeout: Duration = .seconds(2)
        /// Shortest time between two connection attempts after a failure. Default 500 ms.
        public var reconnectDelay: Duration = .milliseconds(500)
        /// Longest a transaction or a read may take: past it the call fails as unavailable and
        /// its connection is closed (the server rolls a transaction back), so a connection the
        /// server or the network silently lost cannot hold the writer up. Default 15 s.
        public var operationTimeout: Duration = .seconds(15)

        public enum TLSMode: String, Sendable, Hashable {
            /// Plain TCP.
            case disable
            /// TLS when the server offers it (certificates verified against the system's CAs).
            case prefer
            /// TLS required.
            case require
        }

        public init(host: String, port: Int = 5432, username: String, password: String?, database: String) {
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.database = database
        }
    }

    public nonisolated let settings: Settings
    public nonisolated let location: String
    public nonisolated let isShared = true

    private let logger: Logger
    private var writer: PostgresConnection?
    private var reader: PostgresConnection?
    private var writerWaiters: [CheckedContinuation<PostgresConnection, any Error>]?
    private var readerWaiters: [CheckedContinuation<PostgresConnection, any Error>]?
    private var lastAttempt: ContinuousClock.Instant?
    private var closed = false
    private var connectionIDs = 0

    public init(settings: Settings, logger: Logger = Logger(label: "swarm.store.postgresql")) {
        self.settings = settings
        self.location = "postgresql \(settings.username)@\(settings.host):\(settings.port)/\(settings.database)"
        self.logger = logger
    }

    // MARK: - Schema

    /// The migrations of this engine, oldest first (released ones never change).
    public static let migrations: [SchemaMigration] = [
        SchemaMigration(
            version: 1, summary: "device rows",
            statements: [
                """
                CREATE TABLE swarm_devices (
                    id TEXT PRIMARY KEY,
                    role SMALLINT NOT NULL,
                    desired_version BIGINT NOT NULL,
                    revision BIGINT NOT NULL,
                    node TEXT NOT NULL,
                    state BYTEA NOT NULL
                )
                """
            ]),
        SchemaMigration(
            version: 2, summary: "tombstones of deleted devices",
            statements: [
                "CREATE TABLE swarm_tombstones (id TEXT PRIMARY KEY, revision BIGINT NOT NULL, deleted_at BIGINT NOT NULL)",
                "CREATE INDEX swarm_tombstones_deleted_at ON swarm_tombstones (deleted_at)",
            ]),
    ]

    public func open() async throws {
        try await open(upTo: latestSchemaVersion)
    }

    /// Connects and migrates up to `version` only (migration tests: what an older build did).
    public func open(upTo version: Int) async throws {
        guard !closed else { throw StoreError.closed }
        var attempt = 0
        while true {
            attempt += 1
            do {
                let connection = try await writerConnection()
                try await ignoringRace {
                    try await connection.query(
                        "CREATE TABLE IF NOT EXISTS swarm_schema (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL, build TEXT NOT NULL)",
                        logger: logger)
                }
                let found = try await currentVersion(connection)
                let plan = found > latestSchemaVersion ? SchemaPlan.plan(found: found) : SchemaPlan.plan(found: found, latest: max(found, version))
                switch plan {
                case .current:
                    return
                case .tooNew(let found, let supported):
                    throw StoreError.schemaTooNew(store: location, found: found, supported: supported)
                case .migrate(let from, let to):
                    for step in SchemaPlan.steps(Self.migrations, from: from, to: to) {
                        try await migrate(connection, step)
                    }
                    return
                }
            } catch let error as StoreError {
                throw error
            } catch {
                // Another node migrated at the same moment (duplicate key on its swarm_schema
                // row or on the catalog): read the version again.
                await dropWriter()
                if attempt >= 5 { throw unavailable(error) }
                try? await Task.sleep(for: .milliseconds(100 * attempt))
            }
        }
    }

    private func ignoringRace(_ body: () async throws -> Void) async throws {
        do { try await body() } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" || error.serverInfo?[.sqlState] == "42P07" {
            // Created concurrently by another node.
        }
    }

    private func currentVersion(_ connection: PostgresConnection) async throws -> Int {
        try await Self.currentVersion(connection, logger: logger)
    }

    private static func currentVersion(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        let rows = try await connection.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM swarm_schema", logger: logger)
        for try await (version) in rows.decode(Int64.self) { return Int(version) }
        return 0
    }

    private func migrate(_ connection: PostgresConnection, _ step: SchemaMigration) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            try await connection.query(
                "INSERT INTO swarm_schema (version, applied_at, build) VALUES (\(step.version), \(Self.nowMillis()), \(StoreBuild.identifier))",
                logger: logger)
            for statement in step.statements {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
        logger.notice("\(location): schema migrated to version \(step.version) (\(step.summary))")
    }

    public func schemaVersion() async throws -> Int {
        let logger = self.logger
        return try await reading { connection in try await Self.currentVersion(connection, logger: logger) }
    }

    // MARK: - Writing

    public func apply(_ batch: StoreBatch) async throws {
        guard !batch.isEmpty else { return }
        try await Deadline.run(settings.operationTimeout, what: "transaction", location: location) {
            try await self.applyNow(batch)
        } onTimeout: {
            await self.abandon(.writer)
        }
    }

    private func applyNow(_ batch: StoreBatch) async throws {
        let connection: PostgresConnection
        do {
            connection = try await writerConnection()
        } catch {
            throw unavailable(error)
        }
        var puts: [StoredDevice] = []
        var deletes: [(id: String, revision: Int64, tombstone: Bool)] = []
        for write in batch.devices {
            switch write {
            case .put(let device): puts.append(device)
            case .delete(let id, let revision, let tombstone): deletes.append((id, revision, tombstone))
            }
        }
        do {
            try await connection.query("BEGIN", logger: logger)
            let buried = deletes.filter(\.tombstone)
            if !buried.isEmpty {
                let now = Self.nowMillis()
                try await connection.query(
                    """
                    INSERT INTO swarm_tombstones (id, revision, deleted_at)
                    SELECT * FROM UNNEST(\(buried.map(\.id))::TEXT[], \(buried.map(\.revision))::BIGINT[], \(Array(repeating: now, count: buried.count))::BIGINT[])
                    ON CONFLICT (id) DO UPDATE SET revision = GREATEST(swarm_tombstones.revision, EXCLUDED.revision), deleted_at = EXCLUDED.deleted_at
                    """, logger: logger)
            }
            if !deletes.isEmpty {
                try await connection.query(
                    """
                    DELETE FROM swarm_devices d USING UNNEST(\(deletes.map(\.id))::TEXT[], \(deletes.map(\.revision))::BIGINT[]) AS gone(id, revision)
                    WHERE d.id = gone.id AND d.revision <= gone.revision
                    """, logger: logger)
            }
            if !puts.isEmpty {
                let states = puts.map { ByteBuffer(bytes: $0.state) }
                try await connection.query(
                    """
                    INSERT INTO swarm_devices (id, role, desired_version, revision, node, state)
                    SELECT v.id, v.role, v.desired_version, v.revision, v.node, v.state
                    FROM UNNEST(\(puts.map(\.id))::TEXT[], \(puts.map { Int16($0.role.rawValue) })::SMALLINT[], \(puts.map(\.desiredVersion))::BIGINT[],
                                \(puts.map(\.revision))::BIGINT[], \(puts.map(\.node))::TEXT[], \(states)::BYTEA[])
                        AS v(id, role, desired_version, revision, node, state)
                    WHERE NOT EXISTS (SELECT 1 FROM swarm_tombstones t WHERE t.id = v.id AND t.revision >= v.revision)
                    ON CONFLICT (id) DO UPDATE SET role = EXCLUDED.role, desired_version = EXCLUDED.desired_version,
                        revision = EXCLUDED.revision, node = EXCLUDED.node, state = EXCLUDED.state
                    WHERE swarm_devices.revision <= EXCLUDED.revision
                    """, logger: logger)
            }
            if let before = batch.purgeTombstonesBefore {
                try await connection.query("DELETE FROM swarm_tombstones WHERE deleted_at < \(before)", logger: logger)
            }
            try await connection.query("COMMIT", logger: logger)
        } catch {
            // The transaction is rolled back by the server when the connection goes; a fresh
            // connection next time leaves nothing half done behind.
            await drop(connection)
            throw unavailable(error)
        }
    }

    // MARK: - Reading

    public func devices(after id: String?, limit: Int) async throws -> [StoredDevice] {
        try await reading { connection in
            let rows: PostgresRowSequence
            if let id {
                rows = try await connection.query(
                    "SELECT id, role, desired_version, revision, node, state FROM swarm_devices WHERE id > \(id) ORDER BY id LIMIT \(limit)",
                    logger: self.logger)
            } else {
                rows = try await connection.query(
                    "SELECT id, role, desired_version, revision, node, state FROM swarm_devices ORDER BY id LIMIT \(limit)", logger: self.logger)
            }
            return try await Self.decodeDevices(rows)
        }
    }

    public func devices(ids: [String]) async throws -> [StoredDevice] {
        guard !ids.isEmpty else { return [] }
        return try await reading { connection in
            let rows = try await connection.query(
                "SELECT id, role, desired_version, revision, node, state FROM swarm_devices WHERE id = ANY(\(ids)::TEXT[])", logger: self.logger)
            return try await Self.decodeDevices(rows)
        }
    }

    public func tombstones(since millis: Int64) async throws -> [Tombstone] {
        try await reading { connection in
            let rows = try await connection.query(
                "SELECT id, revision, deleted_at FROM swarm_tombstones WHERE deleted_at >= \(millis) ORDER BY id", logger: self.logger)
            var result: [Tombstone] = []
            for try await (id, revision, deletedAt) in rows.decode((String, Int64, Int64).self) {
                result.append(Tombstone(id: id, revision: revision, deletedAt: deletedAt))
            }
            return result
        }
    }

    public func counts() async throws -> StoreCounts {
        try await reading { connection in
            var counts = StoreCounts()
            let rows = try await connection.query(
                """
                SELECT (SELECT COUNT(*) FROM swarm_devices WHERE role = 0)::BIGINT, (SELECT COUNT(*) FROM swarm_devices WHERE role <> 0)::BIGINT,
                       (SELECT COUNT(*) FROM swarm_tombstones)::BIGINT
                """, logger: self.logger)
            for try await (owned, replicas, tombstones) in rows.decode((Int64, Int64, Int64).self) {
                counts = StoreCounts(owned: Int(owned), replicas: Int(replicas), tombstones: Int(tombstones))
            }
            return counts
        }
    }

    static func decodeDevices(_ rows: PostgresRowSequence) async throws -> [StoredDevice] {
        var result: [StoredDevice] = []
        for try await (id, role, desiredVersion, revision, node, state) in rows.decode((String, Int16, Int64, Int64, String, ByteBuffer).self) {
            result.append(
                StoredDevice(
                    id: id, role: StoredRole(rawValue: Int(role)), desiredVersion: desiredVersion, revision: revision, node: node,
                    state: Array(state.readableBytesView)))
        }
        return result
    }

    private func reading<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await Deadline.run(settings.operationTimeout, what: "read", location: location) {
            let connection: PostgresConnection
            do {
                connection = try await self.readerConnection()
            } catch {
                throw self.unavailable(error)
            }
            do {
                return try await body(connection)
            } catch {
                await self.drop(connection)
                throw self.unavailable(error)
            }
        } onTimeout: {
            await self.abandon(.reader)
        }
    }

    // MARK: - Connections

    private func writerConnection() async throws -> PostgresConnection {
        try await connection(.writer)
    }

    private func readerConnection() async throws -> PostgresConnection {
        try await connection(.reader)
    }

    private enum Use: Sendable { case writer, reader }

    /// The connection for `use`, connecting once for every concurrent caller (the actor is
    /// reentrant: without the waiters, callers arriving during a connect would each make one).
    private func connection(_ use: Use) async throws -> PostgresConnection {
        if let ready = use == .writer ? writer : reader, !ready.isClosed { return ready }
        if (use == .writer ? writerWaiters : readerWaiters) != nil {
            return try await withCheckedThrowingContinuation { continuation in
                if use == .writer { writerWaiters!.append(continuation) } else { readerWaiters!.append(continuation) }
            }
        }
        if use == .writer { writerWaiters = [] } else { readerWaiters = [] }
        let result: Result<PostgresConnection, any Error>
        do {
            let made = try await connect()
            if use == .writer { writer = made } else { reader = made }
            result = .success(made)
        } catch {
            result = .failure(error)
        }
        let waiting = (use == .writer ? writerWaiters : readerWaiters) ?? []
        if use == .writer { writerWaiters = nil } else { readerWaiters = nil }
        for waiter in waiting { waiter.resume(with: result) }
        return try result.get()
    }

    private func connect() async throws -> PostgresConnection {
        guard !closed else { throw StoreError.closed }
        if let lastAttempt {
            let ready = lastAttempt + settings.reconnectDelay
            if ready > .now { try? await Task.sleep(until: ready) }
        }
        lastAttempt = .now
        var configuration: PostgresConnection.Configuration
        switch settings.tls {
        case .disable:
            configuration = .init(host: settings.host, port: settings.port, username: settings.username, password: settings.password, database: settings.database, tls: .disable)
        case .prefer, .require:
            let context = try NIOSSLContext(configuration: .makeClientConfiguration())
            configuration = .init(
                host: settings.host, port: settings.port, username: settings.username, password: settings.password, database: settings.database,
                tls: settings.tls == .prefer ? .prefer(context) : .require(context))
        }
        configuration.options.connectTimeout = .nanoseconds(Int64(Self.nanoseconds(settings.connectTimeout)))
        connectionIDs += 1
        // connectTimeout bounds the TCP connect; the startup and authentication exchange after it
        // gets as long again. A connection made after its caller gave up is closed.
        let id = connectionIDs
        let logger = self.logger
        let made = configuration
        let connection = try await Deadline.run(settings.connectTimeout * 2, what: "connect", location: location) {
            try await PostgresConnection.connect(on: MultiThreadedEventLoopGroup.singleton.any(), configuration: made, id: id, logger: logger)
        } onTimeout: {
        } late: { made in
            try? await made.close()
        }
        if closed {
            try? await connection.close()
            throw StoreError.closed
        }
        return connection
    }

    /// Forgets the writing connection after a failure (the next use connects again) and closes it.
    private func dropWriter() async {
        guard let dropped = writer else { return }
        writer = nil
        try? await dropped.close()
    }

    /// Forgets `connection` after a failure on it, if it is still the one in use (a call that
    /// timed out may fail long after its connection was replaced), and closes it.
    private func drop(_ connection: PostgresConnection) async {
        if writer === connection { writer = nil }
        if reader === connection { reader = nil }
        try? await connection.close()
    }

    /// A call on the `use` connection ran past ``Settings/operationTimeout``: the connection is
    /// forgotten at once (the next call connects again) and closed in the background, which
    /// fails whatever still waits on it.
    private func abandon(_ use: Use) {
        let abandoned = use == .writer ? writer : reader
        if use == .writer { writer = nil } else { reader = nil }
        guard let abandoned else { return }
        logger.warning("\(location): a \(use == .writer ? "transaction" : "read") ran past \(settings.operationTimeout); its connection is closed")
        Task { try? await abandoned.close() }
    }

    public func close() async {
        closed = true
        for connection in [writer, reader].compactMap({ $0 }) { try? await connection.close() }
        writer = nil
        reader = nil
    }

    // MARK: - Helpers

    private nonisolated func unavailable(_ error: any Error) -> StoreError {
        if let error = error as? StoreError { return error }
        return .unavailable(store: location, reason: Self.describe(error))
    }

    /// A PostgreSQL error in one line: the server's message and SQLSTATE, or the client's reason
    /// (postgres-nio's own description is deliberately generic).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo {
            let message = info[.message] ?? "server error"
            let state = info[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
            return message + state
        }
        if let underlying = error.underlying { return "\(error.code): \(describe(underlying))" }
        return "\(error.code)"
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    static func nowMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}

/// Runs an operation with a time limit that does not wait for the operation to notice: at the
/// limit the caller gets ``StoreError/unavailable(store:reason:)`` and the operation is left to
/// finish (or fail) on its own — `onTimeout` runs first, to make it fail (close its
/// connection); `late` gets a result that arrives after the caller gave up.
enum Deadline {
    static func run<T: Sendable>(
        _ timeout: Duration, what: String, location: String, _ body: @escaping @Sendable () async throws -> T,
        onTimeout: @escaping @Sendable () async -> Void, late: @escaping @Sendable (T) async -> Void = { _ in }
    ) async throws -> T {
        let waiting = Waiting<T>()
        return try await withCheckedThrowingContinuation { continuation in
            waiting.set(continuation)
            let timer = Task {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                guard let caller = waiting.take() else { return }
                await onTimeout()
                caller.resume(throwing: StoreError.unavailable(store: location, reason: "\(what) took longer than \(timeout)"))
            }
            Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                timer.cancel()
                if let caller = waiting.take() {
                    caller.resume(with: result)
                } else if case .success(let value) = result {
                    await late(value)
                }
            }
        }
    }
}

/// The caller of a ``Deadline/run(_:what:location:_:onTimeout:late:)``, answered once.
private final class Waiting<T: Sendable>: Sendable {
    private let caller = Mutex<CheckedContinuation<T, any Error>?>(nil)
    func set(_ continuation: CheckedContinuation<T, any Error>) { caller.withLock { $0 = continuation } }
    func take() -> CheckedContinuation<T, any Error>? { caller.withLock { $0.take() } }
}
