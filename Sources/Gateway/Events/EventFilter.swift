import Foundation
import SwarmJSON
/// Which events a consumer (an SSE stream, a webhook sink) takes: `types=`, `group=`, `device=`
/// and `where=` (the fleet-search language on the event, ``EventDocument``). Every given part must match; nothing given: every event.
public struct EventFilter: Sendable {
    /// The types taken (nil: all).
    public var types: Set<EventType>?
    /// Only devices in this group when the event happened (nil: any).
    public var group: String?
    /// Only these devices (nil: any).
    public var devices: Set<String>?
    /// The `where` expression, evaluated on the event (``EventDocument``); nil: none.
    public var query: FleetQuery?

    public init(types: Set<EventType>? = nil, group: String? = nil, devices: Set<String>? = nil, query: FleetQuery? = nil) {
        self.types = types
        self.group = group
        self.devices = devices
        self.query = query
    }

    /// Every event.
    public static let all = EventFilter()

    public func matches(_ event: DeviceEvent) -> Bool {
        if let types, !types.contains(event.type) { return false }
        if let devices, !devices.contains(event.device) { return false }
        if let group, group != "all", !event.groups.contains(group) { return false }
        if let query, !query.matches(event: event) { return false }
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

/// An event as a `where` document (docs/gateway.md, “Events”, `where=`): the fleet-search language evaluated on
/// what the event carries. `id` is the device, `groups` its groups when the event happened;
/// `telemetry.…` names the data of a telemetry event, `reported.…` / `desired.…` the patch of a
/// reported / desired event, `reportedVersion` / `version` their new version, `online` the
/// status of a presence event. Every other path is missing (compares like `null`), so
/// `where=telemetry.temp > 30` keeps the telemetry events with a `temp` above 30 and nothing else.
struct EventDocument: FleetQueryDocument {
    let event: DeviceEvent
    let data: JSONValue?

    init(_ event: DeviceEvent) {
        self.event = event
        self.data = (try? JSONValue.parse(event.json))?["data"]
    }

    func value(at path: FleetQuery.Path) -> JSONValue? {
        var current: JSONValue?
        switch (path.root, event.type) {
        case (.id, _): return path.members.isEmpty ? .string(event.device) : nil
        case (.groups, _): current = .array(event.groups.map(JSONValue.string))
        case (.telemetry, .telemetry): current = data
        case (.reported, .reported), (.desired, .desired): current = data?["patch"]
        case (.reportedVersion, .reported): current = data?["reportedVersion"]
        case (.version, .desired): current = data?["version"]
        case (.online, .presence): current = data?["status"].map { .bool($0 == "online") }
        default: return nil
        }
        for member in path.members {
            guard let next = current?[member] else { return nil }
            current = next
        }
        return current
    }

    func isMember(of name: String) -> Bool { name == "all" || event.groups.contains(name) }
}

extension FleetQuery {
    /// True when `event` matches (``EventDocument``).
    public func matches(event: DeviceEvent) -> Bool {
        matches(EventDocument(event))
    }
}
