//! `keypal serve`: builds the service's settings from flags, `KEYPAL_*` variables and
//! a settings file, then runs `keypal_server::serve`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use clap::Args;
use keypal_server::{ServeConfig, redact_url};
use tracing_subscriber::EnvFilter;

use crate::deployment::DeploymentArgs;
use crate::error::{CliError, CmdResult, Status};
use crate::io::Out;

/// Arguments of `keypal serve`.
#[derive(Debug, Args)]
#[command(after_help = "Every option can also be set by the KEYPAL_* variable shown with it.\n\
    Precedence: option, then environment variable, then the --config file, then the default.\n\n\
    Secrets are read from the environment only (or from the --config file), never from options:\n  \
    KEYPAL_MASTER_KEY      the master key (32 bytes, hex or base64); unset: read from --key-file;\n                         \
    it must be the one the database was created with (else MASTER_KEY_MISMATCH)\n  \
    KEYPAL_ADMIN_PASSWORD  the admin password; unset on first start: generated and printed once\n  \
    KEYPAL_SERVICE_KEY     the key callers of POST /v1/verify present; unset on first start: generated;\n                         \
    while set, it is not rotated through the API or the panel")]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", env = "KEYPAL_LISTEN", hide_env_values = true)]
    pub listen: Option<SocketAddr>,

    /// The deployment: database, master key file, Redis, settings file.
    #[command(flatten)]
    pub deployment: DeploymentArgs,

    /// With Redis unreachable, let keys with a rate limit through unlimited instead of
    /// refusing them with 503 RATE_LIMITER_UNAVAILABLE.
    #[arg(long, env = "KEYPAL_RATE_LIMIT_FAIL_OPEN", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rate_limit_fail_open: Option<bool>,

    /// How long one rate-limit decision waits for Redis, like 200ms or 1s (at most 1m);
    /// past it the request is refused with 503 RATE_LIMITER_UNAVAILABLE (or let through
    /// with --rate-limit-fail-open) [default: 200ms].
    #[arg(long, value_name = "DURATION", env = "KEYPAL_RATE_LIMIT_TIMEOUT", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub rate_limit_timeout: Option<Duration>,

    /// Largest database connection pool [default: 10].
    #[arg(long, value_name = "N", env = "KEYPAL_MAX_CONNECTIONS", hide_env_values = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// How long a verified result is reused, like `10s` or `500ms` (at most a day) [default: 10s].
    /// Changes made through any instance drop cached results at once; this bounds how
    /// stale a change made elsewhere can be.
    #[arg(long, value_name = "DURATION", env = "KEYPAL_CACHE_TTL", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub cache_ttl: Option<std::time::Duration>,

    /// Verified results kept per application at most [default: 100000].
    #[arg(long, value_name = "N", env = "KEYPAL_CACHE_CAPACITY", hide_env_values = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_capacity: Option<u64>,

    /// Threads that run slow hashes (bcrypt, argon2id), away from the threads serving
    /// requests [default: one per core].
    #[arg(long, value_name = "N", env = "KEYPAL_HASH_WORKERS", hide_env_values = true)]
    pub hash_workers: Option<NonZeroUsize>,

    /// How long a slow hash waits for a free hashing thread before its request is
    /// refused with 503 HASHING_BUSY, like 1s or 250ms [default: 1s].
    #[arg(long, value_name = "DURATION", env = "KEYPAL_HASH_WAIT", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub hash_wait: Option<Duration>,

    /// Count verifications for usage analytics [default: true].
    #[arg(long, value_name = "BOOL", env = "KEYPAL_USAGE_COUNTING", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub usage_counting: Option<bool>,

    /// How long per-minute usage counts are kept, like 48h [default: 48h]; their counts
    /// stay in the hour and day buckets.
    #[arg(long, value_name = "DURATION", env = "KEYPAL_USAGE_MINUTE_RETENTION", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub usage_minute_retention: Option<Duration>,

    /// How long per-hour usage counts are kept, like 90days [default: 90days].
    #[arg(long, value_name = "DURATION", env = "KEYPAL_USAGE_HOUR_RETENTION", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub usage_hour_retention: Option<Duration>,

    /// How long per-day usage counts are kept, like 730days [default: forever].
    #[arg(long, value_name = "DURATION", env = "KEYPAL_USAGE_DAY_RETENTION", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub usage_day_retention: Option<Duration>,
    /// Deliver webhooks to loopback, private, link-local and unique-local addresses too
    /// (for tests and private networks) [default: false].
    #[arg(long, env = "KEYPAL_WEBHOOKS_ALLOW_PRIVATE", num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhooks_allow_private: Option<bool>,

    /// How long before a key expires the key.expiring webhook event fires, comma
    /// separated, like 7d,1d [default: 7d,1d].
    #[arg(long, value_name = "DURATIONS", env = "KEYPAL_WEBHOOK_EXPIRY_WARNINGS", hide_env_values = true,
          value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub webhook_expiry_warnings: Option<Vec<Duration>>,

    /// How often keys are scanned for the expiry webhook events, like 1m [default: 1m].
    #[arg(long, value_name = "DURATION", env = "KEYPAL_WEBHOOK_SCAN_INTERVAL", hide_env_values = true,
          value_parser = humantime::parse_duration)]
    pub webhook_scan_interval: Option<Duration>,

    /// Log filter, like `info` or `keypal_server=debug,info` [default: info].
    #[arg(long, value_name = "FILTER", env = "KEYPAL_LOG", hide_env_values = true)]
    pub log: Option<String>,

    /// Print the settings that would be used (secrets only as set/unset) and exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs `keypal serve`.
