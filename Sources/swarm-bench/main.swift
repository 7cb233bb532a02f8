import Foundation
import TestCertificates

// MARK: - Main

let options = Options.parse(CommandLine.arguments)
let report = Report()
report.sink = options.childOut
let host = ProcessInfo.processInfo
if options.childOut == nil {
    print("swarm-bench: 3 SwarmNodes in ONE process on 127.0.0.1 (port 0), real TCP between them over loopback")
    print("N=\(options.n), runs=\(options.runs), \(options.tls ? "mutual TLS between the nodes" : "plain TCP"), workloads=\(options.workloads.sorted().joined(separator: ",")), \(host.activeProcessorCount) cores")
}

var failures = 0
if let out = options.childOut {
    // One run in this (child) process; the parent reads the figures back.
    do {
        try await runOnce(options, run: 0, report: report)
    } catch {
        print("run failed: \(error)")
        failures += 1
    }
    try JSONEncoder().encode(report.all).write(to: URL(fileURLWithPath: out))
    benchCA?.remove()
    exit(failures == 0 ? 0 : 1)
}
// Every run in a fresh child process: clean heap for W7, no threads or sockets left over from
// the previous cluster.
for run in 0..<options.runs {
    print("run \(run + 1)/\(options.runs) (child process)")
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("swarm-bench-\(getpid())-\(run).json")
    let child = Process()
    child.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    child.arguments = [
        "--n", "\(options.n)", "--runs", "1", "--lookups", "\(options.lookups)",
        "--workloads", options.workloads.sorted().joined(separator: ","), "--child-out", out.path,
    ] + (options.tls ? ["--tls"] : [])
    do {
        try child.run()
        // A run that takes longer than 5 minutes is killed; what it measured so far is kept.
        let deadline = ContinuousClock.now + .seconds(300)
        while child.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(100)) }
        if child.isRunning {
            print("run \(run + 1): still running after 300 s, killed (figures so far kept)")
            kill(child.processIdentifier, SIGKILL)
        }
        child.waitUntilExit()
        if child.terminationStatus != 0 { failures += 1 }
        let figures = try JSONDecoder().decode([Figure].self, from: Data(contentsOf: out))
        report.merge(figures)
        try? FileManager.default.removeItem(at: out)
    } catch {
        failures += 1
        print("run \(run + 1) failed: \(error)")
    }
}

print("")
print("results (median of \(options.runs) run(s); setup; target):")
for figure in report.all {
    let runs = figure.values.map { format($0, figure.unit) }.joined(separator: ", ")
    var line = "\(figure.id)  \(figure.label): \(format(figure.median, figure.unit))  [runs: \(runs)]  setup: \(figure.setup)"
    if let goal = figure.goal {
        line += "  target \(figure.goalText ?? "") \(goal.met(figure.median) ? "✔" : "✘")"
    }
    print(line)
}

if let path = options.json {
    struct Output: Codable {
        var note: String
        var n: Int
        var runs: Int
        var figures: [Entry]
    }
    struct Entry: Codable {
        var id: String
        var label: String
        var setup: String
        var unit: String
        var median: Double?
        var values: [Double?]
        var target: String?
        var met: Bool?
    }
    let entries = report.all.map { figure in
        Entry(
            id: figure.id, label: figure.label, setup: figure.setup, unit: figure.unit,
            median: figure.median.isNaN ? nil : figure.median, values: figure.values.map { $0.isNaN ? nil : $0 },
            target: figure.goalText, met: figure.goal.map { $0.met(figure.median) })
    }
    let output = Output(
        note: "3 SwarmNodes in one process on 127.0.0.1, real TCP over loopback", n: options.n, runs: options.runs,
        figures: entries)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    do {
        try encoder.encode(output).write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    } catch {
        print("could not write \(path): \(error)")
        failures += 1
    }
}
exit(failures == 0 ? 0 : 1)
