import NIOCore
import SwarmCore
import SwarmWire
import Testing

@Suite("Hostile input")
struct HostileInputTests {
    @Test("every strict prefix of every fixture throws; one extra byte throws trailingBytes", arguments: Fixtures.messages)
    func truncationsAndTrailingBytes(_ message: PeerMessage) {
        let (type, payload) = WireCodec.encode(message)
        let bytes = Fixtures.bytes(payload)
        for length in 0..<bytes.count {
            let error = Fixtures.decodeCanonically(type: type, bytes: Array(bytes[..<length]))
            #expect(error != nil, "prefix of \(length)/\(bytes.count) bytes decoded")
        }
        let error = Fixtures.decodeCanonically(type: type, bytes: bytes + [0])
        #expect(error == .trailingBytes(type: type, count: 1))
    }

    @Test("every single-byte mutation of every fixture is rejected or canonical")
    func exhaustiveByteMutations() {
        var rejected = 0
        var decodes = 0
        for message in Fixtures.messages {
            let (type, payload) = WireCodec.encode(message)
            let bytes = Fixtures.bytes(payload)
            for index in bytes.indices {
                for replacement: UInt8 in [0x00, 0x01, 0x02, 0x7F, 0x80, 0xC0, 0xFE, 0xFF, bytes[index] ^ 0x10] {
                    var mutated = bytes
                    mutated[index] = replacement
                    if Fixtures.decodeCanonically(type: type, bytes: mutated) == nil { decodes += 1 } else { rejected += 1 }
                }
            }
        }
        // Both outcomes occur: string contents and integers accept anything, lengths and tags don't.
        #expect(rejected > 1_000)
        #expect(decodes > 1_000)
    }

    @Test("truncated and extended NodeWireMessages and Envelopes throw")
    func nodeMessageTruncation() {
        for message in Fixtures.nodeMessages {
            var buffer = ByteBuffer()
            let type = WireCodec.encode(message, into: &buffer)
            let bytes = Fixtures.bytes(buffer)
            for length in 0..<bytes.count {
                #expect(Fixtures.decodeCanonically(type: type, bytes: Array(bytes[..<length])) != nil)
            }
            #expect(Fixtures.decodeCanonically(type: type, bytes: bytes + [1]) == .trailingBytes(type: type, count: 1))
        }
        var envelope = ByteBuffer()
        WireCodec.encode(Fixtures.envelopeCall, into: &envelope)
        let bytes = Fixtures.bytes(envelope)
        for length in 0..<bytes.count {
            var prefix = ByteBuffer(bytes: bytes[..<length])
            #expect(throws: WireError.self) { try WireCodec.decodeEnvelope(from: &prefix) }
        }
        var extended = ByteBuffer(bytes: bytes + [0])
        #expect(throws: WireError.trailingBytes(type: 0, count: 1)) { try WireCodec.decodeEnvelope(from: &extended) }
    }

