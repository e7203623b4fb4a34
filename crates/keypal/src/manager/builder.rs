//! [`KeyManagerBuilder`]: the one place a manager is configured.

use std::sync::Arc;
use std::time::Duration;

use super::{Format, Inner, KeyManager, Limiter, LookupStrategy};
use crate::cache::VerifiedCache;
use crate::clock::{Clock, SystemClock};
use crate::config::{CacheMode, Config, HashAlgorithm, HumanDuration, NamePolicy, Problems, SecretString};
use crate::event::{AuditContext, EventSink};
use crate::format::{Encoding, Formatter};
use crate::hash::{Argon2Params, Hasher, Hashing};
use crate::last_used::LastUsed;
use crate::offload::{Inline, Offload};
use crate::ratelimit::GcraLimiter;
use crate::store::Store;
use crate::tier::Tier;
use crate::{ConfigError, Error};

/// Configures a [`KeyManager`]. Every setting is a field of [`Config`] except the
/// pieces that are code (store, custom formatter or hasher, rate limiter, event
/// sinks, clock). [`KeyManagerBuilder::build`] checks everything and reports every
/// problem at once.
///
/// ```
/// use keypal::{HashAlgorithm, KeyManager, MemoryStore, RateLimit, Tier};
///
/// let keys = KeyManager::builder()
///     .template("kota_{tier}_{id:12:base32}_{secret:36:hex}")
///     .tier("free", Tier::new().rate_limit(RateLimit::per_hour(100)))
///     .tier("solo", Tier::new().rate_limit(RateLimit::per_hour(1_000)))
///     .tier("team", Tier::new().rate_limit(RateLimit::per_hour(10_000)))
///     .default_tier("free")
///     .hash(HashAlgorithm::Bcrypt)
///     .bcrypt_cost(10)
///     .store(MemoryStore::new())
///     .build()?;
/// assert!(keys.generate_key().expose().starts_with("kota_free_"));
/// # Ok::<(), keypal::Error>(())
/// ```
#[must_use]
pub struct KeyManagerBuilder<S> {
    config: Config,
    store: S,
    formatter: Option<Arc<dyn Formatter>>,
    legacy_formatters: Vec<Arc<dyn Formatter>>,
    hasher: Option<Arc<dyn Hasher>>,
    accepted_hashers: Vec<Arc<dyn Hasher>>,
    limiter: Option<Limiter>,
    sinks: Vec<Arc<dyn EventSink>>,
    sealer: Option<Arc<dyn crate::KeySealer>>,
    offload: Arc<dyn Offload>,
    clock: Arc<dyn Clock>,
}

impl KeyManagerBuilder<()> {
    pub(crate) fn new() -> Self {
        Self {
            config: Config::default(),
            store: (),
            formatter: None,
            legacy_formatters: Vec::new(),
            hasher: None,
            accepted_hashers: Vec::new(),
            limiter: None,
            sinks: Vec::new(),
            sealer: None,
            offload: Arc::new(Inline),
            clock: Arc::new(SystemClock),
        }
    }
}

impl<S> KeyManagerBuilder<S> {
    /// Sets the store.
    pub fn store<T: Store>(self, store: T) -> KeyManagerBuilder<T> {
        KeyManagerBuilder {
            config: self.config,
            store,
            formatter: self.formatter,
            legacy_formatters: self.legacy_formatters,
            hasher: self.hasher,
            accepted_hashers: self.accepted_hashers,
            limiter: self.limiter,
            sinks: self.sinks,
            sealer: self.sealer,
            offload: self.offload,
            clock: self.clock,
        }
    }

