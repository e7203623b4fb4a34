//! What keypal stores about a key, and the requests that create or change it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PlainKey;
use crate::hash::HashError;
use crate::refill::Refill;
use crate::tier::RateLimit;

/// A key's id: a UUID v7, so ids sort by creation time. Safe to log and show.
///
/// ```
/// use keypal::KeyId;
/// let id = KeyId::new();
/// let parsed: KeyId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// assert!("not-a-uuid".parse::<KeyId>().is_err());
/// # Ok::<(), keypal::InvalidKeyId>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub Uuid);

impl KeyId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for KeyId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A key id that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key id is a UUID like 0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71")]
pub struct InvalidKeyId;

impl FromStr for KeyId {
    type Err = InvalidKeyId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| InvalidKeyId)
    }
}

/// How a presented key finds its record without a scan (see DESIGN "Stored hashes and lookup").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Lookup {
    /// The public `{id}` segment of the key. Unique.
    Id(String),
    /// SHA-256 of the whole key. Unique.
    Digest(#[serde(with = "hex_digest")] [u8; 32]),
    /// The first characters of the key: several keys may share one, each candidate is verified.
    Hint(String),
}

impl Lookup {
    /// The kind as stored in a column: `id`, `digest` or `hint`.
    pub fn kind(&self) -> &'static str {
        match self {
            Lookup::Id(_) => "id",
            Lookup::Digest(_) => "digest",
            Lookup::Hint(_) => "hint",
        }
    }

    /// The value as text: the id, the lowercase hex digest, or the hint.
    ///
    /// ```
    /// use keypal::Lookup;
    /// assert_eq!(Lookup::Digest([0xab; 32]).value().len(), 64);
    /// assert_eq!(Lookup::Id("abc".into()).value(), "abc");
    /// ```
    pub fn value(&self) -> String {
        match self {
            Lookup::Id(v) | Lookup::Hint(v) => v.clone(),
            Lookup::Digest(d) => hex_digest::encode(d),
        }
    }

    /// Rebuilds a lookup from its stored kind and text; `None` when they do not fit together.
    ///
    /// ```
    /// use keypal::Lookup;
    /// let l = Lookup::Digest([7; 32]);
    /// assert_eq!(Lookup::from_parts(l.kind(), &l.value()), Some(l));
    /// assert_eq!(Lookup::from_parts("digest", "zz"), None);
    /// ```
    pub fn from_parts(kind: &str, value: &str) -> Option<Self> {
        match kind {
            "id" => Some(Lookup::Id(value.to_owned())),
            "hint" => Some(Lookup::Hint(value.to_owned())),
            "digest" => hex_digest::decode(value).map(Lookup::Digest),
            _ => None,
        }
    }

    /// Whether no two records may share this lookup (ids and digests).
    pub fn is_unique(&self) -> bool {
        !matches!(self, Lookup::Hint(_))
    }
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8; 32]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in bytes {
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
        out
    }

    pub fn decode(text: &str) -> Option<[u8; 32]> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("a digest is 64 hex characters"))
    }
}

