//! [`ApiKeyLayer`]: verifies the key of every request before the service sees it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::Request;
use axum::response::{IntoResponse, Response};
use keypal::{Code, PlainKey, VerifyOptions};
use tower::{Layer, Service};

use crate::answer::{ErrorBodyFn, Rejection, rate_limit_headers};
use crate::extract::VerifiedKey;
use crate::source::{Found, KeySource, MAX_KEY_LENGTH, find_key};
use crate::verifier::{Verdict, Verifier, VerifierError};

/// A tower [`Layer`] that verifies the API key of every request with a [`Verifier`]
/// (a [`keypal::KeyManager`] or a [`crate::RemoteVerifier`]).
///
/// A request with a valid key reaches the service with a [`VerifiedKey`] in its
/// extensions, and its answer carries the `RateLimit-Policy` / `RateLimit` headers
/// when the key has a rate limit. Any other request is answered by the layer (see
/// [`Rejection`] for every status and header), and a verifier that cannot decide is a
/// 503, never a pass.
///
/// The key is taken from the first of its [sources](ApiKeyLayer::sources) present:
/// by default `Authorization: Bearer` then `X-API-Key`. It is never logged, and the
/// headers carrying it are marked sensitive.
///
/// ```
/// use axum::{Router, routing::get};
/// use keypal::{KeyManager, MemoryStore};
/// use keypal_axum::{ApiKeyLayer, KeySource, VerifiedKey};
///
/// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
/// let app: Router = Router::new()
///     .route("/me", get(|key: VerifiedKey| async move { key.id().to_string() }))
///     .layer(
///         ApiKeyLayer::new(keys)
///             .realm("billing")
///             .sources([KeySource::bearer(), KeySource::header("x-billing-key")])
///             .cost(1),
///     );
/// # let _ = app;
/// # Ok::<(), keypal::Error>(())
/// ```
#[derive(Clone)]
pub struct ApiKeyLayer<V> {
    settings: Arc<Settings<V>>,
}

impl<V> std::fmt::Debug for ApiKeyLayer<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("sources", &self.settings.sources)
            .field("realm", &self.settings.context.realm)
            .field("anonymous", &self.settings.anonymous)
            .field("options", &self.settings.options)
            .finish_non_exhaustive()
    }
}

/// What the layer was configured with.
struct Settings<V> {
    verifier: V,
    sources: Vec<KeySource>,
    anonymous: bool,
    options: VerifyOptions,
    context: Arc<LayerContext>,
}

impl<V: Clone> Clone for Settings<V> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            sources: self.sources.clone(),
            anonymous: self.anonymous,
            options: self.options.clone(),
            context: self.context.clone(),
        }
    }
}

/// What the guards and extractors inside the layer need of it, in the request's extensions.
#[derive(Clone)]
pub(crate) struct LayerContext {
    pub(crate) realm: String,
    pub(crate) body: Option<Arc<ErrorBodyFn>>,
    pub(crate) spender: Option<Arc<dyn Spend>>,
}

impl LayerContext {
    /// A refusal answered with the layer's body.
    pub(crate) fn reject(&self, rejection: Rejection) -> Response {
        rejection.with_body(self.body.clone()).into_response()
    }

    /// The answer to a request with no key.
    pub(crate) fn missing(context: Option<&Self>) -> Response {
        match context {
            Some(context) => context.reject(Rejection::missing(&context.realm)),
            None => Rejection::missing(DEFAULT_REALM).into_response(),
        }
    }
}

/// The realm of `WWW-Authenticate` unless [`ApiKeyLayer::realm`] says another.
pub(crate) const DEFAULT_REALM: &str = "api";

/// The presented key of a verified request, for a route's [`crate::Cost`]. Private: a
/// handler cannot name it.
#[derive(Clone)]
pub(crate) struct Presented(pub(crate) Arc<PlainKey>);

/// The future of a boxed spend.
pub(crate) type SpendFuture<'a> = Pin<Box<dyn Future<Output = Result<Verdict, VerifierError>> + Send + 'a>>;

/// [`Verifier::spend`], object-safe, so a [`crate::Cost`] need not name the verifier.
pub(crate) trait Spend: Send + Sync {
    fn spend<'a>(&'a self, key: &'a str, verified: &'a VerifiedKey, cost: u64) -> SpendFuture<'a>;
}

struct Spender<V>(V);

impl<V: Verifier> Spend for Spender<V> {
    fn spend<'a>(&'a self, key: &'a str, verified: &'a VerifiedKey, cost: u64) -> SpendFuture<'a> {
        Box::pin(self.0.spend(key, verified, cost))
    }
}

impl<V: Verifier> ApiKeyLayer<V> {
    /// A layer verifying with `verifier`: keys from `Authorization: Bearer` or
    /// `X-API-Key`, realm `api`, cost 1, no required scopes, every request needs a key.
    pub fn new(verifier: V) -> Self {
        let spender: Arc<dyn Spend> = Arc::new(Spender(verifier.clone()));
        Self {
            settings: Arc::new(Settings {
                verifier,
                sources: vec![KeySource::Bearer, KeySource::header("x-api-key")],
                anonymous: false,
                options: VerifyOptions::new(),
                context: Arc::new(LayerContext { realm: DEFAULT_REALM.to_owned(), body: None, spender: Some(spender) }),
            }),
        }
    }

