//! [`RedisBus`]: cross-node cache invalidation over Redis pub/sub.

use std::collections::HashSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use keypal::{Event, EventSink, Invalidation};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, RedisError};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::error::RedisStoreError;

/// How long connecting (and subscribing) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may take to answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many announcements may wait for the publishing task; past that they are
/// replaced by one `all`.
const QUEUE: usize = 4096;
/// At most this many announcements go out in one pipeline.
const BATCH: usize = 256;
/// The first and the longest wait between reconnection (or republishing) attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));
/// The default time without a message after which the subscription is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Cross-node cache invalidation on Redis pub/sub, for several keypal instances
/// sharing one store.
///
/// Every instance publishes what it changed on the channel `{prefix}invalidate`
/// (`PUBLISH`, text forms of [`Invalidation`]) and subscribes to it on a connection
/// of its own:
///
/// - [`RedisBus::event_sink`] is an [`EventSink`] for the [`keypal::KeyManager`]: each
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
    client: Client,
    conn: ConnectionManager,
    channel: Arc<str>,
    ping_interval: Duration,
    queue: mpsc::Sender<Invalidation>,
    state: Arc<QueueState>,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus").field("channel", &self.channel).finish_non_exhaustive()
    }
}

/// Shared by the senders and the publishing task.
#[derive(Debug, Default)]
struct QueueState {
    /// Set when an announcement could not be queued: publish `all` next.
    overflowed: AtomicBool,
    /// Wakes the publishing task after an overflow.
    wake: Notify,
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
        let channel: Arc<str> = Arc::from(format!("{prefix}invalidate"));
        let (queue, rx) = mpsc::channel(QUEUE);
        let state = Arc::new(QueueState::default());
        tokio::spawn(publish_queued(conn.clone(), Arc::clone(&channel), rx, Arc::clone(&state)));
        Self { client, conn, channel, ping_interval: PING_INTERVAL, queue, state }
    }

    /// How long a subscription may stay silent before it is pinged (30 s by default);
    /// an unanswered ping counts as a lost subscription.
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The channel: `{prefix}invalidate`.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// An [`EventSink`] that announces every change to an existing key as `key:<id>`
    /// (queued; never blocks). Add it to the [`keypal::KeyManager`] whose changes
    /// other instances must hear about.
    pub fn event_sink(&self) -> RedisBusSink {
        RedisBusSink { queue: self.queue.clone(), state: Arc::clone(&self.state) }
    }

    /// Publishes `message` now (for changes that are not key events: `app:<id>`,
    /// `settings`). Publishing [`Invalidation::All`] makes every subscriber drop its
    /// whole cache.
    pub async fn publish(&self, message: &Invalidation) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH").arg(&*self.channel).arg(message.to_string()).query_async::<()>(&mut conn).await
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
        let first = subscribe_once(&self.client, &self.channel).await?;
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(listen(
            self.client.clone(),
            Arc::clone(&self.channel),
            self.ping_interval,
            first,
            handler,
            Arc::clone(&stats),
        ));
        Ok(BusSubscription { task, stats })
    }
}

/// The [`EventSink`] of a [`RedisBus`] (see [`RedisBus::event_sink`]).
#[derive(Debug, Clone)]
pub struct RedisBusSink {
    queue: mpsc::Sender<Invalidation>,
    state: Arc<QueueState>,
}

impl EventSink for RedisBusSink {
    fn record(&self, event: &Event) {
        if let Some(message) = Invalidation::from_event(event)
            && self.queue.try_send(message).is_err()
        {
            self.state.overflowed.store(true, Ordering::Release);
            self.state.wake.notify_one();
        }
    }
}

/// Counters of a subscription.
#[derive(Debug, Default)]
struct Stats {
    reconnects: AtomicU64,
    received: AtomicU64,
}

/// A running subscription (see [`RedisBus::subscribe`]). Dropping it ends the task.
#[derive(Debug)]
#[must_use = "dropping the subscription ends it"]
pub struct BusSubscription {
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

impl BusSubscription {
    /// How many times the subscription was lost and made again (each followed by `All`).
    pub fn reconnects(&self) -> u64 {
        self.stats.reconnects.load(Ordering::Relaxed)
    }

    /// How many messages were received (not counting the `All` after a reconnect).
    pub fn received(&self) -> u64 {
        self.stats.received.load(Ordering::Relaxed)
    }

    /// Whether the task still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for BusSubscription {
    fn drop(&mut self) {
        self.task.abort();
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

/// Calls `handler`, containing a panic.
fn deliver(handler: &(impl Fn(Invalidation) + Send + Sync), message: Invalidation) {
    let _ = catch_unwind(AssertUnwindSafe(|| handler(message)));
}

/// The subscription task: hands messages over until the connection is lost, then
/// reconnects, says `All`, and goes on.
async fn listen(
    client: Client,
    channel: Arc<str>,
    ping_interval: Duration,
    first: (PubSubSink, PubSubStream),
    handler: impl Fn(Invalidation) + Send + Sync + 'static,
    stats: Arc<Stats>,
) {
    let (mut sink, mut stream) = first;
    loop {
        loop {
            match tokio::time::timeout(ping_interval, stream.next()).await {
                Ok(Some(msg)) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let message = msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|text| text.parse::<Invalidation>().ok())
                        .unwrap_or(Invalidation::All);
                    deliver(&handler, message);
                }
                Ok(None) => break,
                Err(_idle) => {
                    let pong = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        drop((sink, stream));
        let mut delay = BACKOFF.0;
        (sink, stream) = loop {
            match subscribe_once(&client, &channel).await {
                Ok(subscribed) => break subscribed,
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF.1);
                }
            }
        };
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        deliver(&handler, Invalidation::All);
    }
}

/// The publishing task: takes queued announcements in batches and publishes each
/// batch as one pipeline, retrying with backoff until it goes through.
async fn publish_queued(
    mut conn: ConnectionManager,
    channel: Arc<str>,
    mut rx: mpsc::Receiver<Invalidation>,
    state: Arc<QueueState>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            received = rx.recv_many(&mut batch, BATCH) => if received == 0 { return },
            () = state.wake.notified() => {}
        }
        let mut delay = BACKOFF.0;
        loop {
            if state.overflowed.swap(false, Ordering::AcqRel) {
                batch.clear();
                batch.push(Invalidation::All);
            }
            if batch.is_empty() {
                break;
            }
            if batch.contains(&Invalidation::All) {
                batch.clear();
                batch.push(Invalidation::All);
            }
            let mut seen = HashSet::with_capacity(batch.len());
            batch.retain(|m| seen.insert(m.clone()));
            let mut pipe = redis::pipe();
            for message in &batch {
                pipe.cmd("PUBLISH").arg(&*channel).arg(message.to_string()).ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => break,
                // Nobody is left to publish for.
                Err(_) if rx.is_closed() => return,
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF.1);
                }
            }
        }
        batch.clear();
    }
}
