//! The transport-independent half of keypal's cross-node cache invalidation: what
//! `keypal_redis::RedisBus` (Redis pub/sub) and `keypal_sql::PgBus` (PostgreSQL
//! `LISTEN`/`NOTIFY`) share.
//!
//! - [`BusSink::spawn`] starts the publishing task: the [`EventSink`] queues each
//!   change to an existing key without blocking, and the task sends the queue in
//!   batches (duplicates dropped), retrying with backoff (50 ms doubling to 5 s). When
//!   the queue overflows meanwhile, one [`Invalidation::All`] goes out instead of what
//!   was dropped.
//! - [`BusSubscription::spawn`] starts the subscription task: every message heard goes
//!   to a handler. A subscription silent for the ping interval is checked; when it is
//!   lost, the task listens again with backoff and hands the handler `All` (messages
//!   sent meanwhile are lost).
//!
//! A bus supplies a [`Transport`] (send a batch, open a [`Listener`]) and nothing else.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! use keypal::Invalidation;
//! use keypal_bus::{BusSubscription, Heard, Listener, Transport};
//! use tokio::sync::broadcast;
//!
//! /// Instances in one process, on one broadcast channel.
//! struct Local(broadcast::Sender<Invalidation>);
//! struct LocalListener(broadcast::Receiver<Invalidation>);
//!
//! impl Transport for Local {
//!     type Listener = LocalListener;
//!     type Error = broadcast::error::SendError<Invalidation>;
//!
//!     async fn send(&self, batch: &[Invalidation]) -> Result<(), Self::Error> {
//!         batch.iter().try_for_each(|message| self.0.send(message.clone()).map(drop))
//!     }
//!
//!     async fn listen(&self) -> Result<LocalListener, Self::Error> {
//!         Ok(LocalListener(self.0.subscribe()))
//!     }
//! }
//!
//! impl Listener for LocalListener {
//!     async fn recv(&mut self) -> Heard {
//!         match self.0.recv().await {
//!             Ok(message) => Heard::Message(message),
//!             Err(broadcast::error::RecvError::Lagged(_)) => Heard::Resubscribed,
//!             Err(broadcast::error::RecvError::Closed) => Heard::Closed,
//!         }
//!     }
//!
//!     async fn check(&mut self) -> bool {
//!         true
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let transport = Arc::new(Local(broadcast::channel(16).0));
//! let heard = Arc::new(Mutex::new(Vec::new()));
//! let log = Arc::clone(&heard);
//! let first = transport.listen().await?;
//! let subscription = BusSubscription::spawn(Arc::clone(&transport), first, Duration::from_secs(30), move |message| {
//!     log.lock().unwrap().push(message)
//! });
//! transport.send(&[Invalidation::Settings]).await?;
//! while heard.lock().unwrap().is_empty() {
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//! }
//! assert_eq!(*heard.lock().unwrap(), [Invalidation::Settings]);
//! assert_eq!((subscription.received(), subscription.reconnects()), (1, 0));
//! # Ok::<(), broadcast::error::SendError<Invalidation>>(())
//! # }).unwrap();
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keypal::{Event, EventSink, Invalidation};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// How many announcements may wait for the publishing task; past that they are
/// replaced by one `all`.
const QUEUE: usize = 4096;
/// At most this many announcements go out in one batch.
const BATCH: usize = 256;
/// The first and the longest wait between attempts to send (or to listen) again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));
/// How long the check of a silent subscription may take to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A way to carry invalidation messages between instances (see the crate's example).
pub trait Transport: Send + Sync + 'static {
    /// A subscription opened by [`Transport::listen`].
    type Listener: Listener;
    /// Why sending or listening failed.
    type Error: Send;

    /// Sends `batch` in order (the publishing task passes no duplicates, and `All` alone).
    fn send(&self, batch: &[Invalidation]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Opens a subscription, within the transport's own time limit.
    fn listen(&self) -> impl Future<Output = Result<Self::Listener, Self::Error>> + Send;

    /// Whether the transport is closed for good (its connection pool closed): the
    /// tasks end instead of trying again.
    fn is_closed(&self) -> bool {
        false
    }
}

/// What a [`Listener`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Heard {
    /// A message. A text that is not an invalidation (a newer keypal's) is heard as
    /// [`Invalidation::All`].
    Message(Invalidation),
    /// The subscription was lost and the transport made it again by itself: what was
    /// sent meanwhile is lost.
    Resubscribed,
    /// The subscription was lost: the task listens again.
    Lost,
    /// The transport is closed for good: the task ends.
    Closed,
}

/// A live subscription.
pub trait Listener: Send + 'static {
    /// Waits for the next message, or for what happened instead.
    fn recv(&mut self) -> impl Future<Output = Heard> + Send;

    /// Whether the subscription still answers, asked after a silence of the ping
    /// interval: `false` (or no answer within 5 s) counts as lost.
    fn check(&mut self) -> impl Future<Output = bool> + Send;
}

