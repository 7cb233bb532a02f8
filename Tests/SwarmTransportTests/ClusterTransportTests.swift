import NIOCore
import NIOPosix
import SwarmCore
import Testing

@testable import SwarmTransport

@Suite("Cluster transport over TCP", .timeLimit(.minutes(1)))
struct ClusterTransportTests {
    private func payload(_ value: UInt32) -> ByteBuffer { ByteBuffer(integer: value) }

    private func value(_ frame: Frame) -> UInt32? {
        frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt32.self)
    }

    @Test("two transports authenticate on 127.0.0.1 and exchange frames both ways")
    func handshakeSuccess() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a")
            let (b, bEvents) = try await fixture.node("gw-b", incarnation: 7)
            let bPort = try #require(b.boundPort)
            #expect(bPort > 0)
            a.connect(host: "127.0.0.1", port: bPort)
            #expect(try await eventually { aEvents.log.ups.count == 1 && bEvents.log.ups.count == 1 })
            #expect(aEvents.log.ups == [b.localNode])
            #expect(bEvents.log.ups == [a.localNode])
            #expect(a.send(to: b.localNode, type: 10, payload: self.payload(1)) == .enqueued)
            #expect(b.send(to: a.localNode, type: 11, payload: self.payload(2)) == .enqueued)
            #expect(a.send(to: NodeID(name: "gw-b", incarnation: 6), type: 10, payload: self.payload(1)) == .notConnected)
            #expect(try await eventually { aEvents.frameCount == 1 && bEvents.frameCount == 1 })
            let atB = bEvents.log.frames[0]
            #expect(atB.from == a.localNode && atB.frame.type == 10 && self.value(atB.frame) == 1)
            let atA = aEvents.log.frames[0]
            #expect(atA.from == b.localNode && atA.frame.type == 11 && self.value(atA.frame) == 2)
            #expect(aEvents.log.refused.isEmpty && bEvents.log.refused.isEmpty)
        }
    }

    @Test("a wrong secret is refused on both sides and no peer comes up")
    func wrongSecret() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a", secret: ClusterSecret("not-the-cluster-secret-at-all"))
            let (b, bEvents) = try await fixture.node("gw-b")
            a.connect(host: "127.0.0.1", port: try #require(b.boundPort))
            #expect(try await eventually { !aEvents.log.refused.isEmpty && !bEvents.log.refused.isEmpty })
            #expect(aEvents.log.refused[0].contains("authentication failed"))
            #expect(bEvents.log.refused[0].contains("authentication failed"))
            #expect(aEvents.log.ups.isEmpty && bEvents.log.ups.isEmpty)
            #expect(a.connectedPeers.isEmpty && b.connectedPeers.isEmpty)
        }
    }

    @Test("a wrong protocol version is refused on both sides")
    func wrongProtocolVersion() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a", protocolVersion: SwarmProtocol.version + 1)
            let (b, bEvents) = try await fixture.node("gw-b")
            a.connect(host: "127.0.0.1", port: try #require(b.boundPort))
            #expect(try await eventually { !aEvents.log.refused.isEmpty && !bEvents.log.refused.isEmpty })
            #expect(aEvents.log.refused[0].contains("protocol version mismatch"))
            #expect(bEvents.log.refused[0].contains("protocol version mismatch"))
            #expect(aEvents.log.ups.isEmpty && bEvents.log.ups.isEmpty)
        }
    }

    @Test("garbage from raw clients is refused while an honest peer connects and exchanges frames")
    func garbageRefused() async throws {
        try await withFixture { fixture in
            let (server, serverEvents) = try await fixture.node("gw-server")
            let port = try #require(server.boundPort)
            var generator = SystemRandomNumberGenerator()
            var random = (0..<512).map { _ in UInt8.random(in: 0...255, using: &generator) }
            random[0] = max(random[0], 1)  // a length of at least 16 MiB: refused from the header
            let garbage: [[UInt8]] = [
                Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
                random,
                [0, 0, 0, 8, 0x00, 0x01, 1, 2, 3, 4, 5, 6],  // a well-formed frame of a non-handshake type
                [0, 0, 0, 6, 0xFF, 0x01, 0, 0, 0, 0],  // a hello with the wrong magic
            ]
            var raws: [any Channel] = []
            for bytes in garbage {
                let raw = try await ClientBootstrap(group: fixture.group).connect(host: "127.0.0.1", port: port).get()
                raw.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
                raws.append(raw)
            }
            let (honest, honestEvents) = try await fixture.node("gw-honest")
            honest.connect(host: "127.0.0.1", port: port)
            #expect(try await eventually { raws.allSatisfy { !$0.isActive } })
            #expect(try await eventually { serverEvents.log.refused.count == garbage.count })
            #expect(try await eventually { honestEvents.log.ups == [server.localNode] })
            #expect(honest.send(to: server.localNode, type: 1, payload: self.payload(99)) == .enqueued)
            #expect(try await eventually { serverEvents.frameCount == 1 })
            #expect(self.value(serverEvents.log.frames[0].frame) == 99)
            #expect(serverEvents.log.ups == [honest.localNode])
        }
    }

    @Test("an authenticated peer sending an oversize frame is disconnected, then reconnects")
    func oversizeFrameAfterHandshake() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a")
            let (b, bEvents) = try await fixture.node("gw-b") { $0.maximumFrameLength = 1024 }
            a.connect(host: "127.0.0.1", port: try #require(b.boundPort))
            #expect(try await eventually { aEvents.log.ups.count == 1 && bEvents.log.ups.count == 1 })
            #expect(a.send(to: b.localNode, type: 1, payload: self.payload(1)) == .enqueued)
            #expect(a.send(to: b.localNode, type: 1, payload: ByteBuffer(repeating: 0, count: 2000)) == .enqueued)
            #expect(try await eventually { aEvents.log.downs.count == 1 && bEvents.log.downs.count == 1 })
            #expect(bEvents.log.frames.count == 1)  // the valid frame before the oversize one
            // The dialer comes back and the node keeps serving.
            #expect(try await eventually { aEvents.log.ups.count == 2 && bEvents.log.ups.count == 2 })
            #expect(a.send(to: b.localNode, type: 1, payload: self.payload(2)) == .enqueued)
            #expect(try await eventually { bEvents.frameCount == 2 })
        }
    }

    @Test("a half-written frame followed by silence is closed after the handshake timeout")
    func halfWrittenFrameTimesOut() async throws {
        try await withFixture { fixture in
            let (server, serverEvents) = try await fixture.node("gw-server") { $0.handshakeTimeout = .milliseconds(300) }
            let clock = ContinuousClock()
            let start = clock.now  // before the connect: the server's timeout starts at accept
            let raw = try await ClientBootstrap(group: fixture.group)
                .connect(host: "127.0.0.1", port: try #require(server.boundPort)).get()
            // On a loaded machine the 300 ms handshake timeout may close the socket before this
            // write runs; the write failing then is the behaviour under test, not an error.
            try? await raw.writeAndFlush(ByteBuffer(bytes: [0, 0, 0, 100, 0xFF, 0x01, 1, 2, 3])).get()
            try await raw.closeFuture.get()
            let elapsed = clock.now - start
            #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(5))
            #expect(try await eventually { serverEvents.log.refused == ["handshake timed out"] })
        }
    }

    @Test("simultaneous dials leave exactly one connection, dialed by the smaller name", arguments: 0..<5)
    func simultaneousDial(round: Int) async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a")
            let (b, bEvents) = try await fixture.node("gw-b")
            let aPort = try #require(a.boundPort)
            let bPort = try #require(b.boundPort)
            a.connect(host: "127.0.0.1", port: bPort)
            b.connect(host: "127.0.0.1", port: aPort)
            #expect(try await eventually { a.openChannels == 1 && b.openChannels == 1 && a.connectedPeers.count == 1 && b.connectedPeers.count == 1 })
            try await Task.sleep(for: .milliseconds(300))  // let any redial settle
            #expect(a.openChannels == 1 && b.openChannels == 1)
            #expect(a.connection(to: "gw-b")?.role == .dialer)
            #expect(b.connection(to: "gw-a")?.role == .acceptor)
            #expect(aEvents.log.ups == [b.localNode] && aEvents.log.downs.isEmpty)
            #expect(bEvents.log.ups == [a.localNode] && bEvents.log.downs.isEmpty)
            #expect(b.send(to: a.localNode, type: 5, payload: self.payload(5)) == .enqueued)
            #expect(try await eventually { aEvents.frameCount == 1 })
        }
    }

    @Test("a dialer reconnects after the peer transport restarts with a new incarnation")
    func reconnectAfterRestart() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a")
            // A fixed port below the ephemeral range: once b1 frees it, no port-0 listener of a
            // test running in parallel can take it before b2 binds it again.
            var started: ClusterTransport?
            for attempt in 0..<50 where started == nil {
                started = try? await fixture.node("gw-b", incarnation: 1, port: 20_000 + Int(UInt64.random(in: 0..<10_000)) + attempt)
                    .0
            }
            let b1 = try #require(started)
            let port = try #require(b1.boundPort)
            a.connect(host: "127.0.0.1", port: port)
            #expect(try await eventually { aEvents.log.ups == [b1.localNode] })
            await b1.shutdown()
            #expect(try await eventually { aEvents.log.downs == [b1.localNode] })
            let (b2, b2Events) = try await fixture.node("gw-b", incarnation: 2, port: port)
            // The dialer's backoff is capped at 5 s; allow a loaded CI machine several rounds.
            #expect(try await eventually(timeout: .seconds(30)) { a.connectedPeers.contains(b2.localNode) })
            withKnownIssue("reconnect after a peer restart can flap (down/up of the new incarnation) before it settles", isIntermittent: true) {
                #expect(aEvents.log.ups == [b1.localNode, b2.localNode], "events: \(aEvents.log.lifecycle)")
            }
            // Right after peerUp a duplicate connection may still be settling, and a frame
            // written on the one that loses is lost with it (the upper layer re-sends on
            // `peerReconnected`): send until frames reach the new incarnation.
            #expect(try await eventually {
                _ = a.send(to: b2.localNode, type: 3, payload: self.payload(3))
                return b2Events.frameCount >= 1
            })
        }
    }

    @Test("a peer connecting with a newer incarnation replaces the old connection")
    func newIncarnationReplaces() async throws {
        try await withFixture { fixture in
            let (a, aEvents) = try await fixture.node("gw-a")
            let aPort = try #require(a.boundPort)
            let (b1, _) = try await fixture.node("gw-b", incarnation: 1)
            b1.connect(host: "127.0.0.1", port: aPort)
            #expect(try await eventually { aEvents.log.ups == [b1.localNode] })
            let (b2, _) = try await fixture.node("gw-b", incarnation: 2)
            b2.connect(host: "127.0.0.1", port: aPort)
            #expect(try await eventually { aEvents.log.lifecycle.count == 3 })
            #expect(aEvents.log.lifecycle == ["up gw-b/1", "down gw-b/1", "up gw-b/2"])
            #expect(a.connectedPeers == [b2.localNode])
            await b1.shutdown()
        }
    }

    @Test("a burst of 100k frames arrives complete and in order")
    func burstInOrder() async throws {
        try await withFixture { fixture in
            let (a, _) = try await fixture.node("gw-a")
            let (b, bEvents) = try await fixture.node("gw-b")
            a.connect(host: "127.0.0.1", port: try #require(b.boundPort))
            #expect(try await eventually { a.connectedPeers == [b.localNode] && b.connectedPeers == [a.localNode] })
            let connection = try #require(a.connection(to: "gw-b"))
            let count: UInt32 = 100_000
            for i in 0..<count {
                let result = connection.send(type: 42, maximumPayloadLength: 4) { $0.writeInteger(i) }
                #expect(result == .enqueued)
            }
            #expect(try await eventually(timeout: .seconds(30)) { bEvents.frameCount == Int(count) })
            let frames = bEvents.log.frames
            #expect(frames.count == Int(count))
            var inOrder = true
            for (index, received) in frames.enumerated() where self.value(received.frame) != UInt32(index) || received.frame.type != 42 {
                inOrder = false
                break
            }
            #expect(inOrder)
        }
    }
}
