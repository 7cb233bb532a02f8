import Crypto
import NIOCore
import SwarmCore

/// Which end of a TCP connection a node is: the one that dialed or the one that accepted.
public enum ConnectionRole: UInt8, Sendable, CustomStringConvertible {
    /// This node opened the connection.
    case dialer = 0
    /// This node accepted the connection on its listener.
    case acceptor = 1

    /// `dialer` or `acceptor`.
    public var description: String { self == .dialer ? "dialer" : "acceptor" }

    var opposite: ConnectionRole { self == .dialer ? .acceptor : .dialer }
}

/// Why a handshake was refused. The connection is closed in every case.
public enum HandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The first frame did not start with the Swarm magic: not a Swarm node.
    case badMagic
    /// The hello frame could not be parsed.
    case malformedHello
    /// The proof frame is not 32 bytes.
    case malformedProof
    /// The peer speaks another tracker protocol version.
    case protocolVersionMismatch(local: UInt16, remote: UInt16)
    /// The peer places names with another hash function version.
    case hashVersionMismatch(local: UInt16, remote: UInt16)
    /// Both ends claim the same role (for example a connection looped back to its dialer).
    case roleMismatch
    /// The peer has this node's own name.
    case selfConnection
    /// The peer's proof does not match: it does not hold the cluster secret (or replays a proof).
    case badProof
    /// A frame arrived that the handshake does not expect in its current step.
    case unexpectedFrame(type: UInt16)
    /// The handshake did not complete within ``TransportSettings/handshakeTimeout``.
    case timeout
    /// The peer sent a TLS record instead of a hello: it uses cluster TLS and this node does not.
    case peerSpeaksTLS

    /// A log-ready explanation (never contains the secret).
    public var description: String {
        switch self {
        case .badMagic: return "bad magic in hello (not a Swarm node)"
        case .malformedHello: return "malformed hello"
        case .malformedProof: return "malformed proof"
        case .protocolVersionMismatch(let local, let remote):
            return "protocol version mismatch (local \(local), remote \(remote))"
        case .hashVersionMismatch(let local, let remote):
            return "hash version mismatch (local \(local), remote \(remote))"
        case .roleMismatch: return "both ends claim the same role"
        case .selfConnection: return "peer has this node's own name"
        case .badProof: return "authentication failed: wrong cluster secret or replayed proof"
        case .unexpectedFrame(let type): return "unexpected frame type 0x\(String(type, radix: 16)) before handshake completion"
        case .timeout: return "handshake timed out"
        case .peerSpeaksTLS: return "the peer speaks TLS: cluster TLS is configured on it but not on this node"
        }
    }
}

/// The connection handshake as a pure state machine (no I/O; the channel handler drives it).
///
/// ## Protocol
/// Both ends send, right after TCP connect, a **hello** frame (type `0xFF01`):
/// ```
/// magic "SWM1" (UInt32) | protocol version (UInt16) | hash version (UInt16) | role (UInt8)
/// | incarnation (UInt64) | nonce (32 random bytes) | name length (UInt16) | name (UTF-8)
/// ```
/// On the peer's hello each end checks magic, versions (``SwarmProtocol/version``,
/// ``HashRing/hashVersion``), roles and names, then sends a **proof** frame (type `0xFF02`) of
/// 32 bytes:
/// ```
/// proof(role) = HMAC-SHA256(secret, "swarm-transport-proof-v1" | role
///                                  | len | dialer hello | len | acceptor hello)
/// ```
/// where the hellos are the exact payload bytes and `len` is a `UInt32`. The transcript holds both
/// nonces, both node ids (name and incarnation) and the prover's role, so:
/// - a proof recorded on another connection fails, because the verifier's fresh nonce differs;
/// - reflecting the verifier's own proof back fails, because the role byte differs;
/// - the secret never crosses the wire, only an HMAC keyed by it.
/// An end is authenticated when it has sent its proof and verified the peer's (constant-time
/// compare). Any other frame before that closes the connection. Proofs are sent only after the
/// hellos, and the peer's proof precedes any of its data on the stream, so no data is ever
/// accepted from, or sent to, an unauthenticated peer.
struct Handshake {
    static let helloType: UInt16 = 0xFF01
    static let proofType: UInt16 = 0xFF02
    static let magic: UInt32 = 0x5357_4D31  // "SWM1"
    static let nonceLength = 32
    static let maximumNameLength = 1024
    static let label = Array("swarm-transport-proof-v1".utf8)

    enum State {
        case awaitingHello
        case awaitingProof(peer: NodeID, expectedProofTranscript: [UInt8])
        case authenticated(NodeID)
        case failed
    }

    /// What the handler must do after feeding a frame.
    enum Action: Equatable {
        /// Send this proof payload (as a frame of type ``Handshake/proofType``).
        case sendProof(ByteBuffer)
        /// The peer is authenticated.
        case authenticated(NodeID)
    }

