import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwarmCore

/// A line-based control port (`127.0.0.1` only, no authentication: for tests, demos and local
/// operators) that drives a node's API from outside. One command per line, words separated by
/// spaces; each is answered with exactly one JSON line: `{"ok":true,…}` or
/// `{"ok":false,"error":"…"}`. Process ids are written as their description, `<node/incarnation.n>`.
///
/// | command | answer fields |
/// |---|---|
/// | `ping` | – |
/// | `register NAME [G1,G2] [KIND]` (default kind `worker`) | `result` (`registered` / `alreadyRegistered`), `pid` |
/// | `whereis-or-register NAME [G1,G2] [KIND]` | `pid` |
/// | `whereis NAME` | `pid` (absent if unknown) |
/// | `unregister NAME` | – |
/// | `registered` | `names` (name → pid) |
/// | `call NAME [TEXT…]` (default `ping`) | `reply` |
/// | `cast NAME [TEXT…]` (default `tick`) | – |
/// | `register-many PREFIX COUNT [KIND]` | registers `PREFIX-0` … `PREFIX-(COUNT-1)`, 64 at a time; `result` = how many are registered (new or already); `reply` = the failures by reason, if any |
/// | `hosted PREFIX COUNT` | where `PREFIX-0…` live in this node's replica: `names` = node name → count (`-` for unknown names) |
/// | `castmany COUNT NAME…` | casts `tick` COUNT times to each NAME, in order; `result` = casts sent (stops at the first error, which is reported) |
/// | `join G NAME`, `leave G NAME` | – |
/// | `members G` | `pids` |
/// | `publish G [TEXT…]` | – |
/// | `multicall G [TEXT…]` (default `ping`) | `replies`, `failures` |
/// | `checkpoint NAME` | asks the process `state` (a call) and checkpoints the answer |
/// | `handoff NAME` | asks the process `state` and hands it off with it |
/// | `dump` | `dump` (the ``TrackerDump``) |
/// | `drain` | `completed`; then the node shuts down (the process exits 0) |
public struct SwarmControlServer: Service {
    public let node: SwarmNode
    public let host: String
    public let port: Int
    let logger: Logger

    public init(node: SwarmNode, host: String = "127.0.0.1", port: Int, logger: Logger = Logger(label: "swarm.control")) {
        self.node = node
        self.host = host
        self.port = port
        self.logger = logger
    }

