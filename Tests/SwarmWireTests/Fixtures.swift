import NIOCore
import SwarmCore
import SwarmWire
import Testing

/// Shared values, helpers and a seeded random message generator for the wire tests.
enum Fixtures {
    static let nodeA = NodeID(name: "gw-1@127.0.0.1:7946", incarnation: 1)
    static let nodeUnicode = NodeID(name: "nœud-東京-🐝", incarnation: .max)
    static let nodeEmpty = NodeID(name: "", incarnation: 0)
    static let pidA = ProcessID(node: nodeA, local: 42)
    static let pidMax = ProcessID(node: nodeUnicode, local: .max)
    static let pidZero = ProcessID(node: nodeEmpty, local: 0)

    static let factory = FactorySpec(kind: "counter", arguments: [1, 2, 3, 0, 255])
    static let factoryEmpty = FactorySpec(kind: "", arguments: [])

    static let entryFull = RegistryEntry(
        name: "room/Zürich 🏔", pid: pidMax, factory: factory, groups: ["a", "", "ünïcødé", "exactly8", "ascii-then-é-after-8", "0123456789abcdefé"], version: .max
    )
    static let entryBare = RegistryEntry(name: "", pid: pidZero, factory: nil, groups: [], version: 0)

    static let envelopeCall = Envelope(id: .max, sender: nodeUnicode, callID: .max, payload: [0, 1, 2, 0xFF], hops: .max)
    static let envelopeCast = Envelope(id: 0, sender: nodeEmpty, callID: nil, payload: [], hops: 0)
    static let envelopeZeroCall = Envelope(id: 7, sender: nodeA, callID: 0, payload: Array("hello".utf8), hops: 1)

    static let allErrors: [SwarmError] = [
        .noNodeAvailable, .unknownFactory("kind"), .startFailed(""), .unknownName("名前"),
        .notRegistered(pidA), .notLocal(pidMax), .nameInTransition("n"), .timeout, .tooManyAttempts, .draining,
    ]

    /// Representative and edge values of every `PeerMessage` case.
    static let messages: [PeerMessage] = {
        var m: [PeerMessage] = [
            .heartbeat(members: [], seq: 0),
            .heartbeat(
                members: [
                    Membership.Member(id: nodeA, address: "127.0.0.1:7946", state: .joining, version: 0),
                    Membership.Member(id: nodeUnicode, address: "", state: .up, version: .max),
                    Membership.Member(id: nodeEmpty, address: "[::1]:1", state: .draining, version: 3),
                    Membership.Member(id: nodeA, address: "x", state: .gone, version: 4),
                ],
                seq: .max
            ),
            .replicate(changes: []),
            .replicate(changes: [
                SequencedChange(seq: 1, change: .upsert(entryFull)),
                SequencedChange(seq: 2, change: .upsert(entryBare)),
                SequencedChange(seq: .max, change: .remove(name: "", pid: pidZero)),
                SequencedChange(seq: 0, change: .remove(name: "🐝🐝", pid: pidMax)),
            ]),
            .catchUp(after: 0),
            .catchUp(after: .max),
            .snapshot(seq: 0, entries: []),
            .snapshot(seq: .max, entries: [entryFull, entryBare]),
            .registerRequest(id: 0, name: "", factory: factoryEmpty, groups: [], whereisOrRegister: false),
            .registerRequest(id: .max, name: "名前", factory: factory, groups: ["g1", "グループ"], whereisOrRegister: true),
            .registerReply(id: 1, result: .registered(pidA)),
            .registerReply(id: .max, result: .alreadyRegistered(pidMax)),
            .notOwner(id: 3, owner: nil),
            .notOwner(id: .max, owner: ""),
            .notOwner(id: 4, owner: "gw-2@10.0.0.2:7946"),
            .unregisterRequest(id: 0, name: ""),
            .unregisterRequest(id: .max, name: "ñame"),
            .groupRequest(id: 1, group: "", pid: pidZero, join: false),
            .groupRequest(id: .max, group: "grüppe", pid: pidMax, join: true),
            .requestDone(id: 0, error: nil),
            .handoffOffer(HandoffOffer(id: 0, name: "", factory: factoryEmpty, groups: [], state: nil, from: pidZero)),
            .handoffOffer(HandoffOffer(id: .max, name: "🐝", factory: factory, groups: ["a", "b"], state: [], from: pidMax)),
            .handoffOffer(HandoffOffer(id: 9, name: "n", factory: factory, groups: [""], state: [9, 8, 7], from: pidA)),
            .handoffAccepted(id: .max, name: "", pid: pidMax),
            .handoffRejected(id: 0, name: "x", reason: ""),
            .handoffRejected(id: 1, name: "", reason: "busy ⏳"),
            .conflictYield(name: "n", loser: pidA, winner: pidMax, state: nil),
            .conflictYield(name: "", loser: pidZero, winner: pidA, state: []),
            .conflictYield(name: "é", loser: pidMax, winner: pidZero, state: [0, 0, 0]),
            .conflictYieldReply(name: "", loser: pidA, accepted: false),
            .conflictYieldReply(name: "🐝", loser: pidMax, accepted: true),
            .orphans([]),
            .orphans([entryBare, entryFull, entryBare]),
            .checkpoint(name: "", pid: pidZero, version: 0, state: []),
            .checkpoint(name: "ckpt", pid: pidMax, version: .max, state: Array(repeating: 0xAB, count: 300)),
            .checkpointRequest(id: 0, name: "", pid: pidZero, version: 0, state: []),
            .checkpointRequest(id: .max, name: "ckpt", pid: pidMax, version: .max, state: Array(repeating: 0xCD, count: 300)),
            .named(name: "", envelopes: []),
            .named(name: "chat/🐝", envelopes: [envelopeCall, envelopeCast, envelopeZeroCall]),
            .toProcesses(pids: [], envelope: envelopeCast),
            .toProcesses(pids: [pidA, pidMax, pidZero], envelope: envelopeCall),
            .undeliverable(envelopes: [], error: .timeout),
            .goodbye,
        ]
        for error in allErrors {
            m.append(.requestDone(id: 5, error: error))
            m.append(.registerReply(id: 6, result: .failed(error)))
            m.append(.undeliverable(envelopes: [envelopeCall, envelopeCast], error: error))
        }
        return m
    }()

