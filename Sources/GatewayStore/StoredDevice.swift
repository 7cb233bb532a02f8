/// Why a node holds a stored device row.
///
/// With a per-node store (SQLite) a node keeps the devices it hosts (`owned`) and the successor
/// replicas it holds for devices hosted elsewhere (`replica`), so the cluster still has every twin
/// when one node's disk is gone. A shared store (PostgreSQL) holds one row per device, written by
/// whichever node hosts it (`owned`).
public struct StoredRole: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The device process runs on this node.
    public static let owned = StoredRole(rawValue: 0)
    /// This node is the ring successor of the device and holds its last checkpoint.
    public static let replica = StoredRole(rawValue: 1)

    public var description: String {
        switch self {
        case .owned: return "owned"
        case .replica: return "replica"
        default: return "role(\(rawValue))"
        }
    }
}

/// One device row: the device process's checkpoint (`DeviceState.checkpointJSON()`, an opaque
/// JSON blob here, so new twin fields need no schema change) plus the few columns recovery reads
/// without decoding it.
public struct StoredDevice: Sendable, Hashable {
    /// The device id (primary key).
    public var id: String
    /// Owned or successor replica (see ``StoredRole``).
    public var role: StoredRole
    /// The desired-state version inside ``state`` (for operators and for recovery without a decode).
    public var desiredVersion: Int64
    /// The time of the last change of this device, as a hybrid logical clock in microseconds
    /// since the Unix epoch (``Revision``): strictly increasing along one device's history, so
    /// of two rows of one device the higher revision is the newer. Conditional writes use it: a
    /// row is replaced only by a write with a revision at least as high.
    public var revision: Int64
    /// The node that wrote the row.
    public var node: String
    /// The checkpoint JSON.
    public var state: [UInt8]

    public init(id: String, role: StoredRole, desiredVersion: Int64, revision: Int64, node: String, state: [UInt8]) {
        self.id = id
        self.role = role
        self.desiredVersion = desiredVersion
        self.revision = revision
        self.node = node
        self.state = state
    }
}

/// A deleted device: kept for ``StoreSettings/tombstoneRetention`` so that an older copy of it
/// found later (on a node that was down when it was deleted) is recognised as deleted, not revived.
public struct Tombstone: Sendable, Hashable {
    public var id: String
    /// The revision of the deletion: rows of this device with a revision up to it are deleted.
    public var revision: Int64
    /// Milliseconds since the Unix epoch.
    public var deletedAt: Int64

    public init(id: String, revision: Int64, deletedAt: Int64) {
        self.id = id
        self.revision = revision
        self.deletedAt = deletedAt
    }
}

/// One change to the device table. Writes to one id are coalesced by the ``StoreWriter``: only
/// the latest reaches the database.
public enum DeviceWrite: Sendable, Hashable {
    /// Insert or replace the row, unless the stored row has a higher revision.
    case put(StoredDevice)
    /// Delete the row of `id` if its revision is at most `revision`; with `tombstone`, also record
    /// the deletion (an API delete), so older copies elsewhere stay deleted.
    case delete(id: String, revision: Int64, tombstone: Bool)

    /// The device id the write is about.
    public var id: String {
        switch self {
        case .put(let device): return device.id
        case .delete(let id, _, _): return id
        }
    }
}

/// What one transaction applies. Every field is one table; an engine applies all of them in one
/// transaction, in this order. (A future table, such as events, adds a field here and a case to
/// the engines' `apply`.)
public struct StoreBatch: Sendable, Hashable {
    /// At most one write per device id.
    public var devices: [DeviceWrite]
    /// Tombstones older than this many milliseconds since the epoch are removed in the same
    /// transaction (nil: none).
    public var purgeTombstonesBefore: Int64?

    public init(devices: [DeviceWrite] = [], purgeTombstonesBefore: Int64? = nil) {
        self.devices = devices
        self.purgeTombstonesBefore = purgeTombstonesBefore
    }

    public var isEmpty: Bool { devices.isEmpty && purgeTombstonesBefore == nil }
}

/// Row counts of a store.
public struct StoreCounts: Sendable, Hashable, Codable {
    /// Device rows by role (`owned`, `replica`).
    public var owned: Int
    public var replicas: Int
    public var tombstones: Int

    public init(owned: Int = 0, replicas: Int = 0, tombstones: Int = 0) {
        self.owned = owned
        self.replicas = replicas
        self.tombstones = tombstones
    }
}
