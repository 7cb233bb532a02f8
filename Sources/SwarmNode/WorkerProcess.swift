import SwarmCore

/// A small example process (kind `worker` in `swarm-node` and the tests): it counts casts and
/// carries the count across handoffs, recoveries and conflicts.
///
/// Calls: `ping` → `pong`; `count` / `state` → the count as decimal text; `name` → its name;
/// `fail` → throws (the call fails, the process lives on); anything else is echoed.
/// Casts: every cast adds one; the cast `crash` makes the process crash.
/// Handoff: `.resume(count)`; `endHandoff(state)` sets the count; `resolveConflict(state)`
/// keeps the larger count.
public actor WorkerProcess: SwarmProcess {
    public let name: String
    public private(set) var count: Int = 0
    public private(set) var stoppedReason: Tracker.StopReason?

    public init(name: String) { self.name = name }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    public func receive(_ message: [UInt8]) async throws {
        if message == Array("crash".utf8) { throw Failure(description: "crash requested") }
        count += 1
    }

    public func call(_ message: [UInt8]) async throws -> [UInt8] {
        switch String(decoding: message, as: UTF8.self) {
        case "ping": return Array("pong".utf8)
        case "count", "state": return Array(String(count).utf8)
        case "name": return Array(name.utf8)
        case "fail": throw Failure(description: "failure requested")
        default: return message
        }
    }

    public func beginHandoff() async -> HandoffAnswer { .resume(Array(String(count).utf8)) }

    public func endHandoff(state: [UInt8]) async {
        count = Int(String(decoding: state, as: UTF8.self)) ?? count
    }

    public func resolveConflict(state: [UInt8]) async {
        count = max(count, Int(String(decoding: state, as: UTF8.self)) ?? 0)
    }

    public func stop(reason: Tracker.StopReason) async { stoppedReason = reason }
}
