/// Allow and deny lists of node-name patterns (Swarm's `node_whitelist` / `node_blacklist`).
///
/// - If the allow list is non-empty, only nodes matching it take part in the ring (an allowed
///   node is kept even when a deny pattern matches it: the allow list overrides).
/// - Otherwise a node takes part unless it matches the deny list or the built-in deny list.
///
/// A left-out node may still connect and use the API; it never owns names.
///
/// Patterns are exact strings by default. A pattern written between slashes (`/^gw-[0-9]+@/`)
/// is a regular expression, matched anywhere in the name unless anchored. (Swarm compiled every
/// string as an unanchored regex, so `"a"` matched any name containing an a; we don't.)
public struct NodeFilter: Sendable {
    public enum Pattern: Sendable, Hashable, CustomStringConvertible {
        case exact(String)
        case regex(String)

        /// Parses `/re/` as a regex, anything else as an exact name.
        public init(parsing text: String) {
            if text.count >= 2, text.hasPrefix("/"), text.hasSuffix("/") {
                self = .regex(String(text.dropFirst().dropLast()))
            } else {
                self = .exact(text)
            }
        }

        public var description: String {
            switch self {
            case .exact(let s): return s
            case .regex(let s): return "/\(s)/"
            }
        }
    }

    /// Built-in deny list: operator tool connections never join the ring (the CLI connects as
    /// `swarm-cli…`, remote shells as `remsh…`, maintenance helpers contain `_maint_`).
    public static let builtInDeny: [Pattern] = [.regex("^swarm-cli"), .regex("^remsh"), .regex("_maint_")]

    public let allow: [Pattern]
    public let deny: [Pattern]
    private let compiledAllow: [Matcher]
    private let compiledDeny: [Matcher]

    public enum PatternError: Error, CustomStringConvertible {
        case invalidRegex(String, String)
        public var description: String {
            switch self {
            case .invalidRegex(let pattern, let why): return "invalid node pattern /\(pattern)/: \(why)"
            }
        }
    }

    /// - Throws: ``PatternError`` for a regex that does not compile (config errors name the key).
    public init(allow: [Pattern] = [], deny: [Pattern] = []) throws {
        self.allow = allow
        self.deny = deny
        self.compiledAllow = try allow.map(Matcher.init)
        self.compiledDeny = try (deny + Self.builtInDeny).map(Matcher.init)
    }

    /// A filter that admits every node except the built-in deny list.
    public static var `default`: NodeFilter {
        // The built-in patterns are constants that compile.
        try! NodeFilter()
    }

    public func admits(_ nodeName: String) -> Bool {
        if !compiledAllow.isEmpty {
            return compiledAllow.contains { $0.matches(nodeName) }
        }
        return !compiledDeny.contains { $0.matches(nodeName) }
    }

    /// A class, so that scanning the lists retains one reference per pattern instead of copying
    /// each pattern's fields.
    private final class Matcher: @unchecked Sendable {
        // `Regex` is immutable after construction and matching does not mutate it; it is only
        // missing the Sendable annotation in some toolchains. Nothing else is stored here, and
        // every stored property is a constant.
        let exact: String?
        let regex: Regex<AnyRegexOutput>?
        /// A regex that is a plain literal, optionally anchored (`^swarm-cli`, `_maint_`), matched
        /// with string operations: the ring is rebuilt from the filter on every membership
        /// change, and a `Regex` match costs microseconds.
        let literal: (bytes: [UInt8], anchored: Bool)?

        init(_ pattern: Pattern) throws {
            switch pattern {
            case .exact(let s):
                exact = s
                regex = nil
                literal = nil
            case .regex(let s):
                exact = nil
                do { regex = try Regex(s) } catch { throw PatternError.invalidRegex(s, "\(error)") }
                literal = Self.literal(s)
            }
        }

        /// The literal a regex matches when it has no metacharacters besides a leading `^`
        /// (ASCII letters, digits, `_`, `-`, `@`, `:` only).
        static func literal(_ source: String) -> (bytes: [UInt8], anchored: Bool)? {
            var body = Substring(source)
            let anchored = body.hasPrefix("^")
            if anchored { body = body.dropFirst() }
            let plain = body.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "@")
                    || byte == UInt8(ascii: ":")
            }
            return plain && !body.isEmpty ? (Array(body.utf8), anchored) : nil
        }

        /// Whether `literal` (ASCII letters, digits and `_-@:`) occurs in the ASCII `name` (at its
        /// start when anchored), or nil when `name` is not ASCII (the regex decides those). In an
        /// ASCII name every byte is one character, except CR LF, which the literal cannot contain,
        /// so a byte search finds what the regex finds.
        static func matches(_ name: String, literal: [UInt8], anchored: Bool) -> Bool? {
            name.utf8.withContiguousStorageIfAvailable { bytes -> Bool? in
                guard bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
                if anchored { return bytes.starts(with: literal) }
                guard bytes.count >= literal.count else { return false }
                for start in 0...(bytes.count - literal.count) where bytes[start] == literal[0] {
                    if bytes[start..<(start + literal.count)].elementsEqual(literal) { return true }
                }
                return false
            } ?? nil
        }

        func matches(_ name: String) -> Bool {
            if let exact { return exact == name }
            if let literal, let found = Self.matches(name, literal: literal.bytes, anchored: literal.anchored) { return found }
            guard let regex else { return false }
            return (try? regex.firstMatch(in: name)) != nil
        }
    }
}
