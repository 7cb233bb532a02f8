import FuzzSupport
import NIOCore
import SwarmCore
import SwarmWire

/// Input: `[type: UInt16 BE][payload…]`, exactly the part of a cluster frame after its length.
///
/// Invariants (beyond "never traps, never hangs, never allocates unboundedly"):
/// - a successful decode consumes the whole payload, and re-encoding gives the same frame type,
///   exactly `payloadSize` bytes (peer messages), and bytes that decode to an equal message;
/// - a failed decode leaves the payload's reader index where it was (documented contract);
/// - `decode` and `decodeNodeMessage` agree with `decodeAny`;
/// - the payload is also fed to `decodeEnvelope` (the layout inside `named`/`toProcesses`).
func fuzzWire(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    var input = FuzzInput(data, size)
    let type = input.uint16()
    // A slice of a larger buffer, as the frame decoder hands it over (reader index not at 0).
    var frame = ByteBuffer(bytes: input.bytes)
    frame.moveReaderIndex(forwardBy: min(2, frame.readableBytes))
    var payload = frame.readSlice(length: frame.readableBytes)!
    let original = payload

    let decoded: WireMessage?
    do {
        decoded = try WireCodec.decodeAny(type: type, payload: &payload)
    } catch {
        fuzzCheck(payload == original && payload.readerIndex == original.readerIndex, "failed decodeAny moved the reader index (\(error))")
        decoded = nil
    }

    var peerPayload = original
    let peer = try? WireCodec.decode(type: type, payload: &peerPayload)
    var nodePayload = original
    let node = try? WireCodec.decodeNodeMessage(type: type, payload: &nodePayload)
    switch decoded {
    case .peer(let message)?: fuzzCheck(peer == message && node == nil, "decode disagrees with decodeAny")
    case .node(let message)?: fuzzCheck(node == message && peer == nil, "decodeNodeMessage disagrees with decodeAny")
    case nil: fuzzCheck(peer == nil && node == nil, "decode accepted what decodeAny refused")
    }

    if let decoded {
        fuzzCheck(payload.readableBytes == 0, "decodeAny left \(payload.readableBytes) bytes")
        var encoded = ByteBuffer()
        let encodedType: UInt16
        switch decoded {
        case .peer(let message):
            encodedType = WireCodec.encode(message, into: &encoded)
            fuzzCheck(encoded.readableBytes == WireCodec.payloadSize(message), "payloadSize disagrees with encode")
        case .node(let message):
            encodedType = WireCodec.encode(message, into: &encoded)
        }
        fuzzCheck(encodedType == type, "re-encoded type \(encodedType) != \(type)")
        var again = encoded
        let redecoded = try? WireCodec.decodeAny(type: encodedType, payload: &again)
        fuzzCheck(redecoded == decoded, "decode(encode(m)) != m for type \(type)")
    }

    var envelopeBytes = original
    if let envelope = try? WireCodec.decodeEnvelope(from: &envelopeBytes) {
        var encoded = ByteBuffer()
        WireCodec.encode(envelope, into: &encoded)
        let redecoded = try? WireCodec.decodeEnvelope(from: &encoded)
        fuzzCheck(redecoded == envelope, "envelope round trip")
    }
}

@main
enum Main {
    static func main() {
        fuzzMain { data, size in
            fuzzWire(data, size)
            return 0
        }
    }
}

#if SWARM_LIBFUZZER
/// libFuzzer's conventional entry point. `main` above drives the fuzzing; a debug link pulls in
/// libFuzzer's own `main` as well, which refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzWire(data, size)
    return 0
}
#endif
