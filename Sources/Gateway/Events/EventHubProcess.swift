import GatewayStore
import SwarmCore
import SwarmNode

/// The event hub's process on each node: `gateway-events:{node}` in Swarm group
/// ``GatewaySettings/eventHubGroup``, spawned and registered (never moved) at gateway start.
/// Apart from ``GatewayNodeProcess`` so that event batches (many per second) never queue in
/// front of command replies.
///
/// - `batch` (cast): another node's events and stable time → ``EventHub/ingest(origin:from:stable:events:)``.
/// - `barrier` (call): answered once every batch queued before it is ingested (a device process
///   recovered here after its host died asks this first, so it continues after every `seq` the
///   dead host sent).
/// - `putWebhook` (call): a sink's row, committed to this node's store before the answer.
/// - `webhooks` (call): every sink row this node knows (a starting node merges them).
/// - `webhookCursor` (cast): a sink's acknowledged cursor, kept in the store.
actor EventHubProcess: SwarmProcess {
    let runtime: DeviceRuntime

    init(runtime: DeviceRuntime) {
        self.runtime = runtime
    }

    func receive(_ message: [UInt8]) async throws {
        guard let decoded = try? EventHubMessage(decoding: message) else {
            runtime.rejectLog.warning("event-hub", "event hub on \(runtime.nodeName): undecodable message dropped")
            return
        }
        switch decoded {
        case .batch(let origin, let from, let stable, let events):
            runtime.events.ingest(origin: origin, from: from, stable: stable, events: events)
        case .webhookCursor(let cursor):
            if runtime.webhooks.advance(cursor.id, cursor: cursor.cursor) {
                runtime.events.queueCursor(cursor)
            }
        case .barrier, .putWebhook, .webhooks:
            _ = try await call(message)
        }
    }

    func call(_ message: [UInt8]) async throws -> [UInt8] {
        switch try EventHubMessage(decoding: message) {
        case .batch, .webhookCursor:
            try await receive(message)
            return []
        case .barrier:
            return []
        case .putWebhook(let row):
            if runtime.webhooks.apply(row) {
                try await runtime.events.commit(webhooks: [row])
            }
            return []
        case .webhooks:
            return EventHubMessage.encode(rows: runtime.webhooks.all().map(\.row))
        }
    }

    /// Stands for this node: never moves.
    func beginHandoff() async -> HandoffAnswer { .ignore }
}

/// The messages of ``EventHubProcess`` (the binary layout of ``DeviceMessage``).
enum EventHubMessage: Sendable {
    case batch(origin: NodeID, from: Int64, stable: Int64, events: [DeviceEvent])
    case barrier
    case putWebhook(StoredWebhook)
    case webhooks
    case webhookCursor(WebhookCursor)

    enum Tag: UInt8 {
        case batch = 1, barrier, putWebhook, webhooks, webhookCursor
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .batch(let origin, let from, let stable, let events):
            writer.byte(Tag.batch.rawValue)
            writer.string(origin.name)
            writer.int(Int64(bitPattern: origin.incarnation))
            writer.int(from)
            writer.int(stable)
            writer.int(Int64(events.count))
            for event in events { event.write(to: &writer) }
        case .barrier:
            writer.byte(Tag.barrier.rawValue)
        case .putWebhook(let row):
            writer.byte(Tag.putWebhook.rawValue)
            Self.write(row, &writer)
        case .webhooks:
            writer.byte(Tag.webhooks.rawValue)
        case .webhookCursor(let cursor):
            writer.byte(Tag.webhookCursor.rawValue)
            writer.string(cursor.id)
            writer.int(cursor.cursor.time)
            writer.string(cursor.cursor.device)
        }
        return writer.buffer
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        guard let tag = Tag(rawValue: try reader.byte()) else { throw DeviceMessage.DecodeError(description: "unknown event hub message") }
        switch tag {
        case .batch:
            let origin = NodeID(name: try reader.string(), incarnation: UInt64(bitPattern: try reader.int()))
            let from = try reader.int()
            let stable = try reader.int()
            let count = try reader.int()
            guard count >= 0, count <= 1_000_000 else { throw DeviceMessage.DecodeError(description: "bad event count") }
            var events: [DeviceEvent] = []
            events.reserveCapacity(Int(count))
            for _ in 0..<count { events.append(try DeviceEvent.read(from: &reader, origin: origin.name)) }
            self = .batch(origin: origin, from: from, stable: stable, events: events)
        case .barrier:
            self = .barrier
        case .putWebhook:
            self = .putWebhook(try Self.readRow(&reader))
        case .webhooks:
            self = .webhooks
        case .webhookCursor:
            self = .webhookCursor(WebhookCursor(id: try reader.string(), cursor: StoredEventKey(time: try reader.int(), device: try reader.string())))
        }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
    }

    private static func write(_ row: StoredWebhook, _ writer: inout ByteWriter) {
        writer.string(row.id)
        writer.int(row.revision)
        writer.byte(row.deleted ? 1 : 0)
        writer.bytes(row.definition)
        writer.int(row.cursor.time)
        writer.string(row.cursor.device)
    }

    private static func readRow(_ reader: inout ByteReader) throws -> StoredWebhook {
        StoredWebhook(
            id: try reader.string(), revision: try reader.int(), deleted: try reader.byte() == 1, definition: try reader.bytes(),
            cursor: StoredEventKey(time: try reader.int(), device: try reader.string()))
    }

    /// The answer of `webhooks`: a count, then the rows.
    static func encode(rows: [StoredWebhook]) -> [UInt8] {
        var writer = ByteWriter()
        writer.int(Int64(rows.count))
        for row in rows { write(row, &writer) }
        return writer.buffer
    }

    static func decodeRows(_ bytes: [UInt8]) throws -> [StoredWebhook] {
        var reader = ByteReader(bytes)
        let count = try reader.int()
        guard count >= 0, count <= 100_000 else { throw DeviceMessage.DecodeError(description: "bad row count") }
        var rows: [StoredWebhook] = []
        for _ in 0..<count { rows.append(try readRow(&reader)) }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
        return rows
    }
}