/// Everything keypal stores about one key. Never the plaintext: only its hash,
/// the first characters (`start`) and the last four (`last4`) for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
// In memory order (`repr(C)`): the fields every verification reads come first, so a
// record read from memory that is not in the CPU caches costs as few cache lines as can be.
#[repr(C)]
pub struct KeyRecord {
    /// The self-describing stored hash.
    pub hash: String,
    /// The namespace (application) the key belongs to, if any.
    pub namespace: Option<String>,
    /// The key's id.
    pub id: KeyId,
    /// When the key was (or, for a rotated key in its grace window, will be) revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key stops working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Usage credits left; `None` is unlimited.
    pub remaining: Option<u64>,
    /// Credits that refill: `remaining` is set back to its amount at each boundary.
    pub refill: Option<Refill>,
    /// When `remaining` was last set back by the refill (or the refill was set): a
    /// boundary has passed when the latest one is later than this.
    #[serde(with = "time::serde::rfc3339::option")]
    pub refilled_at: Option<OffsetDateTime>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The tier name.
    pub tier: Option<String>,
    /// A per-key rate limit overriding the tier's.
    pub rate_limit: Option<RateLimit>,
    /// Disabled keys are refused until enabled again.
    pub enabled: bool,
    /// The `last_used_at` interval in which this key's use was last noted: kept in the
    /// record, so a verification asks the record it has just read, not a table
    /// elsewhere in memory, whether the use needs noting. Not part of the key's data
    /// (never stored, ignored by `==`).
    #[serde(skip)]
    pub(crate) noted_in: NotedIn,
    /// When the key last verified (coalesced: may lag by the flush interval).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// How the key is found when presented.
    pub lookup: Lookup,
    /// The first characters of the key, for display.
    pub start: String,
    /// The last four characters of the key, for display.
    pub last4: String,
    /// A human name.
    pub name: Option<String>,
    /// Who owns the key.
    pub owner_id: Option<String>,
    /// Any JSON value, a plain string included.
    pub metadata: Option<Value>,
    /// When the key was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one by rotation.
    pub rotated_to: Option<KeyId>,
    /// An encrypted copy of the key, for recoverable keys only (opaque to keypal's core).
    pub encrypted_key: Option<String>,
    /// Incremented by every change of the record except `last_used_at` and credit spending.
    pub version: u64,
}

impl KeyRecord {
    /// A record with only its id, lookup, stored hash and creation time: enabled,
    /// at version 1, with empty `start`, `last4` and scopes and every optional field
    /// `None`. For stores, importers and tests that build records outside this crate;
    /// set the other fields on the returned value.
    ///
    /// ```
    /// use keypal::{KeyId, KeyRecord, Lookup};
    /// let at = keypal::clock::truncate_to_micros(time::OffsetDateTime::now_utc());
    /// let mut record = KeyRecord::new(KeyId::new(), Lookup::Hint("sk_live_abcd".into()), "$sha256$00", at);
    /// record.owner_id = Some("user_1".into());
    /// assert!(record.enabled && record.revoked_at.is_none());
    /// assert_eq!(record.version, 1);
    /// assert_eq!(record.created_at, at);
    /// ```
    pub fn new(id: KeyId, lookup: Lookup, hash: impl Into<String>, created_at: OffsetDateTime) -> Self {
        Self {
            id,
            namespace: None,
            lookup,
            hash: hash.into(),
            start: String::new(),
            last4: String::new(),
            name: None,
            owner_id: None,
            tier: None,
            scopes: Vec::new(),
            metadata: None,
            created_at,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
            enabled: true,
            noted_in: NotedIn::default(),
            rotated_from: None,
            rotated_to: None,
            remaining: None,
            refill: None,
            refilled_at: None,
            rate_limit: None,
            encrypted_key: None,
            version: 1,
        }
    }

    /// Whether the key is revoked at `now` (a rotated key is revoked once its grace window ends).
    pub fn is_revoked_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the key is active: not revoked (nor scheduled to be, as a rotated key in
    /// its grace window is) and not expired. A disabled key is active (it can be enabled
    /// again). This one definition counts against an owner's limit of active keys, and
    /// serves the active counts and [`ListQuery::active_only`](crate::ListQuery::active_only).
    pub fn is_active_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && !self.is_expired_at(now)
    }

    /// Whether the name or the owner id contains `text`, ignoring the case of ASCII
    /// letters: the search of [`ListQuery::search`](crate::ListQuery::search). An empty
    /// text matches every key.
    pub fn matches_search(&self, text: &str) -> bool {
        let needle = text.to_ascii_lowercase();
        let has = |field: &Option<String>| field.as_deref().is_some_and(|f| f.to_ascii_lowercase().contains(&needle));
        has(&self.name) || has(&self.owner_id)
    }

    /// `start…last4`, the form keys are shown in lists.
    pub fn masked(&self) -> String {
        format!("{}…{}", self.start, self.last4)
    }

