import NIOCore

// The primitive encodings every message is built from (see docs/wire-format.md):
//   integers   big endian, fixed width
//   Bool       UInt8 0 or 1 (anything else is rejected)
//   String     UInt32 byte length + UTF-8 bytes (validated on decode)
//   [UInt8]    UInt32 byte length + bytes
//   T?         UInt8 tag (0 = nil, 1 = value follows)
//   [T]        UInt32 element count + elements
//   enums      UInt8 tag + the case's fields
//
// Readers take the field name as a `StaticString` and only turn it into a `String` on the error
// path, so the happy path does no allocation beyond the decoded values themselves.

extension ByteBuffer {
    // MARK: Writing

    @inline(__always)
    mutating func wireWrite(_ value: UInt8) { self.writeInteger(value) }

    @inline(__always)
    mutating func wireWrite(_ value: UInt64) { self.writeInteger(value) }

    @inline(__always)
    mutating func wireWrite(_ value: Bool) { self.writeInteger(value ? 1 as UInt8 : 0) }

    /// UInt32 length + UTF-8 bytes.
    /// - Precondition: the string is shorter than 4 GiB.
    @inline(__always)
    mutating func wireWrite(_ string: String) {
        let length = string.utf8.count
        let prefix = UInt32(length)
        // One buffer access for prefix and bytes (each ByteBuffer write call costs an
        // exclusivity check and a uniqueness check).
        let written: Int? = string.utf8.withContiguousStorageIfAvailable { utf8 in
            self.writeWithUnsafeMutableBytes(minimumWritableBytes: 4 + length) { target in
                target.storeBytes(of: prefix.bigEndian, as: UInt32.self)
                if length > 0, let base = utf8.baseAddress {
                    UnsafeMutableRawBufferPointer(rebasing: target[4...]).copyMemory(from: UnsafeRawBufferPointer(start: base, count: length))
                }
                return 4 + length
            }
        }
        if written == nil {
            // Not contiguous UTF-8 (a lazily bridged string): the slow path.
            self.reserveCapacity(minimumWritableBytes: 4 + length)
            self.writeInteger(prefix)
            self.writeString(string)
        }
    }

    /// UInt32 length + bytes.
    /// - Precondition: fewer than 4 GiB.
    @inline(__always)
    mutating func wireWriteBytes(_ bytes: [UInt8]) {
        self.reserveCapacity(minimumWritableBytes: 4 + bytes.count)
        self.writeInteger(UInt32(bytes.count))
        self.writeBytes(bytes)
    }

    /// UInt32 element count.
    /// - Precondition: fewer than 2^32 elements.
    @inline(__always)
    mutating func wireWriteCount(_ count: Int) { self.writeInteger(UInt32(count)) }

    // MARK: Reading

    @inline(__always)
    mutating func wireReadInteger<I: FixedWidthInteger>(_ field: StaticString, as: I.Type = I.self) throws(WireError) -> I {
        guard let value = self.readInteger(endianness: .big, as: I.self) else {
            throw .truncated(field: "\(field)", needed: MemoryLayout<I>.size, available: self.readableBytes)
        }
        return value
    }

    @inline(__always)
    mutating func wireReadUInt8(_ field: StaticString) throws(WireError) -> UInt8 {
        try self.wireReadInteger(field, as: UInt8.self)
    }

    @inline(__always)
    mutating func wireReadUInt64(_ field: StaticString) throws(WireError) -> UInt64 {
        try self.wireReadInteger(field, as: UInt64.self)
    }

    @inline(__always)
    mutating func wireReadBool(_ field: StaticString) throws(WireError) -> Bool {
        switch try self.wireReadUInt8(field) {
        case 0: return false
        case 1: return true
        case let tag: throw .unknownTag(field: "\(field)", tag: tag)
        }
    }

    /// Reads the tag of an optional: false for nil, true when a value follows.
    @inline(__always)
    mutating func wireReadOptionalTag(_ field: StaticString) throws(WireError) -> Bool {
        switch try self.wireReadUInt8(field) {
        case 0: return false
        case 1: return true
        case let tag: throw .unknownTag(field: "\(field)", tag: tag)
        }
    }

    /// Reads a UInt32 byte length and checks it against the remaining bytes.
    @inline(__always)
    mutating func wireReadLength(_ field: StaticString) throws(WireError) -> Int {
        let length = try self.wireReadInteger(field, as: UInt32.self)
        guard Int(length) <= self.readableBytes else {
            throw .lengthExceedsPayload(field: "\(field)", length: length, available: self.readableBytes)
        }
        return Int(length)
    }

    /// Reads a UInt32 element count and checks that `count × minimumElementBytes` fits in the
    /// remaining bytes, so a hostile count can never make the decoder reserve more than a small
    /// multiple of the payload it actually received.
    @inline(__always)
    mutating func wireReadCount(_ field: StaticString, minimumElementBytes: Int) throws(WireError) -> Int {
        let count = try self.wireReadInteger(field, as: UInt32.self)
        // Int is at least 64 bits on every platform NIO supports, so this cannot overflow.
        guard Int(count) * minimumElementBytes <= self.readableBytes else {
            throw .countExceedsPayload(
                field: "\(field)", count: count, minimumElementBytes: minimumElementBytes,
                available: self.readableBytes
            )
        }
        return Int(count)
    }

    /// UInt32 length + UTF-8 bytes, validated.
    @inline(__always)
    mutating func wireReadString(_ field: StaticString) throws(WireError) -> String {
        let length = try self.wireReadLength(field)
        let string: String? = self.withUnsafeReadableBytes { raw in
            // `length <= readableBytes` was checked above.
            let bytes = UnsafeRawBufferPointer(rebasing: raw[..<length])
            return bytes.withMemoryRebound(to: UInt8.self) { utf8 in
                // ASCII is valid UTF-8, and `String(decoding:)` on an UnsafeBufferPointer is a
                // specialised fast path; `String(validating:)` (generic, slower) handles the rest.
                isASCII(UnsafeRawBufferPointer(utf8))
                    ? String(decoding: utf8, as: UTF8.self)
                    : String(validating: utf8, as: UTF8.self)
            }
        }
        guard let string else { throw .invalidUTF8(field: "\(field)") }
        self.moveReaderIndex(forwardBy: length)
        return string
    }

    /// UInt32 length + bytes.
    @inline(__always)
    mutating func wireReadBytes(_ field: StaticString) throws(WireError) -> [UInt8] {
        let length = try self.wireReadLength(field)
        guard let bytes = self.readBytes(length: length) else {
            // Unreachable: the length was checked against the readable bytes.
            throw .truncated(field: "\(field)", needed: length, available: self.readableBytes)
        }
        return bytes
    }
}

/// True when every byte is below 0x80. Eight bytes at a time.
@inline(__always)
func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
    var index = 0
    let count = bytes.count
    while index + 8 <= count {
        if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
        index += 8
    }
    while index < count {
        if bytes[index] & 0x80 != 0 { return false }
        index += 1
    }
    return true
}
