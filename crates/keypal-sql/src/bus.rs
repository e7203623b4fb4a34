//! [`PgBus`]: cross-node cache invalidation over PostgreSQL `LISTEN`/`NOTIFY`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use keypal::Invalidation;
use keypal_bus::{BusSink, Heard, Listener, Transport};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// A running subscription (see [`PgBus::subscribe`]). Dropping it ends the task.
pub use keypal_bus::BusSubscription;
/// The [`EventSink`](keypal::EventSink) of a [`PgBus`] (see [`PgBus::event_sink`]).
pub type PgBusSink = BusSink;

/// How long connecting (and starting to listen) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default time without a notification after which the listening connection is checked.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// The longest channel name PostgreSQL keeps (`NAMEDATALEN - 1`).
const MAX_CHANNEL: usize = 63;
/// Sends one notification per element of `$2` on channel `$1`, in order, in one
/// statement. A notification is sent by a commit; this one does not wait for its WAL
/// flush (`synchronous_commit` off for the statement's own transaction): a notification
/// is not worth a disk round trip, and one lost in a crash is covered by the `All` of
/// the listeners' reconnection.
const NOTIFY: &str = "SELECT pg_notify($1, m) \
    FROM (SELECT set_config('synchronous_commit', 'off', true)) AS s, \
    unnest($2::text[]) WITH ORDINALITY AS t(m, i) ORDER BY i";

/// Why a [`PgBus`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgBusError {
    /// The prefix is not lowercase letters, digits and underscores, or makes a channel
    /// name longer than PostgreSQL's 63 bytes.
    #[error(
        "invalid bus prefix {prefix:?}: use lowercase letters, digits and underscores, at most {} bytes",
        MAX_CHANNEL - "invalidate".len()
    )]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// The URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached.
    #[error("cannot reach the database: {0}")]
    Unreachable(#[source] sqlx::Error),
}

impl PgBusError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PgBusError::InvalidPrefix { .. } => "BUS_PREFIX_INVALID",
            PgBusError::InvalidUrl(_) => "DATABASE_URL_INVALID",
            PgBusError::Unreachable(_) => "DATABASE_UNREACHABLE",
        }
    }
}

/// Cross-node cache invalidation on PostgreSQL `LISTEN`/`NOTIFY`, for several keypal
/// instances sharing one database (no Redis needed).
///
/// Every instance notifies what it changed on the channel `{prefix}invalidate`
/// (`pg_notify`, text forms of [`Invalidation`]) and listens on it on a connection
/// of its own:
///
/// - [`PgBus::event_sink`] is an [`EventSink`](keypal::EventSink) for the [`keypal::KeyManager`]: each
///   change to an existing key (not `verified`, `created` or `imported`) is queued
///   without blocking and sent as `key:<id>` by a background task, in batches of one
///   statement. A failed send is retried with backoff; if the queue overflows
///   meanwhile, `all` is sent instead of what was dropped.
/// - [`PgBus::publish`] announces anything else (`app:<id>`, `settings`) and waits for the database.
/// - [`PgBus::subscribe`] hands every notification to a handler. When the listening
///   connection is lost (an error, or no answer to the idle check) the task connects
///   again (sqlx's own reconnection first, then a new listener with backoff) and, once
///   listening again, calls the handler with [`Invalidation::All`]: notifications sent
///   meanwhile are lost. A payload that is not an invalidation (a newer keypal's) is
///   handed over as `All` too.
///
/// Channels are per database: instances whose keys live in different schemas of one
/// database need different prefixes (for example `{schema}_`). An instance also
/// receives its own notifications; applying them again is harmless. Must be created
/// inside a Tokio runtime (it spawns its publishing task).
///
/// ```no_run
/// use std::sync::Arc;
/// use keypal::{Invalidation, KeyManager};
/// use keypal_sql::{PgBus, PostgresStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let url = "postgres://keypal@db.internal/keys";
/// let bus = PgBus::connect(url, "keypal_").await?;
/// let store = PostgresStore::connect(url).await?;
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
#[derive(Debug, Clone)]
pub struct PgBus {
    transport: Arc<Notifications>,
    ping_interval: Duration,
    sink: BusSink,
}

/// The channel, notified through the pool and listened to on connections of its own.
#[derive(Debug)]
struct Notifications {
    pool: PgPool,
    channel: String,
}

/// The channel for `prefix`, if the prefix is a plain lowercase identifier part and the
/// channel fits in PostgreSQL's 63 bytes.
fn channel_for(prefix: &str) -> Result<String, PgBusError> {
    let channel = format!("{prefix}invalidate");
    if prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') && channel.len() <= MAX_CHANNEL
    {
        Ok(channel)
    } else {
        Err(PgBusError::InvalidPrefix { prefix: prefix.to_owned() })
    }
}