    /// What the stored hash covers: the whole key, or only its `{secret}` segment for a
    /// key imported from a system that hashed the secret alone (until its first
    /// successful verification re-hashes it whole). Read from the stored hash string,
    /// which says so itself ([`HashCovers::of`]).
    ///
    /// ```
    /// use keypal::{HashCovers, KeyId, KeyRecord, Lookup};
    /// let at = time::OffsetDateTime::now_utc();
    /// let record = KeyRecord::new(KeyId::new(), Lookup::Id("k3x9q2mfp7ta".into()), "$secret$$sha256$00", at);
    /// assert_eq!(record.hash_covers(), HashCovers::Secret);
    /// ```
    pub fn hash_covers(&self) -> HashCovers {
        HashCovers::of(&self.hash)
    }

    /// The credits the key holds at `now`: with a refill whose boundary has passed
    /// since `refilled_at`, the refill's amount (what the next spend tops up to);
    /// else `remaining`.
    ///
    /// ```
    /// use keypal::{KeyId, KeyRecord, Lookup, Refill, RefillInterval};
    /// use time::macros::datetime;
    /// let mut record = KeyRecord::new(KeyId::new(), Lookup::Id("a".into()), "$sha256$00", datetime!(2025-01-01 0:00 UTC));
    /// record.remaining = Some(0);
    /// record.refill = Some(Refill::new(RefillInterval::Daily, 100));
    /// record.refilled_at = Some(datetime!(2025-01-01 0:00 UTC));
    /// assert_eq!(record.remaining_at(datetime!(2025-01-01 18:00 UTC)), Some(0));
    /// assert_eq!(record.remaining_at(datetime!(2025-01-02 0:00 UTC)), Some(100));
    /// ```
    pub fn remaining_at(&self, now: OffsetDateTime) -> Option<u64> {
        match &self.refill {
            Some(refill) => refill.remaining_at(self.remaining, self.refilled_at.or(Some(self.created_at)), now),
            None => self.remaining,
        }
    }

    /// The latest refill boundary at or before `now`, when the key has a refill: what
    /// [`Store::consume`](crate::Store::consume) tops the credits up at.
    pub fn refill_due(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.refill.as_ref()?.boundary_at(self.refilled_at.or(Some(self.created_at)), now)
    }

    /// Applies a refill top-up as stores do before spending (see
    /// [`Store::consume`](crate::Store::consume)): when the record has a refill and
    /// its `refilled_at` is before `refill_due` (or unset), sets `remaining` to the
    /// refill's amount and `refilled_at` to `refill_due`. Returns whether it did.
    ///
    /// ```
    /// use keypal::{KeyId, KeyRecord, Lookup, Refill, RefillInterval};
    /// use time::macros::datetime;
    /// let mut record = KeyRecord::new(KeyId::new(), Lookup::Id("a".into()), "$sha256$00", datetime!(2025-01-01 0:00 UTC));
    /// record.remaining = Some(2);
    /// record.refill = Some(Refill::new(RefillInterval::Daily, 100));
    /// record.refilled_at = Some(datetime!(2025-01-01 0:00 UTC));
    /// assert!(!record.top_up(Some(datetime!(2025-01-01 0:00 UTC))));
    /// assert!(record.top_up(Some(datetime!(2025-01-02 0:00 UTC))));
    /// assert_eq!((record.remaining, record.refilled_at), (Some(100), Some(datetime!(2025-01-02 0:00 UTC))));
    /// ```
    pub fn top_up(&mut self, refill_due: Option<OffsetDateTime>) -> bool {
        let (Some(refill), Some(due)) = (&self.refill, refill_due) else { return false };
        if self.refilled_at.is_some_and(|at| at >= due) {
            return false;
        }
        self.remaining = Some(refill.amount);
        self.refilled_at = Some(due);
        true
    }

