// M4 of docs/benchmarks.md: state by id through the backend HTTP API of one node.
//
// Starts a Mosquitto (child process, free loopback port), N in-process SwarmNodes on 127.0.0.1
// each with its DeviceGateway, D simulated devices (births and one telemetry message, published
// by a few libmosquitto clients), and the HTTP API of node 1 on a loopback port. Once every twin
// is known on node 1 it writes a wrk Lua script that GETs /v1/devices/{random id} (2/3 of the
// ids owned by the other nodes with N = 3), prints `READY <url> <script>`, serves for
// `--seconds` (or until `--stop-file` exists), prints the node's counters and stops everything
// (broker included).
//
//   swift build -c release --product gateway-http-bench
//   .build/release/gateway-http-bench --devices 1000 --seconds 60 --port 18080 --script /tmp/m4.lua &
//   wrk -t1 -c32 -d20s --latency -s /tmp/m4.lua http://127.0.0.1:18080
//
// With `--workloads Q1,Q2` it runs the production workloads instead (``ProductionBench``: fleet
// search over `--twins` twins, `--provision` provisioning PUTs with passwords) and exits:
//
//   .build/release/gateway-http-bench --workloads Q1,Q2 [--twins 100000] [--provision 10000] [--json FILE]
import Foundation
import Gateway
import GatewayHTTP
import Logging
import MQTT
import ServiceLifecycle
import SwarmCore
import SwarmNode
import SwarmTransport

struct Options {
    var devices = 1000
    var nodes = 3
    var seconds = 60
    var port = 18080
    var script = "/tmp/gateway-m4.lua"
    var token: String?
    var stopFile: String?
    /// Q1, Q2 (``ProductionBench``); empty: M4.
    var workloads: Set<String> = []
    var json: String?
    var twins = 100_000
    var provision = 10_000
    var verify = 1_000

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            let value = iterator.next() ?? ""
            switch argument {
            case "--devices": options.devices = Int(value) ?? options.devices
            case "--nodes": options.nodes = Int(value) ?? options.nodes
            case "--seconds": options.seconds = Int(value) ?? options.seconds
            case "--port": options.port = Int(value) ?? options.port
            case "--script": options.script = value
            case "--token": options.token = value
            case "--stop-file": options.stopFile = value
            case "--workloads": options.workloads = Set(value.split(separator: ",").map { $0.uppercased() })
            case "--json": options.json = value
            case "--twins": options.twins = Int(value) ?? options.twins
            case "--provision": options.provision = Int(value) ?? options.provision
            case "--verify": options.verify = Int(value) ?? options.verify
            default:
                print("usage: gateway-http-bench [--devices D] [--nodes N] [--seconds S] [--port P] [--script PATH] [--token T] [--stop-file PATH]")
                print("       gateway-http-bench --workloads Q1,Q2 [--nodes N] [--twins 100000] [--provision 10000] [--verify 1000] [--json FILE]")
                exit(2)
            }
        }
        return options
    }
}

func quiet(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .error
    return logger
}

func clientSettings(_ broker: EmbeddedBroker, _ id: String) -> MQTTClient.Settings {
    var settings = broker.clientSettings()
    settings.clientID = id
    settings.connectTimeout = .seconds(10)
    settings.operationTimeout = .seconds(30)
    return settings
}

/// One line to stdout, unbuffered (the bench runs under a script).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

let options = Options.parse(CommandLine.arguments)
let secret = ClusterSecret("gateway-http-bench-secret")
if !options.workloads.isEmpty {
    try await ProductionBench(options: options).run()
    exit(0)
}

var brokerSettings = EmbeddedBroker.Settings()
brokerSettings.maxQueuedMessages = 100_000
let broker = try EmbeddedBroker(settings: brokerSettings, logger: quiet("bench.broker"))
try await broker.start()

var nodes: [SwarmNode] = []
var gateways: [DeviceGateway] = []
var seed: String?
for index in 1...options.nodes {
    var settings = SwarmNodeSettings(name: "gw-\(index)", secret: secret)
    settings.seeds = seed.map { [$0] } ?? []
    settings.logger = quiet("bench.node")
    settings.tracker.failureTimeout = .seconds(10)
    let node = SwarmNode(settings: settings)
    try await node.start()
    if seed == nil { seed = await node.address }
    var gatewaySettings = GatewaySettings(brokers: [GatewaySettings.Broker(client: clientSettings(broker, "bench-gw-\(index)"))])
    gatewaySettings.logger = quiet("bench.gateway")
    nodes.append(node)
    gateways.append(try DeviceGateway(node: node, settings: gatewaySettings))
}

