import SwarmJSON
/// The messages a ``DeviceProcess`` understands: casts (`ingress`, `down`, `commandOutcome`,
/// `commandReply`) and calls (`twin`, `patchDesired`, `group`, `query`, `route`, `patchTags`,
/// `provision`, `delete`, `queueCommand`, `commands`). Calls that answer with the twin (or other
/// JSON) answer a ``DeviceReply``.
///
/// Encoding: one tag byte, then the fields in order; strings and byte strings are a 4-byte
/// big-endian length plus the bytes, integers 8 bytes big endian, optionals a 0/1 byte first.
/// JSON values travel as their UTF-8 JSON text. Compact, and no JSON escaping of raw payloads.
enum DeviceMessage: Sendable, Hashable {
    /// An inbound device message, already validated at the ingress node (valid JSON, size checked).
    case ingress(kind: DeviceTopics.Kind, broker: String, receivedAt: Int64, retained: Bool, payload: [UInt8])
    /// Call: the twin (reply: the twin's JSON).
    case twin
    /// Call: apply a merge patch to the desired state, publish it; with `ifVersions`, only when
    /// the current desired version is one of them (reply: ``DeviceReply``).
    case patchDesired(JSONValue, ifVersions: [Int64]?)
    /// Call: join (`true`) or leave a device group (reply: the twin's JSON).
    case group(String, join: Bool)
    /// Call: the twin or selected dotted paths (reply: JSON `{"id":…, "data":…}`); with `where`
    /// (a ``FleetQuery`` text), an empty reply when the device does not match.
    case query(fields: [String]?, where: String?)
    /// Call: whether the device is online and which broker to publish a command on (reply:
    /// ``RouteReply``).
    case route(command: String)
    /// Cast: the result of a command (`answered` or timed out).
    case commandOutcome(command: String, answered: Bool)
    /// Cast: publish `body` to `{prefix}/{id}/down` (group publish).
    case down([UInt8])
    /// Call: apply a merge patch to the tags (reply: ``DeviceReply``).
    case patchTags(JSONValue)
    /// Call: provisioning of an existing or new device: replace the tags when given, join the
    /// groups (reply: ``DeviceReply``).
    case provision(tags: JSONValue?, groups: [String])
    /// Call: the device is being deleted: leave every group, accept nothing more (reply:
    /// ``DeletedReply``, the broker it last used and the revision of its deletion).
    case delete
    /// Call: queue command `name` for `ttl` milliseconds, with `replyWindow` milliseconds for the
    /// answer once sent (reply: ``DeviceReply/json(_:)`` `{"id", "status"}`, or refused
    /// `tooManyCommands`).
    case queueCommand(name: String, body: JSONValue, ttl: Int64, replyWindow: Int64)
    /// Call: one queued command by id, or the list when nil (reply: ``DeviceReply/json(_:)``, or
    /// refused `unknownCommand`).
    case commands(id: String?)
    /// Cast: the device's reply to queued command `id`, its payload as it came.
    case commandReply(id: String, payload: [UInt8])
    /// Cast: take in the stored copy recovery holds for this device, if any, and join the groups
    /// of the state (``DeviceRecovery``).
    case restore

    enum Tag: UInt8 {
        case ingress = 1, twin, patchDesired, group, query, route, commandOutcome, down, patchTags, provision, delete, restore
        case queueCommand, commands, commandReply
    }

