import NIOCore
import SwarmCore
import SwarmWire
import Testing

@Suite("Wire round trips")
struct RoundTripTests {
    @Test("every representative PeerMessage round-trips", arguments: Fixtures.messages)
    func peerMessageRoundTrips(_ message: PeerMessage) throws {
        var (type, payload) = WireCodec.encode(message)
        #expect(type == WireMessageType(message).rawValue)
        #expect(!(0xFF00...0xFFFF).contains(type), "transport-reserved type")
        let bytes = Fixtures.bytes(payload)
        #expect(WireCodec.payloadSize(message) == bytes.count)
        let decoded = try WireCodec.decode(type: type, payload: &payload)
        #expect(decoded == message)
        #expect(payload.readableBytes == 0)
        // The same through the dispatching entry point.
        var again = ByteBuffer(bytes: bytes)
        #expect(try WireCodec.decodeAny(type: type, payload: &again) == .peer(message))
    }

    @Test("the fixtures cover every PeerMessage type")
    func fixturesCoverEveryCase() {
        let covered = Set(Fixtures.messages.map { WireMessageType($0) })
        let expected = Set(WireMessageType.allCases.filter(\.isPeerMessage))
        #expect(covered == expected)
        #expect(expected.count == 22)
    }

    @Test("encoding appends after existing bytes")
    func encodeAppends() throws {
        var buffer = ByteBuffer(bytes: [0xEE, 0xEE])
        let type = WireCodec.encode(Fixtures.messages[1], into: &buffer)
        #expect(buffer.readInteger(as: UInt16.self) == 0xEEEE)
        #expect(try WireCodec.decode(type: type, payload: &buffer) == Fixtures.messages[1])
    }

    @Test("every NodeWireMessage round-trips", arguments: Fixtures.nodeMessages)
    func nodeMessageRoundTrips(_ message: NodeWireMessage) throws {
        var buffer = ByteBuffer()
        let type = WireCodec.encode(message, into: &buffer)
        #expect(type == WireMessageType.callReply.rawValue)
        let bytes = Fixtures.bytes(buffer)
        #expect(try WireCodec.decodeNodeMessage(type: type, payload: &buffer) == message)
        var again = ByteBuffer(bytes: bytes)
        #expect(try WireCodec.decodeAny(type: type, payload: &again) == .node(message))
    }

    @Test(
        "a lone Envelope round-trips",
        arguments: [Fixtures.envelopeCall, Fixtures.envelopeCast, Fixtures.envelopeZeroCall]
    )
    func envelopeRoundTrips(_ envelope: Envelope) throws {
        var buffer = ByteBuffer()
        WireCodec.encode(envelope, into: &buffer)
        #expect(try WireCodec.decodeEnvelope(from: &buffer) == envelope)
    }

