import NIOCore
import SwarmCore

/// Messages the node runtime sends another node's runtime directly, outside the tracker's
/// protocol. They share the frame type space with ``PeerMessage`` (see ``WireMessageType``).
public enum NodeWireMessage: Hashable, Sendable {
    /// The answer to a call: `callID` is the caller's token from ``Envelope/callID``; the
    /// success value is the callee's opaque reply bytes.
    case callReply(callID: UInt64, result: Result<[UInt8], SwarmError>)
}

/// Any message that can arrive in a (non-transport) frame.
public enum WireMessage: Hashable, Sendable {
    /// A tracker message (types `0x0001...0x00FF`), for the tracker.
    case peer(PeerMessage)
    /// A runtime message (types `0x0100...0x01FF`), for the node runtime.
    case node(NodeWireMessage)
}

/// The binary codec of the cluster protocol: ``PeerMessage``, ``NodeWireMessage`` and
/// ``Envelope`` to frame type numbers and payload bytes, and back.
///
/// The transport frames each message as `[UInt32 length][UInt16 type][payload]`; this codec
/// produces and consumes `type` and `payload`. The type numbers are listed on
/// ``WireMessageType``; every payload layout is in `docs/wire-format.md`.
///
/// Encoding: big-endian integers; strings and byte arrays as UInt32 length + bytes; optionals,
/// booleans and enum cases as UInt8 tags; arrays as UInt32 count + elements.
///
/// Decoding never traps on input: every length and count is checked against the remaining
/// bytes before anything is read or reserved, strings are validated as UTF-8, unknown types
/// and tags and trailing bytes throw ``WireError``. A successful decode consumes every readable
/// byte of `payload`; a failed one leaves its reader index unchanged.
///
/// Both directions work on raw pointers into the buffer's storage, taken once per message
/// (bounds-checked cursors), and encoding writes exactly ``payloadSize(_:)`` bytes after a
/// single capacity check, so a message costs one buffer access, not one per field.
public enum WireCodec {
    // MARK: PeerMessage

    /// Appends the payload of `message` to `buffer` and returns its frame type.
    @discardableResult
    public static func encode(_ message: PeerMessage, into buffer: inout ByteBuffer) -> UInt16 {
        buffer.wireWrite(size: Self.payloadSize(message)) { writer in Self.write(message, to: &writer) }
        return WireMessageType(message).rawValue
    }

    /// Writes the payload fields of `message`; exactly ``payloadSize(_:)`` bytes.
    static func write(_ message: PeerMessage, to buffer: inout WireWriter) {
        switch message {
        case .heartbeat(let members, let seq):
            buffer.wireWrite(members)
            buffer.wireWrite(seq)
        case .replicate(let changes):
            buffer.wireWrite(changes)
        case .catchUp(let after):
            buffer.wireWrite(after)
        case .snapshot(let seq, let entries):
            buffer.wireWrite(seq)
            buffer.wireWrite(entries)
        case .registerRequest(let id, let name, let factory, let groups, let whereisOrRegister):
            buffer.wireWrite(id)
            buffer.wireWrite(name)
            factory.wireWrite(to: &buffer)
            buffer.wireWrite(groups)
            buffer.wireWrite(whereisOrRegister)
        case .registerReply(let id, let result):
            buffer.wireWrite(id)
            result.wireWrite(to: &buffer)
        case .notOwner(let id, let owner):
            buffer.wireWrite(id)
            buffer.wireWrite(owner)
        case .unregisterRequest(let id, let name):
            buffer.wireWrite(id)
            buffer.wireWrite(name)
        case .groupRequest(let id, let group, let pid, let join):
            buffer.wireWrite(id)
            buffer.wireWrite(group)
            pid.wireWrite(to: &buffer)
            buffer.wireWrite(join)
        case .requestDone(let id, let error):
            buffer.wireWrite(id)
            buffer.wireWrite(error)
        case .handoffOffer(let offer):
            offer.wireWrite(to: &buffer)
        case .handoffAccepted(let id, let name, let pid):
            buffer.wireWrite(id)
            buffer.wireWrite(name)
            pid.wireWrite(to: &buffer)
        case .handoffRejected(let id, let name, let reason):
            buffer.wireWrite(id)
            buffer.wireWrite(name)
            buffer.wireWrite(reason)
        case .conflictYield(let name, let loser, let winner, let state):
            buffer.wireWrite(name)
            loser.wireWrite(to: &buffer)
            winner.wireWrite(to: &buffer)
            buffer.wireWriteOptionalBytes(state)
        case .conflictYieldReply(let name, let loser, let accepted):
            buffer.wireWrite(name)
            loser.wireWrite(to: &buffer)
            buffer.wireWrite(accepted)
        case .orphans(let entries):
            buffer.wireWrite(entries)
        case .checkpoint(let name, let pid, let version, let state):
            buffer.wireWrite(name)
            pid.wireWrite(to: &buffer)
            buffer.wireWrite(version)
            buffer.wireWriteBytes(state)
        case .checkpointRequest(let id, let name, let pid, let version, let state):
            buffer.wireWrite(id)
            buffer.wireWrite(name)
            pid.wireWrite(to: &buffer)
            buffer.wireWrite(version)
            buffer.wireWriteBytes(state)
        case .named(let name, let envelopes):
            buffer.wireWrite(name)
            buffer.wireWrite(envelopes)
        case .toProcesses(let pids, let envelope):
            buffer.wireWrite(pids)
            envelope.wireWrite(to: &buffer)
        case .undeliverable(let envelopes, let error):
            buffer.wireWrite(envelopes)
            error.wireWrite(to: &buffer)
        case .goodbye:
            break
        }
    }