    struct DecodeError: Error, CustomStringConvertible {
        var description: String
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .ingress(let kind, let broker, let receivedAt, let retained, let payload):
            writer.byte(Tag.ingress.rawValue)
            writer.string(kind.rawValue)
            writer.string(broker)
            writer.int(receivedAt)
            writer.byte(retained ? 1 : 0)
            writer.bytes(payload)
        case .twin:
            writer.byte(Tag.twin.rawValue)
        case .patchDesired(let patch, let versions):
            writer.byte(Tag.patchDesired.rawValue)
            writer.bytes(patch.serialized())
            writer.int64s(versions)
        case .group(let group, let join):
            writer.byte(Tag.group.rawValue)
            writer.string(group)
            writer.byte(join ? 1 : 0)
        case .query(let fields, let condition):
            writer.byte(Tag.query.rawValue)
            if let fields {
                writer.byte(1)
                writer.int(Int64(fields.count))
                for field in fields { writer.string(field) }
            } else {
                writer.byte(0)
            }
            writer.optionalString(condition)
        case .route(let command):
            writer.byte(Tag.route.rawValue)
            writer.string(command)
        case .commandOutcome(let command, let answered):
            writer.byte(Tag.commandOutcome.rawValue)
            writer.string(command)
            writer.byte(answered ? 1 : 0)
        case .down(let body):
            writer.byte(Tag.down.rawValue)
            writer.bytes(body)
        case .patchTags(let patch):
            writer.byte(Tag.patchTags.rawValue)
            writer.bytes(patch.serialized())
        case .provision(let tags, let groups):
            writer.byte(Tag.provision.rawValue)
            if let tags {
                writer.byte(1)
                writer.bytes(tags.serialized())
            } else {
                writer.byte(0)
            }
            writer.int(Int64(groups.count))
            for group in groups { writer.string(group) }
        case .delete:
            writer.byte(Tag.delete.rawValue)
        case .queueCommand(let name, let body, let ttl, let replyWindow):
            writer.byte(Tag.queueCommand.rawValue)
            writer.string(name)
            writer.bytes(body.serialized())
            writer.int(ttl)
            writer.int(replyWindow)
        case .commands(let id):
            writer.byte(Tag.commands.rawValue)
            writer.optionalString(id)
        case .commandReply(let id, let payload):
            writer.byte(Tag.commandReply.rawValue)
            writer.string(id)
            writer.bytes(payload)
        case .restore:
            writer.byte(Tag.restore.rawValue)
        }
        return writer.buffer
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        guard let tag = Tag(rawValue: try reader.byte()) else { throw DecodeError(description: "unknown message tag") }
        switch tag {
        case .ingress:
            guard let kind = DeviceTopics.Kind(rawValue: try reader.string()) else { throw DecodeError(description: "unknown ingress kind") }
            self = .ingress(
                kind: kind, broker: try reader.string(), receivedAt: try reader.int(), retained: try reader.byte() == 1,
                payload: try reader.bytes())
        case .twin:
            self = .twin
        case .patchDesired:
            self = .patchDesired(try JSONValue.parse(try reader.bytes()), ifVersions: try reader.int64s())
        case .group:
            self = .group(try reader.string(), join: try reader.byte() == 1)
        case .query:
            var fields: [String]?
            if try reader.byte() == 1 {
                let count = try reader.int()
                guard count >= 0, count <= 10_000 else { throw DecodeError(description: "bad field count") }
                fields = []
                for _ in 0..<count { fields?.append(try reader.string()) }
            }
            self = .query(fields: fields, where: try reader.optionalString())
        case .route:
            self = .route(command: try reader.string())
        case .commandOutcome:
            self = .commandOutcome(command: try reader.string(), answered: try reader.byte() == 1)
        case .down:
            self = .down(try reader.bytes())
        case .patchTags:
            self = .patchTags(try JSONValue.parse(try reader.bytes()))
        case .provision:
            var tags: JSONValue?
            if try reader.byte() == 1 { tags = try JSONValue.parse(try reader.bytes()) }
            let count = try reader.int()
            guard count >= 0, count <= 10_000 else { throw DecodeError(description: "bad group count") }
            var groups: [String] = []
            for _ in 0..<count { groups.append(try reader.string()) }
            self = .provision(tags: tags, groups: groups)
        case .delete:
            self = .delete
        case .queueCommand:
            self = .queueCommand(
                name: try reader.string(), body: try JSONValue.parse(try reader.bytes()), ttl: try reader.int(), replyWindow: try reader.int())
        case .commands:
            self = .commands(id: try reader.optionalString())
        case .commandReply:
            self = .commandReply(id: try reader.string(), payload: try reader.bytes())
        case .restore:
            self = .restore
        }
        guard reader.atEnd else { throw DecodeError(description: "trailing bytes") }
    }
}

struct ByteWriter {
    var buffer: [UInt8] = []

    mutating func byte(_ value: UInt8) { buffer.append(value) }

    mutating func int(_ value: Int64) {
        let bits = UInt64(bitPattern: value)
        for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: bits >> UInt64(shift))) }
    }

    mutating func bytes(_ value: [UInt8]) {
        let count = UInt32(value.count)
        for shift in stride(from: 24, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: count >> UInt32(shift))) }
        buffer.append(contentsOf: value)
    }

    mutating func string(_ value: String) { bytes(Array(value.utf8)) }

    /// An optional string: a 0/1 byte, then the string.
    mutating func optionalString(_ value: String?) {
        guard let value else { return byte(0) }
        byte(1)
        string(value)
    }

    /// An optional list of integers: a 0/1 byte, then the count and the values.
    mutating func int64s(_ values: [Int64]?) {
        guard let values else { return byte(0) }
        byte(1)
        int(Int64(values.count))
        for value in values { int(value) }
    }
}