    @Test("an oversize array count is rejected before anything is reserved")
    func oversizeCount() {
        // replicate claiming 4 billion changes, followed by 100 bytes.
        var payload = ByteBuffer()
        payload.writeInteger(UInt32.max)
        payload.writeBytes([UInt8](repeating: 0, count: 100))
        let clock = ContinuousClock()
        var thrown: WireError?
        let elapsed = clock.measure {
            do throws(WireError) {
                _ = try WireCodec.decode(type: WireMessageType.replicate.rawValue, payload: &payload)
            } catch {
                thrown = error
            }
        }
        guard case .countExceedsPayload(let field, let count, let minimum, let available) = thrown else {
            Issue.record("expected countExceedsPayload, got \(String(describing: thrown))")
            return
        }
        #expect(field == "replicate.changes")
        #expect(count == .max)
        #expect(minimum == 33)
        #expect(available == 100)
        // Reserving 4G elements would take far longer (or crash); rejection is immediate.
        #expect(elapsed < .seconds(1))

        // A count that would fit if elements were one byte but not at their minimum size.
        var groups = ByteBuffer()
        groups.writeInteger(UInt64(1))  // id
        groups.writeInteger(UInt32(0))  // name ""
        groups.writeInteger(UInt32(0))  // factory.kind ""
        groups.writeInteger(UInt32(0))  // factory.arguments []
        groups.writeInteger(UInt32(3))  // 3 groups, each at least 4 bytes...
        groups.writeBytes([0, 0, 0, 0, 0, 0, 0, 0, 1])  // ...but only 9 bytes remain
        #expect(throws: WireError.countExceedsPayload(field: "registerRequest.groups", count: 3, minimumElementBytes: 4, available: 9)) {
            _ = try WireCodec.decode(type: WireMessageType.registerRequest.rawValue, payload: &groups)
        }
    }

    @Test("oversize string and byte lengths are rejected")
    func oversizeLengths() {
        var name = ByteBuffer()
        name.writeInteger(UInt64(7))
        name.writeInteger(UInt32.max)
        name.writeBytes(Array("abc".utf8))
        #expect(throws: WireError.lengthExceedsPayload(field: "unregisterRequest.name", length: .max, available: 3)) {
            _ = try WireCodec.decode(type: WireMessageType.unregisterRequest.rawValue, payload: &name)
        }

        var state = ByteBuffer()
        state.writeInteger(UInt32(0))  // name ""
        WireCodec.encode(.goodbye, into: &state)  // (no bytes)
        state.writeBytes([0, 0, 0, 0] + [UInt8](repeating: 0, count: 16))  // pid
        state.writeInteger(UInt64(1))  // version
        state.writeInteger(UInt32(1_000_000))  // state length
        state.writeBytes([1, 2, 3])
        #expect(throws: WireError.lengthExceedsPayload(field: "checkpoint.state", length: 1_000_000, available: 3)) {
            _ = try WireCodec.decode(type: WireMessageType.checkpoint.rawValue, payload: &state)
        }
    }

    @Test("invalid UTF-8 is rejected", arguments: [
        [0xFF], [0xC3], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0x61, 0xF8, 0x88, 0x80, 0x80, 0x80],
        Array("abcdefgh".utf8) + [0x80], Array("0123456789abcdef".utf8) + [0xE2, 0x82], Array("abcdefghé".utf8) + [0xFE],
    ] as [[UInt8]])
    func invalidUTF8(_ bad: [UInt8]) {
        var payload = ByteBuffer()
        payload.writeInteger(UInt64(1))
        payload.writeInteger(UInt32(bad.count))
        payload.writeBytes(bad)
        #expect(throws: WireError.invalidUTF8(field: "unregisterRequest.name")) {
            _ = try WireCodec.decode(type: WireMessageType.unregisterRequest.rawValue, payload: &payload)
        }
    }

    @Test("unknown and transport-reserved types are rejected", arguments: [0x0000, 0x0017, 0x00FF, 0x0101, 0x7FFF, 0xFF00, 0xFFFF] as [UInt16])
    func unknownTypes(_ type: UInt16) {
        var empty = ByteBuffer()
        #expect(throws: WireError.unknownMessageType(type)) { _ = try WireCodec.decodeAny(type: type, payload: &empty) }
        #expect(throws: WireError.unknownMessageType(type)) { _ = try WireCodec.decode(type: type, payload: &empty) }
        #expect(throws: WireError.unknownMessageType(type)) { _ = try WireCodec.decodeNodeMessage(type: type, payload: &empty) }
    }

    @Test("unknown enum, optional and boolean tags are rejected")
    func unknownTags() {
        func expectTag(_ type: WireMessageType, _ bytes: [UInt8], field: String, tag: UInt8, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(Fixtures.decodeCanonically(type: type.rawValue, bytes: bytes) == .unknownTag(field: field, tag: tag), sourceLocation: sourceLocation)
        }
        let id: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 1]
        let pid: [UInt8] = [0, 0, 0, 0] + [UInt8](repeating: 0, count: 16)
        expectTag(.requestDone, id + [2], field: "requestDone.error", tag: 2)
        expectTag(.requestDone, id + [1, 10], field: "SwarmError", tag: 10)
        expectTag(.registerReply, id + [3], field: "RegistrationResult", tag: 3)
        expectTag(.notOwner, id + [0xFF], field: "notOwner.owner", tag: 0xFF)
        expectTag(.replicate, [0, 0, 0, 1] + id + [2] + [UInt8](repeating: 0, count: 40), field: "RegistryChange", tag: 2)
        expectTag(.groupRequest, id + [0, 0, 0, 0] + pid + [2], field: "groupRequest.join", tag: 2)
        expectTag(.conflictYieldReply, [0, 0, 0, 0] + pid + [0x80], field: "conflictYieldReply.accepted", tag: 0x80)
        expectTag(.heartbeat, [0, 0, 0, 1] + [0, 0, 0, 0] + id + [0, 0, 0, 0] + [4] + id + id, field: "Member.state", tag: 4)
        expectTag(.callReply, id + [2], field: "callReply.result", tag: 2)
        expectTag(.named, [0, 0, 0, 0] + [0, 0, 0, 1] + id + [0, 0, 0, 0] + id + [7] + [0, 0, 0, 0, 0], field: "Envelope.callID", tag: 7)
    }

    @Test("errors describe themselves")
    func errorDescriptions() {
        #expect(WireError.unknownMessageType(0xFF00).description == "unknown wire message type 0xFF00")
        #expect(WireError.trailingBytes(type: 2, count: 5).description == "5 trailing bytes after message type 0x0002")
        #expect(WireError.invalidUTF8(field: "x").description == "x is not valid UTF-8")
    }
}
