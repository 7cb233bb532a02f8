import Synchronization

/// One ordered ingress lane of a ``DeviceGateway``, bounded, with the overload policy.
///
/// The broker consumer ``offer(_:)``s validated messages; the lane's task ``take()``s everything
/// queued at once (a batch) and routes it in order. The bound is ``capacity`` items:
///
/// - **telemetry** is queued only while the lane holds fewer than `capacity` items; otherwise it
///   is shed (``Offer/shed``): counted, logged rate-limited, never queued. The newest reading is
///   the one dropped, so what is queued keeps its order; the next one taken refreshes the twin.
/// - **status** (birth, will, offline) and **reported** state are never shed: they are queued
///   while the lane holds fewer than `2 × capacity` items, so a lane full of telemetry always has
///   `capacity` places left for them. Beyond that, ``offer(_:)`` answers ``Offer/full`` and the
///   broker consumer waits in ``waitForRoom()`` until the lane task takes the queue: the wait
///   holds up reading from the broker (backpressure through the MQTT client and TCP), and the
///   message is then queued, not dropped.
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
        let (outcome, taker) = state.withLock { state -> (Offer, CheckedContinuation<[Item]?, Never>?) in
            guard !state.finished else { return (.closed, nil) }
            let limit = item.kind == .telemetry ? capacity : 2 * capacity
            guard state.items.count < limit else { return (item.kind == .telemetry ? .shed : .full, nil) }
            if let taker = state.taker {
                state.taker = nil
                return (.queued, taker)
            }
            state.items.append(item)
            return (.queued, nil)
        }
        taker?.resume(returning: [item])
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
