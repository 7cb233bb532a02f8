/// One registration: a name bound to a process, as announced by the process's host.
public struct RegistryEntry: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var pid: ProcessID
    /// Set when the process was started from a factory (Swarm's `register_name/4`): only those
    /// names are restarted after a node failure and handed off on ring changes.
    public var factory: FactorySpec?
    /// Groups the process is a member of, sorted, without duplicates.
    public var groups: [String]
    /// The host's change sequence number at the last change of this entry.
    public var version: UInt64

    public init(name: String, pid: ProcessID, factory: FactorySpec?, groups: [String] = [], version: UInt64 = 0) {
        self.name = name
        self.pid = pid
        self.factory = factory
        self.groups = groups
        self.version = version
    }

    /// The name of the node hosting the process: the only authority for this entry.
    @inlinable public var host: String { pid.node.name }

    public var description: String {
        "\(name)→\(pid)\(factory.map { " \($0)" } ?? "")\(groups.isEmpty ? "" : " groups=\(groups)") v\(version)"
    }
}

/// A change a host announces about its own entries.
public enum RegistryChange: Hashable, Sendable {
    case upsert(RegistryEntry)
    case remove(name: String, pid: ProcessID)

    public var name: String {
        switch self {
        case .upsert(let entry): return entry.name
        case .remove(let name, _): return name
        }
    }
}

/// A change numbered by its host. Sequence numbers start at 1 for every incarnation and have
/// no gaps, so a receiver can tell exactly what it missed.
public struct SequencedChange: Hashable, Sendable {
    public var seq: UInt64
    public var change: RegistryChange

    public init(seq: UInt64, change: RegistryChange) {
        self.seq = seq
        self.change = change
    }
}

/// A node's full replica of the cluster registry.
///
/// Entries are kept per *origin* (the host node that announced them): each origin's table is a
/// mirror of that node's own entries, moved forward only by that node's numbered changes or a
/// snapshot of it. Because every entry has exactly one author, replicas converge without clocks:
/// applying the same per-origin change streams in any interleaving gives the same tables.
///
/// The *view* answers lookups. When two origins claim one name (a healed partition, a handoff
/// in flight), the view shows the winner under one total rule, the same on every node that has
/// the same ring: the claimant hosted on the name's ring owner wins; otherwise the smaller
/// process id wins. See ``Registry/prefers(_:over:owner:)``.
public struct Registry: Sendable {
    /// The mirror of one origin's entries.
    public struct Replica: Sendable {
        public var id: NodeID
        /// Highest contiguous change applied.
        public var appliedSeq: UInt64
        /// False until a snapshot established the starting point: changes are ignored before.
        public var synced: Bool
        public var entries: [String: RegistryEntry]
    }

    public private(set) var replicas: [String: Replica] = [:]
    /// Lookup view: the winning entry per name.
    public private(set) var view: [String: RegistryEntry] = [:]
    /// Names claimed by more than one origin, with all claimants.
    public private(set) var contested: [String: [RegistryEntry]] = [:]
    /// group → name → pid, over the view.
    public private(set) var groupIndex: [String: [String: ProcessID]] = [:]

    public init() {}

    /// The conflict rule: true when `a` beats `b` for the same name. The copy on the ring owner
    /// wins; otherwise (neither or, transiently, both) the smaller process id wins.
    @inlinable
    public static func prefers(_ a: RegistryEntry, over b: RegistryEntry, owner: String?) -> Bool {
        let aOwner = owner != nil && a.host == owner
        let bOwner = owner != nil && b.host == owner
        if aOwner != bOwner { return aOwner }
        return a.pid < b.pid
    }

    public var count: Int { view.count }

    /// Makes room for `count` names from `origin` (a snapshot's size, or a configured expected
    /// fleet size), so that growing does not rehash the tables again and again.
    public mutating func reserveCapacity(_ count: Int, for origin: NodeID) {
        view.reserveCapacity(count)
        replicas[origin.name]?.entries.reserveCapacity(count)
    }

    public func replica(of node: String) -> Replica? { replicas[node] }

    // MARK: Origins

    /// Starts (or restarts) tracking `origin`. A different incarnation replaces the old table
    /// wholesale; the returned entries are the ones that went away with the old incarnation.
    @discardableResult
    public mutating func track(origin: NodeID, synced: Bool, owner: (String) -> String?) -> [RegistryEntry] {
        if let existing = replicas[origin.name] {
            if existing.id == origin { return [] }
            let dropped = drop(origin: origin.name, owner: owner)
            replicas[origin.name] = Replica(id: origin, appliedSeq: 0, synced: synced, entries: [:])
            return dropped
        }
        replicas[origin.name] = Replica(id: origin, appliedSeq: 0, synced: synced, entries: [:])
        return []
    }

