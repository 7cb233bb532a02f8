import Foundation
import GatewayStore
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

/// The embedded engine: one SQLite database file per node, `gateway.sqlite` in the node's data
/// directory, through `vapor/sqlite-nio` (which compiles SQLite in: no system package).
///
/// - **WAL mode, `synchronous=FULL`**: a commit is on disk (fsynced) when ``apply(_:)``
///   returns, readers (the `backup` command, recovery) never block the writer, and a `kill -9`
///   or power cut loses no committed transaction.
/// - **One connection** on a thread pool of its own (one thread), so a slow fsync never holds up
///   the event loops or NIO's shared blocking pool. Calls are serialized by the actor.
/// - **Few statements per batch**: sqlite-nio prepares every statement it runs, so rows are
///   written with multi-row statements (``rowsPerStatement`` per statement) rather than one
///   statement per row.
/// - **Online backup** (``backup(to:)``): `VACUUM INTO` a new file — a consistent copy taken
///   in a read transaction while the node keeps writing.
public actor SQLiteDeviceStore: DeviceStore {
    /// The database file.
    public nonisolated let path: String
    public nonisolated let location: String
    public nonisolated let isShared = false

    /// The file name inside the data directory.
    public static let fileName = "gateway.sqlite"
    /// Rows per multi-row statement.
    static let rowsPerStatement = 400

    private let threadPool: NIOThreadPool
    private let logger: Logger
    private var connection: SQLiteConnection?
    private var closed = false

    /// The store of the data directory `directory` (created with its parents when missing).
    public init(directory: String, logger: Logger = Logger(label: "swarm.store.sqlite")) {
        self.path = (directory as NSString).appendingPathComponent(Self.fileName)
        self.location = "sqlite \(path)"
        self.logger = logger
        self.threadPool = NIOThreadPool(numberOfThreads: 1)
    }

    /// The store of the database file at `path`.
    public init(file path: String, logger: Logger = Logger(label: "swarm.store.sqlite")) {
        self.path = path
        self.location = "sqlite \(path)"
        self.logger = logger
        self.threadPool = NIOThreadPool(numberOfThreads: 1)
    }

    // MARK: - Opening and the schema

    /// The migrations of this engine, oldest first (released ones never change).
    public static let migrations: [SchemaMigration] = [
        SchemaMigration(
            version: 1, summary: "device rows",
            statements: [
                """
                CREATE TABLE swarm_devices (
                    id TEXT PRIMARY KEY NOT NULL,
                    role INTEGER NOT NULL,
                    desired_version INTEGER NOT NULL,
                    revision INTEGER NOT NULL,
                    node TEXT NOT NULL,
                    state BLOB NOT NULL
                ) WITHOUT ROWID
                """
            ]),
        SchemaMigration(
            version: 2, summary: "tombstones of deleted devices",
            statements: [
                """
                CREATE TABLE swarm_tombstones (
                    id TEXT PRIMARY KEY NOT NULL,
                    revision INTEGER NOT NULL,
                    deleted_at INTEGER NOT NULL
                ) WITHOUT ROWID
                """,
                "CREATE INDEX swarm_tombstones_deleted_at ON swarm_tombstones (deleted_at)",
            ]),
    ]

    public func open() async throws {
        try await open(upTo: latestSchemaVersion)
    }

    /// Opens and migrates up to `version` only: what a build that knew no later version did
    /// (migration tests). ``open()`` is `open(upTo: latestSchemaVersion)`.
    public func open(upTo version: Int) async throws {
        guard connection == nil else { return }
        guard !closed else { throw StoreError.closed }
        let opened = try await SQLiteSupport.open(path: path, location: location, threadPool: threadPool, synchronous: "FULL", logger: logger)
        connection = opened
        do {
            let found = try await currentVersion(opened)
            // A store at a version this build knows but above `version` stays as it is.
            let plan = found > latestSchemaVersion ? SchemaPlan.plan(found: found) : SchemaPlan.plan(found: found, latest: max(found, version))
            switch plan {
            case .current:
                break
            case .tooNew(let found, let supported):
                throw StoreError.schemaTooNew(store: location, found: found, supported: supported)
            case .migrate(let from, let to):
                for step in SchemaPlan.steps(Self.migrations, from: from, to: to) {
                    try await migrate(opened, step)
                }
            }
        } catch let error as StoreError {
            await closeConnection()
            throw error
        } catch {
            await closeConnection()
            throw unavailable(error)
        }
    }

    private func currentVersion(_ connection: SQLiteConnection) async throws -> Int {
        try await SQLiteSupport.schemaVersion(connection)
    }

    private func migrate(_ connection: SQLiteConnection, _ step: SchemaMigration) async throws {
        try await SQLiteSupport.migrate(connection, step, build: StoreBuild.identifier, location: location, logger: logger)
    }

    public func schemaVersion() async throws -> Int {
        try await currentVersion(try open_())
    }

    // MARK: - Writing

    public func apply(_ batch: StoreBatch) async throws {
        guard !batch.isEmpty else { return }
        let connection = try open_()
        do {
            _ = try await connection.query("BEGIN IMMEDIATE")
        } catch {
            throw unavailable(error)
        }
        do {
            var puts: [StoredDevice] = []
            var deletes: [(id: String, revision: Int64, tombstone: Bool)] = []
            for write in batch.devices {
                switch write {
                case .put(let device): puts.append(device)
                case .delete(let id, let revision, let tombstone): deletes.append((id, revision, tombstone))
                }
            }
            let now = Self.nowMillis()
            for chunk in Self.chunks(deletes.filter(\.tombstone), Self.rowsPerStatement) {
                let values = Array(repeating: "(?, ?, ?)", count: chunk.count).joined(separator: ", ")
                var binds: [SQLiteData] = []
                binds.reserveCapacity(chunk.count * 3)
                for delete in chunk {
                    binds += [.text(delete.id), .integer(SQLiteInt64(delete.revision)), .integer(SQLiteInt64(now))]
                }
                _ = try await connection.query(
                    """
                    INSERT INTO swarm_tombstones (id, revision, deleted_at) VALUES \(values)
                    ON CONFLICT(id) DO UPDATE SET revision = MAX(revision, excluded.revision), deleted_at = excluded.deleted_at
                    """, binds)
            }
            for chunk in Self.chunks(deletes, Self.rowsPerStatement) {
                let values = Array(repeating: "(?, ?)", count: chunk.count).joined(separator: ", ")
                var binds: [SQLiteData] = []
                binds.reserveCapacity(chunk.count * 2)
                for delete in chunk { binds += [.text(delete.id), .integer(SQLiteInt64(delete.revision))] }
                _ = try await connection.query(
                    """
                    WITH gone(id, revision) AS (VALUES \(values))
                    DELETE FROM swarm_devices WHERE EXISTS (
                        SELECT 1 FROM gone WHERE gone.id = swarm_devices.id AND swarm_devices.revision <= gone.revision)
                    """, binds)
            }
            for chunk in Self.chunks(puts, Self.rowsPerStatement) {
                let values = Array(repeating: "(?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", ")
                var binds: [SQLiteData] = []
                binds.reserveCapacity(chunk.count * 6)
                for device in chunk {
                    binds += [
                        .text(device.id), .integer(SQLiteInt64(device.role.rawValue)), .integer(SQLiteInt64(device.desiredVersion)),
                        .integer(SQLiteInt64(device.revision)), .text(device.node), .blob(ByteBuffer(bytes: device.state)),
                    ]
                }
                // A row is replaced only by a write at least as new, and never re-created by a
                // copy as old as its deletion.
                _ = try await connection.query(
                    """
                    INSERT INTO swarm_devices (id, role, desired_version, revision, node, state)
                    SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES \(values)) AS v
                    WHERE NOT EXISTS (SELECT 1 FROM swarm_tombstones t WHERE t.id = v.column1 AND t.revision >= v.column4)
                    ON CONFLICT(id) DO UPDATE SET role = excluded.role, desired_version = excluded.desired_version,
                        revision = excluded.revision, node = excluded.node, state = excluded.state
                    WHERE excluded.revision >= swarm_devices.revision
                    """, binds)
            }
            if let before = batch.purgeTombstonesBefore {
                _ = try await connection.query("DELETE FROM swarm_tombstones WHERE deleted_at < ?", [.integer(SQLiteInt64(before))])
            }
            _ = try await connection.query("COMMIT")
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw unavailable(error)
        }
    }

    // MARK: - Reading

    static let columns = "id, role, desired_version, revision, node, state"

    public func devices(after id: String?, limit: Int) async throws -> [StoredDevice] {
        let connection = try open_()
        do {
            let rows: [SQLiteRow]
            if let id {
                rows = try await connection.query(
                    "SELECT \(Self.columns) FROM swarm_devices WHERE id > ? ORDER BY id LIMIT ?", [.text(id), .integer(SQLiteInt64(limit))])
            } else {
                rows = try await connection.query("SELECT \(Self.columns) FROM swarm_devices ORDER BY id LIMIT ?", [.integer(SQLiteInt64(limit))])
            }
            return try rows.map(Self.device)
        } catch let error as StoreError {
            throw error
        } catch {
            throw unavailable(error)
        }
    }

    public func devices(ids: [String]) async throws -> [StoredDevice] {
        let connection = try open_()
        var result: [StoredDevice] = []
        do {
            for chunk in Self.chunks(ids, Self.rowsPerStatement) {
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ", ")
                let rows = try await connection.query("SELECT \(Self.columns) FROM swarm_devices WHERE id IN (\(marks))", chunk.map { .text($0) })
                result += try rows.map(Self.device)
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw unavailable(error)
        }
        return result
    }

    public func tombstones(since millis: Int64) async throws -> [Tombstone] {
        let connection = try open_()
        do {
            let rows = try await connection.query(
                "SELECT id, revision, deleted_at FROM swarm_tombstones WHERE deleted_at >= ? ORDER BY id", [.integer(SQLiteInt64(millis))])
            return rows.map { row in
                let columns = row.columns
                return Tombstone(
                    id: columns[0].data.string ?? "", revision: Int64(columns[1].data.integer ?? 0), deletedAt: Int64(columns[2].data.integer ?? 0))
            }
        } catch {
            throw unavailable(error)
        }
    }

    public func counts() async throws -> StoreCounts {
        let connection = try open_()
        do {
            var counts = StoreCounts()
            for row in try await connection.query("SELECT role, COUNT(*) FROM swarm_devices GROUP BY role") {
                let role = StoredRole(rawValue: Int(row.columns[0].data.integer ?? 0))
                let count = Int(row.columns[1].data.integer ?? 0)
                if role == .replica { counts.replicas += count } else { counts.owned += count }
            }
            counts.tombstones = Int(try await connection.query("SELECT COUNT(*) FROM swarm_tombstones").first?.columns.first?.data.integer ?? 0)
            return counts
        } catch {
            throw unavailable(error)
        }
    }

    // MARK: - Backup

    /// Writes a consistent copy of the database to `file` (which must not exist) while the store
    /// stays in use: SQLite's `VACUUM INTO`, run in a read transaction (WAL mode: writers go on).
    public func backup(to file: String) async throws {
        let connection = try open_()
        guard !FileManager.default.fileExists(atPath: file) else {
            throw StoreError.invalidConfiguration("backup target \(file) already exists")
        }
        do {
            _ = try await connection.query("VACUUM INTO ?", [.text(file)])
        } catch {
            throw unavailable(error)
        }
    }

    /// Backs up the database of the data directory `directory` — a node may be running on it —
    /// to `file`, through a connection of its own; returns the schema version and row counts of
    /// the copy.
    public static func backup(directory: String, to file: String, logger: Logger = Logger(label: "swarm.store.sqlite")) async throws -> (
        schemaVersion: Int, counts: StoreCounts
    ) {
        let source = (directory as NSString).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: source) else {
            throw StoreError.invalidConfiguration("no database in \(directory) (\(fileName) not found)")
        }
        let live = SQLiteDeviceStore(file: source, logger: logger)
        try await live.openForInspection()
        do {
            try await live.backup(to: file)
        } catch {
            await live.close()
            throw error
        }
        await live.close()
        let copy = SQLiteDeviceStore(file: file, logger: logger)
        try await copy.openForInspection()
        do {
            let result = (try await copy.schemaVersion(), try await copy.counts())
            await copy.close()
            return result
        } catch {
            await copy.close()
            throw error
        }
    }

    /// Opens an existing database without creating or migrating anything (backup, restore checks).
    public func openForInspection() async throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw StoreError.invalidConfiguration("\(path) does not exist")
        }
        guard connection == nil else { return }
        threadPool.start()
        do {
            connection = try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: threadPool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
        } catch {
            throw unavailable(error)
        }
    }

    // MARK: - Closing

    public func close() async {
        closed = true
        await closeConnection()
    }

    private func closeConnection() async {
        if let connection {
            self.connection = nil
            try? await connection.close()
        }
        try? await threadPool.shutdownGracefully()
    }

    // MARK: - Helpers

    private func open_() throws -> SQLiteConnection {
        guard let connection else { throw closed ? StoreError.closed : StoreError.unavailable(store: location, reason: "not opened") }
        return connection
    }

    private nonisolated func unavailable(_ error: any Error) -> StoreError {
        SQLiteSupport.unavailable(error, location: location)
    }

    static func device(_ row: SQLiteRow) throws -> StoredDevice {
        let columns = row.columns
        guard columns.count == 6, let id = columns[0].data.string, case .blob(let state) = columns[5].data else {
            throw StoreError.unavailable(store: "sqlite", reason: "malformed device row")
        }
        return StoredDevice(
            id: id, role: StoredRole(rawValue: Int(columns[1].data.integer ?? 0)), desiredVersion: Int64(columns[2].data.integer ?? 0),
            revision: Int64(columns[3].data.integer ?? 0), node: columns[4].data.string ?? "", state: Array(state.readableBytesView))
    }

    static func chunks<T>(_ items: [T], _ size: Int) -> [ArraySlice<T>] {
        stride(from: 0, to: items.count, by: size).map { items[$0..<min($0 + size, items.count)] }
    }

    static func nowMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
}

/// What the `build` column of `swarm_schema` records.
public enum StoreBuild {
    /// The executable and its schema version, e.g. `swarm-gateway schema 2`.
    public static let identifier = "swarm-gateway schema \(latestSchemaVersion)"
}
