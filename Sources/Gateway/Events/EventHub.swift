import Foundation
import GatewayStore
import Logging
import SwarmCore
import Synchronization

/// One node's share of the cluster event stream (docs/gateway.md, “Events”): what its device processes emit, the
/// events of every other node, one ordered log, the consumers reading it, and the store behind it.
///
/// ## One order on every node
/// Each event has a key `(time, device)`: the time (microseconds, a hybrid clock: never below the
/// wall clock, strictly increasing per node and per device — the device's last event time travels
/// in its checkpointed state) is assigned here, at emission, under one lock, so the events a node
/// emits leave it in key order. Each node sends its events to every other node's hub in batches
/// (every ``EventSettings/flushInterval``) with its **stable time**: "every event I emit from now
/// on has a later time"; an idle node sends only that, every ``EventSettings/tickInterval``. A
/// hub releases an event into its log once every origin it knows has promised a later time (the
/// minimum of the stable times, the watermark), merging the origins by key. So every node's log
/// holds the same events in the same order, and a key is a cursor that means the same on every
/// node: a consumer that reconnects anywhere with the key of the last event it saw gets exactly
/// what followed it.
///
/// Origins are the gateway nodes whose hub process is in this node's registry view. An origin
/// in the view that has not been heard from yet holds the release back (it is about to send);
/// one that leaves the view (failed, drained, gone) stops counting, and what it sent is
/// released. An event that arrives after the log has moved past its key (its origin was not
/// known in time: a node seen only after its first events, or one declared failed that still
/// sent) is dropped and counted (`late`): consumers see it as a `seq` gap, never out of order.
///
/// ## Sequence numbers
/// `seq` is per device, assigned by the device process from its checkpointed state, so it
/// continues across handoff and restart. A process that starts on this node (first contact,
/// handoff, crash recovery) continues after the highest `seq` this hub has *received* for the
/// device (``lastSequence(of:)``), so after a crash it never repeats a number the cluster already
/// saw from the dead host (``barrier()`` first makes sure everything the dead host sent here
/// is in). The log drops a repeated `seq` (`duplicates`) and counts skipped ones (`gaps`).
///
/// ## Memory and the store
/// The log keeps the newest ``EventSettings/bufferSize`` events in memory; every released event
/// is written behind to the store (``EventSettings/writeBehindInterval``), which keeps the
/// retention window (``EventSettings/retention``, at most ``EventSettings/maxStored`` events).
/// A consumer reads with a cursor (``read(after:filter:limit:)``): from memory when the cursor is
/// recent, else from the store, so a slow consumer costs a cursor, never a queue. An event
/// leaves memory only once it is stored (or, with the store failing, at twice the buffer size:
/// counted, and the horizon moves, so cursors that needed it are answered as expired).
public final class EventHub: Sendable {
    public let settings: EventSettings
    /// This node.
    public let node: NodeID
    let logger: Logger

    struct Origin {
        var queue: [DeviceEvent] = []
        var head = 0
        /// Every later event of this origin has a later time.
        var stable: Int64 = .min
        var heard = false
        /// In this node's registry view (false: gone, its queue only drains).
        var inView: Bool
        /// The stable time that preceded the first batch heard from it: its events after that
        /// time reached this node.
        var coveredFrom: Int64?
    }

    struct State {
        var lastTime: Int64 = 0
        /// The stable time last sent to the other nodes.
        var lastStable: Int64 = 0
        /// The time of the first event this node emitted.
        var firstEmitted: Int64?
        var outbound: [DeviceEvent] = []
        /// The first time of events taken for sending and not in the local queue yet.
        var sending: Int64?
        var origins: [NodeID: Origin] = [:]
        var gateOpen = false
        /// The newest key released (the head of the stream).
        var newest = EventKey.zero
        var ingested: [String: StoredEventKey.Sequence] = [:]
        var releasedSeq: [String: Int64] = [:]
        var ring = EventRing()
        /// Every event at or below this key left memory (or predates this node's log).
        var floor = EventKey.zero
        /// Every event at or below this key may be gone: older cursors are expired.
        var horizon = EventKey.zero
        /// Released events not written to the store yet (key order).
        var unstored: [DeviceEvent] = []
        /// Every released event at or below this key is in the store (or is another node's to store).
        var storedThrough = EventKey.zero
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// (key, events removed so far at that key): how many events a cursor missed.
        var removalMarks: [(key: EventKey, total: Int64)] = []
        var removed: Int64 = 0
        /// Sinks' acknowledged cursors to store with the next transaction.
        var cursors: [String: StoredEventKey] = [:]
        /// The newest event found in the store at start-up (this node's log reaches back to there).
        var restored = EventKey.zero
        var closed = false
        var stats = EventStats()
    }