    /// When the credits next refill, when the key has a refill.
    pub fn refill_at(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        Some(self.refill.as_ref()?.next_boundary(self.refilled_at.or(Some(self.created_at)), now))
    }
}

/// Which `last_used_at` interval a record's use was last noted in, and by which
/// manager (0: never). Copied with the record (what it says stays true of the key),
/// and equal to any other: it is bookkeeping of this process, not the key's data.
#[derive(Default)]
pub(crate) struct NotedIn(AtomicU64);

impl NotedIn {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, interval: u64) {
        self.0.store(interval, Ordering::Relaxed);
    }
}

impl Clone for NotedIn {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.get()))
    }
}

impl PartialEq for NotedIn {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for NotedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// A request to create a key: everything optional.
///
/// ```
/// use keypal::NewKey;
/// use std::time::Duration;
/// let request = NewKey::new()
///     .owner_id("user_123")
///     .name("CI deploys")
///     .scopes(["read", "write"])
///     .metadata(serde_json::json!({"team": "infra"}))
///     .expires_in(Duration::from_secs(3600));
/// assert_eq!(request.scopes.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NewKey {
    /// A human name (trimmed; checked against the name policy).
    pub name: Option<String>,
    /// Who owns the key.
    pub owner_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Any JSON value.
    pub metadata: Option<Value>,
    /// The tier name (must be configured).
    pub tier: Option<String>,
    /// Expiry: a duration from now or an instant.
    pub expiry: Option<Expiry>,
    /// Usage credits; `None` is unlimited (with a refill: its amount).
    pub remaining: Option<u64>,
    /// Credits that refill (default: the tier's refill, if any).
    pub refill: Option<Refill>,
    /// A per-key rate limit overriding the tier's.
    pub rate_limit: Option<RateLimit>,
}

/// When a new key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// This long after creation.
    In(Duration),
    /// At this instant.
    At(OffsetDateTime),
    /// Never, even when the policy has a default expiry (refused when the policy has a maximum).
    Never,
}

impl NewKey {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Sets the owner.
    pub fn owner_id(mut self, owner: impl Into<String>) -> Self {
        self.owner_id = Some(owner.into());
        self
    }
    /// Sets the granted scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the metadata.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }
    /// Sets the tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = Some(tier.into());
        self
    }
    /// Expires this long after creation.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.expiry = Some(Expiry::In(after));
        self
    }
    /// Expires at an instant.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expiry = Some(Expiry::At(at));
        self
    }
    /// Never expires, overriding a default expiry.
    pub fn never_expires(mut self) -> Self {
        self.expiry = Some(Expiry::Never);
        self
    }
    /// Sets usage credits.
    pub fn remaining(mut self, credits: u64) -> Self {
        self.remaining = Some(credits);
        self
    }
    /// Sets a per-key rate limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
    /// Sets credits that refill: the key starts with `amount` credits (unless
    /// [`NewKey::remaining`] says otherwise) and gets them back at each boundary.
    ///
    /// ```
    /// use keypal::{NewKey, Refill, RefillInterval};
    /// let request = NewKey::new().refill(Refill::new(RefillInterval::Monthly { day: 1 }, 1_000));
    /// assert_eq!(request.refill.map(|r| r.amount), Some(1_000));
    /// ```
    pub fn refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }
}

/// A change to some fields of a key. Each set field is one atomic column update;
/// unset fields are left alone. `Some(None)` clears a field.
///
/// ```
/// use keypal::KeyPatch;
/// let patch = KeyPatch::new().name("renamed").scopes(["read"]).clear_expiry();
/// assert!(!patch.is_empty());
/// assert!(KeyPatch::new().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct KeyPatch {
    /// New name.
    pub name: Option<Option<String>>,
    /// New metadata.
    pub metadata: Option<Option<Value>>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// New expiry.
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// New tier.
    pub tier: Option<Option<String>>,
    /// New credits.
    pub remaining: Option<Option<u64>>,
    /// New per-key rate limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// New refill (`Some(None)` removes it).
    pub refill: Option<Option<Refill>>,
    /// When the credits were last refilled: set with a new refill, to start its first
    /// period ([`KeyManager::update`](crate::KeyManager::update) sets it).
    pub refilled_at: Option<Option<OffsetDateTime>>,
}

