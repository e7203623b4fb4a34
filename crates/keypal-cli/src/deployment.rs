//! The settings that name a deployment (its database, master key, Redis and `--config`
//! file), shared by `keypal serve` and the operator's commands (`keypal tokens ...`), and
//! opening that deployment for a command: the same options, `KEYPAL_*` variables and
//! precedence everywhere, and the same master-key check as `keypal serve`.

use std::path::PathBuf;

use clap::Args;
use keypal_server::operator::Operator;
use keypal_server::{Deployment, ServeConfig};

use crate::error::CliError;
use crate::io::secret_from_env;

/// The environment variables holding the deployment's secrets. Secrets are never flags:
/// a flag shows in process lists and shell history.
const MASTER_KEY_ENV: &str = "KEYPAL_MASTER_KEY";
/// See [`MASTER_KEY_ENV`].
const ADMIN_PASSWORD_ENV: &str = "KEYPAL_ADMIN_PASSWORD";
/// See [`MASTER_KEY_ENV`].
const SERVICE_KEY_ENV: &str = "KEYPAL_SERVICE_KEY";

/// What the help of a command that opens a deployment says about its secrets.
pub const MASTER_KEY_HELP: &str = "The master key is read from the environment only (or from the --config file), \
    never from an option:\n  KEYPAL_MASTER_KEY  the master key (32 bytes, hex or base64); unset: read from \
    --key-file;\n                     it must be the one the database was created with (else MASTER_KEY_MISMATCH)";

/// The options naming a deployment, each also from its `KEYPAL_*` variable.
#[derive(Debug, Clone, Args)]
pub struct DeploymentArgs {
    /// Database: sqlite://keypal.db (created if missing) or postgres://user@host/db
    /// [default: sqlite://keypal.db].
    #[arg(long, value_name = "URL", env = "KEYPAL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL: keep keypal's tables in this schema (created if missing).
    #[arg(long, value_name = "SCHEMA", env = "KEYPAL_DATABASE_SCHEMA", hide_env_values = true)]
    pub database_schema: Option<String>,

    /// Settings file (TOML with the same names: listen, database_url, max_connections,
    /// key_file, redis_url, hash_workers, hash_wait, log, ...).
    #[arg(long, value_name = "FILE", env = "KEYPAL_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,

    /// Where the master key lives when KEYPAL_MASTER_KEY is unset (created with a new
    /// random key on first start) [default: keypal.key].
    #[arg(long, value_name = "FILE", env = "KEYPAL_KEY_FILE", hide_env_values = true)]
    pub key_file: Option<PathBuf>,

    /// Redis, for rate limits and cache invalidation shared by several instances.
    #[arg(long, value_name = "URL", env = "KEYPAL_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of keypal's keys and channel in Redis [default: keypal:].
    #[arg(long, value_name = "PREFIX", env = "KEYPAL_REDIS_PREFIX", hide_env_values = true)]
    pub redis_prefix: Option<String>,
}

impl DeploymentArgs {
    /// The settings: these options and their `KEYPAL_*` variables (read by clap) over the
    /// `--config` file over the defaults; secrets from their variables, over the file.
    pub fn settings(&self) -> Result<ServeConfig, CliError> {
        let mut config = match &self.config {
            Some(path) => ServeConfig::from_file(path).map_err(|e| CliError::caused("--config", &e))?,
            None => ServeConfig::default(),
        };
        if let Some(url) = &self.database_url {
            config.database_url.clone_from(url);
        }
        if let Some(schema) = &self.database_schema {
            config.database_schema = Some(schema.clone());
        }
        if let Some(path) = &self.key_file {
            config.key_file.clone_from(path);
        }
        if let Some(url) = &self.redis_url {
            config.redis_url = Some(url.clone());
        }
        if let Some(prefix) = &self.redis_prefix {
            config.redis_prefix.clone_from(prefix);
        }
        for (name, field) in [
            (MASTER_KEY_ENV, &mut config.master_key),
            (ADMIN_PASSWORD_ENV, &mut config.admin_password),
            (SERVICE_KEY_ENV, &mut config.service_key),
        ] {
            if let Some(secret) = secret_from_env(name)? {
                // `ServeConfig` holds secrets as `String`s; this copy is the one it keeps.
                *field = Some(String::from_utf8_lossy(secret.expose()).into_owned());
            }
        }
        Ok(config)
    }

    /// Opens the deployment these settings name (its database and master key, checked
    /// against each other as `keypal serve` checks them), runs `work` on it, and closes
    /// it. A failure to open is reported with its stable code.
    pub fn run<T>(&self, work: impl AsyncFnOnce(&Deployment) -> Result<T, CliError>) -> Result<T, CliError> {
        let config = self.settings()?;
        runtime()?.block_on(async {
            let deployment = open(&config).await?;
            let result = work(&deployment).await;
            deployment.store.close().await;
            result
        })
    }

    /// Opens the deployment as [`DeploymentArgs::run`] does, with its applications and
    /// its bus (PostgreSQL `NOTIFY`, or Redis with `--redis-url`) for the operator's
    /// commands, runs `work`, and closes it.
    pub fn operate<T>(&self, work: impl AsyncFnOnce(&Operator) -> Result<T, CliError>) -> Result<T, CliError> {
        let config = self.settings()?;
        runtime()?.block_on(async {
            let deployment = open(&config).await?;
            let operator = Operator::open(deployment, &config).await.map_err(|e| {
                let code = e.code();
                CliError::caused(format!("cannot open the deployment [{code}]"), &e)
            })?;
            let result = work(&operator).await;
            operator.close().await;
            result
        })
    }
}

/// The runtime a command's async work runs on.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::caused("cannot start the async runtime", &e))
}

/// Opens the deployment `config` names, saying on stderr when a new master key file was made.
async fn open(config: &ServeConfig) -> Result<Deployment, CliError> {
    let deployment = Deployment::open(config).await.map_err(|e| {
        let code = e.code();
        CliError::caused(format!("cannot open the deployment [{code}]"), &e)
    })?;
    if let Some(file) = &deployment.created_key_file {
        eprintln!("keypal: created a new master key file {} (mode 0600); back it up", file.0);
    }
    Ok(deployment)
}