    @Test("peer and node decoders refuse each other's types")
    func decodersRefuseForeignTypes() {
        var payload = ByteBuffer()
        WireCodec.encode(NodeWireMessage.callReply(callID: 1, result: .success([])), into: &payload)
        #expect(throws: WireError.unknownMessageType(0x0100)) {
            var copy = payload
            _ = try WireCodec.decode(type: 0x0100, payload: &copy)
        }
        #expect(throws: WireError.unknownMessageType(0x0015)) {
            var empty = ByteBuffer()
            _ = try WireCodec.decodeNodeMessage(type: 0x0015, payload: &empty)
        }
    }

    @Test("type numbers are stable")
    func typeNumbersAreStable() {
        let table: [(WireMessageType, UInt16)] = [
            (.heartbeat, 0x0001), (.replicate, 0x0002), (.catchUp, 0x0003), (.snapshot, 0x0004),
            (.registerRequest, 0x0005), (.registerReply, 0x0006), (.notOwner, 0x0007),
            (.unregisterRequest, 0x0008), (.groupRequest, 0x0009), (.requestDone, 0x000A),
            (.handoffOffer, 0x000B), (.handoffAccepted, 0x000C), (.handoffRejected, 0x000D),
            (.conflictYield, 0x000E), (.conflictYieldReply, 0x000F), (.orphans, 0x0010),
            (.checkpoint, 0x0011), (.named, 0x0012), (.toProcesses, 0x0013), (.undeliverable, 0x0014),
            (.goodbye, 0x0015), (.checkpointRequest, 0x0016), (.callReply, 0x0100),
        ]
        #expect(table.count == WireMessageType.allCases.count)
        for (type, number) in table {
            #expect(type.rawValue == number, "\(type)")
        }
        #expect(WireMessageType.replicate.description == "replicate (0x0002)")
    }

    // MARK: Golden bytes: pin the layouts documented in docs/wire-format.md.

    @Test("golden: catchUp")
    func goldenCatchUp() {
        let (type, payload) = WireCodec.encode(.catchUp(after: 0x0102_0304_0506_0708))
        #expect(type == 0x0003)
        #expect(Fixtures.bytes(payload) == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test("golden: goodbye is empty")
    func goldenGoodbye() {
        let (type, payload) = WireCodec.encode(.goodbye)
        #expect(type == 0x0015)
        #expect(payload.readableBytes == 0)
    }

    @Test("golden: notOwner with a UTF-8 owner")
    func goldenNotOwner() {
        let (type, payload) = WireCodec.encode(.notOwner(id: 2, owner: "é"))
        #expect(type == 0x0007)
        #expect(Fixtures.bytes(payload) == [0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 2, 0xC3, 0xA9])
        #expect(Fixtures.bytes(WireCodec.encode(.notOwner(id: 2, owner: nil)).payload) == [0, 0, 0, 0, 0, 0, 0, 2, 0])
    }

    @Test("golden: checkpointRequest")
    func goldenCheckpointRequest() {
        let node = NodeID(name: "n", incarnation: 1)
        let (type, payload) = WireCodec.encode(.checkpointRequest(id: 9, name: "d", pid: ProcessID(node: node, local: 2), version: 3, state: [7]))
        #expect(type == 0x0016)
        let expected: [UInt8] =
            [0, 0, 0, 0, 0, 0, 0, 9]  // id
            + [0, 0, 0, 1, 0x64]  // name
            + [0, 0, 0, 1, 0x6E, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]  // pid
            + [0, 0, 0, 0, 0, 0, 0, 3]  // version
            + [0, 0, 0, 1, 7]  // state
        #expect(Fixtures.bytes(payload) == expected)
    }

    @Test("golden: toProcesses")
    func goldenToProcesses() {
        let node = NodeID(name: "n", incarnation: 1)
        let message = PeerMessage.toProcesses(
            pids: [ProcessID(node: node, local: 2)],
            envelope: Envelope(id: 3, sender: node, callID: 4, payload: [5], hops: 6)
        )
        let (type, payload) = WireCodec.encode(message)
        #expect(type == 0x0013)
        let nodeBytes: [UInt8] = [0, 0, 0, 1, 0x6E, 0, 0, 0, 0, 0, 0, 0, 1]
        let expected: [UInt8] =
            [0, 0, 0, 1] + nodeBytes + [0, 0, 0, 0, 0, 0, 0, 2]  // pids
            + [0, 0, 0, 0, 0, 0, 0, 3] + nodeBytes  // envelope id, sender
            + [1, 0, 0, 0, 0, 0, 0, 0, 4]  // callID
            + [0, 0, 0, 1, 5]  // payload
            + [6]  // hops
        #expect(Fixtures.bytes(payload) == expected)
    }

    @Test("golden: replicate of a remove")
    func goldenReplicate() {
        let pid = ProcessID(node: NodeID(name: "", incarnation: 0), local: 0)
        let (_, payload) = WireCodec.encode(.replicate(changes: [SequencedChange(seq: 9, change: .remove(name: "x", pid: pid))]))
        let expected: [UInt8] =
            [0, 0, 0, 1]  // count
            + [0, 0, 0, 0, 0, 0, 0, 9]  // seq
            + [1]  // remove
            + [0, 0, 0, 1, 0x78]  // name
            + [0, 0, 0, 0] + [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 0, count: 8)  // pid
        #expect(Fixtures.bytes(payload) == expected)
    }

    @Test("golden: callReply failure")
    func goldenCallReply() {
        var buffer = ByteBuffer()
        let type = WireCodec.encode(NodeWireMessage.callReply(callID: 1, result: .failure(.unknownName("a"))), into: &buffer)
        #expect(type == 0x0100)
        #expect(Fixtures.bytes(buffer) == [0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 0, 0, 0, 1, 0x61])
    }
}
