import SwarmCore

/// The stable frame type number of every message the cluster exchanges.
///
/// These numbers are the wire protocol: never renumber or reuse one. A new message gets a new
/// number; a changed payload layout needs a bump of `SwarmProtocol.version` (checked in the
/// node handshake) so that nodes speaking different layouts refuse to cluster.
/// Frame types `0xFF00...0xFFFF` belong to the transport and are never used here.
///
/// | Type     | Message                                | Payload (see docs/wire-format.md)                          |
/// |----------|----------------------------------------|------------------------------------------------------------|
/// | `0x0001` | `PeerMessage.heartbeat`                | members [Member], seq u64                                  |
/// | `0x0002` | `PeerMessage.replicate`                | changes [SequencedChange]                                  |
/// | `0x0003` | `PeerMessage.catchUp`                  | after u64                                                  |
/// | `0x0004` | `PeerMessage.snapshot`                 | seq u64, entries [RegistryEntry]                           |
/// | `0x0005` | `PeerMessage.registerRequest`          | id u64, name str, factory FactorySpec, groups [str], whereisOrRegister bool |
/// | `0x0006` | `PeerMessage.registerReply`            | id u64, result RegistrationResult                          |
/// | `0x0007` | `PeerMessage.notOwner`                 | id u64, owner str?                                         |
/// | `0x0008` | `PeerMessage.unregisterRequest`        | id u64, name str                                           |
/// | `0x0009` | `PeerMessage.groupRequest`             | id u64, group str, pid ProcessID, join bool                |
/// | `0x000A` | `PeerMessage.requestDone`              | id u64, error SwarmError?                                  |
/// | `0x000B` | `PeerMessage.handoffOffer`             | HandoffOffer                                               |
/// | `0x000C` | `PeerMessage.handoffAccepted`          | id u64, name str, pid ProcessID                            |
/// | `0x000D` | `PeerMessage.handoffRejected`          | id u64, name str, reason str                               |
/// | `0x000E` | `PeerMessage.conflictYield`            | name str, loser ProcessID, winner ProcessID, state bytes?  |
/// | `0x000F` | `PeerMessage.conflictYieldReply`       | name str, loser ProcessID, accepted bool                   |
/// | `0x0010` | `PeerMessage.orphans`                  | entries [RegistryEntry]                                    |
/// | `0x0011` | `PeerMessage.checkpoint`               | name str, pid ProcessID, version u64, state bytes          |
/// | `0x0012` | `PeerMessage.named`                    | name str, envelopes [Envelope]                             |
/// | `0x0013` | `PeerMessage.toProcesses`              | pids [ProcessID], envelope Envelope                        |
/// | `0x0014` | `PeerMessage.undeliverable`            | envelopes [Envelope], error SwarmError                     |
/// | `0x0015` | `PeerMessage.goodbye`                  | (empty)                                                    |
/// | `0x0016` | `PeerMessage.checkpointRequest`        | id u64, name str, pid ProcessID, version u64, state bytes  |
/// | `0x0100` | `NodeWireMessage.callReply`            | callID u64, result: u8 tag (0 success bytes, 1 failure SwarmError) |
///
/// `0x0001...0x00FF` are tracker (``PeerMessage``) messages; `0x0100...0x01FF` are runtime
/// (``NodeWireMessage``) messages.
public enum WireMessageType: UInt16, CaseIterable, Sendable, CustomStringConvertible {
    case heartbeat = 0x0001
    case replicate = 0x0002
    case catchUp = 0x0003
    case snapshot = 0x0004
    case registerRequest = 0x0005
    case registerReply = 0x0006
    case notOwner = 0x0007
    case unregisterRequest = 0x0008
    case groupRequest = 0x0009
    case requestDone = 0x000A
    case handoffOffer = 0x000B
    case handoffAccepted = 0x000C
    case handoffRejected = 0x000D
    case conflictYield = 0x000E
    case conflictYieldReply = 0x000F
    case orphans = 0x0010
    case checkpoint = 0x0011
    case named = 0x0012
    case toProcesses = 0x0013
    case undeliverable = 0x0014
    case goodbye = 0x0015
    case checkpointRequest = 0x0016

    case callReply = 0x0100

    /// True for the tracker's own messages (``PeerMessage``), false for runtime ones
    /// (``NodeWireMessage``).
    public var isPeerMessage: Bool { self.rawValue < 0x0100 }

    /// The message type of `message`.
    public init(_ message: PeerMessage) {
        switch message {
        case .heartbeat: self = .heartbeat
        case .replicate: self = .replicate
        case .catchUp: self = .catchUp
        case .snapshot: self = .snapshot
        case .registerRequest: self = .registerRequest
        case .registerReply: self = .registerReply
        case .notOwner: self = .notOwner
        case .unregisterRequest: self = .unregisterRequest
        case .groupRequest: self = .groupRequest
        case .requestDone: self = .requestDone
        case .handoffOffer: self = .handoffOffer
        case .handoffAccepted: self = .handoffAccepted
        case .handoffRejected: self = .handoffRejected
        case .conflictYield: self = .conflictYield
        case .conflictYieldReply: self = .conflictYieldReply
        case .orphans: self = .orphans
        case .checkpoint: self = .checkpoint
        case .named: self = .named
        case .toProcesses: self = .toProcesses
        case .undeliverable: self = .undeliverable
        case .goodbye: self = .goodbye
        case .checkpointRequest: self = .checkpointRequest
        }
    }

    /// The message type of `message`.
    public init(_ message: NodeWireMessage) {
        switch message {
        case .callReply: self = .callReply
        }
    }

    /// `replicate (0x0002)`.
    public var description: String { "\(self.caseName) (\(hex(self.rawValue)))" }

    private var caseName: String {
        switch self {
        case .heartbeat: return "heartbeat"
        case .replicate: return "replicate"
        case .catchUp: return "catchUp"
        case .snapshot: return "snapshot"
        case .registerRequest: return "registerRequest"
        case .registerReply: return "registerReply"
        case .notOwner: return "notOwner"
        case .unregisterRequest: return "unregisterRequest"
        case .groupRequest: return "groupRequest"
        case .requestDone: return "requestDone"
        case .handoffOffer: return "handoffOffer"
        case .handoffAccepted: return "handoffAccepted"
        case .handoffRejected: return "handoffRejected"
        case .conflictYield: return "conflictYield"
        case .conflictYieldReply: return "conflictYieldReply"
        case .orphans: return "orphans"
        case .checkpoint: return "checkpoint"
        case .named: return "named"
        case .toProcesses: return "toProcesses"
        case .undeliverable: return "undeliverable"
        case .goodbye: return "goodbye"
        case .checkpointRequest: return "checkpointRequest"
        case .callReply: return "callReply"
        }
    }
}
