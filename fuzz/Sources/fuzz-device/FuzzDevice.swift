import Foundation
import FuzzSupport
@testable import Gateway
import SwarmCore
import SwarmJSON

/// Input (text mode): up to 16 records separated by `0x00`; a record is `topic '\n' payload` (the topic of an
/// MQTT publish and its payload; the first `\n` separates them). Each record goes through the
/// gateway's ingress path and then into the device twin of its id:
///
/// 1. `DeviceTopics.parse` (prefix `devices` and the multi-level `site/a/devices`), `DeviceID.isValid`;
/// 2. `DeviceGateway.validatePayload` (size limit, JSON, shape; status normalisation);
/// 3. `DeviceMessage.ingress` encode/decode (what travels to the device's owner node);
/// 4. `DeviceState.applyIngress`, the update the device process makes (status and metadata,
///    the telemetry sequence window, telemetry fields, reported merge patch), then the twin and
///    its delta, the checkpoint/handoff JSON round trips (`JSONEncoder` and the hand-written
///    `checkpointJSON`) and the conflict merge.
///
/// Invariants: a parsed topic names a valid id and rebuilds to the same topic; every valid id's
/// topics parse back to it; an accepted payload parses as JSON of the shape its kind requires;
/// the ingress message round-trips; the state survives the checkpoint round trip (numbers
/// compared by value); a state merged with its own copy is unchanged.
func fuzzDevice(_ data: UnsafePointer<UInt8>?, _ size: Int) {
    var input = FuzzInput(data, size)
    if input.bytes.first == 0xFF {
        _ = input.byte()
        fuzzSequence(&input)
        return
    }
    let topicSets = [DeviceTopics(), DeviceTopics(prefix: "site/a/devices")]
    var states: [String: DeviceState] = [:]
    var now: Int64 = 1_700_000_000_000
    for (index, record) in input.bytes.split(separator: 0, omittingEmptySubsequences: false).prefix(16).enumerated() {
        let newline = record.firstIndex(of: 0x0A) ?? record.endIndex
        let topic = String(decoding: record[record.startIndex..<newline], as: UTF8.self)
        let payload = Array(record[min(newline + 1, record.endIndex)...])
        _ = try? DeviceMessage(decoding: Array(record))  // the cluster-internal decoder on raw bytes

        // A valid id's topics always parse back to it.
        if DeviceID.isValid(topic) {
            fuzzCheck(topic.utf8.count <= DeviceID.maxLength, "over-long id accepted")
            for topics in topicSets {
                fuzzCheck(try! topics.parse(topics.reported(topic)).get() == (topic, .reported), "reported topic round trip")
            }
        }

        for topics in topicSets {
            guard case .success(let (id, kind)) = topics.parse(topic) else { continue }
            fuzzCheck(DeviceID.isValid(id), "parse accepted invalid id \(id)")
            let rebuilt: String
            switch kind {
            case .status: rebuilt = topics.status(id)
            case .telemetry: rebuilt = topics.telemetry(id)
            case .reported: rebuilt = topics.reported(id)
            }
            fuzzCheck(rebuilt == topic, "topic \(topic) parsed to \(id) \(kind), which rebuilds to \(rebuilt)")

            guard case .success(let accepted) = DeviceGateway.validatePayload(kind: kind, payload: payload, limit: 64 * 1024) else { continue }
            guard let value = try? JSONValue.parse(accepted) else {
                fuzzCheck(false, "validated payload does not parse")
                return
            }
            switch kind {
            case .status:
                let status = value["status"]?.stringValue
                fuzzCheck(status == "online" || status == "offline", "status payload without status")
            case .telemetry, .reported:
                fuzzCheck(value.objectValue != nil, "\(kind) payload is not an object")
            }

            now += Int64(index % 3) - 1  // arrivals slightly out of order, as across gateway nodes
            let message = DeviceMessage.ingress(kind: kind, broker: "b1", receivedAt: now, retained: index % 2 == 1, payload: accepted)
            fuzzCheck((try? DeviceMessage(decoding: message.encoded())) == message, "ingress message round trip")

            var state = states[id] ?? DeviceState(id: id)
            apply(kind: kind, value: value, receivedAt: now, retained: index % 2 == 1, to: &state)
            states[id] = state
        }
    }

    for (_, state) in states {
        _ = state.twin(node: "gw-1").json.serialized()
        // Checkpoint / handoff: the state travels as JSON (DeviceProcess.beginHandoff / endHandoff).
        let encoded: Data
        do {
            encoded = try JSONEncoder().encode(state)
        } catch {
            fuzzCheck(false, "device state does not encode for a checkpoint: \(error)")
            return
        }
        guard let restored = try? JSONDecoder().decode(DeviceState.self, from: encoded) else {
            fuzzCheck(false, "checkpointed device state does not decode")
            return
        }
        fuzzCheck(equivalent(restored, state), "checkpoint round trip changed the state")
        // The hand-written encoding the device process sends (DeviceState.checkpointJSON) reads back the same.
        guard let direct = try? JSONDecoder().decode(DeviceState.self, from: Data(state.checkpointJSON())) else {
            fuzzCheck(false, "checkpointJSON does not decode")
            return
        }
        fuzzCheck(equivalent(direct, state), "checkpointJSON round trip changed the state")
        var merged = state
        merged.merge(restored)
        fuzzCheck(equivalent(merged, state), "merging a state with its own copy changed it")
    }
}

