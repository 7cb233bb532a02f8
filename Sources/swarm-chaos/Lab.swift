import Foundation
import Glibc
import Synchronization

/// The network: one Linux bridge in the root namespace (`<prefix>-br`, address `<subnet>.1/24`),
/// and per gateway node a network namespace `<prefix>-nI` joined to the bridge by a veth pair
/// (`<prefix>-nI` on the bridge, `<prefix>-nIp` inside, address `<subnet>.(10+I)/24`).
///
/// Faults are routes inside the node namespaces: `blackhole <peer>/32` in namespace A drops
/// everything A sends to that peer (a one-way cut when only A has it; both directions when both
/// have one). The bridge address (HTTP checks from the root namespace) is never cut; the broker
/// listens on a second bridge address, `<subnet>.2`, so that one node's path to the broker can be
/// cut alone (``cutBroker(_:)``). `tc netem` on a node's inside veth delays, drops and reorders
/// everything that node sends (``setNetem(_:_:)``).
/// Every name starts with the prefix (`sgw<harness pid>`), so leftovers of a killed run are found
/// and removed by ``Lab/cleanup(prefix:)``.
final class Lab: Sendable {
    let prefix: String
    let subnet: String
    let nodeCount: Int
    private let cuts = Mutex<Set<Cut>>([])
    private let created = Mutex<Bool>(false)
    private let brokerCuts = Mutex<Set<Int>>([])

    struct Cut: Hashable, Sendable {
        var from: Int
        var to: Int
    }

    init(prefix: String, subnet: String, nodeCount: Int) {
        self.prefix = prefix
        self.subnet = subnet
        self.nodeCount = nodeCount
    }

    var bridge: String { "\(prefix)-br" }
    var hostAddress: String { "\(subnet).1" }
    /// The broker's address: a second address of the bridge.
    var brokerAddress: String { "\(subnet).2" }
    func namespace(_ node: Int) -> String { "\(prefix)-n\(node)" }
    func address(_ node: Int) -> String { "\(subnet).\(10 + node)" }

    /// Creates the bridge, namespaces and veth pairs. Throws (after undoing what it made) when
    /// the subnet is already routed in the root namespace or a command fails.
    func create() throws {
        let (_, routes) = Proc.run(["ip", "-4", "route", "show", "\(subnet).0/24"])
        if !routes.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw Proc.Failure(description: "\(subnet).0/24 is already routed here (\(routes.trimmingCharacters(in: .whitespacesAndNewlines))); a leftover run? try `swarm-chaos cleanup`, or choose --subnet")
        }
        created.withLock { $0 = true }
        do {
            try Proc.must(["ip", "link", "add", bridge, "type", "bridge"])
            try Proc.must(["ip", "addr", "add", "\(hostAddress)/24", "dev", bridge])
            try Proc.must(["ip", "addr", "add", "\(brokerAddress)/24", "dev", bridge])
            try Proc.must(["ip", "link", "set", bridge, "up"])
            for node in 1...nodeCount {
                let ns = namespace(node)
                let outside = "\(prefix)-n\(node)"
                let inside = "\(prefix)-n\(node)p"
                try Proc.must(["ip", "netns", "add", ns])
                try Proc.must(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
                try Proc.must(["ip", "link", "set", inside, "netns", ns])
                try Proc.must(["ip", "link", "set", outside, "master", bridge])
                try Proc.must(["ip", "link", "set", outside, "up"])
                try Proc.must(["ip", "-n", ns, "addr", "add", "\(address(node))/24", "dev", inside])
                try Proc.must(["ip", "-n", ns, "link", "set", inside, "up"])
                try Proc.must(["ip", "-n", ns, "link", "set", "lo", "up"])
            }
        } catch {
            destroy()
            throw error
        }
    }

    /// Removes everything with this lab's prefix (idempotent).
    func destroy() {
        guard created.withLock({ let was = $0; $0 = false; return was }) else { return }
        Lab.cleanup(prefix: prefix)
    }

    // MARK: - Faults

    /// Drops what `from` sends to `to` (a one-way cut).
    func cut(from: Int, to: Int) {
        guard from != to, cuts.withLock({ $0.insert(Cut(from: from, to: to)).inserted }) else { return }
        Proc.run(["ip", "-n", namespace(from), "route", "add", "blackhole", "\(address(to))/32"])
    }

    func restore(from: Int, to: Int) {
        guard cuts.withLock({ $0.remove(Cut(from: from, to: to)) != nil }) else { return }
        Proc.run(["ip", "-n", namespace(from), "route", "del", "blackhole", "\(address(to))/32"])
    }

