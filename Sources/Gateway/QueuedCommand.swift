import SwarmJSON

/// A command sent with a TTL (`POST /v1/devices/{id}/commands/{name}?ttl=SECONDS`, docs/gateway.md, “Queued commands”): it
/// waits in the device's state until the device is online, then it is published; it lives in
/// ``DeviceState/commands``, so it moves with the device on handoff, survives a crash of its host
/// (successor replication) and a restart (the durable store keeps the same checkpoint).
///
/// Life: `queued` → `sent` (published to the device) → `answered` (the device replied, `reply`
/// holds the JSON) or `failed` (the reply was not JSON, or none came before ``answerBy``);
/// `queued` → `expired` when the TTL passes before the device comes online: it is never sent.
struct QueuedCommand: Codable, Sendable, Hashable {
    enum Status: String, Codable, Sendable, Hashable {
        case queued, sent, answered, expired, failed

        /// Queued or sent: counts against the pending limit.
        var isPending: Bool { self == .queued || self == .sent }
    }

    /// Random, 32 hex digits.
    var id: String
    var name: String
    var body: JSONValue
    var status: Status
    var reply: JSONValue?
    /// Why it failed.
    var error: String?
    /// Milliseconds since the Unix epoch.
    var createdAt: Int64
    var updatedAt: Int64
    /// `createdAt` + TTL: not sent after this.
    var expiresAt: Int64
    /// How long the device has to answer once sent (the request's `timeout`, else the gateway's
    /// command timeout), in milliseconds.
    var replyWindow: Int64
    var sentAt: Int64?

    /// The reply is due by the later of the TTL and `sentAt + replyWindow`.
    var answerBy: Int64? {
        guard status == .sent, let sentAt else { return nil }
        return max(expiresAt, sentAt + replyWindow)
    }

    /// The API's shape: `{"id", "name", "status", "reply"?, "error"?, "body", "createdAt",
    /// "updatedAt", "expiresAt", "sentAt"?}` with RFC 3339 UTC times.
    var json: JSONValue {
        var members: [String: JSONValue] = [
            "id": .string(id), "name": .string(name), "status": .string(status.rawValue), "body": body,
            "createdAt": .string(Timestamp.iso(createdAt)), "updatedAt": .string(Timestamp.iso(updatedAt)),
            "expiresAt": .string(Timestamp.iso(expiresAt)),
        ]
        if let reply { members["reply"] = reply }
        if let error { members["error"] = .string(error) }
        if let sentAt { members["sentAt"] = .string(Timestamp.iso(sentAt)) }
        return .object(members)
    }

    /// A fresh command id: 32 random hex digits.
    static func newID() -> String {
        (0..<16).map { _ in UInt8.random(in: 0...255) }.map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
        }.joined()
    }

    /// Correlation data of queued commands starts with this (a synchronous command's is 16
    /// random bytes): a reply carrying it goes to the device process by name, wherever it runs.
    static let correlationPrefix = Array("swarm-queued:".utf8)

    /// The correlation data of command `id`.
    static func correlation(_ id: String) -> [UInt8] { correlationPrefix + Array(id.utf8) }

    /// The command id in correlation data of a queued command, nil for any other.
    static func commandID(correlation: [UInt8]) -> String? {
        guard correlation.count > correlationPrefix.count, correlation.starts(with: correlationPrefix) else { return nil }
        let id = String(decoding: correlation.dropFirst(correlationPrefix.count), as: UTF8.self)
        return DeviceID.isValid(id) ? id : nil
    }

    /// How far a status got (a conflict merge keeps the copy that got further).
    var progress: Int {
        switch status {
        case .queued: return 0
        case .sent: return 1
        case .answered, .expired, .failed: return 2
        }
    }
}

extension DeviceState {
    /// At most this many pending (queued or sent) commands per device; more is refused (HTTP 429).
    static let maxPendingCommands = 100
    /// Finished commands kept for `GET …/commands` beside the pending ones (the oldest go first).
    static let commandHistory = 20

    var pendingCommands: Int { commands.reduce(0) { $0 + ($1.status.isPending ? 1 : 0) } }

