//! [`RedisBus`]: cross-node cache invalidation over Redis pub/sub.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use keypal::Invalidation;
use keypal_bus::{BusSink, Heard, Listener, Transport};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, RedisError};

use crate::error::RedisStoreError;

/// A running subscription (see [`RedisBus::subscribe`]). Dropping it ends the task.
pub use keypal_bus::BusSubscription;
/// The [`EventSink`](keypal::EventSink) of a [`RedisBus`] (see [`RedisBus::event_sink`]).
pub type RedisBusSink = BusSink;

/// How long connecting (and subscribing) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take to answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time without a message after which the subscription is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Cross-node cache invalidation on Redis pub/sub, for several keypal instances
/// sharing one store.
///
/// Every instance publishes what it changed on the channel `{prefix}invalidate`
/// (`PUBLISH`, text forms of [`Invalidation`]) and subscribes to it on a connection
/// of its own:
///
/// - [`RedisBus::event_sink`] is an [`EventSink`](keypal::EventSink) for the [`keypal::KeyManager`]: each
///   change to an existing key (not `verified`, `created` or `imported`) is queued
///   without blocking and published as `key:<id>` by a background task, in pipelined
///   batches. A failed publish is retried with backoff; if the queue overflows
///   meanwhile, `all` is published instead of what was dropped.
/// - [`RedisBus::publish`] announces anything else (`app:<id>`, `settings`) and waits for Redis.
/// - [`RedisBus::subscribe`] hands every message to a handler. When the subscription
///   is lost (the connection closed, or an idle ping went unanswered) the task
///   reconnects with backoff and, once subscribed again, calls the handler with
///   [`Invalidation::All`]: messages published meanwhile are lost. A message that is
///   not an invalidation (a newer keypal's) is handed over as `All` too.
///
/// An instance also receives its own messages; applying them again is harmless.
/// Must be created inside a Tokio runtime (it spawns its publishing task).
///
/// ```no_run
/// use std::sync::Arc;
/// use keypal::{Invalidation, KeyManager};
/// use keypal_redis::{RedisBus, RedisStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = RedisBus::connect("redis://127.0.0.1:6379", "keypal:").await?;
/// let store = RedisStore::connect("redis://127.0.0.1:6379", "keypal:").await?;
/// let keys = Arc::new(KeyManager::builder().store(store).event_sink(bus.event_sink()).build()?);
///
/// let cache = Arc::clone(&keys);
/// let subscription = bus.subscribe(move |message: Invalidation| message.apply(&cache)).await?;
///
/// bus.publish(&Invalidation::Settings).await?; // after changing settings
/// // ... serve; dropping `subscription` ends it.
/// # drop(subscription);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    transport: Arc<PubSub>,
    ping_interval: Duration,
    sink: BusSink,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus").field("channel", &self.transport.channel).finish_non_exhaustive()
    }
}

/// The channel, published to through the shared connection and subscribed to on
/// connections of its own.
struct PubSub {
    /// Opens the subscriptions' connections (RESP2).
    client: Client,
    conn: ConnectionManager,
    channel: String,
}

