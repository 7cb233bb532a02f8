import SwarmJSON

/// The `where` language of fleet search (docs/gateway.md, “Fleet search”): `GET /v1/devices?where=…`, the `"where"` of a
/// group query. Pure: parsing and evaluation, no I/O.
///
/// ```
/// expression := or
/// or         := and ("or" and)*
/// and        := unary ("and" unary)*
/// unary      := "not" unary | primary
/// primary    := "(" expression ")"
///             | "exists" "(" path ")"
///             | operand [ ("=" | "!=" | "<" | "<=" | ">" | ">=") operand
///                       | "in" path ]
/// operand    := path | 'text' | number | true | false | null
/// path       := root ("." member)*
/// root       := id | online | groups | version | reportedVersion | lastSeen | connectedAt
///             | metadata | telemetry | reported | desired | tags
/// ```
///
/// Keywords are case-insensitive. Text is in single quotes (`''` is a quote inside it). A member
/// is `[A-Za-z0-9_:-]+` or quoted text (`tags.'floor level'`). `==` and `<>` are accepted for
/// `=` and `!=`.
///
/// Meaning, chosen to be what users of Azure IoT Hub's and AWS IoT's twin queries expect:
/// - A path names a value of the twin; a member that does not exist is *missing*, which compares
///   like `null`: `tags.site = null` holds for a device without a `site` tag and `tags.site != 'x'`
///   holds too (`!=` is always `not =`).
/// - `=` compares numbers by value (`1 = 1.0`), text, booleans and `null`; values of different
///   types are never equal. `<`, `<=`, `>`, `>=` hold only between two numbers or two texts
///   (texts in Unicode order; `lastSeen`/`connectedAt` are RFC 3339 UTC texts, so they order by
///   time); anything else is false.
/// - `exists(path)`: the path names a value that is not `null`.
/// - `x in path`: the path names an array with an element equal to `x` (`'g' in groups`).
/// - An operand alone is a condition that holds when it is `true` (`online`, `not online`).
///
/// Limits: at most ``maxLength`` characters and ``maxDepth`` levels of nesting; an error names its
/// position (``FleetQueryError/position``, the 1-based character where it was found).
public struct FleetQuery: Sendable, Hashable, CustomStringConvertible {
    /// The longest expression accepted, in characters.
    public static let maxLength = 4096
    /// The deepest nesting of parentheses and `not` accepted.
    public static let maxDepth = 64

    /// The text it was parsed from.
    public let text: String
    let root: Node

    /// Where a path starts: the twin's top-level members a query can name.
    public enum Root: String, Sendable, Hashable, CaseIterable {
        case id, online, groups, version, reportedVersion, lastSeen, connectedAt
        case metadata, telemetry, reported, desired, tags

        /// Roots that are objects, whose members a path may name.
        var hasMembers: Bool {
            switch self {
            case .metadata, .telemetry, .reported, .desired, .tags: return true
            default: return false
            }
        }
    }

    /// A path: a root and the member names below it.
    public struct Path: Sendable, Hashable, CustomStringConvertible {
        public var root: Root
        public var members: [String]

        public var description: String { ([root.rawValue] + members).joined(separator: ".") }
    }

    public enum Comparison: String, Sendable, Hashable {
        case equal = "=", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    }

    indirect enum Node: Sendable, Hashable {
        case and(Node, Node)
        case or(Node, Node)
        case not(Node)
        case compare(Operand, Comparison, Operand)
        case exists(Path)
        case element(Operand, of: Path)
        case truth(Operand)
    }

    enum Operand: Sendable, Hashable {
        case path(Path)
        case literal(JSONValue)
    }