    /// Encodes `message` into a new buffer: its frame type and payload.
    public static func encode(
        _ message: PeerMessage,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> (type: UInt16, payload: ByteBuffer) {
        var buffer = allocator.buffer(capacity: Self.payloadSize(message))
        let type = Self.encode(message, into: &buffer)
        return (type, buffer)
    }

    /// Decodes the whole readable payload of a frame of `type` as a ``PeerMessage``.
    ///
    /// - Throws: ``WireError/unknownMessageType(_:)`` when `type` is not a tracker message
    ///   (including ``WireMessageType/callReply``), or any other ``WireError`` when the
    ///   payload is malformed or has trailing bytes.
    public static func decode(type: UInt16, payload: inout ByteBuffer) throws(WireError) -> PeerMessage {
        guard let known = WireMessageType(rawValue: type), known.isPeerMessage else {
            throw .unknownMessageType(type)
        }
        return try payload.wireRead { (reader: inout WireReader) throws(WireError) in
            try Self.read(known, from: &reader)
        }
    }

    /// Reads the fields of a `known` peer message, which must fill the reader exactly.
    static func read(_ known: WireMessageType, from payload: inout WireReader) throws(WireError) -> PeerMessage {
        let type = known.rawValue
        let message: PeerMessage
        switch known {
        case .heartbeat:
            let members = try payload.wireReadArray("heartbeat.members", of: Membership.Member.self)
            let seq = try payload.wireReadUInt64("heartbeat.seq")
            message = .heartbeat(members: members, seq: seq)
        case .replicate:
            message = .replicate(changes: try payload.wireReadArray("replicate.changes", of: SequencedChange.self))
        case .catchUp:
            message = .catchUp(after: try payload.wireReadUInt64("catchUp.after"))
        case .snapshot:
            let seq = try payload.wireReadUInt64("snapshot.seq")
            let entries = try payload.wireReadArray("snapshot.entries", of: RegistryEntry.self)
            message = .snapshot(seq: seq, entries: entries)
        case .registerRequest:
            let id = try payload.wireReadUInt64("registerRequest.id")
            let name = try payload.wireReadString("registerRequest.name")
            let factory = try FactorySpec.wireRead(from: &payload)
            let groups = try payload.wireReadArray("registerRequest.groups", of: String.self)
            let whereisOrRegister = try payload.wireReadBool("registerRequest.whereisOrRegister")
            message = .registerRequest(
                id: id, name: name, factory: factory, groups: groups, whereisOrRegister: whereisOrRegister
            )
        case .registerReply:
            let id = try payload.wireReadUInt64("registerReply.id")
            let result = try RegistrationResult.wireRead(from: &payload)
            message = .registerReply(id: id, result: result)
        case .notOwner:
            let id = try payload.wireReadUInt64("notOwner.id")
            let owner = try payload.wireReadOptional("notOwner.owner", of: String.self)
            message = .notOwner(id: id, owner: owner)
        case .unregisterRequest:
            let id = try payload.wireReadUInt64("unregisterRequest.id")
            let name = try payload.wireReadString("unregisterRequest.name")
            message = .unregisterRequest(id: id, name: name)
        case .groupRequest:
            let id = try payload.wireReadUInt64("groupRequest.id")
            let group = try payload.wireReadString("groupRequest.group")
            let pid = try ProcessID.wireRead(from: &payload)
            let join = try payload.wireReadBool("groupRequest.join")
            message = .groupRequest(id: id, group: group, pid: pid, join: join)
        case .requestDone:
            let id = try payload.wireReadUInt64("requestDone.id")
            let error = try payload.wireReadOptional("requestDone.error", of: SwarmError.self)
            message = .requestDone(id: id, error: error)
        case .handoffOffer:
            message = .handoffOffer(try HandoffOffer.wireRead(from: &payload))
        case .handoffAccepted:
            let id = try payload.wireReadUInt64("handoffAccepted.id")
            let name = try payload.wireReadString("handoffAccepted.name")
            let pid = try ProcessID.wireRead(from: &payload)
            message = .handoffAccepted(id: id, name: name, pid: pid)
        case .handoffRejected:
            let id = try payload.wireReadUInt64("handoffRejected.id")
            let name = try payload.wireReadString("handoffRejected.name")
            let reason = try payload.wireReadString("handoffRejected.reason")
            message = .handoffRejected(id: id, name: name, reason: reason)
        case .conflictYield:
            let name = try payload.wireReadString("conflictYield.name")
            let loser = try ProcessID.wireRead(from: &payload)
            let winner = try ProcessID.wireRead(from: &payload)
            let state = try payload.wireReadOptionalBytes("conflictYield.state")
            message = .conflictYield(name: name, loser: loser, winner: winner, state: state)
        case .conflictYieldReply:
            let name = try payload.wireReadString("conflictYieldReply.name")
            let loser = try ProcessID.wireRead(from: &payload)
            let accepted = try payload.wireReadBool("conflictYieldReply.accepted")
            message = .conflictYieldReply(name: name, loser: loser, accepted: accepted)
        case .orphans:
            message = .orphans(try payload.wireReadArray("orphans.entries", of: RegistryEntry.self))
        case .checkpoint:
            let name = try payload.wireReadString("checkpoint.name")
            let pid = try ProcessID.wireRead(from: &payload)
            let version = try payload.wireReadUInt64("checkpoint.version")
            let state = try payload.wireReadBytes("checkpoint.state")
            message = .checkpoint(name: name, pid: pid, version: version, state: state)
        case .checkpointRequest:
            let id = try payload.wireReadUInt64("checkpointRequest.id")
            let name = try payload.wireReadString("checkpointRequest.name")
            let pid = try ProcessID.wireRead(from: &payload)
            let version = try payload.wireReadUInt64("checkpointRequest.version")
            let state = try payload.wireReadBytes("checkpointRequest.state")
            message = .checkpointRequest(id: id, name: name, pid: pid, version: version, state: state)
        case .named:
            let name = try payload.wireReadString("named.name")
            let envelopes = try payload.wireReadArray("named.envelopes", of: Envelope.self)
            message = .named(name: name, envelopes: envelopes)
        case .toProcesses:
            let pids = try payload.wireReadArray("toProcesses.pids", of: ProcessID.self)
            let envelope = try Envelope.wireRead(from: &payload)
            message = .toProcesses(pids: pids, envelope: envelope)
        case .undeliverable:
            let envelopes = try payload.wireReadArray("undeliverable.envelopes", of: Envelope.self)
            let error = try SwarmError.wireRead(from: &payload)
            message = .undeliverable(envelopes: envelopes, error: error)
        case .goodbye:
            message = .goodbye
        case .callReply:
            throw .unknownMessageType(type)  // excluded by `isPeerMessage` above
        }
        try Self.expectEnd(of: payload, type: type)
        return message
    }

    // MARK: NodeWireMessage

    /// Appends the payload of `message` to `buffer` and returns its frame type.
    @discardableResult
    public static func encode(_ message: NodeWireMessage, into buffer: inout ByteBuffer) -> UInt16 {
        switch message {
        case .callReply(let callID, let result):
            switch result {
            case .success(let bytes):
                buffer.wireWrite(size: 8 + 1 + wireSize(bytes: bytes)) { writer in
                    writer.wireWrite(callID)
                    writer.wireWrite(0 as UInt8)
                    writer.wireWriteBytes(bytes)
                }
            case .failure(let error):
                buffer.wireWrite(size: 8 + 1 + error.wireSize) { writer in
                    writer.wireWrite(callID)
                    writer.wireWrite(1 as UInt8)
                    error.wireWrite(to: &writer)
                }
            }
        }
        return WireMessageType(message).rawValue
    }

    /// Decodes the whole readable payload of a frame of `type` as a ``NodeWireMessage``.
    ///
    /// - Throws: ``WireError/unknownMessageType(_:)`` when `type` is not a runtime message, or
    ///   any other ``WireError`` when the payload is malformed or has trailing bytes.
    public static func decodeNodeMessage(type: UInt16, payload: inout ByteBuffer) throws(WireError) -> NodeWireMessage {
        guard let known = WireMessageType(rawValue: type), !known.isPeerMessage else {
            throw .unknownMessageType(type)
        }
        return try payload.wireRead { (payload: inout WireReader) throws(WireError) in
            try Self.readNodeMessage(known, from: &payload)
        }
    }

    /// Reads the fields of a `known` runtime message, which must fill the reader exactly.
    static func readNodeMessage(_ known: WireMessageType, from payload: inout WireReader) throws(WireError) -> NodeWireMessage {
        let type = known.rawValue
        let message: NodeWireMessage
        switch known {
        case .callReply:
            let callID = try payload.wireReadUInt64("callReply.callID")
            let result: Result<[UInt8], SwarmError>
            switch try payload.wireReadUInt8("callReply.result") {
            case 0: result = .success(try payload.wireReadBytes("callReply.result.success"))
            case 1: result = .failure(try SwarmError.wireRead(from: &payload))
            case let tag: throw .unknownTag(field: "callReply.result", tag: tag)
            }
            message = .callReply(callID: callID, result: result)
        default:
            throw .unknownMessageType(type)  // excluded by `isPeerMessage` above
        }
        try Self.expectEnd(of: payload, type: type)
        return message
    }

    // MARK: Any message

    /// Decodes a frame of any known type: the entry point for a receiver that dispatches on
    /// the frame type.
    public static func decodeAny(type: UInt16, payload: inout ByteBuffer) throws(WireError) -> WireMessage {
        guard let known = WireMessageType(rawValue: type) else { throw .unknownMessageType(type) }
        if known.isPeerMessage {
            return .peer(try Self.decode(type: type, payload: &payload))
        } else {
            return .node(try Self.decodeNodeMessage(type: type, payload: &payload))
        }
    }

    // MARK: Envelope

    /// Appends the encoding of one ``Envelope`` (the same layout it has inside messages):
    /// id u64, sender NodeID, callID u64?, payload bytes, hops u8.
    public static func encode(_ envelope: Envelope, into buffer: inout ByteBuffer) {
        buffer.wireWrite(size: envelope.wireSize) { writer in envelope.wireWrite(to: &writer) }
    }

    /// Decodes exactly one ``Envelope`` filling the readable bytes of `buffer`.
    /// - Throws: ``WireError`` when malformed, or ``WireError/trailingBytes(type:count:)`` with
    ///   type 0 (no message type) when bytes follow it.
    public static func decodeEnvelope(from buffer: inout ByteBuffer) throws(WireError) -> Envelope {
        try buffer.wireRead { (reader: inout WireReader) throws(WireError) in
            let envelope = try Envelope.wireRead(from: &reader)
            guard reader.remaining == 0 else { throw .trailingBytes(type: 0, count: reader.remaining) }
            return envelope
        }
    }

    // MARK: Helpers

    private static func expectEnd(of payload: WireReader, type: UInt16) throws(WireError) {
        guard payload.remaining == 0 else { throw .trailingBytes(type: type, count: payload.remaining) }
    }

    /// The exact payload size of `message` in bytes.
    public static func payloadSize(_ message: PeerMessage) -> Int {
        switch message {
        case .heartbeat(let members, _): return members.wireSize + 8
        case .replicate(let changes): return changes.wireSize
        case .catchUp: return 8
        case .snapshot(_, let entries): return 8 + entries.wireSize
        case .registerRequest(_, let name, let factory, let groups, _):
            return 8 + wireSize(name) + factory.wireSize + groups.wireSize + 1
        case .registerReply(_, let result): return 8 + result.wireSize
        case .notOwner(_, let owner): return 8 + owner.wireSize
        case .unregisterRequest(_, let name): return 8 + wireSize(name)
        case .groupRequest(_, let group, let pid, _): return 8 + wireSize(group) + pid.wireSize + 1
        case .requestDone(_, let error): return 8 + error.wireSize
        case .handoffOffer(let offer): return offer.wireSize
        case .handoffAccepted(_, let name, let pid): return 8 + wireSize(name) + pid.wireSize
        case .handoffRejected(_, let name, let reason): return 8 + wireSize(name) + wireSize(reason)
        case .conflictYield(let name, let loser, let winner, let state):
            return wireSize(name) + loser.wireSize + winner.wireSize + wireSize(optionalBytes: state)
        case .conflictYieldReply(let name, let loser, _): return wireSize(name) + loser.wireSize + 1
        case .orphans(let entries): return entries.wireSize
        case .checkpoint(let name, let pid, _, let state): return wireSize(name) + pid.wireSize + 8 + wireSize(bytes: state)
        case .checkpointRequest(_, let name, let pid, _, let state): return 8 + wireSize(name) + pid.wireSize + 8 + wireSize(bytes: state)
        case .named(let name, let envelopes): return wireSize(name) + envelopes.wireSize
        case .toProcesses(let pids, let envelope): return pids.wireSize + envelope.wireSize
        case .undeliverable(let envelopes, let error): return envelopes.wireSize + error.wireSize
        case .goodbye: return 0
        }
    }
}
