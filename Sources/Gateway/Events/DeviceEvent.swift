import Foundation
import GatewayStore
import SwarmJSON

/// What happened to a device (docs/gateway.md, “Events”).
public enum EventType: String, CaseIterable, Sendable, Hashable {
    /// A telemetry message; `data` is the device's JSON payload as sent.
    case telemetry
    /// A change of the reported state: `{"patch": …, "reportedVersion": n}`.
    case reported
    /// A change of the desired state: `{"patch": …, "version": n}`.
    case desired
    /// `{"status": "online" | "offline"}`.
    case presence
    /// `{"status": "created" | "deleted"}`.
    case lifecycle
    /// `{"name": …, "status": "answered" | "failed", "reason"?}`.
    case command

    var code: UInt8 {
        switch self {
        case .telemetry: 1
        case .reported: 2
        case .desired: 3
        case .presence: 4
        case .lifecycle: 5
        case .command: 6
        }
    }

    init?(code: UInt8) {
        guard let type = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = type
    }
}

/// The position of an event in the cluster's event stream: its time (microseconds since the
/// epoch) and its device. Every node delivers the stream in this order, so a key is a cursor
/// that means the same on every node: "everything up to here". Printed as `{time}-{device}`
/// (`1763640000123456-dev-42`): the SSE `id:`, `Last-Event-ID`, `?after=`, the event's `id`.
public struct EventKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var time: Int64
    public var device: String

    public init(time: Int64, device: String) {
        self.time = time
        self.device = device
    }

    /// Before every event.
    public static let zero = EventKey(time: 0, device: "")

    public static func < (lhs: EventKey, rhs: EventKey) -> Bool {
        lhs.time != rhs.time ? lhs.time < rhs.time : lhs.device < rhs.device
    }

    /// The cursor text.
    public var description: String { "\(time)-\(device)" }

    /// Parses a cursor (`{time}-{device}`, or `{time}` alone: before every event of a later
    /// time); nil when malformed.
    public init?(cursor text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 18, let time = Int64(digits) else { return nil }
        let rest = trimmed.dropFirst(digits.count)
        if rest.isEmpty {
            self.init(time: time, device: "")
            return
        }
        guard rest.first == "-" else { return nil }
        let device = String(rest.dropFirst())
        guard DeviceID.isValid(device) else { return nil }
        self.init(time: time, device: device)
    }

    var stored: StoredEventKey { StoredEventKey(time: time, device: device) }
    init(_ stored: StoredEventKey) { self.init(time: stored.time, device: stored.device) }
}

/// One event as it travels and is kept: its key, `seq`, type, the device's groups at the time
/// (for `group=` filters), the node whose device process emitted it, and its JSON exactly as
/// the API serves it (rendered once, at the origin).
public struct DeviceEvent: Sendable, Hashable {
    public var key: EventKey
    public var seq: Int64
    public var type: EventType
    public var groups: [String]
    public var origin: String
    /// `{"id": "<key>", "type", "device", "seq", "time": RFC 3339 with microseconds, "data"}`.
    public var json: [UInt8]

    public var device: String { key.device }

    public init(key: EventKey, seq: Int64, type: EventType, groups: [String], origin: String, json: [UInt8]) {
        self.key = key
        self.seq = seq
        self.type = type
        self.groups = groups
        self.origin = origin
        self.json = json
    }

    /// Builds the event and renders its JSON; `data` must be valid JSON (it is copied as is).
    init(key: EventKey, seq: Int64, type: EventType, groups: [String], origin: String, data: [UInt8]) {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + key.device.count * 2 + 120)
        out.append(contentsOf: #"{"id":""#.utf8)
        out.append(contentsOf: String(key.time).utf8)
        out.append(UInt8(ascii: "-"))
        out.append(contentsOf: key.device.utf8)
        out.append(contentsOf: #"","type":""#.utf8)
        out.append(contentsOf: type.rawValue.utf8)
        out.append(contentsOf: #"","device":""#.utf8)
        // Device ids are `[A-Za-z0-9._:-]`: nothing to escape.
        out.append(contentsOf: key.device.utf8)
        out.append(contentsOf: #"","seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: #","time":""#.utf8)
        RFC3339.writeMicros(key.time, to: &out)
        out.append(contentsOf: #"","data":"#.utf8)
        out.append(contentsOf: data)
        out.append(UInt8(ascii: "}"))
        self.init(key: key, seq: seq, type: type, groups: groups, origin: origin, json: out)
    }

    var stored: StoredEvent {
        StoredEvent(key: key.stored, seq: seq, type: type.rawValue, node: origin, groups: groups, body: json)
    }

    init?(_ row: StoredEvent) {
        guard let type = EventType(rawValue: row.type) else { return nil }
        self.init(key: EventKey(row.key), seq: row.seq, type: type, groups: row.groups, origin: row.node, json: row.body)
    }
}

/// RFC 3339 UTC timestamps from microseconds since the epoch, written without Foundation's
/// formatters (one per event: the formatter cost more than the rest of the event).
enum RFC3339 {
    static func writeMicros(_ micros: Int64, to out: inout [UInt8]) {
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let fraction = micros - seconds * 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        digits(year, 4, &out)
        out.append(UInt8(ascii: "-"))
        digits(month, 2, &out)
        out.append(UInt8(ascii: "-"))
        digits(day, 2, &out)
        out.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2, &out)
        out.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2, &out)
        out.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2, &out)
        out.append(UInt8(ascii: "."))
        digits(fraction, 6, &out)
        out.append(UInt8(ascii: "Z"))
    }

    static func string(micros: Int64) -> String {
        var out: [UInt8] = []
        writeMicros(micros, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func digits(_ value: Int64, _ width: Int, _ out: inout [UInt8]) {
        var buffer = [UInt8](repeating: UInt8(ascii: "0"), count: width)
        var rest = max(0, value)
        var index = width - 1
        while index >= 0 {
            buffer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
            index -= 1
        }
        out.append(contentsOf: buffer)
    }
}

// MARK: - Wire encoding of event batches (the fan-out between nodes)

extension DeviceEvent {
    func write(to writer: inout ByteWriter) {
        writer.int(key.time)
        writer.string(key.device)
        writer.int(seq)
        writer.byte(type.code)
        writer.int(Int64(groups.count))
        for group in groups { writer.string(group) }
        writer.bytes(json)
    }

    static func read(from reader: inout ByteReader, origin: String) throws -> DeviceEvent {
        let time = try reader.int()
        let device = try reader.string()
        let seq = try reader.int()
        guard let type = EventType(code: try reader.byte()) else { throw DeviceMessage.DecodeError(description: "unknown event type") }
        let count = try reader.int()
        guard count >= 0, count <= 10_000 else { throw DeviceMessage.DecodeError(description: "bad group count") }
        var groups: [String] = []
        groups.reserveCapacity(Int(count))
        for _ in 0..<count { groups.append(try reader.string()) }
        return DeviceEvent(key: EventKey(time: time, device: device), seq: seq, type: type, groups: groups, origin: origin, json: try reader.bytes())
    }
}
