internal import CMosquitto
import Foundation
import Glibc
import Synchronization

/// Runs a fleet of simulated devices against one broker.
///
/// The devices are spread round-robin over ``Settings/threads`` epoll loop threads
/// (``DeviceLoop``), each driving its devices' libmosquitto clients in non-threaded mode. Devices
/// connect at ``Settings/connectRate`` (with at most ``Settings/maxConnectingPerThread`` CONNECTs
/// awaiting a CONNACK per thread), reconnect with backoff when a connection drops, and stop
/// cleanly or abruptly on ``stop(abruptFraction:)``.
///
///     let runner = try FleetRunner(devices: specs, settings: settings)
///     try runner.start()
///     _ = await runner.waitUntilConnected(timeout: .seconds(30))
///     ...
///     let stats = await runner.stop(abruptFraction: 0.1)
public final class FleetRunner: Sendable {
    public struct Settings: Sendable {
        /// The broker; `{id}` in the user name or password is replaced by each device's id.
        public var broker: BrokerURL
        /// CA file for `mqtts://` (nil: the system's certificates in /etc/ssl/certs).
        public var tlsCAFile: String? = nil
        /// Loop threads. Default: the number of cores, at most 4.
        public var threads: Int = min(4, max(1, ProcessInfo.processInfo.activeProcessorCount))
        /// New connections per second over the whole fleet. Default 5000 (10,000 devices in about 2.2 s here; faster overflows the broker's accept backlog and dropped SYNs cost 1 s each).
        public var connectRate: Double = 5000
        /// CONNECTs awaiting their CONNACK, per thread. Default 64 (keeps the broker's accept
        /// backlog short).
        public var maxConnectingPerThread: Int = 64
        /// Telemetry messages per second per device, replacing the profile's rate (0 = none).
        public var telemetryRate: Double? = nil
        /// Telemetry payload size in bytes, replacing the profile's.
        public var payloadBytes: Int? = nil
        /// Telemetry QoS, replacing the profile's.
        public var qos: Int? = nil
        /// Topic prefix. Default `devices`.
        public var topicPrefix: String = "devices"
        /// First reconnect delay (doubles up to 8×, ±20% jitter). Default 1 s.
        public var reconnectDelay: Duration = .seconds(1)
        /// How long ``FleetRunner/stop(abruptFraction:)`` waits for clean disconnects. Default 5 s.
        public var stopTimeout: Duration = .seconds(5)
        /// Receives one line per device event (connects, commands, replies...), on a loop
        /// thread. For the single reference device; too chatty for a fleet.
        public var trace: (@Sendable (String) -> Void)? = nil

        public init(broker: BrokerURL) { self.broker = broker }
    }

    private let loops: [DeviceLoop]
    private let counters = FleetCounters()
    private let startNanos: UInt64
    private let started = Atomic<Bool>(false)
    public let settings: Settings

    /// Creates the libmosquitto clients (nothing connects before ``start()``). Raises the
    /// process's open-file limit when the fleet needs it (three descriptors per device).
    public init(devices: [DeviceSpec], settings: Settings) throws {
        guard !devices.isEmpty else { throw SimulatorConfigError("no devices to simulate") }
        guard settings.threads >= 1 else { throw SimulatorConfigError("--threads must be at least 1") }
        guard settings.connectRate > 0 else { throw SimulatorConfigError("--connect-rate must be positive") }
        if let rate = settings.telemetryRate, rate < 0 || !rate.isFinite { throw SimulatorConfigError("--rate must be a non-negative number") }
        if let qos = settings.qos, !(0...2).contains(qos) { throw SimulatorConfigError("--qos must be 0, 1 or 2") }
        try Self.ensureLibrary()
        try Self.raiseFileLimit(to: devices.count * 3 + 256)
        self.settings = settings
        startNanos = monotonicNanos()
        let threads = min(settings.threads, devices.count)
        var perLoop: [[(globalIndex: Int, spec: DeviceSpec)]] = Array(repeating: [], count: threads)
        for (index, spec) in devices.enumerated() {
            perLoop[index % threads].append((index, spec))
        }
        var settings = settings
        settings.threads = threads
        let counters = self.counters
        let startNanos = self.startNanos
        loops = try perLoop.map {
            try DeviceLoop(specs: $0, fleetSize: devices.count, settings: settings, counters: counters, startNanos: startNanos)
        }
    }

    /// Starts the loop threads; devices begin to connect.
    public func start() throws {
        guard started.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        for (index, loop) in loops.enumerated() {
            let thread = Thread { loop.run() }
            thread.name = "swarm-devices-\(index)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// The counters now.
    public func stats() -> FleetStats {
        counters.snapshot(elapsedSeconds: Double(monotonicNanos() - startNanos) / 1e9)
    }

    /// Waits until every device has connected once (true) or `timeout` passes (false).
    public func waitUntilConnected(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let stats = stats()
            if stats.everConnected == stats.devices { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// Stops every device — a `abruptFraction` share of them (spread evenly over the fleet) by
    /// closing the socket without DISCONNECT, so the broker publishes their will, the others by
    /// publishing `{"status":"offline"}` (retained) and disconnecting — and waits for the loop
    /// threads to end. Returns the final counters. Idempotent.
    @discardableResult
    public func stop(abruptFraction: Double = 0) async -> FleetStats {
        if started.load(ordering: .relaxed) {
            for loop in loops { loop.send(.stop(abruptFraction: min(1, max(0, abruptFraction)))) }
            while !loops.allSatisfy({ $0.finished.load(ordering: .acquiring) }) {
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        return stats()
    }

    private static let initResult: Int32 = mosquitto_lib_init()

    static func ensureLibrary() throws {
        guard initResult == MOSQ_ERR_SUCCESS.rawValue else {
            throw SimulatorConfigError("mosquitto_lib_init failed: \(String(cString: mosquitto_strerror(initResult)))")
        }
    }

    /// Raises RLIMIT_NOFILE to at least `needed` (the hard limit too, where permitted).
    static func raiseFileLimit(to needed: Int) throws {
        var limit = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0 else { return }
        if limit.rlim_cur >= rlim_t(needed) { return }
        var wanted = limit
        wanted.rlim_cur = rlim_t(needed)
        if wanted.rlim_max < wanted.rlim_cur { wanted.rlim_max = wanted.rlim_cur }
        if setrlimit(RLIMIT_NOFILE_VALUE, &wanted) != 0 {
            // Not allowed to raise the hard limit: take what there is.
            wanted.rlim_max = limit.rlim_max
            wanted.rlim_cur = limit.rlim_max
            _ = setrlimit(RLIMIT_NOFILE_VALUE, &wanted)
            if wanted.rlim_cur < rlim_t(needed) {
                throw SimulatorConfigError(
                    "the fleet needs about \(needed) open files (3 per device) but the limit is \(limit.rlim_max); raise it with ulimit -n")
            }
        }
    }
}

#if canImport(Glibc)
private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#endif
