import Foundation
/// Which events a consumer (an SSE stream, a webhook sink) takes: `types=`, `group=`, `device=`
/// and `where=`. Every given part must match; nothing given: every event.
public struct EventFilter: Sendable {
    /// The types taken (nil: all).
    public var types: Set<EventType>?
    /// Only devices in this group when the event happened (nil: any).
    public var group: String?
    /// Only these devices (nil: any).
    public var devices: Set<String>?
    /// A further test (the `where` expression, evaluated on the event), nil: none.
    public var predicate: (@Sendable (DeviceEvent) -> Bool)?

    public init(types: Set<EventType>? = nil, group: String? = nil, devices: Set<String>? = nil, predicate: (@Sendable (DeviceEvent) -> Bool)? = nil) {
        self.types = types
        self.group = group
        self.devices = devices
        self.predicate = predicate
    }

    /// Every event.
    public static let all = EventFilter()

    public func matches(_ event: DeviceEvent) -> Bool {
        if let types, !types.contains(event.type) { return false }
        if let devices, !devices.contains(event.device) { return false }
        if let group, group != "all", !event.groups.contains(group) { return false }
        if let predicate, !predicate(event) { return false }
        return true
    }

    /// Parses a comma-separated `types=` list; throws naming the unknown type.
    public static func types(_ text: String) throws(GatewayError) -> Set<EventType> {
        var result = Set<EventType>()
        for part in text.split(separator: ",") {
            let name = part.trimmingCharacters(in: .whitespaces)
            guard let type = EventType(rawValue: name) else {
                throw GatewayError.invalidBody(
                    "unknown event type '\(name)' (types are \(EventType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            result.insert(type)
        }
        guard !result.isEmpty else { throw GatewayError.invalidBody("types= names no event type") }
        return result
    }
}
