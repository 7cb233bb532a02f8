import SwarmCore

// The trace: a ring of the last `traceCapacity` lines (every line when verbose), printed for a
// failing seed, and the violation log. Trace lines are only formatted when the run keeps a trace
// (``SimulationSettings/trace`` or `verbose`); a run without one that finds a violation is run
// again with it (see ``Simulation/run()``).
extension Simulation {
    func violate(_ text: String) {
        violations.append("t=\(Self.seconds(now)) \(text)")
        trace("VIOLATION: \(text)")
    }

    func note(_ text: @autoclosure () -> String) { trace(text()) }

    func trace(_ text: @autoclosure () -> String) {
        guard tracing else { return }
        let line = "t=\(Self.seconds(now)) \(text())"
        if settings.verbose { print(line) }
        if traceLines.count < settings.traceCapacity {
            traceLines.append(line)
        } else {
            traceLines[traceStart] = line
            traceStart = (traceStart + 1) % settings.traceCapacity
        }
    }

    func orderedTrace() -> [String] { Array(traceLines[traceStart...] + traceLines[..<traceStart]) }

    public static func seconds(_ ns: Nanoseconds) -> String {
        let ms = ns / 1_000_000
        let fraction = String(ms % 1000)
        return "\(ms / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)s"
    }

    static func describe(_ message: PeerMessage) -> String {
        switch message {
        case .heartbeat(let members, let seq): return "heartbeat(\(members.count) members, seq \(seq))"
        case .replicate(let changes): return "replicate(\(changes.first?.seq ?? 0)…\(changes.last?.seq ?? 0))"
        case .snapshot(let seq, let entries): return "snapshot(seq \(seq), \(entries.count) entries)"
        case .named(let name, let batch): return "named(\(name), #\(batch.map(\.id)))"
        default: return "\(message)"
        }
    }
}
