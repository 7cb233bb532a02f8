import Foundation
import GatewayHTTP
import HTTPTypes
import SwarmCore
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

/// The backend HTTP API over a real Mosquitto (free loopback port), real in-process SwarmNodes,
/// real DeviceGateways, the Hummingbird server on a real loopback port, a real HTTP client and
/// real libmosquitto device clients.
@Suite("Gateway HTTP API with a real broker, cluster and HTTP server", .serialized, .timeLimit(.minutes(3)))
struct GatewayHTTPTests {
    static let twinKeys: Set<String> = ["id", "online", "node", "groups", "metadata", "telemetry", "reported", "desired", "delta", "version", "lastSeen"]

    @Test("GET /v1/devices/{id}: the twin from every node (devices owned elsewhere included); 404 unknown, 400 invalid id")
    func twinFromEveryNode() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withAPI(members) { api in
                    let ids = (0..<9).map { "tw-\($0)" }
                    try await withDevices(ids, broker: broker, birth: { id -> JSONValue? in ["status": "online", "model": .string("m-\(id)"), "groups": ["meters"]] }) { devices in
                        for device in devices { try await device.telemetry(["seq": 1, "temp": 21.5]) }
                        // Birth and telemetry may reach the device process in either order (shared subscriptions).
                        #expect(await eventually {
                            await ids.asyncAllSatisfy { id in
                                await twinEverywhere(members, id) { $0.online && $0.groups == ["all", "meters"] && $0.telemetry["temp"] != nil }
                            }
                        })
                        var servedRemote = 0
                        for node in api {
                            for id in ids {
                                let answer = try await node.request(.get, "/v1/devices/\(id)")
                                #expect(answer.status == 200, "\(id) from \(node.member.name): \(answer)")
                                #expect(answer.headers[.contentType] == "application/json")
                                guard let twin = answer.json?.objectValue else {
                                    Issue.record("not a JSON object: \(answer)")
                                    continue
                                }
                                #expect(Self.twinKeys.isSubset(of: Set(twin.keys)), "\(twin.keys.sorted())")
                                #expect(twin["id"] == .string(id) && twin["online"] == true)
                                #expect(twin["metadata"]?["model"] == .string("m-\(id)"))
                                #expect(twin["telemetry"]?["temp"] == 21.5)
                                #expect(twin["groups"] == ["all", "meters"])
                                let owner = node.member.node.whereis(id)?.node.name
                                #expect(twin["node"]?.stringValue == owner)
                                if owner != node.member.name { servedRemote += 1 }
                            }
                        }
                        // 9 devices × 3 nodes, each device owned by one of them.
                        #expect(servedRemote == 18)
                        let unknown = try await api[1].request(.get, "/v1/devices/nobody")
                        #expect(unknown.status == 404 && unknown.code == "unknownDevice", "\(unknown)")
                        for bad in ["bad$id", "a%20b", String(repeating: "x", count: 129), "%ZZ"] {
                            let answer = try await api[2].request(.get, "/v1/devices/\(bad)")
                            #expect(answer.status == 400 && answer.code == "invalidName", "\(bad): \(answer)")
                        }
                        let notFound = try await api[0].request(.get, "/v1/nothing/here")
                        #expect(notFound.status == 404 && notFound.code == "notFound", "\(notFound)")
                    }
                }
            }
        }
    }

    @Test("PATCH /v1/devices/{id}/desired: 200 twin, the device gets the retained desired state with its version; 400 and 404")
    func desired() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    try await withDevices(["ds-1"], broker: broker) { devices in
                        let device = devices[0]
                        #expect(await eventually { await twinEverywhere(members, "ds-1") { $0.online } })
                        let first = try await api[1].request(.patch, "/v1/devices/ds-1/desired", body: #"{"led":"on","cfg":{"a":1}}"#)
                        #expect(first.status == 200, "\(first)")
                        #expect(first.json?["version"] == 1 && first.json?["desired"] == ["led": "on", "cfg": ["a": 1]])
                        #expect(first.json?["delta"] == ["led": "on", "cfg": ["a": 1]])
                        let second = try await api[0].request(.patch, "/v1/devices/ds-1/desired", body: #"{"led":null,"cfg":{"b":2}}"#)
                        #expect(second.status == 200 && second.json?["version"] == 2, "\(second)")
                        #expect(second.json?["desired"] == ["cfg": ["a": 1, "b": 2]])
                        #expect(await eventually {
                            device.messages(on: "state/desired").last.flatMap { try? JSONValue.parse($0.payload) }
                                == ["version": 2, "state": ["cfg": ["a": 1, "b": 2]]]
                        })
                        for (body, code) in [("{\"led\":", "invalidJSON"), ("[1,2]", "invalidBody"), ("\"on\"", "invalidBody"), ("", "invalidJSON")] {
                            let answer = try await api[0].request(.patch, "/v1/devices/ds-1/desired", body: body)
                            #expect(answer.status == 400 && answer.code == code, "\(body): \(answer)")
                        }
                        let unknown = try await api[1].request(.patch, "/v1/devices/nobody/desired", body: #"{"a":1}"#)
                        #expect(unknown.status == 404 && unknown.code == "unknownDevice", "\(unknown)")
                        // Nothing of the refused patches reached the twin.
                        let twin = try await api[1].request(.get, "/v1/devices/ds-1")
                        #expect(twin.json?["version"] == 2)
                    }
                    // Retained: a client that subscribes later gets the last desired state at once, flagged retained.
                    let late = try MQTTClient(settings: clientSettings(broker, "late"), logger: quietLogger("test.late"))
                    try await late.connect()
                    try await late.subscribe("devices/ds-1/state/desired", qos: .atLeastOnce)
                    var retained: MQTTMessage?
                    for await message in late.messages {
                        retained = message
                        break
                    }
                    await late.close()
                    #expect(retained?.retain == true)
                    #expect(retained.flatMap { try? JSONValue.parse($0.payload) } == ["version": 2, "state": ["cfg": ["a": 1, "b": 2]]])
                }
            }
        }
    }

    @Test("POST /v1/devices/{id}/commands/{name}: 200 reply from every node, 504 on timeout, 404 unknown, 400 bad timeout or body")
    func commands() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    try await withDevices(["cmd-1", "cmd-2"], broker: broker) { _ in
                        try await withDevices(["mute-1"], broker: broker, answers: false) { _ in
                            #expect(await eventually {
                                await ["cmd-1", "cmd-2", "mute-1"].asyncAllSatisfy { await twinEverywhere(members, $0) { $0.online } }
                            })
                            for node in api {
                                for id in ["cmd-1", "cmd-2"] {
                                    let answer = try await node.request(.post, "/v1/devices/\(id)/commands/reboot?timeout=5000", body: #"{"delay":3}"#)
                                    #expect(answer.status == 200, "\(answer)")
                                    #expect(answer.json == ["reply": ["ok": true, "command": "reboot", "echo": ["delay": 3]]])
                                }
                            }
                            // No body: the device gets {}.
                            let empty = try await api[0].request(.post, "/v1/devices/cmd-1/commands/ping")
                            #expect(empty.status == 200 && empty.json?["reply"]?["echo"] == [:], "\(empty)")
                            let start = ContinuousClock.now
                            let timeout = try await api[1].request(.post, "/v1/devices/mute-1/commands/reboot?timeout=300", body: "{}")
                            #expect(timeout.status == 504 && timeout.code == "commandTimeout", "\(timeout)")
                            #expect(ContinuousClock.now - start < .seconds(3))
                            let unknown = try await api[0].request(.post, "/v1/devices/nobody/commands/reboot", body: "{}")
                            #expect(unknown.status == 404 && unknown.code == "unknownDevice", "\(unknown)")
                            for query in ["timeout=abc", "timeout=0", "timeout=-5", "timeout=99999999"] {
                                let answer = try await api[0].request(.post, "/v1/devices/cmd-1/commands/reboot?\(query)", body: "{}")
                                #expect(answer.status == 400 && answer.code == "invalidTimeout", "\(query): \(answer)")
                            }
                            let garbage = try await api[0].request(.post, "/v1/devices/cmd-1/commands/reboot", body: "{not json")
                            #expect(garbage.status == 400 && garbage.code == "invalidJSON", "\(garbage)")
                            let badName = try await api[0].request(.post, "/v1/devices/cmd-1/commands/re$boot", body: "{}")
                            #expect(badName.status == 400 && badName.code == "invalidName", "\(badName)")
                            let stats = await members[1].gateway.stats()
                            #expect(stats.commandsTimedOut >= 1)
                        }
                    }
                }
            }
        }
    }

    @Test("groups: PUT/DELETE 204, GET members, publish 202 reaching every member's devices/{id}/down and nobody else")
    func groups() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    let ids = ["g-1", "g-2", "g-3", "g-4"]
                    try await withDevices(ids, broker: broker) { devices in
                        #expect(await eventually { await ids.asyncAllSatisfy { await twinEverywhere(members, $0) { $0.online } } })
                        for id in ["g-1", "g-2", "g-3"] {
                            let answer = try await api[id == "g-2" ? 1 : 0].request(.put, "/v1/devices/\(id)/groups/lamps")
                            #expect(answer.status == 204 && answer.body.isEmpty, "\(answer)")
                        }
                        #expect(await eventually {
                            await api.asyncAllSatisfy { node in
                                (try? await node.request(.get, "/v1/groups/lamps"))?.json == ["group": "lamps", "members": ["g-1", "g-2", "g-3"], "count": 3]
                            }
                        })
                        let removed = try await api[1].request(.delete, "/v1/devices/g-3/groups/lamps")
                        #expect(removed.status == 204, "\(removed)")
                        #expect(await eventually { (try? await api[0].request(.get, "/v1/groups/lamps"))?.json?["members"] == ["g-1", "g-2"] })
                        // The listing: device groups only (not the node's other Swarm groups), `all` included.
                        #expect(await eventually {
                            (try? await api[1].request(.get, "/v1/groups"))?.json == [
                                "groups": [["group": "all", "count": 4], ["group": "lamps", "count": 2]], "count": 2,
                            ]
                        })
                        let empty = try await api[0].request(.get, "/v1/groups/nobody-here")
                        #expect(empty.json == ["group": "nobody-here", "members": [], "count": 0], "\(empty)")

                        let published = try await api[1].request(.post, "/v1/groups/lamps/publish", body: #"{"blink":3}"#)
                        #expect(published.status == 202, "\(published)")
                        #expect(published.json?["members"] == 2)
                        #expect(await eventually {
                            devices[0].messages(on: "down").count == 1 && devices[1].messages(on: "down").count == 1
                        })
                        #expect(devices[0].messages(on: "down").first.flatMap { try? JSONValue.parse($0.payload) } == ["blink": 3])
                        try await Task.sleep(for: .milliseconds(300))
                        #expect(devices[2].messages(on: "down").isEmpty && devices[3].messages(on: "down").isEmpty)

                        let all = try await api[0].request(.post, "/v1/groups/all/publish", body: #""hello""#)
                        #expect(all.status == 202 && all.json?["members"] == 4, "\(all)")
                        #expect(await eventually { devices.allSatisfy { $0.messages(on: "down").contains { $0.payload == Array(#""hello""#.utf8) } } })

                        let leaveAll = try await api[0].request(.delete, "/v1/devices/g-1/groups/all")
                        #expect(leaveAll.status == 400 && leaveAll.code == "invalidBody", "\(leaveAll)")
                        let unknown = try await api[0].request(.put, "/v1/devices/nobody/groups/lamps")
                        #expect(unknown.status == 404 && unknown.code == "unknownDevice", "\(unknown)")
                        let badGroup = try await api[0].request(.put, "/v1/devices/g-1/groups/la%20mps")
                        #expect(badGroup.status == 400 && badGroup.code == "invalidName", "\(badGroup)")
                        let noBody = try await api[0].request(.post, "/v1/groups/lamps/publish")
                        #expect(noBody.status == 400 && noBody.code == "invalidJSON", "\(noBody)")
                    }
                }
            }
        }
    }

    @Test("POST /v1/groups/{group}/query: replies by id, the unresponsive member in missing, field selection, bad bodies 400")
    func groupQuery() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withAPI(members) { api in
                    let ids = (0..<4).map { "q-\($0)" }
                    try await withDevices(ids, broker: broker, birth: { _ in ["status": "online", "groups": ["meters"]] }) { devices in
                        for device in devices { try await device.report(["level": .int(Int64(device.id.dropFirst(2))!)]) }
                        #expect(await eventually {
                            await ids.asyncAllSatisfy { id in (try? await members[0].gateway.twin(id))?.reported["level"] != nil }
                        })
                        // A member that never answers in time.
                        _ = try await members[1].node.register("q-stuck", kind: "silent", groups: ["device-group:meters"])
                        #expect(await eventually { (try? await members[2].gateway.groupMembers("meters"))?.count == 5 })
                        let start = ContinuousClock.now
                        let answer = try await api[2].request(.post, "/v1/groups/meters/query?timeout=800", body: #"{"fields":["reported.level","online"]}"#)
                        #expect(ContinuousClock.now - start < .seconds(3))
                        #expect(answer.status == 200, "\(answer)")
                        #expect(answer.json?["missing"] == ["q-stuck"])
                        #expect(answer.json?["count"] == 4)
                        for id in ids {
                            #expect(answer.json?["replies"]?[id] == ["reported.level": .int(Int64(id.dropFirst(2))!), "online": true])
                        }
                        let full = try await api[0].request(.post, "/v1/groups/all/query?timeout=2000")
                        #expect(full.status == 200 && full.json?["count"] == 4 && full.json?["missing"] == [], "\(full)")
                        #expect(full.json?["replies"]?["q-3"]?["id"] == "q-3")
                        for (body, code) in [("[1]", "invalidBody"), (#"{"fields":"x"}"#, "invalidBody"), (#"{"fields":[1]}"#, "invalidBody"), (#"{"other":1}"#, "invalidBody"), ("{{", "invalidJSON")] {
                            let bad = try await api[1].request(.post, "/v1/groups/meters/query", body: body)
                            #expect(bad.status == 400 && bad.code == code, "\(body): \(bad)")
                        }
                        let badTimeout = try await api[1].request(.post, "/v1/groups/meters/query?timeout=x")
                        #expect(badTimeout.status == 400 && badTimeout.code == "invalidTimeout", "\(badTimeout)")
                    }
                }
            }
        }
    }

    @Test("/v1/cluster, /v1/cluster/tracker, /metrics, /healthz, /readyz")
    func clusterAndOps() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    try await withDevices(["op-1", "op-2", "op-3"], broker: broker) { devices in
                        #expect(await eventually { await ["op-1", "op-2", "op-3"].asyncAllSatisfy { await twinEverywhere(members, $0) { $0.online } } })
                        // Rejected ingress, counted: a malformed telemetry payload.
                        try await devices[0].client.publish(MQTTMessage(topic: "devices/op-1/telemetry", string: "{nope", qos: .atLeastOnce))
                        _ = try await api[0].request(.post, "/v1/devices/op-2/commands/ping", body: "{}")

                        let cluster = try await api[1].request(.get, "/v1/cluster")
                        #expect(cluster.status == 200, "\(cluster)")
                        let view = try JSONDecoder().decode(ClusterView.self, from: Data(cluster.body))
                        #expect(view.node == members[1].name && view.state == "up")
                        #expect(Set(view.nodes.map(\.name)) == Set(members.map(\.name)))
                        #expect(view.nodes.allSatisfy { $0.state == "up" && $0.inRing && $0.ringShare > 0 })
                        #expect(abs(view.nodes.map(\.ringShare).reduce(0, +) - 1) < 0.001)
                        #expect(view.devices == 3 && view.nodes.map(\.devices).reduce(0, +) == 3)

                        let tracker = try await api[0].request(.get, "/v1/cluster/tracker")
                        #expect(tracker.status == 200, "\(tracker)")
                        let dump = try JSONDecoder().decode(TrackerDump.self, from: Data(tracker.body))
                        #expect(dump.node == members[0].name && dump.ringNodes.count == 2 && dump.registrySize >= 3)

                        let health = try await api[0].request(.get, "/healthz")
                        #expect(health.status == 200 && health.json?["status"] == "ok")
                        let ready = try await api[1].request(.get, "/readyz")
                        #expect(ready.status == 200 && ready.json?["status"] == "ready", "\(ready)")

                        #expect(await eventually { (await members[0].gateway.stats().rejected["malformed"] ?? 0) + (await members[1].gateway.stats().rejected["malformed"] ?? 0) == 1 })
                        let metrics = try await api[0].request(.get, "/metrics")
                        #expect(metrics.status == 200)
                        #expect(metrics.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                        let other = try await api[1].request(.get, "/metrics")
                        let lines = Set(metrics.text.split(separator: "\n").map(String.init))
                        let both = metrics.text + other.text
                        for expected in [
                            "# TYPE swarm_gateway_ingress_accepted_total counter", "# TYPE swarm_gateway_ingress_rejected_total counter",
                            "swarm_gateway_commands_sent_total 1", "swarm_gateway_commands_answered_total 1",
                            "swarm_gateway_ready 1", "swarm_ring_nodes 2", "swarm_cluster_devices 3",
                            #"swarm_gateway_ingress_shed_total{kind="telemetry"} 0"#, #"swarm_gateway_ingress_shed_total{kind="status"} 0"#,
                            "swarm_gateway_ingress_waits_total 0", "swarm_gateway_ingress_queued 0",
                        ] {
                            #expect(lines.contains(expected), "missing '\(expected)' in:\n\(metrics.text)")
                        }
                        #expect(both.contains(#"swarm_gateway_ingress_rejected_total{reason="malformed"} 1"#))
                        #expect(metrics.text.contains(#"swarm_gateway_received_total{kind="status"}"#))
                        #expect(metrics.text.contains(#"swarm_gateway_broker_connected{broker="#))
                        #expect(metrics.text.contains(#"swarm_registry_size "#))
                        #expect(metrics.text.contains(#"swarm_gateway_http_requests_total{method="GET",route="/v1/cluster/tracker",status="200"} 1"#))
                        #expect(metrics.text.contains(#"swarm_gateway_http_request_duration_seconds_count{method="GET",route="/healthz"} 1"#))
                        // Every sample line is `name{labels} value` or `name value` with a numeric value.
                        for line in lines where !line.hasPrefix("#") {
                            #expect(line.split(separator: " ").last.flatMap { Double($0) } != nil, "bad sample line: \(line)")
                        }
                    }
                }
            }
        }
    }

    @Test("POST /v1/cluster/drain: 202, the node drains (readyz 503), the hook runs, its devices are served by the survivor")
    func drain() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    let ids = (0..<6).map { "dr-\($0)" }
                    try await withDevices(ids, broker: broker) { _ in
                        #expect(await eventually { await ids.asyncAllSatisfy { await twinEverywhere(members, $0) { $0.online } } })
                        let answer = try await api[1].request(.post, "/v1/cluster/drain")
                        #expect(answer.status == 202 && answer.json?["draining"] == true && answer.json?["alreadyDraining"] == false, "\(answer)")
                        let again = try await api[1].request(.post, "/v1/cluster/drain")
                        #expect(again.status == 202 && again.json?["alreadyDraining"] == true, "\(again)")
                        let notReady = try await api[1].request(.get, "/readyz")
                        #expect(notReady.status == 503 && notReady.code == "notReady", "\(notReady)")
                        #expect(await eventually(timeout: .seconds(30)) { api[1].drained.all == [true] })
                        #expect(api[0].drained.all.isEmpty)
                        for id in ids {
                            let twin = try await api[0].request(.get, "/v1/devices/\(id)")
                            #expect(twin.status == 200 && twin.json?["node"] == .string(members[0].name) && twin.json?["online"] == true, "\(twin)")
                        }
                        let stillReady = try await api[0].request(.get, "/readyz")
                        #expect(stillReady.status == 200)
                    }
                }
            }
        }
    }

    @Test("bearer token: 401 without or with a wrong token (WWW-Authenticate: Bearer), 200 with it; /metrics, /healthz, /readyz open")
    func authentication() async throws {
        let token = "s3cret-token-\(UInt64.random(in: 0 ... .max))"
        try await withBroker { broker in
            try await withGatewayCluster(1, broker: broker) { members in
                try await withAPI(members, token: token) { api in
                    try await withDevices(["au-1"], broker: broker) { _ in
                        let node = api[0]
                        #expect(await eventually { await twinEverywhere(members, "au-1") { $0.online } })
                        for (uri, method) in [("/v1/devices/au-1", HTTPRequest.Method.get), ("/v1/cluster", .get), ("/v1/cluster/drain", .post), ("/v1/nothing", .get)] {
                            let missing = try await node.request(method, uri)
                            #expect(missing.status == 401 && missing.code == "unauthorized", "\(uri): \(missing)")
                            #expect(missing.headers[.wwwAuthenticate] == "Bearer")
                            for wrong in ["wrong", String(token.dropLast()), token + "x", ""] {
                                let answer = try await node.request(method, uri, token: wrong)
                                #expect(answer.status == 401, "\(uri) with '\(wrong)': \(answer)")
                            }
                            let basic = try await node.request(method, uri, headers: [.authorization: "Basic \(token)"])
                            #expect(basic.status == 401)
                        }
                        let ok = try await node.request(.get, "/v1/devices/au-1", token: token)
                        #expect(ok.status == 200 && ok.json?["id"] == "au-1", "\(ok)")
                        let lower = try await node.request(.get, "/v1/cluster", headers: [.authorization: "bearer \(token)"])
                        #expect(lower.status == 200)
                        let route404 = try await node.request(.get, "/v1/nothing", token: token)
                        #expect(route404.status == 404 && route404.code == "notFound")
                        for open in ["/metrics", "/healthz", "/readyz"] {
                            let answer = try await node.request(.get, open)
                            #expect(answer.status == 200, "\(open): \(answer)")
                        }
                        #expect(!api[0].server.api.drainRequested)
                    }
                }
            }
        }
    }

    @Test("dashboard: GET / and its assets, open with a token configured, right content types, security headers; its API calls still need the token")
    func dashboard() async throws {
        let token = "dash-token-\(UInt64.random(in: 0 ... .max))"
        try await withBroker { broker in
            try await withGatewayCluster(1, broker: broker) { members in
                try await withAPI(members, token: token) { api in
                    let node = api[0]
                    for uri in ["/", "/dashboard", "/dashboard/"] {
                        let page = try await node.request(.get, uri)
                        #expect(page.status == 200, "\(uri): \(page)")
                        #expect(page.headers[.contentType] == "text/html; charset=utf-8")
                        #expect(page.headers[.cacheControl] == "no-cache")
                        #expect(page.headers[.contentSecurityPolicy]?.contains("default-src 'self'") == true)
                        for marker in [
                            "<!doctype html>", "<title>Swarm Gateway</title>", "/dashboard/app.js", "/dashboard/style.css",
                            #"data-testid="node-count""#, #"data-testid="cluster-devices""#, #"data-testid="node-table""#,
                            #"data-testid="rate-received""#, #"data-testid="group-list""#, #"id="device-form""#, #"id="query-form""#,
                            #"data-testid="tracker-dump""#, #"data-testid="auth-prompt""#,
                        ] {
                            #expect(page.text.contains(marker), "\(uri) lacks \(marker)")
                        }
                        // Offline: nothing loaded from another origin.
                        #expect(!page.text.contains("http://") && !page.text.contains("https://"))
                    }
                    let script = try await node.request(.get, "/dashboard/app.js")
                    #expect(script.status == 200 && script.headers[.contentType] == "text/javascript; charset=utf-8", "\(script)")
                    for marker in ["/v1/cluster", "/metrics", "/v1/groups/", "/v1/devices/", "/v1/cluster/tracker", "Authorization", "localStorage"] {
                        #expect(script.text.contains(marker), "app.js lacks \(marker)")
                    }
                    let style = try await node.request(.get, "/dashboard/style.css")
                    #expect(style.status == 200 && style.headers[.contentType] == "text/css; charset=utf-8", "\(style)")
                    #expect(style.text.contains(".panel"))
                    for asset in [script, style] {
                        #expect(asset.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
                        #expect(!asset.text.contains("http://") && !asset.text.contains("https://"))
                    }
                    // The page is open; the data behind it is not.
                    let cluster = try await node.request(.get, "/v1/cluster")
                    #expect(cluster.status == 401 && cluster.code == "unauthorized")
                    let allowed = try await node.request(.get, "/v1/cluster", token: token)
                    #expect(allowed.status == 200)
                    // The scrape time the dashboard computes rates with.
                    let metrics = try await node.request(.get, "/metrics")
                    let scrape = metrics.text.split(separator: "\n").first { $0.hasPrefix("swarm_gateway_scrape_time_seconds ") }
                    let seconds = scrape.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
                    #expect(abs(seconds - Date().timeIntervalSince1970) < 60, "\(scrape ?? "no scrape time")")
                    #expect(metrics.text.contains(#"swarm_gateway_http_requests_total{method="GET",route="/dashboard/app.js",status="200"} 1"#), "\(metrics.text)")
                    // Methods other than GET on the dashboard are 404 JSON like any unknown route.
                    let post = try await node.request(.post, "/dashboard/app.js")
                    #expect(post.status == 404 && post.code == "notFound")
                }
            }
        }
    }

    @Test("bad requests never crash: garbage bodies 400, oversized 413, unknown routes and methods 404 JSON")
    func badRequests() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(1, broker: broker) { members in
                try await withAPI(members, configure: { $0.maxBodyBytes = 1024 }) { api in
                    try await withDevices(["bad-1"], broker: broker) { _ in
                        let node = api[0]
                        #expect(await eventually { await twinEverywhere(members, "bad-1") { $0.online } })
                        let garbage: [[UInt8]] = [
                            [0xFF, 0xFE, 0x00, 0x01], Array("{\"a\":".utf8), Array("nul".utf8), Array("{\"a\":1}}".utf8),
                            (0..<512).map { _ in UInt8.random(in: 0...255) },
                        ]
                        for body in garbage {
                            let answer = try await node.request(.patch, "/v1/devices/bad-1/desired", bytes: body)
                            #expect(answer.status == 400 && answer.code == "invalidJSON", "\(answer)")
                            let publish = try await node.request(.post, "/v1/groups/all/publish", bytes: body)
                            #expect(publish.status == 400 && publish.code == "invalidJSON", "\(publish)")
                        }
                        let big = "{\"x\":\"" + String(repeating: "y", count: 2000) + "\"}"
                        for uri in ["/v1/devices/bad-1/desired", "/v1/devices/bad-1/commands/x", "/v1/groups/all/publish"] {
                            let method: HTTPRequest.Method = uri.hasSuffix("desired") ? .patch : .post
                            let answer = try await node.request(method, uri, body: big)
                            #expect(answer.status == 413 && answer.code == "payloadTooLarge", "\(uri): \(answer)")
                        }
                        for (method, uri) in [(HTTPRequest.Method.get, "/nothing"), (.post, "/"), (.get, "/dashboard/missing.js"), (.get, "/v2/devices/x"), (.post, "/v1/devices/bad-1"), (.post, "/healthz"), (.delete, "/v1/groups/all")] {
                            let answer = try await node.request(method, uri)
                            #expect(answer.status == 404 && answer.code == "notFound", "\(method) \(uri): \(answer)")
                            #expect(answer.headers[.contentType] == "application/json")
                        }
                        // Still serving, the device untouched.
                        let twin = try await node.request(.get, "/v1/devices/bad-1")
                        #expect(twin.status == 200 && twin.json?["version"] == 0, "\(twin)")
                        let metrics = try await node.request(.get, "/metrics")
                        #expect(metrics.text.contains(#"route="/v1/devices/{id}/desired",status="413"} 1"#), "\(metrics.text)")
                    }
                }
            }
        }
    }
}