    /// Forgets everything `origin` announced (it is unreachable or gone); returns its entries.
    @discardableResult
    public mutating func drop(origin name: String, owner: (String) -> String?) -> [RegistryEntry] {
        guard let replica = replicas.removeValue(forKey: name) else { return [] }
        for entry in replica.entries.values {
            removeFromView(entry, owner: owner)
        }
        return Array(replica.entries.values)
    }

    /// Marks an origin as needing a new snapshot (keeps no entries: they may be stale).
    public mutating func resetForSnapshot(origin: NodeID, owner: (String) -> String?) -> [RegistryEntry] {
        let dropped = drop(origin: origin.name, owner: owner)
        replicas[origin.name] = Replica(id: origin, appliedSeq: 0, synced: false, entries: [:])
        return dropped
    }

    // MARK: Applying changes

    public enum ApplyOutcome: Equatable, Sendable {
        case applied
        /// Already applied (a duplicate delivery).
        case duplicate
        /// A gap: the caller must ask for changes after ``Replica/appliedSeq``.
        case gap(after: UInt64)
        /// Unknown origin, other incarnation, or waiting for a snapshot.
        case ignored
    }

    /// Applies one numbered change from `origin` if it is the next one.
    public mutating func apply(_ change: SequencedChange, from origin: NodeID, owner: (String) -> String?) -> ApplyOutcome {
        // Mutate the replica in place (`replicas[key]!.…`): copying it out would copy its whole
        // entries table on every change.
        guard let replica = replicas[origin.name], replica.id == origin, replica.synced else { return .ignored }
        if change.seq <= replica.appliedSeq { return .duplicate }
        if change.seq != replica.appliedSeq + 1 { return .gap(after: replica.appliedSeq) }
        replicas[origin.name]!.appliedSeq = change.seq
        switch change.change {
        case .upsert(let entry):
            let old = replicas[origin.name]!.entries.updateValue(entry, forKey: entry.name)
            if let old { removeFromView(old, owner: owner) }
            addToView(entry, owner: owner)
        case .remove(let name, let pid):
            if let old = replicas[origin.name]!.entries[name], old.pid == pid {
                replicas[origin.name]!.entries[name] = nil
                removeFromView(old, owner: owner)
            }
        }
        return .applied
    }

    /// Applies a batch of `origin`'s changes in order, stopping at the first gap. The origin's
    /// table is taken out of the map once for the whole batch (one lookup, no copy-on-write).
    /// `applied` is called with each change that took effect, after the view was updated.
    public mutating func apply(
        _ changes: [SequencedChange], from origin: NodeID, owner: (String) -> String?,
        applied: (SequencedChange) -> Void = { _ in }
    ) -> ApplyOutcome {
        guard var replica = replicas.removeValue(forKey: origin.name) else { return .ignored }
        defer { replicas[origin.name] = replica }
        guard replica.id == origin, replica.synced else { return .ignored }
        var outcome = ApplyOutcome.duplicate
        for change in changes {
            if change.seq <= replica.appliedSeq { continue }
            if change.seq != replica.appliedSeq + 1 { return .gap(after: replica.appliedSeq) }
            replica.appliedSeq = change.seq
            switch change.change {
            case .upsert(let entry):
                if let old = replica.entries.updateValue(entry, forKey: entry.name) { removeFromView(old, owner: owner) }
                addToView(entry, owner: owner)
            case .remove(let name, let pid):
                if let old = replica.entries[name], old.pid == pid {
                    replica.entries[name] = nil
                    removeFromView(old, owner: owner)
                }
            }
            outcome = .applied
            applied(change)
        }
        return outcome
    }

