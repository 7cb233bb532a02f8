import GatewayStore
import SwarmCore
import SwarmNode
import Synchronization

/// The gateway's own process on each node: how one gateway node asks another for something.
///
/// Spawned at ``DeviceGateway/start()`` and registered (as an existing process, so the tracker
/// never moves or restarts it) under ``GatewaySettings/nodeProcessName(_:)``,
/// `gateway-node:{node}` with the topic-safe node name, and joined to Swarm group
/// ``GatewaySettings/nodeGroup``: a name addresses one node, the group reaches every gateway
/// node with one message each.
///
/// - **Command replies.** Every node takes a share of `{prefix}/+/replies/+`; a reply whose
///   topic names another node (`…/replies/{node}`) is sent to that node's process, which hands it
///   to the command waiting there.
/// - **Deletions.** `tombstone(id, set)` records (or clears) a deleted device on this node
///   (``Tombstones``), asked of every node with one multi-call; `forget(id, revision)` then
///   deletes its row from this node's store and records the tombstone there (durably).
/// - **Recovery** (``DeviceRecovery``): `rows` are stored copies of devices this node owns, sent
///   by the node whose store held them; `recoveryDone` says a node has sent all of its rows;
///   `recoveryStatus` asks whether this node has.
/// - **Fleet search.** `search(where, after, limit)` evaluates the query over the device
///   processes this node hosts (``DeviceIndex``) and answers one page of ids; the node serving
///   the request asks every node with one multi-call and merges the pages.
final class NodeContext: Sendable {
    let replies: ReplyTable
    let counters: GatewayCounters
    let runtime: DeviceRuntime

    init(replies: ReplyTable, counters: GatewayCounters, runtime: DeviceRuntime) {
        self.replies = replies
        self.counters = counters
        self.runtime = runtime
    }
}

actor GatewayNodeProcess: SwarmProcess {
    let context: NodeContext

    init(context: NodeContext) {
        self.context = context
    }

    func receive(_ message: [UInt8]) async throws {
        guard let decoded = try? NodeMessage(decoding: message) else { return }
        switch decoded {
        case .reply(let key, let payload):
            if !context.replies.deliver(key, payload) {
                context.counters.repliesUnmatched.add(1, ordering: .relaxed)
            }
        case .tombstone, .search, .forget, .recoveryStatus:
            _ = try await call(message)
        case .rows(let rows):
            let runtime = context.runtime
            for row in rows {
                if let storage = runtime.storage, storage.isDeleted(row.id, revision: row.revision) {
                    runtime.recovery.countDeleted()
                } else {
                    runtime.recovery.offer(row)
                }
            }
        case .recoveryDone(let node):
            context.runtime.recovery.peerDone(node)
        }
    }

    func call(_ message: [UInt8]) async throws -> [UInt8] {
        let decoded = try NodeMessage(decoding: message)
        switch decoded {
        case .reply:
            try await receive(message)
        case .tombstone(let id, let set):
            if set { context.runtime.tombstones.insert(id) } else { context.runtime.tombstones.remove(id) }
        case .search(let text, let after, let limit):
            let query = try text.map { text in try FleetQuery.parse(text) }
            return NodeMessage.encode(context.runtime.index.search(query, after: after, limit: limit))
        case .forget(let id, let revision):
            if let storage = context.runtime.storage {
                storage.recordTombstone(id, revision: revision)
                try await storage.writer.commit(.delete(id: id, revision: revision, tombstone: true))
            }
        case .recoveryStatus:
            return [context.runtime.recovery.isScanned ? 1 : 0]
        case .rows, .recoveryDone:
            try await receive(message)
        }
        return []
    }

    /// Never moves: it stands for this node.
    func beginHandoff() async -> HandoffAnswer { .ignore }
}

