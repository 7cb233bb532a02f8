/// A monotonic instant in nanoseconds, always passed in by the caller (the core has no clock).
public typealias Instant = UInt64

/// A duration in nanoseconds.
public typealias Nanoseconds = UInt64

extension UInt64 {
    /// `n` milliseconds expressed in nanoseconds.
    @inlinable public static func ms(_ n: UInt64) -> UInt64 { n * 1_000_000 }
    /// `n` seconds expressed in nanoseconds.
    @inlinable public static func seconds(_ n: UInt64) -> UInt64 { n * 1_000_000_000 }
}

/// How a name's process is (re)started: the factory kind, registered on every node under that
/// kind name, plus opaque serialised arguments.
public struct FactorySpec: Hashable, Sendable, CustomStringConvertible {
    public var kind: String
    public var arguments: [UInt8]

    public init(kind: String, arguments: [UInt8] = []) {
        self.kind = kind
        self.arguments = arguments
    }

    public var description: String { "\(kind)(\(arguments.count)B)" }
}

/// A message addressed to a name or a process, opaque to the core. The core only holds,
/// forwards and delivers envelopes; it never looks inside the payload.
public struct Envelope: Hashable, Sendable {
    /// Unique per sending node life (the sender numbers its envelopes).
    public var id: UInt64
    /// The node that sent it (undeliverable notices go back there).
    public var sender: NodeID
    /// For calls: the caller's reply token on `sender`. Nil for casts.
    public var callID: UInt64?
    public var payload: [UInt8]
    /// How many times a node forwarded it because its view was stale (loop guard).
    public var hops: UInt8

    public init(id: UInt64, sender: NodeID, callID: UInt64? = nil, payload: [UInt8], hops: UInt8 = 0) {
        self.id = id
        self.sender = sender
        self.callID = callID
        self.payload = payload
        self.hops = hops
    }
}

/// Token the shell uses to match a caller with the tracker's eventual reply.
public typealias RequestID = UInt64

/// Errors visible to API callers.
public enum SwarmError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No node may host the name (empty ring, or quorum not met).
    case noNodeAvailable
    /// The factory kind is not registered on the node that had to start it.
    case unknownFactory(String)
    /// The factory threw or returned no process.
    case startFailed(String)
    /// The name is not registered.
    case unknownName(String)
    /// The process has no registration (joining or leaving a group needs one).
    case notRegistered(ProcessID)
    /// `register existing` needs a process hosted on this node.
    case notLocal(ProcessID)
    /// The name is being started, handed off or resolved right now; retry.
    case nameInTransition(String)
    /// No answer within the deadline.
    case timeout
    /// Too many re-routings while the ring was changing.
    case tooManyAttempts
    /// The node is draining and accepts no new registrations.
    case draining

    public var description: String {
        switch self {
        case .noNodeAvailable: return "no node available to host the name"
        case .unknownFactory(let kind): return "unknown factory kind '\(kind)'"
        case .startFailed(let why): return "process start failed: \(why)"
        case .unknownName(let name): return "unknown name '\(name)'"
        case .notRegistered(let pid): return "process \(pid) has no registration"
        case .notLocal(let pid): return "process \(pid) is not hosted on this node"
        case .nameInTransition(let name): return "name '\(name)' is in transition; retry"
        case .timeout: return "timed out"
        case .tooManyAttempts: return "too many attempts while the ring was changing"
        case .draining: return "node is draining"
        }
    }
}

/// The answer of a registration request.
public enum RegistrationResult: Hashable, Sendable {
    /// The name was registered to this (new) process.
    case registered(ProcessID)
    /// The name was already registered (same answer from every node).
    case alreadyRegistered(ProcessID)
    case failed(SwarmError)

    /// The process behind the name, whichever way it got there.
    public var pid: ProcessID? {
        switch self {
        case .registered(let pid), .alreadyRegistered(let pid): return pid
        case .failed: return nil
        }
    }
}

/// The answer a process gives to `beginHandoff` (Swarm's `{:swarm, :begin_handoff}`).
public enum HandoffAnswer: Hashable, Sendable {
    /// Stop here and start fresh on the new owner from the factory.
    case restart
    /// Stop here; the new process receives `endHandoff(state)` as its first message.
    case resume([UInt8])
    /// Stay on this node.
    case ignore
    /// The process failed or timed out answering; the handoff is retried later.
    case failed(String)
}
