internal import CEpoll
internal import CMosquitto
import Foundation
import Glibc
import Synchronization

/// One epoll thread driving many libmosquitto clients in non-threaded mode.
///
/// ## Why not `MQTTClient` per device
/// `MQTTClient` uses `mosquitto_loop_start`: one network thread per client, and that thread
/// waits in `select(2)`, which cannot watch descriptors ≥ `FD_SETSIZE` (1024). Every libmosquitto
/// client holds three descriptors (its socket plus an internal socketpair, measured), so a
/// threaded fleet breaks after roughly 300 devices per process, and 10,000 threads would not fit
/// 2 cores anyway. Here each device is a plain `struct mosquitto *` driven by hand
/// (`mosquitto_loop_read` / `_write` / `_misc`) from an epoll loop; a handful of loop threads
/// carry the whole fleet.
///
/// ## Thread confinement
/// Everything but `inbox`, `finished` and the shared counters is touched only on this loop's
/// thread (libmosquitto callbacks run inside `mosquitto_loop_read`, i.e. on this thread too).
/// Other threads talk to it through `inbox` plus a write to `wakeFD` (an eventfd). That is what
/// makes the `@unchecked Sendable` below safe.
final class DeviceLoop: @unchecked Sendable {
    enum Command: Sendable {
        /// Stop every device: those for which `abrupt(globalIndex)` is true close the socket
        /// without DISCONNECT; the others publish offline and disconnect.
        case stop(abruptFraction: Double)
    }

    let settings: FleetRunner.Settings
    let counters: FleetCounters
    let startNanos: UInt64
    private let inbox = Mutex<[Command]>([])
    let finished = Atomic<Bool>(false)

    // Confined to the loop thread.
    private var devices: [DeviceConnection] = []
    private let epollFD: Int32
    private let wakeFD: Int32
    private var timers = TimerHeap()
    private var connectQueue: [Int] = []
    private var connectQueueHead = 0
    private var connecting = 0
    private var connectTokens = 0.0
    private var lastTokenNanos: UInt64 = 0
    private var nextMiscNanos: UInt64 = 0
    private var stopping = false
    private var stopDeadline: UInt64 = 0
    private var nextTimerToken: UInt32 = 0
    /// Devices of this loop that connected at least once, and the fleet-wide total to reach.
    private let fleetSize: Int

    init(specs: [(globalIndex: Int, spec: DeviceSpec)], fleetSize: Int, settings: FleetRunner.Settings, counters: FleetCounters, startNanos: UInt64) throws {
        self.settings = settings
        self.counters = counters
        self.startNanos = startNanos
        self.fleetSize = fleetSize
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFD >= 0 else { throw SimulatorConfigError("epoll_create1 failed: \(String(cString: strerror(errno)))") }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else {
            close(epollFD)
            throw SimulatorConfigError("eventfd failed: \(String(cString: strerror(errno)))")
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = UInt64.max
        _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
        devices.reserveCapacity(specs.count)
        for (localIndex, item) in specs.enumerated() {
            let device = try DeviceConnection(
                localIndex: localIndex, globalIndex: item.globalIndex, spec: item.spec, loop: self)
            devices.append(device)
            connectQueue.append(localIndex)
        }
    }

    deinit {
        for device in devices { device.destroy() }
        close(epollFD)
        close(wakeFD)
    }

    /// Queues a command for the loop thread and wakes it.
    func send(_ command: Command) {
        inbox.withLock { $0.append(command) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    // MARK: The loop

    /// Runs until every device has stopped after a `.stop` command.
    func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 512)
        lastTokenNanos = monotonicNanos()
        while true {
            let now = monotonicNanos()
            drainInbox(now: now)
            if stopping && (devices.allSatisfy { $0.phase == .stopped } || now >= stopDeadline) { break }
            fireTimers(now: now)
            if !stopping { connectSome(now: now) }
            if now >= nextMiscNanos {
                for device in devices where device.phase == .connecting || device.phase == .connected {
                    device.misc()
                }
                nextMiscNanos = now + 1_000_000_000
            }
            var wait = min(nextMiscNanos, timers.nextDue ?? UInt64.max)
            if !stopping && connectQueueHead < connectQueue.count { wait = min(wait, now + 5_000_000) }
            if stopping { wait = min(wait, now + 10_000_000) }
            let timeoutMillis = wait <= now ? 0 : Int32(min(100, (wait - now + 999_999) / 1_000_000))
            let count = epoll_wait(epollFD, &events, Int32(events.count), timeoutMillis)
            if count < 0 {
                if errno == EINTR { continue }
                break
            }
            for index in 0..<Int(count) {
                let event = events[index]
                let key = event.data.u64
                if key == UInt64.max {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    continue
                }
                guard Int(key) < devices.count else { continue }
                let device = devices[Int(key)]
                let flags = event.events
                if flags & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
                    device.readable()
                }
                if flags & EPOLLOUT.rawValue != 0 {
                    device.writable()
                }
                device.syncRegistration()
            }
        }
        for device in devices { device.destroy() }
        finished.store(true, ordering: .releasing)
    }