impl KeyPatch {
    /// A patch that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// Renames the key.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Some(name.into()));
        self
    }
    /// Replaces the metadata (`None` clears it).
    pub fn metadata(mut self, metadata: Option<Value>) -> Self {
        self.metadata = Some(metadata);
        self
    }
    /// Replaces the scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }
    /// Sets the expiry.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(Some(at));
        self
    }
    /// Removes the expiry.
    pub fn clear_expiry(mut self) -> Self {
        self.expires_at = Some(None);
        self
    }
    /// Sets the tier (`None` clears it).
    pub fn tier(mut self, tier: Option<String>) -> Self {
        self.tier = Some(tier);
        self
    }
    /// Sets the credits (`None`: unlimited).
    pub fn remaining(mut self, credits: Option<u64>) -> Self {
        self.remaining = Some(credits);
        self
    }
    /// Sets the per-key rate limit (`None`: the tier's).
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sets the refill (`None` removes it). Through
    /// [`KeyManager::update`](crate::KeyManager::update), a new refill starts a period
    /// now: `refilled_at` is set to now and, unless the patch sets `remaining`, the
    /// credits to the refill's amount.
    ///
    /// ```
    /// use keypal::{KeyPatch, Refill, RefillInterval};
    /// let patch = KeyPatch::new().refill(Some(Refill::new(RefillInterval::Daily, 50)));
    /// assert!(!patch.is_empty());
    /// ```
    pub fn refill(mut self, refill: Option<Refill>) -> Self {
        self.refill = Some(refill);
        self
    }

    /// Sets when the credits were last refilled (`None` clears it): what a new refill
    /// counts its periods from. [`KeyManager::update`](crate::KeyManager::update) sets
    /// it with the refill and ignores it otherwise.
    pub fn refilled_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.refilled_at = Some(at);
        self
    }

    /// Applies the patch to a record in memory (what a store does column by column).
    pub fn apply_to(&self, record: &mut KeyRecord) {
        if let Some(v) = &self.name {
            record.name.clone_from(v);
        }
        if let Some(v) = &self.metadata {
            record.metadata.clone_from(v);
        }
        if let Some(v) = &self.scopes {
            record.scopes.clone_from(v);
        }
        if let Some(v) = self.expires_at {
            record.expires_at = v;
        }
        if let Some(v) = &self.tier {
            record.tier.clone_from(v);
        }
        if let Some(v) = self.remaining {
            record.remaining = v;
        }
        if let Some(v) = self.rate_limit {
            record.rate_limit = v;
        }
        if let Some(v) = self.refill {
            record.refill = v;
        }
        if let Some(v) = self.refilled_at {
            record.refilled_at = v;
        }
    }
}

/// A key just created: the plaintext, shown once, and its record.
#[derive(Debug, Clone)]
pub struct Created {
    /// The plaintext key. Show it to its owner once; keypal keeps only its hash.
    pub key: PlainKey,
    /// The stored record.
    pub record: KeyRecord,
}

