import Foundation
import SwarmJSON

/// The state of one device as the backend sees it (`GET /v1/devices/{id}`).
public struct DeviceTwin: Codable, Sendable, Hashable {
    /// The device id.
    public var id: String
    /// Online after a birth (`status: online`), offline after a will or `offline`.
    public var online: Bool
    /// The name of the gateway node hosting the device process.
    public var node: String
    /// Device groups (without the Swarm group prefix), sorted; always contains `all`.
    public var groups: [String]
    /// Birth metadata: every member of the birth message but `status` and `groups`
    /// (typically `model`, `firmware`).
    public var metadata: [String: JSONValue]
    /// The last value of every telemetry field (`seq` excluded).
    public var telemetry: [String: JSONValue]
    /// The reported state (merge patches from `state/reported` applied in arrival order).
    public var reported: JSONValue
    /// The desired state.
    public var desired: JSONValue
    /// Desired members whose value differs from the reported one (see ``JSONValue/delta(desired:reported:)``).
    public var delta: JSONValue
    /// Version of the desired state; starts at 0, +1 at every patch.
    public var version: Int64
    /// Last message from the device (ISO 8601, UTC, milliseconds), nil if never seen.
    public var lastSeen: String?
    /// Time of the last birth (ISO 8601), nil if never online.
    public var connectedAt: String?
    /// The broker (``GatewaySettings/Broker/id``) the device last talked through.
    public var broker: String?
    /// Per-device counters and sequence statistics.
    public var counters: DeviceCounters
    /// Backend-only attributes (never sent to the device): `PATCH /v1/devices/{id}/tags`.
    public var tags: [String: JSONValue]
    /// Version of the reported state: +1 at every change of `reported`.
    public var reportedVersion: Int64
    /// The time of the last change at every leaf of `reported` and `desired`.
    public var lastUpdated: LastUpdated

    /// `lastUpdated`: each state's shape with the RFC 3339 UTC time (milliseconds) of its last
    /// change at every leaf.
    public struct LastUpdated: Codable, Sendable, Hashable {
        public var reported: JSONValue
        public var desired: JSONValue
    }

    /// The twin as a ``JSONValue`` (for deterministic encoding and field selection).
    public var json: JSONValue {
        var members: [String: JSONValue] = [
            "id": .string(id), "online": .bool(online), "node": .string(node),
            "groups": .array(groups.map(JSONValue.string)), "metadata": .object(metadata),
            "telemetry": .object(telemetry), "reported": reported, "desired": desired, "delta": delta,
            "version": .int(version), "lastSeen": lastSeen.map(JSONValue.string) ?? .null,
            "connectedAt": connectedAt.map(JSONValue.string) ?? .null,
            "broker": broker.map(JSONValue.string) ?? .null,
        ]
        members["counters"] = counters.json
        members["tags"] = .object(tags)
        members["reportedVersion"] = .int(reportedVersion)
        members["lastUpdated"] = ["reported": lastUpdated.reported, "desired": lastUpdated.desired]
        return .object(members)
    }
}

/// Per-device counters, carried in the twin and across handoffs.
public struct DeviceCounters: Codable, Sendable, Hashable {
    /// Messages received from the device (status, telemetry, reported).
    public var messages: Int64 = 0
    /// Telemetry messages.
    public var telemetry: Int64 = 0
    /// Reported-state patches.
    public var reportedUpdates: Int64 = 0
    /// Status messages (births and wills).
    public var statusChanges: Int64 = 0
    /// Telemetry sequence numbers skipped and not (yet) arrived (net: a late arrival fills its
    /// gap again). See docs/gateway.md for the window rules.
    public var seqGaps: Int64 = 0
    /// Telemetry sequence numbers seen twice.
    public var seqDuplicates: Int64 = 0
    /// Telemetry that arrived after a higher sequence number (reordered, filling a gap).
    public var seqOutOfOrder: Int64 = 0
    /// Telemetry that arrived too late to classify (1024 or more below the highest number seen).
    public var seqLate: Int64 = 0
    /// Commands sent to the device / answered / timed out.
    public var commandsSent: Int64 = 0
    public var commandsAnswered: Int64 = 0
    public var commandsTimedOut: Int64 = 0
    /// Group publishes forwarded to `devices/{id}/down`.
    public var downlinks: Int64 = 0
    /// Desired-state versions published.
    public var desiredPublished: Int64 = 0

    public init() {}

    var json: JSONValue {
        .object([
            "messages": .int(messages), "telemetry": .int(telemetry), "reportedUpdates": .int(reportedUpdates),
            "statusChanges": .int(statusChanges), "seqGaps": .int(seqGaps), "seqDuplicates": .int(seqDuplicates),
            "seqOutOfOrder": .int(seqOutOfOrder), "seqLate": .int(seqLate), "commandsSent": .int(commandsSent),
            "commandsAnswered": .int(commandsAnswered), "commandsTimedOut": .int(commandsTimedOut),
            "downlinks": .int(downlinks), "desiredPublished": .int(desiredPublished),
        ])
    }
}