    let state: Mutex<State>
    /// One store transaction at a time (the writer loop and durable webhook writes).
    let storeLock = AsyncLock()

    public init(node: NodeID, settings: EventSettings, logger: Logger = Logger(label: "swarm.events")) {
        self.node = node
        self.settings = settings
        self.logger = logger
        var initial = State()
        initial.origins[node] = Origin(stable: 0, heard: true, inView: true)
        self.state = Mutex(initial)
    }

    var store: (any EventStore)? { settings.store }

    static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    // MARK: - Emitting (the origin side)

    /// Emits one event of `device` with `seq` (the process's next number) at a time after
    /// `after` (the device's previous event time); returns the event's time. `data` must be JSON.
    @discardableResult
    func emit(device: String, seq: Int64, type: EventType, groups: [String], data: [UInt8], after: Int64) -> Int64 {
        let now = Self.nowMicros()
        return state.withLock { state -> Int64 in
            let time = max(now, state.lastTime + 1, after + 1)
            state.lastTime = time
            let event = DeviceEvent(key: EventKey(time: time, device: device), seq: seq, type: type, groups: groups, origin: node.name, data: data)
            state.outbound.append(event)
            if state.firstEmitted == nil { state.firstEmitted = time }
            state.stats.emitted += 1
            Self.noteIngested(&state, event)
            return time
        }
    }

    /// Takes what this node emitted since the last call, with the stable time that goes with it
    /// (every later event has a later time) and `from`: a node that hears this batch first has
    /// every event of this node after `from` (0: all of them). The caller sends them to the other nodes, then hands them back with
    /// ``releaseLocal(_:stable:)``: this node's own consumers see an event only once it left for
    /// the others, so a consumer of a node that dies has not seen what no survivor got.
    func takeOutbound() -> (events: [DeviceEvent], from: Int64, stable: Int64) {
        let now = Self.nowMicros()
        return state.withLock { state in
            let stable = max(state.lastTime, now)
            state.lastTime = stable
            let events = state.outbound
            state.outbound = []
            if let first = events.first { state.sending = min(state.sending ?? .max, first.key.time) }
            // What a node hearing this batch first has of this node's events: everything when
            // nothing was emitted before the last batch (0), else what follows that batch.
            let from = state.firstEmitted.map { $0 <= state.lastStable } ?? false ? state.lastStable : 0
            state.lastStable = stable
            return (events, from, stable)
        }
    }

    /// What a hub seen for the first time gets before the live batches: every event this node
    /// emitted and sent that is still in memory (in its log or waiting for the watermark), the
    /// stable time of the last batch, and `from` (0 when that is every event this node ever
    /// emitted, else the time before the oldest of them).
    func backlog() -> (events: [DeviceEvent], from: Int64, stable: Int64) {
        state.withLock { state in
            var events: [DeviceEvent] = []
            for index in 0..<state.ring.count where state.ring[index].origin == node.name { events.append(state.ring[index]) }
            if let own = state.origins[node] { events += own.queue[own.head...] }
            let complete = state.firstEmitted.map { first in events.first.map { $0.key.time <= first } ?? false } ?? true
            let from = complete ? 0 : (events.first.map { $0.key.time - 1 } ?? state.lastStable)
            return (events, from, state.lastStable)
        }
    }

