import Synchronization

/// The device processes on this node with a queued command whose TTL or reply deadline is ahead
/// (``QueuedCommand``), and when each needs attention next. The gateway's sweep takes the due
/// ones every 100 ms and calls ``DeviceProcess/commandDeadlinePassed()``, which sets the next
/// deadline again (or clears it). While nothing is due the sweep's check is one comparison under
/// the lock.
final class CommandTimers<Process: AnyObject & Sendable>: Sendable {
    private struct Table {
        var entries: [String: (process: Process, at: Int64)] = [:]
        /// The earliest deadline in `entries` (`.max` when empty).
        var earliest: Int64 = .max
    }

    private let table = Mutex(Table())

    /// Sets (replaces) `id`'s deadline, in milliseconds since the Unix epoch.
    func set(_ id: String, _ process: Process, at deadline: Int64) {
        table.withLock { table in
            table.entries[id] = (process, deadline)
            table.earliest = min(table.earliest, deadline)
        }
    }

    /// Removes `id`'s deadline if `process` set it.
    func remove(_ id: String, _ process: Process) {
        table.withLock { table in
            if table.entries[id]?.process === process { table.entries[id] = nil }
        }
    }

    /// Takes the processes whose deadline is at or before `now`.
    func takeDue(_ now: Int64) -> [Process] {
        table.withLock { table in
            guard table.earliest <= now else { return [] }
            var due: [Process] = []
            var earliest = Int64.max
            for (id, entry) in table.entries {
                if entry.at <= now {
                    due.append(entry.process)
                    table.entries[id] = nil
                } else {
                    earliest = min(earliest, entry.at)
                }
            }
            table.earliest = earliest
            return due
        }
    }

    var count: Int { table.withLock { $0.entries.count } }
}
