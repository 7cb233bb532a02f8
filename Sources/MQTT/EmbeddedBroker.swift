import FoundationEssentials
import Glibc
import Logging
import Synchronization

/// A Mosquitto broker run as a child process on a loopback port, with a generated configuration.
///
/// Used by the tests (one broker per test, on a free port) and by the gateway's first-run mode,
/// which starts a local broker next to itself. The broker is configured for the gateway's needs:
/// `set_tcp_nodelay` (request/response latency), raised queue limits (Mosquitto silently drops
/// messages, even QoS 0, for a subscriber that exceeds `max_queued_messages`, default 1000), no
/// persistence, and optionally a password file, an ACL file and the dynamic security plugin.
///
/// **Logins.** ``Settings/users`` are the fixed logins (hashed in Swift, ``MosquittoPassword``).
/// With ``Settings/managedLogins`` the password file also holds logins added and removed while the
/// broker runs (``updateLogins(_:)``): the file is rewritten and the broker reloads it on SIGHUP
/// (``reload(timeout:)`` waits until it has), without a restart. A reload disconnects clients whose
/// login is gone. Logins added this way survive restarts of this object when ``Settings/directory``
/// is kept (the password file is read back at the first start).
///
/// Every wait is bounded: ``start()`` waits at most ``Settings/startTimeout`` for the port to
/// accept connections, ``stop()`` sends SIGTERM and escalates to SIGKILL after
/// ``Settings/stopTimeout``. Dropping the last reference kills a still-running broker and removes
/// a temporary directory the broker created.
///
/// Started as root, Mosquitto drops privileges to the `mosquitto` user before it opens its log and
/// reads its password and ACL files, so the working directory is handed to that user (or, where
/// no such user exists, the configuration says `user root`).
public final class EmbeddedBroker: Sendable {
    /// Broker settings. Every property has a documented default.
    public struct Settings: Sendable {
        /// A user for the password file.
        public struct User: Sendable, Hashable {
            public var name: String
            public var password: String
            public init(_ name: String, password: String) {
                self.name = name
                self.password = password
            }
        }

        /// Path of the `mosquitto` binary. Default nil: `/usr/sbin/mosquitto`, then other usual
        /// places.
        public var executable: String? = nil
        /// IPv4 address to listen on. Default `"127.0.0.1"` (loopback only).
        public var host: String = "127.0.0.1"
        /// Port. Default 0: pick a free port at the first start and keep it for restarts.
        public var port: Int = 0
        /// Allow clients without a user name. Default true.
        public var allowAnonymous: Bool = true
        /// Users written to the password file. Default empty (no password file unless
        /// ``managedLogins``).
        public var users: [User] = []
        /// Keep a password file even without ``users`` and accept ``EmbeddedBroker/updateLogins(_:)``.
        /// Default false.
        public var managedLogins = false
        /// Load the dynamic security plugin with this admin client (created in the plugin's file at
        /// the first start when the file does not exist). Default nil (no plugin).
        public var dynamicSecurityAdmin: User? = nil
        /// Path of `mosquitto_dynamic_security.so`. Default nil: the usual library directories.
        public var dynamicSecurityPlugin: String? = nil
        /// Lines of the ACL file (`user`, `topic`, `pattern` lines, see mosquitto.conf(5)).
        /// Default nil (no ACL file: everyone may use every topic).
        public var aclRules: [String]? = nil
        /// `set_tcp_nodelay`. Default true.
        public var tcpNoDelay: Bool = true
        /// `max_queued_messages` per client. Default 10 000 (Mosquitto's default is 1000).
        public var maxQueuedMessages: Int = 10_000
        /// `max_inflight_messages` (for v3 clients, and the Receive Maximum advertised to
        /// publishers). Default 1000 (Mosquitto's default is 20).
        public var maxInflightMessages: Int = 1000
        /// Working directory for the configuration, password, ACL and log files. Default nil: a
        /// new temporary directory, removed when the broker object goes away.
        public var directory: String? = nil
        /// `persistence true` with `persistence_location` in ``directory``: retained messages,
        /// persistent sessions and their queued messages survive a restart of the broker (saved
        /// every `autosave_interval` 30 s and at a clean stop). Default false.
        public var persistence = false
        /// Extra configuration lines appended verbatim. Default empty.
        public var extraConfiguration: [String] = []
        /// Run the broker in a process group of its own (see ``ChildProcess/spawn``): a
        /// terminal's Ctrl-C then reaches only this process, which stops the broker last. Off
        /// by default, so a broker dies with its process group if its parent is SIGKILLed.
        public var ownProcessGroup = false
        /// How long ``start()`` waits for the port to accept connections. Default 10 s.
        public var startTimeout: Duration = .seconds(10)
        /// How long ``stop()`` waits after SIGTERM before SIGKILL. Default 5 s.
        public var stopTimeout: Duration = .seconds(5)

