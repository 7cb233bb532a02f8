import Gateway
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import SwarmCore
import SwarmNode
import Synchronization

/// The backend HTTP API of one node as a swift-service-lifecycle `Service`: put it in the
/// executable's `ServiceGroup` next to the node and the gateway.
///
/// ```swift
/// let http = GatewayHTTPServer(gateway: gateway, settings: httpSettings) { _ in
///     await serviceGroup.triggerGracefulShutdown()   // POST /v1/cluster/drain finished
/// }
/// ```
/// ``run()`` listens on ``GatewayHTTPSettings/host``:``GatewayHTTPSettings/port`` until graceful
/// shutdown (or cancellation); ``listeningPort()`` answers the bound port (port 0 picks one).
public final class GatewayHTTPServer: Service, Sendable {
    /// The routes and their state (drain, metrics).
    public let api: GatewayAPI

    private enum Listening {
        case waiting([CheckedContinuation<Int, any Error>])
        case bound(Int)
        case failed(any Error)
    }

    private let listening = Mutex(Listening.waiting([]))

    public init(gateway: DeviceGateway, settings: GatewayHTTPSettings, onDrain: @escaping @Sendable (Bool) async -> Void = { _ in }) {
        self.api = GatewayAPI(gateway: gateway, settings: settings, onDrain: onDrain)
    }

    /// Serves until graceful shutdown or cancellation. Throws when it cannot bind.
    public func run() async throws {
        let settings = api.settings
        let application = Application(
            router: api.makeRouter(),
            configuration: ApplicationConfiguration(address: .hostname(settings.host, port: settings.port), serverName: nil),
            onServerRunning: { [weak self] channel in
                self?.bound(channel.localAddress?.port ?? settings.port)
            },
            logger: settings.logger)
        do {
            try await application.run()
        } catch {
            fail(error)
            throw error
        }
        fail(CancellationError())
    }

    /// The port the server listens on, once it does; throws when ``run()`` failed or ended first.
    public func listeningPort() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let outcome: Result<Int, any Error>? = listening.withLock { state in
                switch state {
                case .waiting(var waiters):
                    waiters.append(continuation)
                    state = .waiting(waiters)
                    return nil
                case .bound(let port): return .success(port)
                case .failed(let error): return .failure(error)
                }
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    private func bound(_ port: Int) {
        let waiters = listening.withLock { state -> [CheckedContinuation<Int, any Error>] in
            guard case .waiting(let waiters) = state else { return [] }
            state = .bound(port)
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
        api.settings.logger.info("HTTP API of \(api.gateway.node.id.name) on \(api.settings.host):\(port)")
    }

    private func fail(_ error: any Error) {
        let waiters = listening.withLock { state -> [CheckedContinuation<Int, any Error>] in
            guard case .waiting(let waiters) = state else { return [] }
            state = .failed(error)
            return waiters
        }
        for waiter in waiters { waiter.resume(throwing: error) }
    }
}
