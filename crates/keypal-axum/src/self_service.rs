//! A router an application mounts for its own signed-in users to manage their keys.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keypal::{AuditContext, KeyId, KeyManager, KeyPatch, KeyRecord, ListQuery, NewKey, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest grace period of a rotation (30 days), as `keypal serve` allows.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);
/// The largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A key as the self-service router shows it: never the key or its hash. The same
/// shape as `keypal serve`'s `KeyView`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyView {
    /// Its id.
    pub id: Uuid,
    /// Its application (namespace).
    pub app_id: Option<String>,
    /// A human name.
    pub name: Option<String>,
    /// Who owns it.
    pub owner_id: Option<String>,
    /// First characters + `…` + last 4.
    pub masked: String,
    /// The tier.
    pub tier: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Any JSON value.
    pub metadata: Option<Value>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it last verified (may lag a few seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked (a rotated key: when its grace window ends).
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Disabled keys are refused until enabled.
    pub enabled: bool,
    /// Credits left now; `null` is unlimited. With a refill whose boundary has passed
    /// since the last spend, the refill's amount.
    pub remaining: Option<u64>,
    /// Credits that refill, `{"interval", "day"?, "amount"}`.
    pub refill: Option<keypal::Refill>,
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
            refill: r.refill,
            refill_at: r.refill_at(now),
            rate_limit: r.rate_limit.map(|l| l.to_string()),
            rotated_from: r.rotated_from.map(|id| id.0),
        }
    }
}

/// A new key, shown once, with its record (`keypal serve`'s `CreatedKey`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreatedKey {
    /// The key: shown once, never stored in plaintext.
    pub key: String,
    /// Its record.
    pub record: KeyView,
}

/// A page of keys, newest first (`keypal serve`'s `KeyList`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<Uuid>,
}

/// `POST /`: a new key for the signed-in owner (`keypal serve`'s `OwnerKeyRequest`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OwnerKeyRequest {
    /// Required, trimmed, 1-100 characters.
    pub name: String,
    /// Expires this many days from now (1-365); absent: the manager's default.
    pub expires_in_days: Option<u32>,
    /// Granted scopes: some of those the router [allows](SelfService::scopes).
    pub scopes: Option<Vec<String>>,
    /// Any JSON value.
    pub metadata: Option<Value>,
}

/// `GET /` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    include_revoked: Option<bool>,
    limit: Option<u32>,
    cursor: Option<Uuid>,
}

/// `POST /{id}/rotate`: no body, `{}`, or `{"grace_seconds": n}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    grace_seconds: Option<u64>,
}

/// An error of the self-service router: `{"error": {"code", "message", "field"?}}`, the
/// codes of `keypal serve` (`INVALID_INPUT`, `INVALID_JSON`, `NOT_FOUND`,
/// `ALREADY_REVOKED`, `KEY_LIMIT_REACHED`, `CROSS_SITE`, `STORAGE_UNAVAILABLE`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelfServiceError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// A sentence for people (never a key).
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
}

impl SelfServiceError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None }
    }

    fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            field: Some(field.to_owned()),
            ..Self::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", format!("{field}: {message}"))
        }
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such key")
    }
}

