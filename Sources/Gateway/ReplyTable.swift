import Synchronization

/// Pending command replies keyed by correlation data. A reply may arrive before its waiter is
/// parked (the device can be faster than the publishing task), so a slot keeps it until then.
final class ReplyTable: Sendable {
    private enum Slot {
        case open
        case waiting(CheckedContinuation<[UInt8], any Error>)
        case arrived([UInt8])
    }

    private let slots = Mutex<[[UInt8]: Slot]>([:])

    /// Opens a slot before the command is published.
    func open(_ key: [UInt8]) {
        slots.withLock { $0[key] = .open }
    }

    /// Waits for the reply of an open slot (throws `failure` if the slot is gone).
    func wait(_ key: [UInt8], failure: any Error) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            let early: Result<[UInt8], any Error>? = slots.withLock { table in
                switch table[key] {
                case .open:
                    table[key] = .waiting(continuation)
                    return nil
                case .arrived(let bytes):
                    table[key] = nil
                    return .success(bytes)
                case .waiting, nil:
                    return .failure(failure)
                }
            }
            if let early { continuation.resume(with: early) }
        }
    }

    /// Delivers a reply; false when no command waits for this correlation data.
    func deliver(_ key: [UInt8], _ bytes: [UInt8]) -> Bool {
        let waiter: CheckedContinuation<[UInt8], any Error>?? = slots.withLock { table in
            switch table[key] {
            case .open:
                table[key] = .arrived(bytes)
                return .some(nil)
            case .waiting(let continuation):
                table[key] = nil
                return .some(continuation)
            case .arrived, nil:
                return nil
            }
        }
        guard let waiter else { return false }
        waiter?.resume(returning: bytes)
        return true
    }

    /// Closes a slot (timeout, publish failure, shutdown), failing its waiter.
    func fail(_ key: [UInt8], _ error: any Error) {
        let waiter: CheckedContinuation<[UInt8], any Error>? = slots.withLock { table in
            defer { table[key] = nil }
            if case .waiting(let continuation) = table[key] { return continuation }
            return nil
        }
        waiter?.resume(throwing: error)
    }

    /// Fails every slot.
    func failAll(_ error: any Error) {
        let waiters: [CheckedContinuation<[UInt8], any Error>] = slots.withLock { table in
            defer { table = [:] }
            return table.values.compactMap { if case .waiting(let continuation) = $0 { return continuation } else { return nil } }
        }
        for waiter in waiters { waiter.resume(throwing: error) }
    }

    var count: Int { slots.withLock { $0.count } }
}
