//! The admin session, the service key and the audit log.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keypal::{Action, AuditQuery, Event, KeyId, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{self, Admin, AdminSession, Caller, SESSION_COOKIE, SESSION_TTL};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::schema::OwnerId;
use crate::state::State;

type Shared = AxumState<Arc<State>>;

/// `POST /v1/session`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The admin password.
    #[schema(example = "correct horse battery staple")]
    pub password: String,
}

/// Whether the request came over TLS (directly or through a proxy that says so).
fn is_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The session cookie: HttpOnly, SameSite=Strict, Secure over TLS.
fn session_cookie(token: &str, max_age: i64, tls: bool) -> Result<HeaderValue, ApiError> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| ApiError::internal(&e))
}

/// Logs in: 204 and a session cookie; 401 for a wrong password; 429 after repeated failures.
#[utoipa::path(post, path = "/v1/session", operation_id = "log_in", tag = "session", request_body = Login,
    responses(
        (status = 204, description = "logged in; the session cookie is set",
            headers(("Set-Cookie" = String, description = "`keypal_session=...; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200`"))),
        (status = 401, description = "UNAUTHENTICATED: wrong password"),
        (status = 403, description = "CROSS_SITE"),
        (status = 429, description = "TOO_MANY_ATTEMPTS")))]
pub async fn login(
    caller: Caller,
    AxumState(state): Shared,
    headers: HeaderMap,
    ApiJson(login): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let cookie = log_in(&state, &caller, &headers, &login.password).await?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie)]).into_response())
}

/// Logs an admin in, for the API and the panel alike: refuses another site's request,
/// checks the password (throttled per address) and starts a session; returns its cookie.
pub async fn log_in(
    state: &State,
    caller: &Caller,
    headers: &HeaderMap,
    password: &str,
) -> Result<HeaderValue, ApiError> {
    // Another site must not log a browser in to a session of its choosing.
    if !auth::same_origin(headers) {
        return Err(auth::cross_site());
    }
    if let Some(wait) = state.throttle.check(caller.ip) {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_ATTEMPTS",
            "too many failed logins; wait and try again",
        );
        error.retry_after = Some(wait);
        return Err(error);
    }
    if !state.check_admin_password(password).await? {
        state.throttle.fail(caller.ip);
        tracing::warn!(ip = %caller.ip, "failed admin login");
        return Err(ApiError::unauthenticated("wrong password"));
    }
    state.throttle.succeed(caller.ip);
    let token = auth::start_session(state).await?;
    session_cookie(&token, SESSION_TTL.whole_seconds(), is_tls(headers))
}

/// Logs out (ends the session and clears the cookie).
///
/// The session cookie is optional: without one, this only clears the cookie.
#[utoipa::path(delete, path = "/v1/session", operation_id = "log_out", tag = "session", security((), ("admin_session" = [])),
    responses(
        (status = 204, description = "logged out; the session cookie is cleared",
            headers(("Set-Cookie" = String, description = "`keypal_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`"))),
        (status = 403, description = "CROSS_SITE")))]
pub async fn logout(AxumState(state): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    if !auth::same_origin(&headers) {
        return Err(auth::cross_site());
    }
    let token = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned());
    if let Some(token) = token {
        auth::end_session(&state, &token).await?;
    }
    let cookie = session_cookie("", 0, is_tls(&headers))?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie)]).into_response())
}

/// `{"service_key": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceKey {
    /// The key callers of `POST /v1/verify` send as `Authorization: Bearer ...`.
    #[schema(example = "kp_svc_R2H7gHhbzposmJlW0SiWOUUUHH6uMaUba0C1Cc8Q")]
    pub service_key: String,
}

/// The current service key.
#[utoipa::path(get, path = "/v1/service-key", operation_id = "get_service_key", tag = "service key", security(("admin_session" = [])),
    responses((status = 200, description = "the service key", body = ServiceKey)))]
pub async fn service_key(_: AdminSession, AxumState(state): Shared) -> Result<ApiJson<ServiceKey>, ApiError> {
    Ok(ApiJson(ServiceKey { service_key: state.service_key().await? }))
}

