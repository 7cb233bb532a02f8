/// The durable half of the event stream (docs/gateway.md, “Events”): the events of the retention window and the
/// webhook sinks. Kept apart from ``DeviceStore`` on purpose:
///
/// - **Its own file / tables, its own writer.** Events are an append-only log written at the
///   ingress rate and purged continuously; device rows are small and their commits answer API
///   calls. With SQLite the events live in `events.sqlite` next to `gateway.sqlite` in the node's
///   data directory, so a big event transaction never holds the device database's write lock
///   or its fsync; with PostgreSQL they are tables of the same database (`swarm_events`,
///   `swarm_webhooks`, `swarm_event_state`) written through a connection of their own.
/// - **Its own schema versions** (``latestEventSchemaVersion``, recorded in `swarm_schema` of
///   `events.sqlite`, and in `swarm_event_schema` on PostgreSQL), migrated and refused when
///   newer exactly like the device store's (``SchemaPlan``).
///
/// An engine is a plain adapter, like ``DeviceStore``: ``apply(_:)`` applies one
/// ``EventBatch`` in one transaction; the caller (the gateway's event writer) batches, retries
/// and purges.
///
/// ## Rows
/// - `swarm_events(time, device, seq, type, node, groups, body)`: one released event; the key
///   is `(time, device)` (time in microseconds since the epoch, strictly increasing per
///   device), `body` its JSON as the API serves it.
/// - `swarm_event_state(name, value)`: the purge horizon (`horizon_time`, `horizon_device`: no
///   event at or below it is kept any more; a cursor below it is expired) and the count of
///   events purged.
/// - `swarm_webhooks(id, revision, deleted, definition, cursor_time, cursor_device, updated_at)`:
///   the sinks (definition JSON, opaque here) with the last acknowledged cursor; a deleted sink
///   stays as a row with `deleted` set and a higher revision, so a node that missed the deletion
///   does not bring it back.
public protocol EventStore: AnyObject, Sendable {
    /// What and where, for logs and errors (never a password).
    var location: String { get }
    /// True when every node uses the same database: each node then writes only the events its
    /// own device processes emitted (each event once); a per-node store (SQLite) takes every
    /// event of the cluster.
    var isShared: Bool { get }

    /// Connects, creates or migrates the schema (``StoreError/schemaTooNew(store:found:supported:)``
    /// for a newer one).
    func open() async throws
    /// Applies every part of `batch` in one transaction; returns what its purge removed.
    func apply(_ batch: EventBatch) async throws -> EventPurgeResult
    /// Events with a key above `after` in key order, at most `limit`.
    func events(after: StoredEventKey, limit: Int) async throws -> [StoredEvent]
    /// The horizon, the newest key, the number of events kept and purged so far.
    func summary() async throws -> EventStoreSummary
    /// The highest `seq` (and its time) of every device with an event kept.
    func lastSequences() async throws -> [String: StoredEventKey.Sequence]
    /// Every webhook row, deleted ones included.
    func webhooks() async throws -> [StoredWebhook]
    /// Closes the connection(s).
    func close() async
}

/// The event schema version this build writes and understands.
public let latestEventSchemaVersion = 1

/// The key of a stored event: `(time, device)`, ordered by time, then device id.
public struct StoredEventKey: Sendable, Hashable, Comparable {
    /// Microseconds since the Unix epoch.
    public var time: Int64
    public var device: String

    public init(time: Int64, device: String) {
        self.time = time
        self.device = device
    }

    /// Below every event.
    public static let zero = StoredEventKey(time: 0, device: "")

    public static func < (lhs: StoredEventKey, rhs: StoredEventKey) -> Bool {
        lhs.time != rhs.time ? lhs.time < rhs.time : lhs.device < rhs.device
    }

    /// A device's last sequence number and the time of that event.
    public struct Sequence: Sendable, Hashable {
        public var seq: Int64
        public var time: Int64
        public init(seq: Int64, time: Int64) {
            self.seq = seq
            self.time = time
        }
    }
}

