//! [`VerifiedKey`]: the key of a request the layer verified.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;
use keypal::{Code, KeyId, RateLimitStatus};
use serde_json::Value;
use time::OffsetDateTime;

use crate::layer::LayerContext;
use crate::verifier::{KeyInfo, Verdict};

/// The key of a request that [`crate::ApiKeyLayer`] verified: its id, owner, name,
/// tier, scopes, metadata, rate-limit state and credits left. Never the key itself.
///
/// As an extractor it answers 401 (no key) when the request has none, which happens
/// only under a layer that [allows anonymous requests](crate::ApiKeyLayer::allow_anonymous)
/// (or outside any layer). `Option<VerifiedKey>` is `None` then instead.
///
/// ```
/// use axum::{Router, routing::get};
/// use keypal_axum::VerifiedKey;
///
/// async fn me(key: VerifiedKey) -> String {
///     format!("{} ({})", key.owner_id().unwrap_or("nobody"), key.scopes().join(" "))
/// }
/// async fn greeting(key: Option<VerifiedKey>) -> &'static str {
///     if key.is_some() { "hello, customer" } else { "hello, stranger" }
/// }
/// let app: Router = Router::new().route("/me", get(me)).route("/", get(greeting));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    key: Arc<KeyInfo>,
    verdict: Arc<Verdict>,
    /// Credits this request has spent so far.
    spent: u64,
}

impl VerifiedKey {
    /// The key of a valid verdict that spent `spent` credits; any other verdict back.
    pub(crate) fn of(verdict: Verdict, spent: u64) -> Result<Self, Verdict> {
        match (&verdict.code, &verdict.key) {
            (Code::Valid, Some(key)) => Ok(Self { key: key.clone(), verdict: Arc::new(verdict), spent }),
            _ => Err(verdict),
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.key.id
    }

    /// Who owns the key.
    pub fn owner_id(&self) -> Option<&str> {
        self.key.owner_id.as_deref()
    }

    /// Its name.
    pub fn name(&self) -> Option<&str> {
        self.key.name.as_deref()
    }

    /// Its tier.
    pub fn tier(&self) -> Option<&str> {
        self.key.tier.as_deref()
    }

    /// The scopes it grants.
    pub fn scopes(&self) -> &[String] {
        &self.key.scopes
    }

    /// Whether it grants every one of `required`, by the core's rules ([`keypal::scope`]).
    pub fn grants<S: AsRef<str>>(&self, required: &[S]) -> bool {
        keypal::scope::grants_all(&self.key.scopes, required)
    }

    /// Its metadata.
    pub fn metadata(&self) -> Option<&Value> {
        self.key.metadata.as_ref()
    }

    /// When it stops working.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.key.expires_at
    }

    /// Its rate limit after this request, when it has one.
    pub fn rate_limit(&self) -> Option<&RateLimitStatus> {
        self.verdict.rate_limit.as_ref()
    }

    /// The period of its rate limit, when known.
    pub fn rate_limit_window(&self) -> Option<Duration> {
        self.verdict.window
    }

    /// Usage credits left after this request; `None` is unlimited.
    pub fn remaining(&self) -> Option<u64> {
        self.verdict.remaining
    }

    /// Every public field of the key.
    pub fn info(&self) -> &KeyInfo {
        &self.key
    }

    /// The whole verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Credits this request has spent so far.
    pub(crate) fn spent(&self) -> u64 {
        self.spent
    }

    /// The same key after a further spend, whose verdict is `verdict`.
    pub(crate) fn after_spending(&self, verdict: Verdict, cost: u64) -> Self {
        Self { key: self.key.clone(), verdict: Arc::new(verdict), spent: self.spent.saturating_add(cost) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<VerifiedKey>() {
            Some(key) => Ok(key.clone()),
            None => Err(LayerContext::missing(parts.extensions.get::<Arc<LayerContext>>().map(|c| &**c))),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<VerifiedKey>().cloned())
    }
}
