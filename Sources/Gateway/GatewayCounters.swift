import Logging
import Synchronization

/// The node-level counters behind ``GatewayStats``: lock-free, safe to bump from any thread.
final class GatewayCounters: Sendable {
    enum Reject: String, CaseIterable, Sendable, Error {
        case badTopic, badID, malformed, oversized, badShape, routeFailed, deleted
    }

    let receivedStatus = Atomic<Int>(0)
    let receivedTelemetry = Atomic<Int>(0)
    let receivedReported = Atomic<Int>(0)
    /// Rejections are rare: a locked table is enough.
    let rejected = Mutex<[Reject: Int]>([:])
    let routed = Atomic<Int>(0)
    let shedStatus = Atomic<Int>(0)
    let shedTelemetry = Atomic<Int>(0)
    let shedReported = Atomic<Int>(0)
    let ingressWaits = Atomic<Int>(0)
    let commandsSent = Atomic<Int>(0)
    let commandsAnswered = Atomic<Int>(0)
    let commandsTimedOut = Atomic<Int>(0)
    let repliesUnmatched = Atomic<Int>(0)
    let desiredPublished = Atomic<Int>(0)
    let downlinksPublished = Atomic<Int>(0)
    let publishFailures = Atomic<Int>(0)
    /// Event batches that could not be sent to another node (it left meanwhile).
    let eventSendFailures = Atomic<Int>(0)
    let checkpoints = Atomic<Int>(0)
    let processesStarted = Atomic<Int>(0)

    func count(received kind: DeviceTopics.Kind) {
        switch kind {
        case .status: receivedStatus.add(1, ordering: .relaxed)
        case .telemetry: receivedTelemetry.add(1, ordering: .relaxed)
        case .reported: receivedReported.add(1, ordering: .relaxed)
        }
    }

    /// Counts one shed message of `kind`; returns the total shed of that kind.
    func countShed(_ kind: DeviceTopics.Kind) -> Int {
        switch kind {
        case .status: shedStatus.add(1, ordering: .relaxed).newValue
        case .telemetry: shedTelemetry.add(1, ordering: .relaxed).newValue
        case .reported: shedReported.add(1, ordering: .relaxed).newValue
        }
    }

    var shedTable: [String: Int] {
        [
            DeviceTopics.Kind.status.rawValue: shedStatus.load(ordering: .relaxed),
            DeviceTopics.Kind.telemetry.rawValue: shedTelemetry.load(ordering: .relaxed),
            DeviceTopics.Kind.reported.rawValue: shedReported.load(ordering: .relaxed),
        ]
    }

    func count(_ reject: Reject) {
        rejected.withLock { $0[reject, default: 0] += 1 }
    }

    var receivedTable: [String: Int] {
        [
            DeviceTopics.Kind.status.rawValue: receivedStatus.load(ordering: .relaxed),
            DeviceTopics.Kind.telemetry.rawValue: receivedTelemetry.load(ordering: .relaxed),
            DeviceTopics.Kind.reported.rawValue: receivedReported.load(ordering: .relaxed),
        ]
    }

    var rejectedTable: [String: Int] {
        let table = rejected.withLock { $0 }
        return Dictionary(uniqueKeysWithValues: Reject.allCases.map { ($0.rawValue, table[$0] ?? 0) })
    }
}

/// One counter that can live in an array.
final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    func increment() { atomic.add(1, ordering: .relaxed) }
    var value: Int { atomic.load(ordering: .relaxed) }
}

/// Logs at most one line per key per interval, with the number of suppressed ones since
/// (bad input from a misbehaving device must not flood the log).
final class RateLimitedLog: Sendable {
    private let logger: Logger
    private let interval: Duration
    private let last = Mutex<[String: (at: ContinuousClock.Instant, suppressed: Int)]>([:])

    init(logger: Logger, interval: Duration) {
        self.logger = logger
        self.interval = interval
    }

    func warning(_ key: String, _ message: @autoclosure () -> String) {
        let now = ContinuousClock.now
        let suppressed: Int? = last.withLock { table in
            if let entry = table[key], now - entry.at < interval {
                table[key] = (entry.at, entry.suppressed + 1)
                return nil
            }
            let suppressed = table[key]?.suppressed ?? 0
            table[key] = (now, 0)
            return suppressed
        }
        guard let suppressed else { return }
        let suffix = suppressed > 0 ? " (\(suppressed) similar suppressed)" : ""
        logger.warning("\(message())\(suffix)")
    }
}
