//! The answers the layer gives: statuses, `WWW-Authenticate`, `Retry-After` and the
//! IETF `RateLimit` headers, and the replaceable JSON body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keypal::{Code, RateLimitStatus};
use serde::Serialize;
use time::OffsetDateTime;

use crate::verifier::Verdict;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The code of a request that carried no key.
pub const MISSING_KEY: &str = "MISSING_KEY";
/// The code of a request whose key could not be verified (verifier failure: 503).
pub const VERIFICATION_UNAVAILABLE: &str = "VERIFICATION_UNAVAILABLE";

/// Why the layer (or a guard, or an extractor) refused a request: the status, the stable
/// code and message of the JSON body, and the headers the answer carries.
///
/// | refusal | status | headers |
/// |---|---|---|
/// | no key (`MISSING_KEY`) | 401 | `WWW-Authenticate: Bearer realm="…"` |
/// | `MALFORMED`, `NOT_FOUND`, `REVOKED`, `DISABLED`, `EXPIRED` | 401 | `WWW-Authenticate: Bearer realm="…", error="invalid_token"` |
/// | `INSUFFICIENT_SCOPE` | 403 | `WWW-Authenticate: Bearer realm="…", error="insufficient_scope", scope="…"` |
/// | `RATE_LIMITED` | 429 | `Retry-After`, `RateLimit-Policy`, `RateLimit` |
/// | `USAGE_EXCEEDED` | 429 | (`RateLimit-Policy`, `RateLimit` when the key has a limit) |
/// | `VERIFICATION_UNAVAILABLE` | 503 | `Retry-After: 1` |
///
/// The default body is `{"error": {"code": "...", "message": "..."}}`; replace it with
/// [`crate::ApiKeyLayer::error_body`].
///
/// ```
/// use axum::response::IntoResponse;
/// use keypal::Code;
/// use keypal_axum::Rejection;
///
/// let rejection = Rejection::of_code(Code::Revoked, "api");
/// assert_eq!(rejection.status().as_u16(), 401);
/// assert_eq!(rejection.code(), "REVOKED");
/// let response = rejection.into_response();
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="api", error="invalid_token""#);
/// ```
#[derive(Clone)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    headers: HeaderMap,
    body: Option<Arc<ErrorBodyFn>>,
}

