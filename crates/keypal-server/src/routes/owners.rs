//! `/v1/owners/{owner_id}/keys`: an application's backend manages its users' own keys,
//! authenticated by the application's client secret.

use std::time::Duration;

use axum::http::StatusCode;
use keypal::{KeyId, NewKey};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::ClientApp;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OwnerKeyPath, OwnerPath};
use crate::keys::{CreatedKey, KeyView};
use crate::routes::apps::{KeyList, OWNER_KEY_RULES, check_owner, check_scopes, page_query};
use crate::routes::keys::revoke_and_strip;
use crate::schema::{Name, Scopes};

/// `POST /v1/owners/{owner_id}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnerKeyRequest {
    /// Required, trimmed, 1-100 characters.
    #[schema(value_type = Name)]
    pub name: String,
    /// Expires this many days from now (1-365).
    #[schema(minimum = 1, maximum = 365, example = 30)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub expires_in_days: Option<u32>,
    /// Granted scopes.
    #[schema(value_type = Option<Scopes>)]
    pub scopes: Option<Vec<String>>,
    /// Any JSON value (default: the application's `default_metadata`).
    #[schema(value_type = Option<Value>, example = json!({"device": "laptop"}))]
    pub metadata: Option<Value>,
}

/// Creates a key for an owner; 403 `KEY_LIMIT_REACHED` at the application's limit.
#[utoipa::path(post, path = "/v1/owners/{owner_id}/keys", operation_id = "create_owner_key", tag = "owners", params(OwnerPath), request_body = OwnerKeyRequest,
    security(("client_secret" = [])), extensions(("x-keypal-rules" = json!(crate::openapi::rules(OWNER_KEY_RULES)))),
    responses((status = 201, description = "created; the key is shown once", body = CreatedKey),
        (status = 403, description = "KEY_LIMIT_REACHED")))]
pub async fn create(
    client: ClientApp,
    ApiPath(OwnerPath { owner_id: owner }): ApiPath<OwnerPath>,
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

/// `GET /v1/owners/{owner_id}/keys` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerKeyListParams {
    /// Include revoked keys (default false).
    #[param(example = false)]
    pub include_revoked: Option<bool>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
}

/// The owner's keys, newest first: those not revoked, or every one with `include_revoked`.
#[utoipa::path(get, path = "/v1/owners/{owner_id}/keys", operation_id = "list_owner_keys", tag = "owners", params(OwnerPath, OwnerKeyListParams),
    security(("client_secret" = [])), responses((status = 200, description = "a page of the owner's keys", body = KeyList)))]
pub async fn list(
    client: ClientApp,
    ApiPath(OwnerPath { owner_id: owner }): ApiPath<OwnerPath>,
    ApiQuery(params): ApiQuery<OwnerKeyListParams>,
) -> Result<ApiJson<KeyList>, ApiError> {
    let owner = check_owner(&owner)?;
    let query = page_query(params.include_revoked, params.limit, params.cursor)?.owner_id(owner);
    let page = client.runtime.keys.list(query).await?;
    Ok(ApiJson(KeyList { keys: page.items.iter().map(KeyView::from).collect(), next_cursor: page.next_cursor }))
}

/// Revokes one of the owner's keys: 404 for an unknown key, 403 for another owner's.
#[utoipa::path(post, path = "/v1/owners/{owner_id}/keys/{key_id}/revoke", operation_id = "revoke_owner_key", tag = "owners", params(OwnerKeyPath),
    security(("client_secret" = [])),
    responses((status = 200, description = "the revoked key", body = KeyView), (status = 403, description = "FORBIDDEN"),
        (status = 409, description = "ALREADY_REVOKED")))]
pub async fn revoke(
    client: ClientApp,
    ApiPath(OwnerKeyPath { owner_id: owner, key_id }): ApiPath<OwnerKeyPath>,
) -> Result<ApiJson<KeyView>, ApiError> {
    let owner = check_owner(&owner)?;
    let id = KeyId(key_id);
    let keys = client.runtime.keys.with_context(client.caller.context(&format!("app:{}", client.runtime.app.id)));
    let record = keys.get(&id).await?;
    if record.owner_id.as_deref() != Some(owner.as_str()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", "the key belongs to another owner"));
    }
    let record = revoke_and_strip(&keys, &id).await?;
    Ok(ApiJson(KeyView::from(&record)))
}
