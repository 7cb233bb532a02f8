import Foundation
import Gateway
import GatewayHTTP
import Hummingbird
import SwarmNode
import SwarmTransport
import Testing

@testable import MQTT

@Suite("docs/openapi.yaml describes exactly the routes the API serves")
struct OpenAPITests {
    /// `METHOD /path/{param}` for every operation in docs/openapi.yaml (read line by line: paths
    /// are the two-space-indented keys under `paths:`, methods the four-space-indented ones).
    static func documented() throws -> Set<String> {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/openapi.yaml")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        var operations = Set<String>()
        var inPaths = false
        var path: String?
        for line in lines {
            if line == "paths:" { inPaths = true; continue }
            if inPaths, !line.hasPrefix(" "), !line.isEmpty { break }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast()
                if ["get", "put", "post", "patch", "delete"].contains(method) { operations.insert("\(method.uppercased()) \(path)") }
            }
        }
        return operations
    }

    @Test("every route is documented and every documented operation is a route")
    func routes() async throws {
        let node = SwarmNode(settings: SwarmNodeSettings(name: "openapi-check", secret: ClusterSecret("openapi-check-secret")))
        let gateway = try DeviceGateway(node: node, settings: GatewaySettings(brokers: [.init(client: MQTTClient.Settings(host: "127.0.0.1", port: 1))]))
        let router = GatewayAPI(gateway: gateway, settings: GatewayHTTPSettings(host: "127.0.0.1", port: 0)).makeRouter()
        let served = Set(router.routes.map { route -> String in
            let path = route.path.description.split(separator: "/", omittingEmptySubsequences: false).map { part in
                part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
            }.joined(separator: "/")
            return "\(route.method.rawValue) \(path.isEmpty ? "/" : path)"
        })
        let documented = try Self.documented()
        #expect(served.subtracting(documented).sorted() == [], "routes missing from docs/openapi.yaml")
        #expect(documented.subtracting(served).sorted() == [], "documented operations the API does not serve")
        #expect(served.count > 20)
    }
}