/// Makes the body of a refusal: see [`crate::ApiKeyLayer::error_body`].
pub(crate) type ErrorBodyFn = dyn Fn(&Rejection) -> Response + Send + Sync;

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("status", &self.status)
            .field("code", &self.code)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl Rejection {
    /// The refusal of a request with no key: 401, `WWW-Authenticate: Bearer realm="…"`.
    pub fn missing(realm: &str) -> Self {
        let mut rejection = Self::bare(StatusCode::UNAUTHORIZED, MISSING_KEY, "an API key is required");
        rejection.authenticate::<&str>(realm, None, None);
        rejection
    }

    /// The refusal a verification's code calls for (see the table above), without the
    /// rate-limit headers, which need the key's state. `VALID` is no refusal: asked
    /// for anyway, it gives a 500.
    pub fn of_code(code: Code, realm: &str) -> Self {
        let status = match code {
            Code::InsufficientScope => StatusCode::FORBIDDEN,
            Code::RateLimited | Code::UsageExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::Valid => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut rejection = Self::bare(status, code.as_str(), code.message());
        match status {
            StatusCode::UNAUTHORIZED => rejection.authenticate::<&str>(realm, Some("invalid_token"), None),
            StatusCode::FORBIDDEN => rejection.authenticate::<&str>(realm, Some("insufficient_scope"), None),
            _ => {}
        }
        rejection
    }

    /// The refusal of a verdict: [`Rejection::of_code`] plus the rate-limit headers.
    pub(crate) fn of_verdict(verdict: &Verdict, realm: &str) -> Self {
        let mut rejection = Self::of_code(verdict.code, realm);
        if let Some(status) = &verdict.rate_limit {
            rate_limit_headers(&mut rejection.headers, status, verdict.window);
            if verdict.code == Code::RateLimited {
                let wait = status.retry_after.unwrap_or_else(|| until(status.reset_at));
                rejection.headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait).max(1)));
            }
        } else if verdict.code == Code::RateLimited {
            rejection.headers.insert(header::RETRY_AFTER, HeaderValue::from(1_u64));
        }
        rejection
    }

    /// A key that lacks the scopes a route requires: 403 with `error="insufficient_scope"`
    /// and `scope="…"` naming them (space-separated, RFC 6750).
    pub fn insufficient_scope<S: AsRef<str>>(realm: &str, scopes: &[S]) -> Self {
        let code = Code::InsufficientScope;
        let mut rejection = Self::bare(StatusCode::FORBIDDEN, code.as_str(), code.message());
        rejection.authenticate(realm, Some("insufficient_scope"), Some(scopes));
        rejection
    }

    /// The verifier could not decide: 503 `VERIFICATION_UNAVAILABLE`, `Retry-After: 1`.
    pub fn unavailable() -> Self {
        let mut rejection = Self::bare(
            StatusCode::SERVICE_UNAVAILABLE,
            VERIFICATION_UNAVAILABLE,
            "the API key could not be verified now; try again",
        );
        rejection.headers.insert(header::RETRY_AFTER, HeaderValue::from(1_u64));
        rejection
    }

    fn bare(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self { status, code, message, headers: HeaderMap::new(), body: None }
    }

    /// Sets `WWW-Authenticate: Bearer realm="…"[, error="…"][, scope="…"]`.
    fn authenticate<S: AsRef<str>>(&mut self, realm: &str, error: Option<&str>, scopes: Option<&[S]>) {
        let mut value = format!("Bearer realm=\"{}\"", quoted(realm));
        if let Some(error) = error {
            value.push_str(&format!(", error=\"{error}\""));
        }
        if let Some(scopes) = scopes.filter(|s| !s.is_empty()) {
            let list: Vec<String> = scopes.iter().map(|s| quoted(s.as_ref())).collect();
            value.push_str(&format!(", scope=\"{}\"", list.join(" ")));
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code: a verification code (`REVOKED`, `RATE_LIMITED`, ...),
    /// [`MISSING_KEY`] or [`VERIFICATION_UNAVAILABLE`].
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A sentence for people (never the key).
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The headers the answer carries (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The same refusal, with its body made by `body`.
    pub(crate) fn with_body(mut self, body: Option<Arc<ErrorBodyFn>>) -> Self {
        self.body = body;
        self
    }
}

/// The default JSON body of an error: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

/// The default body of a refusal: `{"error": {"code": "...", "message": "..."}}`.
///
/// ```
/// let response = keypal_axum::json_error_body(&keypal_axum::Rejection::unavailable());
/// assert_eq!(response.headers()["content-type"], "application/json");
/// ```
pub fn json_error_body(rejection: &Rejection) -> Response {
    Json(ErrorBody { error: ErrorDetail { code: rejection.code, message: rejection.message } }).into_response()
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = match &self.body {
            Some(body) => body(&self),
            None => json_error_body(&self),
        };
        *response.status_mut() = self.status;
        response.headers_mut().extend(self.headers);
        response
    }
}

/// Adds `RateLimit-Policy: "default";q=<limit>[;w=<seconds>]` and
/// `RateLimit: "default";r=<remaining>;t=<seconds until the allowance is whole>`.
pub(crate) fn rate_limit_headers(headers: &mut HeaderMap, status: &RateLimitStatus, window: Option<Duration>) {
    let policy = match window {
        Some(window) => format!("\"default\";q={};w={}", status.limit, window.as_secs()),
        None => format!("\"default\";q={}", status.limit),
    };
    let state = format!("\"default\";r={};t={}", status.remaining, whole_seconds(until(status.reset_at)));
    if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert(RATELIMIT_POLICY.clone(), policy);
        headers.insert(RATELIMIT.clone(), state);
    }
}

/// How long from now until `at` (zero when past).
fn until(at: OffsetDateTime) -> Duration {
    let left = at - OffsetDateTime::now_utc();
    left.try_into().unwrap_or(Duration::ZERO)
}

/// Whole seconds, rounded up.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A text fit for a quoted string of a header: `"` and `\` escaped, anything else
/// outside printable ASCII dropped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}
