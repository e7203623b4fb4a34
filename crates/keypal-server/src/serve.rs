//! Starting, running and stopping the service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cluster::{Bus, Subscription};
use crate::config::{ServeConfig, redact_url};
use crate::deployment::{Deployment, DeploymentError};
use crate::hashing::HashPool;
use crate::state::{BootError, Generated, Shared, State};
use keypal_redis::{FailMode, RedisRateLimiter, RedisStoreError};

/// How often pending `last_used_at` times and the usage counts of ended minutes are written.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// How often ended minutes of usage counts are rolled up into the coarser rows and
/// expired rows dropped (and once at start). A roll-up writes each key's coarser rows once
/// however many minutes it adds, so rarer is cheaper; reads add the minutes not rolled up
/// yet, so rarer makes rankings over many keys read more of them.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The database and the master key could not be opened together (see [`Deployment::open`]).
    #[error(transparent)]
    Deployment(#[from] DeploymentError),
    /// Loading settings and applications failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Redis could not be used.
    #[error("Redis: {0}")]
    Redis(#[from] RedisStoreError),
    /// The change announcement bus could not be set up.
    #[error("the change announcement bus: {0}")]
    Bus(#[source] keypal_sql::PgBusError),
    /// Subscribing to other instances' change announcements failed.
    #[error("subscribing to change announcements failed: {0}")]
    BusSubscribe(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Redis did not answer at start (with fail-closed rate limits, keypal does not start without it).
    #[error("cannot reach Redis: {0}")]
    RedisUnreachable(#[source] keypal_redis::RateLimitUnavailable),
    /// A setting is out of its range.
    #[error("the setting {name} {message}")]
    Setting {
        /// The setting, as in the configuration file.
        name: &'static str,
        /// What is wrong.
        message: &'static str,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The threads that run slow hashes could not be started.
    #[error("cannot start the hashing threads: {0}")]
    HashPool(#[source] std::io::Error),
    /// The HTTP client of webhook deliveries could not be made.
    #[error("cannot make the webhook client: {0}")]
    WebhookClient(String),
    /// The server failed while running.
    #[error("the server failed: {0}")]
    Io(#[source] std::io::Error),
}

impl ServeError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::Deployment(e) => e.code(),
            ServeError::Boot(_) => "BOOT_FAILED",
            ServeError::Redis(e) => e.code(),
            ServeError::RedisUnreachable(_) => "REDIS_UNREACHABLE",
            ServeError::Bus(e) => e.code(),
            ServeError::BusSubscribe(_) => "BUS_UNAVAILABLE",
            ServeError::Setting { .. } => "INVALID_SETTING",
            ServeError::Bind { .. } => "LISTEN_FAILED",
            ServeError::HashPool(_) => "HASH_POOL_FAILED",
            ServeError::WebhookClient(_) => "WEBHOOK_CLIENT_FAILED",
            ServeError::Io(_) => "SERVER_FAILED",
        }
    }
}

/// A bound, ready server.
pub struct Server {
    state: Arc<State>,
    /// Other instances' change announcements, applied while this is alive.
    _subscription: Option<Subscription>,
    listener: TcpListener,
    generated: Generated,
    /// How long usage counts are kept.
    retention: keypal_sql::Retention,
    /// The HTTP client of webhook deliveries.
    webhook_client: crate::webhooks::delivery::Client,
}

impl Server {
    /// Opens the deployment (the database and the master key, checked against each
    /// other), loads applications and settings (generating the admin password and
    /// service key on first start), and binds.
    pub async fn bind(config: &ServeConfig) -> Result<Self, ServeError> {
        // Settings first: a wrong one is reported before anything is opened or created.
        let cache = cache_config(config)?;
        let retention = usage_retention(config)?;
        let Deployment { store, secrets, created_key_file } = Deployment::open(config).await?;
        if let Some(file) = created_key_file {
            tracing::info!(file = %file.0, "created a new master key file (mode 0600); back it up: recoverable keys need it");
        }
        let webhook_settings = webhook_settings(config)?;
        let webhook_client = crate::webhooks::delivery::Client::new(webhook_settings.allow_private)
            .map_err(ServeError::WebhookClient)?;
        let mut shared = shared_state(config, cache).await?;
        shared.uncounted = !config.usage_counting;
        shared.webhooks = webhook_settings;
        let hash_pool = HashPool::start(config.hash_workers(), config.hash_wait.0).map_err(ServeError::HashPool)?;
        tracing::info!(threads = hash_pool.workers(), wait = ?config.hash_wait.0, "slow hashes run on their own threads");
        shared.hash_pool = Some(hash_pool);
        let bus = Bus::for_config(config, &store).await?;
        if let Some(bus) = &bus {
            shared.sinks.push(bus.sink());
            shared.bus = Some(bus.clone());
        }
        let (state, generated) = State::boot(
            Arc::new(store),
            Arc::new(secrets),
            shared,
            config.admin_password.as_deref(),
            config.service_key.as_deref(),
        )
        .await?;
        let subscription = match &bus {
            Some(bus) => Some(bus.subscribe(Arc::downgrade(&state)).await?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        Ok(Server { state, _subscription: subscription, listener, generated, retention, webhook_client })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::Io)
    }

    /// Every route over this server's state, to drive the service in-process without
    /// its listener: tests and fuzzing send requests with tower's `ServiceExt::oneshot`.
    /// Such requests carry no client address (the audit log shows `0.0.0.0`).
    ///
    /// ```
    /// use axum::body::Body;
    /// use axum::http::{Request, StatusCode};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = keypal_server::ServeConfig::default();
    /// config.listen = ([127, 0, 0, 1], 0).into();
    /// config.database_url = "sqlite::memory:".into();
    /// config.master_key = Some("0f".repeat(32));
    /// config.admin_password = Some("correct horse battery staple".into());
    /// let server = keypal_server::Server::bind(&config).await?;
    /// let response = server.router().oneshot(Request::get("/healthz").body(Body::empty())?).await?;
    /// assert_eq!(response.status(), StatusCode::OK);
    /// # Ok(())
    /// # }
    /// ```
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.state.clone())
    }

    /// The admin password and service key generated on this first start, if any.
    pub fn generated(&self) -> &Generated {
        &self.generated
    }

    /// Serves until `shutdown` completes, then writes pending `last_used_at` times and
    /// usage counts. Webhooks are dispatched, sent and scanned for meanwhile (an attempt
    /// cut short by the shutdown is sent again by the next claim of its delivery).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let state = self.state.clone();
        let flusher = tokio::spawn({
            let state = state.clone();
            async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    state.flush_closed().await;
                }
            }
        });
        let pruner = tokio::spawn({
            let state = state.clone();
            let retention = self.retention;
            async move {
                let mut tick = tokio::time::interval(PRUNE_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    state.prune_usage(&retention).await;
                }
            }
        });
        let mut webhook_tasks = vec![
            tokio::spawn(crate::webhooks::dispatcher::run(state.clone())),
            tokio::spawn(crate::webhooks::delivery::run(state.clone(), self.webhook_client.clone())),
            tokio::spawn(crate::webhooks::scan::run(state.clone())),
        ];
        let signals = state.webhook_signals.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(receiver) = signals {
            webhook_tasks.push(tokio::spawn(crate::webhooks::scan::run_signals(state.clone(), receiver)));
        }
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        flusher.abort();
        pruner.abort();
        for task in webhook_tasks {
            task.abort();
        }
        state.flush().await;
        state.store.close().await;
        tracing::info!("stopped; pending writes flushed");
        served.map_err(ServeError::Io)
    }
}

