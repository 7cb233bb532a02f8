/// Telemetry sequence tracking over a 64-wide window below the highest number seen.
///
/// Shared subscriptions spread one device's messages over the gateway nodes round robin, so they
/// reach the owner slightly reordered; a reordered arrival is not a duplicate. Two bitmaps below
/// the highest number: `seen`, and `missing` (numbers skipped when a higher one arrived, counted
/// in `seqGaps`). An arrival below the highest fills its gap (`seqGaps` − 1, `seqOutOfOrder` + 1)
/// if it was missing, is a duplicate if it was seen, and is merely out of order otherwise (it
/// precedes the first number this window saw). A number 64 or more below the highest means the
/// device restarted its numbering (`seqRestarts`; the window starts again there); gaps further
/// back than the window can no longer be filled.
///
/// A birth (new session) may restart the numbering, but it may also reach the owner *after*
/// telemetry it preceded (the two came through different gateway nodes), so it does not reset
/// the window at once: it marks a restart as possible, and the next number decides: 0 or 1
/// (where devices start counting), not above the highest and already seen means the numbering
/// restarted; anything else keeps the window. Counters are never reset.
struct SequenceTracker: Codable, Sendable, Hashable {
    var highest: Int64?
    /// Bit i set: `highest - i` was seen.
    var seen: UInt64 = 0
    /// Bit i set: `highest - i` was skipped and is counted as a gap.
    var missing: UInt64 = 0
    /// A birth arrived since the last number.
    var restartPossible = false

    mutating func reset() {
        highest = nil
        seen = 0
        missing = 0
        restartPossible = false
    }

    /// A birth: the device may have restarted its numbering.
    mutating func sessionStarted() {
        restartPossible = true
    }

    mutating func observe(_ seq: Int64, counters: inout DeviceCounters) {
        if restartPossible {
            restartPossible = false
            if let top = highest, seq <= top, seq <= 1, top - seq < 64, seen & (UInt64(1) << UInt64(top - seq)) != 0 {
                reset()
            }
        }
        guard let top = highest else {
            highest = seq
            seen = 1
            missing = 0
            return
        }
        if seq > top {
            let distance = seq - top
            counters.seqGaps += distance - 1
            if distance >= 64 {
                seen = 1
                missing = ~UInt64(1)
            } else {
                // The skipped numbers sit at bits 1 ..< distance after the shift.
                let skipped = (UInt64(1) << UInt64(distance)) - 2
                seen = (seen << UInt64(distance)) | 1
                missing = (missing << UInt64(distance)) | skipped
            }
            highest = seq
            return
        }
        let distance = top - seq
        guard distance < 64 else {
            counters.seqRestarts += 1
            highest = seq
            seen = 1
            missing = 0
            return
        }
        let bit = UInt64(1) << UInt64(distance)
        if seen & bit != 0 {
            counters.seqDuplicates += 1
            return
        }
        seen |= bit
        counters.seqOutOfOrder += 1
        if missing & bit != 0 {
            missing &= ~bit
            counters.seqGaps -= 1
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
        result.seqRestarts = max(a.seqRestarts, b.seqRestarts)
        result.commandsSent = max(a.commandsSent, b.commandsSent)
        result.commandsAnswered = max(a.commandsAnswered, b.commandsAnswered)
        result.commandsTimedOut = max(a.commandsTimedOut, b.commandsTimedOut)
        result.downlinks = max(a.downlinks, b.downlinks)
        result.desiredPublished = max(a.desiredPublished, b.desiredPublished)
        return result
    }
}
