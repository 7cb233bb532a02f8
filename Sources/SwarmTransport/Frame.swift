import NIOCore

/// One transport frame: a message type and its payload bytes.
///
/// ## Wire format
/// ```
/// +----------------+--------------+-----------------------+
/// | length: UInt32 | type: UInt16 | payload (length - 2)  |
/// +----------------+--------------+-----------------------+
/// ```
/// All integers are big endian. `length` counts the type and the payload, so the smallest legal
/// value is 2 (an empty payload). Types `0xFF00...0xFFFF` are reserved for the transport itself
/// (see ``Frame/reservedTypes``); the upper layer uses `0x0000...0xFEFF`.
///
/// Decoded payloads are slices of the receive buffer: no copy and no allocation per frame.
public struct Frame: Sendable, Hashable {
    /// The message type chosen by the upper layer (or a reserved transport type).
    public var type: UInt16
    /// The payload bytes (readable bytes only).
    public var payload: ByteBuffer

    /// Bytes of the header in front of every payload: `UInt32` length plus `UInt16` type.
    public static let headerLength = 6

    /// Frame types the transport keeps for itself (handshake). Sending one is a programming error.
    public static let reservedTypes: ClosedRange<UInt16> = 0xFF00...0xFFFF

    /// Creates a frame.
    public init(type: UInt16, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// Appends the wire encoding of a frame with `type` and `payload` to `buffer`.
    /// - Precondition: the payload fits a `UInt32` length.
    @inlinable
    public static func write(type: UInt16, payload: ByteBuffer, to buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: Self.headerLength + payload.readableBytes)
        buffer.writeMultipleIntegers(UInt32(2 + payload.readableBytes), type)
        buffer.writeImmutableBuffer(payload)
    }
}

/// Errors of the frame codec. Any of them closes the connection.
public enum FrameError: Error, Equatable, CustomStringConvertible {
    /// The length field is smaller than 2, the size of the type field.
    case malformedLength(UInt32)
    /// The length field exceeds the configured maximum.
    case frameTooLarge(length: UInt32, maximum: Int)

    /// A log-ready explanation.
    public var description: String {
        switch self {
        case .malformedLength(let length):
            return "malformed frame: length \(length) is shorter than the 2-byte type field"
        case .frameTooLarge(let length, let maximum):
            return "frame of \(length) bytes exceeds the maximum of \(maximum) bytes"
        }
    }
}

/// Decodes ``Frame``s from a byte stream.
///
/// The length field is checked as soon as its 4 bytes arrive, so an oversize or malformed frame
/// is refused before its body is buffered. Usable as a `ByteToMessageDecoder` in a pipeline, or
/// driven directly through ``decode(buffer:)`` (the transport does this to avoid a pipeline hop
/// per frame).
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    /// Decodes into ``Frame``s.
    public typealias InboundOut = Frame

    /// Largest accepted value of the length field (type + payload), in bytes.
    public var maximumFrameLength: Int

    /// Creates a decoder refusing frames whose length field exceeds `maximumFrameLength`.
    public init(maximumFrameLength: Int = TransportSettings.defaultMaximumFrameLength) {
        precondition(maximumFrameLength >= 2, "maximumFrameLength must be at least 2, got \(maximumFrameLength)")
        self.maximumFrameLength = maximumFrameLength
    }

    /// Decodes one frame from the front of `buffer`, or returns `nil` when more bytes are needed.
    @inlinable
    public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 2 else { throw FrameError.malformedLength(length) }
        guard length <= self.maximumFrameLength else {
            throw FrameError.frameTooLarge(length: length, maximum: self.maximumFrameLength)
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let type = buffer.readInteger(as: UInt16.self)!
        let payload = buffer.readSlice(length: Int(length) - 2)!
        return Frame(type: type, payload: payload)
    }

    /// Decodes at end of stream; a trailing partial frame is left in the buffer (and dropped).
    @inlinable
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
        try self.decode(buffer: &buffer)
    }
}

/// Encodes ``Frame``s for a pipeline that writes frames one by one.
///
/// The transport itself does not use it on the hot path: it appends frames to one batch buffer
/// per peer (see ``PeerConnection``), which coalesces writes and avoids an allocation per frame.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    /// Encodes ``Frame``s.
    public typealias OutboundIn = Frame

    /// Creates an encoder.
    public init() {}

    /// Appends the wire encoding of `data` to `out`.
    public func encode(data: Frame, out: inout ByteBuffer) throws {
        Frame.write(type: data.type, payload: data.payload, to: &out)
    }
}
