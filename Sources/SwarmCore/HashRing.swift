/// The consistent hash ring that places names on nodes.
///
/// Each node contributes ``HashRing/pointsPerNode`` (128) virtual points. A name belongs to the
/// node of the first point at or after the name's hash, wrapping around to the smallest point.
/// Adding or removing a node only moves the names that fall on that node's points.
///
/// ## The hash (version ``HashRing/hashVersion`` = 1)
/// `SwarmHash64(bytes) = fmix64(FNV-1a-64(bytes))`, over the UTF-8 bytes of the text:
/// - FNV-1a 64: offset basis `0xcbf29ce484222325`, prime `0x100000001b3`, per byte
///   `h = (h ^ byte) &* prime`;
/// - fmix64 (the MurmurHash3 finaliser), so that names differing in their last byte spread over
///   the whole key space: `h ^= h >> 33; h &*= 0xff51afd7ed558ccd; h ^= h >> 33;
///   h &*= 0xc4ceb9fe1a85ec53; h ^= h >> 33`.
///
/// Node point `i` (0 ..< 128) of node `n` sits at `SwarmHash64("\(n)#\(i)")`. Swift's `Hasher` is
/// never used: it is seeded per process, and every node of every run must agree. The hash
/// version travels in the node handshake; nodes with a different version refuse to cluster.
/// Golden values in the tests pin the function so that any change is caught.
public struct HashRing: Sendable, Equatable {
    /// Version of the placement function (hash + point naming). Bump on any change.
    public static let hashVersion: UInt16 = 1
    /// Virtual points per node.
    public static let pointsPerNode = 128

    /// Sorted point positions, parallel to ``owners``.
    @usableFromInline internal private(set) var points: [UInt64] = []
    /// Index into ``nodes`` for each point.
    @usableFromInline internal private(set) var owners: [UInt32] = []
    /// The nodes on the ring, sorted by name.
    public private(set) var nodes: [String] = []

    public init() {}

    public init<S: Sequence>(nodes: S) where S.Element == String {
        self.rebuild(Set(nodes))
    }

    public var isEmpty: Bool { nodes.isEmpty }

    public func contains(_ node: String) -> Bool {
        nodes.binarySearch(node) != nil
    }

    public mutating func add(_ node: String) {
        guard !contains(node) else { return }
        rebuild(Set(nodes).union([node]))
    }

    public mutating func remove(_ node: String) {
        guard contains(node) else { return }
        rebuild(Set(nodes).subtracting([node]))
    }

    private mutating func rebuild(_ set: Set<String>) {
        let sortedNodes = set.sorted()
        var pairs: [(UInt64, UInt32)] = []
        pairs.reserveCapacity(sortedNodes.count * Self.pointsPerNode)
        for (index, node) in sortedNodes.enumerated() {
            for point in Self.pointHashes(of: node) { pairs.append((point, UInt32(index))) }
        }
        // Ties (astronomically rare) are broken by node name so every node builds the same ring:
        // the index into the sorted names orders as the names do.
        pairs.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        self.nodes = sortedNodes
        self.points = pairs.map(\.0)
        self.owners = pairs.map(\.1)
    }

    /// The index of the first point at or after `key`, wrapping to 0.
    @inlinable
    internal func pointIndex(for key: UInt64) -> Int {
        var low = 0
        var high = points.count
        while low < high {
            let mid = (low &+ high) >> 1
            if points[mid] < key { low = mid &+ 1 } else { high = mid }
        }
        return low == points.count ? 0 : low
    }

    /// The node that owns `name`, or nil on an empty ring.
    @inlinable
    public func owner(of name: String) -> String? {
        guard !points.isEmpty else { return nil }
        return nodes[Int(owners[pointIndex(for: Self.hash(name))])]
    }

    /// The owner of `name` followed by the next distinct nodes clockwise, at most `count` nodes.
    /// The second element is the *successor*: the node that owns `name` if the owner goes away.
    public func preferenceList(of name: String, count: Int) -> [String] {
        guard !points.isEmpty, count > 0 else { return [] }
        var result: [String] = []
        var seen = Set<UInt32>()
        var index = pointIndex(for: Self.hash(name))
        for _ in 0..<points.count {
            let owner = owners[index]
            if seen.insert(owner).inserted {
                result.append(nodes[Int(owner)])
                if result.count == count || result.count == nodes.count { break }
            }
            index = index + 1 == points.count ? 0 : index + 1
        }
        return result
    }

    /// The share of the 64-bit key space each node owns (sums to 1).
    public func keySpaceShares() -> [String: Double] {
        var shares: [String: Double] = [:]
        guard !points.isEmpty else { return shares }
        let scale = 1.0 / 18_446_744_073_709_551_616.0  // 2^64
        for i in 0..<points.count {
            // Point i owns (points[i-1], points[i]].
            let previous = i == 0 ? points[points.count - 1] : points[i - 1]
            let width = points[i] &- previous
            let node = nodes[Int(owners[i])]
            shares[node, default: 0] += Double(width) * scale
        }
        if nodes.count == 1 { shares[nodes[0]] = 1 }
        return shares
    }

    // MARK: - The hash

    /// `SwarmHash64("\(node)#\(i)")` for i in 0 ..< ``pointsPerNode``: FNV-1a is computed over
    /// the `node#` prefix once and continued with the decimal digits of each i.
    static func pointHashes(of node: String) -> [UInt64] {
        var prefix: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in node.utf8 { prefix = (prefix ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        prefix = (prefix ^ UInt64(UInt8(ascii: "#"))) &* 0x0000_0100_0000_01b3
        var hashes: [UInt64] = []
        hashes.reserveCapacity(pointsPerNode)
        for i in 0..<pointsPerNode {
            var h = prefix
            var divisor = 1
            while divisor * 10 <= i { divisor *= 10 }
            var rest = i
            while divisor > 0 {
                h = (h ^ UInt64(UInt8(ascii: "0") + UInt8(rest / divisor))) &* 0x0000_0100_0000_01b3
                rest %= divisor
                divisor /= 10
            }
            hashes.append(fmix64(h))
        }
        return hashes
    }

    /// SwarmHash64 of the UTF-8 bytes of `text` (see the type documentation).
    @inlinable
    public static func hash(_ text: String) -> UInt64 {
        var text = text
        return text.withUTF8 { hash(bytes: $0) }
    }

    @inlinable
    public static func hash(bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return fmix64(h)
    }

    @inlinable
    internal static func fmix64(_ value: UInt64) -> UInt64 {
        var h = value
        h ^= h >> 33
        h &*= 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        h &*= 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h
    }
}

extension Array where Element: Comparable {
    /// Index of `value` in a sorted array, or nil.
    func binarySearch(_ value: Element) -> Int? {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if self[mid] < value { low = mid + 1 } else { high = mid }
        }
        return low < count && self[low] == value ? low : nil
    }
}
