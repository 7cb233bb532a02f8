import Foundation
import Logging
import Synchronization

/// Group commit and write-behind in front of one ``DeviceStore``; health and metrics for it.
///
/// ## Two ways in
/// - ``commit(_:)`` (durable): what an API call changed. The change joins the next transaction
///   and the caller's `await` returns only after that transaction committed, or throws
///   (``StoreError``) — so an API answer of 2xx means the change is on disk. Concurrent durable
///   writes share one transaction (group commit): one commit, one fsync for all of them.
/// - ``writeBehind(_:)``: what devices report. The change is queued and coalesced per device (a
///   newer change of the same device replaces the queued one; only the newest reaches the
///   database) and committed within ``StoreSettings/writeBehindInterval`` of the *first*
///   queued change of that device — never one transaction per message. Write-behind changes also
///   ride along in every durable transaction.
///
/// ## One writer
/// ``run()`` is the only caller of ``DeviceStore/apply(_:)``: it takes everything queued (durable
/// changes first, then write-behind oldest first, at most ``StoreSettings/maxBatchRows``) into one
/// ``StoreBatch``, applies it, and resumes the durable callers. Per device, queued changes keep
/// their order: a change queued while an older one of the same device is in flight goes into the
/// next transaction; stores replace a row only with a write of an equal or higher revision.
///
/// ## Failures
/// A failed transaction (disk full, PostgreSQL down, a commit slower than
/// ``StoreSettings/commitTimeout``) fails its durable callers with
/// ``StoreError/unavailable(store:reason:)`` (the API's 503 `storeUnavailable`); their
/// changes are *not* retried (the caller did not adopt them). Write-behind changes stay queued —
/// at most one per device, so memory stays bounded by the device count — and are retried with a
/// doubling delay (``StoreSettings/retryDelay`` … ``StoreSettings/maximumRetryDelay``);
/// meanwhile ``isHealthy`` is false and ``stats`` carries the error, and the first successful
/// transaction catches up on everything queued.
///
/// A durable caller always has its answer within twice ``StoreSettings/commitTimeout`` of its
/// call (the transaction running when it was queued, then its own),
/// whatever the store does (a server that stops answering holds a transaction up until the
/// engine gives up on it). A change not yet taken into a transaction by then is taken back out;
/// one that was in flight may still commit later — the outcome of a transaction whose answer
/// never came is unknown — so a caller that undoes a refused change writes the undo at an equal
/// or higher revision, which is ordered after it (the gateway does: ``DeviceWrite/revision``).
public final class StoreWriter: Sendable {
    /// The store written to.
    public let store: any DeviceStore
    /// The settings it was made with.
    public let settings: StoreSettings

    private struct Entry {
        /// The newest change of this device.
        var write: DeviceWrite
        /// The newest write-behind change among those coalesced here: what is queued again if a
        /// transaction with a durable change fails (the durable change was not adopted).
        var fallback: DeviceWrite?
        /// Durable callers waiting for this entry.
        var tickets: [UInt64]
        var seq: UInt64
        /// When the first change of this entry was queued (the write-behind window runs from here).
        var since: Duration
    }

    private struct Ticket {
        var remaining: Int
        var continuation: CheckedContinuation<Void, any Error>
        /// The devices it waits for.
        var ids: [String]
        /// Fails it at its deadline (cancelled when it is answered first).
        var deadline: Task<Void, Never>? = nil
    }

    private struct State {
        var pending: [String: Entry] = [:]
        /// Ids whose entry has durable callers.
        var urgent: Set<String> = []
        /// Write-behind entries in queueing order (id, seq); stale pairs are skipped.
        var order: [(id: String, seq: UInt64)] = []
        var orderHead = 0
        var tickets: [UInt64: Ticket] = [:]
        var nextSeq: UInt64 = 0
        var nextTicket: UInt64 = 0
        var closed = false
        var stopped = false
        /// ``hold()``: nothing is written until ``release()``.
        var held = false
        var retryAt: Duration?
        var consecutiveFailures = 0
        var schemaVersion = 0
        var healthy = true
        var lastError: String?
        var commits = 0
        var rowsWritten = 0
        var durableWrites = 0
        var writeBehindWrites = 0
        var coalesced = 0
        var flushErrors = 0
        var durableFailures = 0
        var commitSeconds = DurationBuckets()
        var writeBehindAge = DurationBuckets()
        var rows: StoreCounts?
        var lastPurge: Int64 = 0