    /// Parses `text`; throws ``FleetQueryError`` with the position of the first error.
    public static func parse(_ text: String) throws(FleetQueryError) -> FleetQuery {
        guard text.count <= maxLength else {
            throw FleetQueryError(position: maxLength + 1, message: "the expression is longer than \(maxLength) characters")
        }
        var parser = Parser(text)
        let root = try parser.expression(depth: 0)
        if let token = parser.peek {
            throw parser.error(at: token, "unexpected \(token.kind.shown) after a complete expression (missing 'and' or 'or'?)")
        }
        return FleetQuery(text: text, root: root)
    }

    public var description: String { text }

    /// Every path the expression names (for callers that fetch only what a query needs).
    public var paths: [Path] {
        var found: [Path] = []
        func visit(_ operand: Operand) { if case .path(let path) = operand { found.append(path) } }
        func visit(_ node: Node) {
            switch node {
            case .and(let a, let b), .or(let a, let b):
                visit(a)
                visit(b)
            case .not(let a): visit(a)
            case .compare(let a, _, let b):
                visit(a)
                visit(b)
            case .exists(let path): found.append(path)
            case .element(let a, let path):
                visit(a)
                found.append(path)
            case .truth(let a): visit(a)
            }
        }
        visit(root)
        return found
    }

    /// True when the twin (``DeviceTwin/json``: `id`, `online`, `groups`, `tags`, …) matches.
    public func matches(twin: JSONValue) -> Bool {
        matches(TwinDocument(twin: twin))
    }

    /// True when `document` matches.
    func matches(_ document: some FleetQueryDocument) -> Bool {
        Self.evaluate(root, document)
    }

    private static func evaluate(_ node: Node, _ document: some FleetQueryDocument) -> Bool {
        switch node {
        case .and(let a, let b): return evaluate(a, document) && evaluate(b, document)
        case .or(let a, let b): return evaluate(a, document) || evaluate(b, document)
        case .not(let a): return !evaluate(a, document)
        case .compare(let a, let comparison, let b):
            return compare(value(a, document), comparison, value(b, document))
        case .exists(let path):
            guard let found = document.value(at: path) else { return false }
            return found != .null
        case .element(let operand, let path):
            guard let element = value(operand, document) else { return false }
            if path.root == .groups, path.members.isEmpty {
                guard let name = element.stringValue else { return false }
                return document.isMember(of: name)
            }
            guard let items = document.value(at: path)?.arrayValue else { return false }
            return items.contains { equal($0, element) }
        case .truth(let operand):
            return value(operand, document) == .bool(true)
        }
    }

    private static func value(_ operand: Operand, _ document: some FleetQueryDocument) -> JSONValue? {
        switch operand {
        case .literal(let value): return value
        case .path(let path): return document.value(at: path)
        }
    }

    /// The comparison of two values (nil: missing, compared like `null`).
    static func compare(_ a: JSONValue?, _ comparison: Comparison, _ b: JSONValue?) -> Bool {
        switch comparison {
        case .equal: return equal(a ?? .null, b ?? .null)
        case .notEqual: return !equal(a ?? .null, b ?? .null)
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            guard let a, let b, let order = order(a, b) else { return false }
            switch comparison {
            case .less: return order < 0
            case .lessOrEqual: return order <= 0
            case .greater: return order > 0
            default: return order >= 0
            }
        }
    }

    private static func equal(_ a: JSONValue, _ b: JSONValue) -> Bool {
        if case .int(let x) = a, case .int(let y) = b { return x == y }
        return a.sameValue(b)
    }

    /// -1, 0 or 1 between two numbers or two texts; nil for anything else.
    private static func order(_ a: JSONValue, _ b: JSONValue) -> Int? {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y ? -1 : (x == y ? 0 : 1)
        case (.string(let x), .string(let y)): return x < y ? -1 : (x == y ? 0 : 1)
        default:
            guard let x = a.doubleValue, let y = b.doubleValue else { return nil }
            return x < y ? -1 : (x == y ? 0 : 1)
        }
    }
}

/// A bad expression: what is wrong and where.
public struct FleetQueryError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The 1-based position (in characters) where the error was found; one past the end when
    /// the expression ended too early.
    public var position: Int
    /// What is wrong.
    public var message: String

    public var description: String { "invalid query at position \(position): \(message)" }
}

