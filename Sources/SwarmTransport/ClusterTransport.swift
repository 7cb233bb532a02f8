import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwarmCore

/// What the transport reports to the upper layer, through the handler given to
/// ``ClusterTransport/init(node:settings:eventLoopGroup:logger:onEvent:)``.
public enum TransportEvent: Sendable {
    /// An authenticated connection to `peer` is up. Frames from it follow.
    case peerUp(NodeID)
    /// The connection to `peer` is gone (closed, failed, or replaced by a newer incarnation).
    case peerDown(NodeID)
    /// A new connection to the same incarnation of `peer` took over from the current one (a
    /// stalled connection replaced, or both nodes dialled each other): no up/down, but frames
    /// written on the old connection in its last moments may be lost. The upper layer re-sends
    /// what waits for an answer from `peer` instead of waiting for its timeouts.
    case peerReconnected(NodeID)
    /// Frames read from `peer` in one read burst, in arrival order. Payloads are slices of the
    /// receive buffer: copy out what you keep for long.
    case frames([Frame], from: NodeID)
    /// An inbound or outbound connection was refused during the handshake (bad secret, version,
    /// garbage, timeout…). For metrics; the reason never contains the secret.
    case connectionRefused(remote: String, reason: String)
}

/// Errors of the transport lifecycle.
public enum TransportError: Error, Equatable, Sendable {
    /// ``ClusterTransport/start()`` was called on a transport that is not idle.
    case alreadyStarted
    /// The transport is not running.
    case notRunning
}

/// The cluster transport: framed, authenticated TCP connections between Swarm nodes.
///
/// ## Lifecycle
/// `idle` → ``start()`` → `running` → ``shutdown()`` → `shuttingDown` → `stopped`. A stopped
/// transport is not restarted: make a new one (with a new incarnation).
///
/// ## Connections
/// It listens on ``TransportSettings/host``:``TransportSettings/port`` and dials the addresses
/// given to ``connect(host:port:)``, redialing with capped, jittered exponential backoff
/// (``TransportSettings/reconnectBackoff``) for as long as the address is configured and no other
/// connection reaches that peer. Every connection runs the ``Handshake`` first.
///
/// There is one connection per peer name. When a second authenticated connection to the same
/// peer appears:
/// - same incarnation, and the current connection has read nothing for
///   ``TransportSettings/stallTimeout`` (when set): the new one replaces it, whoever dialed it,
///   with no up/down event (`.peerReconnected`: see below). While a peer's connection is stalled the transport re-dials its
///   configured address every quarter of that timeout, so a path that came back (after a
///   partition, while TCP's retransmission backoff still holds the old connection) is used at once.
/// - same incarnation (both nodes dialed each other): the connection dialed by the node with the
///   smaller name wins, on both ends; the other is closed. No up/down event is emitted (if the
///   current connection closes while the winner is still in its handshake, `peerDown` waits for
///   that handshake and is only emitted if it fails). Frames
///   written on the loser in the instant before it closes may be lost (the upper layer's
///   sequence numbers and catch-up cover that, as for any connection loss).
///   Every such same-incarnation switch emits `.peerReconnected(peer)` instead, so that the upper
///   layer re-sends its requests still waiting for an answer (they may have been on the old
///   connection) rather than waiting for their timeouts.
/// - newer incarnation: the peer restarted; the old connection is closed and ``TransportEvent``
///   `.peerDown(old)` then `.peerUp(new)` are emitted. An older incarnation is refused.
///
/// ## Delivery
/// Events are delivered by calling the `onEvent` handler **on the connection's event loop**:
/// - `.frames` is called once per read burst (after `channelReadComplete`) with all frames decoded
///   in it; this avoids a hop or an allocation per frame and gives TCP backpressure for free: while
///   the handler runs, that connection reads nothing. It must not block.
/// - `.peerUp`/`.peerDown` are serialized across all connections (one lock), in causal order; per
///   connection the order is `peerUp`, `frames`…, `peerDown`. Frames of a replaced connection may
///   still arrive after the replacement's `peerUp`; they carry the old ``NodeID`` (incarnation),
///   so the upper layer can filter them.
/// The handler may call any method of the transport or of a ``PeerConnection`` except awaiting
/// ``shutdown()``. To consume events in a task instead, yield them into an `AsyncStream`.
///
/// ## Sending
/// ``send(to:type:payload:)`` or, faster, a cached ``PeerConnection`` from ``connection(to:)``;
/// see ``PeerConnection`` for write coalescing and backpressure.
///
/// ## TLS seam
/// ``initializeChannel(_:role:dialKey:)`` is the single place where every cluster channel's
/// pipeline is built. When ``TransportSettings/security`` is set, its handlers (the `SwarmTLS`
/// module's `NIOSSLServerHandler`/`NIOSSLClientHandler`) go there, in front of the
/// ``PeerChannelHandler``; the handshake then runs inside TLS unchanged, and a failed TLS
/// negotiation is a refused handshake (logged, ``TransportEvent/connectionRefused(remote:reason:)``).
/// The handshake timeout covers the TLS negotiation too.
public final class ClusterTransport: Sendable {
    /// Lifecycle states; see the type documentation.
    public enum Lifecycle: Sendable, Equatable {
        /// Created, not started.
        case idle
        /// ``start()`` is binding the listener.
        case starting
        /// Listening, dialing, connected.
        case running
        /// ``shutdown()`` is closing everything.
        case shuttingDown
        /// Done; make a new transport to run again.
        case stopped
    }

