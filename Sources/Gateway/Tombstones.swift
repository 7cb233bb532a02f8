import Synchronization

/// Devices deleted in the last ``retention``, on this node: their messages are dropped at ingress
/// (a deleted device's will, or a message in flight when it was deleted, must not bring it back),
/// and the device factory refuses to start them. Every gateway node gets every deletion (the
/// coordinator casts it to each node's ``GatewayNodeProcess`` and waits); provisioning the device
/// again clears it everywhere. The check on the ingress path is one atomic load while the table
/// is empty.
final class Tombstones: Sendable {
    /// How long a deleted device stays refused. Default 60 s.
    let retention: Duration
    private let table = Mutex<[String: ContinuousClock.Instant]>([:])
    private let count = Atomic<Int>(0)

    init(retention: Duration = .seconds(60)) {
        self.retention = retention
    }

    func insert(_ id: String) {
        table.withLock { table in
            table[id] = .now + retention
            count.store(table.count, ordering: .relaxed)
        }
    }

    func remove(_ id: String) {
        table.withLock { table in
            table[id] = nil
            count.store(table.count, ordering: .relaxed)
        }
    }

    /// True while `id` is a recent deletion.
    func contains(_ id: String) -> Bool {
        guard count.load(ordering: .relaxed) > 0 else { return false }
        return table.withLock { table in
            guard let until = table[id] else { return false }
            if until > .now { return true }
            table[id] = nil
            // Expired ones go when looked up, and all of them when the table is swept.
            let now = ContinuousClock.now
            table = table.filter { $0.value > now }
            count.store(table.count, ordering: .relaxed)
            return false
        }
    }
}
