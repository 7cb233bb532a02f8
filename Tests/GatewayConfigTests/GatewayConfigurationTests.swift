import Foundation
import GatewayConfig
import Testing

@Suite("Gateway configuration")
struct GatewayConfigurationTests {
    /// Loads, returning the error's description on failure.
    func loadError(
        file: String? = nil, environment: [String: String] = [:], overrides: [String: String] = [:], listOverrides: [String: [String]] = [:]
    ) -> GatewayConfigError? {
        do {
            _ = try GatewayConfiguration.load(file: file, environment: environment, overrides: overrides, listOverrides: listOverrides)
            return nil
        } catch {
            return error
        }
    }

    func withFile<T>(_ json: String, _ body: (String) throws -> T) throws -> T {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gw-\(UInt64.random(in: 0...UInt64.max)).json").path
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    @Test("defaults: single node with the embedded broker")
    func defaults() throws {
        let configuration = try GatewayConfiguration.load()
        #expect(configuration.clusterListen == HostPort(host: "127.0.0.1", port: 7946))
        #expect(configuration.httpListen == HostPort(host: "127.0.0.1", port: 8080))
        #expect(configuration.brokers.isEmpty)
        #expect(configuration.embeddedBroker)
        #expect(configuration.topicPrefix == "devices")
        #expect(configuration.shareGroup == "swarm-gateway")
        #expect(configuration.heartbeatInterval == .milliseconds(200))
        #expect(configuration.failureTimeout == .milliseconds(1500))
        #expect(configuration.drainTimeout == .seconds(30))
        #expect(configuration.logLevel == .info)
        #expect(configuration.maxPayloadBytes == 65_536)
        #expect(configuration.ingressLaneCapacity == 1024)
        #expect(!configuration.nodeName.isEmpty)
    }

    @Test("precedence: defaults < file < environment < flags")
    func precedence() throws {
        try withFile(#"{"nodeName":"from-file","httpListen":"127.0.0.1:9001","logLevel":"debug","topicPrefix":"filepfx"}"#) { path in
            let configuration = try GatewayConfiguration.load(
                file: path,
                environment: ["SWARM_GATEWAY_NODE_NAME": "from-env", "SWARM_GATEWAY_HTTP_LISTEN": "127.0.0.1:9002", "PATH": "/bin"],
                overrides: ["--node-name": "from-flag"])
            #expect(configuration.nodeName == "from-flag")
            #expect(configuration.httpListen.port == 9002)
            #expect(configuration.logLevel == .debug)
            #expect(configuration.topicPrefix == "filepfx")
            #expect(configuration.drainTimeout == .seconds(30))
        }
        // The file can come from SWARM_GATEWAY_CONFIG.
        try withFile(#"{"nodeName":"via-env-file"}"#) { path in
            let configuration = try GatewayConfiguration.load(environment: ["SWARM_GATEWAY_CONFIG": path])
            #expect(configuration.nodeName == "via-env-file")
        }
    }

    @Test("lists and brokers from each source")
    func listsAndBrokers() throws {
        let configuration = try GatewayConfiguration.load(
            environment: ["SWARM_GATEWAY_SEEDS": "10.0.0.2:7946, 10.0.0.3:7946", "SWARM_GATEWAY_CLUSTER_SECRET": "0123456789abcdef!"],
            overrides: ["brokers": "mqtt://gw:p%40ss@b1:1884,mqtts://b2", "deny-nodes": "/^test-.*/,old-node"])
        #expect(configuration.seeds == [HostPort(host: "10.0.0.2", port: 7946), HostPort(host: "10.0.0.3", port: 7946)])
        #expect(configuration.brokers.count == 2)
        #expect(configuration.brokers[0] == BrokerEndpoint(host: "b1", port: 1884, username: "gw", password: Secret("p@ss")))
        #expect(configuration.brokers[1] == BrokerEndpoint(tls: true, host: "b2", port: 8883))
        #expect(!configuration.embeddedBroker)
        #expect(configuration.denyNodes == ["/^test-.*/", "old-node"])
    }

    @Test("repeatable flags keep commas inside values")
    func repeatableFlags() throws {
        let configuration = try GatewayConfiguration.load(
            listOverrides: ["--broker": ["mqtt://gw:a,b@h1:1883", "mqtt://gw:c@h2:1884"]])
        #expect(configuration.brokers.map(\.password) == [Secret("a,b"), Secret("c")])
        #expect(loadError(listOverrides: ["node-name": ["a", "b"]])?.message == "expected a string, got an array")
        #expect(loadError(overrides: ["brokers": "mqtt://h"], listOverrides: ["brokers": ["mqtt://h"]])?.key == "brokers")
    }

    @Test("errors name the key and the source")
    func errorsNameKeyAndSource() throws {
        #expect(loadError(overrides: ["cluster-listen": "127.0.0.1:99999"])?.description
            == #"configuration error: clusterListen (from flag --cluster-listen): "127.0.0.1:99999" is not HOST:PORT: port 99999 is out of range 0-65535"#)
        #expect(loadError(environment: ["SWARM_GATEWAY_HTTP_LISTEN": "localhost"])?.description
            == #"configuration error: httpListen (from environment variable SWARM_GATEWAY_HTTP_LISTEN): "localhost" is not HOST:PORT: missing :PORT"#)
        let unknownEnv = loadError(environment: ["SWARM_GATEWAY_NODE_NAEM": "x"])
        #expect(unknownEnv?.key == "SWARM_GATEWAY_NODE_NAEM")
        #expect(unknownEnv?.description.contains(#"did you mean "SWARM_GATEWAY_NODE_NAME""#) == true)
        #expect(loadError(overrides: ["--colour": "red"])?.key == "--colour")
        try withFile(#"{"nodeName":"a","sedes":["h:1"]}"#) { path in
            let error = try #require(loadError(file: path))
            #expect(error.key == "sedes")
            #expect(error.source == .file(path))
            #expect(error.description.contains(#"unknown key; did you mean "seeds"?"#))
        }
        try withFile(#"{"maxPayloadBytes":"big"}"#) { path in
            #expect(loadError(file: path)?.description == "configuration error: maxPayloadBytes (from config file \(path)): expected an integer, got \"big\"")
        }
        #expect(loadError(environment: ["SWARM_GATEWAY_INGRESS_LANE_CAPACITY": "8"])?.message == "8 is out of range 16-1048576")
        #expect(try GatewayConfiguration.load(file: nil, environment: [:], overrides: ["--ingress-lane-capacity": "4096"], listOverrides: [:]).ingressLaneCapacity == 4096)
        try withFile(#"{"seeds":"h:1"}"#) { path in
            // A JSON string is taken as a comma-separated list too; an object is not.
            #expect(loadError(file: path)?.key == "clusterSecret")
        }
        try withFile(#"{"seeds":{"a":1}}"#) { path in
            #expect(loadError(file: path)?.message == "expected an array of strings, got an object")
        }
        try withFile(#"{"heartbeatInterval":200}"#) { path in
            #expect(loadError(file: path)?.message.contains(#"expected a duration string such as "1500ms""#) == true)
        }
        try withFile("[1,2]") { path in
            #expect(loadError(file: path)?.message == "the file must hold one JSON object, not an array")
        }
        try withFile("{nope") { path in
            #expect(loadError(file: path)?.message.hasPrefix("not valid JSON") == true)
        }
        #expect(loadError(file: "/nonexistent/gw.json")?.message == "cannot read the file (missing or not readable)")
        #expect(loadError(overrides: ["brokers": "http://h:1"])?.message.contains("entry 1: \"http://h:1\" is not a broker URL: the scheme must be mqtt:// or mqtts://") == true)
        #expect(loadError(overrides: ["brokers": "mqtt://h:0"])?.message.contains("port 0 is out of range 1-65535") == true)
        #expect(loadError(overrides: ["log-level": "loud"])?.message.hasPrefix(#""loud" is not a log level"#) == true)
        #expect(loadError(overrides: ["drain-timeout": "10 parsecs"])?.key == "drainTimeout")
        #expect(loadError(overrides: ["topic-prefix": "a/b"])?.key == "topicPrefix")
        #expect(loadError(overrides: ["share-group": "g+"])?.key == "shareGroup")
        #expect(loadError(overrides: ["node-name": "bad name"])?.key == "nodeName")
        #expect(loadError(overrides: ["max-payload-bytes": "0"])?.message == "0 is out of range 1-268435455")
        #expect(loadError(overrides: ["embedded-broker": "maybe"])?.message == #"expected true or false, got "maybe""#)
        #expect(loadError(overrides: ["allow-nodes": "/[/"])?.message == #""/[/" is not a valid regular expression"#)
        #expect(loadError(overrides: ["broker-ca-file": "/nonexistent/ca.pem"])?.key == "brokerCAFile")
    }

    @Test("rules across keys: secret with seeds, timeouts, broker choice, port clashes")
    func crossKeyRules() {
        let noSecret = loadError(overrides: ["seeds": "127.0.0.1:7102"])
        #expect(noSecret?.key == "clusterSecret")
        #expect(noSecret?.message == "is required when seeds is set (from flag --seeds): peers authenticate with it")
        #expect(loadError(environment: ["SWARM_GATEWAY_DNS_DISCOVERY": "gw.svc:7946"])?.key == "clusterSecret")
        #expect(loadError(overrides: ["seeds": "127.0.0.1:7102", "cluster-secret": ""])?.message == "must not be empty")
        #expect(loadError(overrides: ["cluster-secret": "short"])?.message == "must be at least 16 bytes (got 5)")
        #expect(loadError(overrides: ["failure-timeout": "100ms"])?.description
            == "configuration error: failureTimeout (from flag --failure-timeout): 100ms must be longer than heartbeatInterval 200ms")
        #expect(loadError(overrides: ["embedded-broker": "false"])?.key == "brokers")
        #expect(loadError(overrides: ["embedded-broker": "true", "brokers": "mqtt://h"])?.key == "embeddedBroker")
        #expect(loadError(overrides: ["http-listen": "127.0.0.1:7946"])?.key == "httpListen")
        #expect(loadError(overrides: ["embedded-broker-port": "8080"])?.key == "embeddedBrokerPort")
        #expect(loadError(overrides: ["api-token": "has space in it"])?.key == "apiToken")
        // The dynamic-security admin login: both parts, and only for external brokers.
        let halfAdmin = loadError(overrides: ["brokers": "mqtt://h", "broker-admin-username": "swarm-admin"])
        #expect(halfAdmin?.description
            == "configuration error: brokerAdminPassword: is required when brokerAdminUsername is set (from flag --broker-admin-username): the admin login takes both")
        #expect(loadError(environment: ["SWARM_GATEWAY_BROKER_ADMIN_PASSWORD": "pw"], overrides: ["brokers": "mqtt://h"])?.key == "brokerAdminUsername")
        #expect(loadError(overrides: ["broker-admin-username": "swarm-admin", "broker-admin-password": "pw"])?.key == "brokerAdminUsername")
        #expect(loadError(overrides: ["brokers": "mqtt://h", "broker-admin-username": "a b", "broker-admin-password": "pw"])?.key == "brokerAdminUsername")
        let admin = try? GatewayConfiguration.load(overrides: ["brokers": "mqtt://h", "broker-admin-username": "swarm-admin", "broker-admin-password": "admin-pw"])
        #expect(admin?.brokerAdminUsername == "swarm-admin" && admin?.brokerAdminPassword?.value == "admin-pw")
        #expect(admin?.description.contains("admin-pw") == false)
    }

    @Test("secrets never appear in description")
    func secretsRedacted() throws {
        let configuration = try GatewayConfiguration.load(overrides: [
            "cluster-secret": "super-secret-cluster-value", "api-token": "token-value-xyz",
            "brokers": "mqtt://gw:broker-password@127.0.0.1:1883", "seeds": "127.0.0.1:7102",
        ])
        let text = configuration.description + "\(configuration)" + String(reflecting: configuration.clusterSecret!)
        for secret in ["super-secret-cluster-value", "token-value-xyz", "broker-password"] {
            #expect(!text.contains(secret))
        }
        #expect(text.contains("mqtt://gw:***@127.0.0.1:1883"))
        #expect(configuration.clusterSecret?.value == "super-secret-cluster-value")
        // Nor in errors.
        let error = loadError(overrides: ["brokers": "mqtt://gw:broker-password@h:99999"])
        #expect(error != nil)
        #expect(error?.description.contains("broker-password") == false)
    }

    @Test("store: sqlite by default in ./data/<node>, PostgreSQL URLs parsed and redacted, write-behind window bounded")
    func storeKeys() throws {
        let defaults = try GatewayConfiguration.load(overrides: ["node-name": "gw-7"])
        #expect(defaults.store == .sqlite)
        #expect(defaults.effectiveDataDirectory == "./data/gw-7")
        #expect(defaults.writeBehindInterval == .milliseconds(500))
        let postgres = try GatewayConfiguration.load(
            environment: ["SWARM_GATEWAY_STORE": "postgresql://gw%40x:s3cr%2Ft@db.example:6543/twins?sslmode=require"],
            overrides: ["data-dir": "/tmp/gw-data", "write-behind-interval": "1s"])
        #expect(postgres.store == .postgresql(PostgresEndpoint(host: "db.example", port: 6543, username: "gw@x", password: Secret("s3cr/t"), database: "twins", sslMode: "require")))
        #expect(postgres.effectiveDataDirectory == "/tmp/gw-data")
        #expect(postgres.writeBehindInterval == .seconds(1))
        #expect(!postgres.description.contains("s3cr"))
        #expect(postgres.description.contains("store: postgresql://gw@x:***@db.example:6543/twins?sslmode=require"))
        let defaultPort = try GatewayConfiguration.load(overrides: ["store": "postgres://gw@127.0.0.1/db"])
        #expect(defaultPort.store == .postgresql(PostgresEndpoint(host: "127.0.0.1", port: 5432, username: "gw", database: "db")))
        #expect(loadError(overrides: ["store": "mysql://a@b/c"])?.message.contains("is not a store") == true)
        #expect(loadError(overrides: ["store": "postgresql://gw:pw@host:5432"])?.message.contains("missing /DATABASE") == true)
        #expect(loadError(overrides: ["store": "postgresql://gw:topsecret@host/db?sslmode=bogus"])?.message.contains("topsecret") == false)
        #expect(loadError(overrides: ["write-behind-interval": "2s"])?.message == "2s is out of range 10ms-1s")
        #expect(loadError(overrides: ["write-behind-interval": "5ms"])?.key == "writeBehindInterval")
    }

    @Test("every key has a distinct env var and flag, and is documented in docs/configuration.md")
    func keysDocumented() throws {
        let keys = GatewayConfiguration.keys
        #expect(Set(keys.map(\.environmentVariable)).count == keys.count)
        #expect(Set(keys.map(\.flag)).count == keys.count)
        #expect(keys.first { $0.name == "brokerCAFile" }?.environmentVariable == "SWARM_GATEWAY_BROKER_CA_FILE")
        #expect(keys.first { $0.name == "brokerCAFile" }?.flag == "--broker-ca-file")
        #expect(keys.first { $0.name == "clusterListen" }?.flag == "--cluster-listen")
        #expect(keys.first { $0.name == "brokers" }?.flag == "--broker")
        let docs = try String(contentsOfFile: Self.repoRoot + "/docs/configuration.md", encoding: .utf8)
        for key in keys {
            #expect(docs.contains("`\(key.name)`"), "\(key.name) is not documented")
            #expect(docs.contains("`\(key.environmentVariable)`"), "\(key.environmentVariable) is not documented")
            #expect(docs.contains("`\(key.flag)`"), "\(key.flag) is not documented")
        }
    }

    @Test("every example config in config/ loads")
    func exampleConfigsLoad() throws {
        let root = Self.repoRoot + "/config"
        let files = FileManager.default.enumerator(atPath: root)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".json") }.sorted() ?? []
        #expect(files.count >= 4)
        // The TLS examples name certificate files made by scripts/cluster-tls-certs.sh; stand-ins
        // (readable files) take their place here, the rest of each file is checked as is.
        let standIn = FileManager.default.temporaryDirectory.appendingPathComponent("gw-tls-\(UInt64.random(in: 0...UInt64.max)).pem").path
        try Data("stand-in".utf8).write(to: URL(fileURLWithPath: standIn))
        defer { try? FileManager.default.removeItem(atPath: standIn) }
        let tlsStandIns = ["CERTIFICATE", "KEY", "CA"].reduce(into: [String: String]()) { $0["SWARM_GATEWAY_CLUSTER_TLS_\($1)"] = standIn }
        for file in files {
            do {
                _ = try GatewayConfiguration.load(file: root + "/" + file, environment: file.contains("tls") ? tlsStandIns : [:])
            } catch {
                Issue.record("\(file): \(error)")
            }
        }
        let single = try GatewayConfiguration.load(file: root + "/node-1.json")
        #expect(single.embeddedBroker && single.seeds.isEmpty)
        let nodes = try (1...3).map { try GatewayConfiguration.load(file: root + "/cluster-3/gw-\($0).json") }
        #expect(Set(nodes.map(\.nodeName)).count == 3)
        #expect(Set(nodes.map(\.clusterListen)).count == 3)
        #expect(Set(nodes.map(\.httpListen)).count == 3)
        #expect(Set(nodes.map { $0.clusterSecret?.value }).count == 1)
        for node in nodes {
            // Each node seeds from the other two.
            #expect(Set(node.seeds + [node.clusterListen]) == Set(nodes.map(\.clusterListen)))
            #expect(!node.embeddedBroker)
        }
    }

    @Test("cluster TLS: all three files or none, each must be a readable file, named in errors")
    func clusterTLSKeys() throws {
        let keys = GatewayConfiguration.keys
        #expect(keys.first { $0.name == "clusterTLSCA" }?.environmentVariable == "SWARM_GATEWAY_CLUSTER_TLS_CA")
        #expect(keys.first { $0.name == "clusterTLSCA" }?.flag == "--cluster-tls-ca")
        #expect(keys.first { $0.name == "clusterTLSCertificate" }?.flag == "--cluster-tls-certificate")
        #expect(keys.first { $0.name == "clusterTLSKey" }?.environmentVariable == "SWARM_GATEWAY_CLUSTER_TLS_KEY")
        let none = try GatewayConfiguration.load()
        #expect(none.clusterTLSCertificate == nil && none.clusterTLSKey == nil && none.clusterTLSCA == nil)
        try withFile("-----BEGIN CERTIFICATE-----") { path in
            let all = try GatewayConfiguration.load(
                environment: ["SWARM_GATEWAY_CLUSTER_TLS_KEY": path],
                overrides: ["cluster-tls-certificate": path, "clusterTLSCA": path])
            #expect(all.clusterTLSCertificate == path && all.clusterTLSKey == path && all.clusterTLSCA == path)
            #expect(all.description.contains("clusterTLSKey: \(path)"))
            let missingKey = loadError(overrides: ["cluster-tls-certificate": path, "cluster-tls-ca": path])
            #expect(missingKey?.description
                == "configuration error: clusterTLSKey: is required when clusterTLSCertificate is set (from flag --cluster-tls-certificate): cluster TLS takes a certificate, its key and the cluster CA")
            let onlyCA = loadError(environment: ["SWARM_GATEWAY_CLUSTER_TLS_CA": path])
            #expect(onlyCA?.key == "clusterTLSCertificate")
            #expect(onlyCA?.message.contains("(from environment variable SWARM_GATEWAY_CLUSTER_TLS_CA)") == true)
            let gone = loadError(overrides: ["cluster-tls-certificate": path, "cluster-tls-key": "/nonexistent/node.key", "cluster-tls-ca": path])
            #expect(gone?.description
                == "configuration error: clusterTLSKey (from flag --cluster-tls-key): \"/nonexistent/node.key\" does not exist or is not readable")
            let directory = FileManager.default.temporaryDirectory.path
            #expect(loadError(overrides: ["cluster-tls-ca": directory])?.message == "\"\(directory)\" does not exist or is not readable")
            try withFile("{\"clusterTLSCertificate\": \"\(path)\", \"clusterTLSKey\": 7}") { file in
                #expect(loadError(file: file)?.description == "configuration error: clusterTLSKey (from config file \(file)): expected a string, got a number")
            }
        }
    }

    static let repoRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
        }
        return FileManager.default.currentDirectoryPath
    }()
}
