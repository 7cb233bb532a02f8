import FoundationEssentials
@testable import MQTT
import Testing

/// Mutual TLS against a broker listener with a throw-away CA made by the openssl CLI.
@Suite("MQTTClient over TLS", .timeLimit(.minutes(1)))
struct TLSTests {
    /// Runs openssl with a bounded wait; fails the test on a non-zero exit.
    private func openssl(_ arguments: [String], in directory: String) async throws {
        let openssl = try EmbeddedBroker.findExecutable("openssl")
        let code = try await ChildProcess.run(
            executable: openssl, arguments: arguments, outputPath: directory + "/openssl.out", timeout: .seconds(20)
        )
        #expect(code == 0, "openssl \(arguments.joined(separator: " ")) exited \(code.map(String.init) ?? "by signal")")
    }

    /// CA, server certificate for 127.0.0.1/localhost, client certificate with CN `commonName`.
    private func makeCertificates(in directory: String) async throws {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try Data("subjectAltName=IP:127.0.0.1,DNS:localhost\n".utf8).write(to: URL(fileURLWithPath: directory + "/san.ext"))
        try await openssl(["req", "-x509"] + ec + ["-keyout", directory + "/ca.key", "-out", directory + "/ca.crt", "-days", "2", "-subj", "/CN=swarm-test-ca"], in: directory)
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=dev1")] {
            try await openssl(["req"] + ec + ["-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).csr", "-subj", subject], in: directory)
            var sign = [
                "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", directory + "/ca.crt", "-CAkey", directory + "/ca.key",
                "-CAcreateserial", "-out", "\(directory)/\(name).crt", "-days", "2",
            ]
            if name == "server" { sign += ["-extfile", directory + "/san.ext"] }
            try await openssl(sign, in: directory)
        }
    }

    @Test("mutual TLS: a client with a CA-signed certificate round-trips; one without a certificate cannot connect")
    func mutualTLS() async throws {
        let directory = "/tmp/swarm-tls-" + String(UInt64.random(in: .min ... .max), radix: 16)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await makeCertificates(in: directory)
        let tlsPort = try EmbeddedBroker.freePort(host: "127.0.0.1")

        try await withBroker({ settings in
            settings.directory = directory
            settings.extraConfiguration = [
                "listener \(tlsPort) 127.0.0.1",
                "cafile \(directory)/ca.crt",
                "certfile \(directory)/server.crt",
                "keyfile \(directory)/server.key",
                "require_certificate true",
            ]
        }) { broker in
            var settings = testSettings(broker, "tls")
            settings.port = tlsPort
            settings.tls = .init(caFile: directory + "/ca.crt", certFile: directory + "/client.crt", keyFile: directory + "/client.key")
            try await withClient(settings) { client in
                try await client.client.subscribe("secure/#", qos: .atLeastOnce)
                try await client.client.publish(topic: "secure/hello", string: "over tls", qos: .atLeastOnce)
                #expect(await client.messages.wait { $0.payloadStrings == ["over tls"] })
            }

            var noCertificate = testSettings(broker, "no-cert")
            noCertificate.port = tlsPort
            noCertificate.connectTimeout = .seconds(2)
            noCertificate.tls = .init(caFile: directory + "/ca.crt")
            let error = try await #require(throws: MQTTError.self) {
                try await withClient(noCertificate) { _ in }
            }
            #expect(error.code == .timedOut)

            var missingFile = testSettings(broker, "bad-file")
            missingFile.tls = .init(caFile: directory + "/does-not-exist.crt")
            #expect(throws: MQTTError.self) { try MQTTClient(settings: missingFile, logger: testLogger) }
        }
    }
}
