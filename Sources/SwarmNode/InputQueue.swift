import Synchronization

/// The node's input queue: producers on any thread (the transport's event loops, timers, the
/// shutdown handler) append; the node's input loop takes everything queued at once and applies
/// it in one actor turn, so a burst of frames costs one wake-up of the node, not one per frame.
/// Unbounded, like the stream it replaced: what bounds it is the transport (frames are read only
/// as fast as the node takes them from here).
final class InputQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var taker: CheckedContinuation<[Element]?, Never>?
        var finished = false
    }

    private let state = Mutex(State())

    /// Appends `element`; false once finished (dropped).
    @discardableResult
    func yield(_ element: Element) -> Bool {
        yield(contentsOf: CollectionOfOne(element))
    }

    /// Appends `elements` in order under one lock, with at most one wake-up; false once finished.
    @discardableResult
    func yield(contentsOf elements: some Collection<Element>) -> Bool {
        guard !elements.isEmpty else { return true }
        let (accepted, handover) = state.withLock { state -> (Bool, (CheckedContinuation<[Element]?, Never>, [Element])?) in
            guard !state.finished else { return (false, nil) }
            if let taker = state.taker {
                state.taker = nil
                return (true, (taker, Array(elements)))
            }
            state.items.append(contentsOf: elements)
            return (true, nil)
        }
        if let (taker, batch) = handover { taker.resume(returning: batch) }
        return accepted
    }

    /// Everything queued, oldest first, waiting while nothing is; nil once finished and empty.
    /// One consumer.
    func next() async -> [Element]? {
        await withCheckedContinuation { (continuation: CheckedContinuation<[Element]?, Never>) in
            let batch = state.withLock { state -> [Element]? in
                if state.items.isEmpty {
                    if state.finished { return nil }
                    state.taker = continuation
                    return []
                }
                defer { state.items = [] }
                return state.items
            }
            if let batch, batch.isEmpty { return }  // parked: `yield` or `finish` resumes it
            continuation.resume(returning: batch)
        }
    }

    /// Ends the queue: the consumer gets what is queued, then nil; later elements are dropped.
    func finish() {
        let taker = state.withLock { state -> CheckedContinuation<[Element]?, Never>? in
            state.finished = true
            defer { state.taker = nil }
            return state.taker
        }
        taker?.resume(returning: nil)
    }
}
