import NIOCore
import NIOEmbedded
import NIOTestUtils
import SwarmCore
import Testing

@testable import SwarmTransport

@Suite("Frame codec")
struct FrameCodecTests {
    private func encoded(_ frames: [Frame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames { Frame.write(type: frame.type, payload: frame.payload, to: &buffer) }
        return buffer
    }

    @Test("the decoder passes NIO's verifier (byte-at-a-time, all-at-once, shuffled)")
    func verifier() throws {
        let empty = Frame(type: 7, payload: ByteBuffer())
        let small = Frame(type: 0x1234, payload: ByteBuffer(string: "hello"))
        let large = Frame(type: 0xFEFF, payload: ByteBuffer(repeating: 0xAB, count: 3_000))
        let pairs: [(ByteBuffer, [Frame])] = [
            (self.encoded([empty]), [empty]),
            (self.encoded([small]), [small]),
            (self.encoded([large]), [large]),
            (self.encoded([small, empty, small]), [small, empty, small]),
        ]
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            FrameDecoder(maximumFrameLength: 4_000)
        }
    }

    @Test("wire format is [UInt32 length][UInt16 type][payload], big endian")
    func wireFormat() {
        let buffer = self.encoded([Frame(type: 0x0102, payload: ByteBuffer(bytes: [9, 8, 7]))])
        #expect(Array(buffer.readableBytesView) == [0, 0, 0, 5, 0x01, 0x02, 9, 8, 7])
    }

    @Test("an oversize length is refused as soon as the header arrives, and the pipeline closes")
    func oversize() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: 1024)))
        var header = ByteBuffer()
        header.writeMultipleIntegers(UInt32(1025), UInt16(1))
        #expect(throws: FrameError.frameTooLarge(length: 1025, maximum: 1024)) {
            try channel.writeInbound(header)
        }
        _ = try? channel.finish()
    }

    @Test("a length shorter than the type field is malformed")
    func malformed() throws {
        var decoder = FrameDecoder()
        var buffer = ByteBuffer(bytes: [0, 0, 0, 1, 0xFF])
        #expect(throws: FrameError.malformedLength(1)) { try decoder.decode(buffer: &buffer) }
    }

    @Test("the encoder writes frames through an EmbeddedChannel")
    func encoder() throws {
        let channel = EmbeddedChannel(handler: MessageToByteHandler(FrameEncoder()))
        let frame = Frame(type: 3, payload: ByteBuffer(string: "abc"))
        try channel.writeOutbound(frame)
        let out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(out == self.encoded([frame]))
        #expect(try channel.finish().isClean)
    }
}

@Suite("Peer connection outbound queue")
struct PeerConnectionTests {
    private func settings(maximumPending: Int = 32 * 1024 * 1024) -> TransportSettings {
        var settings = TransportSettings(secret: ClusterSecret("0123456789abcdef0123456789abcdef"))
        settings.maximumPendingBytesPerPeer = maximumPending
        return settings
    }

    @Test("many sends in one tick leave as one coalesced write")
    func coalescing() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let connection = PeerConnection(
            peer: NodeID(name: "b", incarnation: 1),
            role: .dialer,
            channel: channel,
            settings: self.settings()
        )
        for i in 0..<100 {
            #expect(connection.send(type: 1, payload: ByteBuffer(integer: UInt32(i))) == .enqueued)
        }
        #expect(connection.send(type: 2, maximumPayloadLength: 8) { $0.writeInteger(UInt64(42)) } == .enqueued)
        loop.run()
        var out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        var decoder = FrameDecoder()
        for i in 0..<100 {
            let frame = try #require(try decoder.decode(buffer: &out))
            #expect(frame.type == 1 && frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt32.self) == UInt32(i))
        }
        let last = try #require(try decoder.decode(buffer: &out))
        #expect(last.type == 2 && last.payload.getInteger(at: last.payload.readerIndex, as: UInt64.self) == 42)
        #expect(out.readableBytes == 0)
        _ = try? channel.finish()
    }

    @Test("while not writable frames wait; past the bound sends overflow (reject-newest)")
    func backpressure() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let connection = PeerConnection(
            peer: NodeID(name: "b", incarnation: 1),
            role: .dialer,
            channel: channel,
            settings: self.settings(maximumPending: 100)
        )
        channel.isWritable = false
        let payload = ByteBuffer(repeating: 1, count: 10)
        var results: [SendResult] = []
        for _ in 0..<10 { results.append(connection.send(type: 1, payload: payload)) }
        loop.run()
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        #expect(results.filter { $0 == .enqueued }.count == 6)  // 6 * 16 bytes <= 100
        #expect(results.suffix(4).allSatisfy { $0 == .overflow })
        channel.isWritable = true
        connection.flushPending()
        let out = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(out.readableBytes == 96)
        connection.close()
        loop.run()
        #expect(connection.send(type: 1, payload: payload) == .notConnected)
        _ = try? channel.finish()
    }
}
