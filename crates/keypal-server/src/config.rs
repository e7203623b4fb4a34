//! What `keypal serve` runs with: the listen address, the database, the secrets.
//!
//! Every field can come from a TOML file (`--config keypal.toml`), from a
//! `KEYPAL_*` environment variable, or from a command-line flag; the command line
//! wins over the environment, which wins over the file, which wins over the defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use keypal::config::HumanDuration;
use serde::Deserialize;

/// The settings of one `keypal serve` process.
///
/// ```
/// let config = keypal_server::ServeConfig::from_toml(r#"
///     listen = "0.0.0.0:9000"
///     database_url = "postgres://keypal@db/keys"
/// "#)?;
/// assert_eq!(config.listen.port(), 9000);
/// assert_eq!(config.key_file, std::path::PathBuf::from("keypal.key"));
/// # Ok::<(), keypal_server::ServeConfigError>(())
/// ```
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Where to listen (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `sqlite://keypal.db` (default, created if missing) or `postgres://...`.
    pub database_url: String,
    /// PostgreSQL: keep keypal's tables in this schema (created if missing).
    pub database_schema: Option<String>,
    /// Largest database pool (default 10).
    pub max_connections: u32,
    /// The master key (32 bytes as 64 hex characters or base64). When unset, it is
    /// read from `key_file`, which is created with a new random key on first start.
    pub master_key: Option<String>,
    /// Where the master key lives when `master_key` is unset (default `keypal.key`, mode 0600).
    pub key_file: PathBuf,
    /// The admin password. When unset on first start, one is generated and printed once.
    pub admin_password: Option<String>,
    /// The service key callers of `POST /v1/verify` present. When unset on first start,
    /// one is generated and printed once.
    pub service_key: Option<String>,
    /// Redis, for rate limits and cache invalidation shared by several instances.
    pub redis_url: Option<String>,
    /// The prefix of keypal's keys and channel in Redis (default `keypal:`).
    pub redis_prefix: String,
    /// With Redis unreachable, let keys with a rate limit through unlimited (default
    /// false: they are refused with 503 `RATE_LIMITER_UNAVAILABLE`).
    pub rate_limit_fail_open: bool,
    /// How long one rate-limit decision waits for Redis, connecting included (default
    /// `200ms`); past it the request is refused with 503 `RATE_LIMITER_UNAVAILABLE`
    /// (or let through, with `rate_limit_fail_open`).
    pub rate_limit_timeout: HumanDuration,
    /// How long a verified result is reused (default `10s`, at most a day). Changes made
    /// through any instance drop the entry at once (with Redis or PostgreSQL announcing
    /// them); this bounds how stale a change made elsewhere can be.
    pub cache_ttl: HumanDuration,
    /// Verified results kept per application at most (default 100 000).
    pub cache_capacity: u64,
    /// Threads that run slow hashes (bcrypt, argon2id), away from the threads that
    /// serve requests (default: one per core).
    pub hash_workers: Option<NonZeroUsize>,
    /// How long a slow hash waits for a free hashing thread before its request is
    /// refused with 503 `HASHING_BUSY` (default 1 s).
    pub hash_wait: HumanDuration,
    /// Count verifications for usage analytics (default true). Off, nothing is counted:
    /// `GET /v1/analytics/verifications` and the dashboards show no new verifications.
    pub usage_counting: bool,
    /// How long per-minute usage counts are kept (default `48h`); older ones are
    /// dropped, their counts staying in the hour and day buckets.
    pub usage_minute_retention: HumanDuration,
    /// How long per-hour usage counts are kept (default `90days`); older ones are
    /// dropped, their counts staying in the day buckets. At least `usage_minute_retention`.
    pub usage_hour_retention: HumanDuration,
    /// How long per-day usage counts are kept (default: forever). At least `usage_hour_retention`.
    pub usage_day_retention: Option<HumanDuration>,
    /// Deliver webhooks to loopback, private, link-local and unique-local addresses too
    /// (default false: refused when a webhook is made, and after resolving its host at
    /// each delivery).
    pub webhooks_allow_private: bool,
    /// How long before a key expires `key.expiring` fires (default `["7d", "1d"]`).
    pub webhook_expiry_warnings: Vec<HumanDuration>,
    /// How often keys are scanned for expiry events (default `1m`).
    pub webhook_scan_interval: HumanDuration,
    /// The log filter, like `info` or `keypal_server=debug` (default `info`).
    pub log: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://keypal.db".to_owned(),
            database_schema: None,
            max_connections: 10,
            master_key: None,
            key_file: PathBuf::from("keypal.key"),
            admin_password: None,
            service_key: None,
            redis_url: None,
            redis_prefix: "keypal:".to_owned(),
            rate_limit_fail_open: false,
            rate_limit_timeout: HumanDuration(Duration::from_millis(200)),
            cache_ttl: keypal::config::CacheConfig::default().ttl,
            cache_capacity: keypal::config::CacheConfig::default().capacity,
            hash_workers: None,
            hash_wait: HumanDuration(Duration::from_secs(1)),
            usage_counting: true,
            usage_minute_retention: HumanDuration(keypal_sql::Retention::default().minutes),
            usage_hour_retention: HumanDuration(keypal_sql::Retention::default().hours),
            usage_day_retention: None,
            webhooks_allow_private: false,
            webhook_expiry_warnings: vec![
                HumanDuration(Duration::from_secs(7 * 86_400)),
                HumanDuration(Duration::from_secs(86_400)),
            ],
            webhook_scan_interval: HumanDuration(Duration::from_secs(60)),
            log: "info".to_owned(),
        }
    }
}

