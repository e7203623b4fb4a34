//! Applications: each has its own key format, hash, tiers and owner limit, a client
//! secret, and a namespace of keys. An application is stored as a JSON document
//! (`keypal_objects`, kind `app`) whose lookup is its client secret's keyed digest.

use std::collections::BTreeMap;
use std::sync::Arc;

use keypal::config::SecretString;
use keypal::{Config, HashAlgorithm, KeyManager, RateLimit, Tier};
use keypal_sql::SqlStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::schema::{HashName, Label, LegacyTemplates, Name, RateLimitText, Template, TierSegment};
use crate::secrets::Secrets;

/// The object kind of applications.
pub const KIND: &str = "app";
/// The object kind of label claims: one per application, its id the label, so the
/// store's primary key makes labels unique across concurrent requests and instances.
/// A claim is written and deleted in the same transaction as its application.
pub const LABEL_KIND: &str = "app_label";

/// The body of `app`'s label claim: it names the application, so only that
/// application's deletion removes it.
pub fn label_claim(app: &App) -> Value {
    serde_json::json!({ "app_id": app.id.to_string() })
}
/// The template of applications created without one.
pub const DEFAULT_TEMPLATE: &str = "sk-proj-{app}-{label}-{secret:32:base64url}";
/// The owner limit of applications created without one.
pub const DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER: u32 = 10;
/// The most earlier formats an application keeps verifying (`legacy_templates`).
pub const MAX_LEGACY_TEMPLATES: usize = 8;
/// The pepper id of HMAC-hashed keys (the pepper is derived from the master key).
const PEPPER_ID: &str = "m1";

/// An application as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Its id.
    pub id: Uuid,
    /// The short public id in keys (`{app}`): lowercase letters and digits.
    pub public_id: String,
    /// A human name.
    pub name: String,
    /// `[a-z0-9-]{1,32}`, unique; the `{label}` in keys.
    pub label: String,
    /// Metadata of keys created without any.
    pub default_metadata: Option<Value>,
    /// The key format of new keys.
    pub template: String,
    /// Earlier formats whose keys keep verifying.
    #[serde(default)]
    pub legacy_templates: Vec<String>,
    /// The hash of new keys.
    pub hash: HashAlgorithm,
    /// bcrypt's cost, when `hash` is bcrypt.
    pub bcrypt_cost: Option<u32>,
    /// Tiers by name.
    #[serde(default)]
    pub tiers: BTreeMap<String, Tier>,
    /// The tier of keys created without one.
    pub default_tier: Option<String>,
    /// Active keys an owner may hold.
    pub max_active_keys_per_owner: u32,
    /// Whether keys are kept encrypted so an administrator can reveal them.
    pub recoverable: bool,
    /// `key.credits_low` fires when a key's credits fall below this (none: never).
    #[serde(default)]
    pub credits_low_threshold: Option<u64>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A tier as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    /// The text of `{tier}` in keys (default: the tier's name).
    #[schema(value_type = Option<TierSegment>)]
    pub segment: Option<String>,
    /// Like `100/hour`, `10/minute`, `5000/day`.
    #[schema(value_type = Option<RateLimitText>)]
    pub rate_limit: Option<String>,
    /// Credits that refill, for keys of this tier created without a refill of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<crate::keys::RefillView>,
}

/// `POST /v1/apps`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    /// A human name (1-100 characters).
    #[schema(value_type = Name)]
    pub name: String,
    /// `[a-z0-9-]{1,32}`, unique.
    #[schema(value_type = Label)]
    pub label: String,
    /// Metadata of keys created without any: any JSON value.
    #[schema(value_type = Option<Value>, example = json!({"plan": "team"}))]
    pub default_metadata: Option<Value>,
    /// Default `sk-proj-{app}-{label}-{secret:32:base64url}`.
    #[schema(value_type = Option<Template>)]
    pub template: Option<String>,
    /// Earlier formats whose keys keep verifying (never used for new keys): at most 8,
    /// each a template, none the current one, none twice (default none).
    #[schema(value_type = Option<LegacyTemplates>)]
    pub legacy_templates: Option<Vec<String>>,
    /// `sha256` (default), `sha512`, `hmac-sha256`, `argon2id` or `bcrypt`.
    #[schema(value_type = Option<HashName>)]
    pub hash: Option<String>,
    /// bcrypt's cost (10-15), only with `hash: "bcrypt"` (default 10).
    #[schema(minimum = 10, maximum = 15)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub bcrypt_cost: Option<u32>,
    /// Tiers by name.
    #[schema(example = json!({"free": {"rate_limit": "100/hour"}}))]
    pub tiers: Option<BTreeMap<String, TierInput>>,
    /// The tier of keys created without one (needed when the template has `{tier}`).
    pub default_tier: Option<String>,
    /// Default 10 (1-100000).
    #[schema(minimum = 1, maximum = 100_000, example = 10)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub max_active_keys_per_owner: Option<u32>,
    /// Keep keys encrypted so they can be revealed (default false).
    #[schema(example = false)]
    pub recoverable: Option<bool>,
    /// The `key.credits_low` webhook event fires when a key's credits fall below this
    /// (once per key and refill period; default: never).
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64, example = 100)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub credits_low_threshold: Option<u64>,
}

