/// Device ids: `[A-Za-z0-9._:-]{1,128}` (docs/gateway.md, “Device contract”). Group names and command names follow the
/// same rule (each is one topic level or one path segment, so the same characters are safe).
public enum DeviceID {
    /// The longest id accepted.
    public static let maxLength = 128

    /// True when `text` is a valid device id (also used for group and command names).
    public static func isValid<S: StringProtocol>(_ text: S) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: ":"), UInt8(ascii: "-"):
                continue
            default:
                return false
            }
        }
        return true
    }
}

/// The device-side topics of the device contract (docs/gateway.md) under a configurable prefix (default `devices`):
/// parsing of what devices publish, and the downlink topic names.
public struct DeviceTopics: Sendable, Hashable {
    /// What an inbound device topic carries.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// `{prefix}/{id}/status`: birth (`online` + metadata) and will (`offline`), retained.
        case status
        /// `{prefix}/{id}/telemetry`: a JSON object, optional integer `seq`.
        case telemetry
        /// `{prefix}/{id}/state/reported`: a JSON merge patch of the reported state.
        case reported
    }

    /// Why a topic was refused.
    public enum Rejection: Error, Sendable, Hashable {
        /// Not `{prefix}/{id}/{known suffix}`.
        case badTopic
        /// The topic has the right shape but the id is not `[A-Za-z0-9._:-]{1,128}`.
        case badID
    }

    /// The topic prefix (one or more levels, no wildcards, no leading or trailing `/`).
    public let prefix: String
    private let prefixLevels: [Substring]

    /// Topics under `prefix` (default `devices`). A leading or trailing `/` is ignored.
    public init(prefix: String = "devices") {
        var trimmed = Substring(prefix)
        while trimmed.hasPrefix("/") { trimmed = trimmed.dropFirst() }
        while trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        self.prefix = trimmed.isEmpty ? "devices" : String(trimmed)
        self.prefixLevels = self.prefix.split(separator: "/", omittingEmptySubsequences: false)
    }

    /// Parses an inbound topic into the device id and the kind.
    public func parse(_ topic: String) -> Result<(id: String, kind: Kind), Rejection> {
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        let count = prefixLevels.count
        guard levels.count >= count + 2, Array(levels[0..<count]) == prefixLevels else { return .failure(.badTopic) }
        let rest = levels[(count + 1)...]
        let kind: Kind
        if rest.count == 1 && rest.first == "status" {
            kind = .status
        } else if rest.count == 1 && rest.first == "telemetry" {
            kind = .telemetry
        } else if rest.count == 2 && rest.first == "state" && rest.last == "reported" {
            kind = .reported
        } else {
            return .failure(.badTopic)
        }
        let id = levels[count]
        guard DeviceID.isValid(id) else { return .failure(.badID) }
        return .success((String(id), kind))
    }

    /// Parses a command reply topic, `{prefix}/{id}/replies/{node}`, into the device id and the
    /// node level (the gateway node whose command it answers); nil for any other topic.
    public func parseReply(_ topic: String) -> (id: String, node: String)? {
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        let count = prefixLevels.count
        guard levels.count == count + 3, levels[count + 1] == "replies", Array(levels[0..<count]) == prefixLevels else { return nil }
        let id = levels[count]
        let node = levels[count + 2]
        guard DeviceID.isValid(id), !node.isEmpty else { return nil }
        return (String(id), String(node))
    }

    /// The shared-subscription filters every gateway node subscribes to on every broker:
    /// `$share/{group}/{prefix}/+/status`, `…/+/telemetry`, `…/+/state/reported`, and the command
    /// replies `…/+/replies/+` (a reply reaching another node than the one waiting for it is
    /// forwarded over the cluster).
    public func sharedFilters(group: String) -> [String] {
        ["+/status", "+/telemetry", "+/state/reported", "+/replies/+"].map { "$share/\(group)/\(prefix)/\($0)" }
    }

    /// `{prefix}/{id}/status`.
    public func status(_ id: String) -> String { "\(prefix)/\(id)/status" }
    /// `{prefix}/{id}/telemetry`.
    public func telemetry(_ id: String) -> String { "\(prefix)/\(id)/telemetry" }
    /// `{prefix}/{id}/state/reported`.
    public func reported(_ id: String) -> String { "\(prefix)/\(id)/state/reported" }
    /// `{prefix}/{id}/state/desired` (retained `{"version": n, "state": {…}}`).
    public func desired(_ id: String) -> String { "\(prefix)/\(id)/state/desired" }
    /// `{prefix}/{id}/commands/{name}` (MQTT 5 response topic + correlation data).
    public func command(_ id: String, _ name: String) -> String { "\(prefix)/\(id)/commands/\(name)" }
    /// `{prefix}/{id}/replies/{node}`: the response topic of a command sent by gateway node
    /// `node` (a topic-safe node name), inside the device's own subtree so that the strict ACL
    /// lets the device answer.
    public func reply(_ id: String, node: String) -> String { "\(prefix)/\(id)/replies/\(node)" }
    /// `{prefix}/{id}/down` (group publishes).
    public func down(_ id: String) -> String { "\(prefix)/\(id)/down" }
}
