//! `/v1/apps`: applications, their client secrets, and their keys.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use keypal::{Action, AuditContext, Event, Invalidation, ListQuery, NewKey, RateLimit, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::apps::{self, App, AppPatch, AppView, NewApp};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, AppPath};
use crate::keys::{CreatedKey, KeyView, NewKeyRequest};
use crate::openapi::rules;
use crate::schema::OwnerId;
use crate::secrets;
use crate::state::{AppRuntime, State};
use keypal_sql::{NewObject, ObjectRef};

type Shared = AxumState<Arc<State>>;

/// `{"apps": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppList {
    /// Every application, oldest first.
    pub apps: Vec<AppView>,
}

/// `{"app": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppBody {
    /// The application.
    pub app: AppView,
}

/// A new application and its client secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApp {
    /// The application.
    pub app: AppView,
    /// `cs-...`: shown once; keypal keeps only a keyed digest.
    pub client_secret: String,
}

/// A new client secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientSecret {
    /// `cs-...`.
    pub client_secret: String,
}

/// What deleting an application did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedApp {
    /// Keys revoked with it.
    pub revoked_keys: u64,
}

/// A page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<Uuid>,
}

/// The rules of an application's settings that the document's schemas cannot say (they
/// depend on other fields), by field: the `x-keypal-rules` of the operations that take them.
/// A value that breaks one is refused with 400 `INVALID_INPUT` naming the field.
pub const APP_RULES: &[(&str, &str)] = &[
    ("template", "one {secret}, at most one {tier}, {id} and {checksum}, and {checksum} last (docs/CORE.md)"),
    ("legacy_templates", "each one a template as `template` is; none the current template, none twice"),
    ("tiers", "tier names are 1 to 64 characters without control characters"),
    ("default_tier", "one of `tiers`; needed when the template has {tier}"),
    ("bcrypt_cost", "only with `hash: \"bcrypt\"`"),
    ("default_metadata", NO_NUL),
];

/// The rule of metadata that a JSON schema cannot say.
const NO_NUL: &str = "no NUL character (\\u0000) in any string or key inside (PostgreSQL's jsonb refuses them)";

/// The rules of a new key that the schema cannot say (they depend on the time, on other
/// fields or on the application): see [`APP_RULES`].
pub const KEY_RULES: &[(&str, &str)] = &[
    ("tier", "one of the application's tiers"),
    ("expires_at", "in the future; not with `expires_in_days`"),
    ("metadata", NO_NUL),
    (
        "refill",
        "`day` only with the `monthly` interval (1 to 31); a duration interval is whole seconds, 1 second to 100 years",
    ),
];

/// The rules of an owner's new key that the schema cannot say: see [`APP_RULES`].
pub const OWNER_KEY_RULES: &[(&str, &str)] = &[("metadata", NO_NUL)];

/// `GET /v1/apps/{id}/keys` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyListParams {
    /// Only this owner's keys.
    #[param(inline, value_type = Option<OwnerId>)]
    pub owner_id: Option<String>,
    /// Include revoked keys (default false).
    #[param(example = false)]
    pub include_revoked: Option<bool>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<Uuid>,
}

/// A list query from the parameters every list of keys takes.
pub fn page_query(
    include_revoked: Option<bool>,
    limit: Option<u32>,
    cursor: Option<Uuid>,
) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery::new().include_revoked(include_revoked.unwrap_or(false));
    if let Some(limit) = limit {
        query = query.limit(check_limit(limit)?);
    }
    if let Some(cursor) = cursor {
        query = query.cursor(cursor);
    }
    Ok(query)
}

/// A page size: 1 to 1000.
pub fn check_limit(limit: u32) -> Result<u32, ApiError> {
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    Ok(limit)
}

/// The application `id` (404 when there is none).
pub fn find(state: &State, id: Uuid) -> Result<Arc<AppRuntime>, ApiError> {
    state.app(id).ok_or_else(|| ApiError::not_found("application"))
}

fn new_client_secret() -> Result<String, ApiError> {
    secrets::token("cs-", 40).map_err(|e| ApiError::internal(&e))
}

/// An application's view with its key counts.
pub async fn view(runtime: &AppRuntime) -> Result<AppView, ApiError> {
    let all = ListQuery::new().include_revoked(true);
    let total = runtime.keys.count(all).await?;
    let active = runtime.keys.count(ListQuery::new().active_only(true)).await?;
    Ok(runtime.app.view(active, total))
}

/// Every application.
#[utoipa::path(get, path = "/v1/apps", operation_id = "list_apps", tag = "applications", security(("admin_session" = [])),
    responses((status = 200, description = "every application, oldest first", body = AppList)))]
