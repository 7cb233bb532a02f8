import ArgumentParser
import Foundation
import GatewayConfig

/// The gateway executable: `run` one gateway node (the default), `demo` a local cluster with a
/// simulated fleet, and the operator commands that talk to a running node's HTTP API.
@main
struct SwarmGatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm-gateway",
        abstract: "Swarm Gateway: a clustered MQTT device gateway on a Swift Swarm registry.",
        subcommands: [RunCommand.self, DemoCommand.self, StatusCommand.self, DumpCommand.self, DrainCommand.self, DeviceCommand.self, GroupCommand.self, BackupCommand.self, RestoreCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// `swarm-gateway run`: one gateway node.
struct RunCommand: AsyncParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "run",
            abstract: "Run one gateway node (cluster port, MQTT ingress, HTTP API).",
            discussion: """
                Every configuration key can come from the JSON file (--config or \
                \(GatewayConfiguration.configFileVariable)), from an environment variable, or from a \
                flag; flags win over the environment, which wins over the file. Lists are \
                comma-separated; --broker may be repeated. Keys (see docs/configuration.md):

                \(GatewayConfiguration.keys.map { "  \($0.flag) VALUE (\($0.environmentVariable); default \($0.defaultText))" }.joined(separator: "\n"))
                """)
    }

    @Option(name: .long, help: "JSON configuration file.")
    var config: String?

    @Argument(parsing: .allUnrecognized, help: "Configuration flags: --KEY VALUE or --KEY=VALUE (see below).")
    var flags: [String] = []

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            let (single, lists) = try Self.parseFlags(flags)
            configuration = try GatewayConfiguration.load(
                file: config, environment: ProcessInfo.processInfo.environment, overrides: single, listOverrides: lists)
        } catch {
            Self.fail(error)
        }
        let code = await GatewayProcess(configuration: configuration).run()
        if code != 0 { throw ExitCode(code) }
    }

    /// A configuration error: one line naming the key, exit status 78 (EX_CONFIG).
    static func fail(_ error: GatewayConfigError) -> Never {
        FileHandle.standardError.write(Data("swarm-gateway: \(error)\n".utf8))
        Foundation.exit(78)
    }

    /// `--key value` / `--key=value` pairs. A key given once is a plain override (lists
    /// comma-separated); a key given several times (`--broker A --broker B`) is a list override,
    /// one element per flag. Anything else is an error naming what was given.
    static func parseFlags(_ arguments: [String]) throws(GatewayConfigError) -> (single: [String: String], lists: [String: [String]]) {
        var values: [String: [String]] = [:]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            guard argument.hasPrefix("--"), argument.count > 2 else {
                throw GatewayConfigError(key: argument, source: .flag(argument), message: "expected --KEY VALUE")
            }
            var name = argument
            var value: String
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                value = String(argument[argument.index(after: equals)...])
            } else {
                guard index + 1 < arguments.count, !arguments[index + 1].hasPrefix("--") else {
                    throw GatewayConfigError(key: name, source: .flag(name), message: "missing value")
                }
                index += 1
                value = arguments[index]
            }
            values[name, default: []].append(value)
            index += 1
        }
        var single: [String: String] = [:]
        var lists: [String: [String]] = [:]
        for (name, given) in values {
            if given.count == 1 && name != "--broker" { single[name] = given[0] } else { lists[name] = given }
        }
        return (single, lists)
    }
}