    static let nodeMessages: [NodeWireMessage] =
        [
            .callReply(callID: 0, result: .success([])),
            .callReply(callID: .max, result: .success([0, 1, 0xFF])),
        ] + allErrors.map { .callReply(callID: 77, result: .failure($0)) }

    /// Encodes `message` into a fresh buffer.
    static func encoded(_ message: PeerMessage) -> (type: UInt16, payload: ByteBuffer) {
        WireCodec.encode(message)
    }

    /// The bytes of a buffer's readable region.
    static func bytes(_ buffer: ByteBuffer) -> [UInt8] {
        buffer.getBytes(at: buffer.readerIndex, length: buffer.readableBytes) ?? []
    }

    /// Decodes `bytes` as a frame of `type`. On success the decoded message must re-encode to
    /// exactly `bytes` (the encoding is canonical). Returns the error when decoding fails.
    static func decodeCanonically(type: UInt16, bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> WireError? {
        var payload = ByteBuffer(bytes: bytes)
        do {
            let message = try WireCodec.decodeAny(type: type, payload: &payload)
            var again = ByteBuffer()
            let againType: UInt16
            switch message {
            case .peer(let peer): againType = WireCodec.encode(peer, into: &again)
            case .node(let node): againType = WireCodec.encode(node, into: &again)
            }
            #expect(againType == type, sourceLocation: sourceLocation)
            #expect(Self.bytes(again) == bytes, "decoded \(message) re-encodes differently", sourceLocation: sourceLocation)
            return nil
        } catch {
            #expect(payload.readerIndex == 0, "a failed decode must not consume bytes", sourceLocation: sourceLocation)
            // `error` is statically a WireError (typed throws); also check its description renders.
            #expect(!error.description.isEmpty, sourceLocation: sourceLocation)
            return error
        }
    }
}

/// A small deterministic PRNG (SplitMix64) so a failing seed reproduces.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random values of every wire type, biased towards edges (empty, zero, max, non-ASCII).
struct RandomMessages {
    var rng: SplitMix64

    init(seed: UInt64) { self.rng = SplitMix64(seed: seed) }

    private static let scalars: [Character] = ["a", "Z", "0", "/", " ", "é", "ß", "東", "京", "🐝", "\u{0}", "\u{7F}", "👩‍👩‍👧"]

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func bool() -> Bool { Bool.random(using: &rng) }

    mutating func u64() -> UInt64 {
        switch int(0...5) {
        case 0: return 0
        case 1: return .max
        case 2: return UInt64(int(0...1000))
        default: return rng.next()
        }
    }

    mutating func u8() -> UInt8 { UInt8.random(in: 0...255, using: &rng) }