    private func drainInbox(now: UInt64) {
        let commands = inbox.withLock { list -> [Command] in
            defer { list.removeAll() }
            return list
        }
        for command in commands {
            switch command {
            case .stop(let fraction):
                guard !stopping else { continue }
                stopping = true
                stopDeadline = now + UInt64(settings.stopTimeout.components.seconds) * 1_000_000_000
                for device in devices {
                    device.stop(abrupt: Self.isAbrupt(globalIndex: device.globalIndex, fraction: fraction))
                }
            }
        }
    }

    /// Spreads abrupt exits evenly: device `g` is abrupt when `floor((g+1)·f) > floor(g·f)`,
    /// so exactly `floor(n·f)` of the first `n` devices are.
    static func isAbrupt(globalIndex: Int, fraction: Double) -> Bool {
        (Double(globalIndex + 1) * fraction).rounded(.down) > (Double(globalIndex) * fraction).rounded(.down)
    }

    private func connectSome(now: UInt64) {
        guard connectQueueHead < connectQueue.count else { return }
        let perThreadRate = settings.connectRate / Double(max(1, settings.threads))
        connectTokens = min(max(1, perThreadRate / 20), connectTokens + Double(now - lastTokenNanos) / 1e9 * perThreadRate)
        lastTokenNanos = now
        while connectTokens >= 1, connecting < settings.maxConnectingPerThread, connectQueueHead < connectQueue.count {
            let device = devices[connectQueue[connectQueueHead]]
            connectQueueHead += 1
            connectTokens -= 1
            device.connect()
        }
        if connectQueueHead == connectQueue.count {
            connectQueue = []
            connectQueueHead = 0
        }
    }

    private func fireTimers(now: UInt64) {
        while let timer = timers.popDue(now: now) {
            guard Int(timer.device) < devices.count else { continue }
            devices[Int(timer.device)].onTimer(timer, now: now)
        }
    }

    // MARK: Services for the devices (loop thread only)

    func schedule(device: Int, kind: Timer.Kind, at due: UInt64, token: UInt32 = 0) {
        timers.push(Timer(due: due, device: Int32(device), kind: kind, token: token))
    }

    func newToken() -> UInt32 {
        nextTimerToken &+= 1
        return nextTimerToken
    }

    func connectStarted() { connecting += 1 }
    func connectEnded() { connecting = max(0, connecting - 1) }
    var isStopping: Bool { stopping }

    func firstConnect() {
        let total = counters.everConnected.add(1, ordering: .relaxed).newValue
        if total == fleetSize {
            counters.allConnectedAfterNanos.store(Int(monotonicNanos() - startNanos), ordering: .relaxed)
        }
    }

    /// Registers `fd` for input (and output when `wantWrite`); `previous` is what was registered.
    func register(fd: Int32, device: Int, wantWrite: Bool, previous: (fd: Int32, events: UInt32)) -> UInt32 {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | (wantWrite ? EPOLLOUT.rawValue : 0)
        event.data.u64 = UInt64(device)
        if previous.fd == fd {
            if previous.events == event.events { return event.events }
            if epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event) == 0 { return event.events }
        }
        // A new socket (or the old registration vanished with a closed descriptor).
        if epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) != 0 {
            if errno == EEXIST { _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event) }
        }
        return event.events
    }
}

/// A timer of one device.
struct Timer {
    enum Kind: UInt8 {
        case telemetry
        case reported
        case reply
        case reconnect
    }

    var due: UInt64
    var device: Int32
    var kind: Kind
    var token: UInt32
}

/// A binary min-heap of timers by due time.
struct TimerHeap {
    private var items: [Timer] = []

    var nextDue: UInt64? { items.first?.due }
    var count: Int { items.count }

    mutating func push(_ timer: Timer) {
        items.append(timer)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].due < items[parent].due else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popDue(now: UInt64) -> Timer? {
        guard let first = items.first, first.due <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < items.count && items[left].due < items[smallest].due { smallest = left }
                if right < items.count && items[right].due < items[smallest].due { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
func monotonicNanos() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

/// Unix time in milliseconds (telemetry `ts`).
func unixMillis() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}
