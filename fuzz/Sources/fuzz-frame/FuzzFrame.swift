import FuzzSupport
import NIOCore
import NIOEmbedded
import SwarmTransport

/// Input: `[mode: UInt8][stream…]`. `mode` picks the decoder's maximum frame length and the seed
/// of the chunking; the rest is the byte stream a peer sends.
///
/// The stream is decoded three ways, which must agree frame for frame and on the error:
/// 1. all at once (`FrameDecoder.decode(buffer:)` in a loop);
/// 2. in chunks of 1–64 bytes through a cumulation buffer, exactly as `PeerChannelHandler` does;
/// 3. in the same chunks through NIO's `ByteToMessageHandler` in an `EmbeddedChannel`.
/// Each frame must re-encode (`Frame.write`) to the bytes it was decoded from.
func fuzzFrame(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    let maximums = [2, 6, 64, 4096, TransportSettings.defaultMaximumFrameLength]
    let maximum = maximums[Int(mode & 0x07) % maximums.count]
    let stream = Array(input.rest())

    // 1. All at once.
    var whole = ByteBuffer(bytes: stream)
    var decoder = FrameDecoder(maximumFrameLength: maximum)
    var reference: [Frame] = []
    var referenceError: FrameError?
    do {
        while let frame = try decoder.decode(buffer: &whole) { reference.append(frame) }
    } catch let error as FrameError {
        referenceError = error
    } catch {
        fuzzCheck(false, "FrameDecoder threw a non-FrameError \(error)")
    }
    var reencoded = ByteBuffer()
    for frame in reference {
        fuzzCheck(frame.payload.readableBytes + 2 <= maximum, "frame above the maximum accepted")
        Frame.write(type: frame.type, payload: frame.payload, to: &reencoded)
    }
    let consumed = stream.count - whole.readableBytes
    fuzzCheck(Array(reencoded.readableBytesView) == Array(stream[0..<consumed]), "frames do not re-encode to their bytes")
    if referenceError == nil {
        fuzzCheck(whole.readableBytes < 4 || Int(whole.getInteger(at: whole.readerIndex, as: UInt32.self)!) + 4 > whole.readableBytes,
                  "decoder stopped before a complete frame")
    }

    // Chunk sizes from a small generator seeded by the mode byte.
    var seed = UInt64(mode) &* 0x9E37_79B9_7F4A_7C15 | 1
    var chunks: [ArraySlice<UInt8>] = []
    var offset = 0
    while offset < stream.count {
        seed ^= seed << 13
        seed ^= seed >> 7
        seed ^= seed << 17
        let length = min(stream.count - offset, Int(seed % 64) + 1)
        chunks.append(stream[offset..<(offset + length)])
        offset += length
    }

    // 2. Chunked, through a cumulation buffer (the transport's own loop).
    var chunkedDecoder = FrameDecoder(maximumFrameLength: maximum)
    var cumulation: ByteBuffer?
    var chunked: [Frame] = []
    var chunkedError: FrameError?
    feeding: for chunk in chunks {
        var buffer = ByteBuffer(bytes: chunk)
        var current: ByteBuffer
        if var existing = cumulation, existing.readableBytes > 0 {
            cumulation = nil
            existing.discardReadBytes()
            existing.writeBuffer(&buffer)
            current = existing
        } else {
            current = buffer
        }
        do {
            while let frame = try chunkedDecoder.decode(buffer: &current) { chunked.append(frame) }
        } catch {
            chunkedError = error as? FrameError
            break feeding
        }
        cumulation = current
    }
    fuzzCheck(chunked == reference, "chunked decoding gave other frames")
    fuzzCheck(chunkedError == referenceError, "chunked decoding gave another error")

    // 3. NIO's ByteToMessageHandler.
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximum)))
    var pipelined: [Frame] = []
    var pipelineError: FrameError?
    for chunk in chunks {
        do {
            try channel.writeInbound(ByteBuffer(bytes: chunk))
        } catch {
            pipelineError = error as? FrameError
        }
        while let frame = try? channel.readInbound(as: Frame.self) { pipelined.append(frame) }
        if pipelineError != nil { break }
    }
    _ = try? channel.finish()
    fuzzCheck(pipelined == reference, "ByteToMessageHandler gave other frames")
    fuzzCheck(pipelineError == referenceError, "ByteToMessageHandler gave another error")
}

@main
enum Main {
    static func main() {
        fuzzMain { data, size in
            fuzzFrame(data, size)
            return 0
        }
    }
}

#if SWARM_LIBFUZZER
/// libFuzzer's conventional entry point. `main` above drives the fuzzing; a debug link pulls in
/// libFuzzer's own `main` as well, which refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzFrame(data, size)
    return 0
}
#endif
