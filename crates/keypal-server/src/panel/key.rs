//! One key: `/admin/keys/{id}/...`, its edit page, rotating, revealing, and revoking,
//! deleting, enabling or disabling it. Every change is the JSON API's
//! (`/v1/keys/{id}...`); afterwards the panel shows the key's application.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keypal::{KeyId, Store};
use serde::Deserialize;

use super::Shared;
use super::app::{AppPageParts, KeyForm, app_page};
use super::form::{CsrfForm, FormErrors, optional, words};
use super::page::{Flash, Layout, error_page, failed, forbidden, redirect, render};
use super::session::{CarriesCsrf, CsrfHeader, PanelSession, Posted};
use crate::extract::{ApiJson, KeyPath};
use crate::keys::KeyPatchRequest;
use crate::routes;
use crate::state::State;

/// The application page a key belongs to.
async fn app_of_key(state: &State, id: &str) -> Option<String> {
    let id: KeyId = id.parse().ok()?;
    state.store.get(id).await.ok().flatten().and_then(|r| r.namespace.clone())
}

/// The answer to a change of a key of the application `app_id` that was refused for
/// being revoked already: its application's page, saying so.
fn already_revoked(app_id: &str) -> Response {
    redirect(&format!("/admin/apps/{app_id}?err=already_revoked"))
}

/// The rotate form.
#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grace_seconds: String,
}

