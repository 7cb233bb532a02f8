// swift-tools-version: 6.1
// The libFuzzer harnesses of Swarm Gateway: a package of its own that depends on the product
// package (`..`) by path, so the fuzzer-only compiler flags (-sanitize=fuzzer, -parse-as-library,
// -enable-testing for the @testable imports of internal parsers) never touch the product build.
// Build and run through scripts/fuzz.sh; see docs/reliability.md, "Fuzzing".
import PackageDescription

/// The settings of the product package (Swift 6 language mode, explicit imports and existentials).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swarm-gateway-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swarm-gateway", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        // Shared by every harness: input reader, invariant check, the libFuzzer driver call and
        // the replay `main` of a build without libFuzzer.
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"], swiftSettings: swiftSettings),
        // The declaration of libFuzzer's LLVMFuzzerRunDriver.
        .target(name: "CLibFuzzer"),
        // SwarmWire.WireCodec.decodeAny / decode / decodeEnvelope over (type, payload).
        .executableTarget(
            name: "fuzz-wire",
            dependencies: [
                "FuzzSupport",
                .product(name: "SwarmWire", package: "swarm-gateway"),
                .product(name: "SwarmCore", package: "swarm-gateway"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // SwarmTransport.FrameDecoder fed a byte stream in arbitrary chunks.
        .executableTarget(
            name: "fuzz-frame",
            dependencies: [
                "FuzzSupport",
                .product(name: "SwarmTransport", package: "swarm-gateway"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // SwarmTransport's handshake state machine (hello parsing, proof check) behind the frame decoder.
        .executableTarget(
            name: "fuzz-handshake",
            dependencies: [
                "FuzzSupport",
                .product(name: "SwarmTransport", package: "swarm-gateway"),
                .product(name: "SwarmCore", package: "swarm-gateway"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Gateway ingress: topic parsing, id validation, payload validation, and the device-state
        // updates (sequence window, telemetry, merge patch, checkpoint round trip, conflict merge).
        .executableTarget(
            name: "fuzz-device",
            dependencies: [
                "FuzzSupport",
                .product(name: "Gateway", package: "swarm-gateway"),
                .product(name: "SwarmJSON", package: "swarm-gateway"),
                .product(name: "SwarmCore", package: "swarm-gateway"),
            ],
            swiftSettings: swiftSettings
        ),
        // GatewayConfig.GatewayConfiguration.load over file contents + environment + flags.
        .executableTarget(
            name: "fuzz-config",
            dependencies: ["FuzzSupport", .product(name: "GatewayConfig", package: "swarm-gateway")],
            swiftSettings: swiftSettings
        ),
        // Writes fuzz/corpus with the real encoders (a normal program; it has its own `main`).
        .executableTarget(
            name: "fuzz-seeds",
            dependencies: [
                .product(name: "Gateway", package: "swarm-gateway"),
                .product(name: "SwarmTransport", package: "swarm-gateway"),
                .product(name: "SwarmWire", package: "swarm-gateway"),
                .product(name: "SwarmCore", package: "swarm-gateway"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
