//! [`Config`]: everything a [`crate::KeyManager`] is configured with, as a value you
//! can read from TOML or JSON. Validation reports every problem at once, each with
//! its field path.
//!
//! ```
//! use keypal::Config;
//!
//! let config = Config::from_toml(r#"
//!     template = "kota_{tier}_{id:12:base32}_{secret:36:hex}"
//!     default_tier = "free"
//!
//!     [tiers.free]
//!     rate_limit = "100/hour"
//!     [tiers.solo]
//!     rate_limit = "1000/hour"
//!
//!     [hash]
//!     algorithm = "bcrypt"
//!     bcrypt_cost = 10
//!
//!     [policy]
//!     max_active_keys_per_owner = 10
//! "#)?;
//! assert!(config.validate().is_ok());
//! # Ok::<(), keypal::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::{Encoding, FormatVars, Formatter, Template};
use crate::hash::{
    Argon2Params, Argon2idHasher, BcryptHasher, DEFAULT_BCRYPT_COST, Hasher, HmacSha256Hasher, Sha256Hasher,
    Sha512Hasher,
};
use crate::tier::Tier;

/// The configuration of a key manager. Every field has a default; an empty config
/// makes `{secret:32:base62}` keys hashed with SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Text in front of every key (simple form: keys are `{prefix}_{secret:LENGTH:ENCODING}`).
    pub prefix: Option<String>,
    /// Secret length in characters for the simple form (default 32; 16 to 256).
    pub length: Option<usize>,
    /// Secret encoding for the simple form (default base62).
    pub encoding: Option<Encoding>,
    /// A full template like `kota_{tier}_{id:12:base32}_{secret:36:hex}`; replaces `length` and `encoding`.
    pub template: Option<String>,
    /// Older templates whose keys keep verifying (new keys use the current one).
    pub legacy_templates: Vec<String>,
    /// The value of `{app}` in templates.
    pub app: Option<String>,
    /// The value of `{label}` in templates.
    pub label: Option<String>,
    /// The namespace (application) this manager's keys belong to.
    pub namespace: Option<String>,
    /// Tiers by name.
    pub tiers: BTreeMap<String, Tier>,
    /// The tier of keys created without one (required when the template has `{tier}`).
    pub default_tier: Option<String>,
    /// How keys are hashed.
    pub hash: HashConfig,
    /// How keys are found.
    pub lookup: LookupConfig,
    /// Rules for new keys.
    pub policy: PolicyConfig,
    /// The verified-result cache.
    pub cache: CacheConfig,
    /// How `last_used_at` is recorded.
    pub last_used: LastUsedConfig,
}

/// The hash algorithms keypal ships.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlgorithm {
    /// SHA-256 (the default): fast, right for random keys of 128 bits and more.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
    /// HMAC-SHA-256 with a server-side pepper: the recommended choice (a leaked
    /// database alone cannot be checked against guesses).
    HmacSha256,
    /// argon2id, a slow password hash.
    Argon2id,
    /// bcrypt, a slow password hash.
    Bcrypt,
}

impl HashAlgorithm {
    /// The names used in configuration: `sha256`, `sha512`, `hmac-sha256`, `argon2id`, `bcrypt`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
            HashAlgorithm::HmacSha256 => "hmac-sha256",
            HashAlgorithm::Argon2id => "argon2id",
            HashAlgorithm::Bcrypt => "bcrypt",
        }
    }
}

/// A secret string (a pepper): redacted in `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretString(#[schemars(with = "String")] Zeroizing<String>);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How keys are hashed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HashConfig {
    /// The algorithm for new hashes. Stored hashes of every other built-in algorithm still verify.
    pub algorithm: HashAlgorithm,
    /// bcrypt cost (default 10; 4 to 31).
    pub bcrypt_cost: Option<u32>,
    /// argon2id parameters (default: 19 MiB, 2 iterations, 1 lane).
    pub argon2: Option<Argon2Params>,
    /// HMAC peppers by key id (at least 16 bytes each). Keep old ones to verify old hashes.
    pub peppers: BTreeMap<String, SecretString>,
    /// The pepper id used for new HMAC hashes.
    pub pepper_id: Option<String>,
}

/// How keys are found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LookupConfig {
    /// Characters of the key used as lookup hint when the hint strategy applies (slow hash,
    /// no `{id}`), and shown as the key's start. Default: the template's constant prefix + 3.
    pub hint_length: Option<usize>,
}

/// Rules for new keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// At most this many active (not revoked, not expired) keys per owner.
    pub max_active_keys_per_owner: Option<u32>,
    /// Name rules.
    pub name: NamePolicy,
    /// Expiry rules.
    pub expiry: ExpiryPolicy,
}

