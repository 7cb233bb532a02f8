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
///   (``Tombstones``), asked of every node with one multi-call.
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
        case .tombstone:
            _ = try await call(message)
        }
    }

    func call(_ message: [UInt8]) async throws -> [UInt8] {
        let decoded = try NodeMessage(decoding: message)
        switch decoded {
        case .reply:
            try await receive(message)
        case .tombstone(let id, let set):
            if set { context.runtime.tombstones.insert(id) } else { context.runtime.tombstones.remove(id) }
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

    enum Tag: UInt8 {
        case reply = 1, tombstone
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
        }
        return writer.buffer
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        guard let tag = Tag(rawValue: try reader.byte()) else { throw DeviceMessage.DecodeError(description: "unknown node message tag") }
        switch tag {
        case .reply:
            self = .reply(key: try reader.bytes(), payload: try reader.bytes())
        case .tombstone:
            self = .tombstone(id: try reader.string(), set: try reader.byte() == 1)
        }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
    }
}