/// What a query is evaluated on: the device process's state (``DeviceIndex/Entry``) or a twin's
/// JSON.
protocol FleetQueryDocument {
    /// The value at `path`, nil when missing.
    func value(at path: FleetQuery.Path) -> JSONValue?
    /// True when the device is in group `name`.
    func isMember(of name: String) -> Bool
}

/// A twin as JSON (``DeviceTwin/json``).
struct TwinDocument: FleetQueryDocument {
    let twin: JSONValue

    func value(at path: FleetQuery.Path) -> JSONValue? {
        var current = twin[path.root.rawValue]
        for member in path.members {
            guard let next = current?[member] else { return nil }
            current = next
        }
        return current
    }

    func isMember(of name: String) -> Bool {
        twin["groups"]?.arrayValue?.contains(.string(name)) ?? false
    }
}

// MARK: - Parser

extension FleetQuery {
    struct Token: Sendable {
        enum Kind: Sendable, Equatable {
            case word(String)  // a keyword or a path: letters, digits, `_`, `-`, `:`, `.`, quoted members
            case path(Path)
            case text(String)
            case number(JSONValue)
            case comparison(Comparison)
            case open, close

            var shown: String {
                switch self {
                case .word(let word): return "'\(word)'"
                case .path(let path): return "'\(path)'"
                case .text(let text): return "text '\(text.prefix(40))'"
                case .number(let number): return "number \(number.jsonText)"
                case .comparison(let comparison): return "'\(comparison.rawValue)'"
                case .open: return "'('"
                case .close: return "')'"
                }
            }
        }

        var kind: Kind
        /// 0-based offset in UTF-8 bytes.
        var offset: Int
    }

    struct Parser {
        let bytes: [UInt8]
        var index = 0
        var lookahead: Token?
        var lexError: FleetQueryError?

        init(_ text: String) {
            bytes = Array(text.utf8)
        }

        var peek: Token? {
            mutating get {
                if lookahead == nil, lexError == nil {
                    do {
                        lookahead = try lex()
                    } catch {
                        lexError = error
                    }
                }
                return lookahead
            }
        }

        mutating func next() throws(FleetQueryError) -> Token? {
            let token = peek
            if let lexError { throw lexError }
            lookahead = nil
            return token
        }

        /// The 1-based character position of byte offset `offset`.
        func position(_ offset: Int) -> Int {
            String(decoding: bytes[0..<min(offset, bytes.count)], as: UTF8.self).count + 1
        }

        func error(at token: Token, _ message: String) -> FleetQueryError {
            FleetQueryError(position: position(token.offset), message: message)
        }

        func errorAtEnd(_ message: String) -> FleetQueryError {
            FleetQueryError(position: position(bytes.count), message: message)
        }

        // MARK: Grammar

        mutating func expression(depth: Int) throws(FleetQueryError) -> Node {
            var left = try conjunction(depth: depth)
            while try keyword("or") {
                left = .or(left, try conjunction(depth: depth))
            }
            return left
        }

        mutating func conjunction(depth: Int) throws(FleetQueryError) -> Node {
            var left = try unary(depth: depth)
            while try keyword("and") {
                left = .and(left, try unary(depth: depth))
            }
            return left
        }

        mutating func unary(depth: Int) throws(FleetQueryError) -> Node {
            guard depth < FleetQuery.maxDepth else {
                let offset = peek?.offset ?? bytes.count
                throw FleetQueryError(position: position(offset), message: "nested deeper than \(FleetQuery.maxDepth) levels")
            }
            if try keyword("not") { return .not(try unary(depth: depth + 1)) }
            return try primary(depth: depth)
        }