    /// Queues a command created at `now`; nil when ``maxPendingCommands`` are pending already.
    mutating func enqueueCommand(id: String, name: String, body: JSONValue, ttl: Int64, replyWindow: Int64, at now: Int64) -> QueuedCommand? {
        guard pendingCommands < Self.maxPendingCommands else { return nil }
        let command = QueuedCommand(
            id: id, name: name, body: body, status: .queued, createdAt: now, updatedAt: now, expiresAt: now + ttl,
            replyWindow: replyWindow)
        commands.append(command)
        trimCommandHistory()
        return command
    }

    /// Queued commands whose TTL passed become `expired`; sent ones past ``QueuedCommand/answerBy``
    /// become `failed`. Returns the ones that changed.
    mutating func expireCommands(at now: Int64) -> [QueuedCommand] {
        var changed: [QueuedCommand] = []
        for index in commands.indices {
            switch commands[index].status {
            case .queued where commands[index].expiresAt <= now:
                commands[index].status = .expired
            case .sent where (commands[index].answerBy ?? .max) <= now:
                commands[index].status = .failed
                commands[index].error = "no reply before \(Timestamp.iso(commands[index].answerBy ?? now))"
            default:
                continue
            }
            commands[index].updatedAt = now
            changed.append(commands[index])
        }
        if !changed.isEmpty { trimCommandHistory() }
        return changed
    }

    /// The queued commands still within their TTL, in the order they were queued.
    func commandsToSend(at now: Int64) -> [QueuedCommand] {
        commands.filter { $0.status == .queued && $0.expiresAt > now }
    }

    mutating func markCommandSent(_ id: String, at now: Int64) {
        guard let index = commands.firstIndex(where: { $0.id == id }), commands[index].status == .queued else { return }
        commands[index].status = .sent
        commands[index].sentAt = now
        commands[index].updatedAt = now
    }

    /// The device's reply to command `id` (its payload as it came): `answered` with the JSON, or
    /// `failed` when it is not JSON. A reply to a command still `queued` counts too (its host may
    /// have sent it and died before recording that); one to an answered or expired command is
    /// ignored. Returns the command when it changed.
    mutating func answerCommand(_ id: String, payload: [UInt8], limit: Int, at now: Int64) -> QueuedCommand? {
        guard let index = commands.firstIndex(where: { $0.id == id }) else { return nil }
        switch commands[index].status {
        case .answered, .expired: return nil
        case .queued, .sent, .failed: break
        }
        do {
            commands[index].reply = try JSONValue.parse(payload, limit: limit)
            commands[index].status = .answered
            commands[index].error = nil
        } catch {
            commands[index].status = .failed
            commands[index].error = "the reply is not JSON: \(error)"
        }
        if commands[index].sentAt == nil { commands[index].sentAt = now }
        commands[index].updatedAt = now
        trimCommandHistory()
        return commands[index]
    }

    /// The next time a command changes by itself (a TTL or a reply deadline), if any is pending.
    var nextCommandDeadline: Int64? {
        commands.compactMap { command -> Int64? in
            switch command.status {
            case .queued: return command.expiresAt
            case .sent: return command.answerBy
            default: return nil
            }
        }.min()
    }

    /// Keeps every pending command and the newest ``commandHistory`` finished ones, in order.
    mutating func trimCommandHistory() {
        let finished = commands.filter { !$0.status.isPending }.count
        guard finished > Self.commandHistory else { return }
        var drop = finished - Self.commandHistory
        commands.removeAll { command in
            guard drop > 0, !command.status.isPending else { return false }
            drop -= 1
            return true
        }
    }

    /// Both copies' commands (a conflict): every id once, the copy that got further (then the
    /// later update) winning, in creation order.
    static func mergeCommands(_ a: [QueuedCommand], _ b: [QueuedCommand]) -> [QueuedCommand] {
        var byID: [String: QueuedCommand] = [:]
        for command in a + b {
            if let known = byID[command.id],
                (known.progress, known.updatedAt) >= (command.progress, command.updatedAt)
            {
                continue
            }
            byID[command.id] = command
        }
        return byID.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
    }
}
