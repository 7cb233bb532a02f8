import SwarmCore

/// A value with a fixed wire layout (see docs/wire-format.md, "Value layouts").
///
/// Internal on purpose: the layouts are an implementation detail of ``WireCodec``; the public
/// surface is whole messages and ``Envelope``s.
protocol WireValue {
    /// The fewest bytes any value of this type encodes to. Array decoding rejects element
    /// counts that could not fit in the remaining payload at this size.
    static var minimumWireBytes: Int { get }
    /// The exact number of bytes `wireWrite(to:)` writes.
    var wireSize: Int { get }
    /// Appends the encoding of `self`.
    func wireWrite(to writer: inout WireWriter)
    /// Reads one value, advancing the reader.
    static func wireRead(from reader: inout WireReader) throws(WireError) -> Self
}

extension Array where Element: WireValue {
    /// UInt32 count + elements.
    @inline(__always)
    var wireSize: Int {
        var size = 4
        for element in self { size &+= element.wireSize }
        return size
    }
}

extension Optional where Wrapped: WireValue {
    /// UInt8 tag + the value.
    @inline(__always)
    var wireSize: Int { 1 + (self?.wireSize ?? 0) }
}

extension WireWriter {
    /// UInt32 count + elements.
    @inline(__always)
    mutating func wireWrite<T: WireValue>(_ values: [T]) {
        self.wireWriteCount(values.count)
        for value in values { value.wireWrite(to: &self) }
    }

    /// UInt8 tag (0 nil, 1 value) + the value.
    @inline(__always)
    mutating func wireWrite<T: WireValue>(_ value: T?) {
        if let value {
            self.wireWrite(1 as UInt8)
            value.wireWrite(to: &self)
        } else {
            self.wireWrite(0 as UInt8)
        }
    }

    /// UInt8 tag (0 nil, 1 bytes) + UInt32 length + bytes.
    @inline(__always)
    mutating func wireWriteOptionalBytes(_ bytes: [UInt8]?) {
        if let bytes {
            self.wireWrite(1 as UInt8)
            self.wireWriteBytes(bytes)
        } else {
            self.wireWrite(0 as UInt8)
        }
    }
}

extension WireReader {
    @inline(__always)
    mutating func wireReadArray<T: WireValue>(_ field: StaticString, of type: T.Type = T.self) throws(WireError) -> [T] {
        let count = try self.wireReadCount(field, minimumElementBytes: T.minimumWireBytes)
        var values: [T] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try T.wireRead(from: &self)) }
        return values
    }

    @inline(__always)
    mutating func wireReadOptional<T: WireValue>(_ field: StaticString, of type: T.Type = T.self) throws(WireError) -> T? {
        try self.wireReadOptionalTag(field) ? try T.wireRead(from: &self) : nil
    }

    @inline(__always)
    mutating func wireReadOptionalBytes(_ field: StaticString) throws(WireError) -> [UInt8]? {
        try self.wireReadOptionalTag(field) ? try self.wireReadBytes(field) : nil
    }
}

// MARK: - Leaves

extension String: WireValue {
    static var minimumWireBytes: Int { 4 }
    var wireSize: Int { SwarmWire.wireSize(self) }
    func wireWrite(to buffer: inout WireWriter) { buffer.wireWrite(self) }
    static func wireRead(from buffer: inout WireReader) throws(WireError) -> String {
        try buffer.wireReadString("String")
    }
}

/// `NodeID`: name String, incarnation UInt64.
extension NodeID: WireValue {
    static var minimumWireBytes: Int { 4 + 8 }
    var wireSize: Int { SwarmWire.wireSize(self.name) + 8 }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.name)
        buffer.wireWrite(self.incarnation)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> NodeID {
        let name = try buffer.wireReadString("NodeID.name")
        let incarnation = try buffer.wireReadUInt64("NodeID.incarnation")
        return NodeID(name: name, incarnation: incarnation)
    }
}

/// `ProcessID`: node NodeID, local UInt64.
extension ProcessID: WireValue {
    static var minimumWireBytes: Int { NodeID.minimumWireBytes + 8 }
    var wireSize: Int { self.node.wireSize + 8 }

