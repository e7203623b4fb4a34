//! Webhooks: `/admin/webhooks` (the list, disabled ones marked, and the new-webhook form:
//! its secret is shown once, in the secret dialog) and `/admin/webhooks/{id}` (its
//! settings, test, secret rotation, deletion, and its deliveries with a retry for
//! each), as the `/v1/webhooks` endpoints do.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Shared;
use super::form::{CsrfForm, FormErrors, optional};
use super::format;
use super::page::{Choice, Flash, Layout, SecretModal, error_page, redirect, render};
use super::session::{CarriesCsrf, PanelSession, Posted};
use crate::extract::{ApiJson, ApiQuery};
use crate::routes;
use crate::routes::webhooks::{DeliveryParams, DeliveryPath, WebhookPath};
use crate::state::State;
use crate::webhooks::{EVENT_TYPES, NewWebhook, WebhookPatch, WebhookView};

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    webhooks: Vec<WebhookRow>,
    form: WebhookForm,
    events: Vec<Choice>,
    apps: Vec<Choice>,
    modal: Option<SecretModal>,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage {
    layout: Layout,
    webhook: WebhookRow,
    form: WebhookForm,
    events: Vec<Choice>,
    apps: Vec<Choice>,
    deliveries: Vec<DeliveryRow>,
    modal: Option<SecretModal>,
}

/// A webhook as the pages show it.
struct WebhookRow {
    id: String,
    url: String,
    events: String,
    app: String,
    description: String,
    enabled: bool,
    disabled: String,
}

/// A delivery as the webhook's page lists it.
struct DeliveryRow {
    id: String,
    event_type: String,
    status: &'static str,
    status_class: &'static str,
    attempts: u32,
    last: String,
    last_status: String,
    response: String,
    next: String,
}

/// The webhook form (new or edited): what was typed, and errors.
#[derive(Deserialize, Default)]
pub struct WebhookForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    app_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    enabled: Option<String>,
    /// The checked events, as `event:key.created=on`.
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
    #[serde(skip)]
    errors: FormErrors,
}

impl CarriesCsrf for WebhookForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The fields of the form, which the API's refusals may name.
const WEBHOOK_FIELDS: [&str; 4] = ["url", "events", "app_id", "description"];

impl WebhookForm {
    fn of(webhook: &WebhookView) -> Self {
        WebhookForm {
            url: webhook.url.clone(),
            app_id: webhook.app_id.map(|id| id.to_string()).unwrap_or_default(),
            description: webhook.description.clone().unwrap_or_default(),
            enabled: webhook.enabled.then(|| "on".to_owned()),
            rest: webhook.events.iter().map(|e| (format!("event:{e}"), "on".to_owned())).collect(),
            ..WebhookForm::default()
        }
    }

    fn events(&self) -> Vec<String> {
        EVENT_TYPES.iter().filter(|e| self.rest.contains_key(&format!("event:{e}"))).map(|e| (*e).to_owned()).collect()
    }

    fn app(&mut self) -> Option<Uuid> {
        let text = self.app_id.trim();
        if text.is_empty() {
            return None;
        }
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.errors.set("app_id", "choose an application");
        }
        parsed
    }

    fn new_webhook(&mut self) -> Option<NewWebhook> {
        let app_id = self.app();
        self.errors.is_empty().then(|| NewWebhook {
            url: self.url.trim().to_owned(),
            events: self.events(),
            app_id,
            description: optional(&self.description),
        })
    }

    fn patch(&mut self) -> Option<WebhookPatch> {
        let app_id = self.app();
        self.errors.is_empty().then(|| WebhookPatch {
            url: Some(self.url.trim().to_owned()),
            events: Some(self.events()),
            app_id: Some(app_id),
            description: Some(optional(&self.description)),
            enabled: Some(self.enabled.is_some()),
        })
    }
}

fn event_choices(form: &WebhookForm) -> Vec<Choice> {
    EVENT_TYPES
        .iter()
        .map(|e| Choice {
            value: (*e).to_owned(),
            label: (*e).to_owned(),
            selected: form.rest.contains_key(&format!("event:{e}")),
        })
        .collect()
}

