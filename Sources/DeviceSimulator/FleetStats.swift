import Foundation
import Synchronization

/// Live counters of a fleet run, shared by every loop thread (relaxed atomics).
final class FleetCounters: Sendable {
    let devices = Atomic<Int>(0)
    let connected = Atomic<Int>(0)
    let everConnected = Atomic<Int>(0)
    let connects = Atomic<Int>(0)
    let connectFailures = Atomic<Int>(0)
    let unexpectedDisconnects = Atomic<Int>(0)
    let telemetrySent = Atomic<Int>(0)
    let telemetrySkipped = Atomic<Int>(0)
    let reportedSent = Atomic<Int>(0)
    let published = Atomic<Int>(0)
    let acked = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    let commandsReceived = Atomic<Int>(0)
    let commandsAnswered = Atomic<Int>(0)
    let commandsUnanswered = Atomic<Int>(0)
    let desiredApplied = Atomic<Int>(0)
    let desiredStale = Atomic<Int>(0)
    let desiredInvalid = Atomic<Int>(0)
    let broadcastsReceived = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let cleanExits = Atomic<Int>(0)
    let abruptExits = Atomic<Int>(0)
    /// Nanoseconds from the run's start until the last device connected for the first time.
    let allConnectedAfterNanos = Atomic<Int>(0)

    func add(_ counter: borrowing Atomic<Int>, _ amount: Int = 1) {
        counter.add(amount, ordering: .relaxed)
    }

    func snapshot(elapsedSeconds: Double) -> FleetStats {
        func load(_ counter: borrowing Atomic<Int>) -> Int { counter.load(ordering: .relaxed) }
        let allConnected = load(allConnectedAfterNanos)
        return FleetStats(
            elapsedSeconds: elapsedSeconds,
            devices: load(devices),
            connected: load(connected),
            everConnected: load(everConnected),
            connectSeconds: allConnected > 0 ? Double(allConnected) / 1e9 : nil,
            connects: load(connects),
            connectFailures: load(connectFailures),
            unexpectedDisconnects: load(unexpectedDisconnects),
            telemetrySent: load(telemetrySent),
            telemetrySkipped: load(telemetrySkipped),
            reportedSent: load(reportedSent),
            published: load(published),
            acked: load(acked),
            rejected: load(rejected),
            commandsReceived: load(commandsReceived),
            commandsAnswered: load(commandsAnswered),
            commandsUnanswered: load(commandsUnanswered),
            desiredApplied: load(desiredApplied),
            desiredStale: load(desiredStale),
            desiredInvalid: load(desiredInvalid),
            broadcastsReceived: load(broadcastsReceived),
            errors: load(errors),
            cleanExits: load(cleanExits),
            abruptExits: load(abruptExits)
        )
    }
}

/// A snapshot of a fleet run's counters (the `--json` summary of `swarm-devices run`).
public struct FleetStats: Sendable, Hashable, Codable {
    /// Seconds since ``FleetRunner/start()``.
    public var elapsedSeconds: Double
    /// Devices simulated.
    public var devices: Int
    /// Devices connected right now.
    public var connected: Int
    /// Devices that connected at least once.
    public var everConnected: Int
    /// Seconds from the start until every device had connected once (nil until then).
    public var connectSeconds: Double?
    /// Successful CONNACKs (first connects and reconnects).
    public var connects: Int
    /// Failed connection attempts (TCP errors, refused CONNACKs).
    public var connectFailures: Int
    /// Connections lost without the simulator asking (each is retried).
    public var unexpectedDisconnects: Int
    /// Telemetry messages handed to libmosquitto.
    public var telemetrySent: Int
    /// Telemetry ticks skipped because the device's socket still had unsent data (backpressure).
    public var telemetrySkipped: Int
    /// Reported-state patches published.
    public var reportedSent: Int
    /// Every message published (status, telemetry, reported, replies).
    public var published: Int
    /// Publishes completed: PUBACK for QoS 1/2, written to the socket for QoS 0.
    public var acked: Int
    /// Publishes the broker refused (PUBACK reason ≥ 0x80, for example an ACL denial).
    public var rejected: Int
    public var commandsReceived: Int
    public var commandsAnswered: Int
    /// Commands the profile never answers, or that had no response topic.
    public var commandsUnanswered: Int
    public var desiredApplied: Int
    /// Desired-state messages not newer than the applied version (retained copies).
    public var desiredStale: Int
    public var desiredInvalid: Int
    public var broadcastsReceived: Int
    /// Other failures (publish errors, bad payloads).
    public var errors: Int
    /// Devices that published offline and sent DISCONNECT at the end.
    public var cleanExits: Int
    /// Devices that closed their socket without DISCONNECT (the broker publishes the will).
    public var abruptExits: Int