/// A key issued elsewhere, to be imported so it keeps working.
///
/// ```
/// use keypal::{ImportKey, NewKey};
/// // A plaintext key from an older system:
/// let plain = ImportKey::plaintext("sk_live_legacyKEY1234567890abcdefghijkl");
/// // Only its SHA-256 hex is known:
/// let digest = ImportKey::sha256_hex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
/// // A bcrypt hash, with the first characters stored next to it as a lookup hint:
/// let bcrypt = ImportKey::bcrypt("$2b$10$abcdefghijklmnopqrstuuJ0S3r6Tp2kq7L1c0fUo0mE0tGvLZcVK")
///     .hint("brdnv_sk_a7b")
///     .with(NewKey::new().owner_id("user_1"));
/// # let _ = (plain, digest, bcrypt);
/// ```
#[derive(Debug, Clone)]
pub struct ImportKey {
    /// What is known of the key.
    pub source: ImportSource,
    /// The first characters of the key (required for hash imports under the hint strategy).
    pub hint: Option<String>,
    /// The public id segment (required for hash imports under the id strategy).
    pub id: Option<String>,
    /// The last four characters, for display, when known.
    pub last4: Option<String>,
    /// When the key was created in the old system (defaults to now).
    pub created_at: Option<OffsetDateTime>,
    /// When the key was last used in the old system (defaults to never).
    pub last_used_at: Option<OffsetDateTime>,
    /// Whether the key is enabled (default `true`): a disabled key is imported disabled.
    pub enabled: bool,
    /// Stores the key even when its owner already has the most active keys the policy
    /// allows (default `false`: the import is refused with [`crate::Error::LimitReached`]).
    pub skip_owner_limit: bool,
    /// Owner, name, scopes, metadata, tier, expiry, credits.
    pub details: NewKey,
}

/// What an import knows of the key.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ImportSource {
    /// The plaintext key.
    Plaintext(PlainKey),
    /// A SHA-256 hex digest of the key (the same as a [`ImportSource::Hash`] of
    /// [`ImportAlgorithm::Sha256`] in hex).
    Sha256Hex(String),
    /// A bcrypt hash of the key, `$2a$`, `$2b$` or `$2y$` (the same as a
    /// [`ImportSource::Hash`] of [`ImportAlgorithm::Bcrypt`]).
    Bcrypt(String),
    /// A hash of the key, or of its secret segment, in any of the encodings keypal imports.
    Hash(ImportedHash),
}

/// The algorithm of a hash issued elsewhere. Written `sha256`, `sha512`, `bcrypt` or
/// `argon2id` (any case on input).
///
/// ```
/// use keypal::ImportAlgorithm;
/// let algorithm: ImportAlgorithm = "argon2id".parse()?;
/// assert_eq!(algorithm, ImportAlgorithm::Argon2id);
/// assert_eq!(ImportAlgorithm::Sha512.to_string(), "sha512");
/// assert!("md5".parse::<ImportAlgorithm>().is_err());
/// # Ok::<(), keypal::hash::HashError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImportAlgorithm {
    /// SHA-256 of the key (or of the key with a salt appended), in a [`DigestEncoding`].
    Sha256,
    /// SHA-512 of the key (or of the key with a salt appended), in a [`DigestEncoding`].
    Sha512,
    /// bcrypt, an MCF string `$2a$`, `$2b$` or `$2y$` with cost 4 to 31.
    Bcrypt,
    /// argon2id, a PHC string `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`.
    Argon2id,
}

/// How a SHA-256 or SHA-512 digest to import is written. Written `hex`, `base64` or
/// `base64url` (any case on input). Hex digits may be of either case; base64 and
/// base64url may come with their `=` padding or without it (Better Auth stores
/// SHA-256 digests as unpadded base64url).
///
/// ```
/// use keypal::DigestEncoding;
/// assert_eq!("base64url".parse::<DigestEncoding>()?, DigestEncoding::Base64Url);
/// assert_eq!(DigestEncoding::Hex.to_string(), "hex");
/// assert!("base32".parse::<DigestEncoding>().is_err());
/// # Ok::<(), keypal::hash::HashError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum DigestEncoding {
    /// Hexadecimal, two digits a byte (the default).
    #[default]
    Hex,
    /// Standard base64 (`+` and `/`, RFC 4648 §4).
    Base64,
    /// URL-safe base64 (`-` and `_`, RFC 4648 §5).
    Base64Url,
}

