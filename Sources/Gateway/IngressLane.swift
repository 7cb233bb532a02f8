import MQTT
import Synchronization

/// One ordered ingress lane of a ``DeviceGateway``, bounded, with the overload policy.
///
/// The broker consumer ``offer(_:)``s validated messages; the lane's task ``take()``s everything
/// queued at once (a batch) and routes it in order. The bound is ``capacity`` items:
///
/// - **telemetry that came at QoS 0** is queued only while the lane holds fewer than `capacity`
///   items; otherwise it is shed (``Offer/shed``): counted, logged rate-limited, never queued. The
///   newest reading is the one dropped, so what is queued keeps its order; the next one taken
///   refreshes the twin.
/// - everything else — **telemetry at QoS 1**, **status** (birth, will, offline) and **reported**
///   state — is never shed: it is queued while the lane holds fewer than `2 × capacity` items, so
///   a lane full of QoS 0 telemetry always has `capacity` places left for it. Beyond that,
///   ``offer(_:)`` answers ``Offer/full`` and the broker consumer waits in ``waitForRoom()``
///   until the lane task takes the queue: the wait holds up reading from the broker (the MQTT
///   client's flow control stops its network thread, TCP holds the broker), and the message is
///   then queued, not dropped.
///
/// A thin shell: a lock-protected array and two kinds of waiter, no policy beyond the above.
final class IngressLane: Sendable {
    enum Offer: Equatable {
        /// Queued (or handed straight to the waiting lane task).
        case queued
        /// Telemetry refused: the lane holds `capacity` items or more.
        case shed
        /// Status or reported refused for now: the lane holds `2 × capacity`; wait, then offer again.
        case full
        /// The lane is finished (the gateway stops).
        case closed
    }

    struct Item: Sendable {
        var id: String
        var kind: DeviceTopics.Kind
        var message: [UInt8]
        /// Telemetry that came at QoS 0: the only kind the lane may shed.
        var sheddable: Bool

        init(id: String, kind: DeviceTopics.Kind, message: [UInt8], qos: MQTTQoS = .atMostOnce) {
            self.id = id
            self.kind = kind
            self.message = message
            self.sheddable = kind == .telemetry && qos == .atMostOnce
        }
    }

    /// Outcome of ``offer(_:from:)``.
    struct BatchOffer: Equatable {
        /// Position of the first item not taken: `items.count` when all were queued or shed.
        var next: Int
        /// Kinds of the items shed, in order.
        var shed: [DeviceTopics.Kind] = []
        /// The item at `next` found the lane full: wait (``waitForRoom()``), then offer again.
        var full = false
        /// The lane is finished: nothing from `next` on was taken.
        var closed = false
    }

    private struct State {
        var items: [Item] = []
        var taker: CheckedContinuation<[Item]?, Never>?
        var roomWaiters: [CheckedContinuation<Void, Never>] = []
        var finished = false
    }

    /// The most items queued for telemetry; status and reported may use twice as many.
    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Items queued now (not yet taken by the lane task).
    var count: Int { state.withLock { $0.items.count } }

    /// Queues `item` unless the policy says otherwise (see the type's documentation).
    func offer(_ item: Item) -> Offer {
        let outcome = offer([item], from: 0)
        if outcome.closed { return .closed }
        if outcome.full { return .full }
        return outcome.shed.isEmpty ? .queued : .shed
    }

    /// Offers `items[start...]` in order under one lock (one wake-up of the lane task for all):
    /// queues each, sheds sheddable telemetry beyond `capacity`, and stops at the first other
    /// item that finds `2 × capacity` queued, so the order of what is queued is kept.
    func offer(_ items: [Item], from start: Int) -> BatchOffer {
        let (outcome, handover) = state.withLock { state -> (BatchOffer, (CheckedContinuation<[Item]?, Never>, [Item])?) in
            var outcome = BatchOffer(next: start)
            guard !state.finished else {
                outcome.closed = true
                return (outcome, nil)
            }
            var index = start
            while index < items.count {
                let item = items[index]
                if item.sheddable {
                    if state.items.count >= capacity {
                        outcome.shed.append(item.kind)
                        index += 1
                        continue
                    }
                } else if state.items.count >= 2 * capacity {
                    outcome.full = true
                    break
                }
                state.items.append(item)
                index += 1
            }
            outcome.next = index
            guard let taker = state.taker, !state.items.isEmpty else { return (outcome, nil) }
            state.taker = nil
            let batch = state.items
            state.items = []
            return (outcome, (taker, batch))
        }
        if let (taker, batch) = handover { taker.resume(returning: batch) }
        return outcome
    }

    /// Waits until the lane task took the queue (or the lane finished).
    func waitForRoom() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.finished || state.items.count < 2 * capacity { return true }
                state.roomWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Everything queued, in order, waiting while the lane is empty; nil once finished and empty.
    /// One task only.
    func take() async -> [Item]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[Item]?, Never>) in
            let (batch, waiters) = state.withLock { state -> ([Item]?, [CheckedContinuation<Void, Never>]) in
                if state.items.isEmpty {
                    if state.finished { return (nil, []) }
                    state.taker = continuation
                    return ([], [])
                }
                let batch = state.items
                state.items = []
                state.items.reserveCapacity(min(batch.count, capacity))
                defer { state.roomWaiters = [] }
                return (batch, state.roomWaiters)
            }
            for waiter in waiters { waiter.resume() }
            if let batch, batch.isEmpty { return }  // parked: `offer` or `finish` resumes it
            continuation.resume(returning: batch)
        }
    }

    /// Ends the lane: the lane task gets what is queued, then nil; waiting producers go on.
    func finish() {
        let (taker, waiters) = state.withLock { state -> (CheckedContinuation<[Item]?, Never>?, [CheckedContinuation<Void, Never>]) in
            state.finished = true
            defer {
                state.taker = nil
                state.roomWaiters = []
            }
            return (state.taker, state.roomWaiters)
        }
        taker?.resume(returning: nil)
        for waiter in waiters { waiter.resume() }
    }
}
