//! `POST /v1/verify`: is this key good, for this application, with these scopes?

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use keypal::{Code, InvalidTags, Tags, VerifyOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Service;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::State;

/// The longest key looked at (longer ones are `MALFORMED` without parsing).
const MAX_KEY_LENGTH: usize = 512;

/// `POST /v1/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key the end client presented.
    pub key: String,
    /// The client secret of the application the key should belong to.
    pub client_secret: String,
    /// Scopes the key must grant.
    pub scopes: Option<Vec<String>>,
    /// Credits to spend (default 1).
    #[serde(default, deserialize_with = "crate::number::option")]
    pub cost: Option<u64>,
    /// What the request is for (an endpoint, a region, a plan): counted with the
    /// verification in usage analytics. At most 10, each 1-64 characters without
    /// control characters; duplicates count once.
    #[schema(value_type = Option<crate::schema::Tags>)]
    pub tags: Option<RequestTags>,
}

/// A request's list of tags as read, valid or not ([`Tags::deserialize_checked`]):
/// input that is not a list of strings is a JSON error, an invalid tag a 400 naming it.
#[derive(Debug)]
pub struct RequestTags(Result<Tags, InvalidTags>);

impl<'de> Deserialize<'de> for RequestTags {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Tags::deserialize_checked(deserializer).map(RequestTags)
    }
}

/// The request's tags, checked (400 `INVALID_INPUT` naming the tag at fault).
pub fn check_tags(tags: Option<RequestTags>) -> Result<Tags, ApiError> {
    let Some(RequestTags(tags)) = tags else { return Ok(Tags::none()) };
    tags.map_err(|e| match e {
        InvalidTags::TooMany { .. } => {
            ApiError::invalid("tags", format!("at most {} tags are allowed", Tags::MAX_COUNT))
        }
        InvalidTags::Invalid { index } => ApiError::invalid(
            format!("tags[{index}]"),
            format!("must be 1 to {} characters without control characters", Tags::MAX_LENGTH),
        ),
        other => ApiError::invalid("tags", other.to_string()),
    })
}

/// The verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether the key is good.
    pub valid: bool,
    /// `VALID`, `MALFORMED`, `NOT_FOUND`, `REVOKED`, `DISABLED`, `EXPIRED`, `INSUFFICIENT_SCOPE`, `RATE_LIMITED`, `USAGE_EXCEEDED`.
    pub code: &'static str,
    /// Why, for people (absent when valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// The application.
    pub app: AppRef,
    /// The key, when one was found.
    pub key: Option<VerifiedKey>,
    /// The key's rate limit, when it has one.
    pub ratelimit: Option<RateLimitView>,
    /// Credits left; `null` is unlimited.
    pub remaining: Option<u64>,
    /// When the key's credits are next set back to its refill's amount (only for a key
    /// with a refill whose credits were checked: `VALID` or `USAGE_EXCEEDED`).
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refill_at: Option<OffsetDateTime>,
}

/// An application, briefly.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppRef {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// What the caller may know about a found key.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedKey {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: Option<String>,
    /// Who owns it.
    pub owner_id: Option<String>,
    /// Its tier.
    pub tier: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Its metadata.
    #[schema(value_type = Option<Value>)]
    pub metadata: Option<Value>,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A rate limit's state after this request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    /// Requests per period.
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// When the allowance is whole again.
    #[serde(with = "time::serde::rfc3339")]
    pub reset_at: OffsetDateTime,
    /// The limit's period in seconds (`3600` for `100/hour`).
    pub window_seconds: Option<u64>,
    /// For a `RATE_LIMITED` key: whole seconds until one more request is allowed (the
    /// `Retry-After` to give its client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Verifies a key for an application. Every verdict is a 200 with a `code`; only a bad
/// service key (401) or client secret (403) is an error, besides a service that cannot
/// answer now (503: the database, the shared rate limiter, or every hashing thread busy).
#[utoipa::path(post, path = "/v1/verify", operation_id = "verify", tag = "verification", request_body = VerifyRequest,
    security(("service_key" = [])),
    responses((status = 200, description = "the verdict: `valid` and its `code`", body = VerifyResponse),
        (status = 400, description = "INVALID_INPUT: too many tags, or a tag too long, empty or with a control character"),
        (status = 403, description = "INVALID_CLIENT_SECRET"),
        (status = 503, description = "RATE_LIMITER_UNAVAILABLE, HASHING_BUSY (with Retry-After)")))]
pub async fn verify(
    _: Service,
    AxumState(state): AxumState<Arc<State>>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<ApiJson<VerifyResponse>, ApiError> {
    let started = Instant::now();
    let tags = check_tags(request.tags)?;
    let Some(runtime) = state.app_for_secret(&request.client_secret).await? else {
        state.metrics.reject_caller();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "INVALID_CLIENT_SECRET",
            "the client secret belongs to no application",
        ));
    };
    let mut options = VerifyOptions::new().scopes(request.scopes.unwrap_or_default()).tags(tags);
    if let Some(cost) = request.cost {
        options = options.cost(cost);
    }
    let key = if request.key.len() > MAX_KEY_LENGTH { "" } else { request.key.as_str() };
    let verification = runtime.keys.verify_with(key, &options).await?;
    let mut code = verification.code();
    // A key in another application's format is a key of another application: not found here.
    if code == Code::Malformed
        && state.apps().iter().any(|other| other.app.id != runtime.app.id && other.keys.accepts(key))
    {
        code = Code::NotFound;
    }
    state.metrics.observe(code, started.elapsed());
    if state.webhooks.any() {
        let window = verification.record().and_then(|r| runtime.keys.rate_limit_of(r)).map(|l| l.period);
        state.webhooks.signals.observe(&runtime.app, &verification, window);
    }
    let response = VerifyResponse {
        valid: code == Code::Valid,
        code: code.as_str(),
        message: (code != Code::Valid).then(|| code.message()),
        app: AppRef { id: runtime.app.id, name: runtime.app.name.clone() },
        key: verification.record().map(|r| VerifiedKey {
            id: r.id.0,
            name: r.name.clone(),
            owner_id: r.owner_id.clone(),
            tier: r.tier.clone(),
            scopes: r.scopes.clone(),
            metadata: r.metadata.clone(),
            expires_at: r.expires_at,
        }),
        ratelimit: verification.rate_limit().map(|s| RateLimitView {
            limit: s.limit,
            remaining: s.remaining,
            reset_at: s.reset_at,
            window_seconds: verification
                .record()
                .and_then(|r| runtime.keys.rate_limit_of(r))
                .map(|l| l.period.as_secs()),
            retry_after_seconds: s.retry_after.map(|wait| wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        }),
        remaining: verification.remaining(),
        refill_at: verification.refill_at(),
    };
    Ok(ApiJson(response))
}