/// Replaces the service key; the old one stops working at once. Refused with 409
/// `SERVICE_KEY_PINNED` while `KEYPAL_SERVICE_KEY` sets it (the next start would undo it).
#[utoipa::path(post, path = "/v1/service-key/rotate", operation_id = "rotate_service_key", tag = "service key", security(("admin_session" = [])),
    responses((status = 200, description = "the new service key", body = ServiceKey),
        (status = 409, description = "SERVICE_KEY_PINNED: the service key is set by KEYPAL_SERVICE_KEY")))]
pub async fn rotate_service_key(
    AdminSession(admin): AdminSession,
    AxumState(state): Shared,
) -> Result<ApiJson<ServiceKey>, ApiError> {
    Ok(ApiJson(ServiceKey { service_key: state.rotate_service_key(admin.context()).await? }))
}

/// `GET /v1/audit` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this application's events.
    pub app_id: Option<Uuid>,
    /// Only this key's events.
    pub key_id: Option<Uuid>,
    /// Only this owner's events.
    #[param(inline, value_type = Option<OwnerId>)]
    pub owner_id: Option<String>,
    /// A key's `created`, `imported`, `revoked`, `rotated`, `enabled`, `disabled`,
    /// `updated` or `deleted`; an application's `app_created`, `app_updated`,
    /// `app_deleted` or `client_secret_rotated`; or `service_key_rotated`.
    #[param(inline, value_type = Option<AuditAction>)]
    pub action: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
}

/// The schema of an audit action's name: one of [`Action::ALL`].
pub struct AuditAction;

impl utoipa::PartialSchema for AuditAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::one_of(Action::ALL.iter().map(|a| a.as_str()))
    }
}

impl ToSchema for AuditAction {}

/// An audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Its id (UUID v7: the log's order).
    pub id: Uuid,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened.
    pub action: String,
    /// The key.
    pub key_id: Option<Uuid>,
    /// The application.
    pub app_id: Option<String>,
    /// The key's owner.
    pub owner_id: Option<String>,
    /// Who did it: `admin`, `token:<name>` (a management token), `app:<id>`, `system`.
    pub actor: String,
    /// From which address.
    pub ip: Option<String>,
    /// With which user agent.
    pub user_agent: Option<String>,
    /// More about it.
    #[schema(value_type = Option<Value>)]
    pub details: Option<Value>,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        EventView {
            id: e.id,
            at: e.at,
            action: e.action.to_string(),
            key_id: e.key_id.map(|k| k.0),
            app_id: e.namespace,
            owner_id: e.owner_id,
            actor: e.context.actor,
            ip: e.context.ip,
            user_agent: e.context.user_agent,
            details: e.details,
        }
    }
}

/// A page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// The events.
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<Uuid>,
}

/// The audit log, newest first, filtered.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit_events", tag = "audit", params(AuditParams), security(("admin_session" = [])),
    responses((status = 200, description = "a page of events", body = EventList)))]
pub async fn audit(
    _: Admin,
    AxumState(state): Shared,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<ApiJson<EventList>, ApiError> {
    let mut query = AuditQuery::new();
    if let Some(app) = params.app_id {
        query = query.namespace(app.to_string());
    }
    if let Some(key) = params.key_id {
        query = query.key_id(KeyId(key));
    }
    if let Some(owner) = params.owner_id {
        query = query.owner_id(crate::routes::apps::check_owner(&owner)?);
    }
    if let Some(action) = params.action {
        let action: Action = action.parse().map_err(|_| ApiError::invalid("action", "is not an audit action"))?;
        query = query.action(action);
    }
    if let Some(limit) = params.limit {
        query = query.limit(crate::routes::apps::check_limit(limit)?);
    }
    if let Some(cursor) = params.cursor {
        query = query.cursor(cursor);
    }
    let page = state.store.audit(&query).await?;
    Ok(ApiJson(EventList {
        events: page.items.into_iter().map(EventView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
