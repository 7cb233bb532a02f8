import Foundation
import SwarmJSON
/// Telemetry sequence tracking over a window of ``SequenceTracker/windowSize`` numbers below the
/// highest one seen.
///
/// Shared subscriptions spread one device's messages over the gateway nodes round robin, so they
/// reach the owner reordered, by hundreds of positions during a burst (one node's ingress lags
/// another's); a reordered arrival is not a duplicate. Two bitmaps below the highest number:
/// `seen`, and `missing` (numbers skipped when a higher one arrived, counted in `seqGaps`). An
/// arrival below the highest fills its gap (`seqGaps` − 1, `seqOutOfOrder` + 1) if it was
/// missing, is a duplicate if it was seen, and is merely out of order otherwise (it precedes the
/// first number this window saw). An arrival further back than the window is counted in
/// `seqLate` and changes nothing (its gap, if it was one, stays counted).
///
/// Restarts: a device that restarts reconnects and sends a birth. The birth may reach the owner
/// *after* telemetry it preceded (the two came through different gateway nodes), so it does not
/// reset the window by itself: it marks a restart as possible, and the next number decides: 0 or
/// 1 (where devices start counting), not above the highest and already seen means the numbering
/// restarted and the window starts again there; anything else keeps the window. Counters are never
/// reset.
struct SequenceTracker: Codable, Sendable, Hashable {
    /// Numbers tracked below the highest.
    static let windowSize = 1024

    var highest: Int64?
    /// Bit i set: `highest - i` was seen.
    var seen = BitWindow()
    /// Bit i set: `highest - i` was skipped and is counted as a gap.
    var missing = BitWindow()
    /// A birth arrived since the last number.
    var restartPossible = false

    mutating func reset() {
        highest = nil
        seen = BitWindow()
        missing = BitWindow()
        restartPossible = false
    }

    /// A birth: the device may have restarted its numbering.
    mutating func sessionStarted() {
        restartPossible = true
    }

    /// Any `Int64` is accepted (a device's `seq` is untrusted input): distances between numbers
    /// are computed as `UInt64` (`a &- b` reinterpreted is exact when `a >= b`), and `seqGaps`
    /// saturates, so extreme or negative numbers never overflow.
    mutating func observe(_ seq: Int64, counters: inout DeviceCounters) {
        if restartPossible {
            restartPossible = false
            if let top = highest, seq <= top, seq <= 1, Self.distance(from: seq, to: top) < Self.windowSize,
                seen[Int(Self.distance(from: seq, to: top))]
            {
                reset()
            }
        }
        guard let top = highest else {
            highest = seq
            seen = BitWindow()
            seen[0] = true
            missing = BitWindow()
            return
        }
        if seq > top {
            let distance = Self.distance(from: top, to: seq)
            let (gaps, overflow) = counters.seqGaps.addingReportingOverflow(Int64(clamping: distance - 1))
            counters.seqGaps = overflow ? .max : gaps
            let shift = Int(min(distance, UInt64(Self.windowSize)))
            seen.shift(by: shift)
            missing.shift(by: shift)
            seen[0] = true
            missing.set(1..<shift)
            highest = seq
            return
        }
        let distance = Self.distance(from: seq, to: top)
        guard distance < Self.windowSize else {
            counters.seqLate += 1
            return
        }
        let bit = Int(distance)
        if seen[bit] {
            counters.seqDuplicates += 1
            return
        }
        seen[bit] = true
        counters.seqOutOfOrder += 1
        if missing[bit] {
            missing[bit] = false
            counters.seqGaps -= 1
        }
    }

    /// `upper - lower` for `lower <= upper`, exact over the whole `Int64` range.
    static func distance(from lower: Int64, to upper: Int64) -> UInt64 {
        UInt64(bitPattern: upper &- lower)
    }

    /// True when `seq` is at or above the highest number seen (its values are the newest).
    func isNewest(_ seq: Int64) -> Bool { highest.map { seq >= $0 } ?? true }
}

/// A fixed window of ``SequenceTracker/windowSize`` bits; bit 0 is the newest position.
///
/// Coded as `{"words": [Int64…]}`, each word's bit pattern as a signed integer: JSON readers keep
/// integers exactly only up to `Int64.max` (``JSONValueDecoder``). Words written by earlier
/// builds as unsigned integers are still read.
struct BitWindow: Codable, Sendable, Hashable {
    var words = [UInt64](repeating: 0, count: SequenceTracker.windowSize / 64)

