import Logging
import MQTT

/// This node's MQTT clients, one per configured broker, in configuration order.
///
/// Multi-broker policy (devices sharded over brokers): inbound messages are tagged with the id of
/// the broker they came through, and the device process records it in the twin (`broker`).
/// Downlink to a device goes to that broker; when it is not known (never heard from the device, or
/// a broker id this node does not have), it goes to every broker (a device is connected to one
/// of them; the others have no subscriber for its topics).
final class BrokerPool: Sendable {
    struct Entry: Sendable {
        let id: String
        let client: MQTTClient
    }

    let entries: [Entry]

    init(entries: [Entry]) {
        self.entries = entries
    }

    /// The clients to publish on for a device last seen through `broker`.
    func clients(for broker: String?) -> [MQTTClient] {
        if entries.count == 1 { return [entries[0].client] }
        if let broker, let entry = entries.first(where: { $0.id == broker }) { return [entry.client] }
        return entries.map(\.client)
    }

    /// Publishes and waits for the broker's acknowledgement; succeeds when at least one broker
    /// accepted it, else throws the last error.
    func publish(_ message: MQTTMessage, broker: String?) async throws {
        var lastError: (any Error)?
        var accepted = false
        for client in clients(for: broker) {
            do {
                try await client.publish(message)
                accepted = true
            } catch {
                lastError = error
            }
        }
        if !accepted, let lastError { throw lastError }
    }

    /// Queues the message without waiting; true when at least one broker's client queued it.
    func publishWithoutWaiting(_ message: MQTTMessage, broker: String?) -> Bool {
        var queued = false
        for client in clients(for: broker) where (try? client.publishWithoutWaiting(message)) != nil {
            queued = true
        }
        return queued
    }
}
