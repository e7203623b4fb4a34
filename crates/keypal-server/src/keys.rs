//! Keys as the API shows and takes them.

use std::sync::Arc;

use keypal::{KeyId, KeyRecord, PlainKey, Refill, SealError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::schema::{Name, OwnerId, RateLimitText, Scopes};
use crate::secrets::Secrets;

/// Seals recoverable keys under the master key, bound to their key id.
pub struct Sealer(pub Arc<Secrets>);

impl keypal::KeySealer for Sealer {
    fn seal(&self, id: KeyId, key: &PlainKey) -> Result<String, SealError> {
        self.0.seal(&id.to_string(), key.expose()).map_err(|e| SealError(e.to_string()))
    }
}

/// Credits that refill: the key's `remaining` is set back to `amount` at each boundary
/// of `interval`, in UTC (a quota, not an accumulation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillView {
    /// `daily` (every 00:00 UTC), `weekly` (Mondays 00:00 UTC), `monthly` (00:00 UTC on
    /// `day`), or a duration like `90s`, `30m`, `12h`, `7d` (at least one second,
    /// counted from when the refill was set).
    #[schema(pattern = "^(daily|weekly|monthly|[1-9][0-9]{0,9}[smhd])$", example = "monthly")]
    pub interval: String,
    /// For `monthly`: the day of the month, 1 to 31 (the last day of shorter months; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::number::option")]
    #[schema(minimum = 1, maximum = 31, example = 1)]
    pub day: Option<u8>,
    /// What the credits are set back to at each boundary.
    #[serde(deserialize_with = "crate::number::required")]
    #[schema(maximum = 9_223_372_036_854_775_807_u64, example = 1000)]
    pub amount: u64,
}

impl RefillView {
    /// The refill it describes, or the `INVALID_INPUT` refusal of `field`.
    pub fn parse(&self, field: &str) -> Result<Refill, crate::error::ApiError> {
        Refill::from_parts(&self.interval, self.day, self.amount)
            .map_err(|e| crate::error::ApiError::invalid(field, e.to_string()))
    }
}

impl From<&Refill> for RefillView {
    fn from(refill: &Refill) -> Self {
        let (interval, day, amount) = refill.parts();
        RefillView { interval, day, amount }
    }
}

/// A key as the API shows it: never the key or its hash.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// Its id.
    #[schema(example = "0190f3c2-9a41-7b7e-8c2d-5e6f70819203")]
    pub id: Uuid,
    /// Its application.
    #[schema(example = "0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d")]
    pub app_id: Option<String>,
    /// A human name.
    #[schema(example = "CI")]
    pub name: Option<String>,
    /// Who owns it.
    #[schema(example = "user_42")]
    pub owner_id: Option<String>,
    /// First characters + `…` + last 4.
    #[schema(example = "sk-proj-k3j9x2ab-billing-Zm9v…Xy3Q")]
    pub masked: String,
    /// The tier.
    pub tier: Option<String>,
    /// Granted scopes.
    #[schema(example = json!(["read", "billing:*"]))]
    pub scopes: Vec<String>,
    /// Any JSON value.
    #[schema(value_type = Option<Value>, example = json!({"plan": "team"}))]
    pub metadata: Option<Value>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(example = "2026-12-03T10:15:00Z")]
    pub created_at: OffsetDateTime,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(example = "2027-12-03T10:15:00Z")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it last verified (may lag a few seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked (a rotated key: when its grace window ends).
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Disabled keys are refused until enabled.
    #[schema(example = true)]
    pub enabled: bool,
    /// Credits left now; `null` is unlimited. With a refill whose boundary has passed
    /// since the last spend, the refill's amount (the next spend tops the credits up).
    pub remaining: Option<u64>,
    /// Credits that refill.
    pub refill: Option<RefillView>,
    /// When the credits next refill (with a refill).
    #[serde(with = "time::serde::rfc3339::option")]
    pub refill_at: Option<OffsetDateTime>,
    /// A per-key rate limit, like `100/hour`.
    pub rate_limit: Option<String>,
    /// The key this one replaced.
    pub rotated_from: Option<Uuid>,
}

impl From<&KeyRecord> for KeyView {
    fn from(r: &KeyRecord) -> Self {
        let now = OffsetDateTime::now_utc();
        KeyView {
            id: r.id.0,
            app_id: r.namespace.clone(),
            name: r.name.clone(),
            owner_id: r.owner_id.clone(),
            masked: r.masked(),
            tier: r.tier.clone(),
            scopes: r.scopes.clone(),
            metadata: r.metadata.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            enabled: r.enabled,
            remaining: r.remaining_at(now),
            refill: r.refill.as_ref().map(RefillView::from),
            refill_at: r.refill_at(now),
            rate_limit: r.rate_limit.map(|l| l.to_string()),
            rotated_from: r.rotated_from.map(|id| id.0),
        }
    }
}

