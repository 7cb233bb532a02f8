import SwarmCore

/// Totals over many seeds, printed as the one line CI looks for.
public struct SimulationSummary: Sendable {
    public var seeds = 0
    public var operations = 0
    public var faults = 0
    public var violations = 0
    public var failingSeeds: [UInt64] = []
    public var maxConvergence: Nanoseconds = 0
    public var convergenceSamples: [Nanoseconds] = []
    public var plannedMessages = 0
    /// Restarts of every node from disk, and acknowledged writes checked after them.
    public var diskRestarts = 0
    public var writesChecked = 0

    public init() {}

    public mutating func add(_ report: SimulationReport) {
        seeds += 1
        operations += report.operations
        faults += report.faults
        violations += report.violations.count
        plannedMessages += report.plannedMessages
        diskRestarts += report.diskRestarts
        writesChecked += report.writesChecked
        if !report.violations.isEmpty { failingSeeds.append(report.seed) }
        if let convergence = report.convergence {
            maxConvergence = max(maxConvergence, convergence)
            convergenceSamples.append(convergence)
        }
    }

    /// `simulation: <S> seeds, <O> operations, <F> faults, <V> violations`
    public var line: String {
        "simulation: \(seeds) seeds, \(operations) operations, \(faults) faults, \(violations) violations"
    }

    public var convergenceLine: String {
        let sorted = convergenceSamples.sorted()
        let median = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        return "convergence after heal: median \(Simulation.seconds(median)), max \(Simulation.seconds(maxConvergence)); planned-phase messages checked: \(plannedMessages)"
    }

    /// `restart everything from disk: <R> restarts, <W> acknowledged writes checked`
    public var diskLine: String {
        "restart everything from disk: \(diskRestarts) restarts, \(writesChecked) acknowledged writes checked (none may be lost)"
    }

    public static func describe(_ report: SimulationReport) -> String {
        "seed \(report.seed): \(report.nodes) nodes (\(report.strategy)), \(report.operations) operations, \(report.faults) faults, \(report.events) events, convergence \(report.convergence.map(Simulation.seconds) ?? "never"), \(report.plannedMessages) planned-phase messages, \(report.writesChecked) acknowledged writes checked after \(report.diskRestarts) restart(s) from disk, \(report.violations.count) violations"
    }
}
