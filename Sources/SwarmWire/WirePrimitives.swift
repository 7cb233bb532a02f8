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
// Encoding and decoding work on raw pointers into the ByteBuffer's storage, obtained once per
// message: every individual ByteBuffer read or write costs a call into NIOCore with
// exclusivity and uniqueness checks, which dominated the profile of the field-by-field version.
// Both cursors are bounds-checked on every access: the reader throws, the writer traps (the
// writer's size is computed by `wireSize` first, so a trap there is a codec bug, never input).
//
// Readers take the field name as a `StaticString` and only turn it into a `String` on the error
// path, so the happy path does no allocation beyond the decoded values themselves.

/// A bounds-checked cursor over a payload's bytes. Only valid inside the closure that lent `bytes`.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { self.bytes.count &- self.offset }

    @inline(__always)
    mutating func wireReadInteger<I: FixedWidthInteger>(_ field: StaticString, as: I.Type = I.self) throws(WireError) -> I {
        let size = MemoryLayout<I>.size
        guard size <= self.remaining else {
            throw .truncated(field: "\(field)", needed: size, available: self.remaining)
        }
        let value = self.bytes.loadUnaligned(fromByteOffset: self.offset, as: I.self)
        self.offset &+= size
        return I(bigEndian: value)
    }

    @inline(__always)
    mutating func wireReadUInt8(_ field: StaticString) throws(WireError) -> UInt8 {
        guard self.remaining >= 1 else { throw .truncated(field: "\(field)", needed: 1, available: 0) }
        let value = self.bytes[self.offset]
        self.offset &+= 1
        return value
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
        try self.wireReadBool(field)
    }

    /// Reads a UInt32 byte length and checks it against the remaining bytes.
    @inline(__always)
    mutating func wireReadLength(_ field: StaticString) throws(WireError) -> Int {
        let length = try self.wireReadInteger(field, as: UInt32.self)
        guard Int(length) <= self.remaining else {
            throw .lengthExceedsPayload(field: "\(field)", length: length, available: self.remaining)
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
        guard Int(count) * minimumElementBytes <= self.remaining else {
            throw .countExceedsPayload(
                field: "\(field)", count: count, minimumElementBytes: minimumElementBytes,
                available: self.remaining
            )
        }
        return Int(count)
    }

    /// The next `length` bytes, which the caller checked against `remaining`.
    @inline(__always)
    private mutating func take(_ length: Int) -> UnsafeRawBufferPointer {
        let slice = UnsafeRawBufferPointer(rebasing: self.bytes[self.offset..<(self.offset + length)])
        self.offset &+= length
        return slice
    }

    /// UInt32 length + UTF-8 bytes, validated.
    @inline(__always)
    mutating func wireReadString(_ field: StaticString) throws(WireError) -> String {
        let length = try self.wireReadLength(field)
        let slice = self.take(length)
        let string: String? = slice.withMemoryRebound(to: UInt8.self) { utf8 in
            // ASCII is valid UTF-8, and `String(decoding:)` on an UnsafeBufferPointer is a
            // specialised fast path; `String(validating:)` (generic, slower) handles the rest.
            isASCII(slice) ? String(decoding: utf8, as: UTF8.self) : String(validating: utf8, as: UTF8.self)
        }
        guard let string else { throw .invalidUTF8(field: "\(field)") }
        return string
    }

    /// UInt32 length + bytes.
    @inline(__always)
    mutating func wireReadBytes(_ field: StaticString) throws(WireError) -> [UInt8] {
        let length = try self.wireReadLength(field)
        return [UInt8](self.take(length))
    }
}

/// A cursor writing into memory sized by `wireSize`; every write is bounds-checked.
struct WireWriter {
    let bytes: UnsafeMutableRawBufferPointer
    private(set) var offset: Int = 0

    init(bytes: UnsafeMutableRawBufferPointer) { self.bytes = bytes }

