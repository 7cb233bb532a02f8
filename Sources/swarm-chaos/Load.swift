import Foundation
import Glibc

/// A twin's fields the load runs use.
struct TwinSample {
    var node: String
    var gaps: Int
    var duplicates: Int
    var telemetry: Int
    var late: Int
    var online: Bool?
    var desiredToken: String?

    init?(_ json: [String: Any]) {
        guard let node = json["node"] as? String, let counters = json["counters"] as? [String: Any] else { return nil }
        self.node = node
        gaps = counters["seqGaps"] as? Int ?? 0
        duplicates = counters["seqDuplicates"] as? Int ?? 0
        telemetry = counters["telemetry"] as? Int ?? 0
        late = counters["seqLate"] as? Int ?? 0
        online = json["online"] as? Bool
        if let desired = json["desired"] as? [String: Any] {
            desiredToken = (desired["state"] as? [String: Any])?["chaosToken"] as? String ?? desired["chaosToken"] as? String
        }
    }
}

extension Cluster {
    /// Every device's twin, fetched round-robin through the live nodes (nil = no answer).
    func twins(_ ids: [String], width: Int = 8) -> [String: TwinSample?] {
        let alive = live
        let samples = parallelMap(Array(ids.enumerated()), width: width) { (i, id) -> TwinSample? in
            for attempt in 0..<3 {
                if let json = alive[(i + attempt) % alive.count].twin(id), let twin = TwinSample(json) { return twin }
            }
            return nil
        }
        return Dictionary(uniqueKeysWithValues: zip(ids, samples))
    }

    /// Waits until every survivor's dump shows all `count` devices hosted once, on the
    /// survivors only, with no orphan left; returns (detected, restored) times after `since`.
    func awaitRestored(since: Double, victim: String, count: Int, timeout: Double) -> (detected: Double?, restored: Double?) {
        var detected: Double?
        let alive = live
        while Proc.now() - since < timeout {
            let t = Proc.now()
            let dumps = parallelMap(alive) { $0.dump() }
            if detected == nil, dumps.allSatisfy({ $0.map { !$0.ringNodes.contains(victim) } ?? false }) { detected = t - since }
            if dumps.allSatisfy({ dump in
                guard let dump else { return false }
                // Devices plus the per-node processes of every live node.
                return !dump.ringNodes.contains(victim) && dump.registrySize == count + Cluster.perNodeProcesses * alive.count && dump.orphans == 0
                    && dump.contestedNames == 0 && !dump.nodes.contains(where: { $0.name == victim && $0.names > 0 })
            }), dumps.reduce(0, { $0 + ($1?.localNames ?? 0) }) == count + Cluster.perNodeProcesses * alive.count {
                return (detected, t - since)
            }
            Proc.sleep(0.02)
        }
        return (detected, nil)
    }
}

/// Part 2: kill -9 of one of 3 nodes under steady telemetry.
struct KillUnderLoad {
    let cluster: Cluster
    var devices: Int
    var rate: Double?
    var settle: Double = 5
    var desiredSample: Int

    struct Report: Codable {
        var devices: Int
        var rate: Double?
        var victim: String
        var victimDevices: Int
        var detectedSeconds: Double?
        var restoredSeconds: Double?
        var twinsAnswering: Int
        var twinsOnDeadNode: Int
        var desiredSet: Int
        var desiredSurvived: Int
        var desiredLostOnVictim: Int
        var gapsTotal: Int
        var devicesWithGaps: Int
        var maxGapsPerDevice: Int
        var gapsOnVictimDevices: Int
        var duplicatesTotal: Int
        var devicesWithDuplicates: Int
        var lateTotal: Int
        var baselineGaps: Int
        var baselineDuplicates: Int
        var passed: Bool
        var problems: [String]
    }

