import Foundation
import SwarmJSON
import Testing

@testable import Gateway

@Suite("durable state: pure parts")
struct StoreUnitTests {
    @Test("the checkpoint header (id, revision, born, version) is read without a decode, and only from a device checkpoint")
    func header() throws {
        var state = DeviceState(id: "dev.7:a-b")
        state.revision = 1_700_000_000_123_456
        state.born = 1_600_000_000_000_000
        state.patchDesired(["x": 1], at: 1)
        state.patchDesired(["x": 2], at: 2)
        let json = state.checkpointJSON()
        let header = try #require(StoredHeader(json))
        #expect(header == StoredHeader(id: "dev.7:a-b", revision: state.revision, born: state.born, version: 2))
        // The JSON still decodes as the same state.
        #expect(try JSONDecoder().decode(DeviceState.self, from: Data(json)) == state)
        for bad in [#"{"id":"x","online":false}"#, "", "{", #"{"id":"x","revision":"1"}"#, #"{"id":"x","revision":1,"born":2,"version":"#] {
            #expect(StoredHeader(Array(bad.utf8)) == nil, "\(bad)")
        }
        #expect(StoredHeader(Array(#"{"id":"n","revision":-5,"born":0,"version":3,"#.utf8)) == StoredHeader(id: "n", revision: -5, born: 0, version: 3))
        #expect(StoredHeader(Array(#"{"id":"n","revision":99999999999999999999,"born":0,"version":3,"#.utf8)) == nil, "overflow")
    }

    @Test("absorb: an older copy of the same history is ignored; a newer one, or another history, is merged")
    func absorb() {
        var live = DeviceState(id: "d")
        live.born = 100
        live.revision = 500
        live.patchDesired(["a": 1], at: 1)
        live.groups.insert("kept")

        var stale = live
        stale.revision = 400
        stale.groups.insert("left-since")
        var copy = live
        let tookStale = copy.absorb(stale)
        #expect(!tookStale, "older copy of the same history")
        #expect(copy == live)

        var newer = live
        newer.revision = 600
        newer.patchDesired(["a": 2], at: 2)
        copy = live
        let tookNewer = copy.absorb(newer)
        #expect(tookNewer)
        #expect(copy.version == 2 && copy.desired["a"] == 2 && copy.revision == 600)

        // A process created before its row arrived (a fresh history) takes the stored one in:
        // the higher desired version, the stored groups, the older born.
        var fresh = DeviceState(id: "d")
        fresh.born = 900
        fresh.revision = 900
        _ = fresh.applyIngress(.telemetry, ["seq": 1, "t": 5], broker: "b", receivedAt: 9_000, retained: false)
        let tookStored = fresh.absorb(live)
        #expect(tookStored)
        #expect(fresh.version == 1 && fresh.groups.contains("kept") && fresh.born == 100 && fresh.revision == 900)
        #expect(fresh.telemetry["t"] == 5, "its own newer device data stays")

        // The stored reported state and metadata survive a fresh history that saw only a birth;
        // what the fresh one reported goes on top, and the reported version only goes up.
        var stored = DeviceState(id: "r")
        stored.born = 10
        stored.revision = 20
        _ = stored.applyIngress(.status, ["status": "online", "model": "m1"], broker: "b", receivedAt: 1_000, retained: false)
        _ = stored.applyIngress(.reported, ["fw": 1, "mode": "eco"], broker: "b", receivedAt: 1_001, retained: false)
        var restarted = DeviceState(id: "r")
        restarted.born = 50
        restarted.revision = 50
        _ = restarted.applyIngress(.status, ["status": "online", "model": "m2"], broker: "b", receivedAt: 5_000, retained: true)
        var onlyBirth = restarted
        onlyBirth.absorb(stored)
        #expect(onlyBirth.reported == ["fw": 1, "mode": "eco"] && onlyBirth.reportedVersion == 1 && onlyBirth.metadata["model"] == "m2")
        _ = restarted.applyIngress(.reported, ["fw": 2], broker: "b", receivedAt: 5_001, retained: false)
        restarted.absorb(stored)
        #expect(restarted.reported == ["fw": 2, "mode": "eco"] && restarted.reportedVersion == 2, "\(restarted.reported) v\(restarted.reportedVersion)")

        var other = DeviceState(id: "other")
        let tookOther = other.absorb(live)
        #expect(!tookOther, "another device's state is never taken")
    }

    @Test("recovery rows: the higher revision is kept until taken, each id is queued once until taken, deleted ones are counted")
    func recoveryTable() async {
        let recovery = DeviceRecovery()
        var state = DeviceState(id: "r-1")
        state.revision = 10
        state.version = 3
        recovery.offer(RecoveredRow(id: "r-1", revision: 10, state: state.checkpointJSON()))
        var newer = state
        newer.revision = 20
        newer.version = 4
        recovery.offer(RecoveredRow(id: "r-1", revision: 20, state: newer.checkpointJSON()))
        recovery.offer(RecoveredRow(id: "r-1", revision: 15, state: state.checkpointJSON()))
        #expect(recovery.summary.pending == 1 && recovery.held == 1)
        #expect(recovery.take("r-1")?.version == 4)
        #expect(recovery.take("r-1") == nil)
        recovery.offer(RecoveredRow(id: "r-2", revision: 1, state: Array("not json".utf8)))
        #expect(recovery.take("r-2") == nil, "an undecodable row is dropped")

        #expect(!recovery.isReady)
        recovery.asked(pending: ["gw-2"])
        recovery.scanFinished()
        recovery.registered()
        recovery.registered()
        #expect(!recovery.isReady, "gw-2 has not sent its rows")
        let waiter = Task { await recovery.waitUntilReady(timeout: .seconds(10)) }
        recovery.peerDone("gw-2")
        #expect(await waiter.value)
        #expect(recovery.isReady)
        #expect(await recovery.waitUntilReady(timeout: .milliseconds(1)))
    }

    @Test("node messages of recovery and deletion round-trip")
    func nodeMessages() throws {
        let messages: [NodeMessage] = [
            .rows([RecoveredRow(id: "a", revision: 7, state: Array("{}".utf8)), RecoveredRow(id: "b", revision: -1, state: [])]),
            .recoveryDone(node: "gw-1"), .recoveryStatus, .forget(id: "x", revision: 123),
        ]
        for message in messages { #expect(try NodeMessage(decoding: message.encoded()) == message) }
        #expect(try DeviceMessage(decoding: DeviceMessage.restore.encoded()) == .restore)
        let deleted = DeletedReply(broker: nil, revision: 42)
        #expect(try DeletedReply(decoding: deleted.encoded()) == deleted)
    }
}