    func wireWrite(to buffer: inout WireWriter) {
        self.node.wireWrite(to: &buffer)
        buffer.wireWrite(self.local)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> ProcessID {
        let node = try NodeID.wireRead(from: &buffer)
        let local = try buffer.wireReadUInt64("ProcessID.local")
        return ProcessID(node: node, local: local)
    }
}

/// `FactorySpec`: kind String, arguments bytes.
extension FactorySpec: WireValue {
    static var minimumWireBytes: Int { 4 + 4 }
    var wireSize: Int { SwarmWire.wireSize(self.kind) + SwarmWire.wireSize(bytes: self.arguments) }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.kind)
        buffer.wireWriteBytes(self.arguments)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> FactorySpec {
        let kind = try buffer.wireReadString("FactorySpec.kind")
        let arguments = try buffer.wireReadBytes("FactorySpec.arguments")
        return FactorySpec(kind: kind, arguments: arguments)
    }
}

/// `Membership.Member`: id NodeID, address String, state UInt8 (0 joining, 1 up, 2 draining,
/// 3 gone), version UInt64.
extension Membership.Member: WireValue {
    static var minimumWireBytes: Int { NodeID.minimumWireBytes + 4 + 1 + 8 }
    var wireSize: Int { self.id.wireSize + SwarmWire.wireSize(self.address) + 1 + 8 }

    func wireWrite(to buffer: inout WireWriter) {
        self.id.wireWrite(to: &buffer)
        buffer.wireWrite(self.address)
        buffer.wireWrite(self.state.wireTag)
        buffer.wireWrite(self.version)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> Membership.Member {
        let id = try NodeID.wireRead(from: &buffer)
        let address = try buffer.wireReadString("Member.address")
        let tag = try buffer.wireReadUInt8("Member.state")
        guard let state = Membership.State(wireTag: tag) else {
            throw .unknownTag(field: "Member.state", tag: tag)
        }
        let version = try buffer.wireReadUInt64("Member.version")
        return Membership.Member(id: id, address: address, state: state, version: version)
    }
}

extension Membership.State {
    /// The wire tag. Spelled out rather than taken from `rawValue` so that a change to the core
    /// enum cannot silently change the wire format.
    var wireTag: UInt8 {
        switch self {
        case .joining: return 0
        case .up: return 1
        case .draining: return 2
        case .gone: return 3
        }
    }

    init?(wireTag: UInt8) {
        switch wireTag {
        case 0: self = .joining
        case 1: self = .up
        case 2: self = .draining
        case 3: self = .gone
        default: return nil
        }
    }
}

// MARK: - Registry

/// `RegistryEntry`: name String, pid ProcessID, factory FactorySpec?, groups [String],
/// version UInt64.
extension RegistryEntry: WireValue {
    static var minimumWireBytes: Int { 4 + ProcessID.minimumWireBytes + 1 + 4 + 8 }
    var wireSize: Int {
        SwarmWire.wireSize(self.name) + self.pid.wireSize + self.factory.wireSize + self.groups.wireSize + 8
    }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.name)
        self.pid.wireWrite(to: &buffer)
        buffer.wireWrite(self.factory)
        buffer.wireWrite(self.groups)
        buffer.wireWrite(self.version)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> RegistryEntry {
        let name = try buffer.wireReadString("RegistryEntry.name")
        let pid = try ProcessID.wireRead(from: &buffer)
        let factory = try buffer.wireReadOptional("RegistryEntry.factory", of: FactorySpec.self)
        let groups = try buffer.wireReadArray("RegistryEntry.groups", of: String.self)
        let version = try buffer.wireReadUInt64("RegistryEntry.version")
        return RegistryEntry(name: name, pid: pid, factory: factory, groups: groups, version: version)
    }
}

/// `RegistryChange`: UInt8 tag; 0 upsert → RegistryEntry; 1 remove → name String, pid ProcessID.
extension RegistryChange: WireValue {
    static var minimumWireBytes: Int { 1 + min(RegistryEntry.minimumWireBytes, 4 + ProcessID.minimumWireBytes) }
    var wireSize: Int {
        switch self {
        case .upsert(let entry): return 1 + entry.wireSize
        case .remove(let name, let pid): return 1 + SwarmWire.wireSize(name) + pid.wireSize
        }
    }

