#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Gateway
import NIOCore
import SwarmCore
@testable import SwarmTransport
import SwarmWire

/// Writes the seed corpus of every harness with the real encoders: `fuzz-seeds DIR` fills
/// `DIR/{wire,frame,handshake,device}/` (scripts/fuzz.sh --seeds regenerates fuzz/corpus).
@main
enum FuzzSeeds {
    static func main() throws {
        let root = CommandLine.arguments.dropFirst().first ?? "fuzz/corpus"
        mkdir(root, 0o755)
        write(wireSeeds(), to: root + "/wire")
        write(frameSeeds(), to: root + "/frame")
        write(try handshakeSeeds(), to: root + "/handshake")
        write(deviceSeeds(), to: root + "/device")
    }

    static let nodeA = NodeID(name: "gw-1@127.0.0.1:7946", incarnation: 1)
    static let nodeB = NodeID(name: "gw-2@10.0.0.2:7946", incarnation: 1_700_000_000_123)
    static let pidA = ProcessID(node: nodeA, local: 42)
    static let pidB = ProcessID(node: nodeB, local: 7)
    static let factory = FactorySpec(kind: "device", arguments: Array("sensor-17".utf8))
    static let entry = RegistryEntry(name: "sensor-17", pid: pidB, factory: factory, groups: ["device-group:all", "device-group:floor-2"], version: 3)
    static let bare = RegistryEntry(name: "plain", pid: pidA, factory: nil, groups: [], version: 0)
    static let call = Envelope(id: 9, sender: nodeA, callID: 4, payload: [1, 0, 0, 0, 3], hops: 0)
    static let cast = Envelope(id: 10, sender: nodeB, callID: nil, payload: Array("{\"t\":21.5}".utf8), hops: 1)

    static let messages: [PeerMessage] = [
        .heartbeat(members: [
            Membership.Member(id: nodeA, address: "127.0.0.1:7946", state: .up, version: 2),
            Membership.Member(id: nodeB, address: "10.0.0.2:7946", state: .draining, version: 5),
        ], seq: 12),
        .replicate(changes: [
            SequencedChange(seq: 1, change: .upsert(entry)),
            SequencedChange(seq: 2, change: .remove(name: "plain", pid: pidA)),
        ]),
        .catchUp(after: 41),
        .snapshot(seq: 99, entries: [entry, bare]),
        .registerRequest(id: 1, name: "sensor-17", factory: factory, groups: ["device-group:all"], whereisOrRegister: true),
        .registerReply(id: 1, result: .registered(pidB)),
        .registerReply(id: 2, result: .alreadyRegistered(pidA)),
        .registerReply(id: 3, result: .failed(.unknownFactory("device"))),
        .notOwner(id: 4, owner: "gw-2@10.0.0.2:7946"),
        .notOwner(id: 5, owner: nil),
        .unregisterRequest(id: 6, name: "sensor-17"),
        .groupRequest(id: 7, group: "device-group:floor-2", pid: pidB, join: true),
        .requestDone(id: 8, error: nil),
        .requestDone(id: 9, error: .notRegistered(pidA)),
        .handoffOffer(HandoffOffer(id: 11, name: "sensor-17", factory: factory, groups: ["device-group:all"], state: Array("{\"id\":\"sensor-17\"}".utf8), from: pidA)),
        .handoffAccepted(id: 11, name: "sensor-17", pid: pidB),
        .handoffRejected(id: 12, name: "sensor-17", reason: "draining"),
        .conflictYield(name: "sensor-17", loser: pidA, winner: pidB, state: [1, 2, 3]),
        .conflictYield(name: "sensor-18", loser: pidB, winner: pidA, state: nil),
        .conflictYieldReply(name: "sensor-17", loser: pidA, accepted: true),
        .orphans([entry]),
        .checkpoint(name: "sensor-17", pid: pidB, version: 3, state: Array("{\"online\":true}".utf8)),
        .named(name: "sensor-17", envelopes: [call, cast]),
        .toProcesses(pids: [pidA, pidB], envelope: cast),
        .undeliverable(envelopes: [call], error: .unknownName("sensor-99")),
        .goodbye,
    ]

    static let nodeMessages: [NodeWireMessage] = [
        .callReply(callID: 4, result: .success(Array("{\"ok\":true}".utf8))),
        .callReply(callID: 5, result: .failure(.timeout)),
        .callReply(callID: 6, result: .failure(.startFailed("call failed: boom"))),
    ]

    static func bytes(_ buffer: ByteBuffer) -> [UInt8] { Array(buffer.readableBytesView) }

