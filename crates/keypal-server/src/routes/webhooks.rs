//! `/v1/webhooks`: endpoints told about keys and applications (admin session or
//! management token). The rules are in [`crate::webhooks`]; the panel calls these.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, example_id};
use crate::state::State;
use crate::webhooks::{
    self, CreatedWebhook, DeliveryList, DeliveryView, NewWebhook, WebhookList, WebhookPatch, WebhookSecret, WebhookView,
};

type Shared = AxumState<Arc<State>>;

/// The rules of a webhook's fields that its schema cannot say.
const WEBHOOK_RULES: &[(&str, &str)] = &[
    (
        "url",
        "an http or https URL without credentials; unless the server runs with --webhooks-allow-private, \
        not a loopback, private, link-local or unique-local address (nor localhost)",
    ),
    ("app_id", "names an existing application"),
    ("description", "no control characters but newlines and tabs"),
];

/// The path of `/v1/webhooks/{id}...`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookPath {
    /// The webhook's id.
    #[param(example = example_id)]
    pub id: Uuid,
}

/// The path of `/v1/webhooks/{id}/deliveries/{delivery_id}...`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeliveryPath {
    /// The webhook's id.
    #[param(example = example_id)]
    pub id: Uuid,
    /// The delivery's id.
    #[param(example = example_id)]
    pub delivery_id: Uuid,
}

impl WebhookPath {
    /// The path of the webhook `id` names, for the admin panel (an id that is not a UUID names none).
    pub fn from_panel(id: &str) -> ApiPath<Self> {
        ApiPath(WebhookPath { id: id.parse().unwrap_or(Uuid::nil()) })
    }
}

/// `GET /v1/webhooks/{id}/deliveries` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
}

/// Every webhook, oldest first; never a secret.
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    security(("admin_session" = [])),
    responses((status = 200, description = "every webhook, oldest first", body = WebhookList)))]
pub async fn list(_: Admin, AxumState(state): Shared) -> Result<ApiJson<WebhookList>, ApiError> {
    let webhooks = webhooks::all(&state).await?.iter().map(webhooks::Webhook::view).collect();
    Ok(ApiJson(WebhookList { webhooks }))
}

/// Makes a webhook; answers its signing secret (`whsec_…`) once.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", request_body = NewWebhook,
    security(("admin_session" = [])), extensions(("x-keypal-rules" = json!(crate::openapi::rules(WEBHOOK_RULES)))),
    responses((status = 201, description = "made; the secret is shown once", body = CreatedWebhook),
        (status = 403, description = "WEBHOOK_LIMIT_REACHED")))]
pub async fn create(
    admin: Admin,
    AxumState(state): Shared,
    ApiJson(request): ApiJson<NewWebhook>,
) -> Result<(StatusCode, ApiJson<CreatedWebhook>), ApiError> {
    let created = webhooks::create(&state, request, admin.context()).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// A webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks", params(WebhookPath),
    security(("admin_session" = [])),
    responses((status = 200, description = "the webhook", body = WebhookView), (status = 404, description = "NOT_FOUND")))]
pub async fn get(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
) -> Result<ApiJson<WebhookView>, ApiError> {
    Ok(ApiJson(webhooks::find(&state, id).await?.view()))
}

/// Changes a webhook: its URL, events, application, description, or whether it is
/// enabled (`true` enables one disabled after failing).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", operation_id = "update_webhook", tag = "webhooks", params(WebhookPath),
    request_body = WebhookPatch, security(("admin_session" = [])),
    extensions(("x-keypal-rules" = json!(crate::openapi::rules(WEBHOOK_RULES)))),
    responses((status = 200, description = "changed", body = WebhookView), (status = 404, description = "NOT_FOUND")))]
pub async fn update(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
    ApiJson(patch): ApiJson<WebhookPatch>,
) -> Result<ApiJson<WebhookView>, ApiError> {
    Ok(ApiJson(webhooks::update(&state, id, patch, admin.context()).await?))
}

/// Deletes a webhook and its deliveries.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks", params(WebhookPath),
    security(("admin_session" = [])),
    responses((status = 204, description = "deleted"), (status = 404, description = "NOT_FOUND")))]
pub async fn delete(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
) -> Result<StatusCode, ApiError> {
    webhooks::delete(&state, id, admin.context()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces a webhook's signing secret; answers the new one once (the old one stops
/// signing at once).
#[utoipa::path(post, path = "/v1/webhooks/{id}/secret", operation_id = "rotate_webhook_secret", tag = "webhooks",
    params(WebhookPath), security(("admin_session" = [])),
    responses((status = 200, description = "the new secret, shown once", body = WebhookSecret),
        (status = 404, description = "NOT_FOUND")))]
pub async fn rotate_secret(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
) -> Result<ApiJson<WebhookSecret>, ApiError> {
    Ok(ApiJson(webhooks::rotate_secret(&state, id, admin.context()).await?))
}

/// Sends a `webhook.test` event to this webhook (within a second or two; its delivery
/// is listed with the others).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", operation_id = "test_webhook", tag = "webhooks",
    params(WebhookPath), security(("admin_session" = [])),
    responses((status = 202, description = "queued", body = DeliveryView), (status = 404, description = "NOT_FOUND")))]
pub async fn test(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
) -> Result<(StatusCode, ApiJson<DeliveryView>), ApiError> {
    Ok((StatusCode::ACCEPTED, ApiJson(webhooks::send_test(&state, id).await?)))
}

/// A webhook's deliveries, newest first: status, attempts, the last answer's status,
/// time and first bytes.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    params(WebhookPath, DeliveryParams), security(("admin_session" = [])),
    responses((status = 200, description = "a page of deliveries", body = DeliveryList),
        (status = 404, description = "NOT_FOUND")))]
pub async fn deliveries(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(WebhookPath { id }): ApiPath<WebhookPath>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<ApiJson<DeliveryList>, ApiError> {
    let limit = params.limit.map(crate::routes::apps::check_limit).transpose()?.unwrap_or(100);
    Ok(ApiJson(webhooks::deliveries(&state, id, params.cursor, limit).await?))
}

/// Sends a delivery again now (the same `webhook-id` and body, signed anew), whatever its state.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", operation_id = "retry_webhook_delivery",
    tag = "webhooks", params(DeliveryPath), security(("admin_session" = [])),
    responses((status = 202, description = "due now", body = DeliveryView), (status = 404, description = "NOT_FOUND")))]
pub async fn retry(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(DeliveryPath { id, delivery_id }): ApiPath<DeliveryPath>,
) -> Result<(StatusCode, ApiJson<DeliveryView>), ApiError> {
    Ok((StatusCode::ACCEPTED, ApiJson(webhooks::retry(&state, id, delivery_id).await?)))
}
