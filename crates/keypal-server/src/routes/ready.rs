//! `GET /readyz`: can this instance serve? The database and (when configured) Redis are
//! asked, each for at most [`CHECK_TIMEOUT`], at the same time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State as AxumState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keypal_redis::RateLimitUnavailable;
use serde::Serialize;
use utoipa::ToSchema;

use crate::extract::ApiJson;
use crate::state::State;

/// The longest any one check may take: readiness answers within it, whatever hangs.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer of `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "ready": false,
    "failed": ["redis"],
    "checks": {"database": {"status": "ok", "duration_ms": 2}, "redis": {"status": "timeout", "duration_ms": 1000}}
}))]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// The checks that did not pass, by name (`database`, `redis`).
    pub failed: Vec<String>,
    /// Every check made, by name: `database` always, `redis` when Redis is configured.
    pub checks: BTreeMap<String, Check>,
}

/// One dependency's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// How it went.
    pub status: CheckStatus,
    /// How long it took, in milliseconds (at most about 1000).
    pub duration_ms: u64,
}

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It answered.
    Ok,
    /// It answered with an error, or could not be reached (the server log says why).
    Error,
    /// No answer within the bound (1 s).
    Timeout,
}

/// Readiness: 200 when the database and (when configured) Redis answer, each within 1 s;
/// else 503 naming what failed. For load balancers and orchestrators; `/healthz` is the
/// cheap liveness answer, which touches neither.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready: every dependency answered.", body = Readiness,
            example = json!({"ready": true, "failed": [],
                "checks": {"database": {"status": "ok", "duration_ms": 2}, "redis": {"status": "ok", "duration_ms": 1}}})),
        (status = 503, description = "Not ready: `failed` names the dependencies that did not answer.", body = Readiness,
            example = json!({"ready": false, "failed": ["database"],
                "checks": {"database": {"status": "timeout", "duration_ms": 1000}}})),
    ))]
pub async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    let database = check("database", async { state.store.ping().await.map_err(|e| Failure::Error(e.to_string())) });
    let redis = async {
        let limiter = state.rate_limiter()?;
        let ping = async {
            limiter.ping().await.map_err(|e| match e {
                RateLimitUnavailable::Timeout(_) => Failure::Timeout,
                other => Failure::Error(other.to_string()),
            })
        };
        Some(check("redis", ping).await)
    };
    let (database, redis) = tokio::join!(database, redis);
    let checks: BTreeMap<String, Check> = [Some(("database", database)), redis.map(|redis| ("redis", redis))]
        .into_iter()
        .flatten()
        .map(|(name, check)| (name.to_owned(), check))
        .collect();
    let failed: Vec<String> =
        checks.iter().filter(|(_, check)| check.status != CheckStatus::Ok).map(|(name, _)| name.clone()).collect();
    let readiness = Readiness { ready: failed.is_empty(), failed, checks };
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    (status, no_store, ApiJson(readiness)).into_response()
}

/// Why a dependency did not pass.
enum Failure {
    /// It gave up waiting by itself (the Redis limiter's own deadline is shorter than 1 s).
    Timeout,
    Error(String),
}

/// Runs one check under [`CHECK_TIMEOUT`], logging why it failed.
async fn check(name: &'static str, answer: impl Future<Output = Result<(), Failure>>) -> Check {
    let started = Instant::now();
    let status = match tokio::time::timeout(CHECK_TIMEOUT, answer).await {
        Ok(Ok(())) => CheckStatus::Ok,
        Ok(Err(Failure::Error(error))) => {
            tracing::warn!(check = name, %error, "readiness: {name} answered with an error");
            CheckStatus::Error
        }
        Ok(Err(Failure::Timeout)) | Err(_) => {
            tracing::warn!(check = name, "readiness: {name} did not answer in time");
            CheckStatus::Timeout
        }
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Check { status, duration_ms }
}