    @inline(__always)
    private mutating func claim(_ size: Int) -> Int {
        let start = self.offset
        precondition(size <= self.bytes.count &- start, "SwarmWire: encoded size exceeds the computed wireSize (codec bug)")
        self.offset = start &+ size
        return start
    }

    @inline(__always)
    mutating func wireWriteInteger<I: FixedWidthInteger>(_ value: I) {
        let at = self.claim(MemoryLayout<I>.size)
        self.bytes.storeBytes(of: value.bigEndian, toByteOffset: at, as: I.self)
    }

    @inline(__always)
    mutating func wireWrite(_ value: UInt8) {
        let at = self.claim(1)
        self.bytes[at] = value
    }

    @inline(__always)
    mutating func wireWrite(_ value: UInt64) { self.wireWriteInteger(value) }

    @inline(__always)
    mutating func wireWrite(_ value: Bool) { self.wireWrite(value ? 1 as UInt8 : 0) }

    /// UInt32 element count.
    /// - Precondition: fewer than 2^32 elements.
    @inline(__always)
    mutating func wireWriteCount(_ count: Int) { self.wireWriteInteger(UInt32(count)) }

    @inline(__always)
    private mutating func copy(_ source: UnsafeRawBufferPointer) {
        let at = self.claim(source.count)
        if source.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: self.bytes[at..<(at + source.count)]).copyMemory(from: source)
        }
    }

    /// UInt32 length + UTF-8 bytes.
    /// - Precondition: the string is shorter than 4 GiB.
    @inline(__always)
    mutating func wireWrite(_ string: String) {
        let utf8 = string.utf8
        self.wireWriteInteger(UInt32(utf8.count))
        let copied: Void? = utf8.withContiguousStorageIfAvailable { self.copy(UnsafeRawBufferPointer($0)) }
        if copied == nil {
            // Not contiguous UTF-8 (a lazily bridged string): byte by byte.
            let at = self.claim(utf8.count)
            for (index, byte) in utf8.enumerated() { self.bytes[at + index] = byte }
        }
    }

    /// UInt32 length + bytes.
    /// - Precondition: fewer than 4 GiB.
    @inline(__always)
    mutating func wireWriteBytes(_ bytes: [UInt8]) {
        self.wireWriteInteger(UInt32(bytes.count))
        bytes.withUnsafeBytes { self.copy($0) }
    }
}

/// Encoded size of a `String`: UInt32 length + UTF-8 bytes.
@inline(__always)
func wireSize(_ string: String) -> Int { 4 + string.utf8.count }

/// Encoded size of a byte array: UInt32 length + bytes.
@inline(__always)
func wireSize(bytes: [UInt8]) -> Int { 4 + bytes.count }

/// Encoded size of an optional byte array: tag + (length + bytes).
@inline(__always)
func wireSize(optionalBytes bytes: [UInt8]?) -> Int { 1 + (bytes.map { 4 + $0.count } ?? 0) }

extension ByteBuffer {
    /// Appends exactly `size` bytes written by `body` through a bounds-checked cursor.
    @inline(__always)
    mutating func wireWrite(size: Int, _ body: (inout WireWriter) -> Void) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { target in
            var writer = WireWriter(bytes: UnsafeMutableRawBufferPointer(rebasing: target[..<size]))
            body(&writer)
            precondition(writer.offset == size, "SwarmWire: encoded \(writer.offset) bytes, computed wireSize \(size) (codec bug)")
            return size
        }
    }

    /// Runs `body` over all readable bytes; on success consumes them all, on failure leaves
    /// the reader index where it was.
    @inline(__always)
    mutating func wireRead<T>(_ body: (inout WireReader) throws(WireError) -> T) throws(WireError) -> T {
        let result: Result<T, WireError> = self.withUnsafeReadableBytes { raw in
            var reader = WireReader(bytes: raw)
            do throws(WireError) {
                return .success(try body(&reader))
            } catch {
                return .failure(error)
            }
        }
        let value = try result.get()
        self.moveReaderIndex(to: self.writerIndex)
        return value
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
