import Logging

/// Tunables of a ``StoreWriter``. Every field has a documented default.
public struct StoreSettings: Sendable {
    /// Write-behind cadence: a write-behind change is committed at most this long after it was
    /// queued (plus the time of the commit itself), coalesced with every later change of the same
    /// device meanwhile. So a `kill -9` of every node loses at most this window of device-reported
    /// data; durable writes never wait for it. 10 ms…1 s. Default 500 ms.
    public var writeBehindInterval: Duration = .milliseconds(500)
    /// Most rows in one transaction; a larger backlog is written in several, durable writes first.
    /// Default 2,000.
    public var maxBatchRows = 2_000
    /// A durable write whose transaction has not committed after this long fails with
    /// ``StoreError/unavailable(store:reason:)`` (the caller answers 503; the transaction may still
    /// commit later, which is never a loss). Default 3 s.
    public var commitTimeout: Duration = .seconds(3)
    /// First retry delay of write-behind after a failed transaction, doubled up to
    /// ``maximumRetryDelay``. Default 100 ms.
    public var retryDelay: Duration = .milliseconds(100)
    /// Longest retry delay. Default 2 s.
    public var maximumRetryDelay: Duration = .seconds(2)
    /// How long tombstones of deleted devices are kept. Default 7 days.
    public var tombstoneRetention: Duration = .seconds(7 * 24 * 3600)
    /// How often the row counts (`/metrics`) are refreshed. Default 10 s.
    public var countsInterval: Duration = .seconds(10)
    /// Log lines about failures and recoveries.
    public var logger = Logger(label: "swarm.store")
    /// The time the writer runs on: when changes were queued, when they are due, commit
    /// timeouts and retries. Default ``StoreClock/continuous``; tests step a manual one.
    public var clock = StoreClock.continuous

    public init() {}
}

/// The time a ``StoreWriter`` runs on, as durations since an origin of the clock's choosing.
public struct StoreClock: Sendable {
    /// The time now.
    public var now: @Sendable () -> Duration
    /// Sleeps until `now()` reaches the argument; throws when the task is cancelled.
    public var sleep: @Sendable (_ until: Duration) async throws -> Void

    public init(now: @escaping @Sendable () -> Duration, sleep: @escaping @Sendable (_ until: Duration) async throws -> Void) {
        self.now = now
        self.sleep = sleep
    }

    /// `ContinuousClock` (monotonic), from the moment it was first used.
    public static let continuous: StoreClock = {
        let origin = ContinuousClock.now
        return StoreClock(now: { .now - origin }, sleep: { until in try await Task.sleep(until: origin + until, clock: .continuous) })
    }()
}
