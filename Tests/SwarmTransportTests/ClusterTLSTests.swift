import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SwarmCore
import SwarmTLS
import TestCertificates
import Testing

@testable import SwarmTransport

/// Mutual TLS (SwarmTLS) in front of the handshake, on real TCP with certificates the `openssl`
/// CLI makes at test time.
@Suite("Cluster transport with mutual TLS", .timeLimit(.minutes(1)))
struct ClusterTLSTests {
    private func withCA(_ name: String = "cluster-ca", _ body: (TestCertificateAuthority) async throws -> Void) async throws {
        let authority = try TestCertificateAuthority(name: name)
        defer { authority.remove() }
        try await body(authority)
    }

    /// A transport in `fixture` with a certificate `ca` issues for `name`.
    private func node(_ name: String, _ fixture: Fixture, _ ca: TestCertificateAuthority) async throws -> (ClusterTransport, Recorder) {
        let security = try ca.security(for: name)
        return try await fixture.node(name) { $0.security = security }
    }

    private func payload(_ value: UInt32) -> ByteBuffer { ByteBuffer(integer: value) }

    @Test("two TLS transports authenticate, exchange frames both ways, and the channel is TLS")
    func tlsPair() async throws {
        try await self.withCA { ca in
            try await withFixture { fixture in
                let (a, aEvents) = try await self.node("gw-a", fixture, ca)
                let (b, bEvents) = try await self.node("gw-b", fixture, ca)
                a.connect(host: "127.0.0.1", port: try #require(b.boundPort))
                #expect(try await eventually { aEvents.log.ups == [b.localNode] && bEvents.log.ups == [a.localNode] })
                #expect(a.send(to: b.localNode, type: 10, payload: self.payload(1)) == .enqueued)
                #expect(b.send(to: a.localNode, type: 11, payload: self.payload(2)) == .enqueued)
                #expect(try await eventually { aEvents.frameCount == 1 && bEvents.frameCount == 1 })
                #expect(aEvents.log.refused.isEmpty && bEvents.log.refused.isEmpty)
                // The bytes on the wire are TLS: the connection's pipeline starts with NIOSSL.
                let channel = try #require(a.connection(to: "gw-b")?.channel)
                let tlsVersion = try await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.nioSSL_tlsVersion()
                }.get()
                #expect(tlsVersion == .tlsv13)
            }
        }
    }

