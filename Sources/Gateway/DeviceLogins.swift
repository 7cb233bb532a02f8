import MQTT
import Synchronization

/// Creates and removes devices' broker logins (user name = device id, so the strict ACL's `%u`
/// rules give each device exactly its own topics). The gateway calls it for
/// `PUT /v1/devices/{id}` with a password and for `DELETE /v1/devices/{id}`.
///
/// Implementations: ``EmbeddedBrokerLogins`` (the embedded broker's password file, reloaded on
/// SIGHUP) and ``DynamicSecurityLogins`` (an external Mosquitto's dynamic security plugin over
/// `$CONTROL/dynamic-security/v1`).
public protocol DeviceLoginManager: Sendable {
    /// Creates the login of device `id`, or sets its new password. When this returns the device
    /// can connect with it.
    func setPassword(_ password: String, for id: String) async throws
    /// Removes the login of device `id` (no error when it has none) and disconnects a client that
    /// is logged in with it.
    func removeLogin(_ id: String) async throws
    /// User names that cannot be device logins (the gateway's own, the admin's).
    var reservedNames: Set<String> { get }
    /// Called by ``DeviceGateway/start()`` before it connects (default: nothing).
    func start() async throws
    /// Called by ``DeviceGateway/shutdown()`` (default: nothing).
    func shutdown() async
}

extension DeviceLoginManager {
    public func start() async throws {}
    public func shutdown() async {}
}

/// Device logins in an ``EmbeddedBroker``'s password file: hashed here (PBKDF2-SHA512, about
/// 0.1 ms of CPU each), written with the fixed users, and made effective by one SIGHUP reload
/// (``EmbeddedBroker/updateLogins(_:)``). Concurrent changes are coalesced: while one reload runs,
/// the next changes queue up and go together in the next, so a burst of provisioning costs one
/// file write and one reload per batch, not per device.
public final class EmbeddedBrokerLogins: DeviceLoginManager {
    private struct Pending {
        var changes: [(user: String, hash: String?)] = []
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var flushing = false
    }

    /// The broker whose password file holds the logins (``EmbeddedBroker/Settings/managedLogins``).
    public let broker: EmbeddedBroker
    public let reservedNames: Set<String>
    private let pending = Mutex(Pending())

    public init(broker: EmbeddedBroker) {
        self.broker = broker
        self.reservedNames = Set(broker.settings.users.map(\.name))
    }

    public func setPassword(_ password: String, for id: String) async throws {
        try await apply((id, MosquittoPassword.hash(password)))
    }

    public func removeLogin(_ id: String) async throws {
        try await apply((id, nil))
    }

    private func apply(_ change: (user: String, hash: String?)) async throws {
        guard !reservedNames.contains(change.user) else { throw GatewayError.invalidBody("'\(change.user)' is a reserved login name") }
        guard !change.user.contains(":") else {
            throw GatewayError.invalidBody("device id '\(change.user)' contains ':', which a password file user name cannot")
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start = pending.withLock { state -> Bool in
                state.changes.append(change)
                state.waiters.append(continuation)
                guard !state.flushing else { return false }
                state.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Writes and reloads batch after batch until nothing is pending.
    private func flush() async {
        while true {
            let batch = pending.withLock { state -> (changes: [(user: String, hash: String?)], waiters: [CheckedContinuation<Void, any Error>])? in
                guard !state.changes.isEmpty else {
                    state.flushing = false
                    return nil
                }
                defer {
                    state.changes = []
                    state.waiters = []
                }
                return (state.changes, state.waiters)
            }
            guard let batch else { return }
            // The last change of a user in the batch wins.
            var last: [String: String?] = [:]
            var order: [String] = []
            for change in batch.changes {
                if last[change.user] == nil { order.append(change.user) }
                last[change.user] = .some(change.hash)
            }
            let result: Result<Void, any Error>
            do {
                try await broker.updateLogins(order.map { ($0, last[$0]!) })
                result = .success(())
            } catch {
                result = .failure(GatewayError.brokerUnavailable("device logins not updated: \(error)"))
            }
            for waiter in batch.waiters { waiter.resume(with: result) }
        }
    }
}
