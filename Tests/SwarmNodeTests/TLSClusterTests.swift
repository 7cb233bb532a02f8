import Foundation
import SwarmCore
import SwarmTransport
import TestCertificates
import Testing

@testable import SwarmNode

/// Swarm nodes with mutual TLS between them (SwarmTLS), certificates made by the `openssl` CLI
/// at test time.
@Suite("Swarm nodes with mutual TLS", .timeLimit(.minutes(2)))
struct TLSClusterTests {
    @Test("three TLS nodes form a cluster and route calls; other-CA and plaintext nodes never join")
    func tlsCluster() async throws {
        let ca = try TestCertificateAuthority(name: "node-tests-ca")
        defer { ca.remove() }
        let rogueCA = try TestCertificateAuthority(name: "node-tests-rogue-ca")
        defer { rogueCA.remove() }
        var securities: [String: ChannelSecurity] = [:]
        for name in ["node-1", "node-2", "node-3"] {
            securities[name] = try ca.security(for: name)
        }
        // Holds the cluster secret and trusts the cluster CA, but its certificate is the rogue CA's.
        let rogueSecurity = try rogueCA.security(for: "node-rogue", trusting: ca.certificate)
        let all = securities
        try await withCluster(3, configure: { $0.security = all[$0.name] }) { nodes in
            let pid = try #require(try await nodes[0].register("w-tls", kind: "worker").pid)
            #expect(await eventually { await everywhere(nodes, "w-tls", is: pid) })
            for node in nodes {
                #expect(text(try await node.call("w-tls", bytes("ping"))) == "pong")
            }
            let seed = try #require(await nodes[0].address)
            for (name, security) in [("node-rogue", rogueSecurity), ("node-plain", nil)] {
                var settings = testSettings(name, seeds: [seed])
                settings.security = security
                let outsider = SwarmNode(settings: settings, factories: ["worker": workerFactory])
                let refusedBefore = nodes[0].connectionsRefused
                try await outsider.start()
                let running = Task { try await outsider.run() }
                // Three dial attempts refused by the seed (backoff 100 ms doubling), however long
                // the machine takes to make them.
                #expect(await eventually(timeout: .seconds(60)) { nodes[0].connectionsRefused >= refusedBefore + 3 }, "\(name): refusals seen by the seed")
                // Its ring holds itself alone once it settled (empty before that).
                _ = await eventually { (try? await outsider.dump().ringNodes.count) == 1 }
                let outsiderRing = try await outsider.dump().ringNodes
                #expect(outsiderRing.count == 1, "\(name) joined: its ring is \(outsiderRing)")
                for node in nodes {
                    #expect(try await node.dump().ringNodes.count == 3, "\(name) entered the ring of \(node.id)")
                    #expect(node.transport.connectedPeers.count == 2)
                }
                await outsider.shutdown()
                try await running.value
            }
            #expect(text(try await nodes[2].call("w-tls", bytes("ping"))) == "pong")
        }
    }
}
