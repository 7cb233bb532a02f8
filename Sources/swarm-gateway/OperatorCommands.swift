import ArgumentParser
import Foundation

/// Options every operator command takes: which node to ask, the API token, JSON output.
struct APIOptions: ParsableArguments {
    @Option(help: "A gateway node's HTTP address (env SWARM_GATEWAY_URL).")
    var url = ProcessInfo.processInfo.environment["SWARM_GATEWAY_URL"] ?? "http://127.0.0.1:8081"

    @Option(name: .customLong("token"), help: "API token (env SWARM_GATEWAY_API_TOKEN).")
    var givenToken: String?

    var token: String? { givenToken ?? ProcessInfo.processInfo.environment["SWARM_GATEWAY_API_TOKEN"] }

    @Flag(help: "Print the API's JSON instead of the human-readable form.")
    var json = false

    func client() throws -> HTTPLite {
        do { return try HTTPLite(url: url, token: token) } catch { throw ValidationError("--url: \(error)") }
    }

    /// Sends a request; non-2xx answers become a clear error with the API's message.
    func call(_ method: String, _ path: String, body: Any? = nil) async throws -> Any? {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0, options: [.fragmentsAllowed]) }
        let response: HTTPLite.Response
        do {
            response = try await client().request(method, path, json: data)
        } catch {
            throw OperatorError(message: "\(url): \(error)")
        }
        let object = response.body.isEmpty ? nil : try? JSONSerialization.jsonObject(with: response.body, options: [.fragmentsAllowed])
        guard (200..<300).contains(response.status) else {
            let detail = (object as? [String: Any])?["error"] as? String ?? response.text
            let hint = response.status == 401 ? " (pass --token or set SWARM_GATEWAY_API_TOKEN)" : ""
            throw OperatorError(message: "\(method) \(path): HTTP \(response.status): \(detail)\(hint)")
        }
        return object
    }

    /// Prints `object` as pretty JSON.
    func printJSON(_ object: Any?) {
        guard let object, let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])
        else {
            print("null")
            return
        }
        print(String(decoding: data, as: UTF8.self))
    }
}

struct OperatorError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Fixed-width table.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
        zip(cells, widths).map { $0.0.padding(toLength: $0.1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
}

func text(_ value: Any?) -> String {
    switch value {
    case nil, is NSNull: return "-"
    case let string as String: return string
    case let bool as Bool where type(of: value!) == Bool.self: return bool ? "yes" : "no"
    case let number as NSNumber:
        // JSONSerialization gives booleans as NSNumber (type "c" on Linux, CFBoolean on Darwin).
        if String(cString: number.objCType) == "c" || "\(type(of: number))".contains("Bool") { return number.boolValue ? "yes" : "no" }
        return number.stringValue
    default:
        if let data = try? JSONSerialization.data(withJSONObject: value!, options: [.sortedKeys, .fragmentsAllowed]) {
            return String(decoding: data, as: UTF8.self)
        }
        return "\(value!)"
    }
}

func percent(_ value: Any?) -> String {
    guard let number = value as? NSNumber else { return "-" }
    return String(format: "%.1f %%", number.doubleValue * 100)
}

// MARK: - status

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "The cluster as one node sees it: nodes, states, devices, ring share, message rates.")

    @OptionGroup var api: APIOptions

    func run() async throws {
        let cluster = try await api.call("GET", "/v1/cluster")
        // Rates: two samples of this node's counters one second apart.
        let first = try? await Metrics.sample(api)
        try? await Task.sleep(for: .seconds(1))
        let second = try? await Metrics.sample(api)
        let rates = Metrics.rates(first, second)
        if api.json {
            var object = (cluster as? [String: Any]) ?? [:]
            object["ratesPerSecond"] = rates
            api.printJSON(object)
            return
        }
        let root = cluster as? [String: Any] ?? [:]
        let nodes = root["nodes"] as? [[String: Any]] ?? []
        let rows = nodes.map { node in
            [text(node["name"]), text(node["state"]), text(node["devices"]), percent(node["ringShare"]), text(node["reachable"] ?? node["connected"])]
        }
        print("cluster seen from \(text(root["node"] ?? root["self"])) (\(api.url))")
        print(table(["node", "state", "devices", "ring share", "reachable"], rows))
        if let total = root["devices"] ?? root["registrySize"] { print("devices in the registry: \(text(total))") }
        if !rates.isEmpty {
            print("rates at this node (per second, over 1 s):")
            for (name, rate) in rates.sorted(by: { $0.key < $1.key }) { print("  \(name): \(String(format: "%.1f", rate))") }
        }
    }
}

