import NIOCore
import PropertyBased
import SwarmCore
import SwarmWire
import Testing

@Suite("Wire properties")
struct PropertyTests {
    @Test("random PeerMessages round-trip")
    func randomMessagesRoundTrip() async {
        await propertyCheck(count: 2_000, input: Gen.uint64()) { seed throws in
            var random = RandomMessages(seed: seed)
            let message = random.message()
            var (type, payload) = WireCodec.encode(message)
            #expect(type == WireMessageType(message).rawValue)
            #expect(WireCodec.payloadSize(message) == payload.readableBytes, "seed \(seed)")
            #expect(try WireCodec.decode(type: type, payload: &payload) == message, "seed \(seed)")
        }
    }

    @Test("random NodeWireMessages and Envelopes round-trip")
    func randomNodeMessagesRoundTrip() async {
        await propertyCheck(count: 1_000, input: Gen.uint64()) { seed throws in
            var random = RandomMessages(seed: seed)
            let message = random.nodeMessage()
            var buffer = ByteBuffer()
            let type = WireCodec.encode(message, into: &buffer)
            #expect(try WireCodec.decodeNodeMessage(type: type, payload: &buffer) == message, "seed \(seed)")

            let envelope = random.envelope()
            var envelopeBuffer = ByteBuffer()
            WireCodec.encode(envelope, into: &envelopeBuffer)
            #expect(try WireCodec.decodeEnvelope(from: &envelopeBuffer) == envelope, "seed \(seed)")
        }
    }

    @Test("random bytes for any type never crash; whatever decodes is canonical")
    func randomBytes() async {
        let types = WireMessageType.allCases.map(\.rawValue) + [0x0000, 0x0016, 0x00FF, 0x0101, 0xFF00, 0xFFFF]
        await propertyCheck(
            count: 10_000,
            input: Gen.element(of: types),
            Gen<UInt8>.value(in: 0...255).array(of: 0...96)
        ) { type, bytes in
            guard let type else { return }
            _ = Fixtures.decodeCanonically(type: type, bytes: bytes)
        }
    }

    @Test("mutated encodings of random messages never crash; whatever decodes is canonical")
    func mutatedRandomMessages() async {
        await propertyCheck(count: 5_000, input: Gen.uint64()) { seed throws in
            var random = RandomMessages(seed: seed)
            let message = random.message()
            let (type, payload) = WireCodec.encode(message)
            var bytes = Fixtures.bytes(payload)
            let mutations = random.int(1...4)
            for _ in 0..<mutations {
                switch random.int(0...3) {
                case 0 where !bytes.isEmpty:  // overwrite a byte
                    bytes[random.int(0...bytes.count - 1)] = random.u8()
                case 1 where !bytes.isEmpty:  // flip a bit
                    bytes[random.int(0...bytes.count - 1)] ^= 1 << UInt8(random.int(0...7))
                case 2:  // insert a byte
                    bytes.insert(random.u8(), at: random.int(0...bytes.count))
                default:  // drop a byte, or truncate
                    if !bytes.isEmpty { bytes.remove(at: random.int(0...bytes.count - 1)) }
                }
            }
            _ = Fixtures.decodeCanonically(type: type, bytes: bytes)
        }
    }
}