pub async fn list(_: Admin, AxumState(state): Shared) -> Result<ApiJson<AppList>, ApiError> {
    let mut apps = Vec::new();
    for runtime in state.apps() {
        apps.push(view(&runtime).await?);
    }
    Ok(ApiJson(AppList { apps }))
}

/// Creates an application; answers its client secret once.
#[utoipa::path(post, path = "/v1/apps", operation_id = "create_app", tag = "applications", request_body = NewApp, security(("admin_session" = [])),
    extensions(("x-keypal-rules" = json!(rules(APP_RULES)))),
    responses((status = 201, description = "created; the client secret is shown once", body = CreatedApp),
        (status = 409, description = "LABEL_TAKEN")))]
pub async fn create(
    admin: Admin,
    AxumState(state): Shared,
    ApiJson(request): ApiJson<NewApp>,
) -> Result<(StatusCode, ApiJson<CreatedApp>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_app(&state, admin.context(), request).await?)))
}

/// Creates an application for `context` (the handler of `POST /v1/apps` and
/// `keypal apps create`); answers its client secret once.
pub async fn create_app(state: &State, context: AuditContext, request: NewApp) -> Result<CreatedApp, ApiError> {
    // Every field is checked (the template, tiers and hash by building the key manager)
    // before the label's uniqueness: an invalid request is a 400 whatever its label.
    let runtime = state.runtime(App::create(request, OffsetDateTime::now_utc())?)?;
    let secret = new_client_secret()?;
    let digest = state.secrets.digest(&secret);
    let body = serde_json::to_value(&runtime.app).map_err(|e| ApiError::internal(&e))?;
    let (id, label) = (runtime.app.id.to_string(), &runtime.app.label);
    let claim = apps::label_claim(&runtime.app);
    let details = json!({ "name": runtime.app.name, "label": label });
    let event = app_event(context, Action::AppCreated, &runtime.app, Some(details));
    let objects = [
        NewObject { kind: apps::LABEL_KIND, id: label, lookup: None, body: &claim },
        NewObject { kind: apps::KIND, id: &id, lookup: Some(&digest), body: &body },
    ];
    match state.store.insert_objects(&objects, Some(&event)).await {
        // The application's id and secret digest are fresh random values: the label is what is taken.
        Err(StoreError::Duplicate) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "LABEL_TAKEN", "another application has this label"));
        }
        inserted => inserted?,
    }
    let view = runtime.app.view(0, 0);
    let id = runtime.app.id;
    state.install(runtime, Some(digest));
    state.announce(Invalidation::App(id.to_string())).await;
    Ok(CreatedApp { app: view, client_secret: secret })
}

/// One application.
#[utoipa::path(get, path = "/v1/apps/{id}", operation_id = "get_app", tag = "applications", params(AppPath), security(("admin_session" = [])),
    responses((status = 200, description = "the application", body = AppBody)))]
pub async fn get(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
) -> Result<ApiJson<AppBody>, ApiError> {
    let runtime = find(&state, id)?;
    Ok(ApiJson(AppBody { app: view(&runtime).await? }))
}

/// Changes an application (a new template keeps the old one's keys working).
#[utoipa::path(patch, path = "/v1/apps/{id}", operation_id = "update_app", tag = "applications", params(AppPath), request_body = AppPatch,
    extensions(("x-keypal-rules" = json!(rules(APP_RULES)))),
    security(("admin_session" = [])), responses((status = 200, description = "the changed application", body = AppBody)))]
pub async fn update(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
    ApiJson(patch): ApiJson<AppPatch>,
) -> Result<ApiJson<AppBody>, ApiError> {
    let current = find(&state, id)?;
    let fields = patch.fields();
    let app = current.app.patched(patch)?;
    let runtime = state.runtime(app)?;
    let body = serde_json::to_value(&runtime.app).map_err(|e| ApiError::internal(&e))?;
    let event = app_event(admin.context(), Action::AppUpdated, &runtime.app, Some(json!({ "fields": fields })));
    // The body only: the client secret's digest (the lookup) is not this request's to write.
    let document = id.to_string();
    let written = if current.app.recoverable && !runtime.app.recoverable {
        // Turned off: the sealed copies go with the setting, in one transaction.
        let namespace = runtime.app.namespace();
        state
            .store
            .update_object_forgetting_sealed_keys(apps::KIND, &document, &body, &namespace, &event)
            .await?
            .is_some()
    } else {
        state.store.update_object(apps::KIND, &document, &body, Some(&event)).await?
    };
    if !written {
        // Deleted since it was read.
        return Err(ApiError::not_found("application"));
    }
    state.install(runtime, None);
    state.announce(Invalidation::App(id.to_string())).await;
    let runtime = find(&state, id)?;
    Ok(ApiJson(AppBody { app: view(&runtime).await? }))
}