/// `PATCH /v1/apps/{id}`: every field optional; `null` clears the optional ones.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    /// A new name.
    #[schema(value_type = Option<Name>)]
    pub name: Option<String>,
    /// New default metadata (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    #[schema(value_type = Option<Value>, example = json!({"plan": "enterprise"}))]
    pub default_metadata: Option<Option<Value>>,
    /// A new template for new keys (keys of the old one keep verifying: without
    /// `legacy_templates`, the old template joins them).
    #[schema(value_type = Option<Template>)]
    pub template: Option<String>,
    /// The earlier formats whose keys keep verifying, replacing the list (`[]` empties it:
    /// keys of a format left out stop verifying). At most 8, none the template, none twice.
    #[schema(value_type = Option<LegacyTemplates>)]
    pub legacy_templates: Option<Vec<String>>,
    /// A new hash for new keys (existing keys are re-hashed when they next verify).
    #[schema(value_type = Option<HashName>)]
    pub hash: Option<String>,
    /// A new bcrypt cost (10-15; bcrypt only: a new `hash` other than bcrypt drops the cost).
    #[schema(minimum = 10, maximum = 15)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub bcrypt_cost: Option<u32>,
    /// New tiers (replace the old ones).
    pub tiers: Option<BTreeMap<String, TierInput>>,
    /// A new default tier (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    pub default_tier: Option<Option<String>>,
    /// A new owner limit (1-100000).
    #[schema(minimum = 1, maximum = 100_000, example = 20)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub max_active_keys_per_owner: Option<u32>,
    /// Keep keys encrypted so they can be revealed. Turned on, it applies to keys
    /// created or rotated afterwards; turned off, the sealed copies of every key of the
    /// application are deleted (audited with their number).
    pub recoverable: Option<bool>,
    /// A new level below which `key.credits_low` fires (`null`: never).
    #[serde(default, deserialize_with = "crate::number::double_option")]
    #[schema(minimum = 1, maximum = 9_223_372_036_854_775_807_u64, example = 100)]
    pub credits_low_threshold: Option<Option<u64>>,
}