var httpSettings = GatewayHTTPSettings(host: "127.0.0.1", port: options.port, apiToken: options.token)
httpSettings.logger = quiet("bench.http")
let http = GatewayHTTPServer(gateway: gateways[0], settings: httpSettings)
let allNodes = nodes
let allGateways = gateways

try await withThrowingTaskGroup(of: Void.self) { group in
    for node in allNodes { group.addTask { try await node.run() } }
    for gateway in allGateways { group.addTask { try await gateway.run() } }
    let services = ServiceGroup(services: [http], logger: quiet("bench.services"))
    group.addTask { try await services.run() }

    // The ring and the gateways.
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
        var formed = true
        for node in allNodes where (try? await node.dump())?.ringNodes.count != allNodes.count { formed = false }
        var ready = true
        for gateway in allGateways where !(await gateway.isReady()) { ready = false }
        if formed && ready { break }
        try await Task.sleep(for: .milliseconds(100))
    }

    // The devices: births (not retained, so nothing outlives the run) and one telemetry each,
    // from 8 publisher connections.
    let ids = (0..<options.devices).map { String(format: "dev-%05d", $0) }
    let publishers = try (0..<8).map { try MQTTClient(settings: clientSettings(broker, "bench-devices-\($0)"), logger: quiet("bench.devices")) }
    for publisher in publishers { _ = try await publisher.connect() }
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { publishing in
        for (index, publisher) in publishers.enumerated() {
            let mine = ids.enumerated().filter { $0.offset % publishers.count == index }.map(\.element)
            publishing.addTask {
                for id in mine {
                    _ = try await publisher.publish(
                        MQTTMessage(topic: "devices/\(id)/status", string: #"{"status":"online","model":"bench","firmware":"1.0","groups":["bench"]}"#, qos: .atLeastOnce))
                    _ = try await publisher.publish(
                        MQTTMessage(topic: "devices/\(id)/telemetry", string: #"{"seq":1,"temp":21.5,"humidity":40}"#, qos: .atLeastOnce))
                }
            }
        }
        try await publishing.waitForAll()
    }
    let entry = allNodes[0]
    while ContinuousClock.now < deadline {
        if entry.members("device-group:all").count == ids.count { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    let owners = ids.map { entry.whereis($0)?.node.name }
    let remote = owners.filter { $0 != entry.id.name }.count
    say("devices: \(entry.members("device-group:all").count)/\(ids.count) known on \(entry.id.name) after \(ContinuousClock.now - start); \(remote) owned by other nodes")

    let port = try await http.listeningPort()
    var lua = "-- M4: GET /v1/devices/{random id}, \(ids.count) devices, \(remote) owned elsewhere\n"
    lua += "local ids = {\n"
    for id in ids { lua += "\"\(id)\",\n" }
    lua += "}\nmath.randomseed(os.time())\n"
    if let token = options.token { lua += "wrk.headers[\"Authorization\"] = \"Bearer \(token)\"\n" }
    lua += "request = function()\n  return wrk.format(\"GET\", \"/v1/devices/\" .. ids[math.random(#ids)])\nend\n"
    try lua.write(toFile: options.script, atomically: true, encoding: .utf8)
    // Unbuffered: a script waits for this line.
    FileHandle.standardOutput.write(Data("READY http://127.0.0.1:\(port) \(options.script)\n".utf8))

    // Serve for --seconds, or until --stop-file exists.
    let end = ContinuousClock.now + .seconds(options.seconds)
    while ContinuousClock.now < end {
        if let stop = options.stopFile, FileManager.default.fileExists(atPath: stop) { break }
        try await Task.sleep(for: .milliseconds(200))
    }
    let stats = await allGateways[0].stats()
    say("gw-1: routed \(stats.routed), rejected \(stats.rejected.values.reduce(0, +)), local devices \(stats.localDevices)")
    for publisher in publishers { await publisher.close() }
    await services.triggerGracefulShutdown()
    for gateway in allGateways { await gateway.shutdown() }
    for node in allNodes { await node.shutdown() }
    try await group.waitForAll()
}
await broker.stop()
say("stopped")
