//! The [`Verifier`] trait and what a verification tells the layer: a [`Verdict`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keypal::{Code, KeyId, KeyManager, KeyRecord, RateLimitStatus, Store, VerifyOptions};
use serde_json::Value;
use time::OffsetDateTime;

/// Decides whether a presented key is good. [`crate::ApiKeyLayer`] calls it once per
/// request.
///
/// Two implementations ship: [`KeyManager`] (in process, over any store) and
/// [`crate::RemoteVerifier`] (`POST /v1/verify` of a running `keypal serve`).
///
/// ```
/// use keypal::{Code, KeyManager, MemoryStore, NewKey, VerifyOptions};
/// use keypal_axum::Verifier;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
/// let created = keys.create(NewKey::new().owner_id("user_1")).await?;
/// let verdict = Verifier::verify(&keys, created.key.expose(), &VerifyOptions::new()).await?;
/// assert_eq!(verdict.code, Code::Valid);
/// assert_eq!(verdict.key.as_ref().and_then(|k| k.owner_id.as_deref()), Some("user_1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait Verifier: Clone + Send + Sync + 'static {
    /// Verifies `key`, requiring `options.scopes` and spending `options.cost` credits.
    /// Every refusal is a [`Verdict`] with its [`Code`]; `Err` means the verifier could
    /// not decide (a store or a remote service down), which the layer answers with 503.
    fn verify(&self, key: &str, options: &VerifyOptions)
    -> impl Future<Output = Result<Verdict, VerifierError>> + Send;

    /// Spends `cost` more credits of an already verified key (a route's [`crate::Cost`]).
    /// A key without credits spends nothing. The default verifies the key again with
    /// that cost (which counts once more against its rate limit); [`KeyManager`] spends
    /// from its store directly.
    fn spend(
        &self,
        key: &str,
        verified: &crate::VerifiedKey,
        cost: u64,
    ) -> impl Future<Output = Result<Verdict, VerifierError>> + Send {
        let _ = verified;
        let options = VerifyOptions::new().cost(cost);
        async move { self.verify(key, &options).await }
    }
}

/// The outcome of one verification, as the layer uses it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Verdict {
    /// Why the key was accepted or refused.
    pub code: Code,
    /// The key's public fields, once its hash matched (absent for `MALFORMED` and `NOT_FOUND`).
    pub key: Option<Arc<KeyInfo>>,
    /// The key's rate limit after this request, when it has one.
    pub rate_limit: Option<RateLimitStatus>,
    /// The period of that rate limit, when known.
    pub window: Option<Duration>,
    /// Usage credits left; `None` is unlimited.
    pub remaining: Option<u64>,
    /// When the key's credits next refill, when it has a refill.
    pub refill_at: Option<OffsetDateTime>,
}

impl Verdict {
    /// A verdict with only a code: no key, no rate limit, unlimited credits.
    ///
    /// ```
    /// use keypal::Code;
    /// let verdict = keypal_axum::Verdict::new(Code::Malformed);
    /// assert!(verdict.key.is_none() && verdict.remaining.is_none());
    /// ```
    pub fn new(code: Code) -> Self {
        Self { code, key: None, rate_limit: None, window: None, remaining: None, refill_at: None }
    }
}

/// What a service may know about a verified key: never the key or its hash.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The key's id.
    pub id: KeyId,
    /// Its name.
    pub name: Option<String>,
    /// Who owns it.
    pub owner_id: Option<String>,
    /// Its tier.
    pub tier: Option<String>,
    /// The scopes it grants.
    pub scopes: Vec<String>,
    /// Its metadata.
    pub metadata: Option<Value>,
    /// When it stops working.
    pub expires_at: Option<OffsetDateTime>,
}

impl KeyInfo {
    /// A key's public fields, with no name, owner, tier, scopes, metadata or expiry.
    ///
    /// ```
    /// let info = keypal_axum::KeyInfo::new(keypal::KeyId::new());
    /// assert!(info.scopes.is_empty());
    /// ```
    pub fn new(id: KeyId) -> Self {
        Self { id, name: None, owner_id: None, tier: None, scopes: Vec::new(), metadata: None, expires_at: None }
    }
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            owner_id: r.owner_id.clone(),
            tier: r.tier.clone(),
            scopes: r.scopes.clone(),
            metadata: r.metadata.clone(),
            expires_at: r.expires_at,
        }
    }
}

/// The verifier could not decide. The layer answers 503 and never lets the request
/// through. No variant holds a presented key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// The in-process manager failed (its store, shared rate limiter or hashing pool).
    #[error(transparent)]
    Keys(#[from] keypal::Error),
    /// The remote service's address is not an `http://` URL.
    #[error("the keypal service URL is not a valid http:// URL")]
    InvalidUrl,
    /// The remote service could not be reached (refused, reset, DNS).
    #[error("the keypal service is unreachable: {0}")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The remote service did not answer within the timeout.
    #[error("the keypal service did not answer within {0:?}")]
    Timeout(Duration),
    /// The remote service answered with an error status (a wrong service key or client
    /// secret, or a service that cannot answer now).
    #[error("the keypal service answered {status} {code}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error code of its body (`INVALID_CLIENT_SECRET`, `HASHING_BUSY`, ...), or empty.
        code: String,
    },
    /// The remote service's answer is not a verdict.
    #[error("the keypal service's answer is not a verdict: {0}")]
    InvalidAnswer(#[source] serde_json::Error),
}

impl<S: Store> Verifier for KeyManager<S> {
    async fn verify(&self, key: &str, options: &VerifyOptions) -> Result<Verdict, VerifierError> {
        let verification = self.verify_with(key, options).await?;
        let record = verification.record();
        Ok(Verdict {
            code: verification.code(),
            key: record.map(|r| Arc::new(KeyInfo::from(r))),
            rate_limit: verification.rate_limit().copied(),
            window: record.and_then(|r| self.rate_limit_of(r)).map(|limit| limit.period),
            remaining: verification.remaining(),
            refill_at: verification.refill_at(),
        })
    }

    async fn spend(&self, _key: &str, verified: &crate::VerifiedKey, cost: u64) -> Result<Verdict, VerifierError> {
        let mut verdict = verified.verdict().clone();
        if verdict.remaining.is_none() || cost == 0 {
            return Ok(verdict);
        }
        // A refill boundary reached since the verification: the credits are topped up first.
        let due = verdict.refill_at.filter(|at| *at <= self.now());
        match self.store().consume(verified.id(), cost, due).await.map_err(keypal::Error::from)? {
            keypal::Credits::Unlimited => verdict.remaining = None,
            keypal::Credits::Spent { remaining } => verdict.remaining = Some(remaining),
            keypal::Credits::Exhausted { remaining } => {
                verdict.code = Code::UsageExceeded;
                verdict.remaining = Some(remaining);
            }
        }
        Ok(verdict)
    }
}