impl From<keypal::Error> for SelfServiceError {
    fn from(error: keypal::Error) -> Self {
        use keypal::Error as E;
        match &error {
            E::NotFound(_) => Self::not_found(),
            E::AlreadyRevoked(_) => Self::new(StatusCode::CONFLICT, "ALREADY_REVOKED", "the key is already revoked"),
            E::LimitReached { .. } => Self::new(StatusCode::FORBIDDEN, "KEY_LIMIT_REACHED", error.to_string()),
            E::Invalid { field, message } => Self::invalid(field, message),
            E::Store(e) => {
                tracing::error!(error = %e, "storage failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORAGE_UNAVAILABLE",
                    "the database is unavailable; try again",
                )
            }
            E::Offload(keypal::OffloadError::Busy) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "HASHING_BUSY", "every hashing thread is busy; try again")
            }
            _ => {
                tracing::error!(%error, "a self-service request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for SelfServiceError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code, message: &self.message, field: self.field.as_deref() } };
        (self.status, Json(body)).into_response()
    }
}

/// Says who the signed-in owner of a request is, from the host application's own
/// authentication. Implemented for every `Fn(&Parts) -> impl Future<Output =
/// Result<String, R>>` where `R` is any response (the refusal of a request nobody is
/// signed in to). The future must not borrow the parts: take what it needs first.
///
/// ```
/// use axum::http::{StatusCode, request::Parts};
///
/// // As a function, the future says it borrows nothing with `use<>`.
/// fn signed_in(parts: &Parts) -> impl Future<Output = Result<String, StatusCode>> + Send + use<> {
///     let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
///     async move { user.ok_or(StatusCode::UNAUTHORIZED) }
/// }
/// fn owner_of(_: impl keypal_axum::OwnerOf) {}
/// owner_of(signed_in);
/// ```
pub trait OwnerOf: Clone + Send + Sync + 'static {
    /// The owner id of the request, or the response refusing it.
    fn owner_of(&self, parts: &Parts) -> impl Future<Output = Result<String, Response>> + Send;
}

impl<F, Fut, R> OwnerOf for F
where
    F: Fn(&Parts) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, R>> + Send,
    R: IntoResponse,
{
    fn owner_of(&self, parts: &Parts) -> impl Future<Output = Result<String, Response>> + Send {
        let owner = self(parts);
        async move { owner.await.map_err(IntoResponse::into_response) }
    }
}

/// The self-service router with its options: see [`self_service`].
///
/// ```
/// use axum::{Router, http::{StatusCode, request::Parts}};
/// use keypal::{KeyManager, MemoryStore};
/// use keypal_axum::SelfService;
///
/// let keys = KeyManager::builder().store(MemoryStore::new()).max_active_keys_per_owner(10).build()?;
/// let owner_of = |parts: &Parts| {
///     let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
///     async move { user.ok_or(StatusCode::UNAUTHORIZED) }
/// };
/// let app: Router = Router::new()
///     .nest("/account/keys", SelfService::new(keys, owner_of).scopes(["invoices:read", "invoices:write"]).router());
/// # let _ = app;
/// # Ok::<(), keypal::Error>(())
/// ```
pub struct SelfService<S, O> {
    keys: KeyManager<S>,
    owner_of: O,
    scopes: Vec<String>,
}

impl<S, O> std::fmt::Debug for SelfService<S, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfService").field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

impl<S: Store, O: OwnerOf> SelfService<S, O> {
    /// The router of `keys` for the owners `owner_of` names; new keys get no scopes.
    pub fn new(keys: KeyManager<S>, owner_of: O) -> Self {
        Self { keys, owner_of, scopes: Vec::new() }
    }

    /// The scopes owners may give their keys: a new key gets those it asks for (400
    /// `INVALID_INPUT` for any other), or all of these when it asks for none.
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The router: `GET /`, `POST /`, `POST /{id}/revoke`, `POST /{id}/rotate`.
    pub fn router<T: Clone + Send + Sync + 'static>(self) -> Router<T> {
        let shared = Arc::new(self);
        Router::new()
            .route("/", get(list::<S, O>).post(create::<S, O>))
            .route("/{id}/revoke", post(revoke::<S, O>))
            .route("/{id}/rotate", post(rotate::<S, O>))
            .with_state(shared)
    }

    /// The signed-in owner and the manager recording them in the audit log; refuses
    /// cross-site requests that change state.
    async fn owner(&self, parts: &Parts, changes: bool) -> Result<(String, KeyManager<S>), Response> {
        if changes && !same_origin(&parts.headers) {
            return Err(SelfServiceError::new(
                StatusCode::FORBIDDEN,
                "CROSS_SITE",
                "requests from another site are refused",
            )
            .into_response());
        }
        let owner = self.owner_of.owner_of(parts).await?;
        let keys = self.keys.with_context(AuditContext::new(format!("owner:{owner}")));
        Ok((owner, keys))
    }

    /// The owner's key `id`: 404 for an unknown key and for another owner's alike.
    async fn owned(&self, keys: &KeyManager<S>, owner: &str, id: &str) -> Result<KeyId, SelfServiceError> {
        let id = id.parse::<Uuid>().map(KeyId).map_err(|_| SelfServiceError::not_found())?;
        let record = keys.get(&id).await?;
        if record.owner_id.as_deref() != Some(owner) {
            return Err(SelfServiceError::not_found());
        }
        Ok(id)
    }
}

