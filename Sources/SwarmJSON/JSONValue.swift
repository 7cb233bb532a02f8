import Foundation

/// A JSON value: what device payloads, twins, desired/reported state, command bodies, device
/// profiles and fleet files are made of (the gateway and the device simulator share it). `Codable` (it decodes from and encodes to any JSON container), `Sendable`, `Hashable`.
///
/// Numbers keep the distinction JSON parsers make: an integer literal that fits `Int64` is
/// `.int`, anything else `.double`. Equality is structural (`.int(1) != .double(1)`); use
/// ``sameValue(_:)`` for the numeric comparison the delta computation needs.
///
/// ``serialized()`` is the deterministic encoding: object keys sorted, no insignificant
/// whitespace, so equal values always give equal bytes (checkpoints, retained desired state).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The empty object `{}`.
    public static let emptyObject = JSONValue.object([:])

    /// The members when this is an object.
    public var objectValue: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The text when this is a string.
    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    /// The value as an integer when it is an integer (or an integral double).
    public var intValue: Int64? {
        switch self {
        case .int(let value): return value
        case .double(let value) where value.rounded() == value && abs(value) < 9.0e15: return Int64(value)
        default: return nil
        }
    }

    /// The elements when this is an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The value when this is a boolean.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The numeric value of an integer or a double.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    /// The name of this value's JSON type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int: return "integer"
        case .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// `member` of an object (nil for a missing key or a non-object).
    public subscript(member: String) -> JSONValue? {
        objectValue?[member]
    }

    /// The value at a dotted path (`"reported.battery.level"`), nil when a step is missing.
    public func value(atPath path: String) -> JSONValue? {
        var current = self
        for step in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard let next = current.objectValue?[String(step)] else { return nil }
            current = next
        }
        return current
    }

    /// Equality with numbers compared by value (`1 == 1.0`), recursively.
    public func sameValue(_ other: JSONValue) -> Bool {
        switch (self, other) {
        case (.int(let a), .double(let b)): return Double(a) == b
        case (.double(let a), .int(let b)): return a == Double(b)
        case (.array(let a), .array(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.sameValue($1) }
        case (.object(let a), .object(let b)):
            return a.count == b.count && a.allSatisfy { key, value in b[key].map { value.sameValue($0) } ?? false }
        default: return self == other
        }
    }
}

// MARK: - Parsing and serialization

/// Why a payload was not accepted as JSON.
public enum JSONPayloadError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The payload is larger than the limit (bytes, limit).
    case oversized(Int, limit: Int)
    /// Not valid UTF-8 JSON.
    case malformed(String)
    /// Valid JSON, but not the expected shape (for example not an object).
    case unexpectedShape(String)

    public var description: String {
        switch self {
        case .oversized(let size, let limit): return "payload of \(size) bytes exceeds the limit of \(limit)"
        case .malformed(let why): return "malformed JSON: \(why)"
        case .unexpectedShape(let why): return "unexpected JSON: \(why)"
        }
    }
}

extension JSONValue {
    /// Parses `bytes` as one JSON value (any top-level value), refusing payloads over `limit` bytes
    /// before looking at them. Strict RFC 8259 (``JSONReader``): an integer literal that fits
    /// `Int64` is `.int`, every other number `.double`; non-finite numbers are refused.
    public static func parse(_ bytes: [UInt8], limit: Int = .max) throws(JSONPayloadError) -> JSONValue {
        guard bytes.count <= limit else { throw .oversized(bytes.count, limit: limit) }
        do throws(JSONReader.Failure) {
            return try JSONReader.parse(bytes)
        } catch {
            throw .malformed(error.description)
        }
    }

    /// Parses `text` as one JSON value.
    public static func parse(_ text: String) throws(JSONPayloadError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// The deterministic encoding: sorted keys, no whitespace.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(to: &out)
        return out
    }

    /// ``serialized()`` as a string.
    public var jsonText: String { String(decoding: serialized(), as: UTF8.self) }

    package func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .int(let value): out.append(contentsOf: String(value).utf8)
        case .double(let value):
            if value.isFinite {
                if value.rounded() == value && abs(value) < 1e15 {
                    // Keep it a double on the way back: 2.0, not 2.
                    out.append(contentsOf: String(value).utf8)
                } else {
                    out.append(contentsOf: "\(value)".utf8)
                }
            } else {
                out.append(contentsOf: "null".utf8)  // JSON has no NaN or infinity.
            }
        case .string(let text): Self.writeString(text, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                members[key]!.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    package static func writeString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0F)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

// MARK: - Codable

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

// MARK: - Merge patch and delta

extension JSONValue {
    /// RFC 7386 JSON merge patch: `patch` applied to `self`. An object patch merges member by
    /// member (`null` removes a member, objects merge recursively); any other patch replaces.
    public func mergePatched(with patch: JSONValue) -> JSONValue {
        guard case .object(let patchMembers) = patch else { return patch }
        var result = objectValue ?? [:]
        for (key, value) in patchMembers {
            if value == .null {
                result.removeValue(forKey: key)
            } else {
                result[key] = (result[key] ?? .null).mergePatched(with: value)
            }
        }
        return .object(result)
    }

    /// The desired-vs-reported delta: the members of `desired` whose value differs from the same
    /// member of `reported` (numbers compared by value); nested objects compared member by member,
    /// so the delta of `{"a": {"x": 1, "y": 2}}` against `{"a": {"x": 1}}` is `{"a": {"y": 2}}`.
    /// Members only in `reported` are not part of the delta. Always an object.
    public static func delta(desired: JSONValue, reported: JSONValue) -> JSONValue {
        guard case .object(let wanted) = desired else { return .emptyObject }
        let have = reported.objectValue ?? [:]
        var result: [String: JSONValue] = [:]
        for (key, value) in wanted {
            guard let current = have[key] else {
                result[key] = value
                continue
            }
            if case .object = value, case .object = current {
                let nested = delta(desired: value, reported: current)
                if nested != .emptyObject { result[key] = nested }
            } else if !value.sameValue(current) {
                result[key] = value
            }
        }
        return .object(result)
    }
}

extension JSONValue: CustomStringConvertible {
    /// The deterministic JSON text (``serialized()``), so a value reads as JSON in messages.
    public var description: String { jsonText }
}