/// Name rules: names are trimmed, then checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NamePolicy {
    /// Every key must have a name.
    pub required: bool,
    /// Minimum length in characters after trimming (default 1).
    pub min_length: usize,
    /// Maximum length in characters after trimming (default 100).
    pub max_length: usize,
}

impl Default for NamePolicy {
    fn default() -> Self {
        Self { required: false, min_length: 1, max_length: 100 }
    }
}

/// Expiry rules. Durations are written like `30d`, `12h`, `90s`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExpiryPolicy {
    /// Expiry of keys created without one.
    pub default: Option<HumanDuration>,
    /// Shortest allowed lifetime.
    pub min: Option<HumanDuration>,
    /// Longest allowed lifetime (keys must then expire).
    pub max: Option<HumanDuration>,
}

/// Whether verified results are cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// On when it saves work: a slow hash, or a store outside process memory.
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

/// The verified-result cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// When to cache.
    pub mode: CacheMode,
    /// How long a verified result is reused (default 10s). Changes made through this
    /// manager drop the entry at once; this bounds how stale a change made elsewhere can be.
    pub ttl: HumanDuration,
    /// Entries at most (default 100 000).
    pub capacity: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { mode: CacheMode::Auto, ttl: HumanDuration(Duration::from_secs(10)), capacity: 100_000 }
    }
}

/// How `last_used_at` is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LastUsedConfig {
    /// Uses are written in one batch per interval (default 30s), and a key already
    /// recorded within the interval is not noted again.
    pub interval: HumanDuration,
}

impl Default for LastUsedConfig {
    fn default() -> Self {
        Self { interval: HumanDuration(Duration::from_secs(30)) }
    }
}

/// The longest duration a configuration or a request may set (an expiry, a grace
/// period, a cache TTL, an interval): 100 years (`100y`, years of 365.25 days). Longer
/// ones serve no purpose and would overflow the calendar, so they are refused.
///
/// ```
/// use keypal::config::LONGEST_DURATION;
/// let d: keypal::config::HumanDuration = serde_json::from_str("\"100y\"")?;
/// assert_eq!(d.0, LONGEST_DURATION);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub const LONGEST_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// The problem of a duration longer than [`LONGEST_DURATION`].
pub(crate) const TOO_LONG: &str = "must be at most 100 years";

/// A duration written for people: `30d`, `12h`, `15m`, `90s`, `1h 30m`.
///
/// ```
/// use keypal::config::HumanDuration;
/// let d: HumanDuration = serde_json::from_str("\"30d\"")?;
/// assert_eq!(d.0.as_secs(), 30 * 86_400);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

/// `30d`, `12h`, `1h 30m`: the form it is written in.
///
/// ```
/// use keypal::config::HumanDuration;
/// assert_eq!(HumanDuration(std::time::Duration::from_secs(90)).to_string(), "1m 30s");
/// ```
impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like 30d, 12h or 90s: {e}")))
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration like \"30d\", \"12h\", \"15m\", \"90s\" or \"1h 30m\"",
        })
    }
}

/// One problem of a configuration: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field path, like `hash.bcrypt_cost` or `tiers.pro.segment`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that does not work, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML/JSON for a config.
    #[error("the configuration does not parse: {0}")]
    Syntax(String),
    /// The values have problems.
    #[error("the configuration has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<ConfigProblem>),
}

fn list(problems: &[ConfigProblem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl ConfigError {
    /// Every problem (empty for a syntax error).
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Syntax(_) => &[],
        }
    }
}

type SharedHasher = Arc<dyn Hasher>;

/// The parts a manager is built from, made from a valid config.
pub(crate) struct Resolved {
    pub formats: Vec<Arc<dyn Formatter>>,
    pub current_hasher: Arc<dyn Hasher>,
    pub hmac_hasher: Option<Arc<dyn Hasher>>,
}

/// Collects problems while checking a config.
#[derive(Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(ConfigProblem { path: path.into(), message: message.to_string() });
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() { Ok(value) } else { Err(ConfigError::Invalid(self.0)) }
    }
}