/// Serves the self-service routes for the owners `owner_of` names (the host
/// application's own authentication: a session cookie, a signed-in user):
///
/// | route | answer |
/// |---|---|
/// | `GET /?include_revoked=&limit=&cursor=` | 200 `{"keys": [KeyView], "next_cursor"}`, the owner's keys, masked, newest first |
/// | `POST /` `{"name", "expires_in_days"?, "scopes"?, "metadata"?}` | 201 `{"key", "record"}`, the key shown once; 403 `KEY_LIMIT_REACHED` at the owner limit |
/// | `POST /{id}/revoke` | 200 `KeyView`; 404 for another owner's key; 409 `ALREADY_REVOKED` |
/// | `POST /{id}/rotate` `{"grace_seconds"?}` | 200 `{"key", "record"}`; 404 for another owner's key |
///
/// The shapes are those of `keypal serve`'s `/v1/owners/{owner_id}/keys`. Names are
/// trimmed, 1-100 characters; `expires_in_days` is 1-365; `grace_seconds` at most 30
/// days. Changes are refused (403 `CROSS_SITE`) when the browser says they come from
/// another site (`Origin` other than `Host`). New keys get no scopes unless
/// [`SelfService::scopes`] allows some.
///
/// ```
/// use axum::{Router, http::{StatusCode, request::Parts}};
/// use keypal::{KeyManager, MemoryStore};
///
/// let keys = KeyManager::builder().store(MemoryStore::new()).build()?;
/// let app: Router = Router::new().nest(
///     "/account/keys",
///     keypal_axum::self_service(keys, |parts: &Parts| {
///         let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
///         async move { user.ok_or(StatusCode::UNAUTHORIZED) }
///     }),
/// );
/// # let _ = app;
/// # Ok::<(), keypal::Error>(())
/// ```
pub fn self_service<S, O, T>(keys: KeyManager<S>, owner_of: O) -> Router<T>
where
    S: Store,
    O: OwnerOf,
    T: Clone + Send + Sync + 'static,
{
    SelfService::new(keys, owner_of).router()
}

type Shared<S, O> = State<Arc<SelfService<S, O>>>;

async fn list<S: Store, O: OwnerOf>(State(service): Shared<S, O>, request: Request<Body>) -> Response {
    let (parts, _) = request.into_parts();
    let (owner, keys) = match service.owner(&parts, false).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let answer = async {
        let Query(params) = Query::<ListParams>::try_from_uri(&parts.uri)
            .map_err(|e| SelfServiceError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", e.body_text()))?;
        let mut query = ListQuery::new().owner_id(owner).include_revoked(params.include_revoked.unwrap_or(false));
        if let Some(limit) = params.limit {
            if !(1..=1000).contains(&limit) {
                return Err(SelfServiceError::invalid("limit", "must be 1 to 1000"));
            }
            query = query.limit(limit);
        }
        if let Some(cursor) = params.cursor {
            query = query.cursor(cursor);
        }
        let page = keys.list(query).await?;
        Ok::<_, SelfServiceError>(Json(KeyList {
            keys: page.items.iter().map(KeyView::from).collect(),
            next_cursor: page.next_cursor,
        }))
    };
    answer.await.into_response()
}

/// The body of a request, at most [`MAX_BODY_BYTES`].
async fn body_bytes(body: Body) -> Result<bytes::Bytes, SelfServiceError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| SelfServiceError::new(StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE", "the body is too large"))
}

/// A JSON request body, sent with `Content-Type: application/json` (a form another site
/// posts cannot be one without the browser asking first).
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, SelfServiceError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(SelfServiceError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send a JSON body with Content-Type: application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() { "INVALID_INPUT" } else { "INVALID_JSON" };
        SelfServiceError::new(StatusCode::BAD_REQUEST, code, format!("the body is not a valid request: {e}"))
    })
}