    init() {}

    enum CodingKeys: String, CodingKey {
        case words
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let decoded: [UInt64]
        if let signed = try? container.decode([Int64].self, forKey: .words) {
            decoded = signed.map { UInt64(bitPattern: $0) }
        } else {
            decoded = try container.decode([UInt64].self, forKey: .words)
        }
        guard decoded.count == SequenceTracker.windowSize / 64 else {
            throw DecodingError.dataCorruptedError(forKey: .words, in: container, debugDescription: "a window has \(SequenceTracker.windowSize / 64) words, not \(decoded.count)")
        }
        words = decoded
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(words.map { Int64(bitPattern: $0) }, forKey: .words)
    }

    subscript(index: Int) -> Bool {
        get { words[index / 64] & (1 << UInt64(index % 64)) != 0 }
        set {
            if newValue {
                words[index / 64] |= 1 << UInt64(index % 64)
            } else {
                words[index / 64] &= ~(1 << UInt64(index % 64))
            }
        }
    }

    /// Moves every bit `count` positions older; bits past the end drop.
    mutating func shift(by count: Int) {
        guard count > 0 else { return }
        let wordShift = count / 64
        let bitShift = UInt64(count % 64)
        var shifted = [UInt64](repeating: 0, count: words.count)
        for index in stride(from: words.count - 1, through: wordShift, by: -1) {
            var value = words[index - wordShift] << bitShift
            if bitShift > 0 && index - wordShift - 1 >= 0 {
                value |= words[index - wordShift - 1] >> (64 - bitShift)
            }
            shifted[index] = value
        }
        words = shifted
    }

    /// Sets the bits in `range` (clipped to the window).
    mutating func set(_ range: Range<Int>) {
        for index in range.clamped(to: 0..<SequenceTracker.windowSize) { self[index] = true }
    }
}