fn app_choices(state: &State, form: &WebhookForm) -> Vec<Choice> {
    let mut choices =
        vec![Choice { value: String::new(), label: "Every application".to_owned(), selected: form.app_id.is_empty() }];
    choices.extend(state.apps().iter().map(|runtime| {
        let id = runtime.app.id.to_string();
        Choice { selected: id == form.app_id, label: runtime.app.name.clone(), value: id }
    }));
    choices
}

fn row(state: &State, webhook: &WebhookView) -> WebhookRow {
    let app = match webhook.app_id {
        None => "every application".to_owned(),
        Some(id) => state.app(id).map_or_else(|| id.to_string(), |runtime| runtime.app.name.clone()),
    };
    let disabled = match (&webhook.disabled_reason, webhook.disabled_at) {
        (Some(reason), Some(at)) => format!("{reason} (disabled {})", format::date(at)),
        (Some(reason), None) => reason.clone(),
        _ => String::new(),
    };
    WebhookRow {
        id: webhook.id.to_string(),
        url: webhook.url.clone(),
        events: webhook.events.join(", "),
        app,
        description: webhook.description.clone().unwrap_or_default(),
        enabled: webhook.enabled,
        disabled,
    }
}

/// The webhooks' page with `form` under them.
async fn webhooks_page(
    state: &Arc<State>,
    session: &PanelSession,
    status: StatusCode,
    form: WebhookForm,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
) -> Response {
    let list = match routes::webhooks::list(session.admin(), AxumState(state.clone())).await {
        Ok(ApiJson(list)) => list,
        Err(e) => return error_page(&e),
    };
    let webhooks = list.webhooks.iter().map(|w| row(state, w)).collect();
    let layout = Layout::signed_in("Webhooks", "webhooks", session, flash);
    let (events, apps) = (event_choices(&form), app_choices(state, &form));
    let modal = modal.map(|m| m.on("/admin/webhooks"));
    render(status, &WebhooksPage { layout, webhooks, form, events, apps, modal })
}

/// `GET /admin/webhooks`.
pub async fn webhooks(
    session: PanelSession,
    AxumState(state): Shared,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let flash = Flash::of_codes(params.get("ok").map(String::as_str), params.get("err").map(String::as_str));
    webhooks_page(&state, &session, StatusCode::OK, WebhookForm::default(), flash, None).await
}

/// `POST /admin/webhooks`: the new webhook's secret, shown once, or the form with errors.
pub async fn create_webhook(
    session: PanelSession,
    AxumState(state): Shared,
    Posted(mut form): Posted<WebhookForm>,
) -> Response {
    let Some(request) = form.new_webhook() else {
        return webhooks_page(&state, &session, StatusCode::BAD_REQUEST, form, Flash::check_fields(), None).await;
    };
    match routes::webhooks::create(session.admin(), AxumState(state.clone()), ApiJson(request)).await {
        Ok((_, ApiJson(created))) => {
            let modal = SecretModal::once(format!("Signing secret of {}", created.webhook.url), created.secret);
            let flash = Flash::ok(format!("Webhook to {} created.", created.webhook.url));
            webhooks_page(&state, &session, StatusCode::OK, WebhookForm::default(), flash, modal).await
        }
        Err(e) if e.status.is_client_error() => {
            form.errors.refused(&e, &WEBHOOK_FIELDS);
            webhooks_page(&state, &session, e.status, form, Flash::check_fields(), None).await
        }
        Err(e) => error_page(&e),
    }
}

/// A webhook's page: `form` (its settings, or what was typed), its deliveries.
async fn webhook_page(
    state: &Arc<State>,
    session: &PanelSession,
    id: &str,
    status: StatusCode,
    form: Option<WebhookForm>,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
) -> Response {
    let shared = || AxumState(state.clone());
    let webhook = match routes::webhooks::get(session.admin(), shared(), WebhookPath::from_panel(id)).await {
        Ok(ApiJson(webhook)) => webhook,
        Err(e) => return error_page(&e),
    };
    let params = ApiQuery(DeliveryParams { limit: Some(50), cursor: None });
    let list = match routes::webhooks::deliveries(session.admin(), shared(), WebhookPath::from_panel(id), params).await
    {
        Ok(ApiJson(list)) => list,
        Err(e) => return error_page(&e),
    };
    let now = OffsetDateTime::now_utc();
    let deliveries = list
        .deliveries
        .into_iter()
        .map(|d| DeliveryRow {
            id: d.id.to_string(),
            event_type: d.event_type,
            status: d.status,
            status_class: match d.status {
                "succeeded" => "ok",
                "failed" => "bad",
                _ => "warn",
            },
            attempts: d.attempts,
            last: format::last_used(d.last_attempt_at, now),
            last_status: d.last_status.map(|s| s.to_string()).unwrap_or_default(),
            response: d.last_response.unwrap_or_default(),
            next: d.next_attempt_at.map(format::date).unwrap_or_default(),
        })
        .collect();
    let form = form.unwrap_or_else(|| WebhookForm::of(&webhook));
    let path = format!("/admin/webhooks/{}", webhook.id);
    let layout = Layout::signed_in("Webhook", "webhooks", session, flash);
    let (events, apps) = (event_choices(&form), app_choices(state, &form));
    let webhook = row(state, &webhook);
    render(status, &WebhookPage { layout, webhook, form, events, apps, deliveries, modal: modal.map(|m| m.on(&path)) })
}