/// Deletes an application, revoking every key it has.
#[utoipa::path(delete, path = "/v1/apps/{id}", operation_id = "delete_app", tag = "applications", params(AppPath), security(("admin_session" = [])),
    responses((status = 200, description = "deleted, with every key revoked", body = DeletedApp)))]
pub async fn delete(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
) -> Result<ApiJson<DeletedApp>, ApiError> {
    let runtime = find(&state, id)?;
    // No more verifications or creates for this app while its keys are revoked.
    state.uninstall(runtime.app.id);
    let keys = runtime.keys.with_context(admin.context());
    let mut revoked_keys = 0;
    loop {
        let page = keys.list(ListQuery::new().limit(1000)).await?;
        if page.items.is_empty() {
            break;
        }
        for record in page.items {
            match keys.revoke(&record.id).await {
                Ok(_) => revoked_keys += 1,
                Err(keypal::Error::AlreadyRevoked(_) | keypal::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let event =
        app_event(admin.context(), Action::AppDeleted, &runtime.app, Some(json!({ "revoked_keys": revoked_keys })));
    let (id, claim) = (runtime.app.id.to_string(), apps::label_claim(&runtime.app));
    let objects = [
        ObjectRef { kind: apps::KIND, id: &id, body: None },
        ObjectRef { kind: apps::LABEL_KIND, id: &runtime.app.label, body: Some(&claim) },
    ];
    if !state.store.delete_objects(&objects, Some(&event)).await? {
        // Deleted meanwhile by another request, which announces it.
        return Err(ApiError::not_found("application"));
    }
    state.announce(Invalidation::App(runtime.app.id.to_string())).await;
    Ok(ApiJson(DeletedApp { revoked_keys }))
}

/// Replaces the client secret; the old one stops working at once.
#[utoipa::path(post, path = "/v1/apps/{id}/client-secret", operation_id = "regenerate_client_secret", tag = "applications", params(AppPath),
    security(("admin_session" = [])),
    responses((status = 200, description = "the new client secret, shown once", body = ClientSecret)))]
pub async fn regenerate_secret(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
) -> Result<ApiJson<ClientSecret>, ApiError> {
    let runtime = find(&state, id)?;
    let secret = new_client_secret()?;
    let digest = state.secrets.digest(&secret);
    let event = app_event(admin.context(), Action::ClientSecretRotated, &runtime.app, None);
    // The lookup only: the settings (the body) are not this request's to write.
    let id = runtime.app.id.to_string();
    if !state.store.update_object_lookup(apps::KIND, &id, Some(&digest), Some(&event)).await? {
        return Err(ApiError::not_found("application"));
    }
    let runtime = state.runtime(runtime.app.clone())?;
    let id = runtime.app.id;
    state.install(runtime, Some(digest));
    state.announce(Invalidation::App(id.to_string())).await;
    Ok(ApiJson(ClientSecret { client_secret: secret }))
}

/// An audit event of an admin's change to `app` (never a secret in `details`).
fn app_event(context: AuditContext, action: Action, app: &App, details: Option<serde_json::Value>) -> Event {
    let mut event = Event::new(action, OffsetDateTime::now_utc(), context);
    event.namespace = Some(app.namespace());
    event.details = details;
    event
}

/// The core request for a new key, checked.
pub fn new_key(app: &App, request: NewKeyRequest) -> Result<NewKey, ApiError> {
    let mut new = NewKey::new();
    if let Some(name) = request.name {
        new = new.name(apps::check_name(&name)?);
    }
    if let Some(owner) = request.owner_id {
        new = new.owner_id(check_owner(&owner)?);
    }
    if let Some(metadata) = &request.metadata {
        apps::check_metadata("metadata", metadata)?;
    }
    new.metadata = request.metadata.or_else(|| app.default_metadata.clone());
    if let Some(scopes) = request.scopes {
        new = new.scopes(check_scopes(scopes)?);
    }
    if let Some(tier) = request.tier {
        new = new.tier(tier);
    }
    match (request.expires_in_days, request.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("expires_at", "give expires_in_days or expires_at, not both"));
        }
        (Some(days), None) if (1..=3650).contains(&days) => {
            new = new.expires_in(Duration::from_secs(u64::from(days) * 86_400));
        }
        (Some(_), None) => return Err(ApiError::invalid("expires_in_days", "must be 1 to 3650")),
        (None, Some(at)) => {
            if at <= OffsetDateTime::now_utc() {
                return Err(ApiError::invalid("expires_at", "must be in the future"));
            }
            new = new.expires_at(at);
        }
        (None, None) => {}
    }
    if let Some(remaining) = request.remaining {
        new = new.remaining(check_credits(remaining)?);
    }
    if let Some(limit) = request.rate_limit {
        let limit: RateLimit = limit.parse().map_err(|e| ApiError::invalid("rate_limit", format!("{e}")))?;
        new = new.rate_limit(limit);
    }
    if let Some(refill) = request.refill {
        new = new.refill(refill.parse("refill")?);
    }
    Ok(new)
}