impl AppPatch {
    /// The names of the fields the patch sets, for the audit log.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("default_metadata", self.default_metadata.is_some()),
            ("template", self.template.is_some()),
            ("legacy_templates", self.legacy_templates.is_some()),
            ("hash", self.hash.is_some()),
            ("bcrypt_cost", self.bcrypt_cost.is_some()),
            ("tiers", self.tiers.is_some()),
            ("default_tier", self.default_tier.is_some()),
            ("max_active_keys_per_owner", self.max_active_keys_per_owner.is_some()),
            ("recoverable", self.recoverable.is_some()),
            ("credits_low_threshold", self.credits_low_threshold.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// An application as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppView {
    /// Its id.
    pub id: Uuid,
    /// The short public id in keys.
    pub public_id: String,
    /// The name.
    pub name: String,
    /// The label.
    pub label: String,
    /// Metadata of keys created without any.
    #[schema(value_type = Option<Value>)]
    pub default_metadata: Option<Value>,
    /// The key format.
    pub template: String,
    /// Earlier formats whose keys keep verifying (never used for new keys).
    pub legacy_templates: Vec<String>,
    /// The hash of new keys.
    pub hash: &'static str,
    /// bcrypt's cost.
    pub bcrypt_cost: Option<u32>,
    /// Tiers by name.
    pub tiers: BTreeMap<String, TierInput>,
    /// The tier of keys created without one.
    pub default_tier: Option<String>,
    /// Active keys an owner may hold.
    pub max_active_keys_per_owner: u32,
    /// Whether keys can be revealed.
    pub recoverable: bool,
    /// The level below which `key.credits_low` fires.
    pub credits_low_threshold: Option<u64>,
    /// Keys that work now (not revoked, not expired).
    pub active_keys: u64,
    /// Every key, revoked ones included.
    pub total_keys: u64,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl App {
    /// The API view, with key counts.
    pub fn view(&self, active_keys: u64, total_keys: u64) -> AppView {
        AppView {
            id: self.id,
            public_id: self.public_id.clone(),
            name: self.name.clone(),
            label: self.label.clone(),
            default_metadata: self.default_metadata.clone(),
            template: self.template.clone(),
            legacy_templates: self.legacy_templates.clone(),
            hash: self.hash.name(),
            bcrypt_cost: self.bcrypt_cost,
            tiers: self
                .tiers
                .iter()
                .map(|(name, t)| {
                    let input = TierInput {
                        segment: t.segment.clone(),
                        rate_limit: t.rate_limit.map(|l| l.to_string()),
                        refill: t.refill.as_ref().map(crate::keys::RefillView::from),
                    };
                    (name.clone(), input)
                })
                .collect(),
            default_tier: self.default_tier.clone(),
            max_active_keys_per_owner: self.max_active_keys_per_owner,
            recoverable: self.recoverable,
            credits_low_threshold: self.credits_low_threshold,
            active_keys,
            total_keys,
            created_at: self.created_at,
        }
    }

    /// The namespace of its keys.
    pub fn namespace(&self) -> String {
        self.id.to_string()
    }

    /// A new application from a create request (validated; the label's uniqueness is the caller's).
    pub fn create(request: NewApp, now: OffsetDateTime) -> Result<Self, ApiError> {
        let public_id = keypal::format::random_string(keypal::Encoding::Base32, 8)
            .map_err(|e| ApiError::internal(&e))?
            .to_ascii_lowercase();
        let template = check_template("template", request.template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned()))?;
        let app = App {
            id: Uuid::now_v7(),
            public_id,
            name: check_name(&request.name)?,
            label: check_label(&request.label)?,
            default_metadata: check_default_metadata(request.default_metadata)?,
            legacy_templates: check_legacy_templates(request.legacy_templates.unwrap_or_default(), &template)?,
            template,
            hash: parse_hash(request.hash.as_deref())?,
            bcrypt_cost: request.bcrypt_cost.map(check_bcrypt_cost).transpose()?,
            tiers: parse_tiers(request.tiers.unwrap_or_default())?,
            default_tier: request.default_tier,
            max_active_keys_per_owner: check_max(request.max_active_keys_per_owner)?,
            recoverable: request.recoverable.unwrap_or(false),
            credits_low_threshold: check_credits_low(request.credits_low_threshold)?,
            created_at: now,
        };
        Ok(app)
    }

    /// This application with a patch applied (validated).
    pub fn patched(&self, patch: AppPatch) -> Result<Self, ApiError> {
        let mut app = self.clone();
        if let Some(name) = patch.name {
            app.name = check_name(&name)?;
        }
        if let Some(metadata) = patch.default_metadata {
            app.default_metadata = check_default_metadata(metadata)?;
        }
        if let Some(template) = patch.template
            && template != app.template
        {
            let template = check_template("template", template)?;
            let old = std::mem::replace(&mut app.template, template);
            if patch.legacy_templates.is_none() {
                // Keys of the old format keep verifying.
                app.legacy_templates.retain(|t| *t != app.template);
                if !app.legacy_templates.contains(&old) {
                    app.legacy_templates.push(old);
                }
                if app.legacy_templates.len() > MAX_LEGACY_TEMPLATES {
                    let message = format!(
                        "the old template would make more than {MAX_LEGACY_TEMPLATES} earlier formats: \
                         send legacy_templates with the ones to keep"
                    );
                    return Err(ApiError::invalid("legacy_templates", message));
                }
            }
        }
        if let Some(legacy) = patch.legacy_templates {
            app.legacy_templates = check_legacy_templates(legacy, &app.template)?;
        }
        if let Some(hash) = patch.hash {
            app.hash = parse_hash(Some(&hash))?;
            // A cost belongs to bcrypt: moving to another hash drops it (sending one
            // along with another hash is still refused, naming `bcrypt_cost`).
            if app.hash != HashAlgorithm::Bcrypt {
                app.bcrypt_cost = None;
            }
        }
        if let Some(cost) = patch.bcrypt_cost {
            app.bcrypt_cost = Some(check_bcrypt_cost(cost)?);
        }
        if let Some(tiers) = patch.tiers {
            app.tiers = parse_tiers(tiers)?;
        }
        if let Some(default_tier) = patch.default_tier {
            app.default_tier = default_tier;
        }
        if let Some(threshold) = patch.credits_low_threshold {
            app.credits_low_threshold = check_credits_low(threshold)?;
        }
        if let Some(max) = patch.max_active_keys_per_owner {
            app.max_active_keys_per_owner = check_max(Some(max))?;
        }
        if let Some(recoverable) = patch.recoverable {
            app.recoverable = recoverable;
        }
        Ok(app)
    }

    /// The core configuration of this application's key manager.
    pub fn config(&self, secrets: &Secrets) -> Config {
        let mut config = Config {
            template: Some(self.template.clone()),
            legacy_templates: self.legacy_templates.clone(),
            app: Some(self.public_id.clone()),
            label: Some(self.label.clone()),
            namespace: Some(self.namespace()),
            tiers: self.tiers.clone(),
            default_tier: self.default_tier.clone(),
            ..Config::default()
        };
        config.hash.algorithm = self.hash;
        config.hash.bcrypt_cost = self.bcrypt_cost;
        // Always configured, so keys hashed with HMAC keep verifying if the app moves to another hash.
        config.hash.peppers.insert(PEPPER_ID.to_owned(), SecretString::new(secrets.pepper()));
        config.hash.pepper_id = Some(PEPPER_ID.to_owned());
        config.policy.max_active_keys_per_owner = Some(self.max_active_keys_per_owner);
        config
    }

    /// Builds the key manager of this application (a bad template or tier is a 400 naming the field).
    pub fn manager(&self, parts: &crate::state::ManagerParts) -> Result<KeyManager<Arc<SqlStore>>, ApiError> {
        let mut config = self.config(&parts.secrets);
        config.cache = parts.cache.clone();
        let mut builder = KeyManager::builder().config(config).store(parts.store.clone());
        for sink in &parts.sinks {
            builder = builder.event_sink_arc(sink.clone());
        }
        builder = match &parts.limiter {
            Some(shared) => builder.rate_limiter(shared.clone()),
            None => builder.local_rate_limiter(parts.local_limiter.clone()),
        };
        if self.recoverable {
            builder = builder.key_sealer(crate::keys::Sealer(parts.secrets.clone()));
        }
        if let Some(pool) = &parts.offload {
            builder = builder.offload(pool.clone());
        }
        builder.build().map_err(|e| match e {
            keypal::Error::Config(config) => match config.problems().first() {
                Some(p) => ApiError::invalid(public_field(&p.path), p.message.clone()),
                None => ApiError::invalid("app", config.to_string()),
            },
            other => ApiError::from(other),
        })
    }
}

/// The API's name for a core config path (`hash.bcrypt_cost` → `bcrypt_cost`).
fn public_field(path: &str) -> String {
    match path {
        "hash.algorithm" => "hash".to_owned(),
        "hash.bcrypt_cost" => "bcrypt_cost".to_owned(),
        "policy.max_active_keys_per_owner" => "max_active_keys_per_owner".to_owned(),
        "app" | "label" => "template".to_owned(),
        other => other.to_owned(),
    }
}

/// A `credits_low_threshold`: 1 to `i64::MAX` (what a key's credits can be).
fn check_credits_low(threshold: Option<u64>) -> Result<Option<u64>, ApiError> {
    match threshold {
        Some(0) => Err(ApiError::invalid("credits_low_threshold", "must be at least 1")),
        Some(n) if i64::try_from(n).is_err() => {
            Err(ApiError::invalid("credits_low_threshold", "must be at most 9223372036854775807"))
        }
        other => Ok(other),
    }
}

/// A name: 1-100 characters, not only spaces, no control characters; kept trimmed.
pub fn check_name(name: &str) -> Result<String, ApiError> {
    if name.chars().count() > 100 || name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "must not contain control characters"));
    }
    Ok(name.trim().to_owned())
}

