/// Telemetry sequence tracking over a 64-wide window below the highest number seen.
///
/// Shared subscriptions spread one device's messages over the gateway nodes round robin, so they
/// reach the owner slightly reordered; a reordered arrival is not a duplicate. A number above the
/// highest opens gaps for the numbers skipped; a number inside the window fills its gap (counted
/// as out of order) or, if already seen, is a duplicate; a number further behind is `late`.
/// A birth resets the window (devices restart their numbering), never the counters.
struct SequenceTracker: Codable, Sendable, Hashable {
    var highest: Int64?
    /// Bit i set: `highest - i` was seen.
    var window: UInt64 = 0

    mutating func reset() {
        highest = nil
        window = 0
    }

    mutating func observe(_ seq: Int64, counters: inout DeviceCounters) {
        guard let top = highest else {
            highest = seq
            window = 1
            return
        }
        if seq > top {
            let distance = seq - top
            counters.seqGaps += distance - 1
            window = distance >= 64 ? 1 : (window << UInt64(distance)) | 1
            highest = seq
        } else {
            let distance = top - seq
            guard distance < 64 else {
                counters.seqLate += 1
                return
            }
            let bit = UInt64(1) << UInt64(distance)
            if window & bit != 0 {
                counters.seqDuplicates += 1
            } else {
                window |= bit
                counters.seqGaps -= 1
                counters.seqOutOfOrder += 1
            }
        }
    }

    /// True when `seq` is at or above the highest number seen (its values are the newest).
    func isNewest(_ seq: Int64) -> Bool { highest.map { seq >= $0 } ?? true }
}

/// Everything a device process knows: what handoff, checkpoints and conflicts carry (as JSON).
struct DeviceState: Codable, Sendable, Hashable {
    var id: String
    var online = false
    /// Ingress time of the last applied status message (older ones are ignored: the birth and
    /// the will of one device may reach the owner through different nodes, out of order).
    var statusAt: Int64 = 0
    var connectedAt: Int64?
    var lastSeen: Int64?
    var metadata: [String: JSONValue] = [:]
    /// Device groups (without the Swarm prefix), always including `all`.
    var groups: Set<String> = ["all"]
    var telemetry: [String: JSONValue] = [:]
    var sequence = SequenceTracker()
    var reported: JSONValue = .emptyObject
    var desired: JSONValue = .emptyObject
    var version: Int64 = 0
    var broker: String?
    var counters = DeviceCounters()

    init(id: String) { self.id = id }

    func twin(node: String) -> DeviceTwin {
        DeviceTwin(
            id: id, online: online, node: node, groups: groups.sorted(), metadata: metadata, telemetry: telemetry,
            reported: reported, desired: desired, delta: JSONValue.delta(desired: desired, reported: reported),
            version: version, lastSeen: lastSeen.map(Timestamp.iso), connectedAt: connectedAt.map(Timestamp.iso),
            broker: broker, counters: counters)
    }

    /// Merges what a conflicting copy knew into this one (SPEC A6 `resolveConflict`): the newer
    /// presence, the newer desired version, the union of groups, the larger counters, and the
    /// reported state and telemetry of the copy seen last.
    mutating func merge(_ other: DeviceState) {
        let otherIsNewer = (other.lastSeen ?? 0) > (lastSeen ?? 0)
        if other.statusAt > statusAt {
            online = other.online
            statusAt = other.statusAt
            connectedAt = other.connectedAt
            metadata = other.metadata
        }
        if otherIsNewer {
            lastSeen = other.lastSeen
            telemetry = other.telemetry
            sequence = other.sequence
            reported = other.reported
            broker = other.broker ?? broker
        }
        if other.version > version {
            version = other.version
            desired = other.desired
        }
        groups.formUnion(other.groups)
        counters = DeviceCounters.maximum(counters, other.counters)
    }
}

extension DeviceCounters {
    static func maximum(_ a: DeviceCounters, _ b: DeviceCounters) -> DeviceCounters {
        var result = DeviceCounters()
        result.messages = max(a.messages, b.messages)
        result.telemetry = max(a.telemetry, b.telemetry)
        result.reportedUpdates = max(a.reportedUpdates, b.reportedUpdates)
        result.statusChanges = max(a.statusChanges, b.statusChanges)
        result.seqGaps = max(a.seqGaps, b.seqGaps)
        result.seqDuplicates = max(a.seqDuplicates, b.seqDuplicates)
        result.seqOutOfOrder = max(a.seqOutOfOrder, b.seqOutOfOrder)
        result.seqLate = max(a.seqLate, b.seqLate)
        result.commandsSent = max(a.commandsSent, b.commandsSent)
        result.commandsAnswered = max(a.commandsAnswered, b.commandsAnswered)
        result.commandsTimedOut = max(a.commandsTimedOut, b.commandsTimedOut)
        result.downlinks = max(a.downlinks, b.downlinks)
        result.desiredPublished = max(a.desiredPublished, b.desiredPublished)
        return result
    }
}
