//! [`RemoteVerifier`]: verification through a running `keypal serve`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keypal::{Code, KeyId, PlainKey, RateLimitStatus, Tags, VerifyOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::verifier::{KeyInfo, Verdict, Verifier, VerifierError};

/// The longest a cached valid result is used.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a verification may take by default, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes of an answer read.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Verifies keys with `POST /v1/verify` of a running `keypal serve`, for a service that
/// has no store of its own: the service key authenticates the caller, the client secret
/// names the application the keys belong to.
///
/// - **Connections** are kept alive and reused (a pool per verifier; clones share it).
/// - **Timeout**: a verification that takes longer than [`RemoteVerifier::timeout`]
///   (default 2 s, connecting included) fails.
/// - **Fail-closed**: when the service is unreachable, slow, refuses the service key or
///   client secret, or answers anything but a verdict, the verification is an error and
///   [`crate::ApiKeyLayer`] answers 503. A request is never let through unverified.
/// - **Cache** (off by default, [`RemoteVerifier::cache`]): valid results of keys that
///   have neither a rate limit nor credits are kept for a TTL of at most
///   [`MAX_CACHE_TTL`] (60 s), keyed by the SHA-256 of the key; required scopes are
///   checked against the cached key's scopes by the core's rules, and an entry is not
///   used past the key's expiry. The bound: a key revoked, disabled or given a limit on
///   the server is still accepted here for up to the TTL, and the requests answered from
///   the cache are not counted in the server's usage nor its `last_used_at`. Keys with a
///   rate limit or credits are verified by the server every time, so their limits hold
///   exactly.
///
/// ```no_run
/// use keypal_axum::{ApiKeyLayer, RemoteVerifier};
/// use std::time::Duration;
///
/// let remote = RemoteVerifier::new("http://127.0.0.1:8080", "kp_svc_…", "cs-…")
///     .timeout(Duration::from_millis(500))
///     .cache(Duration::from_secs(5));
/// let layer = ApiKeyLayer::new(remote);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RemoteVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `{base}/v1/verify`, or `None` when the base URL is not a usable `http://` URL.
    uri: Option<Uri>,
    authorization: HeaderValue,
    client_secret: PlainKey,
    timeout: Duration,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<Verdict>>>,
    cache_ttl: Duration,
    cache_capacity: u64,
}

impl fmt::Debug for RemoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteVerifier")
            .field("uri", &self.inner.uri)
            .field("timeout", &self.inner.timeout)
            .field("cache_ttl", &self.inner.cache.as_ref().map(|_| self.inner.cache_ttl))
            .finish_non_exhaustive()
    }
}

