/// A cumulative histogram of durations in seconds (Prometheus `le` buckets).
public struct DurationBuckets: Sendable, Hashable {
    /// Upper bounds in seconds, ascending (the implicit `+Inf` bucket is ``count``).
    public let bounds: [Double]
    /// Observations at or below each bound (cumulative).
    public private(set) var cumulative: [Int]
    /// All observations.
    public private(set) var count = 0
    /// Their sum in seconds.
    public private(set) var sum = 0.0
    /// The largest observation.
    public private(set) var maximum = 0.0

    public static let defaultBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    public init(bounds: [Double] = DurationBuckets.defaultBounds) {
        self.bounds = bounds
        self.cumulative = Array(repeating: 0, count: bounds.count)
    }

    public mutating func record(_ seconds: Double) {
        count += 1
        sum += seconds
        maximum = max(maximum, seconds)
        for index in bounds.indices where seconds <= bounds[index] { cumulative[index] += 1 }
    }
}

/// What a ``StoreWriter`` reports for `/readyz` and `/metrics`.
public struct StoreStats: Sendable, Hashable {
    /// ``DeviceStore/location``.
    public var location: String
    /// ``DeviceStore/isShared``.
    public var shared: Bool
    /// The schema version (0 before the store opened).
    public var schemaVersion: Int
    /// False from a failed transaction until the next successful one.
    public var healthy: Bool
    /// The last failure's text, while unhealthy.
    public var lastError: String?
    /// Transactions committed.
    public var commits: Int
    /// Rows written (puts and deletes), after coalescing.
    public var rowsWritten: Int
    /// Durable writes asked for (API changes) and write-behind changes queued.
    public var durableWrites: Int
    public var writeBehindWrites: Int
    /// Write-behind changes replaced by a newer one of the same device before they were written.
    public var coalesced: Int
    /// Failed transactions.
    public var flushErrors: Int
    /// Durable writes answered with an error (the API's 503s).
    public var durableFailures: Int
    /// Duration of each transaction.
    public var commitSeconds: DurationBuckets
    /// Age of write-behind changes when their transaction committed (the window actually kept).
    public var writeBehindAgeSeconds: DurationBuckets
    /// Gauge: changes queued, not committed yet (durable and write-behind, one per device).
    public var queued: Int
    /// Gauge: age of the oldest queued change in seconds (0 when none).
    public var oldestQueuedSeconds: Double
    /// Rows in the store at the last count (nil before the first).
    public var rows: StoreCounts?
}
