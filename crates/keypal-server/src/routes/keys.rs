//! `/v1/keys/{id}`: one key, whichever application it belongs to.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use keypal::{AuditContext, KeyId, KeyManager, KeyPatch, KeyRecord, Store};
use keypal_sql::SqlStore;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, JsonBytes, KeyPath};
use crate::keys::{CreatedKey, CreditsRequest, KeyPatchRequest, KeyView, RotateRequest};
use crate::routes::apps::{check_credits, check_scopes};
use crate::state::{AppRuntime, State};

type Shared = AxumState<Arc<State>>;

/// The longest grace period of a rotation.
const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// `{"key": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevealedKey {
    /// The full key.
    pub key: String,
}

/// The key `id` and its application (404 when either is unknown).
pub async fn find(state: &State, id: Uuid) -> Result<(KeyId, Arc<KeyRecord>, Arc<AppRuntime>), ApiError> {
    let id = KeyId(id);
    let record = state.store.get(id).await?.ok_or_else(|| ApiError::not_found("key"))?;
    let runtime = record
        .namespace
        .as_deref()
        .and_then(|ns| state.app_by_text(ns).ok())
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok((id, record, runtime))
}

fn manager(runtime: &AppRuntime, context: AuditContext) -> KeyManager<Arc<SqlStore>> {
    runtime.keys.with_context(context)
}

/// One key.
#[utoipa::path(get, path = "/v1/keys/{id}", operation_id = "get_key", tag = "keys", params(KeyPath), security(("admin_session" = [])),
    responses((status = 200, description = "the key", body = KeyView)))]
pub async fn get(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
) -> Result<ApiJson<KeyView>, ApiError> {
    let (_, record, _) = find(&state, id).await?;
    Ok(ApiJson(KeyView::from(&*record)))
}

/// Changes a key's name, metadata, scopes, enabled flag, expiry, tier, credits or refill.
#[utoipa::path(patch, path = "/v1/keys/{id}", operation_id = "update_key", tag = "keys", params(KeyPath), request_body = KeyPatchRequest,
    extensions(("x-keypal-rules" = json!(crate::openapi::rules(crate::routes::apps::KEY_RULES)))),
    security(("admin_session" = [])),
    responses((status = 200, description = "the changed key", body = KeyView), (status = 409, description = "ALREADY_REVOKED")))]
pub async fn update(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
    ApiJson(request): ApiJson<KeyPatchRequest>,
) -> Result<ApiJson<KeyView>, ApiError> {
    Ok(ApiJson(KeyView::from(&update_key(&state, admin.context(), id, request).await?)))
}

/// Changes the key `id` for `context` (the handler of `PATCH /v1/keys/{id}` and
/// `keypal keys update`).
pub async fn update_key(
    state: &State,
    context: AuditContext,
    id: Uuid,
    request: KeyPatchRequest,
) -> Result<KeyRecord, ApiError> {
    let (id, record, runtime) = find(state, id).await?;
    // A revoked key stays as it was for the audit log (revocation removed its metadata).
    if record.is_revoked_at(OffsetDateTime::now_utc()) {
        return Err(keypal::Error::AlreadyRevoked(id).into());
    }
    let mut patch = KeyPatch::new();
    if let Some(name) = request.name {
        patch.name = Some(name.as_deref().map(crate::apps::check_name).transpose()?);
    }
    if let Some(Some(metadata)) = &request.metadata {
        crate::apps::check_metadata("metadata", metadata)?;
    }
    patch.metadata = request.metadata;
    if let Some(scopes) = request.scopes {
        patch.scopes = Some(check_scopes(scopes)?);
    }
    patch.expires_at = request.expires_at;
    patch.tier = request.tier;
    let credits_changed = request.remaining.is_some();
    if let Some(remaining) = request.remaining {
        patch.remaining = Some(remaining.map(check_credits).transpose()?);
    }
    if let Some(refill) = request.refill {
        patch.refill = Some(refill.map(|r| r.parse("refill")).transpose()?);
    }
    let keys = manager(&runtime, context);
    let mut record = KeyRecord::clone(&record);
    if !patch.is_empty() {
        record = keys.update(&id, patch).await?;
    }
    match request.enabled {
        Some(true) if !record.enabled => record = keys.enable(&id).await?,
        Some(false) if record.enabled => record = keys.disable(&id).await?,
        _ => {}
    }
    if credits_changed {
        crate::webhooks::scan::fire_credits(state, &runtime.app, &record).await;
    }
    Ok(record)
}

/// Sets, increments or decrements a key's credits in one atomic step (audited as
/// `credits_changed`), after any refill due now. A decrement stops at zero; an
/// increment or decrement of a key with unlimited credits is refused.
#[utoipa::path(post, path = "/v1/keys/{id}/credits", operation_id = "change_key_credits", tag = "keys", params(KeyPath),
    request_body = CreditsRequest,
    extensions(("x-keypal-rules" = json!(crate::openapi::rules(CREDITS_RULES)))),
    security(("admin_session" = [])),
    responses((status = 200, description = "the key with its new credits", body = KeyView),
        (status = 409, description = "ALREADY_REVOKED")))]
pub async fn credits(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
    ApiJson(request): ApiJson<CreditsRequest>,
) -> Result<ApiJson<KeyView>, ApiError> {
    Ok(ApiJson(KeyView::from(&change_credits(&state, admin.context(), id, &request).await?)))
}

