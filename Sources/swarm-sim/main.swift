#if canImport(Glibc)
import Glibc
#endif
import SwarmCore
import SwarmSimulation

// swarm-sim: run or replay simulator seeds, and the core micro-benchmark.
//
//   swarm-sim --seed 42 --verbose     replay one seed, printing every trace line
//   swarm-sim --seeds 1000 [--from 1] run many seeds, print the summary line
//   swarm-sim --bench                 ring lookups/s and applied remote changes/s

let arguments = Array(CommandLine.arguments.dropFirst())
func value(_ flag: String) -> String? {
    guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}
let verbose = arguments.contains("--verbose")

if arguments.contains("--help") || arguments.contains("-h") {
    print("""
        usage: swarm-sim --seed N [--verbose] [--nodes K] [--ops M]
               swarm-sim --seeds COUNT [--from FIRST]
               swarm-sim --bench
        """)
} else if arguments.contains("--bench") {
    CoreBenchmark.run()
} else if let seedText = value("--seed"), let seed = UInt64(seedText) {
    var settings = SimulationSettings(seed: seed)
    settings.verbose = verbose
    settings.tracker.debug = verbose
    if let nodes = value("--nodes").flatMap(Int.init) { settings.nodeCount = nodes }
    if let ops = value("--ops").flatMap(Int.init) { settings.operations = ops }
    let report = Simulation(settings: settings).run()
    print(SimulationSummary.describe(report))
    if !report.violations.isEmpty {
        if !verbose {
            print("--- last trace lines ---")
            for line in report.trace.suffix(300) { print(line) }
        }
        print("--- violations ---")
        for violation in report.violations { print(violation) }
        exit(1)
    }
} else {
    let count = value("--seeds").flatMap(Int.init) ?? 100
    let first = value("--from").flatMap(UInt64.init) ?? 1
    var summary = SimulationSummary()
    for seed in first..<(first + UInt64(count)) {
        let report = Simulation(settings: SimulationSettings(seed: seed)).run()
        summary.add(report)
        if !report.violations.isEmpty {
            print("seed \(seed): \(report.violations.count) violations, first: \(report.violations[0])")
        }
    }
    print(summary.line)
    print(summary.convergenceLine)
    print(summary.diskLine)
    if summary.violations > 0 { exit(1) }
}
