import GatewayStore

/// The event stream's settings (``GatewaySettings/events``). Every field has a documented default.
public struct EventSettings: Sendable {
    /// How long events are kept (the store's retention window; a cursor older than what is kept
    /// is answered 410 `cursorExpired`). Default 1 hour.
    public var retention: Duration = .seconds(3600)
    /// At most this many events are kept in the store (the size bound of the retention window:
    /// the oldest go first). Default 2,000,000 (about 0.6–1 GB of SQLite at 300–500 bytes per
    /// event).
    public var maxStored = 2_000_000
    /// Events kept in memory on each node for live consumers and recent cursors (older cursors
    /// are served from the store). Default 100,000.
    public var bufferSize = 100_000
    /// The store, or nil for an in-memory stream only (then the buffer is the retention window).
    public var store: (any EventStore)?
    /// How often a node sends the events its device processes emitted to the other nodes (a
    /// batch per node per interval while events flow). Default 2 ms.
    public var flushInterval: Duration = .milliseconds(2)
    /// How often an idle node tells the others that it has emitted nothing new (what lets them
    /// release the events of busy nodes: see ``EventHub``). Default 10 ms.
    public var tickInterval: Duration = .milliseconds(10)
    /// Events are written to the store at most this long after they were released. Default 500 ms.
    public var writeBehindInterval: Duration = .milliseconds(500)
    /// How often the retention window and the size bound are enforced. Default 5 s.
    public var purgeInterval: Duration = .seconds(5)
    /// After a node starts, it releases nothing for this long (the cluster's join grace), so
    /// the first events it serves are ordered with every other node's. Default 1 s.
    public var startHold: Duration = .seconds(1)
    /// Also publish every event on the broker, QoS 1, on `{brokerTopicPrefix}/{type}/{device}`
    /// (by the node that hosts the device). Default false.
    public var toBroker = false
    /// Topic prefix of ``toBroker``. Default `events`.
    public var brokerTopicPrefix = "events"
    /// Server-Sent Events heartbeat comment interval. Default 15 s.
    public var heartbeat: Duration = .seconds(15)
    /// Webhooks: most events per POST. Default 500.
    public var webhookBatchSize = 500
    /// Webhooks: how long a batch waits for more events before it is sent. Default 50 ms.
    public var webhookLinger: Duration = .milliseconds(50)
    /// Webhooks: time limit of one POST. Default 10 s.
    public var webhookTimeout: Duration = .seconds(10)
    /// Webhooks: first retry delay, doubled per failed attempt up to ``webhookMaxRetryDelay``,
    /// each with ±50 % jitter. Default 200 ms.
    public var webhookRetryDelay: Duration = .milliseconds(200)
    /// Webhooks: longest retry delay. Default 30 s.
    public var webhookMaxRetryDelay: Duration = .seconds(30)
    /// Sends webhook POSTs (``HTTPWebhookTransport`` in GatewayHTTP); nil: the webhook API
    /// answers 503. Default nil.
    public var webhookTransport: (any WebhookTransport)?

    public init() {}
}