        mutating func primary(depth: Int) throws(FleetQueryError) -> Node {
            guard let token = try next() else { throw errorAtEnd("the expression ends where a condition was expected") }
            switch token.kind {
            case .open:
                let inner = try expression(depth: depth + 1)
                try expectClose(opening: token)
                return inner
            case .word(let word) where word.lowercased() == "exists":
                guard let open = peek, open.kind == .open else {
                    throw peekError("'exists' must be followed by '(' and a path")
                }
                lookahead = nil
                let path = try pathOperand("exists( ) takes a path")
                try expectClose(opening: open)
                return .exists(path)
            default:
                let left = try operand(token)
                if let next = peek, case .comparison(let comparison) = next.kind {
                    lookahead = nil
                    guard let rightToken = try self.next() else {
                        throw errorAtEnd("the expression ends after '\(comparison.rawValue)'; a path or a value was expected")
                    }
                    return .compare(left, comparison, try operand(rightToken))
                }
                if try keyword("in") {
                    return .element(left, of: try pathOperand("'in' must be followed by a path to an array, such as groups"))
                }
                return .truth(left)
            }
        }

        mutating func expectClose(opening: Token) throws(FleetQueryError) {
            guard let token = try next() else {
                throw errorAtEnd("missing ')' for the '(' at position \(position(opening.offset))")
            }
            guard token.kind == .close else {
                throw error(at: token, "expected ')' (for the '(' at position \(position(opening.offset))), found \(token.kind.shown)")
            }
        }

        mutating func peekError(_ message: String) -> FleetQueryError {
            if let lexError { return lexError }
            if let token = lookahead { return error(at: token, message) }
            return errorAtEnd(message)
        }

        mutating func pathOperand(_ message: String) throws(FleetQueryError) -> Path {
            guard let token = try next() else { throw errorAtEnd(message) }
            guard case .path(let path) = try operand(token) else { throw error(at: token, message) }
            return path
        }

        /// A path or a literal.
        func operand(_ token: Token) throws(FleetQueryError) -> Operand {
            switch token.kind {
            case .text(let text): return .literal(.string(text))
            case .number(let number): return .literal(number)
            case .path(let path): return .path(path)
            case .word(let word):
                switch word.lowercased() {
                case "true": return .literal(.bool(true))
                case "false": return .literal(.bool(false))
                case "null": return .literal(.null)
                case "and", "or", "not", "in", "exists":
                    throw error(at: token, "'\(word)' where a path or a value was expected")
                default:
                    throw error(at: token, "unknown path '\(word)' (a path starts with \(FleetQuery.Root.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
            case .comparison(let comparison): throw error(at: token, "'\(comparison.rawValue)' where a path or a value was expected")
            case .open, .close: throw error(at: token, "\(token.kind.shown) where a path or a value was expected")
            }
        }

        /// Consumes the keyword `word` (case-insensitive) when it is next.
        mutating func keyword(_ word: String) throws(FleetQueryError) -> Bool {
            guard let token = peek else {
                if let lexError { throw lexError }
                return false
            }
            guard case .word(let found) = token.kind, found.lowercased() == word else { return false }
            lookahead = nil
            return true
        }

        // MARK: Tokens

        static func isWordByte(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: ":"):
                return true
            default: return false
            }
        }