    /// Cuts every link between different groups, both ways.
    func partition(_ groups: [[Int]]) {
        for (i, a) in groups.enumerated() {
            for (j, b) in groups.enumerated() where i != j {
                for x in a { for y in b { cut(from: x, to: y) } }
            }
        }
    }

    /// Removes every cut (the broker cuts too).
    func healAll() {
        for cut in cuts.withLock({ Array($0) }) { restore(from: cut.from, to: cut.to) }
        for node in brokerCuts.withLock({ Array($0) }) { restoreBroker(node) }
    }

    /// Drops what `node` sends to the broker (its TCP connections to the broker go silent).
    func cutBroker(_ node: Int) {
        guard brokerCuts.withLock({ $0.insert(node).inserted }) else { return }
        Proc.run(["ip", "-n", namespace(node), "route", "add", "blackhole", "\(brokerAddress)/32"])
    }

    func restoreBroker(_ node: Int) {
        guard brokerCuts.withLock({ $0.remove(node) != nil }) else { return }
        Proc.run(["ip", "-n", namespace(node), "route", "del", "blackhole", "\(brokerAddress)/32"])
    }

    /// `tc qdisc replace … root netem SPEC` on `node`'s inside veth; nil, or why it failed
    /// (no `tc`, no `sch_netem` in the kernel).
    func setNetem(_ node: Int, _ spec: [String]) -> String? {
        let (status, output) = Proc.run(["tc", "-n", namespace(node), "qdisc", "replace", "dev", "\(prefix)-n\(node)p", "root", "netem"] + spec)
        return status == 0 ? nil : output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func clearNetem(_ node: Int) {
        Proc.run(["tc", "-n", namespace(node), "qdisc", "del", "dev", "\(prefix)-n\(node)p", "root"])
    }

    var activeCuts: Int { cuts.withLock { $0.count } }

    // MARK: - Leftovers

    /// Removes namespaces and links whose names start with `prefix` (every process still inside
    /// such a namespace is killed by pid first), and kills the root-namespace children listed in
    /// `/tmp/swarm-chaos/<prefix>/pids` when their command line still matches.
    static func cleanup(prefix: String) {
        let (_, list) = Proc.run(["ip", "netns", "list"])
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix(prefix + "-") else { continue }
            let (_, pids) = Proc.run(["ip", "netns", "pids", name])
            for pid in pids.split(whereSeparator: \.isNewline).compactMap({ pid_t($0) }) { Proc.kill9(pid) }
            Proc.run(["ip", "netns", "del", name])
        }
        let (_, links) = Proc.run(["ip", "-o", "link", "show"])
        for line in links.split(separator: "\n") {
            let parts = line.split(separator: ":")
            guard parts.count > 1 else { continue }
            let name = String(parts[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first ?? "")
            if name.hasPrefix(prefix + "-") { Proc.run(["ip", "link", "del", name]) }
        }
        let pidFile = "/tmp/swarm-chaos/\(prefix)/pids"
        if let text = try? String(contentsOfFile: pidFile, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 1)
                guard let pid = pid_t(parts.first ?? ""), parts.count == 2 else { continue }
                let command = Proc.commandLine(pid)
                if command.contains("mosquitto") || command.contains("swarm-devices") || command.contains("swarm-gateway") || command.hasPrefix("timeout") {
                    for child in Proc.descendants(of: pid) { Glibc.kill(child, SIGKILL) }
                    Glibc.kill(pid, SIGKILL)
                }
            }
        }
    }

    /// Prefixes of runs whose harness process is gone (`sgw<pid>` with no such pid).
    static func stalePrefixes() -> [String] {
        var prefixes = Set<String>()
        let (_, list) = Proc.run(["ip", "netns", "list"])
        let (_, links) = Proc.run(["ip", "-o", "link", "show"])
        let names = list.split(separator: "\n").map { String($0.split(separator: " ").first ?? "") }
            + links.split(separator: "\n").compactMap { line -> String? in
                let parts = line.split(separator: ":")
                return parts.count > 1 ? String(parts[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first ?? "") : nil
            }
        for name in names where name.hasPrefix("sgw") {
            let digits = name.dropFirst(3).prefix(while: \.isNumber)
            guard let pid = Int32(digits), !digits.isEmpty, name.dropFirst(3 + digits.count).hasPrefix("-") else { continue }
            if Glibc.kill(pid, 0) != 0 || !Proc.commandLine(pid).contains("swarm-chaos") {
                prefixes.insert("sgw\(digits)")
            }
        }
        return prefixes.sorted()
    }
}
