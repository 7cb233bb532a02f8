import Crypto
import FuzzSupport
import NIOCore
import SwarmCore
@testable import SwarmTransport

/// Input: `[flags: UInt8][stream…]`: the bytes an unauthenticated peer sends on a new cluster
/// connection. They go through the frame decoder with the handshake's frame limit and every frame
/// into `Handshake.receive`, exactly as `PeerChannelHandler` does, until the handshake fails or
/// authenticates.
///
/// `flags` bit 0: the local role (dialer/acceptor). Bit 1, "oracle": once a hello is accepted,
/// the harness computes the proof the peer would send (HMAC over the transcript, with the secret)
/// and substitutes it for the payload of the next frame, so the fuzzer also drives the states
/// after the proof, which it could never forge.
///
/// Invariants: an accepted hello names a peer with a non-empty name of at most 1024 bytes that is
/// not the local name, the proof sent back is 32 bytes; a peer authenticates only with exactly the
/// HMAC of the transcript (computed here independently) and is the peer its hello named; after
/// failure or authentication every frame is refused. (The seed corpus holds real hello + proof
/// exchanges: the harness's nonce is fixed, so a proof computed by a real peer stays valid.)
func fuzzHandshake(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    var input = FuzzInput(data, size)
    let flags = input.byte()
    let role: ConnectionRole = flags & 1 == 0 ? .acceptor : .dialer
    let oracle = flags & 2 != 0
    let local = NodeID(name: "gw-1@127.0.0.1:7946", incarnation: 42)
    let secret = ClusterSecret("fuzzing-cluster-secret-0123456789")
    var handshake = Handshake(local: local, role: role, secret: secret, nonce: [UInt8](repeating: 7, count: Handshake.nonceLength))

    var stream = ByteBuffer(bytes: input.rest())
    var decoder = FrameDecoder(maximumFrameLength: TransportSettings(secret: secret).maximumHandshakeFrameLength)
    var helloPeer: NodeID?
    var finished = false
    while let decoded = try? decoder.decode(buffer: &stream) {
        var frame = decoded
        if finished {
            do {
                _ = try handshake.receive(frame)
                fuzzCheck(false, "a frame was accepted after the handshake ended")
            } catch {
                fuzzCheck(error == .unexpectedFrame(type: frame.type), "after the end: \(error)")
            }
            continue
        }
        var expectedProof: [UInt8]?
        if case .awaitingProof(_, let transcript) = handshake.state {
            expectedProof = Array(HMAC<SHA256>.authenticationCode(for: transcript, using: SymmetricKey(data: secret.bytes)))
            if oracle { frame.payload = ByteBuffer(bytes: expectedProof!) }
        }
        do {
            switch try handshake.receive(frame) {
            case .sendProof(let proof):
                guard case .awaitingProof(let peer, _) = handshake.state else {
                    fuzzCheck(false, "sendProof without awaiting the proof")
                    return
                }
                fuzzCheck(!peer.name.isEmpty && peer.name.utf8.count <= Handshake.maximumNameLength, "bad peer name accepted")
                fuzzCheck(peer.name != local.name, "self connection accepted")
                fuzzCheck(proof.readableBytes == SHA256.byteCount, "proof of \(proof.readableBytes) bytes")
                helloPeer = peer
            case .authenticated(let peer):
                fuzzCheck(Array(frame.payload.readableBytesView) == expectedProof, "authenticated with a proof other than the HMAC of the transcript")
                fuzzCheck(peer == helloPeer, "authenticated \(peer), hello named \(String(describing: helloPeer))")
                finished = true
            }
        } catch {
            guard case .failed = handshake.state else {
                fuzzCheck(false, "handshake threw \(error) without failing")
                return
            }
            finished = true
        }
    }
}

@main
enum Main {
    static func main() {
        fuzzMain { data, size in
            fuzzHandshake(data, size)
            return 0
        }
    }
}

#if SWARM_LIBFUZZER
/// libFuzzer's conventional entry point. `main` above drives the fuzzing; a debug link pulls in
/// libFuzzer's own `main` as well, which refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzHandshake(data, size)
    return 0
}
#endif
