// swift-tools-version: 6.1
import PackageDescription

/// Settings every target shares: Swift 6 language mode (strict concurrency) plus the upcoming
/// features Hummingbird 2 adopts, so imports and existentials stay explicit.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// The products of other packages the targets use, named once.
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let nioConcurrencyHelpers: Target.Dependency = .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
let nioEmbedded: Target.Dependency = .product(name: "NIOEmbedded", package: "swift-nio")
let nioTestUtils: Target.Dependency = .product(name: "NIOTestUtils", package: "swift-nio")
let serviceLifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let unixSignals: Target.Dependency = .product(name: "UnixSignals", package: "swift-service-lifecycle")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
let propertyBased: Target.Dependency = .product(name: "PropertyBased", package: "swift-property-based")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let hummingbird: Target.Dependency = .product(name: "Hummingbird", package: "hummingbird")
let hummingbirdTesting: Target.Dependency = .product(name: "HummingbirdTesting", package: "hummingbird")
let httpTypes: Target.Dependency = .product(name: "HTTPTypes", package: "swift-http-types")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let nioSSL: Target.Dependency = .product(name: "NIOSSL", package: "swift-nio-ssl")
let nioTLS: Target.Dependency = .product(name: "NIOTLS", package: "swift-nio")
let sqliteNIO: Target.Dependency = .product(name: "SQLiteNIO", package: "sqlite-nio")
let postgresNIO: Target.Dependency = .product(name: "PostgresNIO", package: "postgres-nio")
let asyncHTTPClient: Target.Dependency = .product(name: "AsyncHTTPClient", package: "async-http-client")

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
        .library(name: "SwarmTLS", targets: ["SwarmTLS"]),
        .library(name: "SwarmNode", targets: ["SwarmNode"]),
        .executable(name: "swarm-node", targets: ["swarm-node"]),
        .library(name: "SwarmJSON", targets: ["SwarmJSON"]),
        .library(name: "Gateway", targets: ["Gateway"]),
        .library(name: "GatewayHTTP", targets: ["GatewayHTTP"]),
        .library(name: "DeviceSimulator", targets: ["DeviceSimulator"]),
        .executable(name: "swarm-devices", targets: ["swarm-devices"]),
        .library(name: "GatewayConfig", targets: ["GatewayConfig"]),
        .library(name: "GatewayStore", targets: ["GatewayStore"]),
        .library(name: "GatewayStoreEngines", targets: ["GatewayStoreEngines"]),
        .executable(name: "swarm-gateway", targets: ["swarm-gateway"]),
        .executable(name: "swarm-chaos", targets: ["swarm-chaos"]),
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
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
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
                nioCore,
                nioPosix,
                nioConcurrencyHelpers,
                logging,
                crypto,
            ],
            swiftSettings: swiftSettings
        ),
        // Optional mutual TLS between nodes: a ChannelSecurity layer (NIOSSL) for
        // TransportSettings.security, built from PEM files. Kept out of SwarmTransport so that the
        // transport, the core and the fuzz harnesses build without NIOSSL's BoringSSL.
        .target(
            name: "SwarmTLS",
            dependencies: ["SwarmTransport", nioCore, nioSSL, nioTLS],
            swiftSettings: swiftSettings
        ),
        // Test and benchmark support: a throwaway cluster CA and node certificates made by the
        // openssl CLI in a temporary directory, and the SwarmTLS layer presenting them. Never
        // linked into a product.
        .target(name: "TestCertificates", dependencies: ["SwarmTLS", "SwarmTransport"], swiftSettings: swiftSettings),
        // The binary codec of the peer protocol: every PeerMessage (and the runtime's own
        // NodeWireMessage) to a frame type number + payload and back. See docs/wire-format.md.
        .target(
            name: "SwarmWire",
            dependencies: ["SwarmCore", nioCore],
            swiftSettings: swiftSettings
        ),
        // Micro-benchmark: SwarmWire encode/decode throughput, plus a release-mode mutation fuzz.
        .executableTarget(
            name: "wire-bench",
            dependencies: ["SwarmWire", "SwarmCore", nioCore],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmWireTests",
            dependencies: [
                "SwarmWire",
                "SwarmCore",
                nioCore,
                propertyBased,
            ],
            swiftSettings: swiftSettings
        ),
        // Micro-benchmark: one-way frames/s between two transports in one process.
        .executableTarget(
            name: "transport-bench",
            dependencies: [
                "SwarmTransport",
                "SwarmTLS",
                "TestCertificates",
                "SwarmCore",
                nioCore,
                nioPosix,
                nioConcurrencyHelpers,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmTransportTests",
            dependencies: [
                "SwarmTransport",
                "SwarmTLS",
                "TestCertificates",
                "SwarmCore",
                nioCore,
                nioPosix,
                nioSSL,
                nioEmbedded,
                nioTestUtils,
                nioConcurrencyHelpers,
                logging,
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
                nioCore,
                nioPosix,
                logging,
                serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // One cluster node with a "worker" process kind and a line-based control port (tests, demos).
        .executableTarget(
            name: "swarm-node",
            dependencies: [
                "SwarmNode",
                "SwarmTLS",
                "SwarmCore",
                "SwarmTransport",
                logging,
                serviceLifecycle,
                unixSignals,
                argumentParser,
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark (release builds only): the cluster workloads W1–W7 of BENCHMARKS.md on three
        // in-process SwarmNodes over real loopback TCP. See docs/benchmarks.md.
        .executableTarget(
            name: "swarm-bench",
            dependencies: [
                "SwarmNode",
                "SwarmTLS",
                "TestCertificates",
                "SwarmCore",
                "SwarmTransport",
                nioCore,
                nioPosix,
                logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmNodeTests",
            dependencies: [
                "SwarmNode",
                "SwarmTLS",
                "SwarmTransport",
                "TestCertificates",
                "SwarmCore",
                nioCore,
                nioPosix,
                logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SwarmCoreTests",
            dependencies: ["SwarmCore", propertyBased],
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
        // The safe Swift wrapper over libmosquitto (MQTTClient), the child-process broker
        // (EmbeddedBroker) used by tests and by the gateway's first-run mode, and Mosquitto's
        // password hashes (swift-crypto's PBKDF2, BoringSSL underneath) for its logins.
        .target(
            name: "MQTT",
            dependencies: ["CMosquitto", logging, crypto, .product(name: "_CryptoExtras", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MQTTTests",
            dependencies: ["MQTT"],
            swiftSettings: swiftSettings
        ),
        // JSON values (deterministic serialization, merge patch, delta) and a strict RFC 8259
        // reader with a scan-only mode; shared by the gateway and the device simulator. No deps.
        .target(name: "SwarmJSON", swiftSettings: swiftSettings),
        // The MQTT device gateway on the Swarm runtime: device processes, ingress routing,
        // downlink, groups, and the facade the backend API builds on. See docs/gateway.md.
        .target(
            name: "Gateway",
            dependencies: [
                "SwarmJSON",
                "SwarmNode",
                "SwarmCore",
                "MQTT",
                "GatewayStore",
                logging,
                crypto,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway",
                "GatewayStore",
                "GatewayStoreEngines",
                "SwarmJSON",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                logging,
                crypto,
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
            dependencies: ["CMosquitto", "CEpoll", "MQTT", "GatewayConfig", "SwarmJSON", logging],
            swiftSettings: swiftSettings
        ),
        // CLI: run a simulated fleet, one reference device, or a plain counting subscriber.
        .executableTarget(
            name: "swarm-devices",
            dependencies: [
                "DeviceSimulator",
                "MQTT",
                logging,
                argumentParser,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DeviceSimulatorTests",
            dependencies: ["DeviceSimulator", "SwarmJSON", "MQTT", logging],
            swiftSettings: swiftSettings
        ),
        // The gateway's configuration: defaults < file < environment < flags, validated with
        // errors that name the key and its source. Foundation only.
        .target(name: "GatewayConfig", swiftSettings: swiftSettings),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig"], swiftSettings: swiftSettings),
        // The durable store's protocol and its engine-independent half: records, schema
        // migration rules, the group-commit / write-behind writer, health and metrics. No
        // database code, so the gateway (and the fuzz harnesses that link it) stay small.
        .target(name: "GatewayStore", dependencies: [logging], swiftSettings: swiftSettings),
        // The two engines behind `DeviceStore`: embedded SQLite (sqlite-nio, which bundles
        // SQLite: no system package) and PostgreSQL (postgres-nio), plus the data directory lock.
        .target(
            name: "GatewayStoreEngines",
            dependencies: ["GatewayStore", sqliteNIO, postgresNIO, nioCore, nioPosix, nioSSL, logging],
            swiftSettings: swiftSettings
        ),
        // Both engines against real files and a real PostgreSQL server (SWARM_TEST_POSTGRES_URL,
        // set by scripts/test.sh or scripts/with-postgres.sh).
        .testTarget(
            name: "GatewayStoreTests",
            dependencies: ["GatewayStore", "GatewayStoreEngines", sqliteNIO, postgresNIO, nioCore, nioPosix, logging],
            swiftSettings: swiftSettings
        ),
        // The gateway executable: `run` (one node: embedded broker or configured brokers, the
        // Swarm node, the device gateway, the HTTP API), the local demo and operator commands.
        .executableTarget(
            name: "swarm-gateway",
            dependencies: [
                "Gateway",
                "GatewayStore",
                "GatewayStoreEngines",
                "SwarmTLS",
                "GatewayHTTP",
                "GatewayConfig",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                nioPosix,
                logging,
                serviceLifecycle,
                unixSignals,
                argumentParser,
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark (release builds only): the gateway workloads M1, M2, M3, M5 and the command
        // round trip, on a real Mosquitto with in-process gateway nodes. See docs/benchmarks.md.
        .executableTarget(
            name: "gateway-bench",
            dependencies: [
                "Gateway",
                "GatewayStore",
                "GatewayHTTP",
                "GatewayStoreEngines",
                "SwarmJSON",
                "DeviceSimulator",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                logging,
                hummingbird,
                httpTypes,
                nioCore,
                asyncHTTPClient,
                .product(name: "NIOHTTP1", package: "swift-nio"),
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
                "GatewayStore",
                "SwarmJSON",
                "SwarmNode",
                "SwarmCore",
                hummingbird,
                httpTypes,
                nioCore,
                logging,
                prometheus,
                serviceLifecycle,
                asyncHTTPClient,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                crypto,
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
                "SwarmJSON",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "MQTT",
                hummingbird,
                hummingbirdTesting,
                httpTypes,
                nioCore,
                serviceLifecycle,
                logging,
                asyncHTTPClient,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                crypto,
            ],
            swiftSettings: swiftSettings
        ),
        // Benchmark M4 (release builds only): a broker, 3 in-process nodes, simulated devices and
        // the HTTP API of one node, for an external load tool (wrk); and Q1/Q2 (fleet search,
        // provisioning) with its own HTTP clients. See docs/benchmarks.md.
        .executableTarget(
            name: "gateway-http-bench",
            dependencies: [
                "GatewayHTTP",
                "Gateway",
                "SwarmNode",
                "SwarmCore",
                "SwarmTransport",
                "SwarmJSON",
                "MQTT",
                "DeviceSimulator",
                hummingbird,
                hummingbirdTesting,
                logging,
            ],
            swiftSettings: swiftSettings
        ),
        // The swarm-gateway executable as a user runs it: configuration errors, one node with its
        // embedded broker answering over HTTP, SIGTERM.
        .testTarget(
            name: "SwarmGatewayTests",
            dependencies: ["MQTT", "TestCertificates", "SwarmJSON", "GatewayStore", "GatewayStoreEngines", sqliteNIO, hummingbird, asyncHTTPClient, crypto, nioCore, nioPosix, httpTypes, logging, .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // The fault harness (issue 5, docs/reliability.md): gateway nodes in network namespaces,
        // partitions as routes, kill -9 under load, soak. Linux, root. Checks through the HTTP
        // API; SwarmCore for the ring (owner of each device) only.
        .executableTarget(
            name: "swarm-chaos",
            dependencies: ["SwarmCore", argumentParser],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
