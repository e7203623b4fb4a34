//! The HTTP routes of `keypal serve`, and the layers around them.

pub mod admin;
pub mod apps;
pub mod keys;
pub mod owners;
pub mod ready;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::State;

/// The largest request body (JSON metadata included).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a request may take, its body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route, with body limits, timeouts, redacted tracing and panic safety.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready::readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/session", post(admin::login).delete(admin::logout))
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{id}", get(apps::get).patch(apps::update).delete(apps::delete))
        .route("/v1/apps/{id}/client-secret", post(apps::regenerate_secret))
        .route("/v1/apps/{id}/keys", get(apps::list_keys).post(apps::create_key))
        .route("/v1/keys/{id}", get(keys::get).patch(keys::update).delete(keys::delete))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/keys/{id}/reveal", post(keys::reveal))
        .route("/v1/service-key", get(admin::service_key))
        .route("/v1/service-key/rotate", post(admin::rotate_service_key))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/owners/{owner_id}/keys", get(owners::list).post(owners::create))
        .route("/v1/owners/{owner_id}/keys/{key_id}/revoke", post(owners::revoke))
        .merge(crate::panel::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::map_response(close_after_unread_body))
        // Spans carry the request headers (at debug level): credentials show as `Sensitive`.
        .layer(TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true)))
        // Marks credentials as sensitive so no layer (tracing included) ever prints them.
        .layer(SetSensitiveHeadersLayer::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error").into_response()
        }))
}

/// A request refused before its body was read whole (too large, too slow) leaves the
/// rest of the body on the connection, which then cannot carry another request: the
/// answer says `Connection: close`, or an HTTP/1.1 client reuses the connection and its
/// next request fails. (HTTP/2 has no such header; the server drops it there.)
///
/// A 408 comes only from the timeout layer, with an empty body: it gets the error
/// body every other refusal has.
async fn close_after_unread_body(response: Response) -> Response {
    let mut response = match response.status() {
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the request did not complete within 30 seconds",
        )
        .into_response(),
        StatusCode::PAYLOAD_TOO_LARGE => response,
        _ => return response,
    };
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this endpoint does not take that method")
}

/// Liveness: 200 `ok` while the process serves requests. It touches no dependency:
/// `GET /readyz` says whether the database and Redis answer.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics: verifications by code, a latency histogram, and the hashing threads.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, body = String)))]
pub async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut text = state.metrics.render();
    if let Some(pool) = &state.hash_pool {
        text.push_str(&pool.render_metrics());
    }
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, body = Object)))]
pub async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