    /// This node's own events (from ``takeOutbound()``, sent) into its log.
    func releaseLocal(_ events: [DeviceEvent], stable: Int64) {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.origins[node]!.queue.append(contentsOf: events)
            state.origins[node]!.stable = max(state.origins[node]!.stable, stable)
            state.sending = nil
            return release(&state)
        }
        for waiter in wake { waiter.resume() }
    }

    // MARK: - Receiving

    /// A batch from another node's hub: its events (in key order) and its stable time.
    func ingest(origin: NodeID, from: Int64, stable: Int64, events: [DeviceEvent]) {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            var entry = state.origins[origin] ?? Origin(inView: false)
            if !entry.heard { entry.coveredFrom = from }
            entry.heard = true
            entry.stable = max(entry.stable, stable)
            entry.queue.append(contentsOf: events)
            state.origins[origin] = entry
            state.stats.received += events.count
            for event in events { Self.noteIngested(&state, event) }
            return release(&state)
        }
        for waiter in wake { waiter.resume() }
    }

    /// The other nodes whose hub is in this node's registry view now.
    func updateView(_ members: Set<NodeID>) {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            for member in members where member != node && state.origins[member] == nil {
                state.origins[member] = Origin(inView: true)
            }
            for (id, var origin) in state.origins where id != node {
                let inView = members.contains(id)
                if !inView && origin.head >= origin.queue.count {
                    state.origins[id] = nil
                    continue
                }
                if origin.inView != inView {
                    origin.inView = inView
                    state.origins[id] = origin
                }
            }
            return release(&state)
        }
        for waiter in wake { waiter.resume() }
    }

    /// Starts releasing (after ``EventSettings/startHold``). Every other node sends a node it
    /// sees for the first time the events it still has in memory (``backlog()``); when those do
    /// not reach back to what this node's store holds, the events between are missing here, and
    /// older cursors are expired on this node (the nodes that were running still serve them).
    func openGate() {
        let wake = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.gateOpen else { return [] }
            state.gateOpen = true
            let covered = state.origins.filter { $0.key != node && $0.value.inView }.compactMap(\.value.coveredFrom).max()
            // The store reaches back to `restored`, the other nodes' backlogs from `covered` on.
            if let covered, covered > state.horizon.time, covered > state.restored.time {
                state.horizon = max(state.horizon, EventKey(time: covered, device: "~"))
                logger.info("event stream of \(node.name) starts at \(covered) µs: earlier cursors are served by the nodes that were running")
            }
            return release(&state)
        }
        for waiter in wake { waiter.resume() }
    }

    private static func noteIngested(_ state: inout State, _ event: DeviceEvent) {
        if let known = state.ingested[event.device], known.seq >= event.seq { return }
        state.ingested[event.device] = StoredEventKey.Sequence(seq: event.seq, time: event.key.time)
    }

    /// The highest `seq` (with its time) received here for `device`, released or not.
    func lastSequence(of device: String) -> StoredEventKey.Sequence? {
        state.withLock { $0.ingested[device] }
    }

    /// Releases, in key order, every queued event at or below the watermark; returns the
    /// consumers to wake.
    private func release(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        guard state.gateOpen else { return [] }
        // This node's own promise: nothing emitted and not yet in its queue is at or below it
        // (idle: the clock).
        var own: Int64
        if let first = state.outbound.first {
            own = first.key.time - 1
        } else {
            state.lastTime = max(state.lastTime, Self.nowMicros())
            own = state.lastTime
        }
        if let sending = state.sending { own = min(own, sending - 1) }
        var watermark = own
        for (id, origin) in state.origins where origin.inView && id != node {
            watermark = min(watermark, origin.heard ? origin.stable : .min)
        }
        var appended = false
        while true {
            var best: NodeID?
            var bestKey = EventKey.zero
            for (id, origin) in state.origins where origin.head < origin.queue.count {
                let key = origin.queue[origin.head].key
                guard key.time <= watermark else { continue }
                if best == nil || key < bestKey {
                    best = id
                    bestKey = key
                }
            }
            guard let best else { break }
            let event = state.origins[best]!.queue[state.origins[best]!.head]
            state.origins[best]!.head += 1
            if accept(&state, event) { appended = true }
        }
        for (id, origin) in state.origins where origin.head > 0 && (origin.head >= origin.queue.count || origin.head > 4096) {
            var compacted = origin
            compacted.queue.removeFirst(origin.head)
            compacted.head = 0
            state.origins[id] = compacted
        }
        guard appended, !state.waiters.isEmpty else { return [] }
        defer { state.waiters = [:] }
        return Array(state.waiters.values)
    }

    private func accept(_ state: inout State, _ event: DeviceEvent) -> Bool {
        guard event.key > state.newest else {
            state.stats.late += 1
            return false
        }
        if let last = state.releasedSeq[event.device] {
            if event.seq <= last {
                state.stats.duplicates += 1
                return false
            }
            if event.seq > last + 1 { state.stats.gaps += Int(event.seq - last - 1) }
        }
        state.releasedSeq[event.device] = event.seq
        state.newest = event.key
        state.ring.append(event)
        state.stats.released += 1
        if let store = settings.store {
            // A shared store gets each event once: from the node that emitted it.
            if !store.isShared || event.origin == node.name {
                state.unstored.append(event)
            } else if state.unstored.isEmpty {
                state.storedThrough = event.key
            }
        }
        while state.ring.count > settings.bufferSize, let first = state.ring.first {
            if settings.store == nil {
                Self.removed(&state, through: first.key, count: 1)
            } else if first.key > state.storedThrough {
                // Not stored yet: kept, up to twice the buffer, then dropped from memory anyway.
                guard state.ring.count > 2 * settings.bufferSize else { break }
                state.stats.evictedUnstored += 1
                Self.removed(&state, through: first.key, count: 1)
            }
            state.floor = first.key
            state.ring.removeFirst()
        }
        return true
    }

    private static func removed(_ state: inout State, through key: EventKey, count: Int) {
        state.removed += Int64(count)
        state.horizon = max(state.horizon, key)
        if let last = state.removalMarks.last, last.total == state.removed - 1, state.removalMarks.count > 1, state.removed % 256 != 0 {
            state.removalMarks[state.removalMarks.count - 1] = (key, state.removed)
        } else {
            state.removalMarks.append((key, state.removed))
        }
        if state.removalMarks.count > 8192 { state.removalMarks.removeFirst(4096) }
    }

    // MARK: - Consumers

    /// The newest key released: a new consumer that wants only what follows starts here.
    public var head: EventKey { state.withLock { $0.newest } }

    /// The oldest cursor still served: any cursor below it is expired.
    public var horizon: EventKey { state.withLock { $0.horizon } }

    /// What ``read(after:filter:limit:)`` found.
    public enum Read: Sendable {
        /// The matching events after the cursor (possibly none) and the cursor to read after
        /// next (past every event looked at, matching or not).
        case events([DeviceEvent], next: EventKey)
        /// The cursor is older than the retention window (events after it may be gone); the
        /// oldest cursor served is `horizon`.
        case expired(horizon: EventKey)
    }

    /// Up to `limit` events after `cursor` that match `filter`, in stream order: from memory, or
    /// from the store for an older cursor. Throws when the store fails.
    public func read(after cursor: EventKey, filter: EventFilter = .all, limit: Int = 500) async throws -> Read {
        enum Plan {
            case done(Read)
            case store(floor: EventKey)
        }
        let plan = state.withLock { state -> Plan in
            if cursor < state.horizon { return .done(.expired(horizon: state.horizon)) }
            guard cursor >= state.floor else { return .store(floor: state.floor) }
            var events: [DeviceEvent] = []
            var next = cursor
            var index = state.ring.firstIndex(after: cursor)
            var scanned = 0
            let maxScan = max(limit * 16, 4096)
            while index < state.ring.count && events.count < limit && scanned < maxScan {
                let event = state.ring[index]
                if filter.matches(event) { events.append(event) }
                next = event.key
                index += 1
                scanned += 1
            }
            return .done(.events(events, next: next))
        }
        switch plan {
        case .done(let read):
            return read
        case .store(let floor):
            guard let store else { return .expired(horizon: horizon) }
            let rows = try await store.events(after: cursor.stored, limit: limit)
            guard let last = rows.last else {
                // The store has nothing between the cursor and memory (it was failing): skip to memory.
                state.withLock { $0.stats.skippedToMemory += 1 }
                return .events([], next: floor)
            }
            return .events(rows.compactMap(DeviceEvent.init).filter(filter.matches), next: EventKey(last.key))
        }
    }

    /// Waits until an event after `cursor` is released, or `timeout`; true when one was.
    public func wait(after cursor: EventKey, timeout: Duration) async -> Bool {
        let id = state.withLock { state -> UInt64? in
            if state.newest > cursor || state.closed { return nil }
            state.nextWaiter += 1
            return state.nextWaiter
        }
        guard let id else { return true }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                        let now = self.state.withLock { state -> Bool in
                            if state.newest > cursor || state.closed || Task.isCancelled { return true }
                            state.waiters[id] = continuation
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    self.cancelWaiter(id)
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                self.cancelWaiter(id)
            }
            await group.next()
            group.cancelAll()
        }
        return state.withLock { $0.newest > cursor }
    }

    /// True once the gateway stopped: streams end.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Ends every wait (the gateway stops).
    func close() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.closed = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    private func cancelWaiter(_ id: UInt64) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.resume()
    }

    /// Matching events in memory after `cursor` (at most `max`): a consumer's lag.
    public func count(after cursor: EventKey, filter: EventFilter = .all, max: Int = 1_000_000) -> Int {
        state.withLock { state in
            var index = state.ring.firstIndex(after: cursor)
            var count = 0
            while index < state.ring.count && count < max {
                if filter.matches(state.ring[index]) { count += 1 }
                index += 1
            }
            return count
        }
    }

    /// How many events after `cursor` left the retention window (counted at the removals: exact
    /// to within one removal step).
    public func removedSince(_ cursor: EventKey) -> Int64 {
        state.withLock { state in
            let before = state.removalMarks.last { $0.key <= cursor }?.total ?? 0
            return max(0, state.removed - before)
        }
    }

    // MARK: - Store

    /// Loads the store's state (horizon, newest key, every device's last `seq`): call before
    /// ``openGate()``.
    func load() async throws {
        guard let store else { return }
        try await store.open()
        let summary = try await store.summary()
        let sequences = try await store.lastSequences()
        state.withLock { state in
            state.horizon = max(state.horizon, EventKey(summary.horizon))
            if let newest = summary.newest.map(EventKey.init) {
                state.newest = max(state.newest, newest)
                state.floor = max(state.floor, newest)
                state.storedThrough = max(state.storedThrough, newest)
                state.lastTime = max(state.lastTime, newest.time)
                state.restored = newest
            }
            state.removed = summary.purged
            state.removalMarks = [(EventKey(summary.horizon), summary.purged)]
            for (device, sequence) in sequences {
                state.ingested[device] = sequence
                state.releasedSeq[device] = sequence.seq
            }
            state.stats.stored = summary.count
        }
        logger.info("events: \(store.location): \(summary.count) event(s) kept, \(sequences.count) device(s), horizon \(EventKey(summary.horizon))")
    }

    /// Writes what was released, and purges, while `running()` (the last write is the
    /// gateway's, at shutdown).
    func runStoreWriter(while running: @Sendable () -> Bool) async {
        guard let store else { return }
        var lastPurge = ContinuousClock.now
        var delay = settings.writeBehindInterval
        while running() && !Task.isCancelled {
            try? await Task.sleep(for: delay)
            guard running() else { break }
            let purge = ContinuousClock.now - lastPurge >= settings.purgeInterval
            let ok = await writeOnce(store, purge: purge)
            if purge && ok { lastPurge = .now }
            delay = ok ? settings.writeBehindInterval : min(delay * 2, .seconds(5))
        }
    }

    /// True when this node emitted events not sent yet.
    var hasOutbound: Bool { state.withLock { !$0.outbound.isEmpty } }

    /// Writes up to 10,000 unstored events (and the purge, and `webhooks`/`cursors`); false when
    /// the transaction failed.
    @discardableResult
    func writeOnce(_ store: any EventStore, purge: Bool, webhooks: [StoredWebhook] = [], cursors: [WebhookCursor] = []) async -> Bool {
        (try? await write(store, purge: purge, webhooks: webhooks, cursors: cursors)) != nil
    }

    /// Commits webhook rows (with whatever events are due) durably; throws
    /// ``StoreError/unavailable(store:reason:)`` when the transaction failed. Without a store: nothing to do.
    func commit(webhooks: [StoredWebhook], cursors: [WebhookCursor] = []) async throws {
        guard let store else { return }
        try await write(store, purge: false, webhooks: webhooks, cursors: cursors)
    }

    private func write(_ store: any EventStore, purge: Bool, webhooks: [StoredWebhook], cursors: [WebhookCursor]) async throws {
        await storeLock.lock()
        defer { storeLock.unlock() }
        let (events, through, queuedCursors) = state.withLock { state -> ([DeviceEvent], EventKey, [WebhookCursor]) in
            let taken = Array(state.unstored.prefix(10_000))
            let through = taken.count == state.unstored.count ? state.newest : taken.last?.key ?? state.newest
            defer { state.cursors = [:] }
            return (taken, through, state.cursors.map { WebhookCursor(id: $0.key, cursor: $0.value) })
        }
        var batch = EventBatch(events: events.map(\.stored), webhooks: webhooks, cursors: cursors + queuedCursors)
        if purge {
            batch.purgeBefore = Self.nowMicros() - Self.micros(settings.retention)
            batch.keepAtMost = settings.maxStored
        }
        guard !batch.isEmpty else {
            state.withLock { $0.storedThrough = max($0.storedThrough, through) }
            return
        }
        do {
            let result = try await store.apply(batch)
            state.withLock { state in
                state.unstored.removeFirst(min(events.count, state.unstored.count))
                state.storedThrough = max(state.storedThrough, through)
                state.stats.stored += events.count - result.purged
                state.stats.storeWrites += 1
                if result.purged > 0 { Self.removed(&state, through: EventKey(result.horizon), count: result.purged) }
                state.stats.storeError = nil
            }
        } catch {
            let first = state.withLock { state -> Bool in
                defer { state.stats.storeError = "\(error)" }
                state.stats.storeFailures += 1
                return state.stats.storeError == nil
            }
            if first { logger.error("events: writing \(events.count) event(s) to \(store.location) failed: \(error); retrying") }
            state.withLock { state in
                for cursor in queuedCursors where state.cursors[cursor.id].map({ $0 < cursor.cursor }) ?? true {
                    state.cursors[cursor.id] = cursor.cursor
                }
            }
            throw error
        }
    }

    /// Stores a sink's acknowledged cursor with the next transaction.
    func queueCursor(_ cursor: WebhookCursor) {
        guard store != nil else { return }
        state.withLock { state in
            if state.cursors[cursor.id].map({ $0 < cursor.cursor }) ?? true { state.cursors[cursor.id] = cursor.cursor }
        }
    }

    static func micros(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000
    }

    // MARK: - Stats

    /// Counters and gauges for `/metrics`.
    public var stats: EventStats {
        state.withLock { state in
            var stats = state.stats
            stats.buffered = state.ring.count
            stats.unstored = state.unstored.count
            stats.origins = state.origins.count
            stats.waiting = state.origins.values.reduce(0) { $0 + $1.queue.count - $1.head }
            stats.head = state.newest.description
            stats.horizon = state.horizon.description
            return stats
        }
    }
}

