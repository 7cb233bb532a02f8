import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwarmCore
import Testing

@testable import SwarmTransport

/// A TCP proxy on 127.0.0.1 that can silence the connections it carries without closing them
/// (bytes read are held back, as packets a network drops until TCP retransmits them after the
/// path is back), and refuse new ones.
final class SilencingProxy: Sendable {
    private struct Control {
        var generation = 0
        var silencedBelow = 0
        var refuseNew = false
    }
    private let control = NIOLockedValueBox(Control())
    private let listener: NIOLockedValueBox<(any Channel)?> = NIOLockedValueBox(nil)

    /// The proxy's port.
    var port: Int { self.listener.withLockedValue { $0?.localAddress?.port } ?? 0 }

    /// Holds back, from now on, every byte of the connections open now (both directions).
    func silenceExisting() { self.control.withLockedValue { $0.silencedBelow = $0.generation } }
    /// Closes new connections at once (the path to the peer is down for new connections too).
    func refuseNew(_ refuse: Bool) { self.control.withLockedValue { $0.refuseNew = refuse } }
    /// Lets every connection forward again (held bytes go with the next ones read).
    func restore() { self.control.withLockedValue { $0.silencedBelow = 0 } }

    func start(group: any EventLoopGroup, targetPort: Int) async throws {
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { inbound in
                let (generation, refuse) = self.control.withLockedValue { control -> (Int, Bool) in
                    control.generation += 1
                    return (control.generation, control.refuseNew)
                }
                if refuse { return inbound.close() }
                let silenced: @Sendable () -> Bool = { self.control.withLockedValue { generation <= $0.silencedBelow } }
                return ClientBootstrap(group: inbound.eventLoop)
                    .connect(host: "127.0.0.1", port: targetPort)
                    .flatMapThrowing { outbound in
                        // Both channels are on `inbound.eventLoop`, where this runs.
                        try outbound.pipeline.syncOperations.addHandler(Forwarder(to: inbound, silenced: silenced))
                        try inbound.pipeline.syncOperations.addHandler(Forwarder(to: outbound, silenced: silenced))
                    }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        self.listener.withLockedValue { $0 = server }
    }

    func stop() async {
        let server = self.listener.withLockedValue { $0 }
        try? await server?.close()
    }

    private final class Forwarder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let peer: any Channel
        private let silenced: @Sendable () -> Bool
        private var held: [ByteBuffer] = []

        init(to peer: any Channel, silenced: @escaping @Sendable () -> Bool) {
            self.peer = peer
            self.silenced = silenced
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.held.append(self.unwrapInboundIn(data))
            guard !self.silenced() else { return }
            for buffer in self.held { self.peer.write(buffer, promise: nil) }
            self.held = []
            self.peer.flush()
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.peer.close(promise: nil)
            context.fireChannelInactive()
        }
    }
}

@Suite("Stalled cluster connections", .timeLimit(.minutes(1)))
struct StalledConnectionTests {
    /// Both sides send a frame every 50 ms (the heartbeats the stall timeout relies on).
    private func heartbeats(_ a: ClusterTransport, _ b: ClusterTransport) -> Task<Void, Never> {
        Task {
            var beat: UInt32 = 0
            while !Task.isCancelled {
                a.send(to: b.localNode, type: 10, payload: ByteBuffer(integer: beat))
                b.send(to: a.localNode, type: 11, payload: ByteBuffer(integer: beat))
                beat += 1
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func pair(_ fixture: Fixture) async throws -> (ClusterTransport, Recorder, ClusterTransport, Recorder, SilencingProxy) {
        let stall: (inout TransportSettings) -> Void = { $0.stallTimeout = .milliseconds(300) }
        let (a, aEvents) = try await fixture.node("gw-a", configure: stall)
        let (b, bEvents) = try await fixture.node("gw-b", incarnation: 3, configure: stall)
        let proxy = SilencingProxy()
        try await proxy.start(group: fixture.group, targetPort: try #require(b.boundPort))
        a.connect(host: "127.0.0.1", port: proxy.port)
        #expect(try await eventually { aEvents.log.ups.count == 1 && bEvents.log.ups.count == 1 })
        return (a, aEvents, b, bEvents, proxy)
    }

    @Test("a connection gone silent is replaced by a new one once the path is back, with no down event, reported as a reconnect")
    func silentConnectionReplaced() async throws {
        try await withFixture { fixture in
            let (a, aEvents, b, bEvents, proxy) = try await self.pair(fixture)
            let beats = self.heartbeats(a, b)
            defer { beats.cancel() }
            let first = try #require(a.connection(to: "gw-b"))
            let firstAtB = try #require(b.connection(to: "gw-a"))
            #expect(try await eventually { aEvents.frameCount > 3 && bEvents.frameCount > 3 })
            // The old connection stays silent (as after a blackhole: TCP backs off); new ones work.
            proxy.silenceExisting()
            #expect(try await eventually(timeout: .seconds(5)) {
                a.connection(to: "gw-b").map { $0 !== first } == true && b.connection(to: "gw-a").map { $0 !== firstAtB } == true
            })
            let (seenA, seenB) = (aEvents.frameCount, bEvents.frameCount)
            #expect(try await eventually { aEvents.frameCount > seenA + 5 && bEvents.frameCount > seenB + 5 })
            #expect(aEvents.log.downs.isEmpty && bEvents.log.downs.isEmpty)
            #expect(aEvents.log.ups == [b.localNode] && bEvents.log.ups == [a.localNode])
            // Each switch is reported, so that the upper layer re-sends what may have been lost.
            #expect(!aEvents.log.reconnects.isEmpty && aEvents.log.reconnects.allSatisfy { $0 == b.localNode })
            #expect(!bEvents.log.reconnects.isEmpty && bEvents.log.reconnects.allSatisfy { $0 == a.localNode })
            await proxy.stop()
        }
    }

    @Test("while no new connection gets through, the silent one is kept and resumes")
    func silentConnectionKeptWhileRedialsFail() async throws {
        try await withFixture { fixture in
            let (a, aEvents, b, bEvents, proxy) = try await self.pair(fixture)
            let beats = self.heartbeats(a, b)
            defer { beats.cancel() }
            proxy.refuseNew(true)
            // On a loaded machine a heartbeat can come later than the 300 ms stall timeout before
            // this point, and the switch it causes is legitimate: what counts starts here.
            let first = try #require(a.connection(to: "gw-b"))
            let reconnectsBefore = (aEvents.log.reconnects.count, bEvents.log.reconnects.count)
            proxy.silenceExisting()
            // Several stall periods: re-dials are refused; no down event, no other connection.
            try await Task.sleep(for: .milliseconds(1200))
            #expect(a.connection(to: "gw-b") === first)
            #expect(aEvents.log.downs.isEmpty && bEvents.log.downs.isEmpty)
            proxy.restore()
            let seen = bEvents.frameCount
            #expect(try await eventually { bEvents.frameCount > seen + 5 })
            #expect(a.connection(to: "gw-b") === first)
            #expect(aEvents.log.reconnects.count == reconnectsBefore.0 && bEvents.log.reconnects.count == reconnectsBefore.1)
            proxy.refuseNew(false)
            await proxy.stop()
        }
    }
}