/// The messages a ``GatewayNodeProcess`` understands, in the binary layout of ``DeviceMessage``.
enum NodeMessage: Sendable, Hashable {
    /// Cast: a command reply (correlation data, payload) that reached another node.
    case reply(key: [UInt8], payload: [UInt8])
    /// Call: record (`set`) or clear a deleted device on this node.
    case tombstone(id: String, set: Bool)
    /// Call: the ids of this node's devices matching `where` (all when nil) above `after`, at
    /// most `limit` (reply: ``DeviceIndex/Page``, ``decodePage(_:)``).
    case search(where: String?, after: String?, limit: Int)
    /// Cast: stored copies of devices this node owns (recovery).
    case rows([RecoveredRow])
    /// Cast: node `node` has sent all of its stored rows (recovery).
    case recoveryDone(node: String)
    /// Call: has this node sent all of its stored rows? (reply: one byte, 1 or 0).
    case recoveryStatus
    /// Call: delete device `id`'s row from this node's store (rows up to `revision`) and record
    /// its tombstone, durably.
    case forget(id: String, revision: Int64)

    enum Tag: UInt8 {
        case reply = 1, tombstone, rows, recoveryDone, recoveryStatus, forget, search
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .reply(let key, let payload):
            writer.byte(Tag.reply.rawValue)
            writer.bytes(key)
            writer.bytes(payload)
        case .tombstone(let id, let set):
            writer.byte(Tag.tombstone.rawValue)
            writer.string(id)
            writer.byte(set ? 1 : 0)
        case .search(let text, let after, let limit):
            writer.byte(Tag.search.rawValue)
            writer.optionalString(text)
            writer.optionalString(after)
            writer.int(Int64(limit))
        case .rows(let rows):
            writer.byte(Tag.rows.rawValue)
            writer.int(Int64(rows.count))
            for row in rows {
                writer.string(row.id)
                writer.int(row.revision)
                writer.bytes(row.state)
            }
        case .recoveryDone(let node):
            writer.byte(Tag.recoveryDone.rawValue)
            writer.string(node)
        case .recoveryStatus:
            writer.byte(Tag.recoveryStatus.rawValue)
        case .forget(let id, let revision):
            writer.byte(Tag.forget.rawValue)
            writer.string(id)
            writer.int(revision)
        }
        return writer.buffer
    }

    /// A search reply: the match count, then the ids.
    static func encode(_ page: DeviceIndex.Page) -> [UInt8] {
        var writer = ByteWriter()
        writer.int(Int64(page.matched))
        writer.int(Int64(page.ids.count))
        for id in page.ids { writer.string(id) }
        return writer.buffer
    }

    static func decodePage(_ bytes: [UInt8]) throws -> DeviceIndex.Page {
        var reader = ByteReader(bytes)
        let matched = try reader.int()
        let count = try reader.int()
        guard matched >= 0, count >= 0, count <= 100_000 else { throw DeviceMessage.DecodeError(description: "bad page counts") }
        let ids = try (0..<count).map { _ in try reader.string() }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
        return DeviceIndex.Page(ids: ids, matched: Int(matched))
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        guard let tag = Tag(rawValue: try reader.byte()) else { throw DeviceMessage.DecodeError(description: "unknown node message tag") }
        switch tag {
        case .reply:
            self = .reply(key: try reader.bytes(), payload: try reader.bytes())
        case .tombstone:
            self = .tombstone(id: try reader.string(), set: try reader.byte() == 1)
        case .search:
            let text = try reader.optionalString()
            let after = try reader.optionalString()
            let limit = try reader.int()
            guard limit >= 0, limit <= 100_000 else { throw DeviceMessage.DecodeError(description: "bad limit") }
            self = .search(where: text, after: after, limit: Int(limit))
        case .rows:
            let count = try reader.int()
            guard count >= 0, count <= 1_000_000 else { throw DeviceMessage.DecodeError(description: "bad row count") }
            var rows: [RecoveredRow] = []
            rows.reserveCapacity(Int(count))
            for _ in 0..<count {
                rows.append(RecoveredRow(id: try reader.string(), revision: try reader.int(), state: try reader.bytes()))
            }
            self = .rows(rows)
        case .recoveryDone:
            self = .recoveryDone(node: try reader.string())
        case .recoveryStatus:
            self = .recoveryStatus
        case .forget:
            self = .forget(id: try reader.string(), revision: try reader.int())
        }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
    }
}
