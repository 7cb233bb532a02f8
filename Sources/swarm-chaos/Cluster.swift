import Foundation
import Glibc
import SwarmCore
import Synchronization

/// The fields of the tracker dump (`GET /v1/cluster/tracker`, `TrackerDump`) the checks use.
struct Dump: Decodable {
    struct Node: Decodable {
        var name: String
        var incarnation: UInt64
        var state: String
        var reachable: Bool
        var connected: Bool
        var inRing: Bool
        var names: Int
    }
    struct Handoff: Decodable {
        var name: String
        var phase: String
    }
    var node: String
    var incarnation: UInt64
    var state: String
    var ringNodes: [String]
    var nodes: [Node]
    var registrySize: Int
    var localNames: Int
    var contestedNames: Int
    var pendingStarts: Int
    var handoffs: [Handoff]
    var orphans: Int
}

/// What the harness needs to know to run gateway nodes, the broker and the fleet.
struct Setup: Sendable {
    var gateway: String
    var devices: String
    var fleetFile: String
    var workDir: String
    /// Where this run's nodes keep their data directories (`<dataRoot>/gw-N`): one per run, so
    /// every cluster starts with empty durable stores and a node restarted within a run comes back
    /// from its own.
    var dataRoot: String
    var failureTimeout: String
    var secret: String
    var maxSeconds: Int
    var logLevel = "info"
}

/// One gateway node: `swarm-gateway run` inside its namespace, under `timeout -s KILL` (every
/// node is bounded even if the harness is killed), listening on its own address.
final class GatewayNode: @unchecked Sendable {
    let index: Int
    let name: String
    let address: String
    let namespace: String
    /// The `timeout` wrapper (process-group leader) and the gateway under it.
    var wrapper: pid_t = 0
    var pid: pid_t = 0
    var starts = 0

    init(index: Int, lab: Lab) {
        self.index = index
        self.name = "gw-\(index)"
        self.address = lab.address(index)
        self.namespace = lab.namespace(index)
    }

    var httpPort: Int { 8080 }
    var clusterPort: Int { 7946 }
    var isRunning: Bool { wrapper != 0 && Proc.poll(wrapper) == nil && (pid == 0 || Glibc.kill(pid, 0) == 0) }

    func start(setup: Setup, seeds: [String], broker: String) throws {
        starts += 1
        let log = "\(setup.workDir)/\(name).log"
        if let handle = FileHandle(forWritingAtPath: log) ?? { _ = FileManager.default.createFile(atPath: log, contents: nil); return FileHandle(forWritingAtPath: log) }() {
            handle.seekToEndOfFile()
            handle.write(Data("\n===== swarm-chaos: start #\(starts) of \(name)\n".utf8))
            try? handle.close()
        }
        let arguments = [
            "ip", "netns", "exec", namespace, "timeout", "-s", "KILL", "\(setup.maxSeconds)", setup.gateway, "run",
            "--node-name", name, "--cluster-listen", "\(address):\(clusterPort)", "--seeds", seeds.joined(separator: ","),
            "--http-listen", "\(address):\(httpPort)", "--broker", broker, "--failure-timeout", setup.failureTimeout,
            "--log-level", setup.logLevel, "--data-dir", "\(setup.dataRoot)/\(name)",
        ]
        wrapper = try Proc.spawn(arguments, environment: ["SWARM_GATEWAY_CLUSTER_SECRET": setup.secret], output: log)
        Children.shared.add(wrapper, "timeout \(name)")
        pid = 0
        let deadline = Proc.now() + 5
        while Proc.now() < deadline {
            if let child = Proc.firstChild(of: wrapper), Proc.commandLine(child).contains(setup.gateway) {
                pid = child
                break
            }
            if Proc.poll(wrapper) != nil { throw Proc.Failure(description: "\(name) exited at once; see \(log)") }
            Proc.sleep(0.01)
        }
        if pid == 0 { throw Proc.Failure(description: "\(name): no gateway process under \(wrapper)") }
    }

