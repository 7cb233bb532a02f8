import Synchronization
import SwarmCore

/// One process's mailbox: every message to the process goes through it, in order, one at a
/// time (each is awaited before the next); a run of casts queued together is handed over in one
/// ``SwarmProcess/receive(casts:)`` (one turn of the process's actor for the run).
///
/// ## Runner on demand
/// An idle mailbox owns no task: it is a lock, an empty queue and two counters. The first
/// message into an idle mailbox starts a runner task, which takes the whole queue at once, feeds
/// it to the process, takes what arrived meanwhile, and ends when the queue is empty. At most one
/// runner exists per mailbox, so order holds. A node hosting a million idle device processes
/// thus holds no million suspended tasks and stream buffers, and a burst of messages to one
/// process costs one wake-up, not one per message.
///
/// ## Bound and overflow policy
/// At most ``capacity`` user messages (casts and calls; default 10,000) wait at once. When full:
/// - a **cast** is dropped and counted (``droppedCasts``; the node logs the first of each burst);
/// - a **call** fails at once (the caller sees an error instead of waiting for its timeout).
/// Control messages (`endHandoff`, `resolveConflict`, handoff and state questions, `stop`) come
/// from the node itself, are few per process, and are never refused while the mailbox is open.
///
/// ## End
/// A `stop` item or a crash (``SwarmProcess/receive(_:)`` throwing) ends the process: the
/// mailbox closes, whatever is still queued is answered as failed (calls fail, questions get
/// their fallback answer), new messages are refused, and `onEnd` runs once with the reason.
/// ``close()`` (node shutdown) refuses new messages; what was queued is still delivered, then
/// `onEnd` runs with ``Ending/closed``.
final class Mailbox: Sendable {
    enum Item: Sendable {
        case cast([UInt8])
        case call([UInt8], reply: @Sendable (Result<[UInt8], SwarmError>) async -> Void)
        /// A question or notice from the node; `dropped` runs instead when the mailbox closes first.
        case control(run: @Sendable (any SwarmProcess) async -> Void, dropped: @Sendable () async -> Void)
        case stop(Tracker.StopReason)
    }

    /// Outcome of ``enqueue(_:)``.
    enum EnqueueResult: Equatable {
        case enqueued
        case full
        case closed
    }

    /// How the process's life ended.
    enum Ending: Sendable {
        case stopped(Tracker.StopReason)
        case crashed(String)
        /// The mailbox was closed by the node (shutdown).
        case closed
    }

    static let defaultCapacity = 10_000

    private struct State {
        /// Items not yet taken by the runner, oldest first.
        var queue: [Item] = []
        /// A runner task exists (or is about to).
        var running = false
        /// New items are accepted.
        var open = true
        /// The process was told its pid (before the first item the runner feeds it).
        var told = false
    }

    /// What the runner takes under the lock.
    private enum Take {
        /// Items to feed; `first`: the process has not been told its pid yet.
        case batch([Item], first: Bool)
        /// Empty and open: the runner ends; the next item starts a new one.
        case idle
        /// Empty and closed: the mailbox's life is over.
        case closedAndEmpty
    }

