//! Opening a deployment: its database and its master key, checked against each other.
//!
//! Everything secret in the database hangs on the master key: HMAC-hashed keys need its
//! pepper, applications are found by a keyed digest of their client secret, recoverable
//! keys and the service key are sealed under it. A process with another master key
//! would open the database and then quietly refuse every client secret and HMAC-hashed
//! key. So the database records a check value of the master key on first start
//! ([`Secrets::check_value`]), and every later process (`keypal serve` or a command
//! opening the database) must match it before it does anything else.

use keypal::StoreError;
use keypal_sql::{SqlError, SqlOptions, SqlStore};
use serde_json::json;

use crate::config::{ServeConfig, redact_url};
use crate::secrets::{CHECK_LABEL, CreatedKeyFile, Secrets, SecretsError};
use crate::state::{SERVICE_KEY, SETTING};

/// The setting that holds the master key's check value.
const CHECK_ID: &str = "master_key_check";

/// Why a deployment could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The master key is not the one the database was created with.
    #[error(
        "the master key from {source_name} does not match the one this database was created with; \
         set KEYPAL_MASTER_KEY (or the key file) to this deployment's master key: every instance and \
         command on one database needs the same key"
    )]
    MasterKeyMismatch {
        /// Where the master key came from (never the key).
        source_name: String,
    },
    /// The database holds data sealed under a master key, and none is set.
    #[error(
        "this database was created with a master key and none is set (KEYPAL_MASTER_KEY is unset and the \
         key file {key_file} does not exist); set KEYPAL_MASTER_KEY to this deployment's master key, or \
         --key-file to its key file: a new key would not open what the database holds"
    )]
    MasterKeyMissing {
        /// The key file that was looked for.
        key_file: String,
    },
    /// The master key could not be read or created.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The database could not be opened or migrated.
    #[error("{0}")]
    Database(#[from] SqlError),
    /// The database failed while the master key was checked.
    #[error("the database failed: {0}")]
    Store(#[from] StoreError),
    /// The stored check value is not one keypal wrote (edited by hand?).
    #[error("the stored master key check value cannot be read (setting {CHECK_ID})")]
    UnreadableCheck,
}

impl DeploymentError {
    /// A stable, machine-readable code.
    ///
    /// ```
    /// let error = keypal_server::DeploymentError::MasterKeyMismatch { source_name: "KEYPAL_MASTER_KEY".into() };
    /// assert_eq!(error.code(), "MASTER_KEY_MISMATCH");
    /// assert!(error.to_string().contains("set KEYPAL_MASTER_KEY"));
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            DeploymentError::MasterKeyMismatch { .. } => "MASTER_KEY_MISMATCH",
            DeploymentError::MasterKeyMissing { .. } => "MASTER_KEY_MISSING",
            DeploymentError::Secrets(_) => "MASTER_KEY_INVALID",
            DeploymentError::Database(e) => e.code(),
            DeploymentError::Store(_) => "STORAGE_UNAVAILABLE",
            DeploymentError::UnreadableCheck => "MASTER_KEY_CHECK_UNREADABLE",
        }
    }
}

/// A deployment's database, migrated, and its master key's derived secrets, known to
/// belong together. `keypal serve` and every command that opens the database start here.
///
/// ```no_run
/// # async fn run() -> Result<(), keypal_server::DeploymentError> {
/// let mut config = keypal_server::ServeConfig::default();
/// config.database_url = "sqlite://keypal.db".into();
/// let deployment = keypal_server::Deployment::open(&config).await?;
/// // Another master key than the one keypal.db was created with: Err(MasterKeyMismatch).
/// # drop(deployment);
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
pub struct Deployment {
    /// The database.
    pub store: SqlStore,
    /// The master key's derived secrets.
    pub secrets: Secrets,
    /// The key file this call created, on a first start with no master key set.
    pub created_key_file: Option<CreatedKeyFile>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment").field("created_key_file", &self.created_key_file).finish_non_exhaustive()
    }
}

