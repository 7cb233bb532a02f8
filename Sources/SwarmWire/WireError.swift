/// Why a payload could not be decoded. Every decode failure of ``WireCodec`` is one of these;
/// the codec never traps on input bytes.
///
/// A receiver should treat any `WireError` from an authenticated peer as a protocol violation
/// (log it and drop the frame, or close the connection); it is never caused by the receiver.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The frame type is not a message type this codec knows (see ``WireMessageType``).
    case unknownMessageType(UInt16)
    /// The payload ended inside `field`: `needed` more bytes were required, `available` remained.
    case truncated(field: String, needed: Int, available: Int)
    /// The UInt32 length prefix of a string or byte array in `field` exceeds the remaining bytes.
    case lengthExceedsPayload(field: String, length: UInt32, available: Int)
    /// The UInt32 element count of the array `field` cannot fit in the remaining bytes, even if
    /// every element had its smallest encoding (`minimumElementBytes`). Rejected before any
    /// storage is reserved.
    case countExceedsPayload(field: String, count: UInt32, minimumElementBytes: Int, available: Int)
    /// The bytes of the string `field` are not valid UTF-8.
    case invalidUTF8(field: String)
    /// The UInt8 tag of the enum, optional or boolean `field` is not one of its defined values.
    case unknownTag(field: String, tag: UInt8)
    /// The message decoded completely but `count` bytes were left over in the payload.
    case trailingBytes(type: UInt16, count: Int)

    /// A log-ready explanation.
    public var description: String {
        switch self {
        case .unknownMessageType(let type):
            return "unknown wire message type \(hex(type))"
        case .truncated(let field, let needed, let available):
            return "truncated payload: \(field) needs \(needed) bytes, \(available) remain"
        case .lengthExceedsPayload(let field, let length, let available):
            return "length \(length) of \(field) exceeds the \(available) remaining payload bytes"
        case .countExceedsPayload(let field, let count, let minimum, let available):
            return "count \(count) of \(field) cannot fit in \(available) remaining bytes (each element takes at least \(minimum))"
        case .invalidUTF8(let field):
            return "\(field) is not valid UTF-8"
        case .unknownTag(let field, let tag):
            return "unknown tag \(tag) for \(field)"
        case .trailingBytes(let type, let count):
            return "\(count) trailing bytes after message type \(hex(type))"
        }
    }
}

/// `0x001A`-style rendering of a message type.
func hex(_ value: UInt16) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
