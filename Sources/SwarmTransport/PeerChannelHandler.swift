import Logging
import NIOCore
import SwarmCore

/// The one transport handler on a cluster connection: frame decoding, the handshake, batched
/// delivery of inbound frames and the outbound writability hook.
///
/// Decoding happens inside this handler (``FrameDecoder/decode(buffer:)`` in a loop over one
/// cumulation buffer) rather than in a separate `ByteToMessageHandler`, so a frame is never boxed
/// into `NIOAny` nor passed through the pipeline: frames of one read burst are collected in an
/// array and delivered once, on `channelReadComplete`.
final class PeerChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        case handshaking(Handshake)
        case established(PeerConnection)
        case closed
    }

    private let transport: ClusterTransport
    private let role: ConnectionRole
    private let dialKey: String?
    private var logger: Logger
    private var state: State = .idle
    private var decoder: FrameDecoder
    private var cumulation: ByteBuffer?
    private var inbound: [Frame] = []
    private var timeout: Scheduled<Void>?
    /// The peer once its hello was accepted (for reconnect bookkeeping).
    private var helloPeer: NodeID?
    /// True while the transport counts this connection as a handshake in progress to `helloPeer`.
    private var handshakeRegistered = false
    /// The connection once authenticated and accepted by the transport.
    private var connection: PeerConnection?

    init(transport: ClusterTransport, role: ConnectionRole, dialKey: String?, logger: Logger) {
        self.transport = transport
        self.role = role
        self.dialKey = dialKey
        self.logger = logger
        self.decoder = FrameDecoder(maximumFrameLength: transport.settings.maximumHandshakeFrameLength)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        self.logger[metadataKey: "remote"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
        self.logger[metadataKey: "role"] = "\(self.role)"
        let handshake = Handshake(
            local: self.transport.localNode,
            role: self.role,
            secret: self.transport.settings.secret,
            protocolVersion: self.transport.protocolVersion,
            allocator: context.channel.allocator
        )
        self.state = .handshaking(handshake)
        var hello = context.channel.allocator.buffer(capacity: Frame.headerLength + handshake.localHello.readableBytes)
        Frame.write(type: Handshake.helloType, payload: handshake.localHello, to: &hello)
        context.writeAndFlush(self.wrapOutboundOut(hello), promise: nil)
        self.timeout = context.eventLoop.assumeIsolated().scheduleTask(in: self.transport.settings.handshakeTimeout) {
            self.fail(context: context, error: HandshakeError.timeout)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        switch self.state {
        case .handshaking, .established: break
        case .idle, .closed: return
        }
        // Decode from a local buffer: closing the channel below re-enters this handler.
        var cumulation: ByteBuffer
        if var existing = self.cumulation, existing.readableBytes > 0 {
            self.cumulation = nil  // keep `existing` uniquely referenced: append without a copy
            existing.discardReadBytes()
            existing.writeBuffer(&buffer)
            cumulation = existing
        } else {
            cumulation = buffer
        }
        do {
            decoding: while let frame = try self.decoder.decode(buffer: &cumulation) {
                switch self.state {
                case .established:
                    guard !Frame.reservedTypes.contains(frame.type) else {
                        throw HandshakeError.unexpectedFrame(type: frame.type)
                    }
                    self.inbound.append(frame)
                case .handshaking(var handshake):
                    self.state = .idle  // avoid a copy-on-write of the handshake
                    let action: Handshake.Action
                    do {
                        action = try handshake.receive(frame)
                    } catch {
                        self.state = .handshaking(handshake)
                        throw error
                    }
                    self.state = .handshaking(handshake)
                    try self.perform(action, context: context)
                case .idle, .closed:
                    break decoding
                }
            }
        } catch FrameError.frameTooLarge where self.isHandshaking && Self.startsWithTLSRecord(cumulation) {
            self.fail(context: context, error: HandshakeError.peerSpeaksTLS)
        } catch {
            self.fail(context: context, error: error)
        }
        if case .closed = self.state { return }
        self.cumulation = cumulation
    }

    private var isHandshaking: Bool {
        if case .handshaking = self.state { return true }
        return false
    }

    /// A TLS record header (content type alert or handshake, protocol major version 3) where a
    /// frame length was expected: a TLS peer talking to this plain-TCP node.
    private static func startsWithTLSRecord(_ buffer: ByteBuffer) -> Bool {
        guard let bytes = buffer.getBytes(at: buffer.readerIndex, length: 2) else { return false }
        return (0x15...0x16).contains(bytes[0]) && bytes[1] == 0x03
    }

    private func perform(_ action: Handshake.Action, context: ChannelHandlerContext) throws {
        switch action {
        case .sendProof(let proof):
            if case .handshaking(let handshake) = self.state, case .awaitingProof(let peer, _) = handshake.state {
                self.helloPeer = peer
                self.handshakeRegistered = true
                self.transport.handshakeStarted(with: peer)
            }
            var frame = context.channel.allocator.buffer(capacity: Frame.headerLength + proof.readableBytes)
            Frame.write(type: Handshake.proofType, payload: proof, to: &frame)
            context.writeAndFlush(self.wrapOutboundOut(frame), promise: nil)
        case .authenticated(let peer):
            self.timeout?.cancel()
            self.timeout = nil
            self.logger[metadataKey: "peer"] = "\(peer)"
            let connection = PeerConnection(
                peer: peer,
                role: self.role,
                channel: context.channel,
                settings: self.transport.settings
            )
            self.state = .established(connection)
            self.handshakeRegistered = false  // connectionAuthenticated ends the registration
            self.decoder.maximumFrameLength = self.transport.settings.maximumFrameLength
            guard self.transport.connectionAuthenticated(connection, dialKey: self.dialKey) else {
                // A duplicate or stale connection: closed quietly, not an error.
                self.state = .closed
                connection.markClosed()
                context.close(promise: nil)
                return
            }
            self.connection = connection
            self.logger.debug("cluster connection authenticated")
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .established(let connection) = self.state { connection.noteRead(at: .now()) }
        self.deliverInbound()
        if let cumulation = self.cumulation, cumulation.readableBytes == 0 {
            self.cumulation = nil
        }
        context.fireChannelReadComplete()
    }

    private func deliverInbound() {
        guard !self.inbound.isEmpty, case .established(let connection) = self.state else { return }
        let frames = self.inbound
        self.inbound = []
        self.inbound.reserveCapacity(frames.count)
        self.transport.deliver(frames, from: connection)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .established(let connection) = self.state {
            connection.flushPending()
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timeout?.cancel()
        self.timeout = nil
        switch self.state {
        case .established(let established):
            self.deliverInbound()
            established.markClosed()
        case .handshaking:
            self.logger.info("cluster connection closed during handshake")
        case .idle, .closed:
            break
        }
        self.state = .closed
        self.cumulation = nil
        self.transport.connectionClosed(
            connection: self.connection,
            dialKey: self.dialKey,
            peerName: self.helloPeer?.name,
            abandonedHandshakeWith: self.handshakeRegistered ? self.helloPeer : nil
        )
        self.handshakeRegistered = false
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail(context: context, error: error)
    }

    /// Logs why the connection is refused or dropped and closes it. Valid frames decoded before
    /// the error are still delivered.
    private func fail(context: ChannelHandlerContext, error: any Error) {
        switch self.state {
        case .closed, .idle:
            return
        case .handshaking:
            self.logger.warning("cluster connection refused: \(error)")
            self.transport.reportRefused(remote: context.channel.remoteAddress, reason: "\(error)")
        case .established:
            self.deliverInbound()
            self.logger.warning("cluster connection closed on error: \(error)")
        }
        self.timeout?.cancel()
        self.timeout = nil
        if case .established(let connection) = self.state { connection.markClosed() }
        self.state = .closed
        context.close(promise: nil)
    }
}
