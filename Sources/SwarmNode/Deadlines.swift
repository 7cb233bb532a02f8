import Synchronization

/// Every deadline of a node (call timeouts, factory-start and handoff-question timeouts) in one
/// structure, served by one sweeper task: no sleeping task per deadline.
///
/// Why: a task per deadline (a child of the node's task group, sleeping for 5 s) made every call
/// cost a task creation and, worse, a removal from a task group holding thousands of children;
/// the removal walks the group's child list, so the cost grew with the number of live tasks
/// (quadratic under load; the profile showed 83–98 % of CPU there).
///
/// Layout: deadlines with the same duration arrive in deadline order, so each distinct duration
/// has a FIFO queue; the sweeper pops expired fronts. Nothing is removed early: a call that
/// completes leaves its entry behind, and expiring it later finds nothing to fail (cheap). The
/// resolution is ``resolution`` (a deadline fires at most that much late).
final class Deadlines: Sendable {
    enum Action: Sendable {
        /// Fail the call with this id (if it is still waiting) with `SwarmError.timeout`.
        case call(UInt64)
        /// Fail the multi-call collector with this id: count what has not answered.
        case collector(UInt64)
        /// Run a closure (nonisolated, cheap: resumes a continuation).
        case run(@Sendable () -> Void)

        /// The call id of a `.call` action (tests).
        var callID: UInt64? {
            if case .call(let id) = self { return id }
            return nil
        }
    }

    private struct Entry {
        // (deadline first: entries of one queue are in deadline order)
        var deadline: ContinuousClock.Instant
        var action: Action
    }

    private struct Queue {
        var entries: [Entry] = []
        var head = 0

        var front: Entry? { head < entries.count ? entries[head] : nil }

        mutating func popFront() {
            head += 1
            if head >= 4096, head * 2 >= entries.count {
                entries.removeFirst(head)
                head = 0
            }
        }
    }

    static let resolution: Duration = .milliseconds(5)
    /// The sweeper's beat while nothing waits.
    static let idleResolution: Duration = .milliseconds(25)

    private let queues = Mutex<[Duration: Queue]>([:])

    /// Adds a deadline `after` from now.
    func add(after: Duration, _ action: Action) {
        let deadline = ContinuousClock.now + after
        queues.withLock { queues in
            queues[after, default: Queue()].entries.append(Entry(deadline: deadline, action: action))
        }
    }

    /// Removes and returns every action whose deadline has passed.
    func expired(now: ContinuousClock.Instant = .now) -> [Action] {
        queues.withLock { queues in
            var due: [Action] = []
            for key in Array(queues.keys) {
                while let front = queues[key]!.front, front.deadline <= now {
                    due.append(front.action)
                    queues[key]!.popFront()
                }
                if queues[key]!.front == nil { queues[key] = nil }
            }
            return due
        }
    }

    var isEmpty: Bool { queues.withLock { $0.isEmpty } }

    /// Waiting deadlines (tests, logs).
    var count: Int {
        queues.withLock { $0.values.reduce(0) { $0 + $1.entries.count - $1.head } }
    }
}