    func wireWrite(to buffer: inout WireWriter) {
        switch self {
        case .upsert(let entry):
            buffer.wireWrite(0 as UInt8)
            entry.wireWrite(to: &buffer)
        case .remove(let name, let pid):
            buffer.wireWrite(1 as UInt8)
            buffer.wireWrite(name)
            pid.wireWrite(to: &buffer)
        }
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> RegistryChange {
        switch try buffer.wireReadUInt8("RegistryChange") {
        case 0:
            return .upsert(try RegistryEntry.wireRead(from: &buffer))
        case 1:
            let name = try buffer.wireReadString("RegistryChange.remove.name")
            let pid = try ProcessID.wireRead(from: &buffer)
            return .remove(name: name, pid: pid)
        case let tag:
            throw .unknownTag(field: "RegistryChange", tag: tag)
        }
    }
}

/// `SequencedChange`: seq UInt64, change RegistryChange.
extension SequencedChange: WireValue {
    static var minimumWireBytes: Int { 8 + RegistryChange.minimumWireBytes }
    var wireSize: Int { 8 + self.change.wireSize }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.seq)
        self.change.wireWrite(to: &buffer)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> SequencedChange {
        let seq = try buffer.wireReadUInt64("SequencedChange.seq")
        let change = try RegistryChange.wireRead(from: &buffer)
        return SequencedChange(seq: seq, change: change)
    }
}

// MARK: - Results and errors

/// `SwarmError`: UInt8 tag + fields:
/// 0 noNodeAvailable, 1 unknownFactory(String), 2 startFailed(String), 3 unknownName(String),
/// 4 notRegistered(ProcessID), 5 notLocal(ProcessID), 6 nameInTransition(String), 7 timeout,
/// 8 tooManyAttempts, 9 draining.
extension SwarmError: WireValue {
    static var minimumWireBytes: Int { 1 }
    var wireSize: Int {
        switch self {
        case .noNodeAvailable, .timeout, .tooManyAttempts, .draining: return 1
        case .unknownFactory(let text), .startFailed(let text), .unknownName(let text), .nameInTransition(let text):
            return 1 + SwarmWire.wireSize(text)
        case .notRegistered(let pid), .notLocal(let pid): return 1 + pid.wireSize
        }
    }

    func wireWrite(to buffer: inout WireWriter) {
        switch self {
        case .noNodeAvailable:
            buffer.wireWrite(0 as UInt8)
        case .unknownFactory(let kind):
            buffer.wireWrite(1 as UInt8)
            buffer.wireWrite(kind)
        case .startFailed(let why):
            buffer.wireWrite(2 as UInt8)
            buffer.wireWrite(why)
        case .unknownName(let name):
            buffer.wireWrite(3 as UInt8)
            buffer.wireWrite(name)
        case .notRegistered(let pid):
            buffer.wireWrite(4 as UInt8)
            pid.wireWrite(to: &buffer)
        case .notLocal(let pid):
            buffer.wireWrite(5 as UInt8)
            pid.wireWrite(to: &buffer)
        case .nameInTransition(let name):
            buffer.wireWrite(6 as UInt8)
            buffer.wireWrite(name)
        case .timeout:
            buffer.wireWrite(7 as UInt8)
        case .tooManyAttempts:
            buffer.wireWrite(8 as UInt8)
        case .draining:
            buffer.wireWrite(9 as UInt8)
        }
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> SwarmError {
        switch try buffer.wireReadUInt8("SwarmError") {
        case 0: return .noNodeAvailable
        case 1: return .unknownFactory(try buffer.wireReadString("SwarmError.unknownFactory"))
        case 2: return .startFailed(try buffer.wireReadString("SwarmError.startFailed"))
        case 3: return .unknownName(try buffer.wireReadString("SwarmError.unknownName"))
        case 4: return .notRegistered(try ProcessID.wireRead(from: &buffer))
        case 5: return .notLocal(try ProcessID.wireRead(from: &buffer))
        case 6: return .nameInTransition(try buffer.wireReadString("SwarmError.nameInTransition"))
        case 7: return .timeout
        case 8: return .tooManyAttempts
        case 9: return .draining
        case let tag: throw .unknownTag(field: "SwarmError", tag: tag)
        }
    }
}

/// `RegistrationResult`: UInt8 tag; 0 registered(ProcessID), 1 alreadyRegistered(ProcessID),
/// 2 failed(SwarmError).
extension RegistrationResult: WireValue {
    static var minimumWireBytes: Int { 1 + SwarmError.minimumWireBytes }
    var wireSize: Int {
        switch self {
        case .registered(let pid), .alreadyRegistered(let pid): return 1 + pid.wireSize
        case .failed(let error): return 1 + error.wireSize
        }
    }