/// `GET /admin/webhooks/{id}`.
pub async fn webhook(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let flash = Flash::of_codes(params.get("ok").map(String::as_str), params.get("err").map(String::as_str));
    webhook_page(&state, &session, &id, StatusCode::OK, None, flash, None).await
}

/// `POST /admin/webhooks/{id}`: its settings changed, as `PATCH /v1/webhooks/{id}`.
pub async fn edit_webhook(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Posted(mut form): Posted<WebhookForm>,
) -> Response {
    let Some(patch) = form.patch() else {
        return webhook_page(&state, &session, &id, StatusCode::BAD_REQUEST, Some(form), Flash::check_fields(), None)
            .await;
    };
    let shared = AxumState(state.clone());
    match routes::webhooks::update(session.admin(), shared, WebhookPath::from_panel(&id), ApiJson(patch)).await {
        Ok(_) => redirect(&format!("/admin/webhooks/{id}?ok=webhook_updated")),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/webhooks?err=webhook_not_found"),
        Err(e) if e.status.is_client_error() => {
            form.errors.refused(&e, &WEBHOOK_FIELDS);
            webhook_page(&state, &session, &id, e.status, Some(form), Flash::check_fields(), None).await
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/webhooks/{id}/test`, as `POST /v1/webhooks/{id}/test`.
pub async fn test_webhook(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    match routes::webhooks::test(session.admin(), AxumState(state), WebhookPath::from_panel(&id)).await {
        Ok(_) => redirect(&format!("/admin/webhooks/{id}?ok=webhook_test_sent")),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/webhooks?err=webhook_not_found"),
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/webhooks/{id}/secret`: the new secret, shown once.
pub async fn rotate_secret(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    let shared = AxumState(state.clone());
    match routes::webhooks::rotate_secret(session.admin(), shared, WebhookPath::from_panel(&id)).await {
        Ok(ApiJson(rotated)) => {
            let modal = SecretModal::once("New signing secret", rotated.secret);
            let flash = Flash::ok("Signing secret replaced; the old one no longer signs.");
            webhook_page(&state, &session, &id, StatusCode::OK, None, flash, modal).await
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/webhooks?err=webhook_not_found"),
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/webhooks/{id}/delete`, as `DELETE /v1/webhooks/{id}`.
pub async fn delete_webhook(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    match routes::webhooks::delete(session.admin(), AxumState(state), WebhookPath::from_panel(&id)).await {
        Ok(_) => redirect("/admin/webhooks?ok=webhook_deleted"),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/webhooks?err=webhook_not_found"),
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/webhooks/{id}/deliveries/{delivery_id}/retry`, as the API's retry.
pub async fn retry_delivery(
    session: PanelSession,
    AxumState(state): Shared,
    Path((id, delivery_id)): Path<(String, String)>,
    _: Posted<CsrfForm>,
) -> Response {
    let path = match (id.parse(), delivery_id.parse()) {
        (Ok(id), Ok(delivery_id)) => crate::extract::ApiPath(DeliveryPath { id, delivery_id }),
        _ => return redirect("/admin/webhooks?err=webhook_not_found"),
    };
    match routes::webhooks::retry(session.admin(), AxumState(state), path).await {
        Ok(_) => redirect(&format!("/admin/webhooks/{id}?ok=delivery_retried")),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            redirect(&format!("/admin/webhooks/{id}?err=delivery_not_found"))
        }
        Err(e) => error_page(&e),
    }
}
