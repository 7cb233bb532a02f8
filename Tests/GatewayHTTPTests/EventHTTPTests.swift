import AsyncHTTPClient
import Foundation
import Gateway
import GatewayHTTP
import HTTPTypes
import Hummingbird
import NIOCore
import SwarmJSON
import Synchronization
import Testing

@Suite("Events over HTTP: SSE and webhooks", .serialized)
struct EventHTTPTests {
    static func configure(_ settings: inout GatewaySettings) {
        settings.events.heartbeat = .seconds(1)
        settings.events.webhookTransport = HTTPWebhookTransport()
        settings.events.webhookRetryDelay = .milliseconds(50)
        settings.events.webhookMaxRetryDelay = .milliseconds(400)
        settings.events.webhookLinger = .milliseconds(20)
        settings.events.webhookBatchSize = 25
    }

    @Test("SSE: every telemetry message once with its cursor as id; a reconnect to another node with Last-Event-ID gets exactly what was missed; filters; bad input")
    func sse() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker, configure: Self.configure) { members in
                try await withAPI(members) { api in
                    try await withDevices(["sse-1", "sse-2", "sse-3"], broker: broker) { devices in
                        func telemetry(_ rounds: ClosedRange<Int>) async throws {
                            for round in rounds { for device in devices { try await device.telemetry(["seq": .int(Int64(round)), "n": .int(Int64(round))]) } }
                        }
                        try await telemetry(1...10)
                        let first = try await readEvents(port: api[0].port, "/v1/events?after=0&types=telemetry") { $0.count >= 30 }
                        #expect(first.status == 200 && first.contentType == "text/event-stream")
                        #expect(first.messages.count == 30)
                        #expect(first.messages.allSatisfy { $0.id != nil && $0.json?["id"]?.stringValue == $0.id && $0.json?["type"] == "telemetry" })
                        let last = try #require(first.messages.last?.id)
                        // Disconnected; more traffic; reconnect to the other node with the cursor.
                        try await telemetry(11...20)
                        let second = try await readEvents(port: api[1].port, "/v1/events?types=telemetry", headers: [("Last-Event-ID", last)]) { $0.count >= 30 }
                        #expect(second.messages.count == 30)
                        let all = (first.messages + second.messages).compactMap(\.json)
                        for device in devices {
                            let values = all.filter { $0["device"]?.stringValue == device.id }.compactMap { $0["data"]?["n"]?.intValue }
                            #expect(values.sorted() == Array(1...20), "\(device.id): \(values)")
                            let seqs = all.filter { $0["device"]?.stringValue == device.id }.compactMap { $0["seq"]?.intValue }
                            #expect(seqs == seqs.sorted() && Set(seqs).count == 20, "\(device.id): \(seqs)")
                        }
                        // Nothing twice, nothing more after the last one: a second read after the same
                        // cursor on node 1 gives the same 30, then only heartbeats.
                        let again = try await readEvents(port: api[0].port, "/v1/events?types=telemetry&after=\(last)", timeout: .seconds(3)) { _ in false }
                        #expect(again.messages.map(\.id) == second.messages.map(\.id))
                        #expect(again.comments >= 2, "the opening comment and a heartbeat")
                        // device= and types= filters.
                        let one = try await readEvents(port: api[1].port, "/v1/events?after=0&device=sse-2&types=telemetry,presence") { $0.count >= 21 }
                        #expect(one.messages.count == 21 && one.messages.allSatisfy { $0.json?["device"] == "sse-2" })
                        // where= on the events.
                        let query = "telemetry.n > 15 and id = 'sse-1'".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                        let hot = try await readEvents(port: api[0].port, "/v1/events?after=0&where=\(query)") { $0.count >= 5 }
                        #expect(hot.messages.compactMap { $0.json?["data"]?["n"]?.intValue }.sorted() == [16, 17, 18, 19, 20])
                        #expect(hot.messages.allSatisfy { $0.json?["device"] == "sse-1" })
                        // Bad input.
                        let bad = try await api[0].request(.get, "/v1/events?where=telemetry.n%20%3E")
                        #expect(bad.code == "invalidQuery" && bad.json?["position"] != nil, "\(bad)")
                        #expect(try await api[0].request(.get, "/v1/events?after=nope").code == "invalidCursor")
                        #expect(try await api[0].request(.get, "/v1/events?types=weather").code == "invalidBody")
                        #expect(try await api[0].request(.get, "/v1/events?device=a/b").code == "invalidName")
                    }
                }
            }
        }
    }

    @Test("SSE: a cursor older than what is kept is 410 cursorExpired")
    func expired() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(1, broker: broker, configure: {
                Self.configure(&$0)
                $0.events.bufferSize = 20
            }) { members in
                try await withAPI(members) { api in
                    try await withDevices(["exp-1"], broker: broker) { devices in
                        for round in 1...40 { try await devices[0].telemetry(["seq": .int(Int64(round))]) }
                        let hub = members[0].gateway.events
                        #expect(await eventually { hub.stats.released >= 42 })
                        let answer = try await api[0].request(.get, "/v1/events?after=0")
                        #expect(answer.status == 410 && answer.code == "cursorExpired", "\(answer)")
                        let horizon = try #require(answer.json?["horizon"]?.stringValue)
                        #expect(horizon == hub.horizon.description)
                        // From the horizon on: the events kept (the buffer), the newest last.
                        let kept = try await readEvents(port: api[0].port, "/v1/events?after=\(horizon)", timeout: .seconds(10)) { $0.count >= 20 }
                        #expect(kept.status == 200 && kept.messages.count == 20)
                        #expect(kept.messages.last?.json?["data"]?["seq"] == 40)
                    }
                }
            }
        }
    }

    @Test("webhooks: a receiver that fails the first attempts gets every event, signed, in order per device; list, get, delete")
    func webhooks() async throws {
        let receiver = WebhookReceiver(failures: 3)
        try await receiver.run { port in
            try await withBroker { broker in
                try await withGatewayCluster(2, broker: broker, configure: Self.configure) { members in
                    try await withAPI(members) { api in
                        let created = try await api[0].request(
                            .post, "/v1/webhooks", body: #"{"url":"http://127.0.0.1:\#(port)/hook","types":["telemetry"],"secret":"s3cret"}"#)
                        #expect(created.status == 201, "\(created)")
                        let id = try #require(created.json?["id"]?.stringValue)
                        #expect(created.json?["secret"] == nil, "the secret is never shown")
                        let ids = ["wh-a", "wh-b", "wh-c", "wh-d"]
                        try await withDevices(ids, broker: broker) { devices in
                            for round in 1...30 {
                                for device in devices { try await device.telemetry(["seq": .int(Int64(round)), "n": .int(Int64(round))]) }
                            }
                            #expect(await eventually(timeout: .seconds(30)) { receiver.events.count >= 120 }, "\(receiver.events.count) delivered")
                            #expect(receiver.attempts >= 4)
                            for delivery in receiver.accepted {
                                #expect(delivery.webhook == id)
                                #expect(WebhookSignature.verify(delivery.body, signature: delivery.signature ?? "", secret: "s3cret"))
                            }
                            let events = receiver.events
                            #expect(events.allSatisfy { $0["type"] == "telemetry" })
                            for device in ids {
                                let seqs = events.filter { $0["device"]?.stringValue == device }.compactMap { $0["seq"]?.intValue }
                                #expect(seqs == seqs.sorted() && seqs.count == 30, "\(device): \(seqs)")
                            }
                            let listed = try await api[1].request(.get, "/v1/webhooks")
                            let entry = try #require(listed.json?["webhooks"]?.arrayValue?.first)
                            #expect(entry["id"]?.stringValue == id && entry["failures"]?.intValue ?? 0 >= 3 && entry["dropped"] == 0, "\(listed)")
                            #expect(await eventually { (try? await api[1].request(.get, "/v1/webhooks/\(id)"))?.json?["lag"] == 0 })
                            #expect(try await api[0].request(.delete, "/v1/webhooks/\(id)").status == 204)
                            #expect(try await api[1].request(.get, "/v1/webhooks/\(id)").code == "unknownWebhook")
                            #expect(try await api[0].request(.delete, "/v1/webhooks/\(id)").status == 404)
                            // Bad input.
                            #expect(try await api[0].request(.post, "/v1/webhooks", body: #"{"url":"ftp://x/","secret":"s"}"#).code == "invalidBody")
                            #expect(try await api[0].request(.post, "/v1/webhooks", body: #"{"url":"http://x/","secret":""}"#).code == "invalidBody")
                            #expect(try await api[0].request(.post, "/v1/webhooks", body: #"{"url":"http://x/","secret":"s","types":["x"]}"#).code == "invalidBody")
                        }
                    }
                }
            }
        }
    }
}
