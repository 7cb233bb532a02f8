import Foundation
import GatewayHTTP
import HTTPTypes
import SwarmJSON
import SwarmNode
import Testing

@testable import Gateway
@testable import MQTT

/// `where=…` percent-encoded for a query string (spaces as `%20`, quotes, `=` and `&` encoded).
func encodedQuery(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

@Suite("Fleet search over HTTP (real broker, 3-node cluster, every node filters its own twins)", .serialized, .timeLimit(.minutes(3)))
struct FleetSearchTests {
    /// Every id of a search, walking the pages of `limit` from `api`.
    static func walk(_ api: APINode, _ condition: String?, limit: Int) async throws -> (ids: [String], pages: Int, matched: [Int]) {
        var ids: [String] = []
        var cursor: String?
        var pages = 0
        var matched: [Int] = []
        repeat {
            var uri = "/v1/devices?limit=\(limit)"
            if let condition { uri += "&where=\(encodedQuery(condition))" }
            if let cursor { uri += "&cursor=\(cursor)" }
            let answer = try await api.request(.get, uri)
            try #require(answer.status == 200, "\(uri): \(answer)")
            let page = try #require(answer.json?["devices"]?.arrayValue).compactMap(\.stringValue)
            #expect(page.count <= limit)
            ids += page
            matched.append(Int(answer.json?["matched"]?.intValue ?? -1))
            pages += 1
            cursor = answer.json?["next"]?.stringValue
            if cursor != nil { #expect(page.count == limit, "only the last page is short") }
        } while cursor != nil && pages < 1000
        return (ids, pages, matched)
    }

    @Test("GET /v1/devices?where=: every operator, pages returning each match once in id order, from every node; bad expressions 400 invalidQuery with the position")
    func search() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(3, broker: broker) { members in
                try await withAPI(members) { api in
                    // 240 provisioned devices (offline) with tags, spread over the 3 nodes.
                    for number in 0..<240 {
                        let site = ["paris", "rome", "oslo"][number % 3]
                        let body: JSONValue = ["tags": ["n": .int(Int64(number)), "site": .string(site), "even": .bool(number % 2 == 0)], "groups": number % 4 == 0 ? ["lab"] : []]
                        let put = try await api[number % 3].request(.put, "/v1/devices/fs-\(String(format: "%03d", number))", body: body.jsonText)
                        try #require(put.status == 201, "\(put)")
                    }
                    let hosts = Set(try await (0..<240).asyncMap { try await members[0].gateway.twin("fs-\(String(format: "%03d", $0))")!.node })
                    #expect(hosts.count == 3, "the devices live on every node: \(hosts)")
                    // Two online devices with reported state, telemetry and metadata.
                    try await withDevices(["live-a", "live-b"], broker: broker, birth: { id in ["status": "online", "model": id == "live-a" ? "T-1" : "T-2"] }) { devices in
                        try await devices[0].report(["battery": ["level": 80], "mode": "eco"])
                        try await devices[1].report(["battery": ["level": 15], "mode": "boost"])
                        try await devices[0].telemetry(["seq": 1, "temp": 21.5])
                        #expect(await eventually { await twinEverywhere(members, "live-b") { $0.reported["mode"] == "boost" } })
                        #expect(await eventually { await twinEverywhere(members, "live-a") { $0.telemetry["temp"] == 21.5 } })

                        let all = (0..<240).map { "fs-\(String(format: "%03d", $0))" }
                        func expected(_ keep: (Int) -> Bool) -> [String] { (0..<240).filter(keep).map { all[$0] } }
                        let cases: [(String, [String])] = [
                            ("tags.site = 'paris'", expected { $0 % 3 == 0 }),
                            ("tags.site != 'paris' and tags.n < 10", expected { $0 % 3 != 0 && $0 < 10 }),
                            ("tags.n >= 230", expected { $0 >= 230 }),
                            ("tags.n > 230 or tags.n <= 1", expected { $0 > 230 || $0 <= 1 }),
                            ("not tags.even and tags.n < 7", expected { $0 % 2 == 1 && $0 < 7 }),
                            ("tags.even = true and (tags.site = 'rome' or tags.site = 'oslo') and tags.n < 20", expected { $0 % 2 == 0 && $0 % 3 != 0 && $0 < 20 }),
                            ("'lab' in groups and tags.n < 30", expected { $0 % 4 == 0 && $0 < 30 }),
                            ("exists(tags.site) and id < 'fs-005'", expected { $0 < 5 }),
                            ("online", ["live-a", "live-b"]),
                            ("not exists(tags.n)", ["live-a", "live-b"]),
                            ("reported.battery.level < 20", ["live-b"]),
                            ("reported.mode = 'eco' and metadata.model = 'T-1'", ["live-a"]),
                            ("telemetry.temp > 20", ["live-a"]),
                            ("tags.site = 'nowhere'", []),
                        ]
                        for (condition, ids) in cases {
                            for node in api {
                                let walked = try await Self.walk(node, condition, limit: 1000)
                                #expect(walked.ids == ids, "\(condition) on \(node.member.name)")
                                #expect(walked.matched == [ids.count], "\(condition)")
                            }
                        }
                        // Pages of 7 over every paris device: each once, in id order, the same from every node.
                        let paris = expected { $0 % 3 == 0 }
                        for node in api {
                            let walked = try await Self.walk(node, "tags.site = 'paris'", limit: 7)
                            #expect(walked.ids == paris)
                            #expect(walked.pages == (paris.count + 6) / 7)
                            #expect(walked.matched.allSatisfy { $0 == paris.count })
                        }
                        // No where: every device, default limit 100.
                        let first = try await api[1].request(.get, "/v1/devices")
                        #expect(first.json?["devices"]?.arrayValue?.count == 100)
                        #expect(first.json?["next"] == "fs-099")
                        #expect(first.json?["matched"] == 242)
                        let everything = try await Self.walk(api[2], nil, limit: 1000)
                        #expect(everything.ids == all + ["live-a", "live-b"])
                        // A form-encoded space (+) is a space.
                        let plus = try await api[0].request(.get, "/v1/devices?where=tags.n+%3D+3")
                        #expect(plus.json?["devices"] == ["fs-003"], "\(plus)")
                    }

                    // A change answered by the API is seen by the next search.
                    let tagged = try await api[0].request(.patch, "/v1/devices/fs-100/tags", body: #"{"flag":"x"}"#)
                    #expect(tagged.status == 200)
                    for node in api {
                        #expect(try await Self.walk(node, "tags.flag = 'x'", limit: 10).ids == ["fs-100"])
                    }
                    // A deleted device is gone from the search.
                    #expect(try await api[2].request(.delete, "/v1/devices/fs-100").status == 204)
                    #expect(try await Self.walk(api[1], "tags.flag = 'x' or tags.n = 100", limit: 10).ids == [])

                    // Bad expressions and parameters.
                    let bad = try await api[0].request(.get, "/v1/devices?where=\(encodedQuery("tags.site = 'paris' and"))")
                    #expect(bad.status == 400 && bad.code == "invalidQuery", "\(bad)")
                    #expect(bad.json?["position"] == 24, "\(bad)")
                    let unknown = try await api[1].request(.get, "/v1/devices?where=\(encodedQuery("colour = 'red'"))")
                    #expect(unknown.status == 400 && unknown.code == "invalidQuery" && unknown.json?["position"] == 1, "\(unknown)")
                    #expect(unknown.json?["error"]?.stringValue?.contains("unknown path 'colour'") == true, "\(unknown)")
                    for limit in ["0", "1001", "-1", "x"] {
                        let answer = try await api[0].request(.get, "/v1/devices?limit=\(limit)")
                        #expect(answer.status == 400 && answer.code == "invalidLimit", "\(limit): \(answer)")
                    }
                    let cursor = try await api[0].request(.get, "/v1/devices?cursor=a%20b")
                    #expect(cursor.status == 400 && cursor.code == "invalidCursor", "\(cursor)")
                }
            }
        }
    }

    @Test("POST /v1/groups/{g}/query with where: only matching members reply, matched counts them; a bad where is 400 invalidQuery")
    func groupQuery() async throws {
        try await withBroker { broker in
            try await withGatewayCluster(2, broker: broker) { members in
                try await withAPI(members) { api in
                    for number in 0..<30 {
                        let body: JSONValue = ["tags": ["n": .int(Int64(number))], "groups": ["field"]]
                        #expect(try await api[number % 2].request(.put, "/v1/devices/gq-\(number)", body: body.jsonText).status == 201)
                    }
                    let answer = try await api[1].request(.post, "/v1/groups/field/query", body: #"{"where":"tags.n >= 25","fields":["tags.n"]}"#)
                    #expect(answer.status == 200, "\(answer)")
                    #expect(answer.json?["matched"] == 5)
                    #expect(answer.json?["count"] == 5)
                    #expect(answer.json?["missing"] == [])
                    let replies = try #require(answer.json?["replies"]?.objectValue)
                    #expect(replies.keys.sorted() == ["gq-25", "gq-26", "gq-27", "gq-28", "gq-29"])
                    #expect(replies["gq-27"] == ["tags.n": 27])
                    let none = try await api[0].request(.post, "/v1/groups/field/query", body: #"{"where":"tags.n > 100"}"#)
                    #expect(none.json?["matched"] == 0 && none.json?["missing"] == [], "\(none)")
                    let every = try await api[0].request(.post, "/v1/groups/field/query", body: #"{"fields":["id"]}"#)
                    #expect(every.json?["matched"] == 30)
                    let bad = try await api[0].request(.post, "/v1/groups/field/query", body: #"{"where":"tags.n >"}"#)
                    #expect(bad.status == 400 && bad.code == "invalidQuery" && bad.json?["position"] == 9, "\(bad)")
                    let notText = try await api[0].request(.post, "/v1/groups/field/query", body: #"{"where":3}"#)
                    #expect(notText.status == 400 && notText.code == "invalidBody", "\(notText)")
                }
            }
        }
    }
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
