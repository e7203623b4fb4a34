//! What every request handler shares: the store, the secrets, the applications with
//! their key managers, the service key and admin password, usage counts and metrics.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keypal::hash::{Argon2Params, Argon2idHasher};
use keypal::{Action, AuditContext, Event, Hasher, KeyManager, Offload};
use keypal_sql::{ObjectRef, SqlStore, UsageCounter};
use serde_json::json;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::apps::{self, App};
use crate::error::ApiError;
use crate::hashing::HashPool;
use crate::metrics::Metrics;
use crate::secrets::{self, Secrets};
use crate::throttle::LoginThrottle;

/// The object kind of settings (`service_key`, `admin_password`, `master_key_check`).
pub(crate) const SETTING: &str = "setting";
/// The setting holding the service key (its digest, and the key sealed under the master key).
pub(crate) const SERVICE_KEY: &str = "service_key";

/// An application and its key manager.
pub struct AppRuntime {
    /// The application.
    pub app: App,
    /// Its keys.
    pub keys: KeyManager<Arc<SqlStore>>,
}

#[derive(Default)]
struct Apps {
    by_id: HashMap<Uuid, Arc<AppRuntime>>,
    /// Client secret digest → application.
    by_secret: HashMap<String, Uuid>,
}

/// What every application's key manager is built with.
pub struct ManagerParts {
    /// The database.
    pub store: Arc<SqlStore>,
    /// The master key's derived secrets.
    pub secrets: Arc<Secrets>,
    /// Event sinks: usage counts, and change announcements to other instances.
    pub sinks: Vec<Arc<dyn keypal::EventSink>>,
    /// The rate limiter shared by every instance (Redis), if configured.
    pub limiter: Option<keypal_redis::RedisRateLimiter>,
    /// Without Redis, the in-process rate limiter every application's manager counts
    /// in: one for the server's life, so a manager rebuilt when its application changes
    /// (here or, announced, on another instance) keeps each key's window.
    pub local_limiter: Arc<keypal::GcraLimiter>,
    /// The verified-result cache of every application's manager.
    pub cache: keypal::config::CacheConfig,
    /// Where slow hashes run (none: on the calling thread).
    pub offload: Option<Arc<HashPool>>,
}

/// How old the counts an analytics read answers may be: the read first writes every
/// pending count unless that was done this recently ([`State::flush_for_read`]).
pub const READ_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a retired manager's `last_used_at` notes are written while requests still hold it.
const RETIRED_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the `last_used_at` times a replaced manager noted, now and then again while
/// requests that began before the replacement still hold it (the background flusher
/// only sees the installed managers): until the last of them is done.
fn retire(runtime: Arc<AppRuntime>) {
    let Ok(tokio) = tokio::runtime::Handle::try_current() else { return };
    tokio.spawn(async move {
        loop {
            // Held by this task alone, nothing can note a use in it any more.
            let last = Arc::strong_count(&runtime) == 1;
            match runtime.keys.flush_last_used().await {
                Ok(()) if last => return,
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, app = %runtime.app.id, "writing a replaced manager's last_used_at failed; will retry"),
            }
            tokio::time::sleep(RETIRED_FLUSH_EVERY).await;
        }
    });
}

/// The shared state of one server.
pub struct State {
    /// The database.
    pub store: Arc<SqlStore>,
    /// The master key's derived secrets.
    pub secrets: Arc<Secrets>,
    /// Verification counts per key per minute, flushed to the store in the background.
    pub usage: Arc<UsageCounter>,
    /// When every pending usage count was last written for a read ([`State::flush_for_read`]).
    usage_written_for_read: std::sync::Mutex<Option<std::time::Instant>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Failed logins per address.
    pub throttle: LoginThrottle,
    /// The threads slow hashes run on (none: on the calling thread).
    pub hash_pool: Option<Arc<HashPool>>,
    /// Webhooks: settings, and what the request handlers tell the webhook tasks.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The receiving end of the webhook signals, taken by the task that writes them.
    pub(crate) webhook_signals: std::sync::Mutex<Option<crate::webhooks::scan::SignalReceiver>>,
    parts: ManagerParts,
    bus: Option<crate::cluster::Bus>,
    apps: RwLock<Apps>,
    service_key_digest: RwLock<String>,
    /// The service key comes from the configuration (`KEYPAL_SERVICE_KEY`): it cannot be rotated here.
    service_key_pinned: bool,
    admin_password_hash: RwLock<String>,
    password_hasher: Argon2idHasher,
}

