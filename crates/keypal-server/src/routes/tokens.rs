//! `/v1/tokens`: the management tokens scripts send instead of the admin session.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, TokenPath};
use crate::state::State;
use crate::tokens::{CreatedToken, NewToken, TokenList, Tokens};

type Shared = AxumState<Arc<State>>;

fn tokens(state: &State) -> Tokens<'_> {
    Tokens::new(&state.store, &state.secrets)
}

/// Every management token not revoked (expired ones included), oldest first; never a token itself.
#[utoipa::path(get, path = "/v1/tokens", operation_id = "list_tokens", tag = "tokens", security(("admin_session" = [])),
    responses((status = 200, description = "every token, oldest first", body = TokenList)))]
pub async fn list(_: Admin, AxumState(state): Shared) -> Result<ApiJson<TokenList>, ApiError> {
    Ok(ApiJson(TokenList { tokens: tokens(&state).list().await? }))
}

/// Makes a management token; answers it once.
#[utoipa::path(post, path = "/v1/tokens", operation_id = "create_token", tag = "tokens", request_body = NewToken,
    security(("admin_session" = [])),
    responses((status = 201, description = "made; the token is shown once", body = CreatedToken),
        (status = 409, description = "TOKEN_NAME_TAKEN")))]
pub async fn create(
    admin: Admin,
    AxumState(state): Shared,
    ApiJson(request): ApiJson<NewToken>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    let created = tokens(&state).create(&request, admin.context()).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// Revokes a management token: every instance refuses it at once, and its name is free again.
#[utoipa::path(delete, path = "/v1/tokens/{id}", operation_id = "revoke_token", tag = "tokens", params(TokenPath),
    security(("admin_session" = [])),
    responses((status = 204, description = "revoked")))]
pub async fn revoke(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(TokenPath { id }): ApiPath<TokenPath>,
) -> Result<StatusCode, ApiError> {
    tokens(&state).revoke(id, admin.context()).await?;
    Ok(StatusCode::NO_CONTENT)
}
