//! The outcome of verifying a presented key.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ratelimit::RateLimitStatus;
use crate::record::KeyRecord;
use crate::tags::Tags;

/// Why a key was accepted or refused. Stable, machine-readable: `VALID`, `MALFORMED`, ...
///
/// ```
/// use keypal::Code;
/// assert_eq!(Code::InsufficientScope.as_str(), "INSUFFICIENT_SCOPE");
/// assert_eq!(serde_json::to_string(&Code::Valid)?, "\"VALID\"");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Code {
    /// The key is good: every check passed.
    Valid,
    /// Not a key of any accepted format (or a wrong checksum). Storage was not read.
    Malformed,
    /// Well formed, but no such key.
    NotFound,
    /// Revoked (or rotated and past its grace window).
    Revoked,
    /// Disabled.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Lacks a required scope.
    InsufficientScope,
    /// Over its rate limit.
    RateLimited,
    /// Out of usage credits.
    UsageExceeded,
}

impl Code {
    /// Every code, in pipeline order.
    pub const ALL: [Code; 9] = [
        Code::Valid,
        Code::Malformed,
        Code::NotFound,
        Code::Revoked,
        Code::Disabled,
        Code::Expired,
        Code::InsufficientScope,
        Code::RateLimited,
        Code::UsageExceeded,
    ];

    /// The stable text of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::Malformed => "MALFORMED",
            Code::NotFound => "NOT_FOUND",
            Code::Revoked => "REVOKED",
            Code::Disabled => "DISABLED",
            Code::Expired => "EXPIRED",
            Code::InsufficientScope => "INSUFFICIENT_SCOPE",
            Code::RateLimited => "RATE_LIMITED",
            Code::UsageExceeded => "USAGE_EXCEEDED",
        }
    }

    /// A sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            Code::Valid => "the key is valid",
            Code::Malformed => "the key is not in an accepted format",
            Code::NotFound => "no such key",
            Code::Revoked => "the key has been revoked",
            Code::Disabled => "the key is disabled",
            Code::Expired => "the key has expired",
            Code::InsufficientScope => "the key lacks a required scope",
            Code::RateLimited => "the key is over its rate limit",
            Code::UsageExceeded => "the key has no usage credits left",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a verification found. Every rejection is a `Verification` with its [`Code`];
/// only storage failures are errors.
#[derive(Debug, Clone)]
pub struct Verification {
    pub(crate) code: Code,
    pub(crate) record: Option<Arc<KeyRecord>>,
    pub(crate) rate_limit: Option<RateLimitStatus>,
    pub(crate) remaining: Option<u64>,
    pub(crate) refill_at: Option<time::OffsetDateTime>,
}

impl Verification {
    pub(crate) fn rejected(code: Code) -> Self {
        Self { code, record: None, rate_limit: None, remaining: None, refill_at: None }
    }

    pub(crate) fn of(code: Code, record: Arc<KeyRecord>) -> Self {
        let remaining = record.remaining;
        Self { code, record: Some(record), rate_limit: None, remaining, refill_at: None }
    }

    /// Whether the key is valid.
    pub fn is_valid(&self) -> bool {
        self.code == Code::Valid
    }

    /// The result code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The key's record, once the key's hash matched (any code but `MALFORMED` and `NOT_FOUND`).
    pub fn record(&self) -> Option<&KeyRecord> {
        self.record.as_deref()
    }

    /// The record, shared.
    pub fn record_arc(&self) -> Option<&Arc<KeyRecord>> {
        self.record.as_ref()
    }

    /// The rate limit state after this request, when the key has a rate limit.
    pub fn rate_limit(&self) -> Option<&RateLimitStatus> {
        self.rate_limit.as_ref()
    }

    /// Usage credits left after this request; `None` is unlimited.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// When the key's credits next refill, when it has a refill and its credits were
    /// checked (a valid key, or one out of credits).
    pub fn refill_at(&self) -> Option<time::OffsetDateTime> {
        self.refill_at
    }
}

/// What a verification requires beyond a valid key.
///
/// ```
/// use keypal::{Tags, VerifyOptions};
/// let options = VerifyOptions::new().scopes(["billing:read"]).cost(5).tags(Tags::new(["GET /invoices"])?);
/// assert_eq!(options.cost, 5);
/// # Ok::<(), keypal::InvalidTags>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Scopes the key must grant (see [`crate::scope`]).
    pub scopes: Vec<String>,
    /// Usage credits this request spends (default 1) from keys that have credits.
    pub cost: u64,
    /// What the request is for, counted with the verification (carried by its
    /// [`crate::Event`]); none by default.
    pub tags: Tags,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { scopes: Vec::new(), cost: 1, tags: Tags::none() }
    }
}

impl VerifyOptions {
    /// No required scopes, cost 1.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requires these scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
    /// Spends this many credits.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }
    /// Counts the verification under these tags.
    pub fn tags(mut self, tags: Tags) -> Self {
        self.tags = tags;
        self
    }
}
