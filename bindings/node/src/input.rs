//! Arguments from JavaScript (JSON text written by `index.js`, camelCase) to the core's
//! request types. Unknown fields and wrong types are `INVALID_INPUT` naming the field.

use keypal::{
    AuditQuery, DigestEncoding, HashCovers, ImportAlgorithm, ImportKey, ImportedHash, KeyId, KeyPatch, ListQuery,
    NewKey, RateLimit,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::failure::Failure;

/// Reads `json` as a `T`, or names the field that is wrong.
pub fn read<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, Failure> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { what.to_owned() } else { path };
        Failure::invalid(field, without_position(&error.into_inner()))
    })
}

/// A serde message without the position in the JSON text (which `index.js` wrote, not the caller).
pub fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// A key id argument.
pub fn key_id(id: &str) -> Result<KeyId, Failure> {
    id.parse().map_err(|e| Failure::invalid("id", e))
}

/// An instant: a `Date` (sent as its ISO string), an RFC 3339 string, or milliseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Instant(pub OffsetDateTime);

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(deserializer)? {
            Value::String(text) => OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map(Instant)
                .map_err(|_| D::Error::custom(format!("{text:?} is not a date (use a Date or an ISO 8601 string)"))),
            Value::Number(ms) => ms
                .as_f64()
                .filter(|ms| ms.is_finite())
                .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos((ms * 1_000_000.0) as i128).ok())
                .map(Instant)
                .ok_or_else(|| D::Error::custom("not a valid date")),
            _ => Err(D::Error::custom("expected a Date, an ISO 8601 string or milliseconds since the epoch")),
        }
    }
}

/// A field that may be absent (unchanged), `null` (cleared) or a value.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

fn rate_limit(text: Option<String>, field: &str) -> Result<Option<RateLimit>, Failure> {
    text.map(|t| t.parse::<RateLimit>().map_err(|e| Failure::invalid(field, e))).transpose()
}

/// What `create` and `store` take.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKeyInput {
    name: Option<String>,
    owner_id: Option<String>,
    scopes: Option<Vec<String>>,
    metadata: Option<Value>,
    tier: Option<String>,
    expires_at: Option<Instant>,
    /// Seconds from now.
    expires_in: Option<u64>,
    /// `true`: never expires, even when the policy has a default expiry.
    never_expires: Option<bool>,
    remaining: Option<u64>,
    rate_limit: Option<String>,
}

impl NewKeyInput {
    pub fn into_new_key(self) -> Result<NewKey, Failure> {
        let mut key = NewKey::new();
        key.name = self.name;
        key.owner_id = self.owner_id;
        key.scopes = self.scopes.unwrap_or_default();
        key.metadata = self.metadata;
        key.tier = self.tier;
        key.remaining = self.remaining;
        key.rate_limit = rate_limit(self.rate_limit, "rateLimit")?;
        let expiries = [self.expires_at.is_some(), self.expires_in.is_some(), self.never_expires == Some(true)];
        if expiries.iter().filter(|set| **set).count() > 1 {
            return Err(Failure::invalid("expiresAt", "give one of expiresAt, expiresIn and neverExpires"));
        }
        if let Some(at) = self.expires_at {
            key = key.expires_at(at.0);
        }
        if let Some(seconds) = self.expires_in {
            key = key.expires_in(std::time::Duration::from_secs(seconds));
        }
        if self.never_expires == Some(true) {
            key = key.never_expires();
        }
        Ok(key)
    }
}

/// What `update` takes: absent fields are left alone, `null` clears one.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchInput {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<Option<Value>>,
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<Instant>>,
    #[serde(default, deserialize_with = "present")]
    tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    remaining: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<String>>,
}

impl PatchInput {
    pub fn into_patch(self) -> Result<KeyPatch, Failure> {
        let mut patch = KeyPatch::new();
        patch.name = self.name;
        patch.metadata = self.metadata;
        patch.scopes = self.scopes;
        patch.expires_at = self.expires_at.map(|at| at.map(|at| at.0));
        patch.tier = self.tier;
        patch.remaining = self.remaining;
        patch.rate_limit = self.rate_limit.map(|limit| rate_limit(limit, "rateLimit")).transpose()?;
        Ok(patch)
    }
}

/// A hash issued elsewhere, as `import` takes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashInput {
    algorithm: String,
    value: String,
    encoding: Option<String>,
    salt: Option<String>,
    covers: Option<String>,
}