/// The rate limiter shared through Redis, when `redis_url` is set.
async fn shared_state(config: &ServeConfig, cache: keypal::config::CacheConfig) -> Result<Shared, ServeError> {
    let mut shared = Shared { cache, ..Shared::default() };
    let Some(url) = &config.redis_url else { return Ok(shared) };
    let mode = if config.rate_limit_fail_open { FailMode::Open } else { FailMode::Closed };
    let limiter = RedisRateLimiter::builder(config.redis_prefix.clone())
        .fail_mode(mode)
        .timeout(config.rate_limit_timeout.0)
        .connect(url)
        .await?;
    if let Err(e) = limiter.ping().await {
        if mode == FailMode::Closed {
            return Err(ServeError::RedisUnreachable(e));
        }
        tracing::warn!(error = %e, "Redis is unreachable; rate limits are not enforced until it is back (fail-open)");
    }
    tracing::info!(redis = %redact_url(url), "rate limits shared through Redis");
    shared.limiter = Some(limiter);
    Ok(shared)
}

/// How long usage counts are kept: each retention longer than zero, hours at least as
/// long as minutes, days at least as long as hours.
fn usage_retention(config: &ServeConfig) -> Result<keypal_sql::Retention, ServeError> {
    let retention = config.usage_retention();
    if retention.minutes.is_zero() {
        return Err(ServeError::Setting { name: "usage_minute_retention", message: "must be longer than zero" });
    }
    if retention.hours < retention.minutes {
        return Err(ServeError::Setting {
            name: "usage_hour_retention",
            message: "must be at least usage_minute_retention",
        });
    }
    if retention.days.is_some_and(|days| days < retention.hours) {
        return Err(ServeError::Setting {
            name: "usage_day_retention",
            message: "must be at least usage_hour_retention",
        });
    }
    Ok(retention)
}