impl RedisBus {
    /// Connects to `url` and announces on `{prefix}invalidate` (use the store's prefix,
    /// for example `keypal:`, so that instances of one store, and only they, hear each other).
    ///
    /// Publishing speaks RESP3 unless the URL names a protocol (as
    /// [`crate::RedisStore::connect`] does); subscriptions always use RESP2 connections.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, RedisStoreError> {
        let mut info = url.into_connection_info().map_err(RedisStoreError::InvalidUrl)?;
        if !url.contains("protocol=") {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = Client::open(info).map_err(RedisStoreError::InvalidUrl)?;
        // One plain attempt first: an unreachable server is reported now.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(RedisStoreError::Unreachable)?;
        redis::cmd("PING").query_async::<()>(&mut probe).await.map_err(RedisStoreError::Unreachable)?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(2));
        let conn =
            ConnectionManager::new_with_config(client.clone(), config).await.map_err(RedisStoreError::Unreachable)?;
        Ok(Self::new(client, conn, prefix))
    }

    /// A bus that publishes through `conn` (for example [`crate::RedisStore::connection`])
    /// and subscribes on connections of its own opened by `client` (as RESP2, whatever
    /// protocol `client` names).
    ///
    /// Must be called inside a Tokio runtime: it spawns the publishing task, which
    /// ends when the bus and all its sinks are dropped.
    pub fn new(client: Client, conn: ConnectionManager, prefix: &str) -> Self {
        // Subscriptions need a RESP2 connection (redis-rs's dedicated pub/sub connection).
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP2);
        let client = Client::open(info.set_redis_settings(settings)).unwrap_or(client);
        let transport = Arc::new(PubSub { client, conn, channel: format!("{prefix}invalidate") });
        let sink = BusSink::spawn(Arc::clone(&transport));
        Self { transport, ping_interval: PING_INTERVAL, sink }
    }

    /// How long a subscription may stay silent before it is pinged (30 s by default);
    /// an unanswered ping counts as a lost subscription.
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The channel: `{prefix}invalidate`.
    pub fn channel(&self) -> &str {
        &self.transport.channel
    }

    /// An [`EventSink`](keypal::EventSink) that announces every change to an existing
    /// key as `key:<id>` (queued; never blocks). Add it to the [`keypal::KeyManager`]
    /// whose changes other instances must hear about.
    pub fn event_sink(&self) -> RedisBusSink {
        self.sink.clone()
    }

    /// Publishes `message` now (for changes that are not key events: `app:<id>`,
    /// `settings`). Publishing [`Invalidation::All`] makes every subscriber drop its
    /// whole cache.
    pub async fn publish(&self, message: &Invalidation) -> Result<(), RedisError> {
        self.transport.send(std::slice::from_ref(message)).await
    }

    /// Subscribes, then spawns a task handing every message on the channel to
    /// `handler` (inline: keep it fast, for example [`Invalidation::apply`]).
    /// Returns once the first subscription is confirmed; after any later loss of it,
    /// the task reconnects with backoff (50 ms doubling to 5 s) and calls
    /// `handler(Invalidation::All)` once subscribed again. A panicking handler is
    /// contained (the message is skipped). Dropping the returned [`BusSubscription`] ends the task.
    pub async fn subscribe(
        &self,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<BusSubscription, RedisError> {
        let first = self.transport.listen().await?;
        Ok(BusSubscription::spawn(Arc::clone(&self.transport), first, self.ping_interval, handler))
    }
}

impl Transport for PubSub {
    type Listener = Subscribed;
    type Error = RedisError;

    /// One pipeline of `PUBLISH`es.
    async fn send(&self, batch: &[Invalidation]) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        for message in batch {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(message.to_string()).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    async fn listen(&self) -> Result<Subscribed, RedisError> {
        let (sink, stream) = subscribe_once(&self.client, &self.channel).await?;
        Ok(Subscribed { sink, stream })
    }
}

/// A pub/sub connection subscribed to the channel.
struct Subscribed {
    sink: PubSubSink,
    stream: PubSubStream,
}

impl Listener for Subscribed {
    async fn recv(&mut self) -> Heard {
        match self.stream.next().await {
            Some(msg) => Heard::Message(
                msg.get_payload::<String>()
                    .ok()
                    .and_then(|text| text.parse::<Invalidation>().ok())
                    .unwrap_or(Invalidation::All),
            ),
            None => Heard::Lost,
        }
    }

    async fn check(&mut self) -> bool {
        self.sink.ping::<redis::Value>().await.is_ok()
    }
}

/// Opens a pub/sub connection and subscribes to `channel`, within [`CONNECT_TIMEOUT`].
async fn subscribe_once(client: &Client, channel: &str) -> Result<(PubSubSink, PubSubStream), RedisError> {
    let timed_out = || RedisError::from((redis::ErrorKind::Io, "timed out subscribing"));
    let attempt = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok((sink, stream))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err(timed_out()))
}
