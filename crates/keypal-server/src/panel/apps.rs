//! The applications: `/admin/apps`, their list and the new-application form, and
//! deleting one. Creating and deleting are the JSON API's `POST /v1/apps` and
//! `DELETE /v1/apps/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use keypal::HashAlgorithm;
use serde::Deserialize;

use super::Shared;
use super::form::{CsrfForm, FormErrors, optional};
use super::page::{Choice, Flash, Layout, SecretModal, choices, error_page, failed, redirect, render};
use super::session::{CarriesCsrf, PanelSession, Posted};
use crate::apps::{AppView, HASHES, NewApp, TierInput};
use crate::error::ApiError;
use crate::extract::{ApiJson, AppPath};
use crate::routes;
use crate::state::State;

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    layout: Layout,
    apps: Vec<AppView>,
    form: AppForm,
    hashes: Vec<Choice>,
    modal: Option<SecretModal>,
}

/// The new-application form: what was typed, and errors.
#[derive(Deserialize, Default)]
pub struct AppForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    hash: String,
    #[serde(default)]
    max_active_keys_per_owner: String,
    #[serde(default)]
    credits_low_threshold: String,
    #[serde(default)]
    tiers: String,
    #[serde(default)]
    default_tier: String,
    #[serde(default)]
    default_metadata: String,
    #[serde(default)]
    recoverable: Option<String>,
    #[serde(skip)]
    errors: FormErrors,
}

impl CarriesCsrf for AppForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The fields of the form, which the API's refusals may name.
const APP_FIELDS: [&str; 9] = [
    "name",
    "label",
    "template",
    "hash",
    "max_active_keys_per_owner",
    "credits_low_threshold",
    "tiers",
    "default_tier",
    "default_metadata",
];

impl AppForm {
    /// An empty form, with the API's default hash.
    fn blank() -> Self {
        AppForm { hash: HashAlgorithm::default().name().to_owned(), ..AppForm::default() }
    }

    fn recoverable(&self) -> bool {
        self.recoverable.is_some()
    }

    /// The API request, or the form with errors next to its fields.
    fn request(&mut self) -> Option<NewApp> {
        let max = self.errors.whole_number(
            "max_active_keys_per_owner",
            &self.max_active_keys_per_owner,
            "a whole number from 1 to 100000",
        );
        let credits_low_threshold = self.errors.whole_number(
            "credits_low_threshold",
            &self.credits_low_threshold,
            "a whole number of credits, at least 1",
        );
        let mut tiers = BTreeMap::new();
        for line in self.tiers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(name), rate, None) => {
                    tiers.insert(
                        name.to_owned(),
                        TierInput { segment: None, rate_limit: rate.map(str::to_owned), refill: None },
                    );
                }
                _ => self.errors.set("tiers", format!("“{line}”: write a name and a rate, like free 100/hour")),
            }
        }
        let default_metadata =
            optional(&self.default_metadata).and_then(|text| self.errors.json("default_metadata", &text));
        if !self.errors.is_empty() {
            return None;
        }
        Some(NewApp {
            name: self.name.clone(),
            label: self.label.trim().to_owned(),
            default_metadata,
            template: optional(&self.template),
            legacy_templates: None,
            hash: optional(&self.hash),
            bcrypt_cost: None,
            tiers: Some(tiers),
            default_tier: optional(&self.default_tier),
            max_active_keys_per_owner: max,
            recoverable: Some(self.recoverable()),
            credits_low_threshold,
        })
    }
}

async fn app_views(state: &Arc<State>, session: &PanelSession) -> Result<Vec<AppView>, ApiError> {
    let ApiJson(list) = routes::apps::list(session.admin(), AxumState(state.clone())).await?;
    Ok(list.apps)
}

/// The applications' page with `form` under them.
async fn apps_page(
    state: &Arc<State>,
    session: &PanelSession,
    status: StatusCode,
    form: AppForm,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
) -> Response {
    match app_views(state, session).await {
        Ok(apps) => {
            let hashes = choices(HASHES.iter().map(|h| (h.name(), h.name())), &form.hash);
            let modal = modal.map(|m| m.on("/admin/apps"));
            let layout = Layout::signed_in("Applications", "apps", session, flash);
            render(status, &AppsPage { layout, apps, form, hashes, modal })
        }
        Err(e) => error_page(&e),
    }
}

/// `GET /admin` and `GET /admin/`: the applications.
pub async fn home() -> Response {
    redirect("/admin/apps")
}

/// `GET /admin/apps`.
pub async fn apps(
    session: PanelSession,
    AxumState(state): Shared,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let flash = Flash::of_codes(params.get("ok").map(String::as_str), params.get("err").map(String::as_str));
    apps_page(&state, &session, StatusCode::OK, AppForm::blank(), flash, None).await
}

/// `POST /admin/apps`: the new application's client secret, or the form with errors.
pub async fn create_app(
    session: PanelSession,
    AxumState(state): Shared,
    Posted(mut form): Posted<AppForm>,
) -> Response {
    let Some(request) = form.request() else {
        return apps_page(&state, &session, StatusCode::BAD_REQUEST, form, Flash::check_fields(), None).await;
    };
    match routes::apps::create(session.admin(), AxumState(state.clone()), ApiJson(request)).await {
        Ok((_, ApiJson(created))) => {
            let modal = SecretModal::once(format!("Client secret of {}", created.app.name), created.client_secret);
            let flash = Flash::ok(format!("Application {} created.", created.app.name));
            apps_page(&state, &session, StatusCode::OK, AppForm::blank(), flash, modal).await
        }
        Err(e) if e.status.is_client_error() => {
            form.errors.refused(&e, &APP_FIELDS);
            apps_page(&state, &session, e.status, form, Flash::check_fields(), None).await
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/apps/{id}/delete`: revokes its keys, as `DELETE /v1/apps/{id}` does.
pub async fn delete_app(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    match routes::apps::delete(session.admin(), AxumState(state), AppPath::from_panel(&id)).await {
        Ok(_) => redirect("/admin/apps?ok=app_deleted"),
        Err(e) => failed(&e),
    }
}