impl Config {
    /// Reads a config from TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Reads a config from JSON.
    ///
    /// ```
    /// let config = keypal::Config::from_json(r#"{"prefix": "sk_live", "length": 32}"#)?;
    /// assert_eq!(config.prefix.as_deref(), Some("sk_live"));
    /// # Ok::<(), keypal::ConfigError>(())
    /// ```
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// The JSON Schema of the config (committed as `schema/keypal.schema.json`).
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default()
    }

    /// Checks the config and reports every problem at once.
    ///
    /// ```
    /// let config = keypal::Config::from_toml(r#"
    ///     length = 8
    ///     [hash]
    ///     algorithm = "hmac-sha256"
    /// "#)?;
    /// let problems = config.validate().unwrap_err();
    /// let paths: Vec<&str> = problems.problems().iter().map(|p| p.path.as_str()).collect();
    /// assert_eq!(paths, ["length", "hash.peppers"]);
    /// # Ok::<(), keypal::ConfigError>(())
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve(false, false).map(|_| ())
    }

    /// Checks the config and builds its formats and hashers. With `custom_format`
    /// or `custom_hasher` (set on the builder), the config must not set its own.
    pub(crate) fn resolve(&self, custom_format: bool, custom_hasher: bool) -> Result<Resolved, ConfigError> {
        let mut problems = Problems::default();
        let formats = self.resolve_formats(custom_format, &mut problems);
        let (current_hasher, hmac_hasher) = self.resolve_hash(custom_hasher, &mut problems);
        self.check_tiers(&mut problems);
        self.check_policy(&mut problems);
        if self.cache.capacity == 0 {
            problems.add("cache.capacity", "must be at least 1");
        }
        if self.cache.ttl.0.is_zero() {
            problems.add("cache.ttl", "must be longer than zero (set cache.mode = \"off\" to disable the cache)");
        }
        if self.cache.ttl.0 > LONGEST_DURATION {
            problems.add("cache.ttl", TOO_LONG);
        }
        if self.last_used.interval.0.is_zero() {
            problems.add("last_used.interval", "must be longer than zero");
        }
        if self.last_used.interval.0 > LONGEST_DURATION {
            problems.add("last_used.interval", TOO_LONG);
        }
        if let Some(hint) = self.lookup.hint_length
            && !(4..=64).contains(&hint)
        {
            problems.add("lookup.hint_length", "must be between 4 and 64");
        }
        if self.namespace.as_deref().is_some_and(|n| n.trim().is_empty() || n.len() > 64) {
            problems.add("namespace", "must be 1 to 64 characters");
        }
        let current_hasher = current_hasher.unwrap_or_else(|| Arc::new(Sha256Hasher));
        problems.into_result(Resolved { formats, current_hasher, hmac_hasher })
    }

    fn format_vars(&self) -> FormatVars {
        FormatVars {
            prefix: self.prefix.clone(),
            app: self.app.clone(),
            label: self.label.clone(),
            tiers: self
                .tiers
                .iter()
                .map(|(name, tier)| (name.clone(), tier.segment.clone().unwrap_or_else(|| name.clone())))
                .collect(),
        }
    }

    fn resolve_formats(&self, custom_format: bool, problems: &mut Problems) -> Vec<Arc<dyn Formatter>> {
        let vars = self.format_vars();
        let mut formats: Vec<Arc<dyn Formatter>> = Vec::new();
        if let Some(length) = self.length
            && !(16..=256).contains(&length)
        {
            problems.add("length", "must be between 16 and 256 characters");
        }
        if let Some(prefix) = &self.prefix
            && (prefix.is_empty() || prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace))
        {
            problems.add("prefix", "must be non-empty, without braces or whitespace");
        }
        match (&self.template, custom_format) {
            (Some(_), true) => {
                problems.add("template", "a custom formatter is set on the builder; remove the template")
            }
            (Some(template), false) => {
                if self.length.is_some() || self.encoding.is_some() {
                    problems.add("template", "set either template or length/encoding, not both");
                }
                match Template::parse(template, &vars) {
                    Ok(t) => {
                        if t.has_tier() && self.default_tier.is_none() {
                            problems.add(
                                "default_tier",
                                "the template has {tier}: name the tier of keys created without one",
                            );
                        }
                        formats.push(Arc::new(t));
                    }
                    Err(e) => problems.add("template", e),
                }
            }
            (None, true) => {}
            (None, false) => {
                let length = self.length.unwrap_or(32);
                let encoding = self.encoding.unwrap_or(Encoding::Base62);
                if (16..=256).contains(&length) {
                    match Template::simple(self.prefix.as_deref(), length, encoding) {
                        Ok(t) => formats.push(Arc::new(t)),
                        Err(e) => problems.add("prefix", e),
                    }
                }
            }
        }
        for (i, legacy) in self.legacy_templates.iter().enumerate() {
            match Template::parse(legacy, &vars) {
                Ok(t) => formats.push(Arc::new(t)),
                Err(e) => problems.add(format!("legacy_templates[{i}]"), e),
            }
        }
        formats
    }

    fn resolve_hash(
        &self,
        custom_hasher: bool,
        problems: &mut Problems,
    ) -> (Option<SharedHasher>, Option<SharedHasher>) {
        let hash = &self.hash;
        if hash.bcrypt_cost.is_some() && hash.algorithm != HashAlgorithm::Bcrypt {
            problems.add("hash.bcrypt_cost", "only applies to algorithm = \"bcrypt\"");
        }
        if hash.argon2.is_some() && hash.algorithm != HashAlgorithm::Argon2id {
            problems.add("hash.argon2", "only applies to algorithm = \"argon2id\"");
        }
        // Peppers make an HMAC hasher even when another algorithm is current, so HMAC
        // hashes made before a switch keep verifying.
        let hmac: Option<Arc<dyn Hasher>> = if hash.peppers.is_empty() {
            if hash.algorithm == HashAlgorithm::HmacSha256 {
                problems.add("hash.peppers", "hmac-sha256 needs at least one pepper (a random secret of 16+ bytes)");
            }
            if hash.pepper_id.is_some() {
                problems.add("hash.pepper_id", "names a pepper, but no peppers are configured");
            }
            None
        } else {
            let current = match (&hash.pepper_id, hash.peppers.len()) {
                (Some(id), _) => Some(id.clone()),
                (None, 1) => hash.peppers.keys().next().cloned(),
                (None, _) => {
                    problems.add("hash.pepper_id", "several peppers are configured: name the one for new hashes");
                    None
                }
            };
            current.and_then(|kid| {
                let peppers = hash.peppers.iter().map(|(k, v)| (k.clone(), v.expose().to_vec()));
                match HmacSha256Hasher::new(peppers, &kid) {
                    Ok(h) => Some(Arc::new(h) as Arc<dyn Hasher>),
                    Err(e) => {
                        problems.add("hash.peppers", e);
                        None
                    }
                }
            })
        };
        if custom_hasher {
            return (None, hmac);
        }
        let current: Option<Arc<dyn Hasher>> = match hash.algorithm {
            HashAlgorithm::Sha256 => Some(Arc::new(Sha256Hasher)),
            HashAlgorithm::Sha512 => Some(Arc::new(Sha512Hasher)),
            HashAlgorithm::HmacSha256 => hmac.clone(),
            HashAlgorithm::Bcrypt => match BcryptHasher::new(hash.bcrypt_cost.unwrap_or(DEFAULT_BCRYPT_COST)) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    problems.add("hash.bcrypt_cost", e);
                    None
                }
            },
            HashAlgorithm::Argon2id => match Argon2idHasher::new(hash.argon2.unwrap_or_default()) {
                Ok(h) => Some(Arc::new(h)),
                Err(e) => {
                    problems.add("hash.argon2", e);
                    None
                }
            },
        };
        (current, hmac)
    }

    fn check_tiers(&self, problems: &mut Problems) {
        let mut segments: BTreeMap<String, &str> = BTreeMap::new();
        for (name, tier) in &self.tiers {
            if name.is_empty() || name.len() > 64 {
                problems.add(format!("tiers.{name}"), "a tier name is 1 to 64 characters");
            }
            let segment = tier.segment.as_deref().unwrap_or(name);
            if segment.is_empty() || segment.contains(['{', '}']) || segment.chars().any(char::is_whitespace) {
                problems.add(format!("tiers.{name}.segment"), "must be non-empty, without braces or whitespace");
            }
            if let Some(other) = segments.insert(segment.to_owned(), name) {
                problems
                    .add(format!("tiers.{name}.segment"), format!("{segment:?} is also the segment of tier {other:?}"));
            }
        }
        if let Some(default) = &self.default_tier
            && !self.tiers.contains_key(default)
        {
            problems.add("default_tier", format!("{default:?} is not a configured tier"));
        }
    }

    fn check_policy(&self, problems: &mut Problems) {
        let policy = &self.policy;
        if policy.max_active_keys_per_owner == Some(0) {
            problems.add("policy.max_active_keys_per_owner", "must be at least 1");
        }
        let name = &policy.name;
        if name.min_length == 0 && name.required {
            problems.add("policy.name.min_length", "a required name is at least 1 character");
        }
        if name.min_length > name.max_length {
            problems.add("policy.name", "min_length is greater than max_length");
        }
        if name.max_length > 1_000 {
            problems.add("policy.name.max_length", "must be at most 1000");
        }
        let expiry = &policy.expiry;
        // A duration already refused as too long is not compared with the others.
        let mut bounded = |name: &str, duration: Option<HumanDuration>| match duration {
            Some(d) if d.0 > LONGEST_DURATION => {
                problems.add(format!("policy.expiry.{name}"), TOO_LONG);
                None
            }
            other => other,
        };
        let (default, min, max) =
            (bounded("default", expiry.default), bounded("min", expiry.min), bounded("max", expiry.max));
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            problems.add("policy.expiry", "min is longer than max");
        }
        if let Some(default) = default {
            if default.0.is_zero() {
                problems.add("policy.expiry.default", "must be longer than zero");
            }
            if min.is_some_and(|min| default < min) || max.is_some_and(|max| default > max) {
                problems.add("policy.expiry.default", "lies outside min..max");
            }
        }
    }
}