    /// `[type][payload]` of each message.
    static func wireSeeds() -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        for message in messages {
            var payload = ByteBuffer()
            let type = WireCodec.encode(message, into: &payload)
            seeds.append([UInt8(type >> 8), UInt8(type & 0xFF)] + bytes(payload))
        }
        for message in nodeMessages {
            var payload = ByteBuffer()
            let type = WireCodec.encode(message, into: &payload)
            seeds.append([UInt8(type >> 8), UInt8(type & 0xFF)] + bytes(payload))
        }
        return seeds
    }

    /// `[mode][frames…]`: streams of real frames, a partial frame, an oversize length.
    static func frameSeeds() -> [[UInt8]] {
        var stream = ByteBuffer()
        for message in messages.prefix(8) {
            var payload = ByteBuffer()
            let type = WireCodec.encode(message, into: &payload)
            Frame.write(type: type, payload: payload, to: &stream)
        }
        var empty = ByteBuffer()
        Frame.write(type: 0x0016, payload: ByteBuffer(), to: &empty)
        let all = bytes(stream)
        return [
            [4] + all,  // 16 MiB limit, everything decodes
            [3] + all,  // 4 KiB limit
            [2] + all,  // 64-byte limit: the larger frames are refused
            [9] + all.dropLast(3),  // a partial frame at the end
            [0] + bytes(empty) + bytes(empty),
            [1, 0, 0, 0, 1, 0xFF],  // length 1: malformed
            [4, 0x7F, 0xFF, 0xFF, 0xFF, 0, 1],  // a length over every limit
        ]
    }

    /// `[flags][frames…]`: real hello + proof exchanges against the harness's fixed local end.
    static func handshakeSeeds() throws -> [[UInt8]] {
        let secret = ClusterSecret("fuzzing-cluster-secret-0123456789")
        let harnessNode = NodeID(name: "gw-1@127.0.0.1:7946", incarnation: 42)
        var seeds: [[UInt8]] = []
        for (flags, role) in [(UInt8(0), ConnectionRole.acceptor), (1, .dialer), (2, .acceptor), (3, .dialer)] {
            let local = Handshake(local: harnessNode, role: role, secret: secret, nonce: [UInt8](repeating: 7, count: Handshake.nonceLength))
            for peerSecret in [secret, ClusterSecret("another-secret-of-enough-length")] {
                var peer = Handshake(local: nodeB, role: role.opposite, secret: peerSecret, nonce: [UInt8](repeating: 9, count: Handshake.nonceLength))
                guard case .sendProof(let proof) = try peer.receive(Frame(type: Handshake.helloType, payload: local.localHello)) else {
                    fatalError("the peer did not answer the hello with a proof")
                }
                var stream = ByteBuffer()
                Frame.write(type: Handshake.helloType, payload: peer.localHello, to: &stream)
                Frame.write(type: Handshake.proofType, payload: proof, to: &stream)
                Frame.write(type: 0x0001, payload: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), to: &stream)
                seeds.append([flags] + bytes(stream))
            }
        }
        var helloOnly = ByteBuffer()
        let peer = Handshake(local: NodeID(name: "n", incarnation: 0), role: .dialer, secret: secret, nonce: [UInt8](repeating: 1, count: Handshake.nonceLength))
        Frame.write(type: Handshake.helloType, payload: peer.localHello, to: &helloOnly)
        seeds.append([0] + bytes(helloOnly))
        return seeds
    }

    /// Records `topic '\n' payload`, separated by 0x00: what devices publish.
    static func deviceSeeds() -> [[UInt8]] {
        let sessions: [[String]] = [
            ["devices/sensor-17/status\n{\"status\":\"online\",\"fw\":\"1.2.3\",\"groups\":[\"floor-2\",\"bad group\"]}",
             "devices/sensor-17/telemetry\n{\"seq\":1,\"temp\":21.5,\"hum\":40}",
             "devices/sensor-17/telemetry\n{\"seq\":3,\"temp\":21.75}",
             "devices/sensor-17/telemetry\n{\"seq\":2,\"temp\":21.6}",
             "devices/sensor-17/state/reported\n{\"led\":{\"on\":true,\"color\":\"red\"},\"fan\":2}",
             "devices/sensor-17/state/reported\n{\"led\":{\"color\":null},\"fan\":null}",
             "devices/sensor-17/status\noffline"],
            ["devices/meter:01.a_b-c/status\nonline",
             "devices/meter:01.a_b-c/status\n\"offline\"",
             "devices/meter:01.a_b-c/telemetry\n{\"seq\":0,\"kwh\":1.0e3,\"ok\":true,\"tags\":[1,\"x\",null]}",
             "devices/meter:01.a_b-c/telemetry\n{\"seq\":9007199254740993,\"kwh\":-0.5}"],
            ["site/a/devices/t1/telemetry\n{\"seq\":5,\"v\":\"\\u00e9\\n\"}",
             "site/a/devices/t1/state/reported\n[1,2]",
             "devices/t1/commands/reboot\n{}",
             "devices/bad id/status\nonline",
             "devices//telemetry\n{}",
             "devices/t1/telemetry\n{\"seq\":-1}"],
        ]
        // Binary mode of the harness: [0xFF] then [op][seq Int64 BE] items (op 1: a birth first).
        var binary: [UInt8] = [0xFF]
        for (op, seq) in [(0, 1), (0, 3), (0, 2), (0, 2), (1, 1), (0, 1500), (0, 7)] as [(UInt8, Int64)] {
            binary.append(op)
            for shift in stride(from: 56, through: 0, by: -8) { binary.append(UInt8(truncatingIfNeeded: UInt64(bitPattern: seq) >> UInt64(shift))) }
        }
        return sessions.map { records in Array(records.joined(separator: "\u{0}").utf8) } + [binary]
    }

    static func write(_ seeds: [[UInt8]], to directory: String) {
        mkdir(directory, 0o755)
        for (index, seed) in seeds.enumerated() {
            let path = directory + "/seed-" + String(index + 1).leftPadded(to: 3)
            guard let handle = fopen(path, "wb") else { fatalError("cannot write \(path)") }
            _ = seed.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, handle) }
            fclose(handle)
        }
        print("\(directory): \(seeds.count) seeds")
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
