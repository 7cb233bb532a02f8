import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwarmCore

@testable import SwarmTransport

let testSecret = ClusterSecret("test-cluster-secret-0123456789")

/// Records every event of one transport.
final class Recorder: Sendable {
    struct Received: Sendable {
        var from: NodeID
        var frame: Frame
    }
    struct Log: Sendable {
        var ups: [NodeID] = []
        var downs: [NodeID] = []
        var lifecycle: [String] = []
        var refused: [String] = []
        var reconnects: [NodeID] = []
        var frames: [Received] = []
    }
    private let box = NIOLockedValueBox(Log())

    var handler: @Sendable (TransportEvent) -> Void {
        { event in
            self.box.withLockedValue { log in
                switch event {
                case .peerUp(let peer):
                    log.ups.append(peer)
                    log.lifecycle.append("up \(peer)")
                case .peerDown(let peer):
                    log.downs.append(peer)
                    log.lifecycle.append("down \(peer)")
                case .peerReconnected(let peer):
                    log.reconnects.append(peer)
                case .connectionRefused(_, let reason):
                    log.refused.append(reason)
                case .frames(let frames, let from):
                    log.frames.append(contentsOf: frames.map { Received(from: from, frame: $0) })
                }
            }
        }
    }

    var log: Log { self.box.withLockedValue { $0 } }
    var frameCount: Int { self.box.withLockedValue { $0.frames.count } }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while clock.now < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// An event loop group plus every transport made from it, all torn down by ``withFixture(_:)``.
final class Fixture: Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    private let transports = NIOLockedValueBox<[ClusterTransport]>([])

    func node(
        _ name: String,
        incarnation: UInt64 = 1,
        secret: ClusterSecret = testSecret,
        port: Int = 0,
        protocolVersion: UInt16 = SwarmProtocol.version,
        configure: (inout TransportSettings) -> Void = { _ in }
    ) async throws -> (ClusterTransport, Recorder) {
        var settings = TransportSettings(secret: secret)
        settings.port = port
        settings.reconnectBackoff.initial = .milliseconds(20)
        settings.reconnectBackoff.maximum = .milliseconds(200)
        configure(&settings)
        let recorder = Recorder()
        let transport = ClusterTransport(
            node: NodeID(name: name, incarnation: incarnation),
            settings: settings,
            eventLoopGroup: self.group,
            logger: Logger(label: "test.\(name)"),
            protocolVersion: protocolVersion,
            onEvent: recorder.handler
        )
        self.transports.withLockedValue { $0.append(transport) }
        try await transport.start()
        return (transport, recorder)
    }

    func tearDown() async {
        for transport in self.transports.withLockedValue({ $0 }) { await transport.shutdown() }
        try? await self.group.shutdownGracefully()
    }
}

func withFixture(_ body: (Fixture) async throws -> Void) async throws {
    let fixture = Fixture()
    do {
        try await body(fixture)
    } catch {
        await fixture.tearDown()
        throw error
    }
    await fixture.tearDown()
}