/// A new key, shown once, with its record.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key: shown once, never stored in plaintext.
    #[schema(example = "sk-proj-k3j9x2ab-billing-Zm9vYmFyYmF6cXV4cXV1eHh5eXozXy3Q")]
    pub key: String,
    /// Its record.
    pub record: KeyView,
}

/// `POST /v1/apps/{id}/keys`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// A human name (1-100 characters).
    #[schema(value_type = Option<Name>)]
    pub name: Option<String>,
    /// Who owns it.
    #[schema(value_type = Option<OwnerId>)]
    pub owner_id: Option<String>,
    /// Any JSON value (default: the application's `default_metadata`).
    #[schema(value_type = Option<Value>, example = json!({"team": "infra"}))]
    pub metadata: Option<Value>,
    /// Granted scopes.
    #[schema(value_type = Option<Scopes>)]
    pub scopes: Option<Vec<String>>,
    /// A tier of the application.
    pub tier: Option<String>,
    /// Expires this many days from now (1-3650).
    #[schema(minimum = 1, maximum = 3650, example = 90)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub expires_in_days: Option<u32>,
    /// Expires at this instant (RFC 3339, in the future), instead of `expires_in_days`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Usage credits (default unlimited).
    #[schema(maximum = 9_223_372_036_854_775_807_u64, example = 1000)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub remaining: Option<u64>,
    /// A per-key rate limit overriding the tier's, like `100/hour`.
    #[schema(value_type = Option<RateLimitText>)]
    pub rate_limit: Option<String>,
    /// Credits that refill (default: the tier's refill). The key starts with `amount`
    /// credits unless `remaining` says otherwise.
    pub refill: Option<RefillView>,
}

/// `PATCH /v1/keys/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatchRequest {
    /// A new name (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    #[schema(value_type = Option<Name>)]
    pub name: Option<Option<String>>,
    /// New metadata (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    #[schema(value_type = Option<Value>, example = json!({"team": "infra"}))]
    pub metadata: Option<Option<Value>>,
    /// New scopes.
    #[schema(value_type = Option<Scopes>)]
    pub scopes: Option<Vec<String>>,
    /// Enable or disable.
    #[schema(example = false)]
    pub enabled: Option<bool>,
    /// A new expiry (RFC 3339; `null`: never).
    #[serde(default, deserialize_with = "crate::patch::double_option_time")]
    #[schema(value_type = Option<time::OffsetDateTime>)]
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// A new tier (`null` clears it).
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    pub tier: Option<Option<String>>,
    /// New credits (`null`: unlimited).
    #[serde(default, deserialize_with = "crate::number::double_option")]
    #[schema(maximum = 9_223_372_036_854_775_807_u64, example = 500)]
    pub remaining: Option<Option<u64>>,
    /// Credits that refill (`null` removes the refill, keeping the credits left). A new
    /// refill starts now, with `amount` credits unless `remaining` is given too.
    #[serde(default, deserialize_with = "crate::patch::double_option")]
    pub refill: Option<Option<RefillView>>,
}

/// How `POST /v1/keys/{id}/credits` changes the credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CreditOpName {
    /// Sets them to `amount` (a key with unlimited credits gets a limit).
    Set,
    /// Adds `amount`.
    Increment,
    /// Takes `amount` away, down to zero at most.
    Decrement,
}

/// `POST /v1/keys/{id}/credits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    /// `set`, `increment` or `decrement`.
    pub op: CreditOpName,
    /// How many credits.
    #[serde(deserialize_with = "crate::number::required")]
    #[schema(maximum = 9_223_372_036_854_775_807_u64, example = 100)]
    pub amount: u64,
}

impl CreditsRequest {
    /// The change it asks for.
    pub fn op(&self) -> keypal::CreditOp {
        match self.op {
            CreditOpName::Set => keypal::CreditOp::Set(self.amount),
            CreditOpName::Increment => keypal::CreditOp::Increment(self.amount),
            CreditOpName::Decrement => keypal::CreditOp::Decrement(self.amount),
        }
    }
}

/// `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// Seconds the old key keeps working (default 0: invalid at once; at most 30 days).
    #[schema(maximum = 2_592_000, example = 3600)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub grace_seconds: Option<u64>,
}