    fn change(mut self, change: impl FnOnce(&mut Settings<V>)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// Where keys are looked for, in order; the first source present wins.
    pub fn sources(self, sources: impl IntoIterator<Item = KeySource>) -> Self {
        self.change(|s| s.sources = sources.into_iter().collect())
    }

    /// Also accepts the key in the query parameter `name`, after the other sources
    /// (opt-in: URLs are logged by proxies and kept in histories). The parameter is
    /// removed from the URI the service sees.
    pub fn query(self, name: impl Into<String>) -> Self {
        self.change(|s| s.sources.push(KeySource::Query(name.into())))
    }

    /// The `realm` of `WWW-Authenticate` (default `api`).
    pub fn realm(self, realm: impl Into<String>) -> Self {
        self.change(|s| Arc::make_mut(&mut s.context).realm = realm.into())
    }

    /// Lets requests without a key through, with no [`VerifiedKey`] (a handler takes
    /// `Option<VerifiedKey>`); a request with a bad key is still refused. Routes that
    /// need a key under such a layer take `VerifiedKey` (401 without one) or a
    /// [`crate::RequireScopes`].
    pub fn allow_anonymous(self) -> Self {
        self.change(|s| s.anonymous = true)
    }

    /// Credits every request spends from keys that have credits (default 1).
    pub fn cost(self, cost: u64) -> Self {
        self.change(|s| s.options.cost = cost)
    }

    /// Tags counted with every verification of this layer (an API's name, a region:
    /// see [`keypal::Tags`]), for the usage analytics of `keypal serve` or an
    /// [`keypal::EventSink`]; none by default.
    ///
    /// ```
    /// # let keys = keypal::KeyManager::builder().store(keypal::MemoryStore::new()).build()?;
    /// let tags = keypal::Tags::new(["api:billing", "region:eu"]).expect("valid tags");
    /// let layer = keypal_axum::ApiKeyLayer::new(keys).tags(tags);
    /// # let _ = layer;
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn tags(self, tags: keypal::Tags) -> Self {
        self.change(|s| s.options.tags = tags)
    }

    /// Scopes every key must grant, checked in the verification itself (before the
    /// rate limit and credits are counted). For one route, use [`crate::RequireScopes`].
    pub fn scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.change(|s| s.options.scopes = scopes.into_iter().map(Into::into).collect())
    }

    /// Replaces the body of every refusal (of this layer, its guards and extractors).
    /// The status and the headers (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`)
    /// are set on what `body` returns.
    ///
    /// ```
    /// use axum::response::IntoResponse;
    /// # let keys = keypal::KeyManager::builder().store(keypal::MemoryStore::new()).build()?;
    /// let layer = keypal_axum::ApiKeyLayer::new(keys)
    ///     .error_body(|rejection| format!("refused: {}", rejection.code()).into_response());
    /// # let _ = layer;
    /// # Ok::<(), keypal::Error>(())
    /// ```
    pub fn error_body<F>(self, body: F) -> Self
    where
        F: Fn(&Rejection) -> Response + Send + Sync + 'static,
    {
        let body: Arc<ErrorBodyFn> = Arc::new(body);
        self.change(|s| Arc::make_mut(&mut s.context).body = Some(body))
    }
}

impl<S, V: Verifier> Layer<S> for ApiKeyLayer<V> {
    type Service = ApiKeyService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyService { inner, settings: self.settings.clone() }
    }
}

/// The service of [`ApiKeyLayer`].
#[derive(Clone)]
pub struct ApiKeyService<S, V> {
    inner: S,
    settings: Arc<Settings<V>>,
}

impl<S, V> std::fmt::Debug for ApiKeyService<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyService").finish_non_exhaustive()
    }
}

impl<S, V, B> Service<Request<B>> for ApiKeyService<S, V>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    V: Verifier,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is ready only if polled: swap it with the one that was.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let found = find_key(&settings.sources, &mut parts);
            let context = &settings.context;
            parts.extensions.insert(context.clone());
            let key = match found {
                Found::Key(key) => key,
                Found::Nothing if settings.anonymous => {
                    return inner.call(Request::from_parts(parts, body)).await;
                }
                Found::Nothing => {
                    tracing::debug!(code = crate::answer::MISSING_KEY, "request without an API key refused");
                    return Ok(context.reject(Rejection::missing(&context.realm)));
                }
            };
            let verdict = if key.expose().len() > MAX_KEY_LENGTH {
                Ok(Verdict::new(Code::Malformed))
            } else {
                settings.verifier.verify(key.expose(), &settings.options).await
            };
            let verdict = match verdict {
                Ok(verdict) => verdict,
                Err(error) => {
                    tracing::error!(%error, "API key verification failed; request refused with 503");
                    return Ok(context.reject(Rejection::unavailable()));
                }
            };
            let verified = match VerifiedKey::of(verdict, settings.options.cost) {
                Ok(verified) => verified,
                Err(verdict) => return Ok(refuse(context, &verdict)),
            };
            tracing::trace!(key_id = %verified.id(), "API key verified");
            let rate_limit = verified.verdict().rate_limit.map(|status| (status, verified.verdict().window));
            parts.extensions.insert(verified);
            parts.extensions.insert(Presented(Arc::new(key)));
            let mut response = inner.call(Request::from_parts(parts, body)).await?;
            if let Some((status, window)) = rate_limit {
                rate_limit_headers(response.headers_mut(), &status, window);
            }
            Ok(response)
        })
    }
}

/// Answers a refused verdict (logged with its code and key id, never the key).
pub(crate) fn refuse(context: &LayerContext, verdict: &Verdict) -> Response {
    let key_id = verdict.key.as_ref().map(|k| k.id.to_string());
    tracing::debug!(code = %verdict.code, key_id, "API key refused");
    context.reject(Rejection::of_verdict(verdict, &context.realm))
}