    @Test("a node whose certificate another CA signed is refused both ways and never comes up")
    func otherCA() async throws {
        try await self.withCA { ca in
            let rogueCA = try TestCertificateAuthority(name: "rogue-ca")
            defer { rogueCA.remove() }
            let rogueIssued = try rogueCA.issue("gw-rogue")
            // The rogue node trusts the cluster CA (it has the bundle) but its own certificate is
            // not signed by it: the cluster node refuses it. It also dials and is dialed.
            let rogueSecurity = try ClusterTLS.security(files: rogueCA.files(rogueIssued, trusting: ca.certificate))
            try await withFixture { fixture in
                let (a, aEvents) = try await self.node("gw-a", fixture, ca)
                let (rogue, rogueEvents) = try await fixture.node("gw-rogue") { $0.security = rogueSecurity }
                rogue.connect(host: "127.0.0.1", port: try #require(a.boundPort))
                a.connect(host: "127.0.0.1", port: try #require(rogue.boundPort))
                #expect(try await eventually { aEvents.log.refused.count >= 2 && rogueEvents.log.refused.count >= 2 })
                // As acceptor, a verifies the rogue's client certificate; as dialer, the rogue's
                // server certificate.
                #expect(aEvents.log.refused.allSatisfy { $0.contains("TLS handshake failed") })
                #expect(aEvents.log.refused.contains { $0.contains("not signed by the cluster CA") })
                #expect(rogueEvents.log.refused.contains { $0.contains("refused this node's certificate") })
                try await Task.sleep(for: .milliseconds(300))
                #expect(aEvents.log.ups.isEmpty && rogueEvents.log.ups.isEmpty)
                #expect(a.connectedPeers.isEmpty && rogue.connectedPeers.isEmpty)
            }
        }
    }

    @Test("a plaintext node and a TLS node refuse each other, whichever dials")
    func plaintextAndTLS() async throws {
        try await self.withCA { ca in
            try await withFixture { fixture in
                let (tls, tlsEvents) = try await self.node("gw-tls", fixture, ca)
                let (plain, plainEvents) = try await fixture.node("gw-plain")
                plain.connect(host: "127.0.0.1", port: try #require(tls.boundPort))
                #expect(try await eventually { !tlsEvents.log.refused.isEmpty && !plainEvents.log.refused.isEmpty })
                #expect(tlsEvents.log.refused[0].contains("does not speak TLS"))
                // The plain node sees the TLS alert record where a hello should be.
                #expect(plainEvents.log.refused[0].contains("the peer speaks TLS"))
                plain.disconnect(host: "127.0.0.1", port: try #require(tls.boundPort))
                let before = (tlsEvents.log.refused.count, plainEvents.log.refused.count)
                tls.connect(host: "127.0.0.1", port: try #require(plain.boundPort))
                #expect(try await eventually {
                    tlsEvents.log.refused.count > before.0 && plainEvents.log.refused.count > before.1
                })
                #expect(tlsEvents.log.refused[before.0].contains("does not speak TLS"))
                #expect(plainEvents.log.refused[before.1].contains("the peer speaks TLS"))
                #expect(tlsEvents.log.ups.isEmpty && plainEvents.log.ups.isEmpty)
            }
        }
    }

    @Test("a node with an expired certificate is refused; garbage to a TLS port too; good peers still connect")
    func expiredAndGarbage() async throws {
        try await self.withCA { ca in
            // Valid for the one second it is made in: loaded as of that second, used after it.
            let expired = try ca.issue("gw-expired", days: 0)
            let notAfter = try #require(try NIOSSLCertificate.fromPEMFile(expired.certificate).first).notValidAfter
            let expiredSecurity = try ClusterTLS.security(
                files: ca.files(expired), now: Date(timeIntervalSince1970: TimeInterval(notAfter)))
            try await Task.sleep(for: .milliseconds(1100))
            try await withFixture { fixture in
                let (server, serverEvents) = try await self.node("gw-server", fixture, ca)
                let port = try #require(server.boundPort)
                let (old, oldEvents) = try await fixture.node("gw-expired") { $0.security = expiredSecurity }
                old.connect(host: "127.0.0.1", port: port)
                var raws: [any Channel] = []
                for bytes in [Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), [0, 0, 0, 6, 0xFF, 0x01, 0, 0, 0, 0]] {
                    let raw = try await ClientBootstrap(group: fixture.group).connect(host: "127.0.0.1", port: port).get()
                    raw.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
                    raws.append(raw)
                }
                let (good, goodEvents) = try await self.node("gw-good", fixture, ca)
                good.connect(host: "127.0.0.1", port: port)
                #expect(try await eventually { raws.allSatisfy { !$0.isActive } })
                #expect(try await eventually { serverEvents.log.refused.count >= 3 })
                #expect(serverEvents.log.refused.contains { $0.contains("or is expired") })
                #expect(serverEvents.log.refused.filter { $0.contains("does not speak TLS") }.count == 2)
                #expect(try await eventually { goodEvents.log.ups == [server.localNode] })
                #expect(good.send(to: server.localNode, type: 1, payload: self.payload(99)) == .enqueued)
                #expect(try await eventually { serverEvents.frameCount == 1 })
                #expect(serverEvents.log.ups == [good.localNode])
                #expect(oldEvents.log.ups.isEmpty)
            }
        }
    }

    @Test("start-up errors name the file and never its contents")
    func startupErrors() async throws {
        try await self.withCA { ca in
            let issued = try ca.issue("gw-a")
            let good = ca.files(issued)
            let keyText = try String(contentsOfFile: issued.privateKey, encoding: .utf8)
            func failure(_ files: ClusterTLSFiles, now: Date = Date()) -> String {
                do {
                    _ = try ClusterTLS.security(files: files, now: now)
                    return "no error"
                } catch {
                    return "\(error)"
                }
            }
            var missing = good
            missing.certificateChain = "\(ca.directory)/nope.pem"
            #expect(failure(missing) == "cannot read the TLS certificate chain \(missing.certificateChain): no such file")
            var keyAsCertificate = good
            keyAsCertificate.trustRoots = issued.privateKey
            let notCertificate = failure(keyAsCertificate)
            #expect(notCertificate.hasPrefix("invalid TLS CA bundle \(issued.privateKey): "))
            var certificateAsKey = good
            certificateAsKey.privateKey = issued.certificate
            #expect(failure(certificateAsKey).hasPrefix("invalid TLS private key \(issued.certificate): "))
            var directory = good
            directory.privateKey = ca.directory
            #expect(failure(directory) == "cannot read the TLS private key \(ca.directory): is a directory")
            let expired = failure(good, now: Date(timeIntervalSinceNow: 3 * 86_400))
            #expect(expired.hasPrefix("TLS certificate chain \(issued.certificate): certificate expired on "))
            let early = failure(good, now: Date(timeIntervalSinceNow: -86_400))
            #expect(early.hasPrefix("TLS certificate chain \(issued.certificate): certificate is not valid before "))
            // A key that belongs to another certificate.
            let other = try ca.issue("gw-b")
            var mismatched = good
            mismatched.privateKey = other.privateKey
            let mismatch = failure(mismatched)
            #expect(mismatch.hasPrefix("invalid TLS configuration: "))
            for message in [notCertificate, mismatch] {
                #expect(!message.contains("PRIVATE KEY") && !message.contains(String(keyText.dropFirst(40).prefix(24))))
            }
            #expect(failure(good) == "no error")
        }
    }
}