    /// `kill -9` of the gateway process (not a drain); the wrapper is reaped.
    func kill9() {
        guard wrapper != 0 else { return }
        if pid != 0 { Glibc.kill(pid, SIGKILL) }
        _ = Proc.wait(wrapper, timeout: 5)
        Glibc.kill(-wrapper, SIGKILL)
        _ = Proc.wait(wrapper, timeout: 1)
        Children.shared.remove(wrapper)
        wrapper = 0
        pid = 0
    }

    /// Waits (bounded) for a drained node to exit; kills it when it does not.
    func awaitExit(timeout: Double) -> Int32? {
        guard wrapper != 0 else { return nil }
        let code = Proc.wait(wrapper, timeout: timeout)
        if code == nil { kill9() } else {
            Children.shared.remove(wrapper)
            wrapper = 0
            pid = 0
        }
        return code
    }

    // MARK: - API

    func get(_ path: String, timeout: Double = 3) -> HTTP.Response? {
        HTTP.get(address, httpPort, path, timeout: timeout)
    }

    func dump() -> Dump? {
        guard let response = get("/v1/cluster/tracker"), response.status == 200 else { return nil }
        return try? JSONDecoder().decode(Dump.self, from: response.body)
    }

    func groupCount(_ group: String) -> Int? {
        guard let response = get("/v1/groups/\(group)"), response.status == 200,
              let object = response.json() as? [String: Any] else { return nil }
        return (object["count"] as? Int) ?? (object["members"] as? [Any])?.count
    }

    func groupMembers(_ group: String) -> [String]? {
        guard let response = get("/v1/groups/\(group)", timeout: 10), response.status == 200,
              let object = response.json() as? [String: Any] else { return nil }
        return object["members"] as? [String]
    }

    func ready() -> Bool { get("/readyz", timeout: 1)?.status == 200 }

    func twin(_ id: String) -> [String: Any]? {
        guard let response = get("/v1/devices/\(id)"), response.status == 200 else { return nil }
        return response.json() as? [String: Any]
    }

    func drain() -> Bool {
        (HTTP.request("POST", host: address, port: httpPort, path: "/v1/cluster/drain")?.status ?? 0) / 100 == 2
    }

    func patchDesired(_ id: String, _ patch: [String: Any]) -> Bool {
        guard let body = try? JSONSerialization.data(withJSONObject: patch) else { return false }
        return HTTP.request("PATCH", host: address, port: httpPort, path: "/v1/devices/\(id)/desired", body: body)?.status == 200
    }
}

/// Runs `body` for each element on `width` threads (real threads: the work is blocking I/O)
/// and collects the results in order.
func parallelMap<T, R>(_ items: [T], width: Int = 8, _ body: @escaping (T) -> R) -> [R] {
    let results = Mutex<[Int: UncheckedBox<R>]>([:])
    let next = Atomic<Int>(0)
    let threads = max(1, min(width, items.count))
    let done = DispatchSemaphore(value: 0)
    let work = UncheckedBox({
        while true {
            let i = next.add(1, ordering: .relaxed).oldValue
            if i >= items.count { break }
            let r = body(items[i])
            results.withLock { $0[i] = UncheckedBox(r) }
        }
        done.signal()
    })
    for _ in 0..<threads {
        Thread.detachNewThread { work.value() }
    }
    for _ in 0..<threads { done.wait() }
    return results.withLock { table in (0..<items.count).map { table[$0]!.value } }
}

struct UncheckedBox<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}

/// The whole cluster: the lab, the broker on the bridge address, the nodes, the fleet.
final class Cluster: @unchecked Sendable {
    let lab: Lab
    let setup: Setup
    var nodes: [GatewayNode] = []
    var broker: pid_t = 0
    var fleet: pid_t = 0
    var fleetOutput: String { "\(setup.workDir)/fleet.json" }
    var deviceIDs: [String] = []

    var brokerURL: String { "mqtt://\(lab.brokerAddress):1883" }

