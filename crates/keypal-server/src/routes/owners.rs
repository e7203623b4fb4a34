//! `/v1/owners/{owner_id}/keys`: an application's backend manages its users' own keys,
//! authenticated by the application's client secret.

use std::time::Duration;

use axum::http::StatusCode;
use keypal::{KeyId, ListQuery, NewKey};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::ClientApp;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::keys::{CreatedKey, KeyView};
use crate::routes::apps::{KeyList, check_owner, check_scopes};
use crate::routes::keys::revoke_and_strip;

/// `POST /v1/owners/{owner_id}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerKeyRequest {
    /// Required, trimmed, 1-100 characters.
    pub name: String,
    /// Expires this many days from now (1-365).
    pub expires_in_days: Option<u32>,
    /// Granted scopes.
    pub scopes: Option<Vec<String>>,
    /// Any JSON value (default: the application's `default_metadata`).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Creates a key for an owner; 403 `KEY_LIMIT_REACHED` at the application's limit.
#[utoipa::path(post, path = "/v1/owners/{owner_id}/keys", tag = "owners", request_body = OwnerKeyRequest,
    security(("client_secret" = [])),
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "KEY_LIMIT_REACHED", body = ErrorBody)))]
pub async fn create(
    client: ClientApp,
    ApiPath(owner): ApiPath<String>,
    ApiJson(request): ApiJson<OwnerKeyRequest>,
) -> Result<(StatusCode, ApiJson<CreatedKey>), ApiError> {
    let app = &client.runtime.app;
    let mut new = NewKey::new().owner_id(check_owner(&owner)?).name(crate::apps::check_name(&request.name)?);
    if let Some(days) = request.expires_in_days {
        if !(1..=365).contains(&days) {
            return Err(ApiError::invalid("expires_in_days", "must be an integer from 1 to 365"));
        }
        new = new.expires_in(Duration::from_secs(u64::from(days) * 86_400));
    }
    if let Some(scopes) = request.scopes {
        new = new.scopes(check_scopes(scopes)?);
    }
    if let Some(metadata) = &request.metadata {
        crate::apps::check_metadata("metadata", metadata)?;
    }
    new.metadata = request.metadata.or_else(|| app.default_metadata.clone());
    let keys = client.runtime.keys.with_context(client.caller.context(&format!("app:{}", app.id)));
    let created = keys.create(new).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedKey { key: created.key.expose().to_owned(), record: (&created.record).into() }),
    ))
}

/// The owner's keys (active ones), newest first.
#[utoipa::path(get, path = "/v1/owners/{owner_id}/keys", tag = "owners", security(("client_secret" = [])),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody)))]
pub async fn list(client: ClientApp, ApiPath(owner): ApiPath<String>) -> Result<ApiJson<KeyList>, ApiError> {
    let owner = check_owner(&owner)?;
    let page = client.runtime.keys.list(ListQuery::new().owner_id(owner).limit(1000)).await?;
    Ok(ApiJson(KeyList { keys: page.items.iter().map(KeyView::from).collect(), next_cursor: page.next_cursor }))
}

/// Revokes one of the owner's keys: 404 for an unknown key, 403 for another owner's.
#[utoipa::path(post, path = "/v1/owners/{owner_id}/keys/{key_id}/revoke", tag = "owners", security(("client_secret" = [])),
    responses((status = 200, body = KeyView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "ALREADY_REVOKED", body = ErrorBody)))]
pub async fn revoke(
    client: ClientApp,
    ApiPath((owner, key_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<KeyView>, ApiError> {
    let id: KeyId = key_id.parse().map_err(|_| ApiError::not_found("key"))?;
    let keys = client.runtime.keys.with_context(client.caller.context(&format!("app:{}", client.runtime.app.id)));
    let record = keys.get(&id).await?;
    if record.owner_id.as_deref() != Some(owner.as_str()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "the key belongs to another owner"));
    }
    let record = revoke_and_strip(&keys, &id).await?;
    Ok(ApiJson(KeyView::from(&record)))
}