/// Metadata stored as it was sent, except NUL characters (`\u0000`), which PostgreSQL's
/// `jsonb` refuses: in a string or a key anywhere inside, they are a 400 naming `field`.
pub fn check_metadata(field: &str, metadata: &Value) -> Result<(), ApiError> {
    let has_nul = |text: &str| text.contains('\0');
    let mut pending = vec![metadata];
    while let Some(value) = pending.pop() {
        let bad = match value {
            Value::String(text) => has_nul(text),
            Value::Array(items) => {
                pending.extend(items);
                false
            }
            Value::Object(map) => {
                pending.extend(map.values());
                map.keys().any(|k| has_nul(k))
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => false,
        };
        if bad {
            return Err(ApiError::invalid(field, "must not contain NUL characters (\\u0000)"));
        }
    }
    Ok(())
}

fn check_default_metadata(metadata: Option<Value>) -> Result<Option<Value>, ApiError> {
    if let Some(metadata) = &metadata {
        check_metadata("default_metadata", metadata)?;
    }
    Ok(metadata)
}

/// A template's literal text becomes part of every key: no control characters (a
/// refusal names `field`). The rest is the core's, checked when the key manager is built.
fn check_template(field: &str, template: String) -> Result<String, ApiError> {
    if template.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(template)
}

/// Earlier formats: at most [`MAX_LEGACY_TEMPLATES`], each a template (checked as
/// `template` is; the key manager's build parses them, naming `legacy_templates[i]`),
/// not `current`, none twice.
fn check_legacy_templates(legacy: Vec<String>, current: &str) -> Result<Vec<String>, ApiError> {
    if legacy.len() > MAX_LEGACY_TEMPLATES {
        return Err(ApiError::invalid("legacy_templates", format!("at most {MAX_LEGACY_TEMPLATES} earlier formats")));
    }
    let mut checked: Vec<String> = Vec::with_capacity(legacy.len());
    for (i, template) in legacy.into_iter().enumerate() {
        let field = format!("legacy_templates[{i}]");
        let template = check_template(&field, template)?;
        if template == current {
            return Err(ApiError::invalid(field, "is the current template"));
        }
        if let Some(j) = checked.iter().position(|t| *t == template) {
            return Err(ApiError::invalid(field, format!("repeats legacy_templates[{j}]")));
        }
        checked.push(template);
    }
    Ok(checked)
}

fn check_label(label: &str) -> Result<String, ApiError> {
    let ok = (1..=32).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(ApiError::invalid("label", "must be 1 to 32 of a-z, 0-9 and -"));
    }
    Ok(label.to_owned())
}

