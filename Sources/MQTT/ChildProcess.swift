internal import CMosquitto
import Glibc
import Synchronization

/// A child process started with `posix_spawn`, with bounded waits.
///
/// The child gets stdin from `/dev/null`, stdout and stderr appended to `outputPath` (or
/// `/dev/null`), no inherited descriptors beyond those three, an environment of only `PATH`
/// plus what the caller passes, an empty signal mask, default signal dispositions, and
/// optionally a process group of its own.
/// Public for the gateway's demo, which runs nodes and the device simulator as children.
public final class ChildProcess: Sendable {
    /// The child's process id.
    public let pid: Int32
    /// The raw `waitpid` status once the child has been reaped.
    private let reaped = Mutex<Int32?>(nil)

    private init(pid: Int32) {
        self.pid = pid
    }

    /// Starts `executable` (an absolute path) with `arguments`.
    /// - Parameter ownProcessGroup: put the child in a process group of its own, so a terminal's
    ///   Ctrl-C (or a signal to the parent's group) reaches only the parent, which then stops
    ///   the child in order. The price: if the parent is killed with SIGKILL, the child lives on.
    ///   Off by default (a broker for tests dies with its test process's group).
    public static func spawn(
        executable: String, arguments: [String], outputPath: String?, environment: [String: String] = [:],
        ownProcessGroup: Bool = false
    ) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let closeFrom = posix_spawn_file_actions_addclosefrom_np(&actions, 3)
        guard closeFrom == 0 else {
            throw MQTTError(code: .broker, message: "posix_spawn_file_actions_addclosefrom_np: \(String(cString: strerror(closeFrom)))")
        }

        // The spawning thread may block or ignore signals (Swift's and Dispatch's worker threads
        // do); the child would inherit that and ignore SIGTERM. Reset mask and dispositions.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2] {
            sigaddset(&defaultSignals, signal)
        }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if ownProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argumentStrings: [String] = [executable] + arguments
        let environmentStrings: [String] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
            + environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let argv: [UnsafeMutablePointer<CChar>?] = argumentStrings.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environmentStrings.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw MQTTError(code: .broker, message: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return ChildProcess(pid: pid)
    }

    /// Runs `executable` to completion (bounded by `timeout`, then SIGKILL) and returns its exit
    /// code, or nil if it was killed by a signal.
    public static func run(executable: String, arguments: [String], outputPath: String?, timeout: Duration) async throws -> Int32? {
        let child = try spawn(executable: executable, arguments: arguments, outputPath: outputPath)
        if await child.waitForExit(timeout: timeout) == nil {
            child.signal(SIGKILL)
            _ = await child.waitForExit(timeout: .seconds(5))
        }
        return child.exitCode
    }

    /// The raw wait status if the child has exited (reaping it), nil while it runs.
    func poll() -> Int32? {
        reaped.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            if result == pid {
                status = raw
            } else if result < 0 && errno == ECHILD {
                status = -1  // not our child any more (reaped elsewhere); treat as gone
            }
            return status
        }
    }

    /// True while the child has not exited.
    public var isRunning: Bool { poll() == nil }

    /// The exit code when the child exited normally; nil while running or when killed by a signal.
    public var exitCode: Int32? {
        guard let status = poll(), status >= 0, status & 0x7f == 0 else { return nil }
        return (status >> 8) & 0xff
    }

    /// Sends `signal` unless the child has already been reaped (its pid may be reused).
    public func signal(_ signal: Int32) {
        reaped.withLock { status in
            if status == nil { _ = kill(pid, signal) }
        }
    }

    /// Polls every 10 ms until the child exits or `timeout` passes; returns the wait status.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = poll() { return status }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait up to 5 s more.
    public func terminate(grace: Duration) async {
        signal(SIGTERM)
        if await waitForExit(timeout: grace) != nil { return }
        signal(SIGKILL)
        _ = await waitForExit(timeout: .seconds(5))
    }

    /// Synchronous SIGKILL and reap, for deinitialisers (bounded to about 2 s).
    func killAndReapBlocking() {
        signal(SIGKILL)
        for _ in 0..<200 {
            if poll() != nil { return }
            usleep(10_000)
        }
    }
}
