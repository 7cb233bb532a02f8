/// The cluster member list, gossiped between nodes and merged as a join-semilattice.
///
/// Each node is the only author of its own record: it announces `joining`, then `up`, then
/// `draining`, then `gone`, bumping ``Member/version`` at each step. Other nodes only relay.
/// Merge rule (commutative, associative, idempotent, so gossip converges in any order):
/// higher incarnation wins (the old life is over); same incarnation → higher version wins;
/// same version → the later state wins.
///
/// Whether a node is *reachable* is not gossiped: every node judges that itself from heartbeats
/// (see the tracker). The ring is built from members that are `up`, admitted by the
/// ``NodeFilter`` and reachable from here, so two nodes that see the same membership and the
/// same reachability build the identical ring.
public struct Membership: Sendable, Equatable {
    public enum State: UInt8, Sendable, Comparable, CustomStringConvertible, CaseIterable {
        case joining = 0
        case up = 1
        case draining = 2
        case gone = 3

        public static func < (lhs: State, rhs: State) -> Bool { lhs.rawValue < rhs.rawValue }

        public var description: String {
            switch self {
            case .joining: return "joining"
            case .up: return "up"
            case .draining: return "draining"
            case .gone: return "gone"
            }
        }
    }

    public struct Member: Sendable, Hashable, CustomStringConvertible {
        public var id: NodeID
        /// Where to dial it (`host:port`); opaque to the core.
        public var address: String
        public var state: State
        public var version: UInt64

        public init(id: NodeID, address: String, state: State, version: UInt64) {
            self.id = id
            self.address = address
            self.state = state
            self.version = version
        }

        /// True when `self` supersedes `other` under the merge rule.
        public func supersedes(_ other: Member) -> Bool {
            if id.incarnation != other.id.incarnation { return id.incarnation > other.id.incarnation }
            if version != other.version { return version > other.version }
            return state > other.state
        }

        public var description: String { "\(id)[\(state)#\(version)]" }
    }

    /// Members by node name (one record per name: the newest incarnation).
    public private(set) var members: [String: Member] = [:]

    public init() {}

    public subscript(name: String) -> Member? { members[name] }

    /// Merges one record; returns the record it replaced (or a placeholder-free nil when it was
    /// new) when something changed, so the caller can react to a new incarnation or state.
    @discardableResult
    public mutating func merge(_ incoming: Member) -> (changed: Bool, previous: Member?) {
        if let current = members[incoming.id.name] {
            guard incoming.supersedes(current) else { return (false, current) }
            members[incoming.id.name] = incoming
            return (true, current)
        }
        members[incoming.id.name] = incoming
        return (true, nil)
    }

    /// All records sorted by name (stable gossip payloads and dumps).
    public var sorted: [Member] { members.values.sorted { $0.id.name < $1.id.name } }
}