/// What a stored hash covers: the whole key, or only its `{secret}` segment. Written
/// `key` or `secret` (any case on input).
///
/// keypal hashes whole keys. Some systems hashed only the secret part and kept the rest
/// (an id, a tier) in the clear; their hashes are imported as covering the secret, and
/// checked against the `{secret}` segment the key's format finds in a presented key.
/// After its first successful verification such a key is re-hashed whole, under the
/// manager's policy. [`KeyRecord::hash_covers`] tells which a record's hash covers.
///
/// ```
/// use keypal::HashCovers;
/// assert_eq!(HashCovers::default(), HashCovers::Key);
/// assert_eq!("secret".parse::<HashCovers>()?, HashCovers::Secret);
/// assert_eq!(HashCovers::of("$sha256$ab12"), HashCovers::Key);
/// assert_eq!(HashCovers::of("$secret$$2b$10$..."), HashCovers::Secret);
/// # Ok::<(), keypal::hash::HashError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HashCovers {
    /// The whole key, as keypal hashes it (the default).
    #[default]
    Key,
    /// Only the key's `{secret}` segment.
    Secret,
}

impl HashCovers {
    /// What a stored hash string covers: [`HashCovers::Secret`] when it starts with
    /// keypal's `$secret$` tag (which wraps the hash of the secret, as in
    /// `$secret$$2b$10$…`), else [`HashCovers::Key`].
    pub fn of(stored: &str) -> Self {
        if stored.starts_with(crate::hash::SECRET_TAG) { HashCovers::Secret } else { HashCovers::Key }
    }
}

/// Reads one of `names` (ASCII case ignored), or fails with a [`HashError::UnknownName`].
fn named<T: Copy>(text: &str, names: &[(&str, T)], what: &'static str, expected: &'static str) -> Result<T, HashError> {
    names
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, value)| value)
        .ok_or(HashError::UnknownName { what, expected })
}

impl ImportAlgorithm {
    const NAMES: [(&'static str, Self); 4] =
        [("sha256", Self::Sha256), ("sha512", Self::Sha512), ("bcrypt", Self::Bcrypt), ("argon2id", Self::Argon2id)];

    /// The name: `sha256`, `sha512`, `bcrypt` or `argon2id`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, value)| *value == self).map_or("", |(name, _)| name)
    }
}

impl DigestEncoding {
    const NAMES: [(&'static str, Self); 3] =
        [("hex", Self::Hex), ("base64", Self::Base64), ("base64url", Self::Base64Url)];

    /// The name: `hex`, `base64` or `base64url`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, value)| *value == self).map_or("", |(name, _)| name)
    }
}

impl HashCovers {
    const NAMES: [(&'static str, Self); 2] = [("key", Self::Key), ("secret", Self::Secret)];

    /// The name: `key` or `secret`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, value)| *value == self).map_or("", |(name, _)| name)
    }
}

impl FromStr for ImportAlgorithm {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        named(s, &Self::NAMES, "hash algorithm", "sha256, sha512, bcrypt or argon2id")
    }
}

impl FromStr for DigestEncoding {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        named(s, &Self::NAMES, "digest encoding", "hex, base64 or base64url")
    }
}

impl FromStr for HashCovers {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        named(s, &Self::NAMES, "hash coverage", "key or secret")
    }
}