        mutating func lex() throws(FleetQueryError) -> Token? {
            while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
            guard index < bytes.count else { return nil }
            let start = index
            let byte = bytes[index]
            func token(_ kind: Token.Kind, length: Int) -> Token {
                index += length
                return Token(kind: kind, offset: start)
            }
            let following = index + 1 < bytes.count ? bytes[index + 1] : 0
            switch byte {
            case UInt8(ascii: "("): return token(.open, length: 1)
            case UInt8(ascii: ")"): return token(.close, length: 1)
            case UInt8(ascii: "="): return token(.comparison(.equal), length: following == UInt8(ascii: "=") ? 2 : 1)
            case UInt8(ascii: "!"):
                guard following == UInt8(ascii: "=") else { throw lexError(start, "'!' must be part of '!=' (use 'not' to negate)") }
                return token(.comparison(.notEqual), length: 2)
            case UInt8(ascii: "<"):
                if following == UInt8(ascii: "=") { return token(.comparison(.lessOrEqual), length: 2) }
                if following == UInt8(ascii: ">") { return token(.comparison(.notEqual), length: 2) }
                return token(.comparison(.less), length: 1)
            case UInt8(ascii: ">"):
                return following == UInt8(ascii: "=") ? token(.comparison(.greaterOrEqual), length: 2) : token(.comparison(.greater), length: 1)
            case UInt8(ascii: "'"):
                return Token(kind: .text(try quoted()), offset: start)
            case UInt8(ascii: "\""):
                throw lexError(start, "text is written in single quotes: 'like this'")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return Token(kind: .number(try number()), offset: start)
            case _ where Self.isWordByte(byte):
                return try word()
            default:
                let character = String(decoding: bytes[start...].prefix(4), as: UTF8.self).first.map(String.init) ?? "?"
                throw lexError(start, "unexpected character '\(character)'")
            }
        }

        func lexError(_ offset: Int, _ message: String) -> FleetQueryError {
            FleetQueryError(position: position(offset), message: message)
        }

        /// Single-quoted text at `index` (`''` inside is one quote).
        mutating func quoted() throws(FleetQueryError) -> String {
            let start = index
            index += 1
            var text: [UInt8] = []
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "'") {
                    if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "'") {
                        text.append(UInt8(ascii: "'"))
                        index += 2
                        continue
                    }
                    index += 1
                    return String(decoding: text, as: UTF8.self)
                }
                text.append(bytes[index])
                index += 1
            }
            throw lexError(start, "text started here is not closed with '")
        }

        /// A JSON-style number at `index`.
        mutating func number() throws(FleetQueryError) -> JSONValue {
            let start = index
            var integral = true
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            func digits() -> Int {
                let from = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                return index - from
            }
            guard digits() > 0 else { throw lexError(start, "a number was expected after '-'") }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                integral = false
                guard digits() > 0 else { throw lexError(start, "a number needs digits after its '.'") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                integral = false
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw lexError(start, "a number needs digits in its exponent") }
            }
            if index < bytes.count, Self.isWordByte(bytes[index]) || bytes[index] == UInt8(ascii: ".") {
                throw lexError(start, "a number must not run into letters (a path starts with a root such as tags)")
            }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            if integral, let value = Int64(text) { return .int(value) }
            guard let value = Double(text), value.isFinite else { throw lexError(start, "number \(text) is out of range") }
            return .double(value)
        }

        /// A keyword, or a path: a root and `.member`s (a member may be quoted text).
        mutating func word() throws(FleetQueryError) -> Token {
            let start = index
            func run() -> String {
                let from = index
                while index < bytes.count, Self.isWordByte(bytes[index]) { index += 1 }
                return String(decoding: bytes[from..<index], as: UTF8.self)
            }
            let first = run()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ".") else {
                // A bare word: a keyword, or a root without members.
                if let root = Root(rawValue: first) { return Token(kind: .path(Path(root: root, members: [])), offset: start) }
                return Token(kind: .word(first), offset: start)
            }
            guard let root = Root(rawValue: first) else {
                throw lexError(start, "unknown path '\(first)' (a path starts with \(Root.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard root.hasMembers else {
                throw lexError(index, "'\(first)' has no members (only metadata, telemetry, reported, desired and tags do)")
            }
            var members: [String] = []
            while index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "'") {
                    let text = try quoted()
                    guard !text.isEmpty else { throw lexError(index - 2, "a quoted member must not be empty") }
                    members.append(text)
                    continue
                }
                let member = run()
                guard !member.isEmpty else { throw lexError(index, "a member name was expected after '.'") }
                members.append(member)
            }
            return Token(kind: .path(Path(root: root, members: members)), offset: start)
        }
    }
}
