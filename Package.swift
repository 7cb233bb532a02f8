// swift-tools-version: 6.1
import PackageDescription

/// Settings every target shares: Swift 6 language mode (strict concurrency) plus the upcoming
/// features Hummingbird 2 adopts, so imports and existentials stay explicit.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swarm-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SwarmCore", targets: ["SwarmCore"]),
        .library(name: "SwarmSimulation", targets: ["SwarmSimulation"]),
        .executable(name: "swarm-sim", targets: ["swarm-sim"]),
        .library(name: "MQTT", targets: ["MQTT"]),
        .library(name: "SwarmTransport", targets: ["SwarmTransport"]),
        .library(name: "SwarmWire", targets: ["SwarmWire"]),
        .library(name: "SwarmNode", targets: ["SwarmNode"]),
        .executable(name: "swarm-node", targets: ["swarm-node"]),
        .library(name: "Gateway", targets: ["Gateway"]),
        .library(name: "GatewayHTTP", targets: ["GatewayHTTP"]),
        .library(name: "DeviceSimulator", targets: ["DeviceSimulator"]),
        .executable(name: "swarm-devices", targets: ["swarm-devices"]),
        .library(name: "GatewayConfig", targets: ["GatewayConfig"]),
        .executable(name: "swarm-gateway", targets: ["swarm-gateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
    ],
    targets: [
        // Pure protocol logic: ring, registry replica, tracker, handoff, groups, membership.
        // No I/O, no clocks, no concurrency primitives.
        .target(name: "SwarmCore", swiftSettings: swiftSettings),
        // The seeded, deterministic many-node simulator built on SwarmCore.
        .target(name: "SwarmSimulation", dependencies: ["SwarmCore"], swiftSettings: swiftSettings),
        // CLI: run or replay simulator seeds, core micro-benchmarks.
        .executableTarget(name: "swarm-sim", dependencies: ["SwarmCore", "SwarmSimulation"], swiftSettings: swiftSettings),
        // The cluster transport: framed, authenticated TCP between nodes on SwiftNIO.
        .target(
            name: "SwarmTransport",
            dependencies: [
                "SwarmCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The binary codec of the peer protocol: every PeerMessage (and the runtime's own
        // NodeWireMessage) to a frame type number + payload and back. See docs/wire-format.md.
        .target(
            name: "SwarmWire",
            dependencies: ["SwarmCore", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // Micro-benchmark: SwarmWire encode/decode throughput, plus a release-mode mutation fuzz.
        .executableTarget(
            name: "wire-bench",
            dependencies: ["SwarmWire", "SwarmCore", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmWireTests",
            dependencies: [
                "SwarmWire",
                "SwarmCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: swiftSettings
        ),
        // Micro-benchmark: one-way frames/s between two transports in one process.
        .executableTarget(
            name: "transport-bench",
            dependencies: [
                "SwarmTransport",
                "SwarmCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmTransportTests",
            dependencies: [
                "SwarmTransport",
                "SwarmCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The runtime shell: one Tracker.Instance on a real transport, the process table and
        // mailboxes, the public Swarm API handle and the ServiceLifecycle service.
        .target(
            name: "SwarmNode",
            dependencies: [
                "SwarmCore",
                "SwarmTransport",
                "SwarmWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // One cluster node with a "worker" process kind and a line-based control port (tests, demos).
        .executableTarget(
            name: "swarm-node",
            dependencies: [
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark (release builds only): the cluster workloads W1–W7 of BENCHMARKS.md on three
        // in-process SwarmNodes over real loopback TCP. See docs/benchmarks.md.
        .executableTarget(
            name: "swarm-bench",
            dependencies: [
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmNodeTests",
            dependencies: [
                "SwarmNode",
                "SwarmCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmCoreTests",
            dependencies: ["SwarmCore", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmSimulationTests",
            dependencies: ["SwarmCore", "SwarmSimulation"],
            swiftSettings: swiftSettings
        ),
        // libmosquitto (Debian libmosquitto-dev, see scripts/install-deps.sh).
        .systemLibrary(
            name: "CMosquitto",
            path: "Sources/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // The safe Swift wrapper over libmosquitto (MQTTClient) and the child-process broker
        // (EmbeddedBroker) used by tests and by the gateway's first-run mode.
        .target(
            name: "MQTT",
            dependencies: ["CMosquitto", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MQTTTests",
            dependencies: ["MQTT"],
            swiftSettings: swiftSettings
        ),
        // The MQTT device gateway on the Swarm runtime: device processes, ingress routing,
        // downlink, groups, and the facade the backend API builds on. See docs/gateway.md.
        .target(
            name: "Gateway",
            dependencies: [
                "SwarmNode",
                "SwarmCore",
                "MQTT",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The device fleet simulator's logic: profiles and fleet files, the per-device behaviour
        // (birth, will, telemetry, reported/desired state, commands, broadcasts) and the fleet
        // runner that multiplexes many libmosquitto clients over a few epoll threads.
        // Linux epoll/eventfd headers for DeviceSimulator's loop threads.
        .target(name: "CEpoll"),
        .target(
            name: "DeviceSimulator",
            dependencies: ["CMosquitto", "CEpoll", "MQTT", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // CLI: run a simulated fleet, one reference device, or a plain counting subscriber.
        .executableTarget(
            name: "swarm-devices",
            dependencies: [
                "DeviceSimulator",
                "MQTT",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeviceSimulatorTests",
            dependencies: ["DeviceSimulator", "MQTT", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // The gateway's configuration: defaults < file < environment < flags, validated with
        // errors that name the key and its source. Foundation only.
        .target(name: "GatewayConfig", swiftSettings: swiftSettings),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig"], swiftSettings: swiftSettings),
        // The gateway executable: `run` (one node: embedded broker or configured brokers, the
        // Swarm node, the device gateway, the HTTP API), the local demo and operator commands.
        .executableTarget(
            name: "swarm-gateway",
            dependencies: [
                "Gateway",
                "GatewayHTTP",
                "GatewayConfig",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark (release builds only): the gateway workloads M1, M2, M3, M5 and the command
        // round trip, on a real Mosquitto with in-process gateway nodes. See docs/benchmarks.md.
        .executableTarget(
            name: "gateway-bench",
            dependencies: [
                "Gateway",
                "DeviceSimulator",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The backend HTTP API (Hummingbird) over one node's DeviceGateway: devices, groups,
        // cluster, drain, Prometheus metrics, health, and the live dashboard. The only targets that depend on
        // Hummingbird are this one, its tests and its benchmark. See docs/openapi.yaml.
        .target(
            name: "GatewayHTTP",
            dependencies: [
                "Gateway",
                "SwarmNode",
                "SwarmCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The dashboard's static files, compiled into the module as byte arrays
            // (`PackageResources`): no resource bundle to find at run time.
            resources: [
                .embedInCode("Dashboard/index.html"),
                .embedInCode("Dashboard/app.js"),
                .embedInCode("Dashboard/style.css"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayHTTPTests",
            dependencies: [
                "GatewayHTTP",
                "Gateway",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark M4 (release builds only): a broker, 3 in-process nodes, simulated devices and
        // the HTTP API of one node, for an external load tool (wrk). See docs/benchmarks.md.
        .executableTarget(
            name: "gateway-http-bench",
            dependencies: [
                "GatewayHTTP",
                "Gateway",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
