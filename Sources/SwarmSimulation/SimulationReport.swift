import SwarmCore

/// The outcome of one run.
public struct SimulationReport: Sendable {
    public var seed: UInt64
    public var nodes: Int
    public var operations: Int
    public var faults: Int
    public var events: Int
    public var violations: [String]
    /// Simulated time from the final heal until every invariant held.
    public var convergence: Nanoseconds?
    public var plannedMessages: Int
    public var strategy: String
    /// Restarts of every node from disk (the disk phase), and the acknowledged writes checked
    /// after them.
    public var diskRestarts = 0
    public var writesChecked = 0
    /// The last trace lines (all of them when verbose).
    public var trace: [String]
}
