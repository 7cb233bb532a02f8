/// Decides which node hosts a name, given the ring of `up` nodes.
///
/// Every node must run the same strategy with the same settings (it is part of the cluster
/// configuration). Returning nil means no node may host the name now: registrations fail with
/// ``SwarmError/noNodeAvailable`` and running processes stop.
public protocol PlacementStrategy: Sendable {
    func owner(of name: String, on ring: HashRing) -> String?
    /// A short description for dumps and logs.
    var summary: String { get }
}

/// The default: the consistent hash ring decides.
public struct RingStrategy: PlacementStrategy {
    public init() {}
    public func owner(of name: String, on ring: HashRing) -> String? { ring.owner(of: name) }
    public var summary: String { "ring" }
}

/// The ring, but only while at least `quorumSize` nodes are up (this node included). The
/// minority side of a partition maps every name to no node, so it stops its processes and the
/// majority restarts them: there is never one copy per side.
///
/// Operator rule: quorum = floor(N/2) + 1 for N nodes, and never run more than 2 × quorum − 1.
public struct StaticQuorumRingStrategy: PlacementStrategy {
    public let quorumSize: Int

    /// - Precondition: `quorumSize > 0` (configuration validation rejects other values first).
    public init(quorumSize: Int) {
        precondition(quorumSize > 0, "static quorum size must be positive, got \(quorumSize)")
        self.quorumSize = quorumSize
    }

    public func owner(of name: String, on ring: HashRing) -> String? {
        ring.nodes.count >= quorumSize ? ring.owner(of: name) : nil
    }

    public var summary: String { "static-quorum-ring(\(quorumSize))" }
}
