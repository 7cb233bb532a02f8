import ArgumentParser
import DeviceSimulator
import Dispatch
import Foundation
import Glibc
import Synchronization

/// The device fleet simulator.
///
///     swarm-devices run --broker mqtt://127.0.0.1:1883 --fleet devices/fleet-demo.json --count 1000
///     swarm-devices one --broker mqtt://127.0.0.1:1883 --id thermo-0001 --profile thermostat
///     swarm-devices subscribe --broker mqtt://127.0.0.1:1883 --topic 'devices/+/telemetry'
@main
struct SwarmDevicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swarm-devices",
        abstract: "Simulate MQTT devices for Swarm Gateway (docs/gateway.md, “Device contract”), or count what a plain subscriber receives.",
        subcommands: [RunCommand.self, OneCommand.self, SubscribeCommand.self, ValidateCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// Options shared by `run` and `one`.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Broker URL mqtt://USER:PASS@HOST:PORT or mqtts://...; {id} in USER/PASS becomes each device's id. Default: the fleet file's, else mqtt://127.0.0.1:1883.")
    var broker: String?

    @Option(help: "CA file for mqtts:// (default: the system certificates).")
    var caFile: String?

    @Option(help: "Telemetry messages per second per device (overrides the profiles; 0 = no telemetry).")
    var rate: Double?

    @Option(help: "Telemetry payload size in bytes (overrides the profiles).")
    var payloadSize: Int?

    @Option(help: "Telemetry QoS 0, 1 or 2 (overrides the profiles).")
    var qos: Int?

    @Option(help: "Run this many seconds, then exit (0 = until Ctrl-C). Default: the fleet file's, else 0.")
    var duration: Double?

    @Option(help: "Share of devices (0...1) that exit abruptly (socket closed without DISCONNECT: the broker publishes their will). Default: the fleet file's, else 0.")
    var abruptFraction: Double?

    @Option(help: "Topic prefix.")
    var prefix = "devices"

    func validate() throws {
        if let rate, rate < 0 || !rate.isFinite { throw ValidationError("--rate must be a non-negative number") }
        if let payloadSize, !(0...1_000_000).contains(payloadSize) { throw ValidationError("--payload-size must be between 0 and 1000000") }
        if let qos, !(0...2).contains(qos) { throw ValidationError("--qos must be 0, 1 or 2") }
        if let duration, duration < 0 { throw ValidationError("--duration must not be negative") }
        if let abruptFraction, !(0...1).contains(abruptFraction) { throw ValidationError("--abrupt-fraction must be between 0 and 1") }
        if let broker { _ = try parseBroker(broker) }
    }

    func settings(fleet: FleetDefinition?) throws -> FleetRunner.Settings {
        let url = try parseBroker(broker ?? fleet?.broker ?? "mqtt://127.0.0.1:1883")
        var settings = FleetRunner.Settings(broker: url)
        settings.tlsCAFile = caFile
        settings.telemetryRate = rate
        settings.payloadBytes = payloadSize
        settings.qos = qos
        settings.topicPrefix = prefix
        return settings
    }
}

func parseBroker(_ text: String) throws -> BrokerURL {
    do { return try BrokerURL.parse(text, source: "--broker") } catch let error as SimulatorConfigError {
        throw ValidationError(error.message)
    }
}

/// Runs `body`, turning simulator configuration errors into clean command-line failures.
func reportingConfigErrors<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as SimulatorConfigError {
        throw ValidationError(error.message)
    }
}

/// Runs the fleet until the duration passes or SIGINT/SIGTERM, printing progress lines.
func drive(_ runner: FleetRunner, duration: Double, abruptFraction: Double, progressEvery: Double, quiet: Bool, label: String = "") async throws -> FleetStats {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let interrupted = SignalFlag()
    let sources = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { interrupted.set() }
        source.resume()
        return source
    }
    defer { sources.forEach { $0.cancel() } }
    try runner.start()
    let start = ContinuousClock.now
    var nextProgress = start + .seconds(progressEvery)
    while !interrupted.isSet {
        if duration > 0 && ContinuousClock.now - start >= .seconds(duration) { break }
        try? await Task.sleep(for: .milliseconds(50))
        if progressEvery > 0 && ContinuousClock.now >= nextProgress {
            if !quiet { printErr(label + runner.stats().progressLine) }
            nextProgress = nextProgress + .seconds(progressEvery)
        }
    }
    if !quiet { printErr(label + "stopping (abrupt fraction \(abruptFraction))...") }
    return await runner.stop(abruptFraction: abruptFraction)
}

final class SignalFlag: Sendable {
    private let flag = SynchronizedBool()
    func set() { flag.set() }
    var isSet: Bool { flag.value }
}

final class SynchronizedBool: Sendable {
    private let storage = Atomic<Bool>(false)
    func set() { storage.store(true, ordering: .relaxed) }
    var value: Bool { storage.load(ordering: .relaxed) }
}

func printErr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