/// An owner id: 1-256 characters, no control characters.
pub fn check_owner(owner: &str) -> Result<String, ApiError> {
    if owner.is_empty() || owner.chars().count() > 256 || owner.chars().any(char::is_control) {
        return Err(ApiError::invalid("owner_id", "must be 1 to 256 characters without control characters"));
    }
    Ok(owner.to_owned())
}

/// Scopes: at most 100, each 1-100 characters without spaces or control characters.
pub fn check_scopes(scopes: Vec<String>) -> Result<Vec<String>, ApiError> {
    if scopes.len() > 100 {
        return Err(ApiError::invalid("scopes", "at most 100 scopes"));
    }
    for scope in &scopes {
        let bad = scope.is_empty()
            || scope.chars().count() > 100
            || scope.chars().any(|c| c.is_control() || c.is_whitespace());
        if bad {
            return Err(ApiError::invalid("scopes", "each scope is 1 to 100 characters without spaces"));
        }
    }
    Ok(scopes)
}

/// Credits fit the database's signed 64-bit integers.
pub fn check_credits(remaining: u64) -> Result<u64, ApiError> {
    if i64::try_from(remaining).is_err() {
        return Err(ApiError::invalid("remaining", "must be at most 9223372036854775807"));
    }
    Ok(remaining)
}

/// Creates a key in an application; answers the key once.
#[utoipa::path(post, path = "/v1/apps/{id}/keys", operation_id = "create_key", tag = "keys", params(AppPath), request_body = NewKeyRequest,
    extensions(("x-keypal-rules" = json!(rules(KEY_RULES)))),
    security(("admin_session" = [])),
    responses((status = 201, description = "created; the key is shown once", body = CreatedKey),
        (status = 403, description = "KEY_LIMIT_REACHED")))]
pub async fn create_key(
    admin: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
    ApiJson(request): ApiJson<NewKeyRequest>,
) -> Result<(StatusCode, ApiJson<CreatedKey>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_key_in(&state, admin.context(), id, request).await?)))
}

/// Creates a key in the application `id` for `context` (the handler of
/// `POST /v1/apps/{id}/keys` and `keypal keys create`); answers the key once.
pub async fn create_key_in(
    state: &State,
    context: AuditContext,
    id: Uuid,
    request: NewKeyRequest,
) -> Result<CreatedKey, ApiError> {
    let runtime = find(state, id)?;
    let new = new_key(&runtime.app, request)?;
    let created = runtime.keys.with_context(context).create(new).await?;
    Ok(CreatedKey { key: created.key.expose().to_owned(), record: (&created.record).into() })
}

/// An application's keys, newest first.
#[utoipa::path(get, path = "/v1/apps/{id}/keys", operation_id = "list_keys", tag = "keys", params(AppPath, KeyListParams),
    security(("admin_session" = [])), responses((status = 200, description = "a page of keys", body = KeyList)))]
pub async fn list_keys(
    _: Admin,
    AxumState(state): Shared,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
    ApiQuery(params): ApiQuery<KeyListParams>,
) -> Result<ApiJson<KeyList>, ApiError> {
    Ok(ApiJson(list_app_keys(&state, id, params).await?))
}

/// A page of the application `id`'s keys, newest first (the handler of
/// `GET /v1/apps/{id}/keys` and `keypal keys list`).
pub async fn list_app_keys(state: &State, id: Uuid, params: KeyListParams) -> Result<KeyList, ApiError> {
    let runtime = find(state, id)?;
    let mut query = page_query(params.include_revoked, params.limit, params.cursor)?;
    if let Some(owner) = params.owner_id {
        query = query.owner_id(check_owner(&owner)?);
    }
    let page = runtime.keys.list(query).await?;
    Ok(KeyList { keys: page.items.iter().map(KeyView::from).collect(), next_cursor: page.next_cursor })
}