    mutating func string() -> String {
        var s = ""
        for _ in 0..<int(0...12) { s.append(Self.scalars[int(0...Self.scalars.count - 1)]) }
        return s
    }

    mutating func bytes() -> [UInt8] { (0..<int(0...24)).map { _ in u8() } }
    mutating func count() -> Int { int(0...4) == 0 ? 0 : int(1...6) }
    mutating func optional<T>(_ make: (inout RandomMessages) -> T) -> T? { bool() ? make(&self) : nil }
    mutating func array<T>(_ make: (inout RandomMessages) -> T) -> [T] { (0..<count()).map { _ in make(&self) } }

    mutating func node() -> NodeID { NodeID(name: string(), incarnation: u64()) }
    mutating func pid() -> ProcessID { ProcessID(node: node(), local: u64()) }
    mutating func factory() -> FactorySpec { FactorySpec(kind: string(), arguments: bytes()) }
    mutating func strings() -> [String] { array { $0.string() } }

    mutating func member() -> Membership.Member {
        Membership.Member(id: node(), address: string(), state: Membership.State.allCases[int(0...3)], version: u64())
    }

    mutating func entry() -> RegistryEntry {
        RegistryEntry(name: string(), pid: pid(), factory: optional { $0.factory() }, groups: strings(), version: u64())
    }

    mutating func change() -> SequencedChange {
        SequencedChange(seq: u64(), change: bool() ? .upsert(entry()) : .remove(name: string(), pid: pid()))
    }

    mutating func error() -> SwarmError {
        switch int(0...9) {
        case 0: return .noNodeAvailable
        case 1: return .unknownFactory(string())
        case 2: return .startFailed(string())
        case 3: return .unknownName(string())
        case 4: return .notRegistered(pid())
        case 5: return .notLocal(pid())
        case 6: return .nameInTransition(string())
        case 7: return .timeout
        case 8: return .tooManyAttempts
        default: return .draining
        }
    }

    mutating func envelope() -> Envelope {
        Envelope(id: u64(), sender: node(), callID: optional { $0.u64() }, payload: bytes(), hops: u8())
    }

    mutating func registration() -> RegistrationResult {
        switch int(0...2) {
        case 0: return .registered(pid())
        case 1: return .alreadyRegistered(pid())
        default: return .failed(error())
        }
    }

    /// One random message; every case is equally likely.
    mutating func message() -> PeerMessage {
        switch int(0...21) {
        case 0: return .heartbeat(members: array { $0.member() }, seq: u64())
        case 1: return .replicate(changes: array { $0.change() })
        case 2: return .catchUp(after: u64())
        case 3: return .snapshot(seq: u64(), entries: array { $0.entry() })
        case 4:
            return .registerRequest(id: u64(), name: string(), factory: factory(), groups: strings(), whereisOrRegister: bool())
        case 5: return .registerReply(id: u64(), result: registration())
        case 6: return .notOwner(id: u64(), owner: optional { $0.string() })
        case 7: return .unregisterRequest(id: u64(), name: string())
        case 8: return .groupRequest(id: u64(), group: string(), pid: pid(), join: bool())
        case 9: return .requestDone(id: u64(), error: optional { $0.error() })
        case 10:
            return .handoffOffer(
                HandoffOffer(id: u64(), name: string(), factory: factory(), groups: strings(), state: optional { $0.bytes() }, from: pid())
            )
        case 11: return .handoffAccepted(id: u64(), name: string(), pid: pid())
        case 12: return .handoffRejected(id: u64(), name: string(), reason: string())
        case 13: return .conflictYield(name: string(), loser: pid(), winner: pid(), state: optional { $0.bytes() })
        case 14: return .conflictYieldReply(name: string(), loser: pid(), accepted: bool())
        case 15: return .orphans(array { $0.entry() })
        case 16: return .checkpoint(name: string(), pid: pid(), version: u64(), state: bytes())
        case 17: return .named(name: string(), envelopes: array { $0.envelope() })
        case 18: return .toProcesses(pids: array { $0.pid() }, envelope: envelope())
        case 19: return .undeliverable(envelopes: array { $0.envelope() }, error: error())
        case 20: return .checkpointRequest(id: u64(), name: string(), pid: pid(), version: u64(), state: bytes())
        default: return .goodbye
        }
    }

    mutating func nodeMessage() -> NodeWireMessage {
        .callReply(callID: u64(), result: bool() ? .success(bytes()) : .failure(error()))
    }
}