func printJSON(_ stats: FleetStats) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(stats), as: UTF8.self))
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Simulate a fleet of devices.")

    @Option(help: "Fleet file (JSON, see devices/README.md).")
    var fleet = "devices/fleet-demo.json"

    @Option(help: "Number of devices (scales the fleet file's counts proportionally).")
    var count: Int?

    @OptionGroup var options: DeviceOptions

    @Option(help: "Loop threads (each drives many devices over epoll). Default: cores, at most 4.")
    var threads: Int?

    @Option(help: "New connections per second. Default: the fleet file's, else 5000.")
    var connectRate: Double?

    @Option(help: "Seconds between progress lines (0 = none).")
    var progress: Double = 5

    @Flag(help: "Print the final summary as JSON on stdout.")
    var json = false

    @Option(help: "Worker processes, each simulating a share of the fleet (each device needs 3 file descriptors; the open-file hard limit caps one process). Default: as many as that limit requires.")
    var processes: Int?

    @Option(help: ArgumentHelp("Simulate only share I of K (I/K, 0-based); set by --processes.", visibility: .hidden))
    var shard: String?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let processes, !(1...64).contains(processes) { throw ValidationError("--processes must be between 1 and 64") }
        if let shard, parseShard(shard) == nil { throw ValidationError("--shard must be I/K with 0 <= I < K") }
        if let threads, !(1...64).contains(threads) { throw ValidationError("--threads must be between 1 and 64") }
        if let connectRate, connectRate <= 0 { throw ValidationError("--connect-rate must be positive") }
    }

    func parseShard(_ text: String) -> (index: Int, count: Int)? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count >= 1, (0..<count).contains(index) else { return nil }
        return (index, count)
    }

    func run() async throws {
        let definition = try reportingConfigErrors { try FleetDefinition.load(path: fleet) }
        var specs = try reportingConfigErrors { try definition.expand(count: count) }
        if let shard, let (index, total) = parseShard(shard) {
            specs = specs.enumerated().filter { $0.offset % total == index }.map(\.element)
        } else {
            let needed = processes ?? Self.processesNeeded(devices: specs.count)
            if needed > 1 {
                let stats = try await runShards(needed, devices: specs.count)
                if json { try printJSON(stats) } else { print(stats.summary) }
                return
            }
        }
        var settings = try options.settings(fleet: definition)
        if let threads { settings.threads = threads }
        if let rate = connectRate ?? definition.connectRate { settings.connectRate = rate }
        // Worker processes share the fleet's connect rate.
        if let shard, let (_, total) = parseShard(shard) { settings.connectRate /= Double(total) }
        let runner = try reportingConfigErrors { try FleetRunner(devices: specs, settings: settings) }
        let duration = options.duration ?? definition.durationSeconds ?? 0
        let abrupt = options.abruptFraction ?? definition.abruptFraction ?? 0
        let label = shard.map { "[\($0)] " } ?? ""
        printErr(label + "swarm-devices: \(specs.count) devices (fleet \(definition.name)) on \(settings.broker), \(settings.threads) threads, duration \(duration == 0 ? "until Ctrl-C" : "\(duration) s")")
        let stats = try await drive(runner, duration: duration, abruptFraction: abrupt, progressEvery: progress, quiet: false, label: label)
        if json { try printJSON(stats) } else { print(stats.summary) }
    }

    /// Processes needed so that each stays under the open-file hard limit (3 per device).
    static func processesNeeded(devices: Int) -> Int {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let usable = max(300, Int(min(limit.rlim_max, 1 << 24)) - 512)
        return max(1, (devices * 3 + usable - 1) / usable)
    }

    /// Runs `count` copies of this command, each with `--shard i/count --json`, and adds up
    /// their summaries. Their progress lines go to stderr as they come.
    func runShards(_ count: Int, devices: Int) async throws -> FleetStats {
        printErr("swarm-devices: \(devices) devices need \(count) processes (3 file descriptors per device, hard limit per process)")
        // Ctrl-C reaches the children directly (same process group); a SIGTERM sent to this
        // process alone (a supervisor, the demo) is forwarded to them. Either way they stop
        // their devices (clean or abrupt, as configured) and report.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let pids = Mutex<[Int32]>([])
        let forwarders = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if number == SIGTERM { for pid in pids.withLock({ $0 }) { kill(pid, SIGTERM) } }
            }
            source.resume()
            return source
        }
        defer { forwarders.forEach { $0.cancel() } }
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "run" { arguments.removeFirst() }
        var children: [(Process, Pipe)] = []
        for index in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
            process.arguments = ["run"] + arguments + ["--shard", "\(index)/\(count)", "--json"]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            pids.withLock { $0.append(process.processIdentifier) }
            children.append((process, pipe))
        }
        var total: FleetStats?
        for (process, pipe) in children {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0, let stats = try? JSONDecoder().decode(FleetStats.self, from: data) else {
                throw ValidationError("a worker process failed (exit status \(process.terminationStatus))")
            }
            total = total.map { $0.adding(stats) } ?? stats
        }
        return total!
    }
}