/// A twin as the HTTP API answers it: the JSON bytes of ``DeviceTwin/json`` and the desired
/// version (the `ETag`).
public struct TwinBytes: Sendable, Hashable {
    public var json: [UInt8]
    /// The desired-state version: `ETag: "<version>"`.
    public var version: Int64
}

/// The answer of ``DeviceGateway/provision(_:password:tags:groups:)``.
public struct ProvisionResult: Sendable, Hashable {
    /// The twin after provisioning.
    public var twin: TwinBytes
    /// True when the device did not exist before (HTTP 201), false when it did (200).
    public var created: Bool
}

/// The answer of ``DeviceGateway/query(group:fields:where:timeout:)``.
public struct GroupQueryResult: Sendable, Hashable, Codable {
    /// Device id → its twin (as JSON), or the selected fields (`{"reported.x": …}`; a path that
    /// does not exist maps to `null`).
    public var replies: [String: JSONValue]
    /// Members that did not answer in time (ids, sorted). A member that is not a device process
    /// shows up under its registered name, or its process id when it has none.
    public var missing: [String]
    /// `replies.count`.
    public var count: Int { replies.count }
    /// Members that matched the query's `where` (all that answered without one): `replies.count`.
    public var matched: Int { replies.count }
}

/// The answer of ``DeviceGateway/queueCommand(_:name:body:ttl:timeout:)`` (HTTP 202).
public struct CommandReceipt: Sendable, Hashable, Codable {
    /// The command id (`GET /v1/devices/{id}/commands/{cid}`).
    public var id: String
    /// `queued` (the device is offline) or `sent` (published at once).
    public var status: String
}

/// A queued command as `GET /v1/devices/{id}/commands/{cid}` shows it.
public struct DeviceCommand: Sendable, Hashable, Codable {
    public var id: String
    /// The command name (`…/commands/{name}`).
    public var name: String
    /// `queued`, `sent`, `answered`, `expired` (the TTL passed before it could be sent; never
    /// sent) or `failed` (no reply in time, or a reply that is not JSON: see `error`).
    public var status: String
    /// The device's reply once `answered`.
    public var reply: JSONValue?
    /// Why it `failed`.
    public var error: String?
    /// The body sent to the device.
    public var body: JSONValue
    /// RFC 3339 UTC times: queued, last change, end of the TTL, published to the device.
    public var createdAt: String
    public var updatedAt: String
    public var expiresAt: String
    public var sentAt: String?
}

/// The answer of ``DeviceGateway/search(where:limit:cursor:timeout:)``: one page.
public struct DeviceSearchResult: Sendable, Hashable, Codable {
    /// The ids of matching devices, in id order.
    public var devices: [String]
    /// The cursor of the next page, nil on the last one.
    public var next: String?
    /// How many devices match in all (every page).
    public var matched: Int
}

/// The cluster as one node sees it (`GET /v1/cluster`).
public struct ClusterView: Sendable, Hashable, Codable {
    public struct Node: Sendable, Hashable, Codable {
        public var name: String
        public var state: String
        public var reachable: Bool
        public var inRing: Bool
        /// Share of the hash ring's key space (0…1).
        public var ringShare: Double
        /// Device processes this node hosts (members of group `all`, from the local replica).
        public var devices: Int
    }
    /// The node answering.
    public var node: String
    /// Its membership state (`joining`, `up`, `draining`, `gone`).
    public var state: String
    public var nodes: [Node]
    /// Devices known in the cluster (members of group `all`).
    public var devices: Int
    /// Names in the registry (devices and anything else).
    public var registrySize: Int
}

/// Whether a node is ready (`/readyz`), and why not.
public struct Readiness: Sendable, Hashable {
    public var ready: Bool
    /// `ready`, `notReady` (starting, draining, a broker down, recovering) or `storeUnavailable`.
    public var code: String
    public var reason: String
}

/// Per-broker connection state.
public struct BrokerStatus: Sendable, Hashable, Codable {
    public var id: String
    public var connected: Bool
    /// Connections made (first plus reconnects).
    public var connections: Int
    /// Inbound messages received from this broker.
    public var received: Int
}

