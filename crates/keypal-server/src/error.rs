//! Every non-2xx answer: `{"error": {"code", "message", "field"?}}` with a stable code.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An API error: an HTTP status, a stable machine-readable code, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code, like `INVALID_INPUT`.
    pub code: &'static str,
    /// A sentence for people (never a secret).
    pub message: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
    /// Seconds to wait before retrying (429, 503 `HASHING_BUSY`).
    pub retry_after: Option<u64>,
}

/// The JSON shape of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `INVALID_INPUT`, `INVALID_JSON`, `UNAUTHENTICATED`, `NOT_FOUND`, ...
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
    }

    /// 400 `INVALID_INPUT` about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Self { field: Some(field), ..Self::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message) }
    }

    /// 401 `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such {what}"))
    }

    /// 409 `SERVICE_KEY_PINNED`: the service key comes from `KEYPAL_SERVICE_KEY` (or the
    /// config file) and every start applies it again, so it cannot be rotated here.
    pub fn service_key_pinned() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "SERVICE_KEY_PINNED",
            "the service key is set by KEYPAL_SERVICE_KEY (or service_key in the config file) and every start \
             applies it again; to change it, change the variable on every instance and restart them",
        )
    }

    /// 503 `STORAGE_UNAVAILABLE`: the database failed (logged, never shown).
    pub fn storage(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "storage failed");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "STORAGE_UNAVAILABLE", "the database is unavailable; try again")
    }

    /// 500 `INTERNAL`: a bug or a broken environment (logged, never shown).
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, field: self.field } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<keypal::Error> for ApiError {
    fn from(error: keypal::Error) -> Self {
        use keypal::Error as E;
        match &error {
            E::NotFound(_) => ApiError::not_found("key"),
            E::AlreadyRevoked(_) => {
                ApiError::new(StatusCode::CONFLICT, "ALREADY_REVOKED", "the key is already revoked")
            }
            E::LimitReached { limit } => ApiError::new(
                StatusCode::FORBIDDEN,
                "KEY_LIMIT_REACHED",
                format!("the owner already has the maximum of {limit} active keys"),
            ),
            E::AlreadyExists { .. } => ApiError::new(StatusCode::CONFLICT, "ALREADY_EXISTS", error.to_string()),
            E::Invalid { field, message } => ApiError::invalid(field.clone(), message.clone()),
            // A hash to import that is not what it claims, or a name of its algorithm,
            // encoding or coverage keypal does not know: the request's `hash` is at fault.
            E::Hash(hash) => ApiError::invalid(hash_field(hash), hash.to_string()),
            E::Config(config) => match config.problems().first() {
                Some(problem) => ApiError::invalid(problem.path.clone(), problem.message.clone()),
                None => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", config.to_string()),
            },
            E::Store(e) => ApiError::storage(e),
            E::RateLimiter(e) => {
                tracing::error!(error = %e, "the shared rate limiter is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "RATE_LIMITER_UNAVAILABLE",
                    "the rate limiter is unavailable; try again",
                )
            }
            E::Offload(keypal::OffloadError::Busy) => {
                let mut busy = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "HASHING_BUSY",
                    "every hashing thread is busy; try again in a second",
                );
                busy.retry_after = Some(1);
                busy
            }
            E::Offload(e) => {
                tracing::error!(error = %e, "a slow hash could not run");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.code(), "internal error")
            }
            _ => ApiError::internal(&error),
        }
    }
}

impl From<crate::tokens::TokenError> for ApiError {
    fn from(error: crate::tokens::TokenError) -> Self {
        use crate::tokens::TokenError as E;
        match &error {
            E::Invalid { field, message } => ApiError::invalid(*field, *message),
            E::NameTaken(_) => ApiError::new(StatusCode::CONFLICT, "TOKEN_NAME_TAKEN", error.to_string()),
            E::NotFound => ApiError::not_found("management token"),
            E::Unknown => ApiError::unauthenticated(error.to_string()),
            E::Expired => ApiError::new(StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED", error.to_string()),
            E::Store(e) => ApiError::storage(e),
            _ => ApiError::internal(&error),
        }
    }
}

/// The request field a hash error is about: `hash.algorithm`, `hash.encoding` or
/// `hash.covers` for a name keypal does not know, else `hash`.
fn hash_field(error: &keypal::hash::HashError) -> &'static str {
    match error {
        keypal::hash::HashError::UnknownName { what: "hash algorithm", .. } => "hash.algorithm",
        keypal::hash::HashError::UnknownName { what: "digest encoding", .. } => "hash.encoding",
        keypal::hash::HashError::UnknownName { what: "hash coverage", .. } => "hash.covers",
        _ => "hash",
    }
}

impl From<keypal::hash::HashError> for ApiError {
    fn from(error: keypal::hash::HashError) -> Self {
        keypal::Error::Hash(error).into()
    }
}

impl From<keypal::StoreError> for ApiError {
    fn from(error: keypal::StoreError) -> Self {
        ApiError::storage(&error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send a JSON body with Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("the body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("the body does not fit: {}", e.body_text()),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the body is too large")
            }
            other => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the body is too large")
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", "the body could not be read")
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let PathRejection::FailedToDeserializePathParams(error) = &rejection else {
            return ApiError::internal(&rejection.body_text());
        };
        match error.kind() {
            ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => {
                ApiError::invalid(key.clone(), "must be a UUID, like 0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d")
            }
            ErrorKind::InvalidUtf8InPathParam { key } => ApiError::invalid(key.clone(), "must be UTF-8"),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", rejection.body_text()),
        }
    }
}