        mutating func oldestSince() -> Duration? {
            while orderHead < order.count {
                let (id, seq) = order[orderHead]
                if let entry = pending[id], entry.seq == seq { return entry.since }
                orderHead += 1
            }
            compactOrder()
            return nil
        }

        mutating func compactOrder() {
            if orderHead > 4096 && orderHead * 2 > order.count {
                order.removeFirst(orderHead)
                orderHead = 0
            }
        }

        /// Queues `write` (with a durable caller's ticket, or none); returns whether it made the
        /// device's entry urgent.
        mutating func enqueue(_ write: DeviceWrite, ticket: UInt64?, now: Duration) {
            let id = write.id
            if var entry = pending[id] {
                if write.revision >= entry.write.revision {
                    entry.write = write
                } else {
                    // An older change after a newer one (a late checkpoint): the newer stays.
                    coalesced += 1
                }
                if ticket == nil {
                    coalesced += 1
                    if write.revision >= (entry.fallback?.revision ?? .min) { entry.fallback = write }
                }
                if let ticket { entry.tickets.append(ticket) }
                pending[id] = entry
            } else {
                let seq = nextSeq
                nextSeq += 1
                pending[id] = Entry(write: write, fallback: ticket == nil ? write : nil, tickets: ticket.map { [$0] } ?? [], seq: seq, since: now)
                order.append((id, seq))
            }
            if ticket != nil { urgent.insert(id) }
        }
    }

    private let state = Mutex(State())
    private let signal = Mutex<(waiter: CheckedContinuation<Void, Never>?, signalled: Bool)>((nil, false))

    /// A writer for `store` (call ``DeviceStore/open()`` first, then ``run()`` in a task).
    public init(store: any DeviceStore, settings: StoreSettings = StoreSettings()) {
        self.store = store
        self.settings = settings
    }

    private var logger: Logger { settings.logger }
    private var clock: StoreClock { settings.clock }

    // MARK: - Writing