/// The counters of `/metrics` (Prometheus text) this CLI turns into rates.
enum Metrics {
    static let rated = [
        "swarm_gateway_ingress_accepted_total", "swarm_gateway_ingress_rejected_total", "swarm_gateway_routed_total",
        "swarm_gateway_commands_total", "swarm_gateway_http_requests_total",
    ]

    static func sample(_ api: APIOptions) async throws -> [String: Double] {
        let response = try await api.client().request("GET", "/metrics")
        var sums: [String: Double] = [:]
        for line in response.text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let value = Double(parts[parts.count - 1]) else { continue }
            let name = String(parts[0].split(separator: "{").first ?? "")
            if rated.contains(name) { sums[name, default: 0] += value }
        }
        return sums
    }

    static func rates(_ first: [String: Double]?, _ second: [String: Double]?) -> [String: Double] {
        guard let first, let second else { return [:] }
        var rates: [String: Double] = [:]
        for (name, value) in second { rates[name] = max(0, value - (first[name] ?? 0)) }
        return rates
    }
}

// MARK: - dump

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump", abstract: "The tracker's state on one node (Swarm's :sys.get_state): ring, membership, replication, handoffs.")

    @OptionGroup var api: APIOptions

    func run() async throws {
        let dump = try await api.call("GET", "/v1/cluster/tracker")
        if api.json {
            api.printJSON(dump)
            return
        }
        let root = dump as? [String: Any] ?? [:]
        print("node \(text(root["node"])) (incarnation \(text(root["incarnation"]))), state \(text(root["state"])), strategy \(text(root["strategy"]))")
        print("ring epoch \(text(root["ringEpoch"])): \((root["ringNodes"] as? [String])?.joined(separator: ", ") ?? "-")")
        print("registry: \(text(root["registrySize"])) names, \(text(root["localNames"])) here, \(text(root["contestedNames"])) contested; own change seq \(text(root["ownSeq"]))")
        print("pending starts \(text(root["pendingStarts"])), outstanding requests \(text(root["outstandingRequests"])), orphans \(text(root["orphans"])), standby states \(text(root["standbyStates"])), draining \(text(root["draining"]))")
        let nodes = root["nodes"] as? [[String: Any]] ?? []
        print(table(
            ["node", "incarnation", "address", "state", "reachable", "connected", "in ring", "share", "names", "applied seq", "synced"],
            nodes.map { node in
                [text(node["name"]), text(node["incarnation"]), text(node["address"]), text(node["state"]), text(node["reachable"]),
                 text(node["connected"]), text(node["inRing"]), percent(node["ringShare"]), text(node["names"]), text(node["appliedSeq"]), text(node["synced"])]
            }))
        let handoffs = root["handoffs"] as? [[String: Any]] ?? []
        if handoffs.isEmpty {
            print("no handoff in flight")
        } else {
            print(table(["handoff", "phase", "target", "held messages"], handoffs.map { [text($0["name"]), text($0["phase"]), text($0["target"]), text($0["heldMessages"])] }))
        }
    }
}

// MARK: - drain

