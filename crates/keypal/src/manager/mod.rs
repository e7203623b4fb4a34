//! [`KeyManager`]: configured once, then creates, verifies and manages keys.

mod builder;
mod flight;
mod hashing;
mod lifecycle;
mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use builder::KeyManagerBuilder;
pub use lifecycle::Rotated;

use crate::cache::VerifiedCache;
use crate::clock::Clock;
use crate::config::PolicyConfig;
use crate::event::{AuditContext, Event, EventSink};
use crate::format::Formatter;
use crate::hash::Hashing;
use crate::last_used::LastUsed;
use crate::ratelimit::{DynRateLimiter, GcraLimiter};
use crate::secret::{AsKey, PlainKey};
use crate::store::Store;
use crate::tier::Tier;

/// The key manager: configure it once (format, hashing, store, policies), then use
/// it everywhere. Cloning is cheap and clones share everything.
///
/// ```
/// use keypal::{Code, KeyManager, MemoryStore, NewKey};
/// use std::time::Duration;
///
/// # pollster::block_on(async {
/// let keys = KeyManager::builder()
///     .prefix("sk_live")
///     .length(32)
///     .store(MemoryStore::new())
///     .build()?;
///
/// let key = keys.generate_key();
/// let hash = keys.hash_key(&key);
/// assert!(keys.validate_key(&key, &hash));
///
/// let created = keys
///     .create(NewKey::new().owner_id("user_123").scopes(["read", "write"]).expires_in(Duration::from_secs(3600)))
///     .await?;
/// let v = keys.verify(created.key.expose()).await?;
/// assert!(v.is_valid() && v.code() == Code::Valid);
/// assert_eq!(v.record().unwrap().owner_id.as_deref(), Some("user_123"));
/// keys.revoke(&created.record.id).await?;
/// assert_eq!(keys.verify(created.key.expose()).await?.code(), Code::Revoked);
/// # Ok::<(), keypal::Error>(())
/// # }).unwrap();
/// ```
pub struct KeyManager<S> {
    inner: Arc<Inner<S>>,
    context: Arc<AuditContext>,
}

impl<S> Clone for KeyManager<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), context: self.context.clone() }
    }
}

impl<S> std::fmt::Debug for KeyManager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("formats", &self.inner.formats)
            .field("hash", &self.inner.hashing.current().algorithm())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// How keys of a format are found (DESIGN "Stored hashes and lookup").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupStrategy {
    /// By the key's public `{id}` segment.
    Id,
    /// By SHA-256 of the whole key (fast hashes only).
    Digest,
    /// By the key's first characters (slow hash, no id): each candidate is verified.
    Hint,
}

#[derive(Debug)]
pub(crate) struct Format {
    pub formatter: Arc<dyn Formatter>,
    pub strategy: LookupStrategy,
}

pub(crate) enum Limiter {
    Local(Arc<GcraLimiter>),
    Shared(Arc<dyn DynRateLimiter>),
}

pub(crate) struct Inner<S> {
    pub store: S,
    /// The current format first, then legacy ones.
    pub formats: Vec<Format>,
    pub hashing: Hashing,
    pub tiers: BTreeMap<String, Tier>,
    pub default_tier: Option<String>,
    pub namespace: Option<String>,
    pub policy: PolicyConfig,
    /// Characters of a key used as hint and shown as its start.
    pub hint_len: usize,
    pub cache: Option<VerifiedCache>,
    /// Lookups in progress of keys not in the cache, shared by concurrent
    /// verifications of one key (with the cache only: its generation tells when a
    /// lookup in progress may have read a state since replaced).
    pub flights: Option<Arc<flight::Flights>>,
    pub last_used: LastUsed,
    pub limiter: Limiter,
    pub sinks: Vec<Arc<dyn EventSink>>,
    /// Keeps encrypted copies of new keys, when configured.
    pub sealer: Option<Arc<dyn crate::KeySealer>>,
    /// Where slow hashes run.
    pub offload: Arc<dyn crate::offload::Offload>,
    pub clock: Arc<dyn Clock>,
}

impl KeyManager<()> {
    /// Starts configuring a manager.
    pub fn builder() -> KeyManagerBuilder<()> {
        KeyManagerBuilder::new()
    }
}