    let local: NodeID
    let role: ConnectionRole
    let key: SymmetricKey
    let protocolVersion: UInt16
    let hashVersion: UInt16
    /// The payload of this end's hello; send it first.
    let localHello: ByteBuffer
    private(set) var state: State = .awaitingHello

    init(
        local: NodeID,
        role: ConnectionRole,
        secret: ClusterSecret,
        nonce: [UInt8]? = nil,
        protocolVersion: UInt16 = SwarmProtocol.version,
        hashVersion: UInt16 = HashRing.hashVersion,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) {
        precondition(!local.name.isEmpty && local.name.utf8.count <= Self.maximumNameLength, "bad node name \(local.name)")
        self.local = local
        self.role = role
        self.key = SymmetricKey(data: secret.bytes)
        self.protocolVersion = protocolVersion
        self.hashVersion = hashVersion
        let nonce = nonce ?? Self.randomNonce()
        precondition(nonce.count == Self.nonceLength)
        var hello = allocator.buffer(capacity: 64 + local.name.utf8.count)
        hello.writeMultipleIntegers(Self.magic, protocolVersion, hashVersion, role.rawValue, local.incarnation)
        hello.writeBytes(nonce)
        hello.writeInteger(UInt16(local.name.utf8.count))
        hello.writeString(local.name)
        self.localHello = hello
    }

    static func randomNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<Self.nonceLength).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// Feeds one frame received from the peer.
    mutating func receive(_ frame: Frame) throws(HandshakeError) -> Action {
        switch self.state {
        case .awaitingHello:
            guard frame.type == Self.helloType else { try self.fail(.unexpectedFrame(type: frame.type)) }
            let peer = try self.parseHello(frame.payload)
            let (dialerHello, acceptorHello) =
                self.role == .dialer ? (self.localHello, frame.payload) : (frame.payload, self.localHello)
            let ownProof = HMAC<SHA256>.authenticationCode(
                for: Self.transcript(role: self.role, dialerHello: dialerHello, acceptorHello: acceptorHello),
                using: self.key
            )
            self.state = .awaitingProof(
                peer: peer,
                expectedProofTranscript: Self.transcript(
                    role: self.role.opposite,
                    dialerHello: dialerHello,
                    acceptorHello: acceptorHello
                )
            )
            return .sendProof(ByteBuffer(bytes: ownProof))
        case .awaitingProof(let peer, let transcript):
            guard frame.type == Self.proofType else { try self.fail(.unexpectedFrame(type: frame.type)) }
            guard frame.payload.readableBytes == SHA256.byteCount else { try self.fail(.malformedProof) }
            let proof = Array(frame.payload.readableBytesView)
            guard HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: transcript, using: self.key) else {
                try self.fail(.badProof)
            }
            self.state = .authenticated(peer)
            return .authenticated(peer)
        case .authenticated, .failed:
            try self.fail(.unexpectedFrame(type: frame.type))
        }
    }

    private mutating func fail(_ error: HandshakeError) throws(HandshakeError) -> Never {
        self.state = .failed
        throw error
    }

    private mutating func parseHello(_ payload: ByteBuffer) throws(HandshakeError) -> NodeID {
        var hello = payload
        guard let magic = hello.readInteger(as: UInt32.self) else { try self.fail(.malformedHello) }
        guard magic == Self.magic else { try self.fail(.badMagic) }
        guard let (protocolVersion, hashVersion, role, incarnation) =
            hello.readMultipleIntegers(as: (UInt16, UInt16, UInt8, UInt64).self)
        else { try self.fail(.malformedHello) }
        guard protocolVersion == self.protocolVersion else {
            try self.fail(.protocolVersionMismatch(local: self.protocolVersion, remote: protocolVersion))
        }
        guard hashVersion == self.hashVersion else {
            try self.fail(.hashVersionMismatch(local: self.hashVersion, remote: hashVersion))
        }
        guard let peerRole = ConnectionRole(rawValue: role) else { try self.fail(.malformedHello) }
        guard peerRole == self.role.opposite else { try self.fail(.roleMismatch) }
        guard hello.readSlice(length: Self.nonceLength) != nil,
            let nameLength = hello.readInteger(as: UInt16.self),
            nameLength > 0, Int(nameLength) <= Self.maximumNameLength,
            let name = hello.readString(length: Int(nameLength)),
            hello.readableBytes == 0
        else { try self.fail(.malformedHello) }
        guard name != self.local.name else { try self.fail(.selfConnection) }
        return NodeID(name: name, incarnation: incarnation)
    }

    static func transcript(role: ConnectionRole, dialerHello: ByteBuffer, acceptorHello: ByteBuffer) -> [UInt8] {
        var bytes = Self.label
        bytes.reserveCapacity(bytes.count + 9 + dialerHello.readableBytes + acceptorHello.readableBytes)
        bytes.append(role.rawValue)
        for hello in [dialerHello, acceptorHello] {
            let length = UInt32(hello.readableBytes)
            bytes.append(contentsOf: [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)])
            bytes.append(contentsOf: hello.readableBytesView)
        }
        return bytes
    }
}
