import Foundation
import SwarmJSON
import Testing

@testable import Gateway

@Suite("Queued commands: the pure state")
struct QueuedCommandTests {
    @Test("queued → sent → answered; TTL → expired; reply deadline → failed; in order")
    func lifecycle() throws {
        var state = DeviceState(id: "d")
        let aResult = state.enqueueCommand(id: "a", name: "reboot", body: ["x": 1], ttl: 10_000, replyWindow: 5_000, at: 1_000)
        let a = try #require(aResult)
        #expect(state.enqueueCommand(id: "b", name: "blink", body: [:], ttl: 2_000, replyWindow: 5_000, at: 1_001) != nil)
        #expect(state.enqueueCommand(id: "c", name: "ping", body: [:], ttl: 60_000, replyWindow: 1_000, at: 1_002) != nil)
        #expect(a.status == .queued && a.expiresAt == 11_000)
        #expect(state.pendingCommands == 3)
        #expect(state.nextCommandDeadline == 3_001)
        #expect(state.commandsToSend(at: 2_000).map(\.id) == ["a", "b", "c"])
        // b's TTL passes: never sent.
        #expect(state.expireCommands(at: 3_001).map(\.id) == ["b"])
        #expect(state.commandsToSend(at: 3_001).map(\.id) == ["a", "c"])
        #expect(state.commands[1].status == .expired && state.commands[1].updatedAt == 3_001)
        state.markCommandSent("a", at: 4_000)
        state.markCommandSent("c", at: 4_000)
        #expect(state.commandsToSend(at: 4_000).isEmpty)
        // a may answer until its TTL (11 s), c until sentAt + 1 s < its TTL? no: the later of the two.
        #expect(state.commands[0].answerBy == 11_000)
        #expect(state.commands[2].answerBy == 61_002)
        let answeredResult = state.answerCommand("a", payload: Array(#"{"ok":true}"#.utf8), limit: 1024, at: 5_000)
        let answered = try #require(answeredResult)
        #expect(answered.status == .answered && answered.reply == ["ok": true])
        #expect(state.answerCommand("a", payload: Array("{}".utf8), limit: 1024, at: 5_001) == nil, "answered once")
        #expect(state.answerCommand("b", payload: Array("{}".utf8), limit: 1024, at: 5_001) == nil, "an expired command is never answered")
        #expect(state.answerCommand("zz", payload: Array("{}".utf8), limit: 1024, at: 5_001) == nil)
        #expect(state.expireCommands(at: 61_002).map(\.id) == ["c"])
        #expect(state.commands[2].status == .failed && state.commands[2].error?.contains("no reply") == true)
        #expect(state.nextCommandDeadline == nil)
        #expect(state.pendingCommands == 0)
        // A reply that is not JSON fails the command.
        _ = state.enqueueCommand(id: "d", name: "x", body: [:], ttl: 10_000, replyWindow: 1_000, at: 70_000)
        state.markCommandSent("d", at: 70_000)
        let badResult = state.answerCommand("d", payload: Array("not json".utf8), limit: 1024, at: 70_001)
        let bad = try #require(badResult)
        #expect(bad.status == .failed && bad.error?.contains("not JSON") == true)
    }

    @Test("at most 100 pending; finished ones trimmed to the newest 20")
    func limits() {
        var state = DeviceState(id: "d")
        for index in 0..<DeviceState.maxPendingCommands {
            #expect(state.enqueueCommand(id: "c\(index)", name: "n", body: [:], ttl: 1_000, replyWindow: 1_000, at: Int64(index)) != nil)
        }
        #expect(state.enqueueCommand(id: "over", name: "n", body: [:], ttl: 1_000, replyWindow: 1_000, at: 100) == nil)
        #expect(state.expireCommands(at: 5_000).count == 100)
        #expect(state.commands.count == DeviceState.commandHistory)
        #expect(state.commands.first?.id == "c80" && state.commands.last?.id == "c99")
        #expect(state.enqueueCommand(id: "next", name: "n", body: [:], ttl: 1_000, replyWindow: 1_000, at: 5_000) != nil)
        #expect(state.commands.last?.id == "next" && state.commands.count == DeviceState.commandHistory + 1)
    }

    @Test("commands survive the checkpoint JSON and merge by progress")
    func checkpointAndMerge() throws {
        var state = DeviceState(id: "d")
        _ = state.enqueueCommand(id: "a", name: "reboot", body: ["delay": 3, "why": "q\"x"], ttl: 10_000, replyWindow: 5_000, at: 1_000)
        _ = state.enqueueCommand(id: "b", name: "blink", body: .null, ttl: 10_000, replyWindow: 5_000, at: 1_001)
        state.markCommandSent("a", at: 2_000)
        _ = state.answerCommand("a", payload: Array(#"{"ok":[1,2]}"#.utf8), limit: 1024, at: 2_500)
        let restored = try JSONDecoder().decode(DeviceState.self, from: Data(state.checkpointJSON()))
        #expect(restored == state)
        #expect(try JSONDecoder().decode(DeviceState.self, from: Data(DeviceState(id: "e").checkpointJSON())).commands.isEmpty)

        var other = DeviceState(id: "d")
        _ = other.enqueueCommand(id: "b", name: "blink", body: .null, ttl: 10_000, replyWindow: 5_000, at: 1_001)
        other.markCommandSent("b", at: 3_000)
        _ = other.enqueueCommand(id: "c", name: "ping", body: [:], ttl: 10_000, replyWindow: 5_000, at: 900)
        var merged = state
        merged.merge(other)
        #expect(merged.commands.map(\.id) == ["c", "a", "b"])
        #expect(merged.commands.map(\.status) == [.queued, .answered, .sent])
        var reverse = other
        reverse.merge(state)
        #expect(reverse.commands == merged.commands)
    }

    @Test("correlation data of queued commands")
    func correlation() {
        let id = QueuedCommand.newID()
        #expect(id.count == 32 && DeviceID.isValid(id))
        #expect(QueuedCommand.newID() != id)
        #expect(QueuedCommand.commandID(correlation: QueuedCommand.correlation(id)) == id)
        #expect(QueuedCommand.commandID(correlation: Array(repeating: 7, count: 16)) == nil)
        #expect(QueuedCommand.commandID(correlation: QueuedCommand.correlationPrefix) == nil)
        #expect(QueuedCommand.commandID(correlation: QueuedCommand.correlationPrefix + Array("a/b".utf8)) == nil)
    }

    @Test("the command timer table hands out due processes once, and only the setter removes")
    func timers() {
        final class Process: Sendable {}
        let table = CommandTimers<Process>()
        let (a, b, c) = (Process(), Process(), Process())
        #expect(table.takeDue(.max - 1).isEmpty)
        table.set("a", a, at: 100)
        table.set("b", b, at: 200)
        table.set("c", c, at: 300)
        #expect(table.takeDue(99).isEmpty)
        #expect(table.takeDue(150).map(ObjectIdentifier.init) == [ObjectIdentifier(a)])
        #expect(table.takeDue(150).isEmpty, "taken once")
        table.remove("b", a)
        #expect(table.count == 2, "only the process that set it removes it")
        table.remove("b", b)
        table.set("c", c, at: 120)  // moved earlier
        #expect(table.takeDue(130).map(ObjectIdentifier.init) == [ObjectIdentifier(c)])
        #expect(table.count == 0)
    }
}
