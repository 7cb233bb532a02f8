/// A structured dump of one tracker for operators (Swarm's `:sys.get_state(Swarm.Tracker)`):
/// nodes and their membership states, the ring, registry size, pending handoffs and
/// per-peer replication positions. Encodable to JSON by the shells.
public struct TrackerDump: Codable, Hashable, Sendable {
    public struct Node: Codable, Hashable, Sendable {
        public var name: String
        public var incarnation: UInt64
        public var address: String
        public var state: String
        public var reachable: Bool
        public var connected: Bool
        public var inRing: Bool
        public var ringShare: Double
        /// Entries this node hosts, as seen in our view.
        public var names: Int
        /// Our replication position in its change stream, and whether a snapshot established it.
        public var appliedSeq: UInt64?
        public var synced: Bool?
    }

    public struct Handoff: Codable, Hashable, Sendable {
        public var name: String
        public var phase: String
        public var target: String?
        public var heldMessages: Int
    }

    public var node: String
    public var incarnation: UInt64
    public var state: String
    public var strategy: String
    public var hashVersion: UInt16
    public var protocolVersion: UInt16
    public var ringEpoch: UInt64
    public var ringNodes: [String]
    public var nodes: [Node]
    public var registrySize: Int
    public var localNames: Int
    public var contestedNames: Int
    public var ownSeq: UInt64
    public var pendingStarts: Int
    public var outstandingRequests: Int
    public var handoffs: [Handoff]
    public var orphans: Int
    public var standbyStates: Int
    public var draining: Bool
    public var stats: Tracker.Stats
}

extension Tracker.Instance {
    /// A snapshot of this tracker's state for operators.
    public func dump() -> TrackerDump {
        let shares = ring.keySpaceShares()
        var perHost: [String: Int] = [:]
        for entry in registry.view.values { perHost[entry.host, default: 0] += 1 }
        let nodes = membership.sorted.map { member -> TrackerDump.Node in
            let name = member.id.name
            let replica = registry.replica(of: name)
            return TrackerDump.Node(
                name: name, incarnation: member.id.incarnation, address: member.address,
                state: member.state.description,
                reachable: name == me.name || reachable.contains(name),
                connected: name == me.name || connections[name] == member.id,
                inRing: ring.contains(name), ringShare: shares[name] ?? 0,
                names: perHost[name] ?? 0,
                appliedSeq: name == me.name ? nil : replica?.appliedSeq,
                synced: name == me.name ? nil : replica?.synced)
        }
        let handoffList = handoffs.keys.sorted().map { name -> TrackerDump.Handoff in
            let handoff = handoffs[name]!
            switch handoff.phase {
            case .asking:
                return .init(name: name, phase: "asking", target: nil, heldMessages: handoff.held.count)
            case .transferring(let target, _, _, _):
                return .init(name: name, phase: "transferring", target: target.description, heldMessages: handoff.held.count)
            }
        }
        return TrackerDump(
            node: me.name, incarnation: me.incarnation, state: selfState.description,
            strategy: strategy.summary, hashVersion: HashRing.hashVersion, protocolVersion: SwarmProtocol.version,
            ringEpoch: ringEpoch, ringNodes: ring.nodes, nodes: nodes,
            registrySize: registry.count, localNames: localEntries.count, contestedNames: registry.contested.count,
            ownSeq: log.lastSeq, pendingStarts: pendingStarts.count, outstandingRequests: outstanding.count,
            handoffs: handoffList, orphans: orphans.count, standbyStates: standby.count,
            draining: draining, stats: stats)
    }
}
