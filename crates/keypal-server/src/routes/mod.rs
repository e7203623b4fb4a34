//! The HTTP routes of `keypal serve`, and the layers around them.

pub mod admin;
pub mod analytics;
pub mod apps;
pub mod import;
pub mod keys;
pub mod owners;
pub mod ready;
pub mod tokens;
pub mod verify;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::trace::{DefaultMakeSpan, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::{BaseDoc, DOCUMENT};
use crate::state::State;

/// The largest request body (JSON metadata included).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a request may take, its body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every route, with body limits, timeouts, redacted tracing and panic safety.
pub fn router(state: Arc<State>) -> Router {
    Router::from(api())
        .merge(crate::panel::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(time_limit))
        .layer(axum::middleware::from_fn(close_after_unread_body))
        // Spans carry the request headers (at debug level): credentials show as `Sensitive`.
        .layer(TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true)))
        // Marks credentials as sensitive so no layer (tracing included) ever prints them.
        .layer(SetSensitiveHeadersLayer::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error").into_response()
        }))
}

/// Answers 408 to a request that takes longer than its time: 30 seconds, an import
/// of keys ([`import::IMPORT_TIMEOUT`]) an hour.
async fn time_limit(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let limit = if import::is_import(request.uri().path()) { import::IMPORT_TIMEOUT } else { REQUEST_TIMEOUT };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let within = if limit == REQUEST_TIMEOUT { "30 seconds" } else { "an hour (an import of keys)" };
            let message = format!("the request did not complete within {within}");
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", message).into_response()
        }
    }
}

/// The largest body, as its `Content-Length` declares it, whose rest is read (and
/// dropped) before it is refused as too large (see [`close_after_unread_body`]).
const DRAINED_UP_TO: u64 = 4 * 1024 * 1024;
/// How long reading that rest may take.
const DRAINED_FOR: Duration = Duration::from_secs(5);

/// A request refused before its body was read whole (too large, too slow) leaves the
/// rest of the body on the connection, which then cannot carry another request: the
/// answer says `Connection: close`, or an HTTP/1.1 client reuses the connection and its
/// next request fails. (HTTP/2 has no such header; the server drops it there.)
///
/// Closing a connection with unread data makes the system reset it, and a client still
/// sending then sees the reset (a broken pipe) instead of the answer. So the rest of a
/// body refused as too large is read first, when its `Content-Length` declares at most
/// [`DRAINED_UP_TO`] bytes and it arrives within [`DRAINED_FOR`]: such a client gets
/// its 413 `PAYLOAD_TOO_LARGE`. (A body declared larger, or of unknown length, is not
/// waited for.)
async fn close_after_unread_body(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (mut response, kept) = match declared {
        Some(length) if length > MAX_BODY as u64 && length <= DRAINED_UP_TO => {
            // The handler reads the body through `Rest`; what it leaves stays in `rest`.
            let (parts, body) = request.into_parts();
            let rest = Arc::new(std::sync::Mutex::new(Some(body)));
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::new(Rest(rest.clone())));
            let response = next.run(request).await;
            (response, Some(rest))
        }
        _ => (next.run(request).await, None),
    };
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            let unread = kept.and_then(|rest| rest.lock().unwrap_or_else(|e| e.into_inner()).take());
            if let Some(unread) = unread {
                drain(unread).await;
            }
        }
        StatusCode::REQUEST_TIMEOUT => {}
        _ => return response,
    }
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body read through a shared slot, so that what the handler leaves unread
/// can be taken back (see [`close_after_unread_body`]).
struct Rest(Arc<std::sync::Mutex<Option<axum::body::Body>>>);

impl axum::body::HttpBody for Rest {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(body) => std::pin::Pin::new(body).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

/// Reads and drops the rest of a refused body: at most [`DRAINED_UP_TO`] bytes, for at
/// most [`DRAINED_FOR`].
async fn drain(mut rest: axum::body::Body) {
    use http_body_util::BodyExt;
    let reading = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = rest.frame().await {
            read += frame.data_ref().map_or(0, |data| data.len() as u64);
            if read > DRAINED_UP_TO {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAINED_FOR, reading).await;
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this endpoint does not take that method")
}

/// Every route of the API. The router and the OpenAPI document (`GET /openapi.json`) are
/// both made from this list, each route with its handler's `#[utoipa::path]`, so no route
/// is left out of the document: one line per path.
pub fn api() -> OpenApiRouter<Arc<State>> {
    OpenApiRouter::with_openapi(BaseDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(ready::readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
        .routes(routes!(admin::login, admin::logout))
        .routes(routes!(apps::list, apps::create))
        .routes(routes!(apps::get, apps::update, apps::delete))
        .routes(routes!(apps::regenerate_secret))
        .routes(routes!(apps::list_keys, apps::create_key))
        .routes(with_body_limit(routes!(import::import_keys), import::MAX_JSON_BODY))
        .routes(routes!(keys::get, keys::update, keys::delete))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::credits))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::reveal))
        .routes(routes!(admin::service_key))
        .routes(routes!(admin::rotate_service_key))
        .routes(routes!(admin::audit))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(verify::verify))
        .routes(routes!(owners::list, owners::create))
        .routes(routes!(owners::revoke))
        .routes(routes!(analytics::owner_usage))
        .routes(routes!(analytics::verifications))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::retry))
}

/// A route whose JSON body may be up to `limit` bytes (others: [`MAX_BODY`]).
fn with_body_limit(
    (schemas, paths, route): utoipa_axum::router::UtoipaMethodRouter<Arc<State>>,
    limit: usize,
) -> utoipa_axum::router::UtoipaMethodRouter<Arc<State>> {
    (schemas, paths, route.layer(DefaultBodyLimit::max(limit)))
}

/// Liveness: 200 `ok` while the process serves requests. It touches no dependency:
/// `GET /readyz` says whether the database and Redis answer.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "system",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain", example = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus metrics: verifications by code, a latency histogram, and the hashing threads.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain",
        example = "keypal_verifications_total{code=\"VALID\"} 12\n")))]
pub async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut text = state.metrics.render();
    if let Some(pool) = &state.hash_pool {
        text.push_str(&pool.render_metrics());
    }
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// This API's OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "system",
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object)))]
pub async fn openapi() -> Response {
    axum::Json(&*DOCUMENT).into_response()
}
