import SwarmCore

/// A process hosted by a ``SwarmNode``: the Swift counterpart of a GenServer registered with
/// Swarm. Processes are actors, so their state is isolated; the node feeds them one message at a
/// time, in order, from the process's bounded mailbox (see ``Mailbox``).
///
/// ## Life
/// A process is created by a ``ProcessFactory`` (when the tracker starts a name, or by
/// ``SwarmNode/spawn(kind:arguments:)``), runs until it is stopped (``stop(reason:)``, after which
/// it receives nothing more) or until ``receive(_:)`` throws (a crash). Either way the node
/// reports the end to the tracker, which removes the process's names and group memberships.
///
/// The node tells it its ``ProcessID`` (``started(as:)``) before the first message it feeds it.
///
/// ## Handoff (ARCHITECTURE.md, “Handoff as a transaction”)
/// When the ring moves one of its names to another node, the node asks ``beginHandoff()``
/// (5 s timeout): `.restart` (the default), `.resume(state)` or `.ignore`. A process started by a
/// `.resume` handoff, or recovered from a checkpoint, gets ``endHandoff(state:)`` before any other
/// message. The winner of a name conflict gets ``resolveConflict(state:)`` with the loser's state.
public protocol SwarmProcess: Actor {
    /// This process's id, told once, before its first message (so a process never has to look
    /// itself up). Default: ignored.
    func started(as pid: ProcessID) async
    /// A cast (fire and forget). Throwing ends the process (a crash): its names go.
    func receive(_ message: [UInt8]) async throws
    /// Casts that were queued together, in order, in one turn of the process (the mailbox hands
    /// a run over at once instead of one hop per message). Default: ``receive(_:)`` for each;
    /// a throw ends the process and the casts after the one that threw are not delivered.
    func receive(casts: [[UInt8]]) async throws
    /// A call: the returned bytes travel back to the caller. Throwing fails this call only.
    func call(_ message: [UInt8]) async throws -> [UInt8]
    /// The ring gave this process's name to another node: how should it move?
    func beginHandoff() async -> HandoffAnswer
    /// The first message of a process that resumes a handed-off or checkpointed state.
    func endHandoff(state: [UInt8]) async
    /// This process won a name conflict; `state` is what the loser knew (empty if nothing).
    func resolveConflict(state: [UInt8]) async
    /// This process lost a conflict: its state, handed to the winner's `resolveConflict`.
    /// Default: the `.resume` state of ``beginHandoff()``, else nothing.
    func conflictState() async -> [UInt8]?
    /// The node stops the process; no message follows.
    func stop(reason: Tracker.StopReason) async
}

extension SwarmProcess {
    public func started(as pid: ProcessID) async {}
    public func receive(_ message: [UInt8]) async throws {}
    public func receive(casts: [[UInt8]]) async throws {
        for message in casts { try await receive(message) }
    }
    public func call(_ message: [UInt8]) async throws -> [UInt8] { [] }
    public func beginHandoff() async -> HandoffAnswer { .restart }
    public func endHandoff(state: [UInt8]) async {}
    public func resolveConflict(state: [UInt8]) async {}
    public func conflictState() async -> [UInt8]? {
        if case .resume(let state) = await beginHandoff() { return state }
        return nil
    }
    public func stop(reason: Tracker.StopReason) async {}
}

/// Makes a process of one kind: `(name, arguments)` → process. Registered on every node under
/// the kind name (Swarm's `{m, f, a}`); `name` is empty for ``SwarmNode/spawn(kind:arguments:)``.
/// A factory may throw (the start fails and registration callers see `startFailed`).
public typealias ProcessFactory = @Sendable (_ name: String, _ arguments: [UInt8]) async throws -> any SwarmProcess