    /// The sum of two runs (worker processes of one fleet): counters add up, times take the
    /// longer one; the connect time is known only when both runs know it.
    public func adding(_ other: FleetStats) -> FleetStats {
        var sum = self
        sum.elapsedSeconds = max(elapsedSeconds, other.elapsedSeconds)
        sum.connectSeconds = connectSeconds.flatMap { mine in other.connectSeconds.map { max(mine, $0) } }
        sum.devices += other.devices
        sum.connected += other.connected
        sum.everConnected += other.everConnected
        sum.connects += other.connects
        sum.connectFailures += other.connectFailures
        sum.unexpectedDisconnects += other.unexpectedDisconnects
        sum.telemetrySent += other.telemetrySent
        sum.telemetrySkipped += other.telemetrySkipped
        sum.reportedSent += other.reportedSent
        sum.published += other.published
        sum.acked += other.acked
        sum.rejected += other.rejected
        sum.commandsReceived += other.commandsReceived
        sum.commandsAnswered += other.commandsAnswered
        sum.commandsUnanswered += other.commandsUnanswered
        sum.desiredApplied += other.desiredApplied
        sum.desiredStale += other.desiredStale
        sum.desiredInvalid += other.desiredInvalid
        sum.broadcastsReceived += other.broadcastsReceived
        sum.errors += other.errors
        sum.cleanExits += other.cleanExits
        sum.abruptExits += other.abruptExits
        return sum
    }

    /// The progress line.
    public var progressLine: String {
        let elapsed = String(format: "%.1f", elapsedSeconds)
        return "t=\(elapsed)s connected \(connected)/\(devices) telemetry \(telemetrySent) published \(published) acked \(acked)"
            + " commands \(commandsAnswered)/\(commandsReceived) desired \(desiredApplied) broadcasts \(broadcastsReceived)"
            + " reconnects \(unexpectedDisconnects) errors \(errors + connectFailures + rejected)"
    }

    /// The human-readable final summary.
    public var summary: String {
        var lines = [
            "devices              \(devices) (connected now \(connected), ever \(everConnected))",
            "connect time         " + (connectSeconds.map { String(format: "%.2f s for all", $0) } ?? "not all connected"),
            "connects / failures  \(connects) / \(connectFailures), unexpected disconnects \(unexpectedDisconnects)",
            "telemetry sent       \(telemetrySent) (\(String(format: "%.0f", elapsedSeconds > 0 ? Double(telemetrySent) / elapsedSeconds : 0))/s), skipped by backpressure \(telemetrySkipped)",
            "reported sent        \(reportedSent)",
            "published / acked    \(published) / \(acked), rejected \(rejected)",
            "commands answered    \(commandsAnswered) of \(commandsReceived) (unanswered \(commandsUnanswered))",
            "desired applied      \(desiredApplied) (stale \(desiredStale), invalid \(desiredInvalid))",
            "broadcasts received  \(broadcastsReceived)",
            "exits                clean \(cleanExits), abrupt \(abruptExits)",
            "errors               \(errors)",
        ]
        lines.insert(String(format: "elapsed              %.1f s", elapsedSeconds), at: 0)
        return lines.joined(separator: "\n")
    }
}