/// The rules of a change of credits that the schema cannot say.
pub const CREDITS_RULES: &[(&str, &str)] = &[
    ("op", "`increment` and `decrement` only for a key with credits (not unlimited)"),
    ("amount", "an increment leaves at most 9223372036854775807 credits"),
];

/// Changes the credits of the key `id` for `context` (the handler of
/// `POST /v1/keys/{id}/credits` and `keypal keys credits`).
pub async fn change_credits(
    state: &State,
    context: AuditContext,
    id: Uuid,
    request: &CreditsRequest,
) -> Result<KeyRecord, ApiError> {
    let (id, record, runtime) = find(state, id).await?;
    if record.is_revoked_at(OffsetDateTime::now_utc()) {
        return Err(keypal::Error::AlreadyRevoked(id).into());
    }
    let record = manager(&runtime, context).adjust_credits(&id, request.op()).await?;
    crate::webhooks::scan::fire_credits(state, &runtime.app, &record).await;
    Ok(record)
}

/// Replaces a key with a new one (same owner, scopes, tier, metadata); the old key stops
/// working at once, or after `grace_seconds`.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", operation_id = "rotate_key", tag = "keys", params(KeyPath),
    request_body(content = Option<RotateRequest>, description = "optional: no body, or `null`, is `{}`"),
    security(("admin_session" = [])),
    responses((status = 200, description = "the new key, shown once, and its record", body = CreatedKey),
        (status = 409, description = "ALREADY_REVOKED")))]
pub async fn rotate(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
    body: JsonBytes,
) -> Result<ApiJson<CreatedKey>, ApiError> {
    let request: RotateRequest = body.optional()?;
    Ok(ApiJson(rotate_key(&state, admin.context(), id, request).await?))
}

/// Replaces the key `id` for `context` (the handler of `POST /v1/keys/{id}/rotate` and
/// `keypal keys rotate`); answers the new key once.
pub async fn rotate_key(
    state: &State,
    context: AuditContext,
    id: Uuid,
    request: RotateRequest,
) -> Result<CreatedKey, ApiError> {
    let grace = Duration::from_secs(request.grace_seconds.unwrap_or(0));
    if grace > MAX_GRACE {
        return Err(ApiError::invalid("grace_seconds", "must be at most 2592000 (30 days)"));
    }
    let (id, _, runtime) = find(state, id).await?;
    let rotated = manager(&runtime, context).rotate(&id, grace).await?;
    Ok(CreatedKey { key: rotated.key.expose().to_owned(), record: (&rotated.record).into() })
}

/// Revokes a key and removes its metadata; the record stays for the audit log.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", operation_id = "revoke_key", tag = "keys", params(KeyPath), security(("admin_session" = [])),
    responses((status = 200, description = "the revoked key", body = KeyView), (status = 409, description = "ALREADY_REVOKED")))]
pub async fn revoke(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
) -> Result<ApiJson<KeyView>, ApiError> {
    Ok(ApiJson(KeyView::from(&revoke_key(&state, admin.context(), id).await?)))
}

/// Revokes the key `id` for `context` (the handler of `POST /v1/keys/{id}/revoke` and
/// `keypal keys revoke`).
pub async fn revoke_key(state: &State, context: AuditContext, id: Uuid) -> Result<KeyRecord, ApiError> {
    let (id, _, runtime) = find(state, id).await?;
    revoke_and_strip(&manager(&runtime, context), &id).await
}

/// Revokes a key (refused before returning, on this node) and then drops its metadata.
pub async fn revoke_and_strip(keys: &KeyManager<Arc<SqlStore>>, id: &KeyId) -> Result<KeyRecord, ApiError> {
    let revoked = keys.revoke(id).await?;
    if revoked.metadata.is_none() {
        return Ok(revoked);
    }
    Ok(keys.update(id, KeyPatch::new().metadata(None)).await?)
}

/// Deletes a key for good (the audit log keeps the deletion).
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "delete_key", tag = "keys", params(KeyPath), security(("admin_session" = [])),
    responses((status = 204, description = "deleted")))]
pub async fn delete(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
) -> Result<StatusCode, ApiError> {
    let (id, _, runtime) = find(&state, id).await?;
    manager(&runtime, admin.context()).delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The full key, for applications created with `recoverable: true`.
#[utoipa::path(post, path = "/v1/keys/{id}/reveal", operation_id = "reveal_key", tag = "keys", params(KeyPath), security(("admin_session" = [])),
    responses((status = 200, description = "the full key", body = RevealedKey), (status = 409, description = "NOT_RECOVERABLE")))]
pub async fn reveal(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(KeyPath { id }): ApiPath<KeyPath>,
) -> Result<ApiJson<RevealedKey>, ApiError> {
    let (id, record, runtime) = find(&state, id).await?;
    let not_recoverable =
        || ApiError::new(StatusCode::CONFLICT, "NOT_RECOVERABLE", "this key was not kept encrypted; it was shown once");
    let sealed = record.encrypted_key.as_deref().filter(|_| runtime.app.recoverable).ok_or_else(not_recoverable)?;
    let key = state.secrets.open(&id.to_string(), sealed).map_err(|_| not_recoverable())?;
    Ok(ApiJson(RevealedKey { key: key.to_string() }))
}