/// The answer of ``DeviceMessage/delete``: the broker the device last used (empty: unknown) and
/// the revision its deletion gets (above every stored copy of it).
struct DeletedReply: Sendable, Hashable {
    var broker: String?
    var revision: Int64

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.string(broker ?? "")
        writer.int(revision)
        return writer.buffer
    }

    init(broker: String?, revision: Int64) {
        self.broker = broker
        self.revision = revision
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        let broker = try reader.string()
        self.broker = broker.isEmpty ? nil : broker
        self.revision = try reader.int()
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
    }
}

/// The answer of a device call that returns the twin: the twin (with its desired version, the
/// ETag) or a refusal (a code the facade turns into a ``GatewayError``).
enum DeviceReply: Sendable, Hashable {
    case twin(version: Int64, json: [UInt8])
    /// Another JSON answer (queued commands).
    case json([UInt8])
    /// `versionConflict` (with the current version), `gone` (the device is being deleted),
    /// `failed` (the message says why).
    case refused(code: String, version: Int64, message: String)

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .twin(let version, let json):
            writer.byte(0)
            writer.int(version)
            writer.bytes(json)
        case .refused(let code, let version, let message):
            writer.byte(1)
            writer.string(code)
            writer.int(version)
            writer.string(message)
        case .json(let json):
            writer.byte(2)
            writer.bytes(json)
        }
        return writer.buffer
    }

    init(decoding bytes: [UInt8]) throws {
        var reader = ByteReader(bytes)
        switch try reader.byte() {
        case 0: self = .twin(version: try reader.int(), json: try reader.bytes())
        case 1: self = .refused(code: try reader.string(), version: try reader.int(), message: try reader.string())
        case 2: self = .json(try reader.bytes())
        default: throw DeviceMessage.DecodeError(description: "unknown reply tag")
        }
        guard reader.atEnd else { throw DeviceMessage.DecodeError(description: "trailing bytes") }
    }
}

/// The answer of a ``DeviceMessage/route(command:)`` call: presence and the broker to publish on.
struct RouteReply: Sendable, Hashable {
    var online: Bool
    var broker: String?

    /// First byte: `R` (a refusal, a ``DeviceReply``, starts with 1).
    static let tag = UInt8(ascii: "R")

    func encoded() -> [UInt8] {
        [Self.tag, online ? 1 : 0] + Array((broker ?? "").utf8)
    }

    init(online: Bool, broker: String?) {
        self.online = online
        self.broker = broker
    }

    init(decoding bytes: [UInt8]) throws {
        guard bytes.count >= 2, bytes[0] == Self.tag, bytes[1] <= 1 else { throw DeviceMessage.DecodeError(description: "bad route reply") }
        online = bytes[1] == 1
        broker = bytes.count > 2 ? String(decoding: bytes.dropFirst(2), as: UTF8.self) : nil
    }
}

struct ByteReader {
    let buffer: [UInt8]
    var index = 0

    init(_ buffer: [UInt8]) { self.buffer = buffer }

    var atEnd: Bool { index == buffer.count }

    mutating func byte() throws -> UInt8 {
        guard index < buffer.count else { throw DeviceMessage.DecodeError(description: "truncated") }
        defer { index += 1 }
        return buffer[index]
    }

    mutating func int() throws -> Int64 {
        guard buffer.count - index >= 8 else { throw DeviceMessage.DecodeError(description: "truncated") }
        var bits: UInt64 = 0
        for _ in 0..<8 { bits = bits << 8 | UInt64(buffer[index]); index += 1 }
        return Int64(bitPattern: bits)
    }

    mutating func bytes() throws -> [UInt8] {
        guard buffer.count - index >= 4 else { throw DeviceMessage.DecodeError(description: "truncated") }
        var count = 0
        for _ in 0..<4 { count = count << 8 | Int(buffer[index]); index += 1 }
        guard buffer.count - index >= count else { throw DeviceMessage.DecodeError(description: "truncated") }
        defer { index += count }
        return Array(buffer[index..<(index + count)])
    }

    mutating func string() throws -> String { String(decoding: try bytes(), as: UTF8.self) }

    mutating func optionalString() throws -> String? {
        try byte() == 1 ? try string() : nil
    }

    mutating func int64s() throws -> [Int64]? {
        guard try byte() == 1 else { return nil }
        let count = try int()
        guard count >= 0, count <= 1_000 else { throw DeviceMessage.DecodeError(description: "bad list count") }
        return try (0..<count).map { _ in try int() }
    }
}
