/// The durable home of device state: one per node, behind which the device processes keep their
/// twins. Two engines implement it (module `GatewayStoreEngines`): `SQLiteDeviceStore`, an
/// embedded database file per node in its data directory (the default), and
/// `PostgresDeviceStore`, one PostgreSQL database shared by every node.
///
/// ## What an engine does, and what it does not
/// An engine is a plain adapter: it creates and migrates its schema (``open()``), applies a
/// ``StoreBatch`` in **one transaction** (``apply(_:)``) and answers reads. It never batches,
/// retries or times out on its own: the ``StoreWriter`` in front of it does group commit
/// (concurrent durable writes share one transaction; the caller's await returns after the
/// commit), write-behind (coalesced per device, flushed within ``StoreSettings/writeBehindInterval``),
/// retries with backoff, health and metrics. Engines are called by one writer at a time;
/// reads may come concurrently with a write and must not see half of a batch.
///
/// ## Tables (schema version ``latestSchemaVersion``)
/// - `swarm_schema(version, applied_at, build)`: one row per applied migration. A store whose
///   highest version is above what this build knows is refused at ``open()``
///   (``StoreError/schemaTooNew(store:found:supported:)``): the node stops with a message
///   naming the version instead of writing rows an older build does not understand.
/// - `swarm_devices(id, role, desired_version, revision, node, state)`: ``StoredDevice``. The
///   state is the device process's checkpoint JSON, opaque here, so new twin fields (tags,
///   versions, command queues…) travel without a schema change; the other columns are what
///   recovery needs without decoding it. Per-node SQLite keeps one row per id (owned or replica);
///   shared PostgreSQL one row per id (owned).
/// - `swarm_tombstones(id, revision, deleted_at)`: ``Tombstone``s of deleted devices.
///
/// ## Adding a table (events, webhook sinks…)
/// 1. Append a ``SchemaMigration`` with the next version to **both** engines' migration lists
///    (never edit a released one); bump ``latestSchemaVersion``.
/// 2. Add a field for its rows to ``StoreBatch`` (appended rows such as events are a list, not
///    coalesced by id) and apply it in each engine's `apply(_:)`, inside the same transaction.
/// 3. Add the reads the feature needs here (for example `events(after cursor:, limit:)`,
///    `webhookSinks()`), implemented by both engines, and a durable entry point on
///    ``StoreWriter`` if callers must wait for the commit (a registered webhook is durable before
///    the API answers, like every API change).
/// The migration tests open a store written at every earlier version and check the rows survive.
public protocol DeviceStore: AnyObject, Sendable {
    /// What and where, for logs and errors: `sqlite /var/lib/gw/gw-1/gateway.sqlite`,
    /// `postgresql gateway@db.example:5432/gateway` (never a password).
    var location: String { get }
    /// True when every node of the cluster uses the same database (PostgreSQL): then a node
    /// keeps only the devices it hosts and never writes successor replicas.
    var isShared: Bool { get }

    /// Connects, creates the schema or migrates it to ``latestSchemaVersion``. Throws
    /// ``StoreError/schemaTooNew(store:found:supported:)`` for a store written by a newer build,
    /// ``StoreError/unavailable(store:reason:)`` when the database cannot be reached.
    func open() async throws
    /// The schema version the store is at (after ``open()``).
    func schemaVersion() async throws -> Int
    /// Applies every write of `batch` in one transaction: all or nothing.
    func apply(_ batch: StoreBatch) async throws
    /// Device rows in id order, the first `limit` after `id` (nil: from the start). Keyset
    /// pagination: rows written meanwhile are seen or not, never twice.
    func devices(after id: String?, limit: Int) async throws -> [StoredDevice]
    /// The rows of these ids (those that exist; any order).
    func devices(ids: [String]) async throws -> [StoredDevice]
    /// Tombstones of deletions at or after `millis` (milliseconds since the epoch).
    func tombstones(since millis: Int64) async throws -> [Tombstone]
    /// Row counts.
    func counts() async throws -> StoreCounts
    /// Closes the connection(s). The store is unusable afterwards.
    func close() async
}

/// The schema version this build writes and understands.
public let latestSchemaVersion = 2

/// One schema step: run in one transaction with the row recording it in `swarm_schema`.
public struct SchemaMigration: Sendable, Hashable {
    /// The version the store is at after this step (1, 2, …; no gaps).
    public var version: Int
    /// What it changes, for the log.
    public var summary: String
    /// The statements, in order.
    public var statements: [String]

    public init(version: Int, summary: String, statements: [String]) {
        self.version = version
        self.summary = summary
        self.statements = statements
    }
}

/// What ``open()`` must do with a store found at some schema version.
public enum SchemaPlan: Sendable, Hashable {
    /// The store is at the latest version.
    case current
    /// Apply the migrations after `from` up to `to` (`from` 0: an empty store).
    case migrate(from: Int, to: Int)
    /// The store was written by a newer build: refuse it.
    case tooNew(found: Int, supported: Int)

    /// The plan for a store at `found` (0 when it has no schema table) with migrations up to
    /// `latest`.
    public static func plan(found: Int, latest: Int = latestSchemaVersion) -> SchemaPlan {
        if found > latest { return .tooNew(found: found, supported: latest) }
        if found == latest { return .current }
        return .migrate(from: found, to: latest)
    }

    /// The steps of `migrations` a `.migrate` plan runs, in order (precondition: the list has
    /// every version from 1 to the latest exactly once).
    public static func steps(_ migrations: [SchemaMigration], from: Int, to: Int) -> [SchemaMigration] {
        let sorted = migrations.sorted { $0.version < $1.version }
        precondition(sorted.map(\.version) == Array(1...sorted.count), "schema migrations must be numbered 1...n without gaps: \(sorted.map(\.version))")
        return sorted.filter { $0.version > from && $0.version <= to }
    }
}

/// Errors of a store.
public enum StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The store's schema version is newer than this build's.
    case schemaTooNew(store: String, found: Int, supported: Int)
    /// The database cannot be reached or refused the operation (disk full, server down,
    /// connection lost, timeout); the text says which.
    case unavailable(store: String, reason: String)
    /// A setting is not usable (a bad URL, an unusable directory).
    case invalidConfiguration(String)
    /// Another process uses this data directory.
    case locked(path: String, holder: String)
    /// The store was closed.
    case closed

    public var description: String {
        switch self {
        case .schemaTooNew(let store, let found, let supported):
            return "\(store) has schema version \(found), written by a newer build (this build knows versions up to \(supported)); run a build that knows version \(found), or restore a backup made by this one"
        case .unavailable(let store, let reason): return "\(store) unavailable: \(reason)"
        case .invalidConfiguration(let why): return "store configuration: \(why)"
        case .locked(let path, let holder): return "data directory \(path) is in use by another process (\(holder))"
        case .closed: return "store closed"
        }
    }
}