    /// Commits `writes` durably: returns after the transaction holding them committed; throws
    /// ``StoreError/unavailable(store:reason:)`` when it failed or took longer than
    /// ``StoreSettings/commitTimeout``, ``StoreError/closed`` after ``close()``.
    public func commit(_ writes: [DeviceWrite]) async throws {
        guard !writes.isEmpty else { return }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = state.withLock { state -> (ticket: UInt64, at: Duration)? in
                guard !state.closed else { return nil }
                let ticket = state.nextTicket
                state.nextTicket += 1
                let now = clock.now()
                var distinct: [String] = []
                var seen = Set<String>()
                for write in writes {
                    let first = seen.insert(write.id).inserted
                    if first { distinct.append(write.id) }
                    state.enqueue(write, ticket: first ? ticket : nil, now: now)
                }
                state.tickets[ticket] = Ticket(remaining: distinct.count, continuation: continuation, ids: distinct)
                state.durableWrites += writes.count
                return (ticket, now)
            }
            if let accepted {
                // Room for the transaction already running when it was queued, then its own.
                armDeadline(accepted.ticket, from: accepted.at, timeout: settings.commitTimeout * 2)
                wake()
            } else {
                continuation.resume(throwing: StoreError.closed)
            }
        }
    }

    /// ``commit(_:)`` of one write.
    public func commit(_ write: DeviceWrite) async throws {
        try await commit([write])
    }

    /// Queues `write` to be committed within ``StoreSettings/writeBehindInterval``, coalesced
    /// with later changes of the same device. Ignored after ``close()``.
    public func writeBehind(_ write: DeviceWrite) {
        let first = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            let wasEmpty = state.pending.isEmpty
            state.enqueue(write, ticket: nil, now: clock.now())
            state.writeBehindWrites += 1
            return wasEmpty
        }
        // The loop sleeps without a deadline while nothing is queued: the first change sets one.
        if first { wake() }
    }

    /// Commits everything queued now (write-behind included) and returns when it is committed;
    /// throws if a transaction failed. For shutdown and tests.
    /// With a `timeout`, throws ``StoreError/unavailable(store:reason:)`` when it has not
    /// committed by then (what was queued stays queued).
    public func flush(timeout: Duration? = nil) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let queued = state.withLock { state -> (ticket: UInt64, at: Duration)? in
                let ids = Array(state.pending.keys)
                guard !ids.isEmpty else { return nil }
                let ticket = state.nextTicket
                state.nextTicket += 1
                for id in ids {
                    state.pending[id]!.tickets.append(ticket)
                    state.urgent.insert(id)
                }
                state.tickets[ticket] = Ticket(remaining: ids.count, continuation: continuation, ids: [])
                return (ticket, clock.now())
            }
            if let queued {
                if let timeout { armDeadline(queued.ticket, from: queued.at, timeout: timeout) }
                wake()
            } else {
                continuation.resume()
            }
        }
    }

    /// Fails `ticket` if it is still waiting `timeout` after `start`: a durable caller gets its
    /// answer in time whatever the writer is doing (a transaction the store never finishes
    /// included). Its changes are taken back out of the queue where they have not been taken into
    /// a transaction yet, so a write answered 503 is not adopted later.
    private func armDeadline(_ ticket: UInt64, from start: Duration, timeout: Duration) {
        let clock = self.clock
        let task = Task { [weak self] in
            guard (try? await clock.sleep(start + timeout)) != nil, let self else { return }
            self.expire(ticket, timeout: timeout)
        }
        let answered = state.withLock { state -> Bool in
            guard state.tickets[ticket] != nil else { return true }
            state.tickets[ticket]!.deadline = task
            return false
        }
        if answered { task.cancel() }
    }

    private func expire(_ ticket: UInt64, timeout: Duration) {
        let error = StoreError.unavailable(store: store.location, reason: "commit took longer than \(timeout)")
        let continuation = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard let waiting = state.tickets.removeValue(forKey: ticket) else { return nil }
            state.durableFailures += 1
            for id in waiting.ids {
                guard var entry = state.pending[id], let index = entry.tickets.firstIndex(of: ticket) else { continue }
                entry.tickets.remove(at: index)
                guard entry.tickets.isEmpty else {
                    state.pending[id] = entry
                    continue
                }
                state.urgent.remove(id)
                if let fallback = entry.fallback {
                    entry.write = fallback
                    state.pending[id] = entry
                } else {
                    state.pending[id] = nil
                }
            }
            return waiting.continuation
        }
        continuation?.resume(throwing: error)
    }

    /// Holds every write (durable ones wait; nothing is committed) until ``release()``: recovery
    /// at start reads the whole store before anything written since the start can replace a row
    /// it has not read yet.
    public func hold() {
        state.withLock { $0.held = true }
    }

    /// Ends a ``hold()``: what was queued meanwhile is written.
    public func release() {
        state.withLock { $0.held = false }
        wake()
    }

    /// True between ``hold()`` and ``release()``.
    public var isHeld: Bool { state.withLock { $0.held } }

    /// Stops taking changes, commits what is queued (one attempt: a store that is down at
    /// shutdown does not hold the node up; what could not be written is logged), and ends
    /// ``run()``. Closes the store. Ends a ``hold()``.
    public func close() async {
        let wasClosed = state.withLock { state -> Bool in
            defer {
                state.closed = true
                state.held = false
            }
            return state.closed
        }
        if !wasClosed {
            // Bounded: a store that never answers does not hold the shutdown up.
            do { try await flush(timeout: max(settings.commitTimeout, .seconds(10))) } catch {
                let left = state.withLock { $0.pending.count }
                logger.error("store: \(left) change(s) not written at shutdown: \(error)")
            }
            state.withLock { $0.stopped = true }
            wake()
        }
    }

    // MARK: - Health and metrics

    /// False from a failed transaction until the next one that succeeds (`/readyz`).
    public var isHealthy: Bool { state.withLock { $0.healthy } }

    /// The last failure, while unhealthy.
    public var lastError: String? { state.withLock { $0.healthy ? nil : $0.lastError } }

    /// Counters, gauges and histograms for `/metrics`.
    public var stats: StoreStats {
        let now = clock.now()
        return state.withLock { state in
            let oldest = state.pending.values.map(\.since).min()
            return StoreStats(
                location: store.location, shared: store.isShared, schemaVersion: state.schemaVersion, healthy: state.healthy,
                lastError: state.healthy ? nil : state.lastError, commits: state.commits, rowsWritten: state.rowsWritten,
                durableWrites: state.durableWrites, writeBehindWrites: state.writeBehindWrites, coalesced: state.coalesced,
                flushErrors: state.flushErrors, durableFailures: state.durableFailures, commitSeconds: state.commitSeconds,
                writeBehindAgeSeconds: state.writeBehindAge, queued: state.pending.count,
                oldestQueuedSeconds: oldest.map { Self.seconds(now - $0) } ?? 0, rows: state.rows)
        }
    }

    // MARK: - The writer loop

    private enum Step {
        case flush
        case wait(Duration?)
        case stop
    }

    /// Runs the writer until ``close()`` (or cancellation, after which nothing more is written).
    public func run() async {
        if let version = try? await store.schemaVersion() { state.withLock { $0.schemaVersion = version } }
        var nextHousekeeping = clock.now()
        while !Task.isCancelled {
            let now = clock.now()
            let step = state.withLock { state -> Step in
                // close() has had its flush (committed, failed or timed out): what is left was
                // logged as not written.
                if state.stopped { return .stop }
                if state.held { return .wait(nextHousekeeping) }
                if !state.urgent.isEmpty { return .flush }
                guard let oldest = state.oldestSince() else {
                    return .wait(state.healthy ? nextHousekeeping : min(nextHousekeeping, now + settings.retryDelay))
                }
                var due = oldest + settings.writeBehindInterval
                if let retryAt = state.retryAt, retryAt > due { due = retryAt }
                return due <= now ? .flush : .wait(min(due, nextHousekeeping))
            }
            switch step {
            case .stop:
                failEverything(StoreError.closed)
                await store.close()
                return
            case .flush:
                await flushOnce()
            case .wait(let deadline):
                await waitForWake(until: deadline)
            }
            if clock.now() >= nextHousekeeping {
                await housekeeping()
                nextHousekeeping = clock.now() + settings.countsInterval
            }
        }
        failEverything(StoreError.closed)
    }

    /// Refreshes the row counts; while unhealthy with nothing queued, this read is also the probe
    /// that notices the store is back.
    private func housekeeping() async {
        do {
            let counts = try await store.counts()
            state.withLock { state in
                state.rows = counts
                if !state.healthy && state.pending.isEmpty { state.healthy = true }
            }
        } catch {
            state.withLock { $0.lastError = "\(error)" }
        }
    }

    private enum Outcome: Sendable {
        case committed
        case failed(String)
        case timedOut
    }

    private func flushOnce() async {
        let purgeBefore = tombstonePurgeDue() ? Self.nowMillis() - Self.millis(settings.tombstoneRetention) : nil
        let (taken, batch) = state.withLock { state -> ([(id: String, entry: Entry)], StoreBatch) in
            var taken: [(id: String, entry: Entry)] = []
            let limit = max(1, settings.maxBatchRows)
            let urgent = state.urgent.sorted { state.pending[$0]!.seq < state.pending[$1]!.seq }
            for id in urgent.prefix(limit) {
                taken.append((id, state.pending.removeValue(forKey: id)!))
                state.urgent.remove(id)
            }
            while taken.count < limit && state.orderHead < state.order.count {
                let (id, seq) = state.order[state.orderHead]
                state.orderHead += 1
                guard let entry = state.pending[id], entry.seq == seq else { continue }
                state.pending[id] = nil
                taken.append((id, entry))
            }
            state.compactOrder()
            return (taken, StoreBatch(devices: taken.map(\.entry.write), purgeTombstonesBefore: purgeBefore))
        }
        guard !batch.isEmpty else { return }
        let ticketIDs = Set(taken.flatMap(\.entry.tickets))
        let store = self.store
        let timeout = settings.commitTimeout
        let clock = self.clock
        let started = clock.now()
        let outcome: Outcome = await withTaskGroup(of: Outcome?.self) { group in
            group.addTask {
                do {
                    try await store.apply(batch)
                    return .committed
                } catch {
                    return .failed("\(error)")
                }
            }
            group.addTask {
                guard (try? await clock.sleep(started + timeout)) != nil else { return nil }
                return .timedOut
            }
            var result: Outcome = .failed("no result")
            while let next = await group.next() {
                guard let next else { continue }
                if case .timedOut = next {
                    // The durable callers get their answer now; the transaction is still awaited
                    // (one writer at a time), and what it does decides the write-behind entries.
                    self.failTickets(ticketIDs, StoreError.unavailable(store: store.location, reason: "commit took longer than \(timeout)"))
                    self.markSlow("commit took longer than \(timeout)")
                    continue
                }
                result = next
                group.cancelAll()
            }
            return result
        }
        let elapsed = Self.seconds(clock.now() - started)
        var resumes: [(CheckedContinuation<Void, any Error>, (any Error)?)] = []
        let finished = clock.now()
        switch outcome {
        case .committed:
            let recovered = state.withLock { state -> Bool in
                state.commits += 1
                state.rowsWritten += taken.count
                state.commitSeconds.record(elapsed)
                for (_, entry) in taken where entry.tickets.isEmpty {
                    state.writeBehindAge.record(Self.seconds(finished - entry.since))
                }
                for (_, entry) in taken {
                    for ticket in entry.tickets {
                        guard var waiting = state.tickets[ticket] else { continue }
                        waiting.remaining -= 1
                        if waiting.remaining <= 0 {
                            state.tickets[ticket] = nil
                            waiting.deadline?.cancel()
                            resumes.append((waiting.continuation, nil))
                        } else {
                            state.tickets[ticket] = waiting
                        }
                    }
                }
                let wasUnhealthy = !state.healthy
                state.healthy = true
                state.consecutiveFailures = 0
                state.retryAt = nil
                return wasUnhealthy
            }
            if recovered { logger.notice("store \(store.location) is back: transactions commit again") }
        case .failed, .timedOut:
            let reason: String
            if case .failed(let text) = outcome { reason = text } else { reason = "commit took longer than \(timeout)" }
            let error = StoreError.unavailable(store: store.location, reason: reason)
            let (first, delay) = state.withLock { state -> (Bool, Duration) in
                state.flushErrors += 1
                let first = state.healthy
                state.healthy = false
                state.lastError = reason
                state.consecutiveFailures += 1
                var delay = settings.retryDelay
                for _ in 1..<min(state.consecutiveFailures, 16) { delay = min(delay * 2, settings.maximumRetryDelay) }
                state.retryAt = clock.now() + delay
                for (id, entry) in taken {
                    for ticket in entry.tickets {
                        guard let waiting = state.tickets.removeValue(forKey: ticket) else { continue }
                        state.durableFailures += 1
                        waiting.deadline?.cancel()
                        resumes.append((waiting.continuation, error))
                    }
                    // Queue the write-behind part again, unless a newer change came meanwhile.
                    guard let fallback = entry.fallback else { continue }
                    if var newer = state.pending[id] {
                        if newer.fallback == nil || fallback.revision > newer.fallback!.revision {
                            if newer.tickets.isEmpty || fallback.revision > newer.write.revision { newer.fallback = fallback }
                        }
                        if fallback.revision > newer.write.revision { newer.write = fallback }
                        newer.since = min(newer.since, entry.since)
                        state.pending[id] = newer
                    } else {
                        let seq = state.nextSeq
                        state.nextSeq += 1
                        state.pending[id] = Entry(write: fallback, fallback: fallback, tickets: [], seq: seq, since: entry.since)
                        state.order.append((id, seq))
                    }
                }
                return (first, delay)
            }
            if first {
                logger.error("store \(store.location): transaction of \(taken.count) row(s) failed: \(reason); write-behind retries every \(delay)…, API writes answer 503 until it recovers")
            }
        }
        for (continuation, error) in resumes {
            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
        }
    }

    /// A transaction still running past the commit timeout: unhealthy (`/readyz`) from now,
    /// not only once the store gives up on it.
    private func markSlow(_ reason: String) {
        let first = state.withLock { state -> Bool in
            defer {
                state.healthy = false
                state.lastError = reason
            }
            return state.healthy
        }
        if first { logger.error("store \(store.location): \(reason); API writes answer 503 until a transaction commits") }
    }

    private func failTickets(_ tickets: Set<UInt64>, _ error: any Error) {
        let resumes = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            var resumes: [CheckedContinuation<Void, any Error>] = []
            for ticket in tickets {
                if let waiting = state.tickets.removeValue(forKey: ticket) {
                    state.durableFailures += 1
                    waiting.deadline?.cancel()
                    resumes.append(waiting.continuation)
                }
            }
            return resumes
        }
        for continuation in resumes { continuation.resume(throwing: error) }
    }

    private func failEverything(_ error: any Error) {
        let resumes = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.closed = true
            defer { state.tickets = [:] }
            for waiting in state.tickets.values { waiting.deadline?.cancel() }
            return state.tickets.values.map(\.continuation)
        }
        for continuation in resumes { continuation.resume(throwing: error) }
    }

    // MARK: - Wake-ups

    private func wake() {
        let waiter = signal.withLock { signal -> CheckedContinuation<Void, Never>? in
            if let waiter = signal.waiter {
                signal.waiter = nil
                return waiter
            }
            signal.signalled = true
            return nil
        }
        waiter?.resume()
    }

    private func waitForSignal() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = signal.withLock { signal -> Bool in
                    if signal.signalled || Task.isCancelled {
                        signal.signalled = false
                        return true
                    }
                    signal.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.wake()
        }
    }

    /// Sleeps until a ``wake()`` or `deadline`, whichever comes first.
    private func waitForWake(until deadline: Duration?) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForSignal() }
            if let deadline {
                group.addTask {
                    // Cancelled (the wake came first): no wake-up of our own.
                    if (try? await self.clock.sleep(deadline)) != nil { self.wake() }
                }
            }
            _ = await group.next()
            group.cancelAll()
        }
    }

    // MARK: - Time

    /// Tombstones past their retention are removed at most once an hour, in a transaction that
    /// runs anyway.
    private func tombstonePurgeDue() -> Bool {
        let millis = Self.nowMillis()
        return state.withLock { state in
            guard millis - state.lastPurge >= 3_600_000 else { return false }
            state.lastPurge = millis
            return true
        }
    }

    static func nowMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func millis(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}

extension DeviceWrite {
    /// The revision the write carries (puts: the row's; deletes: up to which rows go).
    public var revision: Int64 {
        switch self {
        case .put(let device): return device.revision
        case .delete(_, let revision, _): return revision
        }
    }
}
