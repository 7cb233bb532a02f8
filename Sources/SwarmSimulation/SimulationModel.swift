import SwarmCore

// The simulator's model of the world outside the trackers: nodes, the processes they host, the
// messages the workload sent (for the exactly-once checks) and the timed events that drive a run.
extension Simulation {
    /// One node incarnation. A class, so that an input mutates its tracker in place (a tracker
    /// copied out of a dictionary and written back copies every table it changed).
    final class Node {
        let name: String
        let id: NodeID
        var alive: Bool
        var tracker: Tracker.Instance
        var nextLocal: UInt64 = 1

        init(name: String, id: NodeID, alive: Bool, tracker: Tracker.Instance) {
            self.name = name
            self.id = id
            self.alive = alive
            self.tracker = tracker
        }
    }

    struct Process {
        var pid: ProcessID
        var name: String
        var managed: Bool
        var counter: UInt64 = 0
        var lineage: String
        var started: Nanoseconds
        /// When set, the first delivery must be `endHandoff` with exactly this state.
        var expectFirst: [UInt8]?
        var receivedAnything = false
        /// The acknowledged writes (API writes) this state holds, by token: a grow-only set that
        /// handoffs, checkpoints, conflict merges and recovery from disk carry and unite, as the
        /// gateway's twin carries its desired versions.
        var tokens: Set<UInt64> = []
        /// `lineage:counter`, then `#token,token…` when it holds any.
        var stateBytes: [UInt8] {
            guard !tokens.isEmpty else { return Array("\(lineage):\(counter)".utf8) }
            return Array("\(lineage):\(counter)#\(tokens.sorted().map(String.init).joined(separator: ","))".utf8)
        }

        /// Takes `state` (a ``stateBytes`` of some process) as this process's own.
        mutating func adopt(_ state: [UInt8]) {
            let (lineage, counter, tokens) = Self.parse(state)
            if let lineage { self.lineage = lineage }
            self.counter = counter
            self.tokens = tokens
        }

        /// The parts of a ``stateBytes``.
        static func parse(_ state: [UInt8]) -> (lineage: String?, counter: UInt64, tokens: Set<UInt64>) {
            var body = state[...]
            var tokens: Set<UInt64> = []
            if let hash = state.firstIndex(of: UInt8(ascii: "#")) {
                body = state[..<hash]
                tokens = Set(state[(hash + 1)...].split(separator: UInt8(ascii: ",")).compactMap { UInt64(String(decoding: $0, as: UTF8.self)) })
            }
            guard let separator = body.lastIndex(of: UInt8(ascii: ":")) else { return (nil, 0, tokens) }
            let lineage = String(decoding: body[..<separator], as: UTF8.self)
            return (lineage, UInt64(String(decoding: body[(separator + 1)...], as: UTF8.self)) ?? 0, tokens)
        }
    }

    struct EnvelopeRecord {
        var name: String
        var planned: Bool
        var delivered = 0
        var excused = false
        var failed = false
        /// Addressed to one name (exactly one delivery) rather than to a set of processes.
        var named = true
        var receivers: Set<ProcessID> = []
    }

    /// A directed link between two node names.
    struct Link: Hashable {
        var from: String
        var to: String

        init(_ from: String, _ to: String) {
            self.from = from
            self.to = to
        }
    }

    enum Event {
        case tick(NodeID)
        case deliver(from: NodeID, to: NodeID, PeerMessage)
        case connect(from: NodeID, to: String)
        case disconnect(at: NodeID, peer: NodeID)
        case started(NodeID, Tracker.StartOrder, fail: Bool)
        case handoffAnswer(NodeID, token: UInt64, pid: ProcessID)
        case stateCollected(NodeID, token: UInt64, pid: ProcessID)
        case operation
        case fault
        case plannedCast
        case setLink(String, String, blocked: Bool)
        /// A node's write-behind rows reach its disk (``Simulation/flushDisk(_:)``).
        case flushDisk(NodeID)
        /// One operation of the disk phase's workload.
        case diskOperation
        /// A restarted node reads its disk and sends every row to its owner.
        case recoverFromDisk(NodeID)
        /// A recovery registration of a name is (re)tried from its owner.
        case recoveryRegister(String, attempt: Int)
        /// A process checkpoints the state a handoff, recovery or conflict merge gave it.
        case checkpointAfterChange(ProcessID)
    }
}
