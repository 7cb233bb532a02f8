import NIOCore
import SwarmCore
import Testing

@testable import SwarmTransport

@Suite("Handshake state machine")
struct HandshakeTests {
    let secret = ClusterSecret("correct horse battery staple!!")
    let a = NodeID(name: "gw-a", incarnation: 1)
    let b = NodeID(name: "gw-b", incarnation: 2)

    private func hello(_ handshake: Handshake) -> Frame { Frame(type: Handshake.helloType, payload: handshake.localHello) }

    private func proof(_ action: Handshake.Action) throws -> Frame {
        guard case .sendProof(let proof) = action else { throw HandshakeError.malformedProof }
        return Frame(type: Handshake.proofType, payload: proof)
    }

    @Test("two ends with the same secret authenticate each other")
    func success() throws {
        var dialer = Handshake(local: a, role: .dialer, secret: secret)
        var acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        let dialerProof = try self.proof(try dialer.receive(self.hello(acceptor)))
        let acceptorProof = try self.proof(try acceptor.receive(self.hello(dialer)))
        #expect(try dialer.receive(acceptorProof) == .authenticated(b))
        #expect(try acceptor.receive(dialerProof) == .authenticated(a))
    }

    @Test("a wrong secret fails on both ends")
    func wrongSecret() throws {
        var dialer = Handshake(local: a, role: .dialer, secret: secret)
        var acceptor = Handshake(local: b, role: .acceptor, secret: ClusterSecret("another secret of some length"))
        let dialerProof = try self.proof(try dialer.receive(self.hello(acceptor)))
        let acceptorProof = try self.proof(try acceptor.receive(self.hello(dialer)))
        #expect(throws: HandshakeError.badProof) { try dialer.receive(acceptorProof) }
        #expect(throws: HandshakeError.badProof) { try acceptor.receive(dialerProof) }
    }

    @Test("a proof recorded on another connection, or reflected back, is refused")
    func replayAndReflection() throws {
        // Connection 1, recorded by an attacker.
        var dialer1 = Handshake(local: a, role: .dialer, secret: secret)
        let acceptor1 = Handshake(local: b, role: .acceptor, secret: secret)
        let recordedDialerProof = try self.proof(try dialer1.receive(self.hello(acceptor1)))
        // Connection 2: the attacker replays a's hello and proof to b, which picked a fresh nonce.
        var acceptor2 = Handshake(local: b, role: .acceptor, secret: secret)
        _ = try acceptor2.receive(self.hello(dialer1))
        #expect(throws: HandshakeError.badProof) { try acceptor2.receive(recordedDialerProof) }
        // Reflection: send b its own proof back.
        var acceptor3 = Handshake(local: b, role: .acceptor, secret: secret)
        let attackerHello = Handshake(local: a, role: .dialer, secret: ClusterSecret("attacker does not know it!!"))
        let reflected = try self.proof(try acceptor3.receive(self.hello(attackerHello)))
        #expect(throws: HandshakeError.badProof) { try acceptor3.receive(reflected) }
    }

    @Test("version, role, name and frame-order violations are refused")
    func violations() throws {
        var acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        let oldPeer = Handshake(local: a, role: .dialer, secret: secret, protocolVersion: SwarmProtocol.version + 1)
        #expect(throws: HandshakeError.protocolVersionMismatch(local: SwarmProtocol.version, remote: SwarmProtocol.version + 1)) {
            try acceptor.receive(self.hello(oldPeer))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        let otherHash = Handshake(local: a, role: .dialer, secret: secret, hashVersion: HashRing.hashVersion + 1)
        #expect(throws: HandshakeError.hashVersionMismatch(local: HashRing.hashVersion, remote: HashRing.hashVersion + 1)) {
            try acceptor.receive(self.hello(otherHash))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        #expect(throws: HandshakeError.roleMismatch) {
            try acceptor.receive(self.hello(Handshake(local: a, role: .acceptor, secret: secret)))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        #expect(throws: HandshakeError.selfConnection) {
            try acceptor.receive(self.hello(Handshake(local: NodeID(name: "gw-b", incarnation: 9), role: .dialer, secret: secret)))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        #expect(throws: HandshakeError.unexpectedFrame(type: 1)) {
            try acceptor.receive(Frame(type: 1, payload: ByteBuffer()))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        #expect(throws: HandshakeError.badMagic) {
            try acceptor.receive(Frame(type: Handshake.helloType, payload: ByteBuffer(bytes: [1, 2, 3, 4, 5])))
        }
        acceptor = Handshake(local: b, role: .acceptor, secret: secret)
        var truncated = Handshake(local: a, role: .dialer, secret: secret).localHello
        truncated.moveWriterIndex(to: truncated.writerIndex - 1)
        #expect(throws: HandshakeError.malformedHello) {
            try acceptor.receive(Frame(type: Handshake.helloType, payload: truncated))
        }
    }

    @Test("the secret is never in the hello or in a description")
    func secretNeverShown() {
        let handshake = Handshake(local: a, role: .dialer, secret: secret)
        let hello = String(decoding: handshake.localHello.readableBytesView, as: UTF8.self)
        #expect(!hello.contains("horse"))
        #expect(!"\(secret)".contains("horse"))
        #expect(!String(reflecting: secret).contains("horse"))
    }
}
