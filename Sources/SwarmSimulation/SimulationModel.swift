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
        var stateBytes: [UInt8] { Array("\(lineage):\(counter)".utf8) }
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
    }
}