async fn create<S: Store, O: OwnerOf>(State(service): Shared<S, O>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let (owner, keys) = match service.owner(&parts, true).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let answer = async {
        let request: OwnerKeyRequest = json_body(&parts.headers, &body_bytes(body).await?)?;
        // The contract's 1-100 characters whatever the manager's name policy (which the
        // manager applies too: the stricter wins).
        let length = request.name.trim().chars().count();
        if !(1..=100).contains(&length) {
            return Err(SelfServiceError::invalid("name", "must be 1 to 100 characters"));
        }
        let mut new = NewKey::new().owner_id(owner).name(request.name);
        if let Some(days) = request.expires_in_days {
            if !(1..=365).contains(&days) {
                return Err(SelfServiceError::invalid("expires_in_days", "must be an integer from 1 to 365"));
            }
            new = new.expires_in(Duration::from_secs(u64::from(days) * 86_400));
        }
        let scopes = match request.scopes {
            None => service.scopes.clone(),
            Some(asked) => {
                if let Some(other) = asked.iter().find(|s| !service.scopes.contains(s)) {
                    return Err(SelfServiceError::invalid(
                        "scopes",
                        format!("`{other}` may not be given to a key here"),
                    ));
                }
                asked
            }
        };
        new = new.scopes(scopes);
        if let Some(metadata) = request.metadata {
            new = new.metadata(metadata);
        }
        let created = keys.create(new).await?;
        Ok::<_, SelfServiceError>((
            StatusCode::CREATED,
            Json(CreatedKey { key: created.key.expose().to_owned(), record: KeyView::from(&created.record) }),
        ))
    };
    answer.await.into_response()
}

async fn revoke<S: Store, O: OwnerOf>(
    State(service): Shared<S, O>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let (parts, _) = request.into_parts();
    let (owner, keys) = match service.owner(&parts, true).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let answer = async {
        let id = service.owned(&keys, &owner, &id).await?;
        let mut revoked = keys.revoke(&id).await?;
        if revoked.metadata.is_some() {
            // As `keypal serve` does: a revoked key keeps its record, not its metadata.
            revoked = keys.update(&id, KeyPatch::new().metadata(None)).await?;
        }
        Ok::<_, SelfServiceError>(Json(KeyView::from(&revoked)))
    };
    answer.await.into_response()
}

async fn rotate<S: Store, O: OwnerOf>(
    State(service): Shared<S, O>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    let (owner, keys) = match service.owner(&parts, true).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let answer = async {
        let bytes = body_bytes(body).await?;
        let request: RotateRequest = match bytes.as_ref() {
            b"" | b"null" => RotateRequest::default(),
            _ => json_body(&parts.headers, &bytes)?,
        };
        let grace = Duration::from_secs(request.grace_seconds.unwrap_or(0));
        if grace > MAX_GRACE {
            return Err(SelfServiceError::invalid("grace_seconds", "must be at most 2592000 (30 days)"));
        }
        let id = service.owned(&keys, &owner, &id).await?;
        let rotated = keys.rotate(&id, grace).await?;
        Ok::<_, SelfServiceError>(Json(CreatedKey {
            key: rotated.key.expose().to_owned(),
            record: KeyView::from(&rotated.record),
        }))
    };
    answer.await.into_response()
}

/// Whether a request's `Origin` (when sent) is the host it was sent to (`keypal serve`'s
/// rule for its cookie-authenticated changes).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    headers.get_all(ORIGIN).iter().all(|origin| {
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        !host.is_empty() && origin_host == host
    })
}
