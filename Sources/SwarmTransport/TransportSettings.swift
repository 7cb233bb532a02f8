import NIOCore

/// The shared cluster secret. Its description is redacted so that it can never reach a log line.
public struct ClusterSecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret bytes; used only as an HMAC key, never sent.
    public let bytes: [UInt8]

    /// Creates a secret from raw bytes.
    /// - Precondition: at least 16 bytes.
    public init(bytes: [UInt8]) {
        precondition(bytes.count >= 16, "the cluster secret must be at least 16 bytes")
        self.bytes = bytes
    }

    /// Creates a secret from the UTF-8 bytes of `string` (for example read from a config file).
    public init(_ string: String) {
        self.init(bytes: Array(string.utf8))
    }

    /// Always `ClusterSecret(<redacted>)`.
    public var description: String { "ClusterSecret(<redacted>)" }
    /// Always `ClusterSecret(<redacted>)`.
    public var debugDescription: String { self.description }
}

/// Reconnect backoff: exponential, capped, jittered.
///
/// Attempt `n` (0-based) waits a random delay in `[d/2, d]` where
/// `d = min(maximum, initial * multiplier^n)` ("equal jitter"): never zero, never above the cap,
/// and nodes restarted together spread their reconnects.
public struct BackoffSettings: Sendable, Equatable {
    /// Delay bound of the first retry. Default 100 ms.
    public var initial: TimeAmount = .milliseconds(100)
    /// Upper bound of any delay. Default 5 s.
    public var maximum: TimeAmount = .seconds(5)
    /// Growth factor per failed attempt. Default 2.
    public var multiplier: Double = 2

    /// Creates the default backoff.
    public init() {}

    /// The delay to wait before retry number `attempt` (0-based).
    public func delay<G: RandomNumberGenerator>(attempt: Int, using generator: inout G) -> TimeAmount {
        let initial = Double(self.initial.nanoseconds)
        let maximum = Double(self.maximum.nanoseconds)
        var bound = initial
        var step = 0
        while step < attempt && bound < maximum {
            bound *= self.multiplier
            step += 1
        }
        bound = min(bound, maximum)
        let nanos = Double.random(in: (bound / 2)...max(bound / 2, bound), using: &generator)
        return .nanoseconds(Int64(nanos))
    }

    /// The delay to wait before retry number `attempt`, using the system random generator.
    public func delay(attempt: Int) -> TimeAmount {
        var generator = SystemRandomNumberGenerator()
        return self.delay(attempt: attempt, using: &generator)
    }
}

/// Configuration of a ``ClusterTransport``. Every field has a documented default except the secret.
public struct TransportSettings: Sendable {
    /// Default ``maximumFrameLength``: 16 MiB.
    public static let defaultMaximumFrameLength = 16 * 1024 * 1024

    /// Address to listen on. Default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// Port to listen on; 0 picks a free port (read it back from ``ClusterTransport/boundPort``).
    /// Default 0.
    public var port: Int = 0
    /// Shared secret every node of the cluster holds. Required.
    public var secret: ClusterSecret
    /// Largest accepted frame length field (type + payload) once authenticated. Larger frames are
    /// refused and the connection closed. Default 16 MiB.
    public var maximumFrameLength: Int = TransportSettings.defaultMaximumFrameLength
    /// Largest frame accepted during the handshake (hello and proof are tiny); keeps garbage from
    /// unauthenticated peers from buffering memory. Default 4 KiB.
    public var maximumHandshakeFrameLength: Int = 4096
    /// Time from TCP connect until both sides have proven the secret; then the connection is
    /// closed. Default 5 s.
    public var handshakeTimeout: TimeAmount = .seconds(5)
    /// TCP connect timeout when dialing. Default 3 s.
    public var connectTimeout: TimeAmount = .seconds(3)
    /// Backoff between redials of a configured peer address. Default 100 ms doubling to 5 s.
    public var reconnectBackoff = BackoffSettings()
    /// Bound of the bytes queued per peer that NIO has not yet accepted (the channel was not
    /// writable or the batch was not flushed yet). A send that would exceed it is refused with
    /// ``SendResult/overflow`` (reject-newest: frames already accepted are never dropped). Default
    /// 32 MiB.
    public var maximumPendingBytesPerPeer: Int = 32 * 1024 * 1024
    /// Channel write-buffer water marks: above `high` the channel stops being writable and the
    /// transport keeps frames in its own per-peer queue until it drains below `low`.
    /// Default 256 KiB / 1 MiB.
    public var writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 256 * 1024, high: 1024 * 1024)
    /// Initial capacity of each per-peer outbound batch buffer. Default 64 KiB.
    public var outboundBatchCapacity: Int = 64 * 1024
    /// TCP_NODELAY on cluster connections (batching is done by the transport). Default true.
    public var tcpNoDelay: Bool = true
    /// A layer in front of the handshake on every connection (mutual TLS from `SwarmTLS`), or
    /// nil for plain TCP. Every node of a cluster must use the same choice: a plain node and a
    /// secured node refuse each other. Default nil.
    public var security: ChannelSecurity?
    /// Inbound silence after which an authenticated connection counts as stalled; `nil` (the
    /// default) turns this off. Set it only when the upper layer sends something at least this
    /// often (heartbeats). While the current connection to a peer is stalled, the transport
    /// re-dials that peer's configured address every quarter of this time (one attempt in flight
    /// at a time), and a new authenticated connection to the same incarnation replaces the stalled
    /// one on either end, whichever side dialed it. Without it, a connection whose packets were
    /// dropped for a while (a partition) stays silent after the path is back until TCP's next
    /// retransmission, whose timeout doubles with every loss (0.2, 0.4, 0.8, 1.6 s…).
    public var stallTimeout: TimeAmount?

    /// Creates settings with the given secret and defaults for everything else.
    public init(secret: ClusterSecret) {
        self.secret = secret
    }
}

/// A layer that secures every cluster connection before the ``Handshake`` runs, such as TLS.
///
/// The transport calls ``configure`` on the channel's event loop for every accepted and every
/// dialed connection, before it adds its own handler; `configure` adds handlers at the front of
/// the pipeline through `channel.pipeline.syncOperations`. The handshake then runs inside that
/// layer unchanged. A layer reports a failed negotiation through `fireErrorCaught` before the
/// handshake completes: the transport then logs and counts the connection as refused
/// (``TransportEvent/connectionRefused(remote:reason:)``) like any other refused handshake.
///
/// SwarmTransport itself has no TLS dependency: the `SwarmTLS` module builds a mutual-TLS layer
/// from certificate files.
public struct ChannelSecurity: Sendable, CustomStringConvertible {
    /// Adds the layer's handlers to `channel`, whose role is `role`. Runs on the channel's event
    /// loop; throwing refuses the connection.
    public let configure: @Sendable (_ channel: any Channel, _ role: ConnectionRole) throws -> Void
    /// What the layer is, for logs (for example `mutual TLS (CA: /etc/swarm/ca.pem)`). Never
    /// contains key material.
    public let description: String

    /// Creates a layer named `description` that adds its handlers with `configure`.
    public init(
        description: String,
        configure: @escaping @Sendable (_ channel: any Channel, _ role: ConnectionRole) throws -> Void
    ) {
        self.description = description
        self.configure = configure
    }
}
