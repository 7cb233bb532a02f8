import Dispatch
import Synchronization

/// Inbound messages handed from libmosquitto's network thread to one Swift consumer in batches,
/// with flow control instead of loss (``MQTTClient/Settings/flowControlLimit``).
///
/// - The network thread ``push(_:)``es each message. While fewer than `limit` wait, the message
///   is queued (or handed straight to the consumer parked in ``next()``). At `limit` the network
///   thread itself waits until the consumer takes the queue: it stops reading the socket, so TCP
///   flow control holds the broker, which queues for this client (its `max_queued_messages`
///   limit then applies; beyond it the broker drops and counts in
///   `$SYS/broker/publish/messages/dropped`). Nothing that reached this client is dropped.
/// - The consumer takes everything queued in one ``next()`` (one wake-up per batch, not one per
///   message).
/// - ``close()`` (the client is closing) wakes a waiting network thread; later pushes are
///   dropped, since nobody will read them, and ``next()`` answers nil once the queue is empty.
///
/// The network thread blocks on a semaphore, never on the Swift cooperative pool; the consumer
/// never blocks a thread. One producer (the client's network thread) and one consumer.
final class InboundQueue: Sendable {
    private struct State {
        var items: [MQTTMessage] = []
        var consumer: CheckedContinuation<[MQTTMessage]?, Never>?
        var producerWaiting = false
        var closed = false
        var waits = 0
    }

    private enum PushAction {
        case done
        case resume(CheckedContinuation<[MQTTMessage]?, Never>)
        case wait
    }

    /// Messages waiting before the network thread stops reading.
    let limit: Int
    private let state = Mutex(State())
    private let room = DispatchSemaphore(value: 0)

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Messages queued and not taken yet.
    var count: Int { state.withLock { $0.items.count } }

    /// Times the network thread waited for room (each wait held the broker back).
    var waits: Int { state.withLock { $0.waits } }

    /// Network thread: queues `message`, waiting while `limit` messages wait. False when closed
    /// (the message is dropped: the client is closing).
    @discardableResult
    func push(_ message: MQTTMessage) -> Bool {
        while true {
            let action = state.withLock { state -> PushAction? in
                if state.closed { return nil }
                if let consumer = state.consumer {
                    state.consumer = nil
                    return .resume(consumer)
                }
                if state.items.count >= limit {
                    state.producerWaiting = true
                    state.waits += 1
                    return .wait
                }
                state.items.append(message)
                return .done
            }
            switch action {
            case nil:
                return false
            case .done:
                return true
            case .resume(let consumer):
                consumer.resume(returning: [message])
                return true
            case .wait:
                room.wait()
            }
        }
    }

    /// Consumer: everything queued, oldest first, waiting while the queue is empty; nil once
    /// closed and empty.
    func next() async -> [MQTTMessage]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[MQTTMessage]?, Never>) in
            let (batch, wake) = state.withLock { state -> ([MQTTMessage]?, Bool) in
                if state.items.isEmpty {
                    if state.closed { return (nil, false) }
                    state.consumer = continuation
                    return ([], false)
                }
                let batch = state.items
                state.items = []
                state.items.reserveCapacity(min(batch.count, limit))
                let wake = state.producerWaiting
                state.producerWaiting = false
                return (batch, wake)
            }
            if wake { room.signal() }
            if let batch, batch.isEmpty { return }  // parked: `push` or `close` resumes it
            continuation.resume(returning: batch)
        }
    }

    /// Ends the queue: a waiting network thread goes on (and drops), the consumer gets what is
    /// queued, then nil.
    func close() {
        let (consumer, wake) = state.withLock { state -> (CheckedContinuation<[MQTTMessage]?, Never>?, Bool) in
            state.closed = true
            let consumer = state.consumer
            state.consumer = nil
            let wake = state.producerWaiting
            state.producerWaiting = false
            return (consumer, wake)
        }
        if wake { room.signal() }
        consumer?.resume(returning: nil)
    }
}
