import SwarmJSON
import Synchronization

/// The searchable part of every device process hosted on this node, for fleet search
/// (`GET /v1/devices?where=…`, docs/gateway.md, “Fleet search”: "evaluation runs where the twins live").
///
/// A device process writes its entry whenever it writes a checkpoint (at once for presence, API
/// writes and group changes; telemetry and reported changes at most every
/// ``GatewaySettings/checkpointInterval``), and removes it when it stops (handoff, deletion,
/// shutdown). So a search sees an API write as soon as the write answered, and telemetry or
/// reported values at most one checkpoint interval late. An entry shares its storage with the
/// process's state (copy on write), so writing one costs a few retains, not a copy.
///
/// ``search(_:after:limit:)`` evaluates a ``FleetQuery`` over a snapshot of the table (taken
/// under the lock in O(1); evaluation runs outside it) and answers the matching ids above a
/// cursor, in id order, plus how many match in all. Each gateway node answers for its own
/// devices (``GatewayNodeProcess``), and the node serving the request merges the pages.
final class DeviceIndex: Sendable {
    /// What a query can see of one device.
    struct Entry: Sendable, FleetQueryDocument {
        var id: String
        var online: Bool
        var groups: Set<String>
        var version: Int64
        var reportedVersion: Int64
        var lastSeen: Int64?
        var connectedAt: Int64?
        var metadata: [String: JSONValue]
        var telemetry: [String: JSONValue]
        var reported: JSONValue
        var desired: JSONValue
        var tags: [String: JSONValue]
        /// The process that wrote it (a stopping copy removes only its own entry).
        var owner: ObjectIdentifier?

        init(_ state: DeviceState, owner: ObjectIdentifier? = nil) {
            id = state.id
            online = state.online
            groups = state.groups
            version = state.version
            reportedVersion = state.reportedVersion
            lastSeen = state.lastSeen
            connectedAt = state.connectedAt
            metadata = state.metadata
            telemetry = state.telemetry
            reported = state.reported
            desired = state.desired
            tags = state.tags
            self.owner = owner
        }

        func value(at path: FleetQuery.Path) -> JSONValue? {
            switch path.root {
            case .id: return .string(id)
            case .online: return .bool(online)
            case .groups: return .array(groups.sorted().map(JSONValue.string))
            case .version: return .int(version)
            case .reportedVersion: return .int(reportedVersion)
            case .lastSeen: return lastSeen.map { .string(Timestamp.iso($0)) }
            case .connectedAt: return connectedAt.map { .string(Timestamp.iso($0)) }
            case .metadata: return Self.member(metadata, path.members)
            case .telemetry: return Self.member(telemetry, path.members)
            case .tags: return Self.member(tags, path.members)
            case .reported: return Self.member(reported, path.members)
            case .desired: return Self.member(desired, path.members)
            }
        }

        func isMember(of name: String) -> Bool { groups.contains(name) }

        private static func member(_ object: [String: JSONValue], _ members: [String]) -> JSONValue? {
            guard let first = members.first else { return .object(object) }
            guard let value = object[first] else { return nil }
            return member(value, members.dropFirst())
        }

        private static func member(_ value: JSONValue, _ members: some Collection<String>) -> JSONValue? {
            var current = value
            for name in members {
                guard let next = current[name] else { return nil }
                current = next
            }
            return current
        }
    }

    /// One node's answer to a search.
    struct Page: Sendable, Hashable {
        /// The matching ids above the cursor, in id order, at most the limit asked for.
        var ids: [String]
        /// Every matching device on the node (whatever the cursor).
        var matched: Int
    }

    private let entries = Mutex<[String: Entry]>([:])

    func update(_ entry: Entry) {
        entries.withLock { $0[entry.id] = entry }
    }

    /// Removes `id`'s entry if `owner` wrote it.
    func remove(_ id: String, owner: ObjectIdentifier) {
        entries.withLock { table in
            if table[id]?.owner == owner { table[id] = nil }
        }
    }

    var count: Int { entries.withLock { $0.count } }

    /// The ids matching `query` (every device when nil) above `after`, in id order, at most
    /// `limit`, and the count of all matches.
    func search(_ query: FleetQuery?, after: String?, limit: Int) -> Page {
        let snapshot = entries.withLock { $0 }
        var matched = 0
        var page: [String] = []
        for (id, entry) in snapshot {
            guard query?.matches(entry) ?? true else { continue }
            matched += 1
            if let after, id <= after { continue }
            page.append(id)
        }
        return Page(ids: Self.smallest(page, limit), matched: matched)
    }

    /// The `limit` smallest ids, sorted.
    static func smallest(_ ids: [String], _ limit: Int) -> [String] {
        guard limit > 0 else { return [] }
        if ids.count <= limit * 4 { return Array(ids.sorted().prefix(limit)) }
        // Many more candidates than the page: keep a sorted buffer of the best ones.
        var best = Array(ids.prefix(limit)).sorted()
        for id in ids.dropFirst(limit) where id < best[limit - 1] {
            var low = 0
            var high = limit - 1
            while low < high {
                let middle = (low + high) / 2
                if best[middle] < id { low = middle + 1 } else { high = middle }
            }
            best.insert(id, at: low)
            best.removeLast()
        }
        return best
    }

    /// Merges the pages of every node: the `limit` smallest distinct ids, whether there are more,
    /// and the total of matches.
    static func merge(_ pages: [Page], limit: Int) -> (ids: [String], more: Bool, matched: Int) {
        var all = Set<String>()
        for page in pages { all.formUnion(page.ids) }
        let sorted = all.sorted()
        return (Array(sorted.prefix(limit)), sorted.count > limit, pages.reduce(0) { $0 + $1.matched })
    }
}