/// Binary mode (first byte `0xFF`, never the start of a valid topic): 9-byte items `[op][seq:
/// Int64 BE]` straight into the telemetry `SequenceTracker` (op bit 0: a birth first), so
/// libFuzzer's integer mutations reach the window arithmetic without spelling numbers in JSON.
///
/// Invariants after every number: the highest is at least that number and its bit is set; the
/// gap count never goes negative; duplicates + out-of-order + late never exceed the numbers seen.
func fuzzSequence(_ input: inout FuzzInput) {
    var tracker = SequenceTracker()
    var counters = DeviceCounters()
    var observed: Int64 = 0
    while input.remaining >= 9 {
        let op = input.byte()
        var bits: UInt64 = 0
        for _ in 0..<8 { bits = bits << 8 | UInt64(input.byte()) }
        let seq = Int64(bitPattern: bits)
        if op & 1 == 1 { tracker.sessionStarted() }
        tracker.observe(seq, counters: &counters)
        observed += 1
        fuzzCheck(tracker.highest.map { $0 >= seq } ?? false, "highest below the number just seen")
        fuzzCheck(tracker.seen[0], "the highest number is not marked seen")
        fuzzCheck(counters.seqGaps >= 0, "negative gap count")
        fuzzCheck(counters.seqDuplicates + counters.seqOutOfOrder + counters.seqLate <= observed, "more anomalies than numbers")
    }
}

/// `DeviceState.applyIngress` (what `DeviceProcess` runs), with the groups a birth names joined
/// at once (in the process they are cluster calls).
func apply(kind: DeviceTopics.Kind, value: JSONValue, receivedAt: Int64, retained: Bool, to state: inout DeviceState) {
    let joins = state.applyIngress(kind, value, broker: "b1", receivedAt: receivedAt, retained: retained)
    state.groups.formUnion(joins)
}

/// Structural equality, except that JSON numbers compare by value (`2` and `2.0` are one number
/// once they have been through a JSON text).
func equivalent(_ a: DeviceState, _ b: DeviceState) -> Bool {
    var left = a
    var right = b
    guard JSONValue.object(left.metadata).sameValue(.object(right.metadata)),
        JSONValue.object(left.telemetry).sameValue(.object(right.telemetry)),
        left.reported.sameValue(right.reported), left.desired.sameValue(right.desired)
    else { return false }
    left.metadata = [:]; right.metadata = [:]
    left.telemetry = [:]; right.telemetry = [:]
    left.reported = .null; right.reported = .null
    left.desired = .null; right.desired = .null
    return left == right
}

@main
enum Main {
    static func main() {
        fuzzMain { data, size in
            fuzzDevice(data, size)
            return 0
        }
    }
}

#if SWARM_LIBFUZZER
/// libFuzzer's conventional entry point. `main` above drives the fuzzing; a debug link pulls in
/// libFuzzer's own `main` as well, which refers to this symbol.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzDevice(data, size)
    return 0
}
#endif