/// What instances share beyond the database: a rate limiter and sinks that announce changes.
#[derive(Default)]
pub struct Shared {
    /// The Redis rate limiter (`--redis-url`).
    pub limiter: Option<keypal_redis::RedisRateLimiter>,
    /// Extra event sinks for every application's manager.
    pub sinks: Vec<Arc<dyn keypal::EventSink>>,
    /// Where application and settings changes are announced to other instances.
    pub bus: Option<crate::cluster::Bus>,
    /// The verified-result cache of every application's manager (`--cache-ttl`, `--cache-capacity`).
    pub cache: keypal::config::CacheConfig,
    /// The threads slow hashes run on (none: on the calling thread).
    pub hash_pool: Option<Arc<HashPool>>,
    /// Verifications are not counted for usage analytics (`usage_counting = false`).
    pub uncounted: bool,
    /// How webhooks run.
    pub webhooks: crate::webhooks::WebhookSettings,
}

/// Secrets generated on first start, to print once.
#[derive(Debug, Default)]
pub struct Generated {
    /// A new admin password.
    pub admin_password: Option<String>,
    /// A new service key.
    pub service_key: Option<String>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Failures of starting up from the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// The database failed.
    #[error("the database failed: {0}")]
    Store(#[from] keypal::StoreError),
    /// A stored document cannot be read.
    #[error("a stored {kind} cannot be read: {message}")]
    Corrupt {
        /// Which kind of document.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A secret could not be generated or sealed.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
}

impl State {
    /// Loads settings and applications, generating the admin password and service key
    /// when neither is configured nor stored yet.
    pub async fn boot(
        store: Arc<SqlStore>,
        secrets: Arc<Secrets>,
        shared: Shared,
        admin_password: Option<&str>,
        service_key: Option<&str>,
    ) -> Result<(Arc<Self>, Generated), BootError> {
        let state = Self::new(store, secrets, shared, service_key.is_some())?;
        let mut generated = Generated::default();

        // The service key: configured (authoritative), else stored, else new.
        let stored = state.store.get_object(SETTING, SERVICE_KEY).await?;
        match (service_key, stored) {
            (Some(key), stored) => {
                let digest = state.secrets.digest(key);
                match stored.as_ref().map(|o| o.body["digest"].as_str()) {
                    Some(Some(stored)) if stored == digest => {}
                    Some(_) => {
                        tracing::warn!("the service key set by KEYPAL_SERVICE_KEY replaces the stored one");
                        let event = Event::new(
                            Action::ServiceKeyRotated,
                            OffsetDateTime::now_utc(),
                            AuditContext::new("system"),
                        );
                        state.save_service_key(key, Some(&event)).await?;
                    }
                    None => state.save_service_key(key, None).await?,
                }
                *write(&state.service_key_digest) = digest;
            }
            (None, Some(stored)) => {
                let digest = stored.body["digest"]
                    .as_str()
                    .ok_or(BootError::Corrupt { kind: "service key", message: "no digest".into() })?;
                *write(&state.service_key_digest) = digest.to_owned();
            }
            (None, None) => {
                let key = secrets::token("kp_svc_", 40)?;
                state.save_service_key(&key, None).await?;
                generated.service_key = Some(key);
            }
        }

        // The admin password: configured, else stored, else new.
        let stored = state.store.get_object(SETTING, "admin_password").await?;
        let stored_hash = stored.as_ref().and_then(|o| o.body["hash"].as_str()).map(str::to_owned);
        match (admin_password, stored_hash) {
            (Some(password), Some(hash)) if state.password_hasher.verify(password.as_bytes(), &hash) => {
                *write(&state.admin_password_hash) = hash;
            }
            (Some(password), _) => state.save_admin_password(password).await?,
            (None, Some(hash)) => *write(&state.admin_password_hash) = hash,
            (None, None) => {
                let password = secrets::token("", 24)?;
                state.save_admin_password(&password).await?;
                generated.admin_password = Some(password);
            }
        }

        state.load_apps().await?;
        Ok((state, generated))
    }

    /// The state of an operator's command (`keypal apps`, `keypal keys`): the
    /// applications and their key managers, without the admin password and service key
    /// a server keeps (nothing is generated: the next `keypal serve` does that).
    pub async fn load(store: Arc<SqlStore>, secrets: Arc<Secrets>, shared: Shared) -> Result<Arc<Self>, BootError> {
        let state = Self::new(store, secrets, shared, false)?;
        state.load_apps().await?;
        Ok(state)
    }

    fn new(
        store: Arc<SqlStore>,
        secrets: Arc<Secrets>,
        shared: Shared,
        service_key_pinned: bool,
    ) -> Result<Arc<Self>, BootError> {
        let usage = Arc::new(UsageCounter::new());
        let (webhooks, webhook_signals) = crate::webhooks::Webhooks::new(shared.webhooks);
        let mut sinks: Vec<Arc<dyn keypal::EventSink>> = Vec::new();
        if !shared.uncounted {
            sinks.push(usage.clone());
        }
        sinks.extend(shared.sinks);
        let parts = ManagerParts {
            store: store.clone(),
            secrets: secrets.clone(),
            sinks,
            limiter: shared.limiter.clone(),
            local_limiter: Arc::default(),
            cache: shared.cache,
            offload: shared.hash_pool.clone(),
        };
        Ok(Arc::new(State {
            store,
            secrets,
            parts,
            bus: shared.bus,
            usage,
            usage_written_for_read: std::sync::Mutex::new(None),
            metrics: Metrics::default(),
            throttle: LoginThrottle::default(),
            hash_pool: shared.hash_pool,
            webhooks,
            webhook_signals: std::sync::Mutex::new(Some(webhook_signals)),
            apps: RwLock::new(Apps::default()),
            service_key_digest: RwLock::new(String::new()),
            service_key_pinned,
            admin_password_hash: RwLock::new(String::new()),
            password_hasher: Argon2idHasher::new(Argon2Params::default())
                .map_err(|e| BootError::Corrupt { kind: "argon2 parameters", message: e.to_string() })?,
        }))
    }

    /// Loads every stored application and its key manager.
    async fn load_apps(&self) -> Result<(), BootError> {
        for object in self.store.list_objects(apps::KIND).await? {
            let app: App = serde_json::from_value(object.body)
                .map_err(|e| BootError::Corrupt { kind: "application", message: e.to_string() })?;
            self.claim_label_of_older(&app).await?;
            let runtime = self
                .runtime(app)
                .map_err(|e| BootError::Corrupt { kind: "application", message: e.message.clone() })?;
            self.install(runtime, object.lookup);
        }
        Ok(())
    }

    /// Gives an application stored before labels were claimed its claim (a claim
    /// already there, its own, is a duplicate to ignore). Should the application have
    /// been deleted by another instance since it was listed, the claim just made is
    /// taken back: a claim must never outlive its application.
    async fn claim_label_of_older(&self, app: &App) -> Result<(), BootError> {
        let claim = apps::label_claim(app);
        match self.store.insert_object(apps::LABEL_KIND, &app.label, None, &claim, None).await {
            Ok(()) => {}
            Err(keypal::StoreError::Duplicate) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if self.store.get_object(apps::KIND, &app.id.to_string()).await?.is_none() {
            let claim = ObjectRef { kind: apps::LABEL_KIND, id: &app.label, body: Some(&claim) };
            self.store.delete_objects(&[claim], None).await?;
        }
        Ok(())
    }

    /// Stores the service key, with `event` in the audit log when given.
    async fn save_service_key(&self, key: &str, event: Option<&Event>) -> Result<(), BootError> {
        let digest = self.secrets.digest(key);
        let body = json!({ "digest": digest, "sealed": self.secrets.seal(SERVICE_KEY, key)? });
        if !self.store.update_object(SETTING, SERVICE_KEY, &body, event).await? {
            self.store.insert_object(SETTING, SERVICE_KEY, None, &body, event).await?;
        }
        *write(&self.service_key_digest) = digest;
        Ok(())
    }

    async fn save_admin_password(&self, password: &str) -> Result<(), BootError> {
        let hash = self.password_hasher.hash(password.as_bytes());
        let body = json!({ "hash": hash });
        if !self.store.update_object(SETTING, "admin_password", &body, None).await? {
            self.store.insert_object(SETTING, "admin_password", None, &body, None).await?;
        }
        *write(&self.admin_password_hash) = hash;
        Ok(())
    }

    /// The Redis rate limiter, when Redis is configured.
    pub fn rate_limiter(&self) -> Option<&keypal_redis::RedisRateLimiter> {
        self.parts.limiter.as_ref()
    }

    /// Whether `password` is the admin password (argon2id: slow on purpose, so it runs
    /// on the hashing threads).
    ///
    /// # Errors
    /// 503 `HASHING_BUSY` when every hashing thread stayed busy.
    pub async fn check_admin_password(&self, password: &str) -> Result<bool, ApiError> {
        let hash = read(&self.admin_password_hash).clone();
        let Some(pool) = &self.hash_pool else {
            return Ok(self.password_hasher.verify(password.as_bytes(), &hash));
        };
        let hasher = self.password_hasher.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let offload: &dyn Offload = &**pool;
        let matches = offload.compute(move || hasher.verify(&password, &hash)).await;
        matches.map_err(|e| ApiError::from(keypal::Error::from(e)))
    }

    /// Whether `presented` is the service key (keyed digests compared in constant time).
    pub fn check_service_key(&self, presented: &str) -> bool {
        let digest = self.secrets.digest(presented);
        let current = read(&self.service_key_digest);
        bool::from(digest.as_bytes().ct_eq(current.as_bytes()))
    }

    /// The current service key, decrypted.
    pub async fn service_key(&self) -> Result<String, ApiError> {
        let stored =
            self.store.get_object(SETTING, SERVICE_KEY).await?.ok_or_else(|| ApiError::not_found("service key"))?;
        let sealed = stored.body["sealed"].as_str().unwrap_or_default();
        self.secrets.open(SERVICE_KEY, sealed).map(|key| key.to_string()).map_err(|e| ApiError::internal(&e))
    }

    /// Whether the service key comes from the configuration (`KEYPAL_SERVICE_KEY`, or
    /// `service_key` in the config file), which every start applies again.
    pub fn service_key_pinned(&self) -> bool {
        self.service_key_pinned
    }

    /// Replaces the service key with a new one (the old one stops working at once) and
    /// returns it; 409 `SERVICE_KEY_PINNED` when the configuration sets the service key,
    /// since the next start would bring the configured one back.
    pub async fn rotate_service_key(&self, context: AuditContext) -> Result<String, ApiError> {
        if self.service_key_pinned {
            return Err(ApiError::service_key_pinned());
        }
        let key = secrets::token("kp_svc_", 40).map_err(|e| ApiError::internal(&e))?;
        let event = Event::new(Action::ServiceKeyRotated, OffsetDateTime::now_utc(), context);
        self.save_service_key(&key, Some(&event)).await.map_err(|e| ApiError::internal(&e))?;
        self.announce(keypal::Invalidation::Settings).await;
        Ok(key)
    }

    /// Builds the key manager of an application.
    pub fn runtime(&self, app: App) -> Result<AppRuntime, ApiError> {
        let keys = app.manager(&self.parts)?;
        Ok(AppRuntime { app, keys })
    }

    /// Makes an application (and its client secret digest, when given) visible to requests.
    /// The `last_used_at` times noted by the manager it replaces, if any, are still
    /// written, also those of requests that were under way.
    pub fn install(&self, runtime: AppRuntime, secret_digest: Option<String>) {
        let id = runtime.app.id;
        let replaced = {
            let mut apps = write(&self.apps);
            if let Some(digest) = secret_digest {
                apps.by_secret.retain(|_, app| *app != id);
                apps.by_secret.insert(digest, id);
            }
            apps.by_id.insert(id, Arc::new(runtime))
        };
        if let Some(replaced) = replaced {
            retire(replaced);
        }
    }

    /// Forgets an application.
    pub fn uninstall(&self, id: Uuid) {
        let mut apps = write(&self.apps);
        apps.by_secret.retain(|_, app| *app != id);
        apps.by_id.remove(&id);
    }

    /// The application with this id.
    pub fn app(&self, id: Uuid) -> Option<Arc<AppRuntime>> {
        read(&self.apps).by_id.get(&id).cloned()
    }

    /// The application with this id, from its text form (404 otherwise).
    pub fn app_by_text(&self, id: &str) -> Result<Arc<AppRuntime>, ApiError> {
        id.parse::<Uuid>().ok().and_then(|id| self.app(id)).ok_or_else(|| ApiError::not_found("application"))
    }

    /// The application whose client secret this is.
    pub fn app_by_secret(&self, secret: &str) -> Option<Arc<AppRuntime>> {
        let digest = self.secrets.digest(secret);
        let apps = read(&self.apps);
        apps.by_secret.get(&digest).and_then(|id| apps.by_id.get(id)).cloned()
    }

    /// The application of a client secret: from memory, else from the database (an
    /// application created, or a secret regenerated, on another instance).
    pub async fn app_for_secret(&self, secret: &str) -> Result<Option<Arc<AppRuntime>>, ApiError> {
        if let Some(runtime) = self.app_by_secret(secret) {
            return Ok(Some(runtime));
        }
        let digest = self.secrets.digest(secret);
        let Some(object) = self.store.find_object(apps::KIND, &digest).await? else { return Ok(None) };
        let app: App = serde_json::from_value(object.body).map_err(|e| ApiError::internal(&e))?;
        let runtime = self.runtime(app)?;
        self.install(runtime, object.lookup);
        Ok(self.app_by_secret(secret))
    }

    /// Tells other instances that something changed (no-op on a single instance).
    pub async fn announce(&self, message: keypal::Invalidation) {
        if let Some(bus) = &self.bus {
            bus.announce(&message).await;
        }
    }

    /// Reloads an application from the database after another instance changed it
    /// (forgets it when it is gone).
    pub async fn reload_app(&self, id: Uuid) -> Result<(), ApiError> {
        match self.store.get_object(apps::KIND, &id.to_string()).await? {
            Some(object) => {
                let app: App = serde_json::from_value(object.body).map_err(|e| ApiError::internal(&e))?;
                let runtime = self.runtime(app)?;
                self.install(runtime, object.lookup);
            }
            None => self.uninstall(id),
        }
        Ok(())
    }

    /// Reloads the service key's digest after another instance rotated it.
    pub async fn reload_service_key(&self) -> Result<(), ApiError> {
        if let Some(stored) = self.store.get_object(SETTING, SERVICE_KEY).await?
            && let Some(digest) = stored.body["digest"].as_str()
        {
            *write(&self.service_key_digest) = digest.to_owned();
        }
        Ok(())
    }

    /// Every application, oldest first.
    pub fn apps(&self) -> Vec<Arc<AppRuntime>> {
        let mut all: Vec<_> = read(&self.apps).by_id.values().cloned().collect();
        all.sort_by_key(|r| r.app.id);
        all
    }

    /// Rolls ended minutes of usage counts up into the coarser buckets and drops expired
    /// minute and hour counts (their counts stay in the coarser buckets); the background
    /// pruner calls it every five minutes. Safe on several instances at once.
    pub async fn prune_usage(&self, retention: &keypal_sql::Retention) {
        match self.store.prune_usage(retention, time::OffsetDateTime::now_utc()).await {
            Ok(dropped) => tracing::debug!(dropped, "dropped expired usage buckets"),
            Err(e) => tracing::warn!(error = %e, "dropping expired usage buckets failed; will retry"),
        }
    }

    /// Writes pending `last_used_at` times and every pending usage count (shutdown and
    /// the panel's pages call it).
    pub async fn flush(&self) {
        self.flush_last_used().await;
        self.write_usage(self.usage.take()).await;
    }

    /// Writes pending `last_used_at` times and the usage counts of the minutes that have
    /// ended (the background flusher calls it every few seconds): each key's minute is
    /// written about once, however many verifications it had, which keeps counting cheap.
    pub async fn flush_closed(&self) {
        self.flush_last_used().await;
        self.write_usage(self.usage.take_closed(time::OffsetDateTime::now_utc())).await;
    }

    /// Writes every pending usage count, the current minute's too, unless that was done
    /// less than [`READ_FRESHNESS`] ago: the analytics routes call it first, so what they
    /// answer is at most that old, however often they are called.
    pub async fn flush_for_read(&self) {
        {
            let mut written = self.usage_written_for_read.lock().unwrap_or_else(|e| e.into_inner());
            if written.is_some_and(|at| at.elapsed() < READ_FRESHNESS) {
                return;
            }
            *written = Some(std::time::Instant::now());
        }
        self.write_usage(self.usage.take()).await;
    }

    async fn flush_last_used(&self) {
        for runtime in self.apps() {
            if let Err(e) = runtime.keys.flush_last_used().await {
                tracing::warn!(error = %e, app = %runtime.app.id, "writing last_used_at failed; will retry");
            }
        }
    }

    async fn write_usage(&self, deltas: Vec<keypal_sql::UsageDelta>) {
        if let Err(e) = self.store.record_usage(&deltas).await {
            tracing::warn!(error = %e, "writing usage counts failed; will retry");
            self.usage.restore(deltas);
        }
    }
}
