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

    private struct Matcher: @unchecked Sendable {
        // `Regex` is immutable after construction and matching does not mutate it; it is only
        // missing the Sendable annotation in some toolchains. Nothing else is stored here.
        let exact: String?
        let regex: Regex<AnyRegexOutput>?

        init(_ pattern: Pattern) throws {
            switch pattern {
            case .exact(let s):
                exact = s
                regex = nil
            case .regex(let s):
                exact = nil
                do { regex = try Regex(s) } catch { throw PatternError.invalidRegex(s, "\(error)") }
            }
        }

        func matches(_ name: String) -> Bool {
            if let exact { return exact == name }
            guard let regex else { return false }
            return (try? regex.firstMatch(in: name)) != nil
        }
    }
}