    /// Replaces `origin`'s table with a snapshot taken at `seq`. Returns the entries the snapshot
    /// no longer contains (removed while we were not listening).
    @discardableResult
    public mutating func applySnapshot(
        from origin: NodeID, seq: UInt64, entries: [RegistryEntry], owner: (String) -> String?
    ) -> [RegistryEntry] {
        if let current = replicas[origin.name], current.id.incarnation > origin.incarnation { return [] }
        let previous = replicas[origin.name].flatMap { $0.id == origin ? $0.entries : nil } ?? [:]
        if let current = replicas[origin.name], current.id == origin, current.synced, current.appliedSeq >= seq {
            return []  // stale snapshot: we are already further
        }
        _ = drop(origin: origin.name, owner: owner)
        var table: [String: RegistryEntry] = [:]
        table.reserveCapacity(entries.count)
        for entry in entries { table[entry.name] = entry }
        replicas[origin.name] = Replica(id: origin, appliedSeq: seq, synced: true, entries: table)
        for entry in entries { addToView(entry, owner: owner) }
        return previous.values.filter { table[$0.name]?.pid != $0.pid }
    }

    /// Recomputes the winner of every contested name (call after the ring changed).
    public mutating func rerank(owner: (String) -> String?) {
        for (name, claimants) in contested {
            let winner = Self.winner(of: claimants, owner: owner(name))
            if let current = view[name], current == winner { continue }
            replaceInView(name: name, with: winner)
        }
    }

    // MARK: View maintenance

    static func winner(of claimants: [RegistryEntry], owner: String?) -> RegistryEntry {
        var best = claimants[0]
        for candidate in claimants.dropFirst() where prefers(candidate, over: best, owner: owner) {
            best = candidate
        }
        return best
    }

    private mutating func addToView(_ entry: RegistryEntry, owner: (String) -> String?) {
        // Fast path: one hash of the name when nobody else claims it.
        guard let current = view.updateValue(entry, forKey: entry.name) else {
            indexGroups(of: entry, adding: true)
            return
        }
        view[entry.name] = current
        // A second origin claims the name.
        var claimants = contested[entry.name] ?? [current]
        claimants.removeAll { $0.host == entry.host }
        claimants.append(entry)
        if claimants.count == 1 {
            contested[entry.name] = nil
            replaceInView(name: entry.name, with: entry)
            return
        }
        contested[entry.name] = claimants
        replaceInView(name: entry.name, with: Self.winner(of: claimants, owner: owner(entry.name)))
    }

    private mutating func removeFromView(_ entry: RegistryEntry, owner: (String) -> String?) {
        if var claimants = contested[entry.name] {
            claimants.removeAll { $0.host == entry.host && $0.pid == entry.pid }
            if claimants.count <= 1 {
                contested[entry.name] = nil
            } else {
                contested[entry.name] = claimants
            }
            if let only = claimants.first, claimants.count == 1 {
                replaceInView(name: entry.name, with: only)
            } else if claimants.isEmpty {
                if let current = view.removeValue(forKey: entry.name) { indexGroups(of: current, adding: false) }
            } else {
                replaceInView(name: entry.name, with: Self.winner(of: claimants, owner: owner(entry.name)))
            }
            return
        }
        if let current = view[entry.name], current.pid == entry.pid {
            view[entry.name] = nil
            indexGroups(of: current, adding: false)
        }
    }

    private mutating func replaceInView(name: String, with entry: RegistryEntry) {
        if let old = view.updateValue(entry, forKey: name) {
            if old.groups == entry.groups && old.pid == entry.pid { return }
            indexGroups(of: old, adding: false)
        }
        indexGroups(of: entry, adding: true)
    }

    private mutating func indexGroups(of entry: RegistryEntry, adding: Bool) {
        for group in entry.groups {
            if adding {
                groupIndex[group, default: [:]][entry.name] = entry.pid
            } else if groupIndex[group]?[entry.name] == entry.pid {
                // In place: copying a large group out and back would copy all its members.
                groupIndex[group]![entry.name] = nil
                if groupIndex[group]!.isEmpty { groupIndex[group] = nil }
            }
        }
    }

    // MARK: Reads

    public func whereis(_ name: String) -> ProcessID? { view[name]?.pid }

    /// Distinct member processes of `group`, sorted.
    public func members(of group: String) -> [ProcessID] {
        guard let byName = groupIndex[group] else { return [] }
        return Array(Set(byName.values)).sorted()
    }

    /// Every group with at least one member, sorted by name, with its count of distinct member
    /// processes.
    public func groups() -> [(group: String, members: Int)] {
        groupIndex.keys.sorted().map { group in (group, Set(groupIndex[group]!.values).count) }
    }

    /// Claimants of a name (one element unless contested).
    public func claimants(of name: String) -> [RegistryEntry] {
        if let claimants = contested[name] { return claimants }
        return view[name].map { [$0] } ?? []
    }
}