/// Counters of one gateway node (for `/metrics`). Monotonic except the gauges noted.
public struct GatewayStats: Sendable, Hashable, Codable {
    /// Inbound device messages by kind (status, telemetry, reported), before validation.
    public var received: [String: Int]
    /// Inbound messages handed to their device process.
    public var routed: Int
    /// Rejected inbound messages by reason: `badTopic`, `badID`, `malformed`, `oversized`,
    /// `badShape`, `routeFailed`, `deleted` (from a device deleted in the last minute).
    public var rejected: [String: Int]
    /// Inbound messages shed under overload by kind (status, telemetry, reported): a lane was
    /// full (``GatewaySettings/ingressLaneCapacity``). Only telemetry is ever shed; status and
    /// reported are listed to show they stay 0.
    public var shed: [String: Int]
    /// Times a status or reported message waited for room in a full lane (backpressure to the
    /// broker; the message was then queued).
    public var ingressWaits: Int
    /// Gauge: accepted messages queued in the lanes, not routed yet.
    public var ingressQueued: Int
    /// Commands published / answered / timed out / replies that matched no pending command.
    public var commandsSent: Int
    public var commandsAnswered: Int
    public var commandsTimedOut: Int
    public var repliesUnmatched: Int
    /// Desired-state messages and group downlinks published by device processes on this node.
    public var desiredPublished: Int
    public var downlinksPublished: Int
    /// Publishes that failed (broker down, not connected).
    public var publishFailures: Int
    /// Checkpoints written by device processes on this node.
    public var checkpoints: Int
    /// Device processes started on this node (first contact, restart, handoff, recovery).
    public var processesStarted: Int
    /// Gauge: device processes hosted here (members of `all` on this node).
    public var localDevices: Int
    public var brokers: [BrokerStatus]
}

/// Errors of the gateway facade. The HTTP layer maps them to status codes.
public enum GatewayError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No such device (HTTP 404).
    case unknownDevice(String)
    /// A device id, group name or command name outside `[A-Za-z0-9._:-]{1,128}` (HTTP 400).
    case invalidName(String)
    /// A body that is not acceptable (HTTP 400): for example a desired patch that is not an object.
    case invalidBody(String)
    /// The device did not answer the command in time (HTTP 504).
    case commandTimeout(device: String, command: String)
    /// The device answered with something that is not JSON (HTTP 502).
    case invalidReply(String)
    /// No connected broker to publish on, or the publish failed (HTTP 503).
    case brokerUnavailable(String)
    /// The gateway or its node is not running (HTTP 503).
    case notRunning
    /// The cluster failed the operation (HTTP 503), with the Swarm error's text.
    case cluster(String)
    /// `If-Match` named another desired version than the current one (HTTP 412); nothing changed.
    case versionConflict(current: Int64)
    /// The write was applied on the device's host, but its ring successor did not confirm the
    /// replica in time (HTTP 503): a crash of the host now could lose it.
    case notReplicated(String)
    /// The durable store did not commit the change (HTTP 503 `storeUnavailable`): disk full,
    /// database down, or the node still recovering its devices from the store.
    case storeUnavailable(String)
    /// A password was given but this gateway does not manage device logins (HTTP 422).
    case credentialsNotManaged
    /// A fleet-search expression that does not parse (HTTP 400), with the position of the error.
    case invalidQuery(FleetQueryError)
    /// A synchronous command to a device that is offline (HTTP 409): queue it with a TTL instead.
    case deviceOffline(String)
    /// The device has the maximum of pending queued commands (HTTP 429).
    case tooManyCommands(String)
    /// No queued command with this id on the device (HTTP 404).
    case unknownCommand(device: String, id: String)

    public var description: String {
        switch self {
        case .unknownDevice(let id): return "unknown device '\(id)'"
        case .invalidName(let name): return "invalid name '\(name)' (allowed: [A-Za-z0-9._:-]{1,128})"
        case .invalidBody(let why): return "invalid body: \(why)"
        case .commandTimeout(let device, let command): return "device '\(device)' did not answer command '\(command)' in time"
        case .invalidReply(let why): return "invalid command reply: \(why)"
        case .brokerUnavailable(let why): return "broker unavailable: \(why)"
        case .notRunning: return "gateway is not running"
        case .cluster(let why): return "cluster error: \(why)"
        case .versionConflict(let current): return "the desired version is \(current); nothing changed"
        case .notReplicated(let why): return "not replicated: \(why)"
        case .storeUnavailable(let why): return "store unavailable: \(why)"
        case .credentialsNotManaged:
            return "this gateway does not manage device logins (embedded broker: always; external Mosquitto: configure brokerAdminUsername and brokerAdminPassword)"
        case .invalidQuery(let error): return error.description
        case .deviceOffline(let id): return "device '\(id)' is offline; send the command with ?ttl=SECONDS to queue it until the device is back"
        case .tooManyCommands(let id): return "device '\(id)' has 100 pending commands; wait for some to be answered or to expire"
        case .unknownCommand(let device, let id): return "device '\(device)' has no queued command '\(id)'"
        }
    }
}

enum Timestamp {
    /// Milliseconds since the Unix epoch.
    static func nowMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    /// Microseconds since the Unix epoch (store revisions).
    static func nowMicros() -> Int64 { Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()) }

    /// ISO 8601 UTC with milliseconds.
    static func iso(_ millis: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(millis) / 1000)
        return Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(date)
    }
}