/// The hub's counters (monotonic since start) and gauges.
public struct EventStats: Sendable, Hashable, Codable {
    /// Events emitted by this node's device processes.
    public var emitted = 0
    /// Events received from other nodes.
    public var received = 0
    /// Events released into this node's log.
    public var released = 0
    /// Events that arrived after the log had passed their key (dropped; consumers see a `seq` gap).
    public var late = 0
    /// Events dropped because their device's `seq` was already released.
    public var duplicates = 0
    /// `seq` numbers skipped in the log (events the cluster lost: a full-cluster kill's
    /// write-behind window).
    public var gaps = 0
    /// Events left memory before they were stored (the store was failing).
    public var evictedUnstored = 0
    /// Reads that found the store behind memory.
    public var skippedToMemory = 0
    /// Event transactions committed / failed; the last failure while failing.
    public var storeWrites = 0
    public var storeFailures = 0
    public var storeError: String?
    /// Events in the store (counted here), in memory, waiting to be stored, waiting for the watermark.
    public var stored = 0
    public var buffered = 0
    public var unstored = 0
    public var waiting = 0
    /// Origins known (this node included).
    public var origins = 0
    /// The newest key released and the horizon.
    public var head = ""
    public var horizon = ""
}

/// The in-memory log: events in key order, the oldest dropped first.
struct EventRing {
    private var entries: [DeviceEvent] = []
    private var start = 0

    var count: Int { entries.count - start }
    var first: DeviceEvent? { start < entries.count ? entries[start] : nil }

    subscript(index: Int) -> DeviceEvent { entries[start + index] }

    mutating func append(_ event: DeviceEvent) { entries.append(event) }

    mutating func removeFirst() {
        start += 1
        if start > 4096 && start * 2 > entries.count {
            entries.removeFirst(start)
            start = 0
        }
    }

    /// The index of the first event with a key above `key` (``count`` when none).
    func firstIndex(after key: EventKey) -> Int {
        var low = start
        var high = entries.count
        while low < high {
            let middle = (low + high) / 2
            if entries[middle].key <= key { low = middle + 1 } else { high = middle }
        }
        return low - start
    }
}

/// A lock held across suspension points (one store transaction at a time: the engines' actors
/// are reentrant, so two overlapping `apply` calls would interleave their statements).
final class AsyncLock: Sendable {
    private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func lock() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if !state.locked {
                    state.locked = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
