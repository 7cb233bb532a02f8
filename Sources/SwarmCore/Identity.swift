/// Identities shared by every layer: nodes, processes, names.
///
/// A node is identified by its configured name (for example `gw-1@127.0.0.1:7946`) plus an
/// *incarnation*, a number chosen fresh at every start, so a restarted node is never confused with
/// its previous life. Ring placement uses the name only, so a restarted node owns the same names.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var name: String
    public var incarnation: UInt64

    public init(name: String, incarnation: UInt64) {
        self.name = name
        self.incarnation = incarnation
    }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool {
        if lhs.name != rhs.name { return lhs.name < rhs.name }
        return lhs.incarnation < rhs.incarnation
    }

    public var description: String { "\(name)/\(incarnation)" }
}

/// A process id: the hosting node (with its incarnation) and a number local to that node life.
/// It can be sent across the network and compared totally (used by the conflict tie-break).
public struct ProcessID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var node: NodeID
    public var local: UInt64

    public init(node: NodeID, local: UInt64) {
        self.node = node
        self.local = local
    }

    public static func < (lhs: ProcessID, rhs: ProcessID) -> Bool {
        if lhs.node != rhs.node { return lhs.node < rhs.node }
        return lhs.local < rhs.local
    }

    public var description: String { "<\(node.name)/\(node.incarnation).\(local)>" }
}

/// Version constants carried in the node handshake: nodes that disagree refuse to cluster.
public enum SwarmProtocol {
    /// Version of the peer-to-peer tracker protocol (message set and semantics).
    public static let version: UInt16 = 1
}