    func run() throws -> Report {
        let log = cluster.log
        try cluster.startNodes()
        log("3 nodes ready; starting \(devices) devices at \(rate.map { "\($0)/s" } ?? "the profiles' rates")")
        try cluster.startFleet(count: devices, rate: rate, duration: Double(cluster.setup.maxSeconds))
        let ids = try cluster.awaitDevices(count: devices, timeout: 60 + Double(devices) / 40)
        let settled = cluster.converge(since: Proc.now(), timeout: 60, twinSample: 0)
        guard settled.seconds != nil else { throw Proc.Failure(description: "no clean state before the kill: \(settled.lastProblems.prefix(4))") }
        // Desired state on a sample, set before the kill: it must survive.
        let token = "t\(UInt32.random(in: 0...UInt32.max))"
        let sample = Array(ids.prefix(desiredSample))
        let nodes = cluster.live
        let patched = parallelMap(Array(sample.enumerated())) { (i, id) in nodes[i % nodes.count].patchDesired(id, ["chaosToken": token]) }
        log("desired chaosToken set on \(patched.filter { $0 }.count)/\(sample.count) devices; telemetry for 2 s")
        Proc.sleep(2)
        let before = cluster.twins(ids)
        // The victim: the node that hosts the most devices.
        var perNode: [String: Int] = [:]
        for case let twin?? in before.values { perNode[twin.node, default: 0] += 1 }
        let victimName = perNode.max { $0.value < $1.value }?.key ?? "gw-2"
        let victim = cluster.nodes.first { $0.name == victimName }!
        let victimDevices = Set(before.compactMap { $0.value?.node == victimName ? $0.key : nil })
        log("kill -9 \(victimName) (pid \(victim.pid), \(victimDevices.count) device processes)")
        let since = Proc.now()
        victim.kill9()
        let (detected, restored) = cluster.awaitRestored(since: since, victim: victimName, count: devices, timeout: 60)
        log("detected \(detected.map { String(format: "%.3f s", $0) } ?? "never"), every device process running again \(restored.map { String(format: "%.3f s", $0) } ?? "never")")
        let afterKill = cluster.twins(ids)
        let answering = afterKill.values.filter { $0 != nil }.count
        let onDead = afterKill.values.filter { $0?.node == victimName }.count
        let survived = sample.filter { afterKill[$0]??.desiredToken == token }.count
        let lostOnVictim = sample.filter { victimDevices.contains($0) && afterKill[$0]??.desiredToken != token }.count
        log("twins answering \(answering)/\(devices); desired survived \(survived)/\(sample.count); telemetry \(settle) s more")
        Proc.sleep(settle)
        let after = cluster.twins(ids)
        var gaps = 0, withGaps = 0, maxGaps = 0, victimGaps = 0, dups = 0, withDups = 0, late = 0
        for id in ids {
            guard let a = after[id] ?? nil else { continue }
            let b = before[id] ?? nil
            let g = a.gaps - (b?.gaps ?? 0)
            let d = a.duplicates - (b?.duplicates ?? 0)
            gaps += max(0, g)
            if g > 0 { withGaps += 1 }
            maxGaps = max(maxGaps, g)
            if victimDevices.contains(id) { victimGaps += max(0, g) }
            dups += max(0, d)
            if d > 0 { withDups += 1 }
            late += max(0, a.late - (b?.late ?? 0))
        }
        var problems: [String] = []
        if restored == nil { problems.append("device processes not all running again in 60 s") }
        if answering != devices { problems.append("\(devices - answering) twins do not answer") }
        if onDead != 0 { problems.append("\(onDead) twins on the dead node") }
        if survived != patched.filter({ $0 }).count { problems.append("desired state lost on \(patched.filter { $0 }.count - survived) devices") }
        return Report(
            devices: devices, rate: rate, victim: victimName, victimDevices: victimDevices.count,
            detectedSeconds: detected, restoredSeconds: restored, twinsAnswering: answering, twinsOnDeadNode: onDead,
            desiredSet: patched.filter { $0 }.count, desiredSurvived: survived, desiredLostOnVictim: lostOnVictim,
            gapsTotal: gaps, devicesWithGaps: withGaps, maxGapsPerDevice: maxGaps, gapsOnVictimDevices: victimGaps,
            duplicatesTotal: dups, devicesWithDuplicates: withDups, lateTotal: late,
            baselineGaps: before.values.reduce(0) { $0 + ($1?.gaps ?? 0) },
            baselineDuplicates: before.values.reduce(0) { $0 + ($1?.duplicates ?? 0) },
            passed: problems.isEmpty, problems: problems)
    }
}

/// Part 3: the fleet for a bounded period; memory, broker drops, lost and duplicated telemetry.
struct Soak {
    let cluster: Cluster
    var devices: Int
    var rate: Double?
    var seconds: Double
    var sampleEvery: Double = 5