/// bcrypt's cost: 10 (the default) to 15. Each step doubles the work of every key
/// created and every verification of an unknown key; past 15 one hash takes seconds.
fn check_bcrypt_cost(cost: u32) -> Result<u32, ApiError> {
    if !(10..=15).contains(&cost) {
        return Err(ApiError::invalid("bcrypt_cost", "must be 10 to 15"));
    }
    Ok(cost)
}

fn check_max(max: Option<u32>) -> Result<u32, ApiError> {
    match max {
        None => Ok(DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER),
        Some(n) if (1..=100_000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("max_active_keys_per_owner", "must be 1 to 100000")),
    }
}

/// The hashes an application can use.
pub const HASHES: [HashAlgorithm; 5] = [
    HashAlgorithm::Sha256,
    HashAlgorithm::Sha512,
    HashAlgorithm::HmacSha256,
    HashAlgorithm::Argon2id,
    HashAlgorithm::Bcrypt,
];

fn parse_hash(name: Option<&str>) -> Result<HashAlgorithm, ApiError> {
    match name {
        None => Ok(HashAlgorithm::Sha256),
        Some(name) => HASHES
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| ApiError::invalid("hash", "must be one of sha256, sha512, hmac-sha256, argon2id, bcrypt")),
    }
}

fn parse_tiers(tiers: BTreeMap<String, TierInput>) -> Result<BTreeMap<String, Tier>, ApiError> {
    tiers
        .into_iter()
        .map(|(name, input)| {
            if name.chars().any(char::is_control) {
                return Err(ApiError::invalid(format!("tiers.{name}"), "a tier name has no control characters"));
            }
            let mut tier = Tier::new();
            if let Some(segment) = input.segment {
                if segment.chars().any(char::is_control) {
                    return Err(ApiError::invalid(
                        format!("tiers.{name}.segment"),
                        "must not contain control characters",
                    ));
                }
                tier = tier.segment(segment);
            }
            if let Some(limit) = input.rate_limit {
                let limit: RateLimit =
                    limit.parse().map_err(|e| ApiError::invalid(format!("tiers.{name}.rate_limit"), format!("{e}")))?;
                tier = tier.rate_limit(limit);
            }
            if let Some(refill) = input.refill {
                tier = tier.refill(refill.parse(&format!("tiers.{name}.refill"))?);
            }
            Ok((name, tier))
        })
        .collect()
}
