import Foundation
import GatewayStore
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

/// The embedded event store: `events.sqlite` in the node's data directory (next to
/// `gateway.sqlite`), WAL mode, one connection on a thread of its own. Every node keeps the
/// events of the whole cluster for the retention window (``EventStore/isShared`` is false), so
/// any node can serve any cursor after a restart.
///
/// `synchronous=NORMAL`: in WAL mode a commit is durable against a process crash (`kill -9`)
/// at once and against a power cut from the next checkpoint on; events are written behind
/// anyway (a full-cluster kill loses at most the write-behind window, shown by `seq` gaps), so
/// the fsync per transaction of `FULL` buys nothing here. Webhook rows are written in the same
/// transactions and are durable against a crash when the API answers.
public actor SQLiteEventStore: EventStore {
    public nonisolated let path: String
    public nonisolated let location: String
    public nonisolated let isShared = false

    /// The file name inside the data directory.
    public static let fileName = "events.sqlite"
    static let rowsPerStatement = 400

    private let threadPool: NIOThreadPool
    private let logger: Logger
    private var connection: SQLiteConnection?
    private var closed = false
    /// Events kept (maintained across transactions: the size bound needs it at every purge).
    private var count = 0

    public init(directory: String, logger: Logger = Logger(label: "swarm.events.sqlite")) {
        self.path = (directory as NSString).appendingPathComponent(Self.fileName)
        self.location = "sqlite \(path)"
        self.logger = logger
        self.threadPool = NIOThreadPool(numberOfThreads: 1)
    }

    /// The migrations of the event database, oldest first (released ones never change).
    public static let migrations: [SchemaMigration] = [
        SchemaMigration(
            version: 1, summary: "events, purge state, webhook sinks",
            statements: [
                """
                CREATE TABLE swarm_events (
                    time INTEGER NOT NULL,
                    device TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    node TEXT NOT NULL,
                    groups TEXT NOT NULL,
                    body BLOB NOT NULL,
                    PRIMARY KEY (time, device)
                ) WITHOUT ROWID
                """,
                "CREATE TABLE swarm_event_state (name TEXT PRIMARY KEY NOT NULL, number INTEGER NOT NULL, text TEXT NOT NULL) WITHOUT ROWID",
                """
                CREATE TABLE swarm_webhooks (
                    id TEXT PRIMARY KEY NOT NULL,
                    revision INTEGER NOT NULL,
                    deleted INTEGER NOT NULL,
                    definition BLOB NOT NULL,
                    cursor_time INTEGER NOT NULL,
                    cursor_device TEXT NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID
                """,
            ]),
    ]

    public func open() async throws {
        guard connection == nil else { return }
        guard !closed else { throw StoreError.closed }
        let opened = try await SQLiteSupport.open(path: path, location: location, threadPool: threadPool, synchronous: "NORMAL", logger: logger)
        connection = opened
        do {
            switch SchemaPlan.plan(found: try await SQLiteSupport.schemaVersion(opened), latest: latestEventSchemaVersion) {
            case .current:
                break
            case .tooNew(let found, let supported):
                throw StoreError.schemaTooNew(store: location, found: found, supported: supported)
            case .migrate(let from, let to):
                for step in SchemaPlan.steps(Self.migrations, from: from, to: to) {
                    try await SQLiteSupport.migrate(opened, step, build: "swarm-gateway events schema \(latestEventSchemaVersion)", location: location, logger: logger)
                }
            }
            count = Int(try await opened.query("SELECT COUNT(*) FROM swarm_events").first?.columns.first?.data.integer ?? 0)
        } catch let error as StoreError {
            await closeConnection()
            throw error
        } catch {
            await closeConnection()
            throw unavailable(error)
        }
    }

    // MARK: - Writing

    public func apply(_ batch: EventBatch) async throws -> EventPurgeResult {
        let connection = try open_()
        guard !batch.isEmpty else { return EventPurgeResult(purged: 0, horizon: try await horizon(connection)) }
        do {
            _ = try await connection.query("BEGIN IMMEDIATE")
        } catch {
            throw unavailable(error)
        }
        var inserted = 0
        var purged = 0
        do {
            for chunk in SQLiteDeviceStore.chunks(batch.events, Self.rowsPerStatement) {
                let values = Array(repeating: "(?, ?, ?, ?, ?, ?, ?)", count: chunk.count).joined(separator: ", ")
                var binds: [SQLiteData] = []
                binds.reserveCapacity(chunk.count * 7)
                for event in chunk {
                    binds += [
                        .integer(Int(event.key.time)), .text(event.key.device), .integer(Int(event.seq)), .text(event.type), .text(event.node),
                        .text(event.groups.joined(separator: ",")), .blob(ByteBuffer(bytes: event.body)),
                    ]
                }
                _ = try await connection.query("INSERT OR IGNORE INTO swarm_events (time, device, seq, type, node, groups, body) VALUES \(values)", binds)
                inserted += try await changes(connection)
            }
            let now = Int(SQLiteDeviceStore.nowMillis())
            for hook in batch.webhooks {
                _ = try await connection.query(
                    """
                    INSERT INTO swarm_webhooks (id, revision, deleted, definition, cursor_time, cursor_device, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET revision = excluded.revision, deleted = excluded.deleted, definition = excluded.definition,
                        updated_at = excluded.updated_at
                    WHERE excluded.revision > swarm_webhooks.revision
                    """,
                    [
                        .text(hook.id), .integer(Int(hook.revision)), .integer(hook.deleted ? 1 : 0), .blob(ByteBuffer(bytes: hook.definition)),
                        .integer(Int(hook.cursor.time)), .text(hook.cursor.device), .integer(now),
                    ])
            }
            for update in batch.webhooks.map({ WebhookCursor(id: $0.id, cursor: $0.cursor) }) + batch.cursors where update.cursor != .zero {
                let time = Int(update.cursor.time)
                _ = try await connection.query(
                    """
                    UPDATE swarm_webhooks SET cursor_time = ?, cursor_device = ?
                    WHERE id = ? AND (cursor_time < ? OR (cursor_time = ? AND cursor_device < ?))
                    """, [.integer(time), .text(update.cursor.device), .text(update.id), .integer(time), .integer(time), .text(update.cursor.device)])
            }
            var horizon: StoredEventKey?
            if let before = batch.purgeBefore {
                if let last = try await connection.query(
                    "SELECT time, device FROM swarm_events WHERE time < ? ORDER BY time DESC, device DESC LIMIT 1", [.integer(Int(before))]
                ).first.map(Self.key) {
                    _ = try await connection.query("DELETE FROM swarm_events WHERE time < ?", [.integer(Int(before))])
                    purged += try await changes(connection)
                    horizon = last
                }
            }
            if let keep = batch.keepAtMost, count + inserted - purged > keep {
                let excess = count + inserted - purged - keep
                if let last = try await connection.query(
                    "SELECT time, device FROM swarm_events ORDER BY time, device LIMIT 1 OFFSET ?", [.integer(excess - 1)]
                ).first.map(Self.key) {
                    _ = try await connection.query(
                        "DELETE FROM swarm_events WHERE time < ? OR (time = ? AND device <= ?)",
                        [.integer(Int(last.time)), .integer(Int(last.time)), .text(last.device)])
                    purged += try await changes(connection)
                    horizon = max(horizon ?? last, last)
                }
            }
            if let horizon {
                _ = try await connection.query(
                    """
                    INSERT INTO swarm_event_state (name, number, text) VALUES ('horizon', ?, ?)
                    ON CONFLICT(name) DO UPDATE SET number = excluded.number, text = excluded.text
                    WHERE excluded.number > swarm_event_state.number OR (excluded.number = swarm_event_state.number AND excluded.text > swarm_event_state.text)
                    """, [.integer(Int(horizon.time)), .text(horizon.device)])
                _ = try await connection.query(
                    """
                    INSERT INTO swarm_event_state (name, number, text) VALUES ('purged', ?, '')
                    ON CONFLICT(name) DO UPDATE SET number = swarm_event_state.number + excluded.number
                    """, [.integer(purged)])
            }
            let result = try await self.horizon(connection)
            _ = try await connection.query("COMMIT")
            count += inserted - purged
            return EventPurgeResult(purged: purged, horizon: result)
        } catch {
            _ = try? await connection.query("ROLLBACK")
            throw unavailable(error)
        }
    }

    // MARK: - Reading

    public func events(after: StoredEventKey, limit: Int) async throws -> [StoredEvent] {
        let connection = try open_()
        do {
            let time = Int(after.time)
            let rows = try await connection.query(
                """
                SELECT time, device, seq, type, node, groups, body FROM swarm_events
                WHERE time > ? OR (time = ? AND device > ?) ORDER BY time, device LIMIT ?
                """, [.integer(time), .integer(time), .text(after.device), .integer(limit)])
            return try rows.map { row in
                let c = row.columns
                guard c.count == 7, case .blob(let body) = c[6].data else { throw StoreError.unavailable(store: location, reason: "malformed event row") }
                let groups = c[5].data.string ?? ""
                return StoredEvent(
                    key: StoredEventKey(time: Int64(c[0].data.integer ?? 0), device: c[1].data.string ?? ""), seq: Int64(c[2].data.integer ?? 0),
                    type: c[3].data.string ?? "", node: c[4].data.string ?? "",
                    groups: groups.isEmpty ? [] : groups.split(separator: ",").map(String.init), body: Array(body.readableBytesView))
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw unavailable(error)
        }
    }

    public func summary() async throws -> EventStoreSummary {
        let connection = try open_()
        do {
            let horizon = try await horizon(connection)
            let newest = try await connection.query("SELECT time, device FROM swarm_events ORDER BY time DESC, device DESC LIMIT 1").first.map(Self.key)
            let purged = try await connection.query("SELECT number FROM swarm_event_state WHERE name = 'purged'").first?.columns.first?.data.integer ?? 0
            return EventStoreSummary(horizon: horizon, newest: newest, count: count, purged: Int64(purged))
        } catch {
            throw unavailable(error)
        }
    }

    public func lastSequences() async throws -> [String: StoredEventKey.Sequence] {
        let connection = try open_()
        do {
            var result: [String: StoredEventKey.Sequence] = [:]
            for row in try await connection.query("SELECT device, MAX(seq), MAX(time) FROM swarm_events GROUP BY device") {
                let c = row.columns
                guard let device = c[0].data.string else { continue }
                result[device] = StoredEventKey.Sequence(seq: Int64(c[1].data.integer ?? 0), time: Int64(c[2].data.integer ?? 0))
            }
            return result
        } catch {
            throw unavailable(error)
        }
    }

    public func webhooks() async throws -> [StoredWebhook] {
        let connection = try open_()
        do {
            return try await connection.query(
                "SELECT id, revision, deleted, definition, cursor_time, cursor_device FROM swarm_webhooks ORDER BY id"
            ).compactMap { row in
                let c = row.columns
                guard c.count == 6, let id = c[0].data.string, case .blob(let definition) = c[3].data else { return nil }
                return StoredWebhook(
                    id: id, revision: Int64(c[1].data.integer ?? 0), deleted: (c[2].data.integer ?? 0) != 0,
                    definition: Array(definition.readableBytesView),
                    cursor: StoredEventKey(time: Int64(c[4].data.integer ?? 0), device: c[5].data.string ?? ""))
            }
        } catch {
            throw unavailable(error)
        }
    }

    // MARK: - Closing and helpers

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

    private func open_() throws -> SQLiteConnection {
        guard let connection else { throw closed ? StoreError.closed : StoreError.unavailable(store: location, reason: "not opened") }
        return connection
    }

    private func horizon(_ connection: SQLiteConnection) async throws -> StoredEventKey {
        guard let row = try await connection.query("SELECT number, text FROM swarm_event_state WHERE name = 'horizon'").first else { return .zero }
        return StoredEventKey(time: Int64(row.columns[0].data.integer ?? 0), device: row.columns[1].data.string ?? "")
    }

    private func changes(_ connection: SQLiteConnection) async throws -> Int {
        Int(try await connection.query("SELECT changes()").first?.columns.first?.data.integer ?? 0)
    }

    static func key(_ row: SQLiteRow) -> StoredEventKey {
        StoredEventKey(time: Int64(row.columns[0].data.integer ?? 0), device: row.columns[1].data.string ?? "")
    }

    private nonisolated func unavailable(_ error: any Error) -> StoreError {
        SQLiteSupport.unavailable(error, location: location)
    }
}
