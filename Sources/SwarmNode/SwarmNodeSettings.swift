import Logging
import SwarmCore
import SwarmTransport

/// Configuration of a ``SwarmNode``. Every field but the name and the secret has a documented
/// default.
public struct SwarmNodeSettings: Sendable {
    /// The node name (ring placement uses it; unique in the cluster), e.g. `gw-1`.
    public var name: String
    /// Cluster listen address. Default `127.0.0.1`.
    public var host = "127.0.0.1"
    /// Cluster listen port; 0 picks a free one (read back with ``SwarmNode/address``). Default 0.
    public var port = 0
    /// Seed addresses (`host:port`), dialled until a member at that address is connected.
    public var seeds: [String] = []
    /// DNS names (`host:port`) re-resolved every ``discoveryInterval``; every address they
    /// resolve to is dialled like a seed (a Kubernetes headless service lists every peer pod).
    /// Default none.
    public var discovery: [String] = []
    /// How often the ``discovery`` names are resolved again. Default 5 s.
    public var discoveryInterval: Duration = .seconds(5)
    /// Shared cluster secret (at least 16 bytes).
    public var secret: ClusterSecret
    /// A layer in front of the cluster handshake on every connection: mutual TLS from
    /// `SwarmTLS` (`ClusterTLS.security(files:)`), or nil for plain TCP. Every node of a cluster
    /// makes the same choice. Default nil. See ``TransportSettings/security``.
    public var security: ChannelSecurity?
    /// The tracker's tunables (tick, heartbeat, failure timeout…).
    public var tracker = Tracker.Settings()
    /// Placement strategy. Default: the ring.
    public var strategy: any PlacementStrategy = RingStrategy()
    /// Node allow/deny lists. Default: the built-in deny list only.
    public var filter: NodeFilter = .default
    /// Bound of each process's mailbox (casts and calls waiting). Default 10,000; see ``Mailbox``.
    public var mailboxCapacity = 10_000
    /// Deadline of a factory start; past it the start fails (`timeout`). Default 5 s.
    public var startTimeout: Duration = .seconds(5)
    /// Deadline of a process's `beginHandoff` / conflict-state answer. Default 5 s (ARCHITECTURE.md, “Handoff as a transaction”).
    public var handoffTimeout: Duration = .seconds(5)
    /// Longest graceful shutdown waits for the drain to complete before it stops anyway.
    /// Default 30 s.
    public var drainTimeout: Duration = .seconds(30)
    /// Receives node lifecycle, peer and error lines; tracker traces at `debug`
    /// (set ``Tracker/Settings/debug`` to get them).
    public var logger = Logger(label: "swarm.node")

    /// Settings for node `name` with `secret`, defaults elsewhere.
    public init(name: String, secret: ClusterSecret) {
        self.name = name
        self.secret = secret
    }
}

/// What a node tells about the checkpoints it stores for peers' processes (``SwarmNode/observeStandby(_:)``).
public struct StandbyObserver: Sendable {
    /// A fire-and-forget checkpoint of `name` (state bytes as the process gave them); called on
    /// the node's actor: must return at once.
    public var stored: @Sendable (_ name: String, _ state: [UInt8]) -> Void
    /// An acknowledged checkpoint: awaited (off the input loop) before the tracker takes it and
    /// acknowledges it to the host.
    public var storedDurably: @Sendable (_ name: String, _ state: [UInt8]) async -> Void

    public init(
        stored: @escaping @Sendable (_ name: String, _ state: [UInt8]) -> Void,
        storedDurably: @escaping @Sendable (_ name: String, _ state: [UInt8]) async -> Void
    ) {
        self.stored = stored
        self.storedDurably = storedDurably
    }
}

/// Errors of the node runtime itself (the tracker's are ``SwarmError``).
public enum SwarmNodeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The node is not running (not started yet, or stopped).
    case notRunning(String)
    /// An address is not `host:port`.
    case invalidAddress(String)

    public var description: String {
        switch self {
        case .notRunning(let state): return "node is not running (\(state))"
        case .invalidAddress(let text): return "invalid address '\(text)' (expected host:port)"
        }
    }
}

extension SwarmError {
    /// How a failed call travels on the wire: `SwarmError` has no case of its own for "the
    /// process threw, ended or its mailbox was full", so the runtime uses `startFailed` with a
    /// text that starts with `call failed:` (kept additive: no new wire tag).
    static func callFailed(_ why: String) -> SwarmError { .startFailed("call failed: \(why)") }
}

/// One (name, process) pair of ``SwarmNode/registered()``.
public struct Registration: Hashable, Sendable {
    public var name: String
    public var pid: ProcessID
}

/// The outcome of ``SwarmNode/multiCall(_:_:timeout:)``: replies of the members that answered in
/// time, and how many did not (failed, timed out or were unreachable). Never throws for members.
/// What ``SwarmNode/multiCall(_:_:timeout:)`` collected: every member is in exactly one list.
public struct MultiCallResult: Sendable {
    /// Members that answered, with their replies, sorted by process id.
    public var replies: [(pid: ProcessID, reply: [UInt8])]
    /// Members whose call failed or timed out, sorted.
    public var failed: [ProcessID]
    /// How many members did not answer.
    public var failures: Int { failed.count }

    public init(replies: [(pid: ProcessID, reply: [UInt8])], failed: [ProcessID]) {
        self.replies = replies
        self.failed = failed
    }
}

/// Splits `host:port` (also `[v6]:port`).
func splitAddress(_ address: String) -> (host: String, port: Int)? {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
        (0...65535).contains(port)
    else { return nil }
    var host = String(address[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard !host.isEmpty else { return nil }
    return (host, port)
}
