import SwarmCore

/// What one simulated run does. Everything not set here is drawn from the seed.
public struct SimulationSettings: Sendable {
    public var seed: UInt64
    /// Nodes at start; nil → 5 to 7, drawn from the seed.
    public var nodeCount: Int?
    /// Workload operations during the chaos phase (at least 200 for the CI seeds).
    public var operations = 220
    /// Inject faults (partitions, crashes, restarts, drains, joins, flapping links, drops).
    public var faults = true
    /// Length of the chaos phase in simulated time.
    public var chaosDuration: Nanoseconds = .seconds(20)
    /// Probability that any one message is lost in the chaos phase (a connection reset).
    public var dropProbability = 0.01
    /// Convergence must happen within this long after the final heal (stated in ARCHITECTURE.md).
    public var convergenceBound: Nanoseconds = .seconds(15)
    /// Print every trace line as it happens.
    public var verbose = false
    /// Keep a trace of the run (the last ``traceCapacity`` lines) in the report. Off by default:
    /// formatting a line for every message is most of a seed's cost, and a run that finds a
    /// violation is run again with the trace on (one seed replays exactly), so a failing seed's
    /// report always has its trace.
    public var trace = false
    /// Trace lines kept for a failure report.
    public var traceCapacity = 4000
    public var tracker = Tracker.Settings()

    public init(seed: UInt64) { self.seed = seed }
}