impl CarriesCsrf for RotateForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/keys/{id}/rotate`: the new key, shown once on its application's page.
pub async fn rotate_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Posted(form): Posted<RotateForm>,
) -> Response {
    let Some(app_id) = app_of_key(&state, &id).await else { return redirect("/admin/apps?err=not_found") };
    let grace: u64 = form.grace_seconds.trim().parse().unwrap_or(0);
    let body = serde_json::json!({ "grace_seconds": grace }).to_string();
    match routes::keys::rotate(session.admin(), AxumState(state.clone()), KeyPath::from_panel(&id), body.into()).await {
        Ok(ApiJson(rotated)) => {
            let message = if grace == 0 {
                "Key rotated; the old key no longer works."
            } else {
                "Key rotated; the old key works until its grace period ends."
            };
            app_page(&state, &session, &app_id, AppPageParts::done(message).showing("New key", rotated.key)).await
        }
        Err(e) if e.code == "ALREADY_REVOKED" => already_revoked(&app_id),
        Err(e) if e.status.is_client_error() => {
            let parts = AppPageParts::refused(e.status, Flash::err(e.message.clone()), KeyForm::default());
            app_page(&state, &session, &app_id, parts).await
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/keys/{id}/{action}`: revoke, delete, enable or disable a key, then back
/// to its application.
pub async fn key_action(
    session: PanelSession,
    AxumState(state): Shared,
    Path((id, action)): Path<(String, String)>,
    _: Posted<CsrfForm>,
) -> Response {
    if action == "reveal" {
        // The reveal call comes from the page's script, with the token in a header instead.
        return forbidden("Reveal with the button on the page.");
    }
    let Some(app_id) = app_of_key(&state, &id).await else { return redirect("/admin/apps?err=not_found") };
    let (admin, shared, path) = (session.admin(), AxumState(state.clone()), KeyPath::from_panel(&id));
    let done = match action.as_str() {
        "revoke" => routes::keys::revoke(admin, shared, path).await.map(|_| "revoked"),
        "delete" => routes::keys::delete(admin, shared, path).await.map(|_| "deleted"),
        "enable" | "disable" => {
            let patch = KeyPatchRequest { enabled: Some(action == "enable"), ..KeyPatchRequest::default() };
            routes::keys::update(admin, shared, path, ApiJson(patch))
                .await
                .map(|_| if action == "enable" { "enabled" } else { "disabled" })
        }
        _ => return redirect(&format!("/admin/apps/{app_id}?err=not_found")),
    };
    match done {
        Ok(code) => redirect(&format!("/admin/apps/{app_id}?ok={code}")),
        Err(e) if e.code == "ALREADY_REVOKED" => already_revoked(&app_id),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect(&format!("/admin/apps/{app_id}?err=not_found")),
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/keys/{id}/reveal` from the page's script (the CSRF token is a header):
/// the JSON API's answer.
pub async fn reveal_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: CsrfHeader,
) -> Response {
    routes::keys::reveal(session.admin(), AxumState(state), KeyPath::from_panel(&id)).await.into_response()
}

#[derive(Template)]
#[template(path = "edit_key.html")]
struct EditKeyPage {
    layout: Layout,
    app_id: String,
    app_name: String,
    key_id: String,
    masked: String,
    form: EditForm,
    /// The key's verifications over the last 30 days.
    history: super::usage::Chart,
}

/// The edit form.
#[derive(Deserialize, Default)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    expires_on: String,
    /// The expiry date the form was shown with: an unchanged date is not sent (the
    /// date alone would move the expiry to midnight).
    #[serde(default)]
    expires_was: String,
    #[serde(default)]
    metadata: String,
    /// The refill, `AMOUNT/INTERVAL` (empty: none).
    #[serde(default)]
    refill: String,
    /// The refill the form was shown with: an unchanged refill is not sent (setting it
    /// again would start a new period with full credits).
    #[serde(default)]
    refill_was: String,
    #[serde(skip)]
    errors: FormErrors,
}

impl CarriesCsrf for EditForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The fields of the form, which the API's refusals may name (`expires_at` is shown
/// next to `expires_on`).
const EDIT_FIELDS: [&str; 5] = ["name", "scopes", "expires_at", "metadata", "refill"];

impl EditForm {
    /// The form showing `key` as it is.
    fn of(key: &crate::keys::KeyView) -> Self {
        let expires_on = key.expires_at.map(|at| at.date().to_string()).unwrap_or_default();
        let refill =
            key.refill.as_ref().and_then(|r| r.parse("refill").ok()).map(|r| r.to_string()).unwrap_or_default();
        EditForm {
            refill_was: refill.clone(),
            refill,
            name: key.name.clone().unwrap_or_default(),
            scopes: key.scopes.join(" "),
            expires_was: expires_on.clone(),
            expires_on,
            metadata: key
                .metadata
                .as_ref()
                .map(|m| serde_json::to_string_pretty(m).unwrap_or_default())
                .unwrap_or_default(),
            ..EditForm::default()
        }
    }

    /// The API request, or the form with errors next to its fields.
    fn request(&mut self) -> Option<KeyPatchRequest> {
        let expires_at = match self.expires_on.trim() {
            unchanged if unchanged == self.expires_was.trim() => None,
            "" => Some(None),
            day => match time::Date::parse(day, time::macros::format_description!("[year]-[month]-[day]")) {
                Ok(date) => Some(Some(date.midnight().assume_utc())),
                Err(_) => {
                    self.errors.set("expires_on", "a date like 2026-12-31");
                    None
                }
            },
        };
        let metadata = match self.metadata.trim() {
            "" => Some(None),
            text => self.errors.json("metadata", text).map(Some),
        };
        let refill = match self.refill.trim() {
            unchanged if unchanged == self.refill_was.trim() => None,
            "" => Some(None),
            text => super::app::refill_field(&mut self.errors, "refill", text).map(Some),
        };
        if !self.errors.is_empty() {
            return None;
        }
        Some(KeyPatchRequest {
            name: Some(optional(&self.name)),
            metadata,
            scopes: Some(words(&self.scopes)),
            expires_at,
            refill,
            ..KeyPatchRequest::default()
        })
    }
}

/// The edit page of the key `id`, with `form` as sent (or the key as it is).
async fn edit_page(
    state: &Arc<State>,
    session: &PanelSession,
    id: &str,
    form: Option<EditForm>,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let key = match routes::keys::get(session.admin(), AxumState(state.clone()), KeyPath::from_panel(id)).await {
        Ok(ApiJson(key)) => key,
        Err(e) => return failed(&e),
    };
    let app_id = key.app_id.clone().unwrap_or_default();
    let app_name = state.app_by_text(&app_id).map(|r| r.app.name.clone()).unwrap_or_default();
    let form = form.unwrap_or_else(|| EditForm::of(&key));
    // The key's own history: its last 30 days, per day.
    state.flush().await;
    let params = crate::routes::analytics::AnalyticsParams { key_id: Some(key.id), ..Default::default() };
    let history = match super::usage::chart(state, session, params, 30, keypal_sql::Granularity::Day).await {
        Ok(chart) => chart,
        Err(e) => return failed(&e),
    };
    let page = EditKeyPage {
        layout: Layout::signed_in("Edit key", "apps", session, flash),
        app_id,
        app_name,
        key_id: id.to_owned(),
        masked: key.masked,
        form,
        history,
    };
    render(status, &page)
}

/// `GET /admin/keys/{id}/edit`.
pub async fn edit_key_page(session: PanelSession, AxumState(state): Shared, Path(id): Path<String>) -> Response {
    edit_page(&state, &session, &id, None, StatusCode::OK, None).await
}

/// `POST /admin/keys/{id}/edit`: the changes, as `PATCH /v1/keys/{id}`; then back to
/// the key's application, or the form with errors.
pub async fn edit_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Posted(mut form): Posted<EditForm>,
) -> Response {
    let Some(request) = form.request() else {
        return edit_page(&state, &session, &id, Some(form), StatusCode::BAD_REQUEST, Flash::check_fields()).await;
    };
    let updated =
        routes::keys::update(session.admin(), AxumState(state.clone()), KeyPath::from_panel(&id), ApiJson(request))
            .await;
    match updated {
        Ok(ApiJson(key)) => redirect(&format!("/admin/apps/{}?ok=updated", key.app_id.unwrap_or_default())),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            form.errors.refused(&e, &EDIT_FIELDS);
            if form.errors.has("expires_at") {
                let message = form.errors.error("expires_at").to_owned();
                form.errors.set("expires_on", message);
            }
            edit_page(&state, &session, &id, Some(form), e.status, Flash::check_fields()).await
        }
        Err(e) => failed(&e),
    }
}