    struct Report: Codable {
        var devices: Int
        var rate: Double?
        var seconds: Double
        /// Per node: VmRSS (KiB) at the first sample after the fleet is up, and at the end.
        var rssStartKiB: [String: Int]
        var rssEndKiB: [String: Int]
        var rssMaxKiB: [String: Int]
        var brokerRssStartKiB: Int?
        var brokerRssEndKiB: Int?
        var brokerDroppedStart: Int?
        var brokerDroppedEnd: Int?
        /// Lines of the broker log reporting dropped messages ("Outgoing messages are being dropped
        /// for client …"; Mosquitto logs that once per client): a second source, because Mosquitto
        /// 2.0.11 does not always have `$SYS/broker/publish/messages/dropped` to give a new subscriber.
        var brokerDropLogLines: Int
        var telemetrySent: Int?
        var telemetrySkipped: Int?
        var telemetryReceived: Int
        var gaps: Int
        var duplicates: Int
        var late: Int
        var devicesWithGaps: Int
        var routeFailed: Int?
        var passed: Bool
        var problems: [String]
    }

    func run() throws -> Report {
        let log = cluster.log
        try cluster.startNodes()
        log("3 nodes ready; \(devices) devices at \(rate.map { "\($0)/s" } ?? "the profiles' rates") for \(Int(seconds)) s")
        let dropped0 = cluster.brokerDropped()
        try cluster.startFleet(count: devices, rate: rate, duration: seconds)
        let start = Proc.now()
        let ids = try cluster.awaitDevices(count: devices, timeout: min(seconds, 60 + Double(devices) / 40))
        func rss() -> [String: Int] {
            Dictionary(uniqueKeysWithValues: cluster.live.compactMap { n in Proc.rssKiB(n.pid).map { (n.name, $0) } })
        }
        let first = rss()
        let brokerPid = Proc.firstChild(of: cluster.broker) ?? cluster.broker
        let brokerFirst = Proc.rssKiB(brokerPid)
        var maximum = first
        log("fleet up after \(String(format: "%.1f", Proc.now() - start)) s; RSS \(first.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value / 1024) MiB" }.joined(separator: " "))")
        var last = first
        while Proc.now() - start < seconds - 0.5 {
            Proc.sleep(min(sampleEvery, max(0.1, seconds - (Proc.now() - start))))
            last = rss()
            for (k, v) in last { maximum[k] = max(maximum[k] ?? 0, v) }
        }
        let brokerLast = Proc.rssKiB(brokerPid)
        let summary = cluster.fleetSummary(timeout: 30)
        Proc.sleep(2)  // the last messages reach their device processes
        let dropped1 = cluster.brokerDropped()
        let brokerLog = (try? String(contentsOfFile: "\(cluster.setup.workDir)/mosquitto.log", encoding: .utf8)) ?? ""
        let dropLines = brokerLog.split(separator: "\n").filter { $0.lowercased().contains("dropped") }.count
        let twins = cluster.twins(ids)
        var received = 0, gaps = 0, dups = 0, late = 0, withGaps = 0
        for case let twin?? in twins.values {
            received += twin.telemetry
            gaps += twin.gaps
            dups += twin.duplicates
            late += twin.late
            if twin.gaps > 0 { withGaps += 1 }
        }
        var routeFailed = 0
        for n in cluster.live {
            if let text = n.get("/metrics").map({ String(decoding: $0.body, as: UTF8.self) }) {
                for line in text.split(separator: "\n") where line.contains("routeFailed") && !line.hasPrefix("#") {
                    routeFailed += Int(Double(line.split(separator: " ").last ?? "") ?? 0)
                }
            }
        }
        let sent = summary?["telemetrySent"] as? Int
        var problems: [String] = []
        if let dropped0, let dropped1, dropped1 > dropped0 { problems.append("broker dropped \(dropped1 - dropped0)") }
        if dropLines > 0 { problems.append("broker log: \(dropLines) lines about dropped messages") }
        if gaps > 0 { problems.append("\(gaps) telemetry gaps") }
        if dups > 0 { problems.append("\(dups) duplicates") }
        if let sent, sent != received { problems.append("sent \(sent), received \(received)") }
        return Report(
            devices: devices, rate: rate, seconds: seconds, rssStartKiB: first, rssEndKiB: last, rssMaxKiB: maximum,
            brokerRssStartKiB: brokerFirst, brokerRssEndKiB: brokerLast, brokerDroppedStart: dropped0, brokerDroppedEnd: dropped1, brokerDropLogLines: dropLines,
            telemetrySent: sent, telemetrySkipped: summary?["telemetrySkipped"] as? Int, telemetryReceived: received,
            gaps: gaps, duplicates: dups, late: late, devicesWithGaps: withGaps, routeFailed: routeFailed,
            passed: problems.isEmpty, problems: problems)
    }
}
