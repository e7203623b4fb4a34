//! Who is calling: the administrator (the admin session's cookie, or a management
//! token as `Authorization: Bearer kp_mgmt_...`), the service key, or an application's
//! client secret (both `Authorization: Bearer ...`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use keypal::AuditContext;
use serde_json::json;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::secrets;
use crate::state::{AppRuntime, State};
use crate::tokens::Tokens;

/// The admin session cookie.
pub const SESSION_COOKIE: &str = "keypal_session";
/// The object kind of admin sessions (id: the token's keyed digest).
const SESSION: &str = "session";
/// How long a session lasts.
pub const SESSION_TTL: time::Duration = time::Duration::hours(12);

/// Where a request came from, for the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client address.
    pub ip: IpAddr,
    /// Its user agent.
    pub user_agent: Option<String>,
}

impl Caller {
    /// The audit context of `actor` calling from here.
    pub fn context(&self, actor: &str) -> AuditContext {
        let mut context = AuditContext::new(actor).ip(self.ip.to_string());
        if let Some(agent) = &self.user_agent {
            context = context.user_agent(agent.chars().take(256).collect::<String>());
        }
        context
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Caller { ip, user_agent })
    }
}

/// The bearer token of a request, if any.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The value of a cookie, if sent.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a request's `Origin` (when sent) is this server. (`Origin: null`, sent from
/// sandboxed frames, `data:` pages and privacy-minded redirects, is another site.)
/// Browsers send `Origin` with every request that changes state; a client that sends
/// none is not a browser, which no other site can drive.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    headers.get_all(ORIGIN).iter().all(|origin| {
        let origin = origin.to_str().unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        !host.is_empty() && origin_host == host
    })
}

/// The refusal of a request from another site that would change state with the
/// admin's cookie (cross-site request forgery).
pub fn cross_site() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "CROSS_SITE", "requests from another site are refused")
}

/// A caller of the management API: the admin session (the panel, or a client that
/// logged in) or a management token (scripts). Every handler of `/v1/apps`, `/v1/keys`,
/// `/v1/audit` and `/v1/tokens` takes it, so this is the one place that says who may
/// manage keypal.
///
/// A request with `Authorization: Bearer` is judged by its token alone (see
/// [`crate::tokens::Tokens::authenticate`]: 401 `UNAUTHENTICATED` for a wrong or revoked
/// one, 401 `TOKEN_EXPIRED` past its expiry). Browsers never add that header to another
/// site's request, so only the cookie needs the cross-site checks of [`AdminSession`].
#[derive(Debug, Clone)]
pub struct Admin {
    /// Where it came from.
    pub caller: Caller,
    /// Who it is in the audit log: `admin`, or `token:<name>`.
    actor: String,
}

impl Admin {
    /// The administrator of a valid admin session, calling from `caller`.
    pub fn session(caller: Caller) -> Self {
        Admin { caller, actor: "admin".to_owned() }
    }

    /// The audit context of this caller (its actor: `admin`, or `token:<name>` for a
    /// management token).
    pub fn context(&self) -> AuditContext {
        self.caller.context(&self.actor)
    }
}

impl FromRequestParts<Arc<State>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return AdminSession::from_request_parts(parts, state).await.map(|AdminSession(admin)| admin);
        };
        let token = Tokens::new(&state.store, &state.secrets).authenticate(token).await.inspect_err(|_| {
            state.metrics.reject_caller();
        })?;
        Ok(Admin { caller: Caller::from_request_parts(parts, state).await?, actor: token.actor() })
    }
}

/// A request with a valid admin session, and nothing else: what the service key's
/// endpoints take. Its cookie authenticates it, so a request that changes state must
/// come from this server's own pages or from a client that is not a browser (see
/// [`same_origin`]).
#[derive(Debug, Clone)]
pub struct AdminSession(pub Admin);

impl FromRequestParts<Arc<State>> for AdminSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        if !matches!(parts.method, Method::GET | Method::HEAD) && !same_origin(&parts.headers) {
            return Err(cross_site());
        }
        let token = cookie(parts, SESSION_COOKIE).ok_or_else(|| ApiError::unauthenticated("log in first"))?;
        if !session_is_valid(state, token).await? {
            return Err(ApiError::unauthenticated("the session has expired; log in again"));
        }
        Ok(AdminSession(Admin::session(Caller::from_request_parts(parts, state).await?)))
    }
}

/// Whether `token` names a live session (an expired one is deleted).
pub async fn session_is_valid(state: &State, token: &str) -> Result<bool, ApiError> {
    let id = state.secrets.digest(token);
    let Some(session) = state.store.get_object(SESSION, &id).await? else { return Ok(false) };
    let expires = session.body["expires_at"].as_i64().unwrap_or(0);
    if expires <= OffsetDateTime::now_utc().unix_timestamp() {
        state.store.delete_object(SESSION, &id, None).await?;
        return Ok(false);
    }
    Ok(true)
}

/// Starts a session; returns its token (the cookie value).
pub async fn start_session(state: &State) -> Result<String, ApiError> {
    let token = secrets::token("", 43).map_err(|e| ApiError::internal(&e))?;
    let expires_at = (OffsetDateTime::now_utc() + SESSION_TTL).unix_timestamp();
    let id = state.secrets.digest(&token);
    state.store.insert_object(SESSION, &id, None, &json!({ "expires_at": expires_at }), None).await?;
    Ok(token)
}

/// Ends the session of `token`.
pub async fn end_session(state: &State, token: &str) -> Result<(), ApiError> {
    state.store.delete_object(SESSION, &state.secrets.digest(token), None).await?;
    Ok(())
}

/// A request bearing the service key.
#[derive(Debug, Clone, Copy)]
pub struct Service;

impl FromRequestParts<Arc<State>> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        match bearer(parts) {
            Some(token) if state.check_service_key(token) => Ok(Service),
            Some(_) => {
                state.metrics.reject_caller();
                Err(ApiError::unauthenticated("the service key is wrong"))
            }
            None => {
                state.metrics.reject_caller();
                Err(ApiError::unauthenticated("send the service key as Authorization: Bearer <service key>"))
            }
        }
    }
}

/// A request bearing an application's client secret.
pub struct ClientApp {
    /// The application.
    pub runtime: Arc<AppRuntime>,
    /// Where it came from.
    pub caller: Caller,
}

impl FromRequestParts<Arc<State>> for ClientApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthenticated("send the client secret as Authorization: Bearer <client secret>")
        })?;
        let runtime = state
            .app_for_secret(token)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the client secret is wrong"))?;
        Ok(ClientApp { runtime, caller: Caller::from_request_parts(parts, state).await? })
    }
}