/// Secrets never appear in debug output.
impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_schema", &self.database_schema)
            .field("max_connections", &self.max_connections)
            .field("master_key", &redacted(&self.master_key))
            .field("key_file", &self.key_file)
            .field("admin_password", &redacted(&self.admin_password))
            .field("service_key", &redacted(&self.service_key))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("rate_limit_fail_open", &self.rate_limit_fail_open)
            .field("rate_limit_timeout", &self.rate_limit_timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("cache_capacity", &self.cache_capacity)
            .field("hash_workers", &self.hash_workers)
            .field("hash_wait", &self.hash_wait)
            .field("usage_counting", &self.usage_counting)
            .field("usage_minute_retention", &self.usage_minute_retention)
            .field("usage_hour_retention", &self.usage_hour_retention)
            .field("usage_day_retention", &self.usage_day_retention)
            .field("webhooks_allow_private", &self.webhooks_allow_private)
            .field("webhook_expiry_warnings", &self.webhook_expiry_warnings)
            .field("webhook_scan_interval", &self.webhook_scan_interval)
            .field("log", &self.log)
            .finish()
    }
}

/// A URL with its password (if any) replaced: `postgres://user:[redacted]@host/db`.
///
/// ```
/// assert_eq!(keypal_server::redact_url("postgres://u:secret@h/db"), "postgres://u:[redacted]@h/db");
/// assert_eq!(keypal_server::redact_url("sqlite://keypal.db"), "sqlite://keypal.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings. The parser's quote of the line
    /// is left out, and so is its message when the line sets a secret (a key, a
    /// password, a URL that may hold one): no secret is ever printed.
    #[error("invalid configuration ({place}): {message}")]
    Parse {
        /// `line N`, or `syntax` when the parser names no line.
        place: String,
        /// What is wrong.
        message: String,
    },
}

/// The settings whose values are secrets, or may hold one.
const SECRET_SETTINGS: [&str; 5] = ["master_key", "admin_password", "service_key", "database_url", "redis_url"];

impl ServeConfigError {
    fn parse(text: &str, error: &toml::de::Error) -> Self {
        let line = error.span().and_then(|span| text.get(..span.start)).map(|before| before.matches('\n').count() + 1);
        let secret = line
            .and_then(|n| text.lines().nth(n - 1))
            .is_some_and(|l| SECRET_SETTINGS.iter().any(|name| l.trim_start().starts_with(name)));
        let message = if secret {
            "invalid value (details hidden: this line sets a secret)".to_owned()
        } else {
            error.message().trim().to_owned()
        };
        let place = line.map_or_else(|| "syntax".to_owned(), |n| format!("line {n}"));
        ServeConfigError::Parse { place, message }
    }
}

impl ServeConfig {
    /// Parses settings from TOML text (unknown keys are errors).
    ///
    /// ```
    /// let error = keypal_server::ServeConfig::from_toml("admin_password = \"hunter2").unwrap_err();
    /// assert!(!error.to_string().contains("hunter2"), "{error}");
    /// let error = keypal_server::ServeConfig::from_toml("\nmax_connections = \"many\"").unwrap_err();
    /// assert!(error.to_string().starts_with("invalid configuration (line 2): "), "{error}");
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, ServeConfigError> {
        toml::from_str(text).map_err(|e| ServeConfigError::parse(text, &e))
    }

    /// The number of hashing threads: `hash_workers`, else one per core.
    ///
    /// ```
    /// let config = keypal_server::ServeConfig::from_toml("hash_workers = 3\nhash_wait = \"250ms\"")?;
    /// assert_eq!(config.hash_workers(), 3);
    /// assert_eq!(config.hash_wait.0, std::time::Duration::from_millis(250));
    /// # Ok::<(), keypal_server::ServeConfigError>(())
    /// ```
    pub fn hash_workers(&self) -> usize {
        self.hash_workers.or_else(|| std::thread::available_parallelism().ok()).map_or(1, NonZeroUsize::get)
    }

    /// How long usage counts are kept, per bucket size.
    ///
    /// ```
    /// let config = keypal_server::ServeConfig::from_toml("usage_minute_retention = \"6h\"\nusage_day_retention = \"730days\"")?;
    /// let retention = config.usage_retention();
    /// assert_eq!(retention.minutes.as_secs(), 6 * 3600);
    /// assert_eq!(retention.hours.as_secs(), 90 * 86_400);
    /// assert_eq!(retention.days.map(|d| d.as_secs()), Some(730 * 86_400));
    /// # Ok::<(), keypal_server::ServeConfigError>(())
    /// ```
    pub fn usage_retention(&self) -> keypal_sql::Retention {
        keypal_sql::Retention::new(
            self.usage_minute_retention.0,
            self.usage_hour_retention.0,
            self.usage_day_retention.map(|d| d.0),
        )
    }

    /// Reads settings from a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ServeConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ServeConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }
}
