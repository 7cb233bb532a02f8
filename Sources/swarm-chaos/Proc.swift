import Foundation
import Glibc
import Synchronization

/// Child processes for the harness: short commands (`ip`, `mosquitto_sub`) run to completion
/// with a bounded wait, long-lived children (broker, gateway nodes, fleet) are spawned in their own
/// process group and recorded in ``Children`` so that every exit path (normal end, error, SIGINT,
/// SIGTERM, the watchdog) kills them by pid.
enum Proc {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Monotonic seconds.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func sleep(_ seconds: Double) {
        guard seconds > 0 else { return }
        usleep(useconds_t(seconds * 1_000_000))
    }

    /// Spawns `arguments` (PATH lookup) with stdin from /dev/null and stdout+stderr appended to
    /// `output` (or /dev/null), in a new process group. Returns the pid.
    static func spawn(_ arguments: [String], environment: [String: String] = [:], output: String?, errorOutput: String? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        if let errorOutput {
            posix_spawn_file_actions_addopen(&actions, 2, errorOutput, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard rc == 0 else { throw Failure(description: "spawn \(arguments[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// Exit status if `pid` has ended (reaps it), nil while it runs.
    static func poll(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        if rc == 0 { return nil }
        if rc < 0 { return -1 }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Waits at most `timeout` seconds for `pid`; nil when it still runs.
    static func wait(_ pid: pid_t, timeout: Double) -> Int32? {
        let deadline = now() + timeout
        while true {
            if let code = poll(pid) { return code }
            if now() >= deadline { return nil }
            usleep(5_000)
        }
    }

    /// SIGKILL and reap (bounded).
    static func kill9(_ pid: pid_t) {
        Glibc.kill(pid, SIGKILL)
        _ = wait(pid, timeout: 5)
    }

    /// Runs a command to completion (at most `timeout` seconds, then SIGKILL); returns its
    /// status and combined output.
    @discardableResult
    static func run(_ arguments: [String], timeout: Double = 20, environment: [String: String] = [:]) -> (status: Int32, output: String) {
        let path = "/tmp/swarm-chaos-out-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(path) }
        let pid: pid_t
        do {
            pid = try spawn(arguments, environment: environment, output: path)
        } catch {
            return (127, "\(error)")
        }
        var code = wait(pid, timeout: timeout)
        if code == nil {
            kill9(pid)
            code = 124
        }
        let output = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return (code ?? 124, output)
    }

    /// Runs a command and throws with its output when it fails.
    static func must(_ arguments: [String], timeout: Double = 20) throws {
        let (status, output) = run(arguments, timeout: timeout)
        guard status == 0 else {
            throw Failure(description: "`\(arguments.joined(separator: " "))` exited \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Every descendant of `pid`, deepest first (/proc/PID/task/*/children, recursively).
    static func descendants(of pid: pid_t) -> [pid_t] {
        var result: [pid_t] = []
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8) else { continue }
            for child in text.split(separator: " ").compactMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                result += descendants(of: child) + [child]
            }
        }
        return result
    }

    /// SIGKILL of `pid`'s descendants (deepest first, so no grandchild is left to init), then of
    /// `pid`, which is reaped (bounded).
    static func killTree(_ pid: pid_t) {
        for child in descendants(of: pid) { Glibc.kill(child, SIGKILL) }
        _ = wait(pid, timeout: 1)
        Glibc.kill(pid, SIGKILL)
        _ = wait(pid, timeout: 5)
    }

    /// The first child of `pid` (/proc/PID/task/PID/children), e.g. the gateway under `timeout`.
    static func firstChild(of pid: pid_t) -> pid_t? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) else { return nil }
        return text.split(separator: " ").first.flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Resident set size in KiB (VmRSS), nil when the process is gone.
    static func rssKiB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.dropFirst(6).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// The command line of `pid` (NULs as spaces), empty when gone.
    static func commandLine(_ pid: pid_t) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }
}

/// Every long-lived child the harness started (pid → what it is), killed by pid on any exit.
/// The pids are also written to `<workdir>/pids` so that `swarm-chaos cleanup` can end the
/// children of a harness that was itself killed with SIGKILL.
final class Children: Sendable {
    static let shared = Children()
    private let table = Mutex<[pid_t: String]>([:])
    private let pidFile = Mutex<String?>(nil)

    func setPidFile(_ path: String) {
        pidFile.withLock { $0 = path }
    }

    func add(_ pid: pid_t, _ what: String) {
        table.withLock { $0[pid] = what }
        if let path = pidFile.withLock({ $0 }), let handle = FileHandle(forWritingAtPath: path) ?? {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            return FileHandle(forWritingAtPath: path)
        }() {
            handle.seekToEndOfFile()
            handle.write(Data("\(pid) \(what)\n".utf8))
            try? handle.close()
        }
    }

    func remove(_ pid: pid_t) {
        _ = table.withLock { $0.removeValue(forKey: pid) }
    }

    /// SIGKILL every recorded child (process group and pid) and reap it.
    func killAll() {
        let all = table.withLock { table -> [pid_t: String] in
            let copy = table
            table.removeAll()
            return copy
        }
        // Descendants first (the program under a `timeout` wrapper, the fleet's worker
        // processes), so that nothing is left to init; then the wrapper's process group.
        for pid in all.keys {
            for child in Proc.descendants(of: pid) { Glibc.kill(child, SIGKILL) }
        }
        for pid in all.keys { _ = Proc.wait(pid, timeout: 1) }
        for pid in all.keys {
            Glibc.kill(-pid, SIGKILL)
            Glibc.kill(pid, SIGKILL)
        }
        for pid in all.keys { _ = Proc.wait(pid, timeout: 5) }
    }
}