/// The longest `cache_ttl`: a cached result outliving a change made elsewhere by more
/// than a day is not a cache any more.
const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

/// The verified-result cache every application's manager uses.
fn cache_config(config: &ServeConfig) -> Result<keypal::config::CacheConfig, ServeError> {
    let ttl = config.cache_ttl.0;
    if ttl.is_zero() || ttl > MAX_CACHE_TTL {
        return Err(ServeError::Setting { name: "cache_ttl", message: "must be longer than zero and at most 1 day" });
    }
    if config.rate_limit_timeout.0.is_zero() || config.rate_limit_timeout.0 > Duration::from_secs(60) {
        return Err(ServeError::Setting {
            name: "rate_limit_timeout",
            message: "must be longer than zero and at most 1 minute",
        });
    }
    if config.cache_capacity == 0 {
        return Err(ServeError::Setting { name: "cache_capacity", message: "must be at least 1" });
    }
    Ok(keypal::config::CacheConfig { ttl: config.cache_ttl, capacity: config.cache_capacity, ..Default::default() })
}

/// The webhook settings of `config` (warnings between a minute and a year, at most 8;
/// a scan every second to every day).
fn webhook_settings(config: &ServeConfig) -> Result<crate::webhooks::WebhookSettings, ServeError> {
    let warnings: Vec<Duration> = config.webhook_expiry_warnings.iter().map(|w| w.0).collect();
    let in_range = |w: &Duration| *w >= Duration::from_secs(60) && *w <= Duration::from_secs(366 * 86_400);
    if warnings.len() > 8 || !warnings.iter().all(in_range) {
        return Err(ServeError::Setting {
            name: "webhook_expiry_warnings",
            message: "must be at most 8 durations, each between 1 minute and 366 days",
        });
    }
    let scan_every = config.webhook_scan_interval.0;
    if scan_every < Duration::from_secs(1) || scan_every > Duration::from_secs(86_400) {
        return Err(ServeError::Setting {
            name: "webhook_scan_interval",
            message: "must be between 1 second and 1 day",
        });
    }
    Ok(crate::webhooks::WebhookSettings {
        allow_private: config.webhooks_allow_private,
        expiry_warnings: warnings,
        scan_every,
    })
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// `keypal serve`: runs the service until SIGTERM or Ctrl-C. Secrets generated on first
/// start are printed once, to standard output.
pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let server = Server::bind(&config).await?;
    let generated = server.generated();
    if let Some(password) = &generated.admin_password {
        println!("keypal: generated the admin password (shown once): {password}");
    }
    if let Some(key) = &generated.service_key {
        println!("keypal: generated the service key (shown once; also under GET /v1/service-key): {key}");
    }
    let addr = server.local_addr()?;
    println!("keypal: listening on http://{addr}");
    tracing::info!(%addr, "listening");
    server.run(shutdown_signal()).await
}
