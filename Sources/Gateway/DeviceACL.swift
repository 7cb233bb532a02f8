/// The strict device ACL of the device contract, as Mosquitto `acl_file` lines: the rules of
/// `config/mosquitto.acl.example` for a given topic prefix (the embedded broker runs with these;
/// a test checks that the default matches the shipped file line for line).
///
/// - the gateway user reads and writes `{prefix}/#` and `{eventsPrefix}/#` (the event stream on
///   the broker, ``EventSettings/toBroker``: nobody else may write there) and reads `$SYS/#`;
/// - the dynamic security admin user (when named) reads and writes `$CONTROL/dynamic-security/#`;
/// - every device, logged in with its id as the user name (`%u`), may **write** only its `status`,
///   `telemetry`, `state/reported` and `replies/#`, and **read** only its `state/desired`,
///   `commands/+` and `down`.
public enum DeviceACL {
    /// The default user name of the gateway nodes in the shipped ACL file.
    public static let defaultGatewayUser = "gateway"
    /// The default dynamic-security admin user name in the shipped ACL file.
    public static let defaultAdminUser = "swarm-admin"

    /// The rule lines (no comments) for `topics`, the gateway user and, when not nil, the
    /// dynamic-security admin user.
    public static func rules(
        topics: DeviceTopics = DeviceTopics(), gatewayUser: String = defaultGatewayUser, adminUser: String? = defaultAdminUser,
        eventsPrefix: String = "events"
    ) -> [String] {
        let prefix = topics.prefix
        var lines = [
            "user \(gatewayUser)",
            "topic readwrite \(prefix)/#",
            "topic readwrite \(eventsPrefix)/#",
            "topic read $SYS/#",
        ]
        if let adminUser {
            lines += ["user \(adminUser)", "topic readwrite $CONTROL/dynamic-security/#"]
        }
        lines += ["status", "telemetry", "state/reported", "replies/#"].map { "pattern write \(prefix)/%u/\($0)" }
        lines += ["state/desired", "commands/+", "down"].map { "pattern read \(prefix)/%u/\($0)" }
        return lines
    }
}