    func wireWrite(to buffer: inout WireWriter) {
        switch self {
        case .registered(let pid):
            buffer.wireWrite(0 as UInt8)
            pid.wireWrite(to: &buffer)
        case .alreadyRegistered(let pid):
            buffer.wireWrite(1 as UInt8)
            pid.wireWrite(to: &buffer)
        case .failed(let error):
            buffer.wireWrite(2 as UInt8)
            error.wireWrite(to: &buffer)
        }
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> RegistrationResult {
        switch try buffer.wireReadUInt8("RegistrationResult") {
        case 0: return .registered(try ProcessID.wireRead(from: &buffer))
        case 1: return .alreadyRegistered(try ProcessID.wireRead(from: &buffer))
        case 2: return .failed(try SwarmError.wireRead(from: &buffer))
        case let tag: throw .unknownTag(field: "RegistrationResult", tag: tag)
        }
    }
}

// MARK: - Handoff and envelopes

/// `HandoffOffer`: id UInt64, name String, factory FactorySpec, groups [String],
/// state bytes?, from ProcessID.
extension HandoffOffer: WireValue {
    static var minimumWireBytes: Int { 8 + 4 + FactorySpec.minimumWireBytes + 4 + 1 + ProcessID.minimumWireBytes }
    var wireSize: Int {
        8 + SwarmWire.wireSize(self.name) + self.factory.wireSize + self.groups.wireSize
            + SwarmWire.wireSize(optionalBytes: self.state) + self.from.wireSize
    }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.id)
        buffer.wireWrite(self.name)
        self.factory.wireWrite(to: &buffer)
        buffer.wireWrite(self.groups)
        buffer.wireWriteOptionalBytes(self.state)
        self.from.wireWrite(to: &buffer)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> HandoffOffer {
        let id = try buffer.wireReadUInt64("HandoffOffer.id")
        let name = try buffer.wireReadString("HandoffOffer.name")
        let factory = try FactorySpec.wireRead(from: &buffer)
        let groups = try buffer.wireReadArray("HandoffOffer.groups", of: String.self)
        let state = try buffer.wireReadOptionalBytes("HandoffOffer.state")
        let from = try ProcessID.wireRead(from: &buffer)
        return HandoffOffer(id: id, name: name, factory: factory, groups: groups, state: state, from: from)
    }
}

/// `Envelope`: id UInt64, sender NodeID, callID UInt64?, payload bytes, hops UInt8.
extension Envelope: WireValue {
    static var minimumWireBytes: Int { 8 + NodeID.minimumWireBytes + 1 + 4 + 1 }
    var wireSize: Int {
        8 + self.sender.wireSize + (self.callID == nil ? 1 : 9) + SwarmWire.wireSize(bytes: self.payload) + 1
    }

    func wireWrite(to buffer: inout WireWriter) {
        buffer.wireWrite(self.id)
        self.sender.wireWrite(to: &buffer)
        if let callID = self.callID {
            buffer.wireWrite(1 as UInt8)
            buffer.wireWrite(callID)
        } else {
            buffer.wireWrite(0 as UInt8)
        }
        buffer.wireWriteBytes(self.payload)
        buffer.wireWrite(self.hops)
    }

    static func wireRead(from buffer: inout WireReader) throws(WireError) -> Envelope {
        let id = try buffer.wireReadUInt64("Envelope.id")
        let sender = try NodeID.wireRead(from: &buffer)
        let callID: UInt64? =
            try buffer.wireReadOptionalTag("Envelope.callID") ? try buffer.wireReadUInt64("Envelope.callID") : nil
        let payload = try buffer.wireReadBytes("Envelope.payload")
        let hops = try buffer.wireReadUInt8("Envelope.hops")
        return Envelope(id: id, sender: sender, callID: callID, payload: payload, hops: hops)
    }
}