struct DrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Drain one node: it stops taking device messages, hands every device to the other nodes with its state, then exits.")

    @Argument(help: "The node's name, checked against the node at --url (a safety net against draining the wrong one).")
    var node: String

    @OptionGroup var api: APIOptions

    func run() async throws {
        let dump = try await api.call("GET", "/v1/cluster/tracker") as? [String: Any]
        let actual = text(dump?["node"])
        guard actual == node else {
            throw OperatorError(message: "\(api.url) is node \(actual), not \(node): pass the URL of \(node)")
        }
        let answer = try await api.call("POST", "/v1/cluster/drain")
        if api.json { api.printJSON(answer) } else { print("\(node): drain started; it exits once every device is handed off") }
    }
}

// MARK: - device

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "device", abstract: "One device's twin, from any node.")

    @Argument(help: "Device id.")
    var id: String

    @OptionGroup var api: APIOptions

    func run() async throws {
        let path = "/v1/devices/\(id.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? id)"
        let twin = try await api.call("GET", path)
        if api.json {
            api.printJSON(twin)
            return
        }
        let root = twin as? [String: Any] ?? [:]
        print("device \(text(root["id"])): \(text(root["online"]) == "yes" || text(root["online"]) == "1" ? "online" : "offline"), on node \(text(root["node"])), last seen \(text(root["lastSeen"]))")
        print("groups:    \((root["groups"] as? [String])?.joined(separator: ", ") ?? "-")")
        for key in ["metadata", "telemetry", "reported", "desired", "delta"] { print("\((key + ":").padding(toLength: 11, withPad: " ", startingAt: 0))\(text(root[key]))") }
        print("version:   \(text(root["version"]))")
    }
}

// MARK: - group

struct GroupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "Device groups: list, members, publish, query.",
        subcommands: [List.self, Members.self, Publish.self, Query.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every device group with members, and its member count.")
        @OptionGroup var api: APIOptions

        func run() async throws {
            let answer = try await api.call("GET", "/v1/groups")
            if api.json { return api.printJSON(answer) }
            let groups = (answer as? [String: Any])?["groups"] as? [[String: Any]] ?? []
            for group in groups { print("\(text(group["group"]))\t\(text(group["count"]))") }
        }
    }

    struct Members: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The devices in a group.")
        @Argument var group: String
        @OptionGroup var api: APIOptions

        func run() async throws {
            let answer = try await api.call("GET", "/v1/groups/\(group)")
            if api.json { return api.printJSON(answer) }
            let root = answer as? [String: Any] ?? [:]
            let members = root["members"] as? [String] ?? []
            print("\(group): \(text(root["count"] ?? members.count)) device(s)")
            for member in members { print("  \(member)") }
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a JSON body to every member (on devices/{id}/down).")
        @Argument var group: String
        @Argument(help: "JSON body, e.g. '{\"blink\":3}'.") var body: String
        @OptionGroup var api: APIOptions

        func run() async throws {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8), options: [.fragmentsAllowed]) else {
                throw ValidationError("the body is not JSON: \(body)")
            }
            let answer = try await api.call("POST", "/v1/groups/\(group)/publish", body: object)
            if api.json { return api.printJSON(answer) }
            print("published to \(text((answer as? [String: Any])?["members"])) member(s) of \(group)")
        }
    }

    struct Query: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask every member for its state (or selected fields); lists who did not answer.")
        @Argument var group: String
        @Option(help: "Comma-separated fields, e.g. reported.temp,online.") var fields: String?
        @Option(help: "Milliseconds to wait for the replies.") var timeout = 2000
        @OptionGroup var api: APIOptions

        func run() async throws {
            let body: [String: Any]? = fields.map { ["fields": $0.split(separator: ",").map(String.init)] }
            let answer = try await api.call("POST", "/v1/groups/\(group)/query?timeout=\(timeout)", body: body)
            if api.json { return api.printJSON(answer) }
            let root = answer as? [String: Any] ?? [:]
            let replies = root["replies"] as? [String: Any] ?? [:]
            let missing = root["missing"] as? [String] ?? []
            print("\(group): \(replies.count) replied, \(missing.count) missing")
            for id in replies.keys.sorted() { print("  \(id): \(text(replies[id]))") }
            if !missing.isEmpty { print("missing: \(missing.joined(separator: ", "))") }
        }
    }
}