    /// This node's identity (name and incarnation), sent in every handshake.
    public let localNode: NodeID
    /// The settings in force.
    public let settings: TransportSettings
    /// The allocator to build payload buffers with.
    public let allocator = ByteBufferAllocator()

    let protocolVersion: UInt16
    private let group: any EventLoopGroup
    private let logger: Logger
    private let onEvent: @Sendable (TransportEvent) -> Void
    private let state = NIOLockedValueBox(State())
    /// Held while deciding and emitting `peerUp`/`peerDown`, so that they reach the handler in
    /// the order the decisions were taken. Never taken on the frame path.
    private let eventLock = NIOLock()

    private struct State {
        var lifecycle: Lifecycle = .idle
        var serverChannel: (any Channel)?
        var boundPort: Int?
        /// The current authenticated connection of each peer, by peer name.
        var peers: [String: PeerConnection] = [:]
        var dialTargets: [String: DialTarget] = [:]
        /// Handshakes past the hello, by peer: a connection about to replace the current one.
        var handshakesInProgress: [NodeID: Int] = [:]
        /// A peer whose current connection closed while another handshake with the same
        /// incarnation was in progress: its `peerDown` waits for that handshake's outcome.
        var deferredDowns: [String: NodeID] = [:]
        /// Every open channel (handshaking or not), to close them on shutdown.
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// The stalled-connection check (``TransportSettings/stallTimeout``).
        var stallCheck: RepeatedTask?
    }

    private struct DialTarget {
        enum Phase {
            case connecting
            case waiting(Scheduled<Void>)
            /// Not dialing: another connection reaches `peerName`. Redialed when it goes down.
            case satisfied
        }
        var host: String
        var port: Int
        var attempt = 0
        var peerName: String?
        var phase: Phase = .connecting
    }

