import NIOConcurrencyHelpers
import NIOCore
import SwarmCore
import Synchronization

/// The outcome of a send.
public enum SendResult: Sendable, Equatable {
    /// The frame is queued and will be written in the next batch.
    case enqueued
    /// The peer's outbound queue is full (``TransportSettings/maximumPendingBytesPerPeer``): the
    /// frame was dropped (reject-newest). Frames accepted earlier are unaffected.
    case overflow
    /// There is no authenticated connection to that peer (incarnation) or it is closing.
    case notConnected
}

/// One authenticated connection to a peer, and its outbound queue.
///
/// ## Write coalescing
/// ``send(type:payload:)`` may be called from any thread. It appends the encoded frame to a
/// per-connection batch buffer under a lock and, if no flush is pending, schedules one task on the
/// channel's event loop. That task hands the whole batch to NIO as one `writeAndFlush`. So a burst
/// of frames costs one memcpy per frame, one lock per frame, and one event-loop task, one buffer and
/// one syscall per batch; no allocation per frame.
///
/// ## Backpressure
/// While the channel is not writable (its write buffer passed the high water mark) the batch is kept
/// and grows; it is written when the channel becomes writable again. The batch is bounded by
/// ``TransportSettings/maximumPendingBytesPerPeer``; past it, sends return ``SendResult/overflow``
/// and the frame is dropped (reject-newest, never blocking the caller). The upper layer owns the
/// recovery (its sequence numbers and catch-up, A4) or may close a peer that stays too slow.
public final class PeerConnection: Sendable, CustomStringConvertible {
    /// The authenticated peer (name and incarnation).
    public let peer: NodeID
    /// This node's role on the connection.
    public let role: ConnectionRole
    /// The underlying channel.
    public let channel: any Channel

    private let maximumPendingBytes: Int
    private let batchCapacity: Int
    private let outbox: NIOLockedValueBox<Outbox>
    /// `NIODeadline.uptimeNanoseconds` of the last read from the peer (or of the handshake).
    private let lastReadNanos: Synchronization.Atomic<UInt64>

    private struct Outbox {
        var buffer: ByteBuffer
        var flushScheduled = false
        var open = true
        var lastBatchBytes = 0
    }

    init(peer: NodeID, role: ConnectionRole, channel: any Channel, settings: TransportSettings) {
        self.peer = peer
        self.role = role
        self.channel = channel
        self.maximumPendingBytes = settings.maximumPendingBytesPerPeer
        self.batchCapacity = settings.outboundBatchCapacity
        self.outbox = NIOLockedValueBox(Outbox(buffer: channel.allocator.buffer(capacity: 1024)))
        self.lastReadNanos = Synchronization.Atomic(NIODeadline.now().uptimeNanoseconds)
    }

    /// Records that bytes arrived from the peer.
    func noteRead(at now: NIODeadline) {
        self.lastReadNanos.store(now.uptimeNanoseconds, ordering: .relaxed)
    }

    /// True when nothing was read from the peer for `timeout` up to `now`.
    func isStalled(at now: NIODeadline, timeout: TimeAmount) -> Bool {
        let last = self.lastReadNanos.load(ordering: .relaxed)
        let current = now.uptimeNanoseconds
        return current > last && current - last >= UInt64(max(0, timeout.nanoseconds))
    }

    /// The peer and this node's role, for logs.
    public var description: String { "PeerConnection(\(self.peer), \(self.role))" }

    /// Bytes queued but not yet handed to NIO.
    public var pendingBytes: Int { self.outbox.withLockedValue { $0.buffer.readableBytes } }

    /// Queues one frame. Thread-safe; never blocks on the network.
    /// - Precondition: `type` is not in ``Frame/reservedTypes``.
    @discardableResult
    public func send(type: UInt16, payload: ByteBuffer) -> SendResult {
        precondition(!Frame.reservedTypes.contains(type), "frame type \(type) is reserved for the transport")
        let (result, schedule) = self.outbox.withLockedValue { outbox -> (SendResult, Bool) in
            guard outbox.open else { return (.notConnected, false) }
            guard outbox.buffer.readableBytes + Frame.headerLength + payload.readableBytes <= self.maximumPendingBytes
            else { return (.overflow, false) }
            Frame.write(type: type, payload: payload, to: &outbox.buffer)
            defer { outbox.flushScheduled = true }
            return (.enqueued, !outbox.flushScheduled)
        }
        if schedule { self.scheduleFlush() }
        return result
    }

    /// Queues one frame whose payload `encode` writes straight into the batch buffer: no payload
    /// buffer at all. `encode` runs under the queue lock: it must only write bytes.
    /// `maximumPayloadLength` is the most `encode` may write (checked against the queue bound).
    /// - Precondition: `type` is not in ``Frame/reservedTypes``.
    @discardableResult
    public func send(
        type: UInt16,
        maximumPayloadLength: Int,
        encode: (inout ByteBuffer) -> Void
    ) -> SendResult {
        precondition(!Frame.reservedTypes.contains(type), "frame type \(type) is reserved for the transport")
        let (result, schedule) = self.outbox.withLockedValue { outbox -> (SendResult, Bool) in
            guard outbox.open else { return (.notConnected, false) }
            guard outbox.buffer.readableBytes + Frame.headerLength + maximumPayloadLength <= self.maximumPendingBytes
            else { return (.overflow, false) }
            let start = outbox.buffer.writerIndex
            outbox.buffer.writeMultipleIntegers(UInt32(0), type)
            encode(&outbox.buffer)
            let length = outbox.buffer.writerIndex - start - 4
            precondition(length - 2 <= maximumPayloadLength, "encode wrote \(length - 2) > \(maximumPayloadLength) bytes")
            outbox.buffer.setInteger(UInt32(length), at: start)
            defer { outbox.flushScheduled = true }
            return (.enqueued, !outbox.flushScheduled)
        }
        if schedule { self.scheduleFlush() }
        return result
    }

    /// Closes the connection. The transport reports ``TransportEvent/peerDown(_:)`` if it was the
    /// peer's current connection.
    /// Always deferred to a later event-loop task, so it is safe to call from the event handler
    /// (a synchronous close would re-enter the transport while it emits the event).
    public func close() {
        self.outbox.withLockedValue { $0.open = false }
        let channel = self.channel
        channel.eventLoop.execute { channel.close(promise: nil) }
    }

    private func scheduleFlush() {
        self.channel.eventLoop.execute { self.flushPending() }
    }

    /// Hands the queued batch to NIO if the channel is writable. Runs on the channel's event loop.
    func flushPending() {
        let batch: ByteBuffer? = self.outbox.withLockedValue { outbox in
            outbox.flushScheduled = false
            guard outbox.open, outbox.buffer.readableBytes > 0, self.channel.isWritable else { return nil }
            let batch = outbox.buffer
            // Size the next buffer after this batch so a steady stream rarely regrows it.
            outbox.lastBatchBytes = batch.readableBytes
            let capacity = min(max(outbox.lastBatchBytes, 1024), self.batchCapacity)
            outbox.buffer = self.channel.allocator.buffer(capacity: capacity)
            return batch
        }
        if let batch { self.channel.writeAndFlush(batch, promise: nil) }
    }

    func markClosed() {
        self.outbox.withLockedValue { $0.open = false }
    }
}