pub fn run(args: &ServeArgs) -> CmdResult {
    let config = settings(args)?;
    let filter = EnvFilter::try_new(&config.log).map_err(|e| CliError::caused("the log filter (--log)", &e))?;
    if args.check {
        print_settings(&config)?;
        return Ok(Status::Success);
    }
    // Only `try_init` errors if a subscriber is already set, which cannot happen here.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::caused("cannot start the async runtime", &e))?;
    runtime.block_on(start(config))?;
    Ok(Status::Success)
}

/// The settings: options and `KEYPAL_*` variables (read by clap) over the `--config`
/// file over the defaults; secrets from their variables, over the file (the
/// deployment's settings are those of every command that opens it).
fn settings(args: &ServeArgs) -> Result<ServeConfig, CliError> {
    let mut config = args.deployment.settings()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(open) = args.rate_limit_fail_open {
        config.rate_limit_fail_open = open;
    }
    if let Some(timeout) = args.rate_limit_timeout {
        config.rate_limit_timeout = keypal::config::HumanDuration(timeout);
    }
    if let Some(max) = args.max_connections {
        config.max_connections = max;
    }
    if let Some(ttl) = args.cache_ttl {
        config.cache_ttl = keypal::config::HumanDuration(ttl);
    }
    if let Some(capacity) = args.cache_capacity {
        config.cache_capacity = capacity;
    }
    if let Some(workers) = args.hash_workers {
        config.hash_workers = Some(workers);
    }
    if let Some(wait) = args.hash_wait {
        config.hash_wait = keypal::config::HumanDuration(wait);
    }
    if let Some(counting) = args.usage_counting {
        config.usage_counting = counting;
    }
    if let Some(kept) = args.usage_minute_retention {
        config.usage_minute_retention = keypal::config::HumanDuration(kept);
    }
    if let Some(kept) = args.usage_hour_retention {
        config.usage_hour_retention = keypal::config::HumanDuration(kept);
    }
    if let Some(kept) = args.usage_day_retention {
        config.usage_day_retention = Some(keypal::config::HumanDuration(kept));
    }
    if let Some(allow) = args.webhooks_allow_private {
        config.webhooks_allow_private = allow;
    }
    if let Some(warnings) = &args.webhook_expiry_warnings {
        config.webhook_expiry_warnings = warnings.iter().copied().map(keypal::config::HumanDuration).collect();
    }
    if let Some(every) = args.webhook_scan_interval {
        config.webhook_scan_interval = keypal::config::HumanDuration(every);
    }
    if let Some(log) = &args.log {
        config.log.clone_from(log);
    }
    Ok(config)
}

/// The settings, one per line; URL passwords redacted and secrets shown as set or unset.
fn print_settings(config: &ServeConfig) -> Result<(), CliError> {
    let set = |secret: &Option<String>| if secret.is_some() { "set" } else { "unset" };
    let mut out = Out::new();
    let mut line = |name: &str, value: &str| out.line(&format!("{name:<21} {value}"));
    line("listen", &config.listen.to_string())?;
    line("database_url", &redact_url(&config.database_url))?;
    line("database_schema", config.database_schema.as_deref().unwrap_or("unset"))?;
    line("max_connections", &config.max_connections.to_string())?;
    line("key_file", &config.key_file.display().to_string())?;
    line("master_key", set(&config.master_key))?;
    line("admin_password", set(&config.admin_password))?;
    line("service_key", set(&config.service_key))?;
    line("redis_url", &config.redis_url.as_deref().map_or_else(|| "unset".to_owned(), redact_url))?;
    line("redis_prefix", &config.redis_prefix)?;
    line("rate_limit_fail_open", &config.rate_limit_fail_open.to_string())?;
    line("rate_limit_timeout", &config.rate_limit_timeout.to_string())?;
    line("cache_ttl", &config.cache_ttl.to_string())?;
    line("cache_capacity", &config.cache_capacity.to_string())?;
    let workers = config.hash_workers();
    line(
        "hash_workers",
        &if config.hash_workers.is_some() { workers.to_string() } else { format!("{workers} (one per core)") },
    )?;
    line("hash_wait", &config.hash_wait.to_string())?;
    line("usage_counting", &config.usage_counting.to_string())?;
    line("usage_minute_retention", &retention(config.usage_minute_retention))?;
    line("usage_hour_retention", &retention(config.usage_hour_retention))?;
    line("usage_day_retention", &config.usage_day_retention.map_or_else(|| "forever".to_owned(), retention))?;
    line("webhooks_allow_private", &config.webhooks_allow_private.to_string())?;
    let warnings: Vec<String> = config.webhook_expiry_warnings.iter().map(ToString::to_string).collect();
    line("webhook_expiry_warnings", &warnings.join(","))?;
    line("webhook_scan_interval", &config.webhook_scan_interval.to_string())?;
    line("log", &config.log)?;
    out.finish()
}

/// A retention as people write it: whole days as `90days` (humantime would say
/// `2months 29days 2h 52m 48s`), anything else as humantime does.
fn retention(kept: keypal::config::HumanDuration) -> String {
    let seconds = kept.0.as_secs();
    if seconds > 0 && seconds.is_multiple_of(86_400) && kept.0.subsec_nanos() == 0 {
        format!("{}days", seconds / 86_400)
    } else {
        kept.to_string()
    }
}

/// Runs the service until SIGTERM or Ctrl-C; a failure is reported with its stable code.
async fn start(config: ServeConfig) -> Result<(), CliError> {
    keypal_server::serve(config).await.map_err(|e| {
        let code = e.code();
        CliError::caused(format!("keypal serve [{code}]"), &e)
    })
}