    /// Replaces the whole configuration (settings made before are lost).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Text in front of every key.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = Some(prefix.into());
        self
    }

    /// Secret length in characters (simple form).
    pub fn length(mut self, length: usize) -> Self {
        self.config.length = Some(length);
        self
    }

    /// Secret encoding (simple form).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.config.encoding = Some(encoding);
        self
    }

    /// A full key template (see [`crate::format`]).
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.config.template = Some(template.into());
        self
    }

    /// An older template whose keys keep verifying.
    pub fn legacy_template(mut self, template: impl Into<String>) -> Self {
        self.config.legacy_templates.push(template.into());
        self
    }

    /// A fully custom format for new keys (instead of a template).
    pub fn formatter(mut self, formatter: impl Formatter) -> Self {
        self.formatter = Some(Arc::new(formatter));
        self
    }

    /// A custom format whose keys keep verifying.
    pub fn legacy_formatter(mut self, formatter: impl Formatter) -> Self {
        self.legacy_formatters.push(Arc::new(formatter));
        self
    }

    /// The value of `{app}`.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.config.app = Some(app.into());
        self
    }

    /// The value of `{label}`.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.config.label = Some(label.into());
        self
    }

    /// The namespace (application) of this manager's keys.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = Some(namespace.into());
        self
    }

    /// Adds a tier.
    pub fn tier(mut self, name: impl Into<String>, tier: Tier) -> Self {
        self.config.tiers.insert(name.into(), tier);
        self
    }

    /// The tier of keys created without one.
    pub fn default_tier(mut self, name: impl Into<String>) -> Self {
        self.config.default_tier = Some(name.into());
        self
    }

    /// The hash algorithm for new keys.
    pub fn hash(mut self, algorithm: HashAlgorithm) -> Self {
        self.config.hash.algorithm = algorithm;
        self
    }

    /// bcrypt cost (with [`HashAlgorithm::Bcrypt`]).
    pub fn bcrypt_cost(mut self, cost: u32) -> Self {
        self.config.hash.bcrypt_cost = Some(cost);
        self
    }

    /// argon2id parameters (with [`HashAlgorithm::Argon2id`]).
    pub fn argon2(mut self, params: Argon2Params) -> Self {
        self.config.hash.argon2 = Some(params);
        self
    }

    /// Adds an HMAC pepper under a key id; the last one added is used for new hashes
    /// unless [`KeyManagerBuilder::pepper_id`] says otherwise.
    pub fn pepper(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        let id = id.into();
        self.config.hash.peppers.insert(id.clone(), SecretString::new(secret));
        self.config.hash.pepper_id = Some(id);
        self
    }

    /// The pepper used for new HMAC hashes.
    pub fn pepper_id(mut self, id: impl Into<String>) -> Self {
        self.config.hash.pepper_id = Some(id.into());
        self
    }

    /// A custom hasher for new keys (instead of `hash`).
    pub fn hasher(mut self, hasher: impl Hasher) -> Self {
        self.hasher = Some(Arc::new(hasher));
        self
    }

    /// Another hasher whose stored strings verify (a custom algorithm of old keys).
    pub fn accept_hasher(mut self, hasher: impl Hasher) -> Self {
        self.accepted_hashers.push(Arc::new(hasher));
        self
    }

    /// At most this many active keys per owner, exact under concurrency.
    pub fn max_active_keys_per_owner(mut self, limit: u32) -> Self {
        self.config.policy.max_active_keys_per_owner = Some(limit);
        self
    }

    /// Name rules.
    pub fn name_policy(mut self, policy: NamePolicy) -> Self {
        self.config.policy.name = policy;
        self
    }

    /// Expiry of keys created without one.
    pub fn default_expiry(mut self, after: Duration) -> Self {
        self.config.policy.expiry.default = Some(HumanDuration(after));
        self
    }

    /// Shortest and longest allowed lifetimes.
    pub fn expiry_bounds(mut self, min: Option<Duration>, max: Option<Duration>) -> Self {
        self.config.policy.expiry.min = min.map(HumanDuration);
        self.config.policy.expiry.max = max.map(HumanDuration);
        self
    }

    /// Characters of the key used as lookup hint and shown as its start.
    pub fn hint_length(mut self, length: usize) -> Self {
        self.config.lookup.hint_length = Some(length);
        self
    }

    /// When to cache verified results.
    pub fn cache(mut self, mode: CacheMode) -> Self {
        self.config.cache.mode = mode;
        self
    }

    /// How long a verified result is reused.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.config.cache.ttl = HumanDuration(ttl);
        self
    }

    /// How often `last_used_at` is written.
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.config.last_used.interval = HumanDuration(interval);
        self
    }

    /// A rate limiter shared with other instances (default: in-process GCRA).
    pub fn rate_limiter(mut self, limiter: impl crate::RateLimiter) -> Self {
        self.limiter = Some(Limiter::Shared(Arc::new(limiter)));
        self
    }

    /// The in-process rate limiter to count in (default: a new one for this manager).
    /// Managers given the same one share each key's rate-limit state, so a manager
    /// rebuilt after a configuration change carries on where the old one was, instead
    /// of letting every key start a fresh window. The limit comes from each key's
    /// record or tier, as always; the limiter only remembers the requests.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keypal::{GcraLimiter, KeyManager, MemoryStore, NewKey, RateLimit};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = Arc::new(MemoryStore::new());
    /// let limiter = Arc::new(GcraLimiter::new());
    /// let build = || KeyManager::builder().store(store.clone()).local_rate_limiter(limiter.clone()).build();
    /// let before = build()?;
    /// let created = before.create(NewKey::new().rate_limit(RateLimit::per_hour(1))).await?;
    /// assert!(before.verify(created.key.expose()).await?.is_valid());
    ///
    /// let rebuilt = build()?;
    /// assert!(!rebuilt.verify(created.key.expose()).await?.is_valid(), "still limited");
    /// # Ok::<(), keypal::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn local_rate_limiter(mut self, limiter: Arc<GcraLimiter>) -> Self {
        self.limiter = Some(Limiter::Local(limiter));
        self
    }

    /// Adds an event sink.
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a shared event sink.
    pub fn event_sink_arc(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Keeps an encrypted copy of every new key (created, rotated or imported from
    /// plaintext) in [`crate::KeyRecord::encrypted_key`].
    pub fn key_sealer(mut self, sealer: impl crate::KeySealer) -> Self {
        self.sealer = Some(Arc::new(sealer));
        self
    }

    /// Where slow hashes (bcrypt, argon2id) run: verifying, creating, rotating,
    /// importing and re-hashing keys hand them to `offload` and await them (default
    /// [`Inline`]: on the caller's thread). Pass an `Arc` to share one offload between
    /// managers. See [`crate::offload`].
    pub fn offload(mut self, offload: impl Offload) -> Self {
        self.offload = Arc::new(offload);
        self
    }

    /// The clock (tests move a [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl<S: Store> KeyManagerBuilder<S> {
    /// Checks the configuration and builds the manager. Every problem is reported at
    /// once in [`Error::Config`].
    pub fn build(self) -> Result<KeyManager<S>, Error> {
        let config = self.config;
        let resolved = config.resolve(self.formatter.is_some(), self.hasher.is_some())?;

        let current = self.hasher.unwrap_or(resolved.current_hasher);
        let current_is_hmac = current.algorithm() == HashAlgorithm::HmacSha256.name();
        let mut hashing = Hashing::new(current);
        if let Some(hmac) = resolved.hmac_hasher.filter(|_| !current_is_hmac) {
            hashing = hashing.with_hasher(hmac);
        }
        for hasher in self.accepted_hashers {
            hashing = hashing.with_hasher(hasher);
        }

        let mut formatters = resolved.formats;
        if let Some(custom) = self.formatter {
            formatters.insert(0, custom);
        }
        formatters.extend(self.legacy_formatters);
        let strategy_of = |f: &dyn Formatter| {
            if f.has_id() {
                LookupStrategy::Id
            } else if hashing.is_slow() {
                LookupStrategy::Hint
            } else {
                LookupStrategy::Digest
            }
        };
        let formats: Vec<Format> =
            formatters.into_iter().map(|formatter| Format { strategy: strategy_of(&*formatter), formatter }).collect();

        // Generate one key now so that a format that cannot generate fails here, not later.
        let mut problems = Problems::default();
        let Some(current_format) = formats.first() else {
            return Err(ConfigError::Invalid(vec![crate::config::ConfigProblem {
                path: "template".into(),
                message: "no key format is configured".into(),
            }])
            .into());
        };
        let sample = current_format.formatter.generate(config.default_tier.as_deref());
        // The hint counts characters: by default the constant prefix and 3 more.
        let prefix = current_format.formatter.fixed_prefix_len();
        let prefix_chars =
            sample.as_ref().ok().and_then(|key| key.expose().get(..prefix)).map_or(prefix, |p| p.chars().count());
        let hint_len = config.lookup.hint_length.unwrap_or(prefix_chars + 3);
        match sample {
            Ok(sample) if sample.expose().chars().count() < hint_len + 16 => problems.add(
                "lookup.hint_length",
                format!(
                    "keys are {} characters: a hint of {hint_len} would reveal too much",
                    sample.expose().chars().count()
                ),
            ),
            Ok(sample) if hashing.current().algorithm() == "bcrypt" && sample.expose().len() > 72 => problems.add(
                "hash.algorithm",
                format!("bcrypt reads only 72 bytes and keys are {}: choose a shorter format", sample.expose().len()),
            ),
            Ok(_) => {}
            Err(e) => problems.add("template", e),
        }
        problems.into_result(())?;

        let cache_on = match config.cache.mode {
            CacheMode::Auto => hashing.is_slow() || !S::IN_MEMORY,
            CacheMode::On => true,
            CacheMode::Off => false,
        };
        let limiter = self.limiter.unwrap_or_else(|| Limiter::Local(Arc::default()));
        let inner = Inner {
            store: self.store,
            formats,
            hashing,
            tiers: config.tiers,
            default_tier: config.default_tier,
            namespace: config.namespace,
            policy: config.policy,
            hint_len,
            cache: cache_on.then(|| VerifiedCache::new(config.cache.ttl.0, config.cache.capacity)),
            flights: cache_on.then(Arc::default),
            last_used: LastUsed::new(config.last_used.interval.0),
            limiter,
            sinks: self.sinks,
            sealer: self.sealer,
            offload: self.offload,
            clock: self.clock,
        };
        Ok(KeyManager { inner: Arc::new(inner), context: Arc::new(AuditContext::default()) })
    }
}