/// What `import` takes: the plaintext `key` or a `hash` of it, and the key's details.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportInput {
    key: Option<String>,
    hash: Option<HashInput>,
    hint: Option<String>,
    id: Option<String>,
    last4: Option<String>,
    created_at: Option<Instant>,
    last_used_at: Option<Instant>,
    enabled: Option<bool>,
    skip_owner_limit: Option<bool>,
    name: Option<String>,
    owner_id: Option<String>,
    scopes: Option<Vec<String>>,
    metadata: Option<Value>,
    tier: Option<String>,
    expires_at: Option<Instant>,
    remaining: Option<u64>,
    rate_limit: Option<String>,
}

impl ImportInput {
    pub fn into_import(self) -> Result<ImportKey, Failure> {
        let mut import = match (self.key, self.hash) {
            (Some(key), None) => ImportKey::plaintext(key),
            (None, Some(hash)) => {
                let algorithm: ImportAlgorithm =
                    hash.algorithm.parse().map_err(|e| Failure::invalid("hash.algorithm", e))?;
                let mut imported = ImportedHash::new(algorithm, hash.value);
                if let Some(encoding) = hash.encoding {
                    let encoding: DigestEncoding =
                        encoding.parse().map_err(|e| Failure::invalid("hash.encoding", e))?;
                    imported = imported.encoding(encoding);
                }
                if let Some(salt) = hash.salt {
                    imported = imported.salt(salt);
                }
                if let Some(covers) = hash.covers {
                    let covers: HashCovers = covers.parse().map_err(|e| Failure::invalid("hash.covers", e))?;
                    imported = imported.covers(covers);
                }
                ImportKey::hash(imported)
            }
            _ => return Err(Failure::invalid("key", "give either the plaintext key or its hash")),
        };
        import.hint = self.hint;
        import.id = self.id;
        import.last4 = self.last4;
        import.created_at = self.created_at.map(|at| at.0);
        import.last_used_at = self.last_used_at.map(|at| at.0);
        import.enabled = self.enabled.unwrap_or(true);
        import.skip_owner_limit = self.skip_owner_limit.unwrap_or(false);
        let details = NewKeyInput {
            name: self.name,
            owner_id: self.owner_id,
            scopes: self.scopes,
            metadata: self.metadata,
            tier: self.tier,
            expires_at: self.expires_at,
            remaining: self.remaining,
            rate_limit: self.rate_limit,
            ..NewKeyInput::default()
        };
        Ok(import.with(details.into_new_key()?))
    }
}

fn cursor(text: Option<String>) -> Result<Option<Uuid>, Failure> {
    text.map(|c| Uuid::parse_str(&c).map_err(|_| Failure::invalid("cursor", "not a cursor this listing returned")))
        .transpose()
}

fn limit(limit: Option<u32>) -> Result<Option<u32>, Failure> {
    match limit {
        Some(n) if !(1..=1000).contains(&n) => Err(Failure::invalid("limit", "must be between 1 and 1000")),
        other => Ok(other),
    }
}

/// What `list` (and `count`) take.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    owner_id: Option<String>,
    include_revoked: Option<bool>,
    active_only: Option<bool>,
    search: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListInput {
    pub fn into_query(self) -> Result<ListQuery, Failure> {
        let mut query = ListQuery::new()
            .include_revoked(self.include_revoked.unwrap_or(false))
            .active_only(self.active_only.unwrap_or(false));
        if let Some(owner) = self.owner_id {
            query = query.owner_id(owner);
        }
        if let Some(search) = self.search {
            query = query.search(search);
        }
        if let Some(n) = limit(self.limit)? {
            query = query.limit(n);
        }
        if let Some(cursor) = cursor(self.cursor)? {
            query = query.cursor(cursor);
        }
        Ok(query)
    }
}

/// What `audit` takes.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditInput {
    key_id: Option<String>,
    owner_id: Option<String>,
    action: Option<String>,
    since: Option<Instant>,
    until: Option<Instant>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl AuditInput {
    pub fn into_query(self) -> Result<AuditQuery, Failure> {
        let mut query = AuditQuery::new();
        if let Some(id) = self.key_id {
            query = query.key_id(id.parse().map_err(|e| Failure::invalid("keyId", e))?);
        }
        if let Some(owner) = self.owner_id {
            query = query.owner_id(owner);
        }
        if let Some(action) = self.action {
            query = query.action(action.parse().map_err(|e| Failure::invalid("action", e))?);
        }
        query.since = self.since.map(|at| at.0);
        query.until = self.until.map(|at| at.0);
        if let Some(n) = limit(self.limit)? {
            query = query.limit(n);
        }
        if let Some(cursor) = cursor(self.cursor)? {
            query = query.cursor(cursor);
        }
        Ok(query)
    }
}