/// Shared by the sinks and the publishing task.
#[derive(Debug, Default)]
struct QueueState {
    /// Set when an announcement could not be queued: send `all` next.
    overflowed: AtomicBool,
    /// Wakes the publishing task after an overflow.
    wake: Notify,
}

/// The [`EventSink`] of a bus: queues `key:<id>` for each change to an existing key
/// (never blocks). The publishing task ends when every clone is dropped.
#[derive(Debug, Clone)]
pub struct BusSink {
    queue: mpsc::Sender<Invalidation>,
    state: Arc<QueueState>,
}

impl BusSink {
    /// Spawns the publishing task of `transport` (inside a Tokio runtime) and returns
    /// the sink that feeds it.
    pub fn spawn<T: Transport>(transport: Arc<T>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let state = Arc::new(QueueState::default());
        tokio::spawn(publish_queued(transport, rx, Arc::clone(&state)));
        Self { queue, state }
    }
}

impl EventSink for BusSink {
    fn record(&self, event: &Event) {
        if let Some(message) = Invalidation::from_event(event)
            && self.queue.try_send(message).is_err()
        {
            self.state.overflowed.store(true, Ordering::Release);
            self.state.wake.notify_one();
        }
    }

    /// A verification changes nothing other instances hold: nothing to announce.
    fn record_verification(&self, _verified: &keypal::VerificationEvent<'_>) {}
}

/// The publishing task: takes queued announcements in batches and sends each batch,
/// retrying with backoff until it goes through.
async fn publish_queued<T: Transport>(transport: Arc<T>, mut rx: mpsc::Receiver<Invalidation>, state: Arc<QueueState>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            received = rx.recv_many(&mut batch, BATCH) => if received == 0 { return },
            () = state.wake.notified() => {}
        }
        let mut delay = BACKOFF.0;
        loop {
            if state.overflowed.swap(false, Ordering::AcqRel) || batch.contains(&Invalidation::All) {
                batch.clear();
                batch.push(Invalidation::All);
            }
            if batch.is_empty() {
                break;
            }
            let mut seen = HashSet::with_capacity(batch.len());
            batch.retain(|m| seen.insert(m.clone()));
            match transport.send(&batch).await {
                Ok(()) => break,
                // Nobody is left to send for, or nowhere to send to.
                Err(_) if rx.is_closed() || transport.is_closed() => return,
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF.1);
                }
            }
        }
        batch.clear();
    }
}

/// Counters of a subscription.
#[derive(Debug, Default)]
struct Stats {
    reconnects: AtomicU64,
    received: AtomicU64,
}

/// A running subscription. Dropping it ends its task.
#[derive(Debug)]
#[must_use = "dropping the subscription ends it"]
pub struct BusSubscription {
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

impl BusSubscription {
    /// Spawns the subscription task (inside a Tokio runtime): hands every message of
    /// `first`, then of the subscriptions that replace it, to `handler` (inline: keep it
    /// fast, for example [`Invalidation::apply`]). A panicking handler is contained
    /// (the message is skipped). A subscription silent for `ping_interval` is checked.
    pub fn spawn<T: Transport>(
        transport: Arc<T>,
        first: T::Listener,
        ping_interval: Duration,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(listen(transport, first, ping_interval, handler, Arc::clone(&stats)));
        Self { task, stats }
    }

    /// How many times the subscription was lost and made again (each followed by `All`).
    pub fn reconnects(&self) -> u64 {
        self.stats.reconnects.load(Ordering::Relaxed)
    }

    /// How many messages were received (not counting the `All` after a reconnect).
    pub fn received(&self) -> u64 {
        self.stats.received.load(Ordering::Relaxed)
    }

    /// Whether the task still runs (it ends when the transport closes for good).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for BusSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Calls `handler`, containing a panic.
fn deliver(handler: &(impl Fn(Invalidation) + Send + Sync), message: Invalidation) {
    let _ = catch_unwind(AssertUnwindSafe(|| handler(message)));
}

/// The subscription task: hands messages over until the subscription is lost, then
/// listens again, says `All`, and goes on.
async fn listen<T: Transport>(
    transport: Arc<T>,
    mut listener: T::Listener,
    ping_interval: Duration,
    handler: impl Fn(Invalidation) + Send + Sync + 'static,
    stats: Arc<Stats>,
) {
    loop {
        loop {
            match tokio::time::timeout(ping_interval, listener.recv()).await {
                Ok(Heard::Message(message)) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    deliver(&handler, message);
                }
                Ok(Heard::Resubscribed) => {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    deliver(&handler, Invalidation::All);
                }
                Ok(Heard::Lost) => break,
                Ok(Heard::Closed) => return,
                Err(_silent) => {
                    if !matches!(tokio::time::timeout(CHECK_TIMEOUT, listener.check()).await, Ok(true)) {
                        break;
                    }
                }
            }
        }
        drop(listener);
        let mut delay = BACKOFF.0;
        listener = loop {
            if transport.is_closed() {
                return;
            }
            match transport.listen().await {
                Ok(listener) => break listener,
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