impl PgBus {
    /// Connects to `url` with a small pool of its own (application name `keypal-bus`;
    /// each subscription holds one connection) and announces on `{prefix}invalidate`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, PgBusError> {
        channel_for(prefix)?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            let reason = format!("unsupported scheme {scheme:?}: use postgres://USER@HOST/DATABASE");
            return Err(PgBusError::InvalidUrl(sqlx::Error::Configuration(reason.into())));
        }
        let options = PgConnectOptions::from_str(url).map_err(PgBusError::InvalidUrl)?.application_name("keypal-bus");
        let options = options.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(PgBusError::Unreachable)?;
        Self::new(pool, prefix)
    }

    /// A bus on an existing pool (for example [`crate::PostgresStore::pool`]): each
    /// subscription holds one of its connections. Closing the pool ends the subscriptions.
    ///
    /// Must be called inside a Tokio runtime: it spawns the publishing task, which
    /// ends when the bus and all its sinks are dropped.
    pub fn new(pool: PgPool, prefix: &str) -> Result<Self, PgBusError> {
        let transport = Arc::new(Notifications { pool, channel: channel_for(prefix)? });
        let sink = BusSink::spawn(Arc::clone(&transport));
        Ok(Self { transport, ping_interval: PING_INTERVAL, sink })
    }

    /// How long the listening connection may stay silent before it is checked (30 s by
    /// default); a check that fails or goes unanswered counts as a lost connection.
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
    pub fn event_sink(&self) -> PgBusSink {
        self.sink.clone()
    }

    /// Sends `message` now (for changes that are not key events: `app:<id>`,
    /// `settings`). Sending [`Invalidation::All`] makes every subscriber drop its
    /// whole cache. Payloads are limited to 8000 bytes by PostgreSQL.
    pub async fn publish(&self, message: &Invalidation) -> Result<(), sqlx::Error> {
        self.transport.send(std::slice::from_ref(message)).await
    }

    /// Starts listening, then spawns a task handing every notification on the channel
    /// to `handler` (inline: keep it fast, for example [`Invalidation::apply`]).
    /// Returns once `LISTEN` is in place; after any later loss of the connection the
    /// task listens again (with backoff, 50 ms doubling to 5 s) and calls
    /// `handler(Invalidation::All)` once it does. A panicking handler is contained (the
    /// message is skipped). Dropping the returned [`BusSubscription`] ends the task.
    pub async fn subscribe(
        &self,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> Result<BusSubscription, sqlx::Error> {
        let first = self.transport.listen().await?;
        Ok(BusSubscription::spawn(Arc::clone(&self.transport), first, self.ping_interval, handler))
    }
}

impl Transport for Notifications {
    type Listener = Listening;
    type Error = sqlx::Error;

    /// One statement, one notification per message.
    async fn send(&self, batch: &[Invalidation]) -> Result<(), sqlx::Error> {
        notify(&self.pool, &self.channel, batch).await
    }

    async fn listen(&self) -> Result<Listening, sqlx::Error> {
        listen_on(&self.pool, &self.channel).await.map(Listening)
    }

    fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// A connection listening on the channel.
struct Listening(PgListener);

impl Listener for Listening {
    async fn recv(&mut self) -> Heard {
        match self.0.try_recv().await {
            Ok(Some(notification)) => Heard::Message(notification.payload().parse().unwrap_or(Invalidation::All)),
            // The connection was lost and sqlx has already connected again and
            // re-issued LISTEN (eager reconnection): anything sent in between is lost.
            Ok(None) => Heard::Resubscribed,
            Err(sqlx::Error::PoolClosed) => Heard::Closed,
            // Lost, and sqlx could not connect again: start over with a new listener.
            Err(_) => Heard::Lost,
        }
    }

    async fn check(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

async fn notify(pool: &PgPool, channel: &str, messages: &[Invalidation]) -> Result<(), sqlx::Error> {
    let payloads: Vec<String> = messages.iter().map(ToString::to_string).collect();
    sqlx::query(NOTIFY).bind(channel).bind(payloads).execute(pool).await.map(drop)
}

/// A listener on a connection of `pool`, listening on `channel`, within [`CONNECT_TIMEOUT`].
async fn listen_on(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let attempt = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        Ok(listener)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_plain_identifiers_postgres_keeps_whole() {
        assert_eq!(channel_for("keypal_").ok().as_deref(), Some("keypal_invalidate"));
        assert_eq!(channel_for("").ok().as_deref(), Some("invalidate"));
        assert!(channel_for(&"a".repeat(53)).is_ok());
        for prefix in ["Keypal_", "key-pal_", "a\"b", "kp:", &"a".repeat(54)] {
            assert!(matches!(channel_for(prefix), Err(PgBusError::InvalidPrefix { .. })), "{prefix:?}");
        }
    }
}