    init(lab: Lab, setup: Setup, nodeCount: Int) {
        self.lab = lab
        self.setup = setup
        self.nodes = (1...nodeCount).map { GatewayNode(index: $0, lab: lab) }
    }

    func log(_ text: String) {
        let line = "[\(String(format: "%8.2f", Proc.now() - Cluster.t0))] \(text)\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
    nonisolated(unsafe) static var t0 = Proc.now()

    /// Mosquitto on the broker address of the bridge (root namespace) with `$SYS` every second.
    /// The log is appended to, so a restarted broker keeps the first one's lines.
    func startBroker() throws {
        let config = """
            per_listener_settings false
            listener 1883 \(lab.brokerAddress)
            allow_anonymous true
            set_tcp_nodelay true
            max_queued_messages 10000
            max_inflight_messages 1000
            max_keepalive 120
            persistence false
            sys_interval 1
            log_dest stderr
            log_type error
            log_type warning
            log_type notice
            connection_messages false

            """
        let path = "\(setup.workDir)/mosquitto.conf"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        broker = try Proc.spawn(["timeout", "-s", "KILL", "\(setup.maxSeconds)", "mosquitto", "-c", path], output: "\(setup.workDir)/mosquitto.log")
        Children.shared.add(broker, "mosquitto")
        let deadline = Proc.now() + 10
        while Proc.now() < deadline {
            if Proc.run(["mosquitto_sub", "-h", lab.brokerAddress, "-t", "$SYS/broker/version", "-C", "1", "-W", "2"], timeout: 4).status == 0 { return }
            if Proc.poll(broker) != nil { throw Proc.Failure(description: "mosquitto exited; see \(setup.workDir)/mosquitto.log") }
            Proc.sleep(0.1)
        }
        throw Proc.Failure(description: "mosquitto did not answer on \(lab.brokerAddress):1883")
    }

    /// `$SYS/broker/publish/messages/dropped` (nil when it cannot be read).
    func brokerDropped() -> Int? {
        let (status, output) = Proc.run(
            ["mosquitto_sub", "-h", lab.brokerAddress, "-t", "$SYS/broker/publish/messages/dropped", "-C", "1", "-W", "5"], timeout: 8)
        guard status == 0 else { return nil }
        return Int(output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func seeds(for node: GatewayNode) -> [String] {
        nodes.filter { $0 !== node }.map { "\($0.address):\($0.clusterPort)" }
    }

    func start(_ node: GatewayNode) throws {
        try node.start(setup: setup, seeds: seeds(for: node), broker: brokerURL)
    }

    /// Starts every node and waits until each answers `/readyz`.
    func startNodes(timeout: Double = 60) throws {
        for node in nodes { try start(node) }
        try awaitReady(nodes, timeout: timeout)
    }

    func awaitReady(_ which: [GatewayNode], timeout: Double) throws {
        let deadline = Proc.now() + timeout
        while Proc.now() < deadline {
            if which.allSatisfy({ $0.ready() }) { return }
            for node in which where !node.isRunning {
                throw Proc.Failure(description: "\(node.name) is not running; see \(setup.workDir)/\(node.name).log")
            }
            Proc.sleep(0.2)
        }
        let missing = which.filter { !$0.ready() }.map(\.name)
        throw Proc.Failure(description: "not ready after \(Int(timeout)) s: \(missing.joined(separator: ", ")) (is the HTTP API in this build?)")
    }

    /// The simulated fleet (root namespace, through the broker on the bridge), bounded by `duration`.
    func startFleet(count: Int, rate: Double?, duration: Double, qos: Int? = nil) throws {
        var arguments = [
            "timeout", "-s", "KILL", "\(Int(duration) + 60)", setup.devices, "run", "--broker", brokerURL, "--fleet", setup.fleetFile,
            "--count", "\(count)", "--duration", "\(duration)", "--abrupt-fraction", "0", "--progress", "10", "--json",
        ]
        if let rate { arguments += ["--rate", "\(rate)"] }
        if let qos { arguments += ["--qos", "\(qos)"] }
        try? FileManager.default.removeItem(atPath: fleetOutput)
        fleet = try Proc.spawn(arguments, output: fleetOutput, errorOutput: "\(setup.workDir)/fleet.log")
        Children.shared.add(fleet, "swarm-devices")
    }

    /// The fleet's final summary (after it exited).
    func fleetSummary(timeout: Double) -> [String: Any]? {
        guard fleet != 0 else { return nil }
        if Proc.wait(fleet, timeout: timeout) == nil { Proc.killTree(fleet) }
        Children.shared.remove(fleet)
        fleet = 0
        guard let data = FileManager.default.contents(atPath: fleetOutput) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    var live: [GatewayNode] { nodes.filter { $0.wrapper != 0 } }

    /// Waits until every live node's `all` group has `count` members; returns the ids.
    func awaitDevices(count: Int, timeout: Double) throws -> [String] {
        let deadline = Proc.now() + timeout
        var last: [Int?] = []
        while Proc.now() < deadline {
            last = live.map { $0.groupCount("all") }
            if last.allSatisfy({ $0 == count }), let ids = live.first?.groupMembers("all"), ids.count == count {
                deviceIDs = ids
                log("all \(count) devices registered on every node after \(String(format: "%.1f", Proc.now() - (deadline - timeout))) s")
                return ids
            }
            Proc.sleep(0.5)
        }
        throw Proc.Failure(description: "devices registered: \(last.map { $0.map(String.init) ?? "?" }) of \(count)")
    }

    // MARK: - Convergence

    struct Check {
        var ok: Bool
        var problems: [String]
    }

    /// The names every gateway node registers for itself besides the devices: its
    /// `gateway-node:{node}` process and its event hub's `gateway-events:{node}` process.
    static let perNodeProcesses = 2

    /// One round of the post-heal checks, all through the API:
    /// - every live node answers its dump, is `up`, and its ring is exactly the live nodes;
    /// - every dump shows every live node reachable and connected;
    /// - registries identical: `registrySize` = device count + ``perNodeProcesses`` per live node
    ///   (`gateway-node:{node}` and the event hub's `gateway-events:{node}`), nothing contested,
    ///   no handoff, orphan or pending start left;
    /// - one copy of every device process: the `localNames` of the live nodes (less each node's
    ///   own per-node processes) add up to the device count, and every observer's `names` for node X equals X's own `localNames`;
    /// - placement: each node hosts exactly the devices the ring (SwarmCore's `HashRing` over the
    ///   live node names) gives it (counts), and the twins of `twinSample` devices name their
    ///   ring owner as `node`;
    /// - group membership complete: `GET /v1/groups/all` counts every device on every node.
    func check(twinSample: Int) -> Check {
        var problems: [String] = []
        let alive = live
        let expectedRing = alive.map(\.name).sorted()
        let dumps = parallelMap(alive) { $0.dump() }
        let count = deviceIDs.count
        for (node, dump) in zip(alive, dumps) {
            guard let dump else {
                problems.append("\(node.name): no dump")
                continue
            }
            if dump.state != "up" { problems.append("\(node.name): state \(dump.state)") }
            if dump.ringNodes != expectedRing { problems.append("\(node.name): ring \(dump.ringNodes)") }
            if dump.registrySize != count + Self.perNodeProcesses * alive.count {
                problems.append("\(node.name): registrySize \(dump.registrySize) != \(count) devices + \(Self.perNodeProcesses) per-node processes × \(alive.count) nodes")
            }
            if dump.contestedNames != 0 { problems.append("\(node.name): contested \(dump.contestedNames)") }
            if !dump.handoffs.isEmpty { problems.append("\(node.name): \(dump.handoffs.count) handoffs") }
            if dump.orphans != 0 { problems.append("\(node.name): \(dump.orphans) orphans") }
            if dump.pendingStarts != 0 { problems.append("\(node.name): \(dump.pendingStarts) pending starts") }
            for other in alive {
                guard let record = dump.nodes.first(where: { $0.name == other.name }) else {
                    problems.append("\(node.name): does not know \(other.name)")
                    continue
                }
                if !record.reachable || !record.connected { problems.append("\(node.name): \(other.name) unreachable") }
                if let otherDump = dumps[alive.firstIndex(where: { $0 === other })!], record.names != otherDump.localNames {
                    problems.append("\(node.name) sees \(record.names) names on \(other.name), which hosts \(otherDump.localNames)")
                }
                if let otherDump = dumps[alive.firstIndex(where: { $0 === other })!], record.incarnation != otherDump.incarnation {
                    problems.append("\(node.name) knows \(other.name) incarnation \(record.incarnation), it is \(otherDump.incarnation)")
                }
            }
        }
        guard problems.isEmpty else { return Check(ok: false, problems: problems) }
        let hosted = dumps.map { $0!.localNames - Self.perNodeProcesses }  // each node hosts its own per-node processes
        if hosted.reduce(0, +) != count { problems.append("device processes: \(hosted.reduce(0, +)) for \(count) devices (\(zip(alive, hosted).map { "\($0.name)=\($1)" }.joined(separator: " ")))") }
        let ring = HashRing(nodes: expectedRing)
        var expected: [String: Int] = [:]
        for id in deviceIDs { expected[ring.owner(of: id)!, default: 0] += 1 }
        for (node, n) in zip(alive, hosted) where expected[node.name, default: 0] != n {
            problems.append("\(node.name) hosts \(n), ring owner of \(expected[node.name, default: 0])")
        }
        let groups = parallelMap(alive) { $0.groupCount("all") }
        for (node, members) in zip(alive, groups) where members != count {
            problems.append("\(node.name): group all has \(members.map(String.init) ?? "?") members")
        }
        guard problems.isEmpty else { return Check(ok: false, problems: problems) }
        let sample = twinSample >= count ? deviceIDs : Array(deviceIDs.shuffled().prefix(twinSample))
        let misplaced = parallelMap(Array(sample.enumerated())) { (i, id) -> String? in
            let via = alive[i % alive.count]
            guard let twin = via.twin(id) else { return "\(id): no twin via \(via.name)" }
            let owner = ring.owner(of: id)!
            return twin["node"] as? String == owner ? nil : "\(id): on \(twin["node"] ?? "?"), owner \(owner)"
        }.compactMap { $0 }
        problems += misplaced.prefix(5)
        if misplaced.count > 5 { problems.append("… \(misplaced.count) twins misplaced or missing") }
        return Check(ok: problems.isEmpty, problems: problems)
    }

    struct Convergence {
        var seconds: Double?
        var rounds: Int
        var lastProblems: [String]
    }

    /// Polls ``check(twinSample:)`` until it passes or `timeout`; the time is from `since` to the
    /// start of the first passing round (rounds take tens of milliseconds).
    func converge(since: Double, timeout: Double, twinSample: Int) -> Convergence {
        var rounds = 0
        var last: [String] = []
        while Proc.now() - since < timeout {
            let roundStart = Proc.now()
            rounds += 1
            let result = check(twinSample: twinSample)
            if result.ok { return Convergence(seconds: roundStart - since, rounds: rounds, lastProblems: []) }
            last = result.problems
            Proc.sleep(max(0, 0.05 - (Proc.now() - roundStart)))
        }
        return Convergence(seconds: nil, rounds: rounds, lastProblems: last)
    }

    /// Saves every live node's dump (diagnostics after a failed check).
    func saveDumps(_ label: String) {
        for node in live {
            if let response = node.get("/v1/cluster/tracker") {
                _ = FileManager.default.createFile(atPath: "\(setup.workDir)/\(label)-\(node.name)-dump.json", contents: response.body)
            }
        }
    }

    func stopAll() {
        for node in nodes { node.kill9() }
        if fleet != 0 { Proc.killTree(fleet); Children.shared.remove(fleet); fleet = 0 }
        if broker != 0 { Proc.killTree(broker); Children.shared.remove(broker); broker = 0 }
    }
}