impl Deployment {
    /// Reads the master key (`config.master_key`, else `config.key_file`), opens and
    /// migrates the database, and checks the one against the other:
    ///
    /// - the database records the master key's check value on first start (an insert
    ///   that only one of several processes starting together wins; the others compare
    ///   against the winner's);
    /// - a master key whose check value differs is [`DeploymentError::MasterKeyMismatch`]
    ///   (a database from before check values: one that cannot open the sealed service key);
    /// - with no master key set and no key file, a new key file is created only for a
    ///   database that holds nothing yet, else [`DeploymentError::MasterKeyMissing`].
    pub async fn open(config: &ServeConfig) -> Result<Self, DeploymentError> {
        let read = Secrets::read(config.master_key.as_deref(), &config.key_file)?;
        let mut options = SqlOptions::new().max_connections(config.max_connections);
        options.schema.clone_from(&config.database_schema);
        // Changes write the webhook outbox, which `keypal serve` delivers (see crate::webhooks).
        let store = SqlStore::connect_with(&config.database_url, &options).await?.with_webhook_outbox();
        tracing::info!(database = %redact_url(&config.database_url), "database ready");
        let source_name = match &config.master_key {
            Some(_) => "KEYPAL_MASTER_KEY".to_owned(),
            None => format!("the key file {}", config.key_file.display()),
        };
        let (secrets, created_key_file) = match read {
            Some(secrets) => (secrets, None),
            None if holds_data(&store).await? => {
                return Err(DeploymentError::MasterKeyMissing { key_file: config.key_file.display().to_string() });
            }
            None => {
                let (secrets, created) = Secrets::create_key_file(&config.key_file)?;
                (secrets, Some(created))
            }
        };
        if let Err(e) = check_master_key(&store, &secrets, source_name).await {
            // A key file created a moment ago for a database another process claimed
            // first with its own key: take it back, so the next start does not trip on it.
            if let Some(created) = &created_key_file
                && matches!(e, DeploymentError::MasterKeyMismatch { .. })
            {
                let _ = std::fs::remove_file(&created.0);
            }
            return Err(e);
        }
        Ok(Deployment { store, secrets, created_key_file })
    }
}

/// Whether the database already holds something sealed or digested under a master key
/// (its check value, or the service key every started database has).
async fn holds_data(store: &SqlStore) -> Result<bool, StoreError> {
    Ok(store.get_object(SETTING, CHECK_ID).await?.is_some() || store.get_object(SETTING, SERVICE_KEY).await?.is_some())
}

/// Compares the master key with the database's check value, recording it when absent.
async fn check_master_key(store: &SqlStore, secrets: &Secrets, source_name: String) -> Result<(), DeploymentError> {
    let matches = |object: keypal_sql::Object| {
        let stored = object.body["check"].as_str().ok_or(DeploymentError::UnreadableCheck)?;
        if secrets.matches_check_value(stored) { Ok(()) } else { Err(mismatch(&source_name)) }
    };
    if let Some(object) = store.get_object(SETTING, CHECK_ID).await? {
        return matches(object);
    }
    // A database from before check values: the service key sealed under its master key tells.
    if let Some(object) = store.get_object(SETTING, SERVICE_KEY).await?
        && let Some(sealed) = object.body["sealed"].as_str()
        && secrets.open(SERVICE_KEY, sealed).is_err()
    {
        return Err(mismatch(&source_name));
    }
    let body = json!({ "check": secrets.check_value(), "label": CHECK_LABEL });
    match store.insert_object(SETTING, CHECK_ID, None, &body, None).await {
        Ok(()) => {
            tracing::info!("recorded the master key's check value in the database");
            Ok(())
        }
        // Another process recorded its own first: this one must match it.
        Err(StoreError::Duplicate) => match store.get_object(SETTING, CHECK_ID).await? {
            Some(object) => matches(object),
            None => Err(DeploymentError::UnreadableCheck),
        },
        Err(e) => Err(e.into()),
    }
}

fn mismatch(source_name: &str) -> DeploymentError {
    DeploymentError::MasterKeyMismatch { source_name: source_name.to_owned() }
}
