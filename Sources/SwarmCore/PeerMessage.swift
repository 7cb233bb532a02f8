/// Every message one tracker sends another. The runtime gives each case a stable wire type
/// number (see ARCHITECTURE.md, "Wire format"); the simulator passes them as values.
///
/// Reliability: nothing here assumes delivery. Replication is repaired by sequence gaps and the
/// heartbeat digest; requests, handoff offers and conflict yields carry ids, are answered
/// idempotently and are retried on timeouts.
public enum PeerMessage: Hashable, Sendable {
    /// Liveness, gossip and replication digest: the sender's member list and its own change
    /// sequence number (a receiver that is behind asks for a catch-up).
    case heartbeat(members: [Membership.Member], seq: UInt64)
    /// The sender's own registry changes, contiguous and in order.
    case replicate(changes: [SequencedChange])
    /// "Send me your changes after `seq`" (0 → a snapshot).
    case catchUp(after: UInt64)
    /// The sender's own entries as of `seq`.
    case snapshot(seq: UInt64, entries: [RegistryEntry])

    /// Register `name` with `factory` on the receiver, which the sender believes is the owner.
    case registerRequest(id: RequestID, name: String, factory: FactorySpec, groups: [String], whereisOrRegister: Bool)
    case registerReply(id: RequestID, result: RegistrationResult)
    /// The receiver is not the owner by its ring; the sender re-routes.
    case notOwner(id: RequestID, owner: String?)
    case unregisterRequest(id: RequestID, name: String)
    case groupRequest(id: RequestID, group: String, pid: ProcessID, join: Bool)
    /// Answer to unregister and group requests.
    case requestDone(id: RequestID, error: SwarmError?)

    /// Handoff transaction (see `Tracker+Handoff.swift`).
    case handoffOffer(HandoffOffer)
    case handoffAccepted(id: UInt64, name: String, pid: ProcessID)
    case handoffRejected(id: UInt64, name: String, reason: String)

    /// Conflict resolution: the loser hands its state to the winner, then stops on acceptance.
    case conflictYield(name: String, loser: ProcessID, winner: ProcessID, state: [UInt8]?)
    case conflictYieldReply(name: String, loser: ProcessID, accepted: Bool)

    /// Factory entries whose host died, sent to the node that now owns them so that it restarts
    /// them even if it never saw their registration.
    case orphans([RegistryEntry])
    /// A process's replicated state for its ring successor (ARCHITECTURE.md, “Successor state”).
    case checkpoint(name: String, pid: ProcessID, version: UInt64, state: [UInt8])
    /// A checkpoint the sender waits for: stored like ``checkpoint(name:pid:version:state:)``,
    /// then answered with ``requestDone(id:error:)``.
    case checkpointRequest(id: RequestID, name: String, pid: ProcessID, version: UInt64, state: [UInt8])

    /// Messages addressed to a name, routed to the node the sender believes hosts it.
    case named(name: String, envelopes: [Envelope])
    /// One message for several processes on the receiver (one batch per node for publish).
    case toProcesses(pids: [ProcessID], envelope: Envelope)
    /// Messages that could not be delivered, returned to their sender.
    case undeliverable(envelopes: [Envelope], error: SwarmError)
    /// A drained node announces it is leaving for good (also carried by gossip as `gone`).
    case goodbye
}

/// What moves with a process during a handoff.
public struct HandoffOffer: Hashable, Sendable {
    /// Unique per source node life: `(source incarnation, counter)` folded by the source.
    public var id: UInt64
    public var name: String
    public var factory: FactorySpec
    public var groups: [String]
    /// `.resume` state, nil for `.restart`.
    public var state: [UInt8]?
    public var from: ProcessID

    public init(id: UInt64, name: String, factory: FactorySpec, groups: [String], state: [UInt8]?, from: ProcessID) {
        self.id = id
        self.name = name
        self.factory = factory
        self.groups = groups
        self.state = state
        self.from = from
    }
}

extension PeerMessage {
    /// The id of a request that expects a reply (register, unregister, group), else nil.
    var requestID: RequestID? {
        switch self {
        case .registerRequest(let id, _, _, _, _), .unregisterRequest(let id, _), .groupRequest(let id, _, _, _),
            .checkpointRequest(let id, _, _, _, _):
            return id
        default: return nil
        }
    }
}
