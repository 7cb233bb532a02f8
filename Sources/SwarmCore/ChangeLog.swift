/// The bounded log of a node's own registry changes, kept so peers that missed some can catch
/// up from their position. Older positions get a snapshot instead.
public struct ChangeLog: Sendable {
    public let capacity: Int
    private var storage: [SequencedChange] = []
    private var head = 0
    /// Sequence number of the newest change (0 before the first).
    public private(set) var lastSeq: UInt64 = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "change log capacity must be positive")
        self.capacity = capacity
        storage.reserveCapacity(min(capacity, 4096))
    }

    /// Appends `change` as the next sequence number and returns it numbered.
    public mutating func append(_ change: RegistryChange) -> SequencedChange {
        lastSeq += 1
        let numbered = SequencedChange(seq: lastSeq, change: change)
        if storage.count < capacity {
            storage.append(numbered)
        } else {
            storage[head] = numbered
            head = (head + 1) % capacity
        }
        return numbered
    }

    /// The oldest sequence number still held (lastSeq + 1 when empty).
    public var firstSeq: UInt64 { lastSeq + 1 - UInt64(storage.count) }

    /// Every change after `seq`, or nil when the log no longer reaches back that far.
    public func changes(after seq: UInt64) -> [SequencedChange]? {
        if seq >= lastSeq { return [] }
        guard seq + 1 >= firstSeq, seq > 0 || firstSeq == 1 else { return nil }
        let skip = Int(seq + 1 - firstSeq)
        let total = storage.count - skip
        var result: [SequencedChange] = []
        result.reserveCapacity(total)
        for i in 0..<total {
            result.append(storage[(head + skip + i) % storage.count])
        }
        return result
    }
}

/// A set that forgets its oldest members beyond `capacity` (idempotence memories).
struct BoundedMemory<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    let capacity: Int
    private var values: [Key: Value] = [:]
    private var order: [Key] = []
    private var head = 0

    init(capacity: Int) { self.capacity = capacity }

    subscript(key: Key) -> Value? { values[key] }

    mutating func remember(_ key: Key, _ value: Value) {
        if values.updateValue(value, forKey: key) != nil { return }
        if order.count < capacity {
            order.append(key)
        } else {
            values[order[head]] = nil
            order[head] = key
            head = (head + 1) % capacity
        }
    }

    var count: Int { values.count }
}
