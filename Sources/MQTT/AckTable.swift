/// Matches libmosquitto acknowledgement callbacks (PUBACK / publish written, SUBACK, UNSUBACK) to
/// the Swift callers waiting for them, by message id.
///
/// The message id is only known after the C call returns, and on loopback the acknowledgement can
/// reach the network thread before the caller has registered. Every id therefore meets exactly
/// once: whichever of "callback" and "caller registers (or declares it will not wait)" comes second
/// removes the entry, so nothing accumulates. Entries whose acknowledgement can never come (QoS 0
/// and SUBSCRIBE/UNSUBSCRIBE when the connection drops) are dropped on disconnect; QoS 1/2 publishes
/// survive, because libmosquitto resends them with the same id after reconnecting.
///
/// A value type used only inside `CallbackContext`'s mutex.
struct AckTable {
    typealias Waiter = CheckedContinuation<Int32, any Error>

    private enum Entry {
        /// A caller waits for this id.
        case waiting(Waiter, survivesReconnect: Bool)
        /// The acknowledgement came before the caller registered.
        case arrived(reasonCode: Int32)
        /// Nobody will wait for this id (fire-and-forget, a renewal after reconnect, or a caller
        /// that timed out); drop the acknowledgement when it comes.
        case ignored(survivesReconnect: Bool)
    }

    private var entries: [Int32: Entry] = [:]

    /// Number of entries, for tests and metrics.
    var count: Int { entries.count }

    /// The network thread acknowledged `mid`. Returns the waiter to resume (outside the lock).
    mutating func acknowledge(_ mid: Int32, reasonCode: Int32) -> Waiter? {
        switch entries[mid] {
        case .waiting(let waiter, _):
            entries[mid] = nil
            return waiter
        case .ignored:
            entries[mid] = nil
            return nil
        case .arrived, nil:
            entries[mid] = .arrived(reasonCode: reasonCode)
            return nil
        }
    }

    /// A caller waits for `mid`. Returns the reason code if the acknowledgement already arrived.
    mutating func register(_ mid: Int32, waiter: Waiter, survivesReconnect: Bool) -> Int32? {
        if case .arrived(let reasonCode) = entries[mid] {
            entries[mid] = nil
            return reasonCode
        }
        // A stale `.ignored` entry for a reused id (ids wrap at 65535) is replaced.
        entries[mid] = .waiting(waiter, survivesReconnect: survivesReconnect)
        return nil
    }

    /// Nobody will wait for `mid`.
    mutating func ignore(_ mid: Int32, survivesReconnect: Bool) {
        if case .arrived = entries[mid] {
            entries[mid] = nil
        } else {
            entries[mid] = .ignored(survivesReconnect: survivesReconnect)
        }
    }

    /// The caller waiting for `mid` gave up (cancelled or timed out). Returns its waiter.
    mutating func abandon(_ mid: Int32) -> Waiter? {
        guard case .waiting(let waiter, let survives) = entries[mid] else { return nil }
        entries[mid] = .ignored(survivesReconnect: survives)
        return waiter
    }

    /// The connection dropped: returns the waiters whose acknowledgement can no longer come.
    mutating func connectionLost() -> [Waiter] {
        var failed: [Waiter] = []
        for (mid, entry) in entries {
            switch entry {
            case .waiting(let waiter, let survives) where !survives:
                failed.append(waiter)
                entries[mid] = nil
            case .ignored(let survives) where !survives:
                entries[mid] = nil
            default:
                break
            }
        }
        return failed
    }

    /// The client closed: returns every waiter and forgets everything.
    mutating func removeAll() -> [Waiter] {
        let waiters = entries.values.compactMap { entry -> Waiter? in
            if case .waiting(let waiter, _) = entry { return waiter }
            return nil
        }
        entries = [:]
        return waiters
    }
}