/// One event row.
public struct StoredEvent: Sendable, Hashable {
    public var key: StoredEventKey
    public var seq: Int64
    /// `telemetry`, `reported`, … (the API's `type`).
    public var type: String
    /// The node whose device process emitted it.
    public var node: String
    /// The device's groups when the event was emitted, for `group=` filters.
    public var groups: [String]
    /// The event's JSON as served.
    public var body: [UInt8]

    public init(key: StoredEventKey, seq: Int64, type: String, node: String, groups: [String], body: [UInt8]) {
        self.key = key
        self.seq = seq
        self.type = type
        self.node = node
        self.groups = groups
        self.body = body
    }
}

/// One webhook sink row.
public struct StoredWebhook: Sendable, Hashable {
    public var id: String
    /// Grows with every change of the definition (and with the deletion): of two copies, the
    /// higher revision wins.
    public var revision: Int64
    public var deleted: Bool
    /// The sink's definition (JSON, opaque here: url, filters, secret, batching).
    public var definition: [UInt8]
    /// The last cursor the sink's receiver acknowledged (``StoredEventKey/zero``: none yet).
    public var cursor: StoredEventKey

    public init(id: String, revision: Int64, deleted: Bool, definition: [UInt8], cursor: StoredEventKey) {
        self.id = id
        self.revision = revision
        self.deleted = deleted
        self.definition = definition
        self.cursor = cursor
    }
}

/// What one event transaction applies, in this order.
public struct EventBatch: Sendable, Hashable {
    /// Inserted; an event already stored (same key) is left as it is.
    public var events: [StoredEvent]
    /// Webhook rows: inserted, or replacing a row of a lower revision (the stored cursor is kept
    /// when it is newer than the row's).
    public var webhooks: [StoredWebhook]
    /// Acknowledged cursors of sinks: stored when newer than the stored one.
    public var cursors: [WebhookCursor]
    /// Events older than this time (microseconds) are purged.
    public var purgeBefore: Int64?
    /// At most this many events are kept: the oldest beyond it are purged.
    public var keepAtMost: Int?

    public init(
        events: [StoredEvent] = [], webhooks: [StoredWebhook] = [], cursors: [WebhookCursor] = [],
        purgeBefore: Int64? = nil, keepAtMost: Int? = nil
    ) {
        self.events = events
        self.webhooks = webhooks
        self.cursors = cursors
        self.purgeBefore = purgeBefore
        self.keepAtMost = keepAtMost
    }

    public var isEmpty: Bool { events.isEmpty && webhooks.isEmpty && cursors.isEmpty && purgeBefore == nil && keepAtMost == nil }
}

/// A sink's acknowledged cursor.
public struct WebhookCursor: Sendable, Hashable {
    public var id: String
    public var cursor: StoredEventKey

    public init(id: String, cursor: StoredEventKey) {
        self.id = id
        self.cursor = cursor
    }
}

/// What a purge removed.
public struct EventPurgeResult: Sendable, Hashable {
    /// Events removed by this transaction.
    public var purged: Int
    /// The horizon after it (unchanged when nothing was purged).
    public var horizon: StoredEventKey

    public init(purged: Int, horizon: StoredEventKey) {
        self.purged = purged
        self.horizon = horizon
    }
}

/// The state of an event store at start-up.
public struct EventStoreSummary: Sendable, Hashable {
    /// No event at or below it is kept any more (``StoredEventKey/zero``: nothing purged yet).
    public var horizon: StoredEventKey
    /// The newest event kept (nil: none).
    public var newest: StoredEventKey?
    /// Events kept.
    public var count: Int
    /// Events purged since the store was created.
    public var purged: Int64

    public init(horizon: StoredEventKey, newest: StoredEventKey?, count: Int, purged: Int64) {
        self.horizon = horizon
        self.newest = newest
        self.count = count
        self.purged = purged
    }
}
