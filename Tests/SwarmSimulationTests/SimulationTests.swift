import SwarmCore
import SwarmSimulation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The seeded cluster simulation: real tracker instances, simulated network and clock.
///
/// `SWARM_SIM_SEEDS` raises the seed count (default 1,000); `SWARM_SIM_FIRST_SEED` moves the
/// window. A failing seed prints its trace; replay it alone with
/// `swift run -c release swarm-sim --seed <N> --verbose`.
@Suite("Simulation")
struct SimulationTests {
    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    @Test("many seeds converge with no violations")
    func manySeeds() async {
        let count = Self.environment("SWARM_SIM_SEEDS").flatMap(Int.init) ?? 1000
        let first = Self.environment("SWARM_SIM_FIRST_SEED").flatMap(UInt64.init) ?? 1
        // Seeds are independent: run one worker per core, each seed on its own simulator.
        let workers = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let reports = await withTaskGroup(of: [SimulationReport].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var mine: [SimulationReport] = []
                    var seed = first + UInt64(worker)
                    while seed < first + UInt64(count) {
                        mine.append(Simulation(settings: SimulationSettings(seed: seed)).run())
                        seed += UInt64(workers)
                    }
                    return mine
                }
            }
            var all: [SimulationReport] = []
            for await part in group { all.append(contentsOf: part) }
            return all.sorted { $0.seed < $1.seed }
        }
        var summary = SimulationSummary()
        for report in reports {
            let seed = report.seed
            summary.add(report)
            if !report.violations.isEmpty {
                print("seed \(seed) FAILED — replay with: swift run -c release swarm-sim --seed \(seed) --verbose")
                print(SimulationSummary.describe(report))
                for line in report.trace.suffix(120) { print("  \(line)") }
                for violation in report.violations.prefix(10) { print("  VIOLATION \(violation)") }
            }
        }
        print(summary.line)
        print(summary.convergenceLine)
        print(summary.diskLine)
        #expect(summary.seeds == count)
        #expect(summary.diskRestarts == count && summary.writesChecked > count, "the restart from disk ran in every seed and checked writes")
        #expect(summary.operations >= count * 200)
        #expect(summary.violations == 0, "failing seeds: \(summary.failingSeeds.prefix(20))")
    }

    @Test("a seed replays exactly")
    func replay() {
        var traced = SimulationSettings(seed: 4242)
        traced.trace = true
        let a = Simulation(settings: traced).run()
        let b = Simulation(settings: traced).run()
        #expect(a.events == b.events)
        #expect(!a.trace.isEmpty)
        #expect(a.trace == b.trace)
        #expect(a.violations == b.violations)
        // Without the trace (the default) the run is the same run.
        let untraced = Simulation(settings: SimulationSettings(seed: 4242)).run()
        #expect(untraced.events == a.events)
        #expect(untraced.convergence == a.convergence)
        #expect(untraced.violations == a.violations)
        #expect(untraced.trace.isEmpty)
    }

    @Test("the simulator reports what it found: a cluster with no faults converges fast")
    func quietCluster() {
        var settings = SimulationSettings(seed: 7)
        settings.faults = false
        settings.nodeCount = 5
        let report = Simulation(settings: settings).run()
        #expect(report.violations.isEmpty, "\(report.violations)")
        #expect(report.faults == 0)
        #expect((report.convergence ?? .max) <= .seconds(2))
    }
}