/// Everything a device process knows: what handoff, checkpoints and conflicts carry (as JSON).
///
/// The one source of what a twin is: presence, metadata, groups, telemetry, the reported state
/// with its version and per-leaf change times, the desired state with its version and times, the
/// backend-only tags. Fields added later decode with their defaults from older checkpoints.
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
    /// Backend-only attributes (`PATCH /v1/devices/{id}/tags`, provisioning); never sent to the
    /// device.
    var tags: [String: JSONValue] = [:]
    /// When the tags last changed (ms; the conflict merge keeps the newer tags).
    var tagsAt: Int64 = 0
    /// +1 at every change of ``reported``.
    var reportedVersion: Int64 = 0
    /// The time of the last change at every leaf of ``reported`` / ``desired`` (``LeafTimes``).
    var reportedTimes: JSONValue = .emptyObject
    var desiredTimes: JSONValue = .emptyObject
    /// The desired version last published to the device (retained): a process restored with a
    /// higher ``version`` publishes it again (the host may have died between its acknowledged
    /// checkpoint and the publish).
    var publishedVersion: Int64 = 0
    /// Commands queued with a TTL (``QueuedCommand``), oldest first: the pending ones and the
    /// last finished ones.
    var commands: [QueuedCommand] = []
    /// The revision of the last stored write of this state (``Revision``, a hybrid logical clock
    /// in microseconds): strictly increasing along the device's history, which handoffs,
    /// checkpoints and the store carry from node to node. 0 before the first write.
    var revision: Int64 = 0
    /// The revision of the first stored write of this device's history: two copies with the same
    /// `born` are one history (the higher ``revision`` is the newer copy), two with different
    /// ones are histories that started apart (a process created before its stored row reached it
    /// after a full restart) and are merged. 0 before the first write.
    var born: Int64 = 0
    /// The `seq` of the last event this device emitted (docs/gateway.md, “Events”): the next is one more, so the
    /// numbering continues across handoff, crash and restart.
    var eventSeq: Int64 = 0
    /// The time of that event (µs): the next event's time is later (``EventHub``).
    var eventTime: Int64 = 0

    init(id: String) { self.id = id }

    enum CodingKeys: String, CodingKey {
        case id, online, statusAt, connectedAt, lastSeen, metadata, groups, telemetry, sequence, reported, desired, version, broker
        case counters, tags, tagsAt, reportedVersion, reportedTimes, desiredTimes, publishedVersion
        case commands
        case revision, born
        case eventSeq, eventTime
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        online = try c.decodeIfPresent(Bool.self, forKey: .online) ?? false
        statusAt = try c.decodeIfPresent(Int64.self, forKey: .statusAt) ?? 0
        connectedAt = try c.decodeIfPresent(Int64.self, forKey: .connectedAt)
        lastSeen = try c.decodeIfPresent(Int64.self, forKey: .lastSeen)
        metadata = try c.decodeIfPresent([String: JSONValue].self, forKey: .metadata) ?? [:]
        groups = try c.decodeIfPresent(Set<String>.self, forKey: .groups) ?? ["all"]
        telemetry = try c.decodeIfPresent([String: JSONValue].self, forKey: .telemetry) ?? [:]
        sequence = try c.decodeIfPresent(SequenceTracker.self, forKey: .sequence) ?? SequenceTracker()
        reported = try c.decodeIfPresent(JSONValue.self, forKey: .reported) ?? .emptyObject
        desired = try c.decodeIfPresent(JSONValue.self, forKey: .desired) ?? .emptyObject
        version = try c.decodeIfPresent(Int64.self, forKey: .version) ?? 0
        broker = try c.decodeIfPresent(String.self, forKey: .broker)
        counters = try c.decodeIfPresent(DeviceCounters.self, forKey: .counters) ?? DeviceCounters()
        tags = try c.decodeIfPresent([String: JSONValue].self, forKey: .tags) ?? [:]
        tagsAt = try c.decodeIfPresent(Int64.self, forKey: .tagsAt) ?? 0
        reportedVersion = try c.decodeIfPresent(Int64.self, forKey: .reportedVersion) ?? 0
        reportedTimes = try c.decodeIfPresent(JSONValue.self, forKey: .reportedTimes) ?? .emptyObject
        desiredTimes = try c.decodeIfPresent(JSONValue.self, forKey: .desiredTimes) ?? .emptyObject
        publishedVersion = try c.decodeIfPresent(Int64.self, forKey: .publishedVersion) ?? version
        commands = try c.decodeIfPresent([QueuedCommand].self, forKey: .commands) ?? []
        revision = try c.decodeIfPresent(Int64.self, forKey: .revision) ?? 0
        born = try c.decodeIfPresent(Int64.self, forKey: .born) ?? 0
        eventSeq = try c.decodeIfPresent(Int64.self, forKey: .eventSeq) ?? 0
        eventTime = try c.decodeIfPresent(Int64.self, forKey: .eventTime) ?? 0
    }

    // MARK: Backend writes

    /// Applies a merge patch to the desired state at `at` (ms): the version goes up by one (every
    /// patch, as devices accept a version above the one they applied), changed leaves get `at`.
    mutating func patchDesired(_ patch: JSONValue, at: Int64) {
        let before = desired
        desired = desired.mergePatched(with: patch)
        if desired.objectValue == nil { desired = .emptyObject }
        version += 1
        desiredTimes = LeafTimes.stamp(desiredTimes, patch: patch, before: before, after: desired, at: at)
    }

    /// Applies a merge patch to the tags (an object; `null` members remove a tag).
    mutating func patchTags(_ patch: JSONValue, at: Int64) {
        let merged = JSONValue.object(tags).mergePatched(with: patch)
        let next = merged.objectValue ?? [:]
        guard next != tags else { return }
        tags = next
        tagsAt = at
    }

    /// Replaces the tags (provisioning with `tags`).
    mutating func setTags(_ value: [String: JSONValue], at: Int64) {
        guard value != tags else { return }
        tags = value
        tagsAt = at
    }

    /// The state change of one inbound device message, without I/O: presence and metadata
    /// (`status`), the telemetry sequence window and fields (`telemetry`), the merge patch
    /// (`reported`). Returns the groups a birth names that the device is not in yet: joining
    /// them is a cluster call the process makes (and records in ``groups`` once it succeeds).
    mutating func applyIngress(_ kind: DeviceTopics.Kind, _ value: JSONValue, broker: String, receivedAt: Int64, retained: Bool) -> [String] {
        lastSeen = max(lastSeen ?? 0, receivedAt)
        self.broker = broker
        counters.messages += 1
        switch kind {
        case .status:
            counters.statusChanges += 1
            return applyStatus(value, receivedAt: receivedAt, retained: retained)
        case .telemetry:
            counters.telemetry += 1
            var fields = value.objectValue ?? [:]
            let seq = fields.removeValue(forKey: "seq")?.intValue
            let newest = seq.map { sequence.isNewest($0) } ?? true
            if let seq { sequence.observe(seq, counters: &counters) }
            if newest {
                for (key, field) in fields { telemetry[key] = field }
            }
        case .reported:
            counters.reportedUpdates += 1
            let before = reported
            reported = reported.mergePatched(with: value)
            if reported.objectValue == nil { reported = .emptyObject }
            if reported != before {
                reportedVersion += 1
                reportedTimes = LeafTimes.stamp(reportedTimes, patch: value, before: before, after: reported, at: receivedAt)
            }
        }
        return []
    }

    /// A birth (`online`, with metadata and groups) or a will/goodbye. Older than the last applied
    /// status: ignored (the birth and the will of one device may reach the owner through different
    /// nodes, out of order).
    private mutating func applyStatus(_ value: JSONValue, receivedAt: Int64, retained: Bool) -> [String] {
        guard receivedAt >= statusAt, let members = value.objectValue, let status = members["status"]?.stringValue else { return [] }
        statusAt = receivedAt
        guard status == "online" else {
            online = false
            return []
        }
        // A retained birth replayed to a newly subscribing node is not a new connection.
        if !(retained && online) {
            connectedAt = receivedAt
            sequence.sessionStarted()
        }
        online = true
        var metadata = members
        metadata["status"] = nil
        let named = metadata.removeValue(forKey: "groups")
        self.metadata = metadata
        var joins: [String] = []
        for name in named?.arrayValue ?? [] {
            guard let group = name.stringValue, DeviceID.isValid(group), !groups.contains(group), !joins.contains(group) else { continue }
            joins.append(group)
        }
        return joins
    }

    func twin(node: String) -> DeviceTwin {
        DeviceTwin(
            id: id, online: online, node: node, groups: groups.sorted(), metadata: metadata, telemetry: telemetry,
            reported: reported, desired: desired, delta: JSONValue.delta(desired: desired, reported: reported),
            version: version, lastSeen: lastSeen.map(Timestamp.iso), connectedAt: connectedAt.map(Timestamp.iso),
            broker: broker, counters: counters, tags: tags, reportedVersion: reportedVersion,
            lastUpdated: DeviceTwin.LastUpdated(reported: LeafTimes.rendered(reportedTimes), desired: LeafTimes.rendered(desiredTimes)))
    }

    /// Merges what a conflicting copy knew into this one (`resolveConflict`): the newer presence,
    /// the higher desired version (with its times), the union of groups, the larger counters, the
    /// newer tags, and the reported state (with its times) and telemetry of the copy seen last;
    /// the reported version is the higher of the two, so it never goes down.
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
            reportedTimes = other.reportedTimes
            broker = other.broker ?? broker
        }
        reportedVersion = max(reportedVersion, other.reportedVersion)
        if other.version > version {
            version = other.version
            desired = other.desired
            desiredTimes = other.desiredTimes
        }
        publishedVersion = max(publishedVersion, other.publishedVersion)
        if other.tagsAt > tagsAt {
            tags = other.tags
            tagsAt = other.tagsAt
        }
        groups.formUnion(other.groups)
        counters = DeviceCounters.maximum(counters, other.counters)
        eventSeq = max(eventSeq, other.eventSeq)
        eventTime = max(eventTime, other.eventTime)
        commands = Self.mergeCommands(commands, other.commands)
        trimCommandHistory()
        revision = max(revision, other.revision)
        if born == 0 || (other.born != 0 && other.born < born) { born = other.born }
    }

    /// Takes in a stored copy of this device found at recovery (a row of some node's store, or a
    /// successor replica): ignored when it is an older copy of this very history (same ``born``,
    /// revision not higher: a stale row of a node that hosted the device before); merged
    /// (``merge(_:)``) when it is a newer copy of it; taken in under what this state saw when it
    /// is another history (``mergeHistory(_:)``: this process started without its row — created
    /// by a device message before the row reached it). Returns whether anything was taken.
    @discardableResult
    mutating func absorb(_ stored: DeviceState) -> Bool {
        guard stored.id == id else { return false }
        if born != 0 && stored.born == born {
            guard stored.revision > revision else { return false }
            merge(stored)
        } else {
            mergeHistory(stored)
        }
        return true
    }

    /// This state (a history that started without the stored one) on top of `stored`: the
    /// stored desired state unless this one's version is higher, the stored reported state and
    /// telemetry with what this one received since laid over them (the reported version adds
    /// up, so it still only goes up), the newer presence and tags, both histories' groups.
    mutating func mergeHistory(_ stored: DeviceState) {
        var result = stored
        if statusAt >= stored.statusAt {
            result.online = online
            result.statusAt = statusAt
            result.connectedAt = connectedAt
            result.metadata = metadata
        }
        if let seen = lastSeen, seen > (stored.lastSeen ?? .min) { result.lastSeen = seen }
        for (key, value) in telemetry { result.telemetry[key] = value }
        if sequence.highest != nil { result.sequence = sequence }
        if reportedVersion > 0 {
            result.reported = stored.reported.mergePatched(with: reported)
            result.reportedTimes = stored.reportedTimes.mergePatched(with: reportedTimes)
            let (sum, overflow) = stored.reportedVersion.addingReportingOverflow(reportedVersion)
            result.reportedVersion = overflow ? .max : sum
        }
        if version > stored.version {
            result.version = version
            result.desired = desired
            result.desiredTimes = desiredTimes
        }
        result.publishedVersion = max(publishedVersion, stored.publishedVersion)
        if tagsAt > stored.tagsAt {
            result.tags = tags
            result.tagsAt = tagsAt
        }
        result.broker = broker ?? stored.broker
        result.groups.formUnion(groups)
        result.counters = DeviceCounters.maximum(counters, stored.counters)
        result.commands = Self.mergeCommands(stored.commands, commands)
        result.trimCommandHistory()
        result.eventSeq = max(eventSeq, stored.eventSeq)
        result.eventTime = max(eventTime, stored.eventTime)
        result.revision = max(revision, stored.revision)
        result.born = [born, stored.born].filter { $0 != 0 }.min() ?? 0
        result.commands = Self.mergeCommands(commands, stored.commands)
        result.trimCommandHistory()
        self = result
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

// MARK: - Checkpoint encoding

extension DeviceState {
    /// A state from its checkpoint JSON (``checkpointJSON()``): read by ``JSONValueDecoder``
    /// (about a third of `JSONDecoder`'s cost: recovery decodes one per device), falling back to
    /// `JSONDecoder` for what it refuses (an earlier build's unsigned window words).
    static func decode(checkpoint bytes: [UInt8]) throws -> DeviceState {
        do {
            return try JSONValueDecoder().decode(DeviceState.self, from: bytes)
        } catch {
            return try JSONDecoder().decode(DeviceState.self, from: Data(bytes))
        }
    }

    /// The state as JSON in the layout of its `Codable` conformance (the keys of the synthesized
    /// `encode(to:)`, absent optionals left out), which `JSONDecoder` reads back as the same
    /// state: what checkpoints, handoffs and conflict yields carry. Written directly, because
    /// `JSONEncoder` made checkpoints the gateway's largest cost in a telemetry flood (about a
    /// tenth of all CPU: every busy device writes one every ``GatewaySettings/checkpointInterval``).
    func checkpointJSON() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(1024)
        var first = true
        // id, revision, born and version first, in this order: ``StoredHeader`` reads them
        // without decoding the rest (successor replicas written to the store).
        writeKey("id", &first, &out)
        JSONValue.writeString(id, to: &out)
        writeKey("revision", &first, &out)
        out.append(contentsOf: String(revision).utf8)
        writeKey("born", &first, &out)
        out.append(contentsOf: String(born).utf8)
        writeKey("version", &first, &out)
        out.append(contentsOf: String(version).utf8)
        writeKey("online", &first, &out)
        out.append(contentsOf: (online ? "true" : "false").utf8)
        writeKey("statusAt", &first, &out)
        out.append(contentsOf: String(statusAt).utf8)
        if let connectedAt {
            writeKey("connectedAt", &first, &out)
            out.append(contentsOf: String(connectedAt).utf8)
        }
        if let lastSeen {
            writeKey("lastSeen", &first, &out)
            out.append(contentsOf: String(lastSeen).utf8)
        }
        writeKey("metadata", &first, &out)
        JSONValue.object(metadata).write(to: &out)
        writeKey("groups", &first, &out)
        JSONValue.array(groups.sorted().map(JSONValue.string)).write(to: &out)
        writeKey("telemetry", &first, &out)
        JSONValue.object(telemetry).write(to: &out)
        writeKey("sequence", &first, &out)
        sequence.writeJSON(to: &out)
        writeKey("reported", &first, &out)
        reported.write(to: &out)
        writeKey("desired", &first, &out)
        desired.write(to: &out)
        if let broker {
            writeKey("broker", &first, &out)
            JSONValue.writeString(broker, to: &out)
        }
        writeKey("counters", &first, &out)
        counters.writeJSON(to: &out)
        writeKey("tags", &first, &out)
        JSONValue.object(tags).write(to: &out)
        writeKey("tagsAt", &first, &out)
        out.append(contentsOf: String(tagsAt).utf8)
        writeKey("reportedVersion", &first, &out)
        out.append(contentsOf: String(reportedVersion).utf8)
        writeKey("reportedTimes", &first, &out)
        reportedTimes.write(to: &out)
        writeKey("desiredTimes", &first, &out)
        desiredTimes.write(to: &out)
        writeKey("publishedVersion", &first, &out)
        out.append(contentsOf: String(publishedVersion).utf8)
        if !commands.isEmpty {
            writeKey("commands", &first, &out)
            out.append(UInt8(ascii: "["))
            for (index, command) in commands.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                command.writeJSON(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
        writeKey("eventSeq", &first, &out)
        out.append(contentsOf: String(eventSeq).utf8)
        writeKey("eventTime", &first, &out)
        out.append(contentsOf: String(eventTime).utf8)
        out.append(UInt8(ascii: "}"))
        return out
    }
}

extension QueuedCommand {
    /// The `Codable` layout (absent optionals left out).
    fileprivate func writeJSON(to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        writeKey("id", &first, &out)
        JSONValue.writeString(id, to: &out)
        writeKey("name", &first, &out)
        JSONValue.writeString(name, to: &out)
        writeKey("body", &first, &out)
        body.write(to: &out)
        writeKey("status", &first, &out)
        JSONValue.writeString(status.rawValue, to: &out)
        if let reply {
            writeKey("reply", &first, &out)
            reply.write(to: &out)
        }
        if let error {
            writeKey("error", &first, &out)
            JSONValue.writeString(error, to: &out)
        }
        for (key, value) in [("createdAt", createdAt), ("updatedAt", updatedAt), ("expiresAt", expiresAt), ("replyWindow", replyWindow)] {
            writeKey(key, &first, &out)
            out.append(contentsOf: String(value).utf8)
        }
        if let sentAt {
            writeKey("sentAt", &first, &out)
            out.append(contentsOf: String(sentAt).utf8)
        }
        out.append(UInt8(ascii: "}"))
    }
}

/// `,` unless first, then `"key":`.
private func writeKey(_ key: String, _ first: inout Bool, _ out: inout [UInt8]) {
    if !first { out.append(UInt8(ascii: ",")) }
    first = false
    JSONValue.writeString(key, to: &out)
    out.append(UInt8(ascii: ":"))
}

extension SequenceTracker {
    fileprivate func writeJSON(to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        if let highest {
            writeKey("highest", &first, &out)
            out.append(contentsOf: String(highest).utf8)
        }
        writeKey("seen", &first, &out)
        seen.writeJSON(to: &out)
        writeKey("missing", &first, &out)
        missing.writeJSON(to: &out)
        writeKey("restartPossible", &first, &out)
        out.append(contentsOf: (restartPossible ? "true" : "false").utf8)
        out.append(UInt8(ascii: "}"))
    }
}

extension BitWindow {
    fileprivate func writeJSON(to out: inout [UInt8]) {
        out.append(contentsOf: #"{"words":["#.utf8)
        for (index, word) in words.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: String(Int64(bitPattern: word)).utf8)
        }
        out.append(contentsOf: "]}".utf8)
    }
}

extension DeviceCounters {
    fileprivate func writeJSON(to out: inout [UInt8]) {
        let fields: [(String, Int64)] = [
            ("messages", messages), ("telemetry", telemetry), ("reportedUpdates", reportedUpdates), ("statusChanges", statusChanges),
            ("seqGaps", seqGaps), ("seqDuplicates", seqDuplicates), ("seqOutOfOrder", seqOutOfOrder), ("seqLate", seqLate),
            ("commandsSent", commandsSent), ("commandsAnswered", commandsAnswered), ("commandsTimedOut", commandsTimedOut),
            ("downlinks", downlinks), ("desiredPublished", desiredPublished),
        ]
        out.append(UInt8(ascii: "{"))
        var first = true
        for (key, value) in fields {
            writeKey(key, &first, &out)
            out.append(contentsOf: String(value).utf8)
        }
        out.append(UInt8(ascii: "}"))
    }
}