    let capacity: Int
    /// The process's id, told to it before its first item (``SwarmProcess/started(as:)``).
    let pid: ProcessID?
    private let process: any SwarmProcess
    private let onEnd: @Sendable (Mailbox, Ending) async -> Void
    private let state = Mutex(State())
    private let queuedUserMessages = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)

    /// - Parameter onEnd: runs once, with this mailbox, after the process ended or the closed
    ///   mailbox emptied.
    init(
        capacity: Int = Mailbox.defaultCapacity, pid: ProcessID? = nil, process: any SwarmProcess,
        onEnd: @escaping @Sendable (Mailbox, Ending) async -> Void
    ) {
        self.capacity = capacity
        self.pid = pid
        self.process = process
        self.onEnd = onEnd
    }

    /// Casts dropped because the mailbox was full.
    var droppedCasts: Int { dropped.load(ordering: .relaxed) }

    /// User messages waiting now.
    var depth: Int { queuedUserMessages.load(ordering: .relaxed) }

    /// Queues `item`, applying the bound to casts and calls; starts a runner if none is active.
    func enqueue(_ item: Item) -> EnqueueResult {
        let counted: Bool
        switch item {
        case .cast, .call: counted = true
        case .control, .stop: counted = false
        }
        if counted {
            let waiting = queuedUserMessages.add(1, ordering: .relaxed).newValue
            if waiting > capacity {
                queuedUserMessages.subtract(1, ordering: .relaxed)
                if case .cast = item { dropped.add(1, ordering: .relaxed) }
                return .full
            }
        }
        let (accepted, startRunner) = state.withLock { state -> (Bool, Bool) in
            guard state.open else { return (false, false) }
            state.queue.append(item)
            if state.running { return (true, false) }
            state.running = true
            return (true, true)
        }
        guard accepted else {
            if counted { queuedUserMessages.subtract(1, ordering: .relaxed) }
            return .closed
        }
        if startRunner { startRunnerTask() }
        return .enqueued
    }

    /// Closes the mailbox from outside (node shutdown): nothing new is accepted; what is queued
    /// is still delivered, then `onEnd(.closed)` runs.
    func close() {
        let startRunner = state.withLock { state -> Bool in
            guard state.open else { return false }
            state.open = false
            if state.running { return false }
            state.running = true
            return true
        }
        if startRunner { startRunnerTask() }
    }

    private func startRunnerTask() {
        // Unstructured and detached: the node's task group must not hold one child per busy
        // process (see SwarmNode, "Tasks").
        Task.detached { await self.runQueued() }
    }

    private func take() -> Take {
        state.withLock { state -> Take in
            if !state.queue.isEmpty {
                let batch = state.queue
                state.queue = []
                defer { state.told = true }
                return .batch(batch, first: !state.told)
            }
            if state.open {
                state.running = false
                return .idle
            }
            return .closedAndEmpty
        }
    }

    /// The runner: feeds the process every queued item in order until the queue is empty, the
    /// process ends, or the closed mailbox has emptied.
    private func runQueued() async {
        while true {
            switch take() {
            case .idle:
                return
            case .closedAndEmpty:
                await onEnd(self, .closed)
                return
            case .batch(let batch, let first):
                if first, let pid { await process.started(as: pid) }
                var index = 0
                while index < batch.count {
                    // A run of casts goes to the process in one call (one turn of its actor).
                    var end = index
                    while end < batch.count, case .cast = batch[end] { end += 1 }
                    let ending: Ending?
                    if end - index > 1 {
                        ending = await feed(casts: batch[index..<end])
                    } else {
                        ending = await feed(batch[index])
                        end = index + 1
                    }
                    index = end
                    guard let ending else { continue }
                    // The process ended: refuse what comes next, fail what waits, report once.
                    let leftover = state.withLock { state -> [Item] in
                        state.open = false
                        let rest = state.queue
                        state.queue = []
                        return rest
                    }
                    for item in batch[index...] { await fail(item) }
                    for item in leftover { await fail(item) }
                    await onEnd(self, ending)
                    return
                }
            }
        }
    }

    /// Delivers a run of casts in one ``SwarmProcess/receive(casts:)``; how the process ended if
    /// it did (the casts after the one that threw are not delivered).
    private func feed(casts run: ArraySlice<Item>) async -> Ending? {
        var casts: [[UInt8]] = []
        casts.reserveCapacity(run.count)
        for item in run {
            if case .cast(let bytes) = item { casts.append(bytes) }
        }
        queuedUserMessages.subtract(casts.count, ordering: .relaxed)
        do {
            try await process.receive(casts: casts)
        } catch {
            return .crashed("\(error)")
        }
        return nil
    }

    /// Delivers one item; returns how the process ended if it did.
    private func feed(_ item: Item) async -> Ending? {
        switch item {
        case .cast(let bytes):
            queuedUserMessages.subtract(1, ordering: .relaxed)
            do {
                try await process.receive(bytes)
            } catch {
                return .crashed("\(error)")
            }
        case .call(let bytes, let reply):
            queuedUserMessages.subtract(1, ordering: .relaxed)
            do {
                await reply(.success(try await process.call(bytes)))
            } catch let error as SwarmError {
                await reply(.failure(error))
            } catch {
                await reply(.failure(SwarmError.callFailed("\(error)")))
            }
        case .control(let run, _):
            await run(process)
        case .stop(let reason):
            await process.stop(reason: reason)
            return .stopped(reason)
        }
        return nil
    }

    /// Answers an item the ended process will never see.
    private func fail(_ item: Item) async {
        switch item {
        case .cast:
            queuedUserMessages.subtract(1, ordering: .relaxed)
        case .call(_, let reply):
            queuedUserMessages.subtract(1, ordering: .relaxed)
            await reply(.failure(SwarmError.callFailed("process ended")))
        case .control(_, let dropped):
            await dropped()
        case .stop:
            break
        }
    }
}
