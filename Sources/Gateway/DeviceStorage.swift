import Foundation
import GatewayStore
import SwarmNode
import Synchronization

/// The gateway's side of the durable store (docs/deployment.md, “Durable state”): how device processes write their state
/// through one node's ``StoreWriter``.
///
/// - **What is written**: the device process's checkpoint JSON (``DeviceState/checkpointJSON()``),
///   the same bytes its ring successor gets, as one ``StoredDevice`` row per device, with its
///   ``DeviceState/revision`` (bumped at every write, ``Revision``) and desired version.
/// - **When**: an API change (desired, tags, groups, provisioning) is committed durably
///   (group commit) before the call answers; device-reported data rides on the process's
///   coalesced checkpoints (at most every ``GatewaySettings/checkpointInterval``) and is written
///   behind (``StoreSettings/writeBehindInterval``), coalesced per device.
/// - **Successor replicas** (per-node stores only, ``DeviceStore/isShared`` false): every
///   checkpoint this node receives as a device's ring successor is written as a `replica` row —
///   durably before the successor acknowledges an API write's checkpoint, behind otherwise — so a
///   cluster that comes back without one node's disk still has every twin.
/// - **Deletion** removes the row and records a tombstone on every node's store.
final class DeviceStorage: Sendable {
    let writer: StoreWriter
    let nodeName: String
    /// Revisions of deleted devices (tombstones of the store, loaded at start and added by
    /// deletions): a stored copy at or below one is a deleted device, never revived, and a
    /// device created again starts above it.
    private let tombstones = Mutex<[String: Int64]>([:])

    init(writer: StoreWriter, nodeName: String) {
        self.writer = writer
        self.nodeName = nodeName
    }

    var isShared: Bool { writer.store.isShared }

    /// The row of a device's checkpoint.
    func row(_ state: DeviceState, json: [UInt8], role: StoredRole = .owned) -> StoredDevice {
        StoredDevice(id: state.id, role: role, desiredVersion: state.version, revision: state.revision, node: nodeName, state: json)
    }

    // MARK: Tombstones

    func loadTombstones(_ list: [Tombstone]) {
        tombstones.withLock { table in
            for tombstone in list { table[tombstone.id] = max(table[tombstone.id] ?? .min, tombstone.revision) }
        }
    }

    func recordTombstone(_ id: String, revision: Int64) {
        tombstones.withLock { $0[id] = max($0[id] ?? .min, revision) }
    }

    /// The revision of `id`'s deletion, if it was deleted within the tombstone retention.
    func tombstone(_ id: String) -> Int64? {
        tombstones.withLock { $0[id] }
    }

    /// True when a stored copy of `id` at `revision` is a deleted device's.
    func isDeleted(_ id: String, revision: Int64) -> Bool {
        guard let deleted = tombstone(id) else { return false }
        return revision <= deleted
    }

    // MARK: Successor replicas

    /// What ``SwarmNode`` calls with the checkpoints it stores as a ring successor: a `replica` row
    /// of each device checkpoint (other processes' checkpoints are ignored).
    func standbyObserver() -> StandbyObserver {
        StandbyObserver(
            stored: { [self] name, state in
                guard let row = replicaRow(name, state) else { return }
                writer.writeBehind(.put(row))
            },
            storedDurably: { [self] name, state in
                guard let row = replicaRow(name, state) else { return }
                // A failure leaves the owner's own durable commit as the copy on disk; the
                // acknowledgement goes ahead (the replica in memory is there).
                do { try await writer.commit(.put(row)) } catch { writer.writeBehind(.put(row)) }
            })
    }

    private func replicaRow(_ name: String, _ state: [UInt8]) -> StoredDevice? {
        guard let header = StoredHeader(state), header.id == name, !isDeleted(name, revision: header.revision) else { return nil }
        return StoredDevice(id: name, role: .replica, desiredVersion: header.version, revision: header.revision, node: nodeName, state: state)
    }
}

/// The fields at the start of a device checkpoint (``DeviceState/checkpointJSON()`` writes
/// `{"id":…,"revision":…,"born":…,"version":…,` first), read without decoding the rest.
struct StoredHeader: Hashable, Sendable {
    var id: String
    var revision: Int64
    var born: Int64
    var version: Int64

    init(id: String, revision: Int64, born: Int64, version: Int64) {
        self.id = id
        self.revision = revision
        self.born = born
        self.version = version
    }

    /// nil when `bytes` does not start like a device checkpoint.
    init?(_ bytes: [UInt8]) {
        var index = 0
        func expect(_ text: StaticString) -> Bool {
            let count = text.utf8CodeUnitCount
            guard bytes.count - index >= count else { return false }
            let matches = text.withUTF8Buffer { literal in
                literal.indices.allSatisfy { bytes[index + $0] == literal[$0] }
            }
            if matches { index += count }
            return matches
        }
        func integer() -> Int64? {
            var negative = false
            if index < bytes.count && bytes[index] == UInt8(ascii: "-") {
                negative = true
                index += 1
            }
            var value: Int64 = 0
            let start = index
            while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times.addingReportingOverflow(Int64(bytes[index] - UInt8(ascii: "0")))
                guard !overflow1 && !overflow2 else { return nil }
                value = sum
                index += 1
            }
            guard index > start else { return nil }
            return negative ? -value : value
        }
        guard expect(#"{"id":""#) else { return nil }
        // Device ids are [A-Za-z0-9._:-]: no escapes inside the string.
        let start = index
        while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\") { index += 1 }
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let id = String(decoding: bytes[start..<index], as: UTF8.self)
        index += 1
        guard expect(#","revision":"#), let revision = integer(), expect(#","born":"#), let born = integer(),
            expect(#","version":"#), let version = integer()
        else { return nil }
        self.id = id
        self.revision = revision
        self.born = born
        self.version = version
    }
}