        public init() {}
    }

    private struct State {
        var process: ChildProcess?
        var port: Int
        var prepared = false
        /// Static users' password file lines, hashed once.
        var fixedEntries: [String] = []
        /// Logins managed through ``updateLogins(_:)``: user → `$7$…` hash.
        var logins: [String: String] = [:]
    }

    /// The settings the broker was created with.
    public let settings: Settings
    /// The working directory (configuration, password file, ACL, log).
    public let directory: String
    private let ownsDirectory: Bool
    private let state: Mutex<State>
    private let logger: Logger

    /// Prepares the working directory; nothing runs until ``start()``.
    public init(settings: Settings = Settings(), logger: Logger = Logger(label: "swarm.mqtt.broker")) throws {
        guard Self.ipv4Address(settings.host) != nil else {
            throw MQTTError.invalid("EmbeddedBroker host must be an IPv4 address, got \(settings.host)")
        }
        self.settings = settings
        self.logger = logger
        if let directory = settings.directory {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            self.directory = directory
            self.ownsDirectory = false
        } else {
            var template = Array("/tmp/swarm-mosquitto-XXXXXX".utf8CString)
            guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw MQTTError(code: .broker, message: "mkdtemp failed: \(String(cString: strerror(errno)))")
            }
            self.directory = String(cString: created)
            self.ownsDirectory = true
        }
        self.state = Mutex(State(port: settings.port))
    }

    deinit {
        if let process = state.withLock({ $0.process }) {
            process.killAndReapBlocking()
        }
        if ownsDirectory {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The listening port (0 until the first start when the settings asked for a free port).
    public var port: Int { state.withLock { $0.port } }

    /// The broker's address as `host`.
    public var host: String { settings.host }

    /// True while the broker process runs.
    public var isRunning: Bool { state.withLock { $0.process?.isRunning ?? false } }

    /// The process id while running.
    public var processID: Int32? { state.withLock { $0.process?.pid } }

    public var configurationPath: String { directory + "/mosquitto.conf" }
    public var logPath: String { directory + "/mosquitto.log" }
    var passwordPath: String { directory + "/passwd" }
    var aclPath: String { directory + "/acl" }
    /// The dynamic security plugin's file (with ``Settings/dynamicSecurityAdmin``).
    public var dynamicSecurityPath: String { directory + "/dynamic-security.json" }

    /// True when the broker has a password file.
    var hasPasswordFile: Bool { !settings.users.isEmpty || settings.managedLogins }

    /// The broker's log so far (empty if none).
    public func log() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Client settings pointing at this broker.
    public func clientSettings() -> MQTTClient.Settings {
        MQTTClient.Settings(host: settings.host, port: port)
    }

    /// The generated configuration for `port`.
    public func configuration(port: Int) -> String {
        var lines = [
            "# Generated by EmbeddedBroker (swarm-gateway). See config/mosquitto.conf for the annotated version.",
            "per_listener_settings false",
            "listener \(port) \(settings.host)",
            "allow_anonymous \(settings.allowAnonymous)",
            "set_tcp_nodelay \(settings.tcpNoDelay)",
            "max_queued_messages \(settings.maxQueuedMessages)",
            "max_inflight_messages \(settings.maxInflightMessages)",
            "persistence \(settings.persistence)",
            "log_dest file \(logPath)",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if settings.persistence {
            lines.append("persistence_location \(directory)/")
            lines.append("autosave_interval 30")
        }
        if hasPasswordFile { lines.append("password_file \(passwordPath)") }
        if settings.aclRules != nil { lines.append("acl_file \(aclPath)") }
        if settings.dynamicSecurityAdmin != nil, let plugin = try? Self.findDynamicSecurityPlugin(settings.dynamicSecurityPlugin) {
            lines.append("plugin \(plugin)")
            lines.append("plugin_opt_config_file \(dynamicSecurityPath)")
        }
        if geteuid() == 0 && getpwnam("mosquitto") == nil { lines.append("user root") }
        lines += settings.extraConfiguration
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Start and stop

    /// Starts the broker and waits until its port accepts TCP connections. When the port was
    /// chosen automatically and turns out to be taken, retries twice with a new one. Throws
    /// `.broker` with the end of the broker's log when it exits or does not become ready.
    public func start() async throws {
        if state.withLock({ $0.process?.isRunning ?? false }) {
            throw MQTTError(code: .broker, message: "broker already running on port \(port)")
        }
        try await prepareFilesOnce()
        let automaticPort = settings.port == 0
        var attempt = 0
        while true {
            attempt += 1
            let port = try state.withLock { state -> Int in
                if state.port == 0 { state.port = try Self.freePort(host: settings.host) }
                return state.port
            }
            do {
                try await launch(port: port)
                return
            } catch let error as MQTTError where automaticPort && attempt < 3 && error.message.contains("Address already in use") {
                logger.debug("embedded broker port taken, retrying", metadata: ["port": "\(port)"])
                state.withLock { $0.port = 0 }
            }
        }
    }

    private func launch(port: Int) async throws {
        try write(configuration(port: port), to: configurationPath)
        try handOverToBrokerUser()
        let executable = try Self.findExecutable(settings.executable)
        let logOffset = log().utf8.count
        let process = try ChildProcess.spawn(
            executable: executable,
            arguments: ["-c", configurationPath],
            outputPath: directory + "/mosquitto.stdout",
            ownProcessGroup: settings.ownProcessGroup
        )
        state.withLock { $0.process = process }

        let deadline = ContinuousClock.now + settings.startTimeout
        while true {
            if !process.isRunning {
                state.withLock { if $0.process === process { $0.process = nil } }
                throw MQTTError(code: .broker, message: "mosquitto exited during start-up: \(startupDiagnostics(since: logOffset))")
            }
            if Self.accepts(host: settings.host, port: port) {
                logger.debug("embedded broker ready", metadata: ["port": "\(port)", "pid": "\(process.pid)"])
                return
            }
            if ContinuousClock.now >= deadline {
                await process.terminate(grace: .seconds(1))
                state.withLock { if $0.process === process { $0.process = nil } }
                throw MQTTError(code: .broker, message: "mosquitto did not accept connections on \(settings.host):\(port) within \(settings.startTimeout): \(startupDiagnostics(since: logOffset))")
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Stops the broker: SIGTERM, then SIGKILL after ``Settings/stopTimeout``. Idempotent.
    /// The port and files are kept, so ``start()`` brings it back on the same port.
    public func stop() async {
        guard let process = state.withLock({ state -> ChildProcess? in
            defer { state.process = nil }
            return state.process
        }) else { return }
        await process.terminate(grace: settings.stopTimeout)
    }

    /// Kills the broker with SIGKILL (a crash, for tests). The port is kept for ``start()``.
    public func kill() async {
        guard let process = state.withLock({ state -> ChildProcess? in
            defer { state.process = nil }
            return state.process
        }) else { return }
        process.signal(SIGKILL)
        _ = await process.waitForExit(timeout: .seconds(5))
    }

    // MARK: Files

    private func prepareFilesOnce() async throws {
        if state.withLock({ $0.prepared }) { return }
        if let rules = settings.aclRules {
            try write(rules.joined(separator: "\n") + "\n", to: aclPath)
        }
        if settings.dynamicSecurityAdmin != nil {
            _ = try Self.findDynamicSecurityPlugin(settings.dynamicSecurityPlugin)
        }
        if let admin = settings.dynamicSecurityAdmin, !FileManager.default.fileExists(atPath: dynamicSecurityPath) {
            try write(Self.dynamicSecurityFile(admin: admin), to: dynamicSecurityPath)
        }
        if hasPasswordFile {
            let fixed = settings.users.map { MosquittoPassword.fileEntry(user: $0.name, password: $0.password) }
            let fixedNames = Set(settings.users.map(\.name))
            // Managed logins of an earlier run in the same directory.
            var kept: [String: String] = [:]
            if settings.managedLogins, let text = try? String(contentsOfFile: passwordPath, encoding: .utf8) {
                for line in text.split(separator: "\n") {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    let user = String(line[..<colon])
                    if !fixedNames.contains(user) { kept[user] = String(line[line.index(after: colon)...]) }
                }
            }
            state.withLock {
                $0.fixedEntries = fixed
                $0.logins = kept
            }
            try writePasswordFile()
        }
        state.withLock { $0.prepared = true }
    }

    /// Writes the password file (fixed users, then managed logins sorted by name) atomically.
    private func writePasswordFile() throws {
        let text = state.withLock { state in
            (state.fixedEntries + state.logins.keys.sorted().map { "\($0):\(state.logins[$0]!)" }).joined(separator: "\n") + "\n"
        }
        let temporary = passwordPath + ".new"
        try write(text, to: temporary)
        try handOverToBrokerUser()
        guard rename(temporary, passwordPath) == 0 else {
            throw MQTTError(code: .broker, message: "rename \(temporary): \(String(cString: strerror(errno)))")
        }
    }

    // MARK: Managed logins

    /// The managed logins (user names), sorted.
    public var managedLogins: [String] { state.withLock { $0.logins.keys.sorted() } }

    /// Adds, changes (user → `$7$…` hash, ``MosquittoPassword/hash(_:salt:iterations:)``) or
    /// removes (nil) managed logins, rewrites the password file and, while the broker runs, reloads
    /// it and waits until the broker has (``reload(timeout:)``): a new login can connect, a removed
    /// one is disconnected. Nothing changes and nothing reloads when every entry is already so.
    /// Throws for a fixed user's name (``Settings/users``), a name with `:`, or without
    /// ``Settings/managedLogins``.
    public func updateLogins(_ changes: [(user: String, hash: String?)]) async throws {
        guard settings.managedLogins else { throw MQTTError.invalid("updateLogins needs managedLogins") }
        let fixed = Set(settings.users.map(\.name))
        for change in changes {
            guard !fixed.contains(change.user) else { throw MQTTError.invalid("\(change.user) is a fixed login of this broker") }
            guard !change.user.isEmpty, !change.user.contains(":"), !change.user.contains("\n") else {
                throw MQTTError.invalid("\"\(change.user)\" cannot be a password file user name (no ':' or line breaks)")
            }
        }
        try await prepareFilesOnce()
        let changed = state.withLock { state -> Bool in
            var changed = false
            for change in changes where state.logins[change.user] != change.hash {
                state.logins[change.user] = change.hash
                changed = true
            }
            return changed
        }
        guard changed else { return }
        try writePasswordFile()
        if isRunning { try await reload() }
    }

    /// Sends SIGHUP (Mosquitto re-reads its password and ACL files and re-checks every connected
    /// client) and waits until the reload is over.
    ///
    /// - Mosquitto notices the signal only when its event loop wakes (its `epoll_wait` is not
    ///   interrupted; measured: 65–100 ms later), so a TCP connection to its listener is opened
    ///   right after the signal to wake it (``openConnection()``; closed afterwards, never used).
    /// - It logs `Reloading config.` when the reload starts, and reloads synchronously in its
    ///   single thread: a CONNECT on a new connection that it answers after that line was handled
    ///   after the reload (``loopRoundTrip(until:)``).
    /// - Waiting for the line alone was not enough: Mosquitto clears its reload flag when a reload
    ///   *ends*, so a SIGHUP that arrives during a reload is lost (seen under a provisioning burst:
    ///   1 in 15 batches timed out). For the same reason a SIGHUP not answered within 500 ms
    ///   (someone else's reload swallowed it) is sent again.
    ///
    /// Throws when the broker does not run or does not reload within `timeout`.
    public func reload(timeout: Duration = .seconds(15)) async throws {
        guard let process = state.withLock({ $0.process }), process.isRunning else {
            throw MQTTError(code: .broker, message: "reload: the broker is not running")
        }
        let marker = Array("Reloading config.".utf8)
        // Taken after the files were written: a reload that logs its start after this reads them.
        let offset = logSize()
        var wakers: [Int32] = []
        defer { for fd in wakers { close(fd) } }
        func signal() {
            process.signal(SIGHUP)
            if let fd = openConnection() { wakers.append(fd) }
        }
        signal()
        var signalled = ContinuousClock.now
        let deadline = signalled + timeout
        while ContinuousClock.now < deadline {
            if logContains(marker, after: offset) {
                try await loopRoundTrip(until: deadline)
                return
            }
            if ContinuousClock.now - signalled > .milliseconds(500) {
                signal()
                signalled = .now
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
        throw MQTTError(code: .broker, message: "mosquitto did not reload its configuration within \(timeout)")
    }

    /// A non-blocking TCP connection to the broker's listener being made (nil when the host is a
    /// name rather than an address, or the socket cannot be made).
    private func openConnection() -> Int32? {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        guard inet_pton(AF_INET, settings.host, &address.sin_addr) == 1 else { return nil }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 || errno == EINPROGRESS else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Opens a TCP connection to the broker, sends an MQTT 3.1.1 CONNECT (no credentials, a
    /// random client id) and waits for any answer (the CONNACK, or the close that follows a
    /// refusal): proof that the broker's event loop ran after whatever it was doing when the
    /// connection was made. Non-blocking, polled every millisecond until `deadline`. Without an
    /// address to connect to (a host name), returns at once.
    func loopRoundTrip(until deadline: ContinuousClock.Instant) async throws {
        guard let fd = openConnection() else { return }
        defer { close(fd) }
        let clientID = Array("swarm-reload-probe-\(UInt32.random(in: 0...UInt32.max))".utf8)
        var packet: [UInt8] = [0x10, UInt8(10 + 2 + clientID.count), 0, 4]
        packet += Array("MQTT".utf8) + [4, 0x02, 0, 10, 0, UInt8(clientID.count)] + clientID
        var sent = 0
        var buffer = [UInt8](repeating: 0, count: 16)
        while ContinuousClock.now < deadline {
            if sent < packet.count {
                let count = packet[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if count > 0 { sent += count } else if errno != EAGAIN && errno != EINPROGRESS && errno != ENOTCONN {
                    throw MQTTError(code: .broker, message: "reload probe: send failed, errno \(errno)")
                }
            } else {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count >= 0 || errno == ECONNRESET { return }  // the CONNACK, or the close after a refusal
                if errno != EAGAIN { throw MQTTError(code: .broker, message: "reload probe: recv failed, errno \(errno)") }
            }
            try? await Task.sleep(for: .milliseconds(1))
        }
        throw MQTTError(code: .broker, message: "reload probe: no answer from the broker")
    }

    private func logSize() -> Int {
        var info = stat()
        return stat(logPath, &info) == 0 ? Int(info.st_size) : 0
    }

    /// True when the log holds `marker` after byte `offset` (reads only the new part).
    private func logContains(_ marker: [UInt8], after offset: Int) -> Bool {
        let fd = open(logPath, O_RDONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var position = off_t(offset)
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, position) }
            guard count > 0 else { break }
            bytes.append(contentsOf: chunk[0..<count])
            position += off_t(count)
        }
        guard bytes.count >= marker.count else { return false }
        for start in 0...(bytes.count - marker.count) where bytes[start] == marker[0] && bytes[start..<(start + marker.count)].elementsEqual(marker) {
            return true
        }
        return false
    }

    /// The plugin's initial file: the admin client with the plugin's `admin` role (its control
    /// topic only), nothing else allowed by default (the ACL file decides for everyone else).
    static func dynamicSecurityFile(admin: Settings.User) -> String {
        let password = MosquittoPassword.dynamicSecurityFields(password: admin.password)
        let control = "$CONTROL/dynamic-security/#"
        return """
            {"clients":[{"username":\(jsonString(admin.name)),"textName":"Swarm Gateway admin","password":"\(password.hash)","salt":"\(password.salt)","iterations":\(password.iterations),"roles":[{"rolename":"admin"}]}],\
            "roles":[{"rolename":"admin","acls":[{"acltype":"publishClientSend","topic":"\(control)","allow":true},{"acltype":"publishClientReceive","topic":"\(control)","allow":true},{"acltype":"subscribePattern","topic":"\(control)","allow":true}]}],\
            "groups":[],"defaultACLAccess":{"publishClientSend":false,"publishClientReceive":false,"subscribe":false,"unsubscribe":true}}

            """
    }

    private static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// `mosquitto_dynamic_security.so`: the given path, else the usual library directories.
    static func findDynamicSecurityPlugin(_ path: String?) throws -> String {
        let candidates = path.map { [$0] } ?? [
            "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib", "/usr/lib64",
        ].map { $0 + "/mosquitto_dynamic_security.so" }
        for candidate in candidates where access(candidate, R_OK) == 0 { return candidate }
        throw MQTTError(code: .broker, message: "mosquitto_dynamic_security.so not found (\(candidates.joined(separator: ", "))); it ships with Debian's mosquitto package")
    }

    private func write(_ text: String, to path: String) throws {
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw MQTTError(code: .broker, message: "cannot write \(path): \(error)")
        }
    }

    /// As root, gives the working directory and its files to the `mosquitto` user, which the
    /// broker switches to before opening them.
    private func handOverToBrokerUser() throws {
        guard geteuid() == 0, let user = getpwnam("mosquitto") else { return }
        let uid = user.pointee.pw_uid
        let gid = user.pointee.pw_gid
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for path in [directory] + files.map({ directory + "/" + $0 }) where chown(path, uid, gid) != 0 {
            throw MQTTError(code: .broker, message: "chown \(path) to mosquitto failed: \(String(cString: strerror(errno)))")
        }
    }

    private func startupDiagnostics(since logOffset: Int) -> String {
        let logText = String(log().utf8.dropFirst(logOffset)).map { String($0) } ?? ""
        let stdout = (try? String(contentsOfFile: directory + "/mosquitto.stdout", encoding: .utf8)) ?? ""
        let text = (stdout + logText).split(separator: "\n").suffix(8).joined(separator: " | ")
        return text.isEmpty ? "(no output)" : text
    }

    // MARK: Helpers

    /// Resolves a program name to an absolute path (sbin directories first, then PATH).
    static func findExecutable(_ name: String?) throws -> String {
        let program = name ?? "mosquitto"
        if program.hasPrefix("/") {
            guard access(program, X_OK) == 0 else { throw MQTTError(code: .broker, message: "\(program) is not executable") }
            return program
        }
        var directories = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"]
        if let path = getenv("PATH") {
            directories += String(cString: path).split(separator: ":").map(String.init)
        }
        for directory in directories where access(directory + "/" + program, X_OK) == 0 {
            return directory + "/" + program
        }
        throw MQTTError(code: .broker, message: "\(program) not found; install it with scripts/install-deps.sh (Debian package mosquitto / mosquitto-clients)")
    }

    static func ipv4Address(_ host: String) -> in_addr? {
        var address = in_addr()
        let literal = host == "localhost" ? "127.0.0.1" : host
        return inet_pton(AF_INET, literal, &address) == 1 ? address : nil
    }

    private static func socketAddress(host: String, port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = ipv4Address(host) ?? in_addr()
        return address
    }

    /// A port that was free on `host` a moment ago (bind to port 0, read it back, close).
    static func freePort(host: String) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MQTTError(code: .broker, message: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = socketAddress(host: host, port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw MQTTError(code: .broker, message: "bind: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw MQTTError(code: .broker, message: "getsockname: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// True if a TCP connection to host:port succeeds now (loopback: answers at once).
    static func accepts(host: String, port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = socketAddress(host: host, port: port)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return rc == 0
    }
}