    public func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineCoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LineCoder()))
                    return try NIOAsyncChannel(
                        wrappingChannelSynchronously: channel,
                        configuration: NIOAsyncChannel.Configuration(inboundType: String.self, outboundType: String.self))
                }
            }
        logger.info("control port listening on \(host):\(server.channel.localAddress?.port ?? port)")
        // Graceful shutdown ends the accept loop and every open control connection; that is a
        // normal end of this service, not a failure.
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await self.serve(connection) }
                        }
                    }
                }
            }
        } catch is CancellationError {
            logger.info("control port closed")
        }
    }

    func serve(_ connection: NIOAsyncChannel<String, String>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await line in inbound {
                    let (reply, after) = await self.execute(line)
                    try await outbound.write(Self.encode(reply))
                    if let after { await after() }
                }
            }
        } catch {
            logger.debug("control connection ended: \(error)")
        }
    }

    static func encode(_ reply: ControlReply) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(reply) else { return #"{"ok":false,"error":"encoding failed"}"# }
        return String(decoding: data, as: UTF8.self)
    }

    /// Runs one command. The second value runs after the answer was written (drain → shutdown).
    func execute(_ line: String) async -> (ControlReply, (@Sendable () async -> Void)?) {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let command = words.first else { return (.failure("empty command"), nil) }
        let args = Array(words.dropFirst())
        func text(from index: Int, default fallback: String) -> [UInt8] {
            args.count > index ? Array(args[index...].joined(separator: " ").utf8) : Array(fallback.utf8)
        }
        func arg(_ index: Int, _ what: String) throws -> String {
            guard args.count > index else { throw ControlError(description: "\(command): missing \(what)") }
            return args[index]
        }
        do {
            switch command {
            case "ping":
                return (.success, nil)
            case "register", "whereis-or-register":
                let name = try arg(0, "NAME")
                let groups = args.count > 1 ? args[1].split(separator: ",").map(String.init) : []
                let kind = args.count > 2 ? args[2] : "worker"
                if command == "register" {
                    switch try await node.register(name, kind: kind, groups: groups) {
                    case .registered(let pid): return (ControlReply(result: "registered", pid: pid.description), nil)
                    case .alreadyRegistered(let pid): return (ControlReply(result: "alreadyRegistered", pid: pid.description), nil)
                    case .failed(let error): return (.failure(error), nil)
                    }
                }
                let pid = try await node.whereisOrRegister(name, kind: kind, groups: groups)
                return (ControlReply(pid: pid.description), nil)
            case "whereis":
                let pid = node.whereis(try arg(0, "NAME"))
                return (ControlReply(pid: pid?.description), nil)
            case "unregister":
                try await node.unregister(try arg(0, "NAME"))
                return (.success, nil)
            case "registered":
                let all = node.registered()
                return (ControlReply(names: Dictionary(all.map { ($0.name, $0.pid.description) }, uniquingKeysWith: { a, _ in a })), nil)
            case "call":
                let reply = try await node.call(try arg(0, "NAME"), text(from: 1, default: "ping"))
                return (ControlReply(reply: String(decoding: reply, as: UTF8.self)), nil)
            case "cast":
                try await node.send(try arg(0, "NAME"), text(from: 1, default: "tick"))
                return (.success, nil)
            case "register-many":
                let prefix = try arg(0, "PREFIX")
                guard let count = Int(try arg(1, "COUNT")), count >= 0 else { throw ControlError(description: "register-many: COUNT must be a number") }
                let kind = args.count > 2 ? args[2] : "worker"
                let node = self.node
                let (registered, errors) = await withTaskGroup(of: String?.self) { group in
                    var next = 0
                    var done = 0
                    var errors: [String: Int] = [:]
                    func add() {
                        let name = "\(prefix)-\(next)"
                        next += 1
                        group.addTask {
                            do {
                                switch try await node.register(name, kind: kind) {
                                case .registered, .alreadyRegistered: return nil
                                case .failed(let error): return "\(error)"
                                }
                            } catch {
                                return "\(error)"
                            }
                        }
                    }
                    while next < min(count, 64) { add() }
                    while let failure = await group.next() {
                        if let failure { errors[failure, default: 0] += 1 } else { done += 1 }
                        if next < count { add() }
                    }
                    return (done, errors)
                }
                var reply = ControlReply(result: String(registered))
                if !errors.isEmpty { reply.reply = errors.map { "\($0.value)× \($0.key)" }.sorted().joined(separator: "; ") }
                return (reply, nil)
            case "hosted":
                let prefix = try arg(0, "PREFIX")
                guard let count = Int(try arg(1, "COUNT")), count >= 0 else { throw ControlError(description: "hosted: COUNT must be a number") }
                var hosts: [String: Int] = [:]
                for index in 0..<count { hosts[node.whereis("\(prefix)-\(index)")?.node.name ?? "-", default: 0] += 1 }
                return (ControlReply(names: hosts.mapValues(String.init)), nil)
            case "castmany":
                guard let count = Int(try arg(0, "COUNT")), count >= 0 else { throw ControlError(description: "castmany: COUNT must be a number") }
                let names = Array(args.dropFirst())
                guard !names.isEmpty else { throw ControlError(description: "castmany: no NAME") }
                let tick = Array("tick".utf8)
                var sent = 0
                do {
                    for _ in 0..<count {
                        for name in names {
                            try await node.send(name, tick)
                            sent += 1
                        }
                    }
                } catch {
                    return (ControlReply(ok: false, error: "\(error)", result: String(sent)), nil)
                }
                return (ControlReply(result: String(sent)), nil)
            case "join", "leave":
                let group = try arg(0, "GROUP")
                let name = try arg(1, "NAME")
                guard let pid = node.whereis(name) else { throw SwarmError.unknownName(name) }
                if command == "join" { try await node.join(group, pid) } else { try await node.leave(group, pid) }
                return (ControlReply(pid: pid.description), nil)
            case "members":
                let pids = node.members(try arg(0, "GROUP"))
                return (ControlReply(pids: pids.map(\.description)), nil)
            case "publish":
                try await node.publish(try arg(0, "GROUP"), text(from: 1, default: "tick"))
                return (.success, nil)
            case "multicall":
                let result = await node.multiCall(try arg(0, "GROUP"), text(from: 1, default: "ping"))
                return (ControlReply(replies: result.replies.map { String(decoding: $0.reply, as: UTF8.self) }, failures: result.failures), nil)
            case "checkpoint", "handoff":
                let name = try arg(0, "NAME")
                guard let pid = node.whereis(name) else { throw SwarmError.unknownName(name) }
                let state = try await node.call(pid, Array("state".utf8))
                if command == "checkpoint" {
                    try await node.checkpoint(pid, state: state)
                } else {
                    try await node.handoff(name, state: state)
                }
                return (ControlReply(pid: pid.description, reply: String(decoding: state, as: UTF8.self)), nil)
            case "dump":
                return (ControlReply(dump: try await node.dump()), nil)
            case "drain":
                let completed = await node.drain()
                let node = self.node
                return (ControlReply(completed: completed), { await node.drainAndShutdown() })
            default:
                return (.failure("unknown command '\(command)'"), nil)
            }
        } catch {
            return (.failure(error), nil)
        }
    }
}

struct ControlError: Error, CustomStringConvertible {
    var description: String
}

/// One JSON answer line of the control port; absent fields are omitted.
struct ControlReply: Encodable, Sendable {
    var ok = true
    var error: String?
    var result: String?
    var pid: String?
    var pids: [String]?
    var reply: String?
    var replies: [String]?
    var failures: Int?
    var names: [String: String]?
    var completed: Bool?
    var dump: TrackerDump?

    static let success = ControlReply()

    static func failure(_ error: any Error) -> ControlReply { failure("\(error)") }
    static func failure(_ text: String) -> ControlReply { ControlReply(ok: false, error: text) }
}

/// `\n`-separated UTF-8 lines (a trailing `\r` is dropped); lines over 1 MiB close the connection.
final class LineCoder: ByteToMessageDecoder, MessageToByteEncoder {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = String
    static let maximumLineLength = 1 << 20

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > Self.maximumLineLength { throw ControlError(description: "line too long") }
            return .needMoreData
        }
        var line = view[..<newline]
        buffer.moveReaderIndex(forwardBy: line.count + 1)
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        context.fireChannelRead(Self.wrapInboundOut(String(decoding: line, as: UTF8.self)))
        return .continue
    }

    func encode(data: String, out: inout ByteBuffer) throws {
        out.writeString(data)
        out.writeInteger(UInt8(ascii: "\n"))
    }
}
