//! Route guards: [`RequireScopes`] and [`Cost`], route layers under an [`crate::ApiKeyLayer`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::Request;
use axum::response::{IntoResponse, Response};
use keypal::Code;
use tower::{Layer, Service};

use crate::answer::Rejection;
use crate::extract::VerifiedKey;
use crate::layer::{DEFAULT_REALM, LayerContext, Presented, refuse};

/// The context the layer left in the request, if any.
fn context_of(parts: &axum::http::Extensions) -> Option<Arc<LayerContext>> {
    parts.get::<Arc<LayerContext>>().cloned()
}

/// Which of the required scopes a key must grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Any,
}

/// A route layer requiring scopes of the verified key, by the core's rules
/// ([`keypal::scope`]: `*` grants everything, `billing:*` grants `billing:read`).
/// A key without them is answered 403 with
/// `WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="…"`;
/// a request without a key (under a layer that allows anonymous requests) 401.
///
/// The check runs after the layer's verification, which has counted the request
/// against the key's rate limit and credits; to check scopes before those, give them
/// to [`crate::ApiKeyLayer::scopes`].
///
/// ```
/// use axum::{Router, routing::{get, post}};
/// use keypal_axum::RequireScopes;
///
/// let app: Router = Router::new()
///     .route("/invoices", get(|| async { "[]" }).route_layer(RequireScopes::all(["invoices:read"])))
///     .route("/refunds", post(|| async { "ok" }).route_layer(RequireScopes::any(["refunds:write", "admin"])));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct RequireScopes {
    scopes: Arc<[String]>,
    mode: Mode,
}

impl RequireScopes {
    /// The key must grant every one of `scopes`.
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { scopes: scopes.into_iter().map(Into::into).collect(), mode: Mode::All }
    }

    /// The key must grant at least one of `scopes` (none given: any key passes).
    pub fn any<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { scopes: scopes.into_iter().map(Into::into).collect(), mode: Mode::Any }
    }

    /// Whether `key` passes.
    fn admits(&self, key: &VerifiedKey) -> bool {
        match self.mode {
            Mode::All => key.grants(&self.scopes),
            Mode::Any => self.scopes.is_empty() || self.scopes.iter().any(|s| key.grants(&[s])),
        }
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = RequireScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService { inner, guard: self.clone() }
    }
}

/// The service of [`RequireScopes`].
#[derive(Debug, Clone)]
pub struct RequireScopesService<S> {
    inner: S,
    guard: RequireScopes,
}

impl<S, B> Service<Request<B>> for RequireScopesService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let refusal = match request.extensions().get::<VerifiedKey>() {
            Some(key) if self.guard.admits(key) => None,
            Some(key) => {
                tracing::debug!(code = %Code::InsufficientScope, key_id = %key.id(), "API key lacks a required scope");
                let context = context_of(request.extensions());
                let realm = context.as_ref().map_or(DEFAULT_REALM, |c| c.realm.as_str());
                let rejection = Rejection::insufficient_scope(realm, &self.guard.scopes);
                Some(match context {
                    Some(context) => context.reject(rejection),
                    None => rejection.into_response(),
                })
            }
            None => Some(LayerContext::missing(context_of(request.extensions()).as_deref())),
        };
        match refusal {
            Some(response) => Box::pin(std::future::ready(Ok(response))),
            None => Box::pin(self.inner.call(request)),
        }
    }
}

/// A route layer setting the credits a request of this route spends in all: the
/// layer's verification spent its [cost](crate::ApiKeyLayer::cost) (1 by default), and
/// `Cost::new(n)` spends the difference from keys that have credits (a key without
/// credits spends nothing). A key with too few is answered 429 `USAGE_EXCEEDED`, and
/// nothing more is spent.
///
/// With a [`crate::RemoteVerifier`] the difference is spent by a second verification
/// with that cost, which counts once more against the key's rate limit.
///
/// ```
/// use axum::{Router, routing::post};
/// use keypal_axum::Cost;
///
/// let app: Router = Router::new().route("/render", post(|| async { "done" }).route_layer(Cost::new(10)));
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    credits: u64,
}

impl Cost {
    /// Requests of the route spend `credits` in all.
    pub fn new(credits: u64) -> Self {
        Self { credits }
    }
}

impl<S> Layer<S> for Cost {
    type Service = CostService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CostService { inner, cost: *self }
    }
}

/// The service of [`Cost`].
#[derive(Debug, Clone)]
pub struct CostService<S> {
    inner: S,
    cost: Cost,
}

impl<S, B> Service<Request<B>> for CostService<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let credits = self.cost.credits;
        Box::pin(async move {
            let extensions = request.extensions();
            let context = context_of(extensions);
            let (Some(key), Some(context)) = (extensions.get::<VerifiedKey>().cloned(), context) else {
                return Ok(LayerContext::missing(context_of(request.extensions()).as_deref()));
            };
            let extra = credits.saturating_sub(key.spent());
            if extra == 0 || key.remaining().is_none() {
                return inner.call(request).await;
            }
            let (Some(spender), Some(Presented(presented))) =
                (context.spender.clone(), request.extensions().get::<Presented>().cloned())
            else {
                return Ok(context.reject(Rejection::unavailable()));
            };
            let verdict = match spender.spend(presented.expose(), &key, extra).await {
                Ok(verdict) => verdict,
                Err(error) => {
                    tracing::error!(%error, "spending an API key's credits failed; request refused with 503");
                    return Ok(context.reject(Rejection::unavailable()));
                }
            };
            if verdict.code != Code::Valid {
                return Ok(refuse(&context, &verdict));
            }
            let after = key.after_spending(verdict, extra);
            request.extensions_mut().insert(after);
            inner.call(request).await
        })
    }
}