    /// Creates a transport for `node`. Nothing happens until ``start()``.
    /// - Parameters:
    ///   - node: this node's name and incarnation (fresh at every start).
    ///   - settings: listen address, secret, limits.
    ///   - eventLoopGroup: where connections run. Default: NIO's shared singleton group.
    ///   - logger: receives connection refusals (warning) and lifecycle (info/debug) lines.
    ///   - onEvent: the upper layer's handler; see "Delivery" above.
    public convenience init(
        node: NodeID,
        settings: TransportSettings,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "swarm.transport"),
        onEvent: @escaping @Sendable (TransportEvent) -> Void
    ) {
        self.init(
            node: node,
            settings: settings,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            protocolVersion: SwarmProtocol.version,
            onEvent: onEvent
        )
    }

    /// Designated initializer; `protocolVersion` is overridable only for tests of version refusal.
    init(
        node: NodeID,
        settings: TransportSettings,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        protocolVersion: UInt16,
        onEvent: @escaping @Sendable (TransportEvent) -> Void
    ) {
        self.localNode = node
        self.settings = settings
        self.group = eventLoopGroup
        var logger = logger
        logger[metadataKey: "node"] = "\(node)"
        self.logger = logger
        self.protocolVersion = protocolVersion
        self.onEvent = onEvent
    }

    /// The current lifecycle state.
    public var lifecycle: Lifecycle { self.state.withLockedValue { $0.lifecycle } }

    /// The port the listener is bound to (useful with port 0), once running.
    public var boundPort: Int? { self.state.withLockedValue { $0.boundPort } }

    /// Peers with an authenticated connection now.
    public var connectedPeers: [NodeID] { self.state.withLockedValue { $0.peers.values.map(\.peer) } }

    /// Channels open now, handshaking or authenticated (for tests and metrics).
    var openChannels: Int { self.state.withLockedValue { $0.channels.count } }

    /// The most bytes queued for any one peer now (not yet handed to NIO): what a sender that
    /// must not overflow a peer's queue waits on.
    public var largestPendingBytes: Int {
        self.state.withLockedValue { state in state.peers.values.reduce(0) { max($0, $1.pendingBytes) } }
    }

    /// The bound of each peer's queue (``TransportSettings/maximumPendingBytesPerPeer``).
    public var maximumPendingBytesPerPeer: Int { self.settings.maximumPendingBytesPerPeer }

    /// The current connection to the peer named `name`, if any. Cache it for the fast path; it
    /// answers ``SendResult/notConnected`` once closed or replaced.
    public func connection(to name: String) -> PeerConnection? {
        self.state.withLockedValue { $0.peers[name] }
    }

    /// Queues one frame for `peer`. Returns ``SendResult/notConnected`` if no connection to that
    /// exact incarnation is up.
    @discardableResult
    public func send(to peer: NodeID, type: UInt16, payload: ByteBuffer) -> SendResult {
        guard let connection = self.connection(to: peer.name), connection.peer == peer else { return .notConnected }
        return connection.send(type: type, payload: payload)
    }

    // MARK: Lifecycle

    /// Binds the listener. Throws if binding fails (the transport is then stopped).
    public func start() async throws {
        try self.state.withLockedValue { state in
            guard state.lifecycle == .idle else { throw TransportError.alreadyStarted }
            state.lifecycle = .starting
        }
        do {
            let server = try await ServerBootstrap(group: self.group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelOption(.backlog, value: 256)
                .childChannelOption(.socketOption(.tcp_nodelay), value: self.settings.tcpNoDelay ? 1 : 0)
                .childChannelOption(.writeBufferWaterMark, value: self.settings.writeBufferWaterMark)
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { channel in
                    self.initializeChannel(channel, role: .acceptor, dialKey: nil)
                }
                .bind(host: self.settings.host, port: self.settings.port)
                .get()
            let stillStarting = self.state.withLockedValue { state in
                guard state.lifecycle == .starting else { return false }
                state.lifecycle = .running
                state.serverChannel = server
                state.boundPort = server.localAddress?.port
                if let stall = self.settings.stallTimeout {
                    let period = TimeAmount.nanoseconds(max(stall.nanoseconds / 4, TimeAmount.milliseconds(10).nanoseconds))
                    state.stallCheck = self.group.next().scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
                        self.redialStalledPeers(stallTimeout: stall)
                    }
                }
                return true
            }
            guard stillStarting else {
                try? await server.close()
                throw TransportError.notRunning
            }
            self.logger.info(
                "cluster transport listening on \(self.settings.host):\(server.localAddress?.port ?? -1) (\(self.settings.security?.description ?? "plain TCP"))"
            )
        } catch {
            self.state.withLockedValue { $0.lifecycle = .stopped }
            throw error
        }
    }

    /// Stops dialing, closes the listener and every connection (emitting `peerDown` for each
    /// connected peer) and waits until they are closed.
    public func shutdown() async {
        let work: (server: (any Channel)?, channels: [any Channel], timers: [Scheduled<Void>])? =
            self.state.withLockedValue { state in
                switch state.lifecycle {
                case .idle:
                    state.lifecycle = .stopped
                    return nil
                case .shuttingDown, .stopped:
                    return nil
                case .starting, .running:
                    state.lifecycle = .shuttingDown
                }
                let timers = state.dialTargets.values.compactMap { target -> Scheduled<Void>? in
                    if case .waiting(let scheduled) = target.phase { return scheduled }
                    return nil
                }
                state.dialTargets = [:]
                state.stallCheck?.cancel()
                state.stallCheck = nil
                return (state.serverChannel, Array(state.channels.values), timers)
            }
        guard let work else { return }
        for timer in work.timers { timer.cancel() }
        if let server = work.server {
            server.close(promise: nil)
            try? await server.closeFuture.get()
        }
        for channel in work.channels { channel.close(promise: nil) }
        for channel in work.channels { try? await channel.closeFuture.get() }
        self.state.withLockedValue { state in
            state.lifecycle = .stopped
            state.serverChannel = nil
            state.peers = [:]
        }
        self.logger.info("cluster transport stopped")
    }

    // MARK: Dialing

    /// Dials `host:port` now and keeps redialing with backoff whenever no connection reaches the
    /// node there. Calling it again for the same address does nothing.
    public func connect(host: String, port: Int) {
        let key = "\(host):\(port)"
        let isNew = self.state.withLockedValue { state -> Bool in
            guard state.lifecycle == .running, state.dialTargets[key] == nil else { return false }
            state.dialTargets[key] = DialTarget(host: host, port: port)
            return true
        }
        if isNew { self.dial(key) }
    }

    /// Stops redialing `host:port`. An established connection stays up until it closes.
    public func disconnect(host: String, port: Int) {
        let target = self.state.withLockedValue { $0.dialTargets.removeValue(forKey: "\(host):\(port)") }
        if case .waiting(let scheduled) = target?.phase { scheduled.cancel() }
    }

    private func dial(_ key: String) {
        let address: (host: String, port: Int)? = self.state.withLockedValue { state in
            guard state.lifecycle == .running, var target = state.dialTargets[key] else { return nil }
            target.phase = .connecting
            state.dialTargets[key] = target
            return (target.host, target.port)
        }
        guard let address else { return }
        ClientBootstrap(group: self.group)
            .connectTimeout(self.settings.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: self.settings.tcpNoDelay ? 1 : 0)
            .channelOption(.writeBufferWaterMark, value: self.settings.writeBufferWaterMark)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                self.initializeChannel(channel, role: .dialer, dialKey: key)
            }
            .connect(host: address.host, port: address.port)
            .whenFailure { error in
                self.logger.debug("dial \(key) failed: \(error)")
                self.scheduleRedial(key, resetBackoff: false)
            }
    }

    private func scheduleRedial(_ key: String, resetBackoff: Bool) {
        self.state.withLockedValue { state in
            guard state.lifecycle == .running, var target = state.dialTargets[key] else { return }
            if let name = target.peerName, state.peers[name] != nil {
                // A failed re-dial of a stalled peer: its connection is still there (the stall
                // check dials again while it stays silent).
                target.phase = .satisfied
                target.attempt = 0
                state.dialTargets[key] = target
                return
            }
            // One pending redial per target: a second one (the connection closed *and* the dial
            // target was satisfied by it) would dial twice and the two connections could each be
            // refused by one side as the other's duplicate.
            if case .waiting(let pending) = target.phase { pending.cancel() }
            if resetBackoff { target.attempt = 0 }
            let delay = self.settings.reconnectBackoff.delay(attempt: target.attempt)
            target.attempt += 1
            target.phase = .waiting(self.group.next().scheduleTask(in: delay) { self.dial(key) })
            state.dialTargets[key] = target
        }
    }

    /// Dials, once, every configured address whose peer's current connection has been silent for
    /// `stallTimeout`; the new connection replaces the stalled one (see
    /// ``connectionAuthenticated(_:)``). A dial still in flight is not repeated.
    private func redialStalledPeers(stallTimeout: TimeAmount) {
        let now = NIODeadline.now()
        let keys = self.state.withLockedValue { state -> [String] in
            guard state.lifecycle == .running else { return [] }
            var keys: [String] = []
            for (key, target) in state.dialTargets {
                guard case .satisfied = target.phase, let name = target.peerName,
                    let connection = state.peers[name], connection.isStalled(at: now, timeout: stallTimeout)
                else { continue }
                keys.append(key)
            }
            return keys
        }
        for key in keys {
            self.logger.debug("cluster connection to \(key) silent for \(stallTimeout): re-dialing")
            self.dial(key)
        }
    }

    // MARK: Channel setup and callbacks from the handler

    /// Builds the pipeline of every cluster channel, accepted or dialed: the security layer's
    /// handlers (TLS), if any, then the ``PeerChannelHandler``.
    private func initializeChannel(_ channel: any Channel, role: ConnectionRole, dialKey: String?) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            let id = ObjectIdentifier(channel)
            let accepted = self.state.withLockedValue { state -> Bool in
                guard state.lifecycle == .running || state.lifecycle == .starting else { return false }
                state.channels[id] = channel
                return true
            }
            guard accepted else { throw TransportError.notRunning }
            channel.closeFuture.whenComplete { _ in
                _ = self.state.withLockedValue { $0.channels.removeValue(forKey: id) }
            }
            try self.settings.security?.configure(channel, role)
            let handler = PeerChannelHandler(transport: self, role: role, dialKey: dialKey, logger: self.logger)
            try channel.pipeline.syncOperations.addHandler(handler)
        }
    }

    /// The handshake of `connection` (dialed for `dialKey`, if any) succeeded. Returns false if the
    /// transport refuses it (duplicate, stale incarnation, shutting down); the handler then closes it.
    func connectionAuthenticated(_ connection: PeerConnection, dialKey: String?) -> Bool {
        self.eventLock.withLock {
            var replaced: PeerConnection?
            var events: [TransportEvent] = []
            let name = connection.peer.name
            let accepted = self.state.withLockedValue { state -> Bool in
                Self.endHandshake(with: connection.peer, in: &state)
                defer { events.append(contentsOf: Self.flushDeferredDown(of: name, in: &state)) }
                guard state.lifecycle == .running else { return false }
                if let dialKey, var target = state.dialTargets[dialKey] {
                    // The address reaches `name`, and no dial of it is in flight any more.
                    target.peerName = name
                    target.phase = .satisfied
                    target.attempt = 0
                    state.dialTargets[dialKey] = target
                }
                guard let existing = state.peers[name] else {
                    state.peers[name] = connection
                    if let deferred = state.deferredDowns.removeValue(forKey: name) {
                        // The previous connection of this peer closed while this one was in its
                        // handshake: same incarnation means a seamless switch, no events.
                        events = deferred != connection.peer ? [.peerDown(deferred), .peerUp(connection.peer)] : [.peerReconnected(connection.peer)]
                    } else {
                        events = [.peerUp(connection.peer)]
                    }
                    return true
                }
                if existing.peer.incarnation == connection.peer.incarnation {
                    if let stall = self.settings.stallTimeout, existing.isStalled(at: .now(), timeout: stall) {
                        // The current connection went silent (its packets were dropped and TCP
                        // backs off): the new one takes over at once, whoever dialed it.
                        state.peers[name] = connection
                        replaced = existing
                        events = [.peerReconnected(connection.peer)]
                        return true
                    }
                    let preferredDialer = min(self.localNode.name, name)
                    func dialer(_ c: PeerConnection) -> String { c.role == .dialer ? self.localNode.name : name }
                    guard dialer(connection) == preferredDialer, dialer(existing) != preferredDialer else { return false }
                    state.peers[name] = connection
                    replaced = existing
                    events = [.peerReconnected(connection.peer)]
                    return true
                }
                guard connection.peer.incarnation > existing.peer.incarnation else { return false }
                state.peers[name] = connection
                replaced = existing
                events = [.peerDown(existing.peer), .peerUp(connection.peer)]
                return true
            }
            if let replaced {
                self.logger.info("cluster connection \(replaced) replaced by \(connection)")
                replaced.close()
            } else if !accepted {
                self.logger.debug("cluster connection \(connection) refused as duplicate or stale")
            }
            for event in events { self.emitLifecycle(event) }
            return accepted
        }
    }

    /// A channel with this handler closed. `connection` is set if it was authenticated and accepted.
    /// `abandonedHandshakeWith` is set if it closed after ``handshakeStarted(with:)`` and before
    /// ``connectionAuthenticated(_:)``.
    func connectionClosed(
        connection: PeerConnection?,
        dialKey: String?,
        peerName: String?,
        abandonedHandshakeWith abandoned: NodeID?
    ) {
        var redials: [(key: String, reset: Bool)] = []
        self.eventLock.withLock {
            var events: [TransportEvent] = []
            self.state.withLockedValue { state in
                if let abandoned {
                    Self.endHandshake(with: abandoned, in: &state)
                    events.append(contentsOf: Self.flushDeferredDown(of: abandoned.name, in: &state))
                }
                if let connection, let current = state.peers[connection.peer.name], current === connection {
                    state.peers[connection.peer.name] = nil
                    if state.handshakesInProgress[connection.peer, default: 0] > 0 {
                        // Another connection to the same incarnation is finishing its handshake
                        // (both nodes dialed): report down only if it fails.
                        state.deferredDowns[connection.peer.name] = connection.peer
                    } else {
                        events.append(.peerDown(connection.peer))
                    }
                    for (key, target) in state.dialTargets where target.peerName == connection.peer.name {
                        if case .satisfied = target.phase { redials.append((key, true)) }
                    }
                }
                guard let dialKey, var target = state.dialTargets[dialKey] else { return }
                if let peerName { target.peerName = peerName }
                if let peerName, state.peers[peerName] != nil {
                    target.phase = .satisfied
                    target.attempt = 0
                    state.dialTargets[dialKey] = target
                } else {
                    state.dialTargets[dialKey] = target
                    redials.append((dialKey, connection != nil))
                }
            }
            for event in events { self.emitLifecycle(event) }
        }
        for redial in redials { self.scheduleRedial(redial.key, resetBackoff: redial.reset) }
    }

    /// A connection accepted the peer's hello and is about to exchange proofs.
    func handshakeStarted(with peer: NodeID) {
        self.state.withLockedValue { $0.handshakesInProgress[peer, default: 0] += 1 }
    }

    private static func endHandshake(with peer: NodeID, in state: inout State) {
        let remaining = state.handshakesInProgress[peer, default: 0] - 1
        state.handshakesInProgress[peer] = remaining > 0 ? remaining : nil
    }

    /// The deferred `peerDown` of `name`, once no handshake can replace the lost connection.
    private static func flushDeferredDown(of name: String, in state: inout State) -> [TransportEvent] {
        guard let deferred = state.deferredDowns[name], state.peers[name] == nil,
            state.handshakesInProgress[deferred, default: 0] == 0
        else { return [] }
        state.deferredDowns[name] = nil
        return [.peerDown(deferred)]
    }

    private func emitLifecycle(_ event: TransportEvent) {
        switch event {
        case .peerUp(let peer): self.logger.info("peer up: \(peer)")
        case .peerDown(let peer): self.logger.info("peer down: \(peer)")
        default: break
        }
        self.onEvent(event)
    }

    func deliver(_ frames: [Frame], from connection: PeerConnection) {
        self.onEvent(.frames(frames, from: connection.peer))
    }

    func reportRefused(remote: SocketAddress?, reason: String) {
        self.onEvent(.connectionRefused(remote: remote.map { "\($0)" } ?? "?", reason: reason))
    }
}