impl<S: Store> KeyManager<S> {
    /// Builds a manager from a config value and a store.
    ///
    /// ```
    /// use keypal::{Config, KeyManager, MemoryStore};
    /// let config = Config::from_toml(r#"prefix = "sk_test""#)?;
    /// let keys = KeyManager::from_config(config, MemoryStore::new())?;
    /// assert!(keys.generate_key().expose().starts_with("sk_test_"));
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn from_config(config: crate::Config, store: S) -> Result<Self, crate::Error> {
        KeyManagerBuilder::new().config(config).store(store).build()
    }

    /// The same manager, recording `context` (who, from where) in the audit events of
    /// the changes made through the returned handle.
    ///
    /// ```
    /// # use keypal::{AuditContext, KeyManager, MemoryStore};
    /// # let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
    /// let admin = keys.with_context(AuditContext::new("admin").ip("203.0.113.7"));
    /// # let _ = admin;
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn with_context(&self, context: AuditContext) -> Self {
        Self { inner: self.inner.clone(), context: Arc::new(context) }
    }

    /// A new random key in the current format (of the default tier, if the format has tiers).
    /// Nothing is stored: use [`KeyManager::create`] to issue a key.
    ///
    /// # Panics
    /// Only if the operating system's random source fails (the builder already
    /// generated a key with this format and tier). [`KeyManager::try_generate_key`]
    /// reports that as an error instead.
    #[allow(clippy::panic)] // a machine without randomness cannot make keys; std and rand panic alike
    pub fn generate_key(&self) -> PlainKey {
        self.try_generate_key().unwrap_or_else(|e| panic!("cannot generate a key: {e}"))
    }

    /// [`KeyManager::generate_key`], with a failing random source as an error.
    pub fn try_generate_key(&self) -> Result<PlainKey, crate::Error> {
        Ok(self.inner.current().formatter.generate(self.inner.default_tier.as_deref())?)
    }

    /// Whether `key` is well formed under one of this manager's accepted formats
    /// (checksum included). Reads no storage.
    ///
    /// ```
    /// use keypal::{KeyManager, MemoryStore};
    /// let keys = KeyManager::builder().prefix("sk_live").store(MemoryStore::new()).build()?;
    /// assert!(keys.accepts(keys.generate_key().expose()));
    /// assert!(!keys.accepts("sk_test_nope"));
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn accepts(&self, key: &str) -> bool {
        self.parse(key).is_some()
    }

    /// Hashes a key under the current hash policy into a self-describing string.
    pub fn hash_key(&self, key: &(impl AsKey + ?Sized)) -> String {
        self.inner.hashing.hash(key.key_str().as_bytes())
    }

    /// Checks a key against a stored hash of any accepted algorithm, in constant time.
    /// A hash of the secret segment alone ([`crate::HashCovers::Secret`]) is checked
    /// against the secret the key's format finds in it.
    pub fn validate_key(&self, key: &(impl AsKey + ?Sized), hash: &str) -> bool {
        let key = key.key_str();
        // Only a hash of the secret segment needs the key parsed.
        let secret = match crate::HashCovers::of(hash) {
            crate::HashCovers::Secret => self.secret_of(key).map(str::as_bytes),
            _ => None,
        };
        self.inner.hashing.verify_with_secret(key.as_bytes(), secret, hash)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The current time of this manager's clock (truncated to microseconds).
    pub fn now(&self) -> time::OffsetDateTime {
        self.inner.clock.now()
    }

    /// The namespace this manager's keys belong to.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    /// The configured tiers.
    pub fn tiers(&self) -> &BTreeMap<String, Tier> {
        &self.inner.tiers
    }

    /// How keys of the current format are looked up.
    pub fn lookup_strategy(&self) -> LookupStrategy {
        self.inner.current().strategy
    }

    /// Drops any cached verification of this key. Changes made through this manager
    /// do it themselves; call it when a change made elsewhere is announced.
    pub fn invalidate(&self, id: &crate::KeyId) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(*id);
        }
    }

    /// Drops every cached verification (after missing change announcements).
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.clear();
        }
    }

    pub(crate) fn emit(&self, event: &Event) {
        for sink in &self.inner.sinks {
            sink.record(event);
        }
    }
}

impl<S> Inner<S> {
    pub(crate) fn current(&self) -> &Format {
        &self.formats[0]
    }
}
