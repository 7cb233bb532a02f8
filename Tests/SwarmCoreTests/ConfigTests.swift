import Testing

@testable import SwarmCore

@Suite struct ChangeLogTests {
    static func change(_ n: Int) -> RegistryChange {
        .remove(name: "n\(n)", pid: ProcessID(node: NodeID(name: "a", incarnation: 1), local: UInt64(n)))
    }

    @Test func numbersChangesFromOne() {
        var log = ChangeLog(capacity: 4)
        #expect(log.lastSeq == 0)
        #expect(log.changes(after: 0) == [])
        let first = log.append(Self.change(1))
        #expect(first.seq == 1)
        #expect(first.change == Self.change(1))
        _ = log.append(Self.change(2))
        _ = log.append(Self.change(3))
        #expect(log.firstSeq == 1)
        #expect(log.changes(after: 0)?.map(\.seq) == [1, 2, 3])
        #expect(log.changes(after: 2)?.map(\.change) == [Self.change(3)])
        #expect(log.changes(after: 3) == [])
        #expect(log.changes(after: 17) == [])
    }

    @Test func catchUpAfterWrap() {
        var log = ChangeLog(capacity: 4)
        for n in 1...10 { _ = log.append(Self.change(n)) }
        #expect(log.lastSeq == 10)
        #expect(log.firstSeq == 7)
        #expect(log.changes(after: 6)?.map(\.seq) == [7, 8, 9, 10])
        #expect(log.changes(after: 8)?.map(\.change) == [Self.change(9), Self.change(10)])
        #expect(log.changes(after: 9)?.map(\.seq) == [10])
        // Wrapped part-way: the storage head is in the middle.
        var partial = ChangeLog(capacity: 4)
        for n in 1...6 { _ = partial.append(Self.change(n)) }
        #expect(partial.changes(after: 2)?.map(\.seq) == [3, 4, 5, 6])
        #expect(partial.changes(after: 4)?.map(\.change) == [Self.change(5), Self.change(6)])
    }

    @Test func nilWhenTooOld() {
        var log = ChangeLog(capacity: 4)
        for n in 1...10 { _ = log.append(Self.change(n)) }
        #expect(log.changes(after: 5) == nil)
        #expect(log.changes(after: 1) == nil)
        #expect(log.changes(after: 0) == nil, "from the start needs a snapshot once the log wrapped")
    }
}

@Suite struct NodeFilterTests {
    @Test func exactPatternsMatchWholeNamesOnly() throws {
        let filter = try NodeFilter(deny: [NodeFilter.Pattern(parsing: "gw-1")])
        #expect(NodeFilter.Pattern(parsing: "gw-1") == .exact("gw-1"))
        #expect(!filter.admits("gw-1"))
        #expect(filter.admits("gw-10"))
        #expect(filter.admits("xgw-1"))
    }

    @Test func slashesMakeAnUnanchoredRegex() throws {
        #expect(NodeFilter.Pattern(parsing: "/^gw-1/") == .regex("^gw-1"))
        #expect(NodeFilter.Pattern(parsing: "/") == .exact("/"))
        let anchored = try NodeFilter(deny: [NodeFilter.Pattern(parsing: "/^gw-1/")])
        #expect(!anchored.admits("gw-1"))
        #expect(!anchored.admits("gw-10@host"))
        #expect(anchored.admits("xgw-1"))
        let unanchored = try NodeFilter(deny: [.regex("db")])
        #expect(!unanchored.admits("gw-db-2"))
        #expect(unanchored.admits("gw-2"))
    }

    @Test func allowListOverridesDeny() throws {
        let filter = try NodeFilter(allow: [.regex("^gw-")], deny: [.exact("gw-2")])
        #expect(filter.admits("gw-2"), "an allowed node stays even if denied")
        #expect(filter.admits("gw-7@10.0.0.7:7946"))
        #expect(!filter.admits("db-1"), "with an allow list only matching nodes take part")
        #expect(!filter.admits("swarm-cli-42"))
    }

    @Test func builtInDenyList() throws {
        for filter in [NodeFilter.default, try NodeFilter(deny: [.exact("other")])] {
            #expect(!filter.admits("swarm-cli"))
            #expect(!filter.admits("swarm-cli-1234@127.0.0.1"))
            #expect(!filter.admits("remsh-abc"))
            #expect(!filter.admits("gw_maint_3"))
            #expect(filter.admits("gw-1@127.0.0.1:7946"))
            #expect(filter.admits("my-swarm-cli"), "the CLI prefix is anchored")
        }
    }

    @Test func literalPatternsMatchAsTheirRegexWould() throws {
        // Plain (optionally ^-anchored) regexes are matched with string operations; the answer
        // must be the regex's own.
        let patterns = ["^swarm-cli", "^remsh", "_maint_", "db", "^gw-1", "gw-1@", ":7946", "^a", "-", "K", "^K"]
        let names = [
            "", "a", "swarm-cli", "swarm-cl", "my-swarm-cli", "swarm-cli-42@127.0.0.1", "remsh", "xremsh", "gw_maint_3",
            "gw-_maint", "db", "gw-db-2", "gw-1", "gw-10@host", "xgw-1@h:7946", "Gw-1", "gw-1\n", "é-db", "swarm-clí", "gw-1\u{301}", "swarm-cli\u{301}x", "x\ngw-1", "x\r\n-", "x\u{212A}y", "\u{212A}", "Kelvin",
        ]
        for source in patterns {
            let regex = try Regex(source)
            let filter = try NodeFilter(allow: [.regex(source)])
            for name in names {
                #expect(filter.admits(name) == ((try? regex.firstMatch(in: name)) != nil), "/\(source)/ on \(name)")
            }
        }
    }

    @Test func invalidRegexThrows() {
        #expect(throws: NodeFilter.PatternError.self) { try NodeFilter(deny: [.regex("(unclosed")]) }
        #expect(throws: NodeFilter.PatternError.self) { try NodeFilter(allow: [NodeFilter.Pattern(parsing: "/[a-/")]) }
        #expect(throws: Never.self) { try NodeFilter(allow: [.exact("(not a regex")]) }
    }
}

@Suite struct StrategyTests {
    @Test func staticQuorumIsNilBelowQuorum() {
        let strategy = StaticQuorumRingStrategy(quorumSize: 3)
        #expect(strategy.owner(of: "x", on: HashRing()) == nil)
        #expect(strategy.owner(of: "x", on: HashRing(nodes: ["a"])) == nil)
        #expect(strategy.owner(of: "x", on: HashRing(nodes: ["a", "b"])) == nil)
        for nodes in [["a", "b", "c"], ["a", "b", "c", "d"]] {
            let ring = HashRing(nodes: nodes)
            for name in millionNames.prefix(200) {
                #expect(strategy.owner(of: name, on: ring) == ring.owner(of: name))
            }
        }
        #expect(strategy.summary == "static-quorum-ring(3)")
    }

    @Test func ringStrategyIsTheRing() {
        let ring = HashRing(nodes: ["a", "b"])
        for name in millionNames.prefix(200) { #expect(RingStrategy().owner(of: name, on: ring) == ring.owner(of: name)) }
        #expect(RingStrategy().owner(of: "x", on: HashRing()) == nil)
    }
}
