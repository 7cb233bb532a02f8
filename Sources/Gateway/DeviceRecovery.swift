import Foundation
import Synchronization

/// One stored copy of a device on its way to the process that serves it (recovery).
struct RecoveredRow: Sendable, Hashable {
    var id: String
    var revision: Int64
    /// The checkpoint JSON.
    var state: [UInt8]
}

/// A node's recovery from its durable store at start (docs/deployment.md, “Durable state”), as state shared by the gateway's
/// recovery task, its ``GatewayNodeProcess`` (rows and notices from peers) and the device
/// processes (the rows they start from, the barrier their API writes wait on).
///
/// ## Rows
/// Every stored row goes to the node that owns the device under the current ring (rows of a
/// per-node store that another node owns are sent to it; with a shared store each node reads the
/// rows it owns). There, ``offer(_:)`` keeps the highest revision per device until its process
/// takes it (``take(_:)``): the factory, when the process starts, or the process itself when
/// nudged (``DeviceMessage/restore``), merging it into what it has by ``DeviceState/absorb(_:)``.
/// Offered ids are queued for registration (``registrations``).
///
/// ## The barrier
/// API writes wait until ``isReady``: this node read its whole store and sent every row on, every
/// peer that was recovering when asked has done the same (`recoveryDone`), and every row offered
/// here is registered. Only then can a write know the device's highest desired version — so the
/// next version is above any before. Bounded by ``GatewaySettings/recoveryTimeout``.
final class DeviceRecovery: Sendable {
    private struct Progress {
        var scanned = false
        var asked = false
        /// Peers (node names) that answered "still recovering" and have not said done.
        var awaited: Set<String> = []
        /// Peers that said done (a done can arrive before the answer to our question).
        var done: Set<String> = []
        /// Offered ids not yet through registration.
        var pending = 0
        var ready = false
        var waiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Rows received from the store and from peers, and how many were dropped as deleted.
        var rowsOffered = 0
        var rowsDeleted = 0
        var startedAt: ContinuousClock.Instant?
        var readyAfter: Duration?
    }

    private let table = Mutex<[String: RecoveredRow]>([:])
    private let progress = Mutex(Progress())
    /// Ids offered here, in order, for the registration worker.
    let registrations: AsyncStream<String>
    private let registrationInput: AsyncStream<String>.Continuation

    init() {
        (registrations, registrationInput) = AsyncStream.makeStream(of: String.self)
    }

    // MARK: Rows

    /// Keeps `row` until its process takes it (the higher revision of two copies); queues its id
    /// for registration.
    func offer(_ row: RecoveredRow) {
        let fresh = table.withLock { table -> Bool in
            if let held = table[row.id] {
                if row.revision > held.revision { table[row.id] = row }
                return false
            }
            table[row.id] = row
            return true
        }
        progress.withLock {
            $0.rowsOffered += 1
            if fresh { $0.pending += 1 }
        }
        if fresh { registrationInput.yield(row.id) }
    }

    func countDeleted() {
        progress.withLock { $0.rowsDeleted += 1 }
    }

    /// The row held for `id`, removed.
    func takeRow(_ id: String) -> RecoveredRow? {
        table.withLock { $0.removeValue(forKey: id) }
    }

    /// The state held for `id` (decoded), removed; nil when none is held or it does not decode.
    func take(_ id: String) -> DeviceState? {
        guard let row = takeRow(id) else { return nil }
        guard let state = try? DeviceState.decode(checkpoint: row.state), state.id == id else { return nil }
        return state
    }

    /// Rows held and not taken yet.
    var held: Int { table.withLock { $0.count } }

    /// Ends ``registrations`` (the gateway stops).
    func finish() {
        registrationInput.finish()
    }

    /// A registration of an offered id is through (done, forwarded or given up).
    func registered() {
        update { $0.pending -= 1 }
    }

    // MARK: Progress

    func started() {
        progress.withLock { $0.startedAt = .now }
    }

    /// This node read its whole store and sent every row on.
    func scanFinished() {
        update { $0.scanned = true }
    }

    var isScanned: Bool { progress.withLock { $0.scanned } }

    /// The peers asked at start: `pending` answered that they are still recovering.
    func asked(pending: [String]) {
        update { progress in
            progress.asked = true
            for name in pending where !progress.done.contains(name) { progress.awaited.insert(name) }
        }
    }

    /// Peer `name` read its store and sent every row on (or left the cluster).
    func peerDone(_ name: String) {
        update { progress in
            progress.done.insert(name)
            progress.awaited.remove(name)
        }
    }

    /// Peers still awaited.
    var awaitedPeers: Set<String> { progress.withLock { $0.awaited } }

    /// The barrier: see the type's documentation. Latched.
    var isReady: Bool { progress.withLock { $0.ready } }

    /// Opens the barrier whatever is missing (the recovery timeout, or a node without a store).
    func forceReady() {
        update { $0.ready = true }
    }

    /// Waits until ``isReady`` or `timeout`; returns whether ready.
    func waitUntilReady(timeout: Duration) async -> Bool {
        if isReady { return true }
        let id = progress.withLock { progress -> UInt64 in
            defer { progress.nextWaiter += 1 }
            return progress.nextWaiter
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                    let now = self.progress.withLock { progress -> Bool in
                        if progress.ready { return true }
                        progress.waiters[id] = continuation
                        return false
                    }
                    if now { continuation.resume(returning: true) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                let waiter = self.progress.withLock { $0.waiters.removeValue(forKey: id) }
                waiter?.resume(returning: false)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    /// Figures for logs and tests.
    struct Summary: Sendable, Hashable {
        var rowsOffered: Int
        var rowsDeleted: Int
        var held: Int
        var pending: Int
        var ready: Bool
        var readyAfter: Duration?
    }

    var summary: Summary {
        let held = self.held
        return progress.withLock {
            Summary(rowsOffered: $0.rowsOffered, rowsDeleted: $0.rowsDeleted, held: held, pending: $0.pending, ready: $0.ready, readyAfter: $0.readyAfter)
        }
    }

    private func update(_ body: (inout Progress) -> Void) {
        let waiters = progress.withLock { progress -> [CheckedContinuation<Bool, Never>] in
            body(&progress)
            if !progress.ready && progress.scanned && progress.asked && progress.awaited.isEmpty && progress.pending <= 0 {
                progress.ready = true
            }
            guard progress.ready, !progress.waiters.isEmpty || progress.readyAfter == nil else { return [] }
            if progress.readyAfter == nil, let started = progress.startedAt { progress.readyAfter = .now - started }
            defer { progress.waiters = [:] }
            return Array(progress.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }
}
