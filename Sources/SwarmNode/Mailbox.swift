import Synchronization
import SwarmCore

/// One process's mailbox: every message to the process goes through it, in order, consumed by
/// one task (``run(process:)``) that awaits each message before taking the next.
///
/// ## Bound and overflow policy
/// At most ``capacity`` user messages (casts and calls; default 10,000) wait at once. When full:
/// - a **cast** is dropped and counted (``droppedCasts``; the node logs the first of each burst);
/// - a **call** fails at once (the caller sees an error instead of waiting for its timeout).
/// Control messages (`endHandoff`, `resolveConflict`, handoff and state questions, `stop`) come
/// from the node itself, are few per process, and are never refused while the mailbox is open.
///
/// After a stop (or a crash) the mailbox closes: what is still queued is answered as failed
/// (calls fail, questions get their fallback answer) and new messages are refused.
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

    static let defaultCapacity = 10_000

    let capacity: Int
    private let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let queuedUserMessages = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)

    init(capacity: Int = Mailbox.defaultCapacity) {
        self.capacity = capacity
        (self.stream, self.continuation) = AsyncStream.makeStream(of: Item.self, bufferingPolicy: .unbounded)
    }

    /// Casts dropped because the mailbox was full.
    var droppedCasts: Int { dropped.load(ordering: .relaxed) }

    /// User messages waiting now.
    var depth: Int { queuedUserMessages.load(ordering: .relaxed) }

    /// Queues `item`, applying the bound to casts and calls.
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
        switch continuation.yield(item) {
        case .enqueued, .dropped:
            return .enqueued
        case .terminated:
            if counted { queuedUserMessages.subtract(1, ordering: .relaxed) }
            return .closed
        @unknown default:
            return .closed
        }
    }

    /// Closes the mailbox from outside (node shutdown): the runner finishes what it holds as failed.
    func close() { continuation.finish() }

    /// How the process's life ended.
    enum Ending: Sendable {
        case stopped(Tracker.StopReason)
        case crashed(String)
        /// The mailbox was closed by the node (shutdown).
        case closed
    }

    /// Feeds `process` every message in order until a stop, a crash or ``close()``; then fails
    /// whatever is left. Returns how it ended.
    func run(process: any SwarmProcess) async -> Ending {
        var iterator = stream.makeAsyncIterator()
        var ending = Ending.closed
        loop: while let item = await iterator.next() {
            switch item {
            case .cast(let bytes):
                queuedUserMessages.subtract(1, ordering: .relaxed)
                do {
                    try await process.receive(bytes)
                } catch {
                    ending = .crashed("\(error)")
                    break loop
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
                ending = .stopped(reason)
                break loop
            }
        }
        continuation.finish()
        while let item = await iterator.next() {
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
        return ending
    }
}