struct OneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "one", abstract: "Run one reference device and print every message it sends and receives.")

    @Option(help: "Device id ([A-Za-z0-9._:-]{1,128}).")
    var id: String

    @Option(help: "Profile name (devices/profiles/NAME.json).")
    var profile = "thermostat"

    @Option(help: "Profiles directory.")
    var profiles = "devices/profiles"

    @OptionGroup var options: DeviceOptions

    @Flag(help: "Print the final summary as JSON on stdout.")
    var json = false

    func validate() throws {
        guard DeviceSpec.isValidID(id) else { throw ValidationError("--id \"\(id)\" is not a valid device id ([A-Za-z0-9._:-]{1,128})") }
    }

    func run() async throws {
        let loaded = try reportingConfigErrors { try DeviceProfile.load(named: profile, directory: profiles) }
        var settings = try options.settings(fleet: nil)
        settings.threads = 1
        settings.trace = { line in print(line); fflush(nil) }
        let runner = try reportingConfigErrors { try FleetRunner(devices: [DeviceSpec(id: id, profile: loaded)], settings: settings) }
        printErr("swarm-devices one: \(id) (\(profile)) on \(settings.broker); Ctrl-C to stop")
        let stats = try await drive(runner, duration: options.duration ?? 0, abruptFraction: options.abruptFraction ?? 0, progressEvery: 0, quiet: true)
        if json { try printJSON(stats) } else { print(stats.summary) }
    }
}

struct SubscribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "A plain libmosquitto subscriber that only counts messages (the M1 limit).")

    @Option(help: "Broker URL mqtt://USER:PASS@HOST:PORT.")
    var broker = "mqtt://127.0.0.1:1883"

    @Option(name: .customLong("topic"), help: "Topic filter (repeatable).")
    var topics: [String] = ["devices/+/telemetry"]

    @Option(help: "Subscription QoS.")
    var qos = 0

    @Option(help: "Run this many seconds (0 = until Ctrl-C).")
    var duration: Double = 0

    @Option(help: "Seconds between rate lines.")
    var interval: Double = 1

    @Flag(help: "Print the final summary as JSON on stdout.")
    var json = false

    func validate() throws {
        guard (0...2).contains(qos) else { throw ValidationError("--qos must be 0, 1 or 2") }
        guard interval > 0 else { throw ValidationError("--interval must be positive") }
        _ = try parseBroker(broker)
    }

    struct Summary: Codable {
        var messages: Int
        var bytes: Int
        var seconds: Double
        var messagesPerSecond: Double
        var peakMessagesPerSecond: Double
    }

    func run() async throws {
        let url = try parseBroker(broker)
        let subscriber = try reportingConfigErrors { try PlainSubscriber(broker: url, filters: topics, qos: qos) }
        let interrupted = SignalFlag()
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { interrupted.set() }
        source.resume()
        let start = ContinuousClock.now
        var last = (time: start, count: 0)
        var first: (time: ContinuousClock.Instant, count: Int)?
        var peak = 0.0
        while !interrupted.isSet {
            if duration > 0 && ContinuousClock.now - start >= .seconds(duration) { break }
            try await Task.sleep(for: .seconds(interval))
            let now = ContinuousClock.now
            let count = subscriber.messages
            let seconds = Double((now - last.time).components.attoseconds) / 1e18 + Double((now - last.time).components.seconds)
            let rate = Double(count - last.count) / seconds
            peak = max(peak, rate)
            if first == nil && count > 0 { first = (last.time, last.count) }
            printErr(String(format: "%d messages, %.0f msg/s", count, rate))
            last = (now, count)
        }
        source.cancel()
        subscriber.close()
        let begin = first ?? (start, 0)
        let span = ContinuousClock.now - begin.time
        let seconds = Double(span.components.seconds) + Double(span.components.attoseconds) / 1e18
        let summary = Summary(
            messages: subscriber.messages, bytes: subscriber.bytes, seconds: seconds,
            messagesPerSecond: seconds > 0 ? Double(subscriber.messages - begin.count) / seconds : 0, peakMessagesPerSecond: peak)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print(String(format: "received %d messages (%d bytes), %.0f msg/s average since the first, peak %.0f msg/s", summary.messages, summary.bytes, summary.messagesPerSecond, peak))
        }
    }
}

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "validate", abstract: "Check a fleet file and its profiles.")

    @Option(help: "Fleet file.")
    var fleet = "devices/fleet-demo.json"

    @Option(help: "Number of devices to expand to.")
    var count: Int?

    @Flag(name: .customLong("list-ids"), help: "Print only the device ids, one per line (for making their broker logins).")
    var listIDs = false

    func run() throws {
        let definition = try reportingConfigErrors { try FleetDefinition.load(path: fleet) }
        let specs = try reportingConfigErrors { try definition.expand(count: count) }
        if listIDs {
            print(specs.map(\.id).joined(separator: "\n"))
            return
        }
        var perProfile: [String: Int] = [:]
        for spec in specs { perProfile[spec.profile.name, default: 0] += 1 }
        print("fleet \(definition.name): \(specs.count) devices; " + perProfile.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        if let first = specs.first, let last = specs.last { print("ids \(first.id) ... \(last.id)") }
    }
}