impl RemoteVerifier {
    /// A verifier calling the `keypal serve` at `base_url` (like `http://127.0.0.1:8080`)
    /// with its service key and an application's client secret. A `base_url` that is not
    /// an `http://` URL makes every verification fail ([`VerifierError::InvalidUrl`]);
    /// [`RemoteVerifier::try_new`] reports it at once.
    pub fn new(base_url: impl AsRef<str>, service_key: impl AsRef<str>, client_secret: impl Into<String>) -> Self {
        let uri = verify_uri(base_url.as_ref());
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", service_key.as_ref()))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        authorization.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            inner: Arc::new(Inner {
                client,
                uri,
                authorization,
                client_secret: PlainKey::new(client_secret),
                timeout: DEFAULT_TIMEOUT,
                cache: None,
                cache_ttl: Duration::ZERO,
                cache_capacity: 10_000,
            }),
        }
    }

    /// [`RemoteVerifier::new`], refusing a `base_url` that is not an `http://` URL.
    ///
    /// ```
    /// use keypal_axum::RemoteVerifier;
    /// assert!(RemoteVerifier::try_new("http://127.0.0.1:8080", "service key", "client secret").is_ok());
    /// assert!(RemoteVerifier::try_new("not a url", "service key", "client secret").is_err());
    /// ```
    pub fn try_new(
        base_url: impl AsRef<str>,
        service_key: impl AsRef<str>,
        client_secret: impl Into<String>,
    ) -> Result<Self, VerifierError> {
        let verifier = Self::new(base_url, service_key, client_secret);
        match verifier.inner.uri {
            Some(_) => Ok(verifier),
            None => Err(VerifierError::InvalidUrl),
        }
    }

    fn change(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => {
                let mut inner = Inner {
                    client: self.inner.client.clone(),
                    uri: self.inner.uri.clone(),
                    authorization: self.inner.authorization.clone(),
                    client_secret: self.inner.client_secret.clone(),
                    timeout: self.inner.timeout,
                    cache: self.inner.cache.clone(),
                    cache_ttl: self.inner.cache_ttl,
                    cache_capacity: self.inner.cache_capacity,
                };
                change(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// The longest a verification may take, connecting included (default 2 s).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.change(|inner| inner.timeout = timeout)
    }

    /// Keeps valid results for `ttl` (at most [`MAX_CACHE_TTL`]; zero turns the cache
    /// off). See the type's documentation for what is cached and the bound it gives.
    pub fn cache(self, ttl: Duration) -> Self {
        self.change(|inner| {
            inner.cache_ttl = ttl.min(MAX_CACHE_TTL);
            inner.cache = (!inner.cache_ttl.is_zero()).then(|| {
                moka::sync::Cache::builder().max_capacity(inner.cache_capacity).time_to_live(inner.cache_ttl).build()
            });
        })
    }

    /// The most results the cache holds (default 10 000).
    pub fn cache_capacity(self, capacity: u64) -> Self {
        let ttl = self.inner.cache_ttl;
        self.change(|inner| inner.cache_capacity = capacity).cache(ttl)
    }

    /// Asks the service.
    async fn ask(&self, uri: &Uri, key: &str, options: &VerifyOptions) -> Result<Verdict, VerifierError> {
        let body = serde_json::to_vec(&Ask {
            key,
            client_secret: self.inner.client_secret.expose(),
            scopes: &options.scopes,
            cost: options.cost,
            tags: &options.tags,
        })
        .map_err(VerifierError::InvalidAnswer)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(AUTHORIZATION, self.inner.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| VerifierError::Unreachable(Box::new(e)))?;
        let response = self.inner.client.request(request).await.map_err(|e| VerifierError::Unreachable(Box::new(e)))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(VerifierError::Unreachable)?
            .to_bytes();
        if status != StatusCode::OK {
            let code = serde_json::from_slice::<ErrorAnswer>(&bytes).map(|e| e.error.code).unwrap_or_default();
            return Err(VerifierError::Status { status: status.as_u16(), code });
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(VerifierError::InvalidAnswer)?;
        Ok(answer.into_verdict())
    }
}

/// `{base}/v1/verify`, when `base` is an `http://` URL.
fn verify_uri(base: &str) -> Option<Uri> {
    let uri: Uri = format!("{}/v1/verify", base.trim_end_matches('/')).parse().ok()?;
    (uri.scheme_str() == Some("http") && uri.host().is_some()).then_some(uri)
}

/// The cached verdict for `options`, if one may be used now.
fn from_cache(cached: &Verdict, options: &VerifyOptions) -> Option<Verdict> {
    let key = cached.key.as_ref()?;
    if key.expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc()) {
        return None;
    }
    let mut verdict = cached.clone();
    if !keypal::scope::grants_all(&key.scopes, &options.scopes) {
        verdict.code = Code::InsufficientScope;
    }
    Some(verdict)
}

impl Verifier for RemoteVerifier {
    async fn verify(&self, key: &str, options: &VerifyOptions) -> Result<Verdict, VerifierError> {
        let Some(uri) = &self.inner.uri else { return Err(VerifierError::InvalidUrl) };
        let digest = self.inner.cache.as_ref().map(|_| keypal::hash::sha256(key.as_bytes()));
        if let (Some(cache), Some(digest)) = (&self.inner.cache, &digest) {
            if let Some(cached) = cache.get(digest) {
                if let Some(verdict) = from_cache(&cached, options) {
                    return Ok(verdict);
                }
                cache.invalidate(digest);
            }
        }
        let timeout = self.inner.timeout;
        let verdict = tokio::time::timeout(timeout, self.ask(uri, key, options))
            .await
            .map_err(|_| VerifierError::Timeout(timeout))??;
        let cacheable = verdict.code == Code::Valid
            && verdict.key.is_some()
            && verdict.rate_limit.is_none()
            && verdict.remaining.is_none();
        if let (Some(cache), Some(digest), true) = (&self.inner.cache, digest, cacheable) {
            cache.insert(digest, Arc::new(verdict.clone()));
        }
        Ok(verdict)
    }
}

/// The body of `POST /v1/verify`.
#[derive(Serialize)]
struct Ask<'a> {
    key: &'a str,
    client_secret: &'a str,
    scopes: &'a [String],
    cost: u64,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tags: &'a Tags,
}

/// The verdict of `POST /v1/verify` (the fields used here).
#[derive(Deserialize)]
struct Answer {
    code: Code,
    key: Option<AnswerKey>,
    ratelimit: Option<AnswerLimit>,
    remaining: Option<u64>,
    /// When the key's credits next refill (keys with a refill; newer servers).
    #[serde(default, with = "time::serde::rfc3339::option")]
    refill_at: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
struct AnswerKey {
    id: uuid::Uuid,
    name: Option<String>,
    owner_id: Option<String>,
    tier: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    metadata: Option<Value>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
struct AnswerLimit {
    limit: u32,
    remaining: u32,
    #[serde(with = "time::serde::rfc3339")]
    reset_at: OffsetDateTime,
    /// Seconds until one more request is allowed (refused requests; newer servers).
    retry_after_seconds: Option<u64>,
    /// The limit's period in seconds (newer servers).
    window_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

impl Answer {
    fn into_verdict(self) -> Verdict {
        let code = self.code;
        let window = self.ratelimit.as_ref().and_then(|l| l.window_seconds).map(Duration::from_secs);
        let mut verdict = Verdict::new(code);
        verdict.key = self.key.map(|k| {
            let mut info = KeyInfo::new(KeyId(k.id));
            info.name = k.name;
            info.owner_id = k.owner_id;
            info.tier = k.tier;
            info.scopes = k.scopes;
            info.metadata = k.metadata;
            info.expires_at = k.expires_at;
            Arc::new(info)
        });
        verdict.rate_limit = self.ratelimit.map(|l| RateLimitStatus {
            allowed: code != Code::RateLimited,
            limit: l.limit,
            remaining: l.remaining,
            reset_at: l.reset_at,
            retry_after: l.retry_after_seconds.map(Duration::from_secs),
        });
        verdict.window = window;
        verdict.remaining = self.remaining;
        verdict.refill_at = self.refill_at;
        verdict
    }
}