impl fmt::Display for ImportAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for DigestEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HashCovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hash of a key issued elsewhere, as that system stored it.
///
/// - SHA-256 and SHA-512 digests in hex, base64 or base64url (padded or not), of the
///   key alone or of the key with a `salt` appended (`sha256(key + salt)`, the
///   TypeScript keypal's `salt` option);
/// - bcrypt (`$2a$`, `$2b$`, `$2y$`) and argon2id (PHC) strings as they are.
///
/// Each may cover the whole key or only its `{secret}` segment ([`HashCovers`]).
/// [`Hashing::import`](crate::hash::Hashing::import) turns it into a stored hash, or
/// says what is wrong with it.
///
/// ```
/// use keypal::{DigestEncoding, HashCovers, ImportAlgorithm, ImportKey, ImportedHash};
/// // Better Auth: unpadded base64url SHA-256 of the key.
/// let better_auth = ImportedHash::new(ImportAlgorithm::Sha256, "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg")
///     .encoding(DigestEncoding::Base64Url);
/// // A `kota_…` key: bcrypt of the secret segment only, found by the key's id.
/// let kota = ImportedHash::new(ImportAlgorithm::Bcrypt, "$2b$10$abcdefghijklmnopqrstuuJ0S3r6Tp2kq7L1c0fUo0mE0tGvLZcVK")
///     .covers(HashCovers::Secret);
/// let import = ImportKey::hash(kota).id("k3x9q2mfp7ta");
/// # let _ = (better_auth, import);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportedHash {
    /// The algorithm.
    pub algorithm: ImportAlgorithm,
    /// How a SHA digest is written (SHA-256 and SHA-512 only; `None` is hex).
    pub encoding: Option<DigestEncoding>,
    /// The text appended to the key before it was hashed (SHA-256 and SHA-512 only).
    pub salt: Option<String>,
    /// What the hash covers: the whole key (default) or its secret segment.
    pub covers: HashCovers,
    /// The hash as the other system stored it.
    pub value: String,
}

impl ImportedHash {
    /// A hash of the whole key by `algorithm`, written as `value` (hex for a SHA
    /// digest), without salt.
    pub fn new(algorithm: ImportAlgorithm, value: impl Into<String>) -> Self {
        Self { algorithm, encoding: None, salt: None, covers: HashCovers::Key, value: value.into() }
    }
    /// Sets how the SHA digest is written.
    pub fn encoding(mut self, encoding: DigestEncoding) -> Self {
        self.encoding = Some(encoding);
        self
    }
    /// Sets the salt appended to the key before it was hashed.
    pub fn salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = Some(salt.into());
        self
    }
    /// Sets what the hash covers.
    pub fn covers(mut self, covers: HashCovers) -> Self {
        self.covers = covers;
        self
    }
}

impl ImportKey {
    fn from_source(source: ImportSource) -> Self {
        Self {
            source,
            hint: None,
            id: None,
            last4: None,
            created_at: None,
            last_used_at: None,
            enabled: true,
            skip_owner_limit: false,
            details: NewKey::new(),
        }
    }
    /// Imports a plaintext key.
    pub fn plaintext(key: impl Into<PlainKey>) -> Self {
        Self::from_source(ImportSource::Plaintext(key.into()))
    }
    /// Imports a key known by its SHA-256 hex digest.
    pub fn sha256_hex(digest: impl Into<String>) -> Self {
        Self::from_source(ImportSource::Sha256Hex(digest.into()))
    }
    /// Imports a key known by its bcrypt hash.
    pub fn bcrypt(hash: impl Into<String>) -> Self {
        Self::from_source(ImportSource::Bcrypt(hash.into()))
    }
    /// Imports a key known by a hash in any of the forms [`ImportedHash`] describes.
    pub fn hash(hash: ImportedHash) -> Self {
        Self::from_source(ImportSource::Hash(hash))
    }
    /// Sets the lookup hint (the key's first characters).
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Sets the public id segment.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the last four characters shown in lists.
    pub fn last4(mut self, last4: impl Into<String>) -> Self {
        self.last4 = Some(last4.into());
        self
    }
    /// Keeps the original creation time.
    pub fn created_at(mut self, at: OffsetDateTime) -> Self {
        self.created_at = Some(at);
        self
    }
    /// Keeps the time of the key's last use in the old system.
    pub fn last_used_at(mut self, at: OffsetDateTime) -> Self {
        self.last_used_at = Some(at);
        self
    }
    /// Imports the key enabled (the default) or disabled.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
    /// Stores the key whatever its owner's count of active keys: the per-owner limit of
    /// the policy does not apply to this import (for moving keys whose old system had no
    /// such limit, or a higher one).
    pub fn skip_owner_limit(mut self) -> Self {
        self.skip_owner_limit = true;
        self
    }
    /// Sets owner, name, scopes and the other details.
    pub fn with(mut self, details: NewKey) -> Self {
        self.details = details;
        self
    }
}
