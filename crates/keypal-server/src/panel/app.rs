//! One application and its keys: `/admin/apps/{id}`, with its usage, its keys page by
//! page (searched and filtered by status), the new-key form, its client secret and its
//! recoverable setting. Every change is the JSON API's (`/v1/apps/{id}...`).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use keypal::{Code, KeyManager, KeyRecord, ListQuery};
use keypal_sql::{Granularity, SqlStore};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Shared;
use super::form::{CsrfForm, FormErrors, optional, words};
use super::format;
use super::page::{Choice, Flash, Layout, SecretModal, choices, encode_path, error_page, failed, render};
use super::session::{CarriesCsrf, PanelSession, Posted};
use crate::apps::{AppPatch, AppView};
use crate::error::ApiError;
use crate::extract::{ApiJson, AppPath};
use crate::keys::NewKeyRequest;
use crate::routes;
use crate::state::State;

/// The key table's status filter.
const STATUSES: [&str; 6] = ["active", "all", "revoked", "disabled", "expired", "rotating"];

/// Keys shown on one page of an application's key table.
const KEYS_PER_PAGE: usize = 50;

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    layout: Layout,
    app: AppView,
    totals: Vec<(&'static str, u64)>,
    keys: Vec<KeyRow>,
    /// The text searched in names and owners.
    search: String,
    /// The link to the next page of keys, when there is one.
    next_page: Option<String>,
    /// On a later page, the link back to the first.
    first_page: Option<String>,
    statuses: Vec<Choice>,
    key_form: KeyForm,
    modal: Option<SecretModal>,
}

/// One row of the keys table.
struct KeyRow {
    id: String,
    masked: String,
    name: String,
    owner: String,
    tier: String,
    scopes: String,
    metadata: String,
    created: String,
    expiry: String,
    expiry_class: &'static str,
    last_used: String,
    chart: String,
    status: &'static str,
    status_class: &'static str,
    enabled: bool,
    active: bool,
    revealable: bool,
    /// Credits left now and the refill, one short line each (none for a key with
    /// unlimited credits and no refill), like `70 left`, `100/monthly:15`, `next 2027-01-15`.
    credits: Vec<String>,
}

/// A key's credits as its row shows them, under its state.
fn credits_lines(record: &keypal::KeyRecord, now: OffsetDateTime) -> Vec<String> {
    let mut lines: Vec<String> = record.remaining_at(now).map(|n| format!("{n} left")).into_iter().collect();
    if let (Some(refill), Some(at)) = (&record.refill, record.refill_at(now)) {
        lines.push(refill.to_string());
        lines.push(format!("next {}", format::date(at)));
    }
    lines
}

/// A refill field of a form (`AMOUNT/INTERVAL`; empty: none), or its error.
pub(super) fn refill_field(errors: &mut FormErrors, field: &str, text: &str) -> Option<crate::keys::RefillView> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match text.parse::<keypal::Refill>() {
        Ok(refill) => Some(crate::keys::RefillView::from(&refill)),
        Err(e) => {
            errors.set(field, format!("{e}; write AMOUNT/INTERVAL, like 1000/monthly or 50/12h"));
            None
        }
    }
}

/// The new-key form.
#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner_id: String,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    refill: String,
    #[serde(skip)]
    errors: FormErrors,
}

impl CarriesCsrf for KeyForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The fields of the form, which the API's refusals may name.
const KEY_FIELDS: [&str; 7] = ["name", "owner_id", "scopes", "tier", "expires_in_days", "metadata", "refill"];

impl KeyForm {
    /// The API request, or the form with errors next to its fields.
    fn request(&mut self) -> Option<NewKeyRequest> {
        let scopes = words(&self.scopes);
        let request = NewKeyRequest {
            name: optional(&self.name),
            owner_id: optional(&self.owner_id),
            tier: optional(&self.tier),
            scopes: Some(scopes).filter(|s| !s.is_empty()),
            expires_in_days: self.errors.whole_number(
                "expires_in_days",
                &self.expires_in_days,
                "a whole number of days from 1 to 3650",
            ),
            metadata: optional(&self.metadata).and_then(|text| self.errors.json("metadata", &text)),
            refill: refill_field(&mut self.errors, "refill", &self.refill),
            ..NewKeyRequest::default()
        };
        self.errors.is_empty().then_some(request)
    }
}

/// `GET /admin/apps/{id}` parameters.
#[derive(Deserialize, Default)]
pub struct KeyFilter {
    /// Text searched in key names and owner ids.
    q: Option<String>,
    status: Option<String>,
    /// The last key of the previous page.
    cursor: Option<String>,
    ok: Option<String>,
    err: Option<String>,
}

/// What the application's page shows besides the application, from the request that
/// leads to it.
pub(super) struct AppPageParts {
    status: StatusCode,
    filter: KeyFilter,
    key_form: KeyForm,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
}

impl AppPageParts {
    fn new() -> Self {
        AppPageParts {
            status: StatusCode::OK,
            filter: KeyFilter::default(),
            key_form: KeyForm::default(),
            flash: None,
            modal: None,
        }
    }

    /// After a change that went through: `message` at the top.
    pub(super) fn done(message: &str) -> Self {
        AppPageParts { flash: Flash::ok(message), ..AppPageParts::new() }
    }

    /// After a refused change: its status, `flash`, and the new-key form as it was sent.
    pub(super) fn refused(status: StatusCode, flash: Option<Flash>, key_form: KeyForm) -> Self {
        AppPageParts { status, flash, key_form, ..AppPageParts::new() }
    }

    /// With a new secret, shown once.
    pub(super) fn showing(self, title: &str, secret: String) -> Self {
        AppPageParts { modal: SecretModal::once(title, secret), ..self }
    }
}

/// The page of the application `id` (back to the applications when there is none).
pub(super) async fn app_page(state: &Arc<State>, session: &PanelSession, id: &str, parts: AppPageParts) -> Response {
    match build_app_page(state, session, id, parts).await {
        Ok(page) => page,
        Err(e) => failed(&e),
    }
}

async fn build_app_page(
    state: &Arc<State>,
    session: &PanelSession,
    id: &str,
    parts: AppPageParts,
) -> Result<Response, ApiError> {
    // Fresh numbers: write pending usage counts and last-used times first.
    state.flush().await;
    let runtime = state.app_by_text(id)?;
    let ApiJson(body) = routes::apps::get(session.admin(), AxumState(state.clone()), AppPath::from_panel(id)).await?;
    let now = OffsetDateTime::now_utc();
    let day_ago = now - time::Duration::hours(24);
    let namespace = runtime.app.namespace();
    let totals = state.store.usage_totals(Some(&namespace), day_ago, now + time::Duration::minutes(1)).await?;
    let mut totals: Vec<(&'static str, u64)> = totals.by_code().iter().map(|(code, n)| (code.as_str(), *n)).collect();
    totals.retain(|(code, n)| *n > 0 || *code == Code::Valid.as_str());

    let filter_status =
        parts.filter.status.clone().filter(|s| STATUSES.contains(&s.as_str())).unwrap_or_else(|| "active".to_owned());
    let search = parts.filter.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    let cursor = match parts.filter.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| ApiError::invalid("cursor", "not a key id"))?),
        None => None,
    };
    let (records, next_cursor) = key_page(&runtime.keys, &filter_status, &search, cursor, now).await?;
    let mut keys = Vec::with_capacity(records.len());
    for record in &records {
        let (status, status_class) = format::status(record, now);
        let hours = state.store.usage(record.id, day_ago, now + time::Duration::minutes(1), Granularity::Hour).await?;
        let mut counts = vec![0u64; 24];
        for bucket in hours {
            let index = ((bucket.start - day_ago).whole_hours().clamp(0, 23)) as usize;
            counts[index] += bucket.counts.total();
        }
        let (expiry, expiry_class) = format::expiry(record.expires_at, now);
        keys.push(KeyRow {
            id: record.id.to_string(),
            masked: record.masked(),
            name: record.name.clone().unwrap_or_default(),
            owner: record.owner_id.clone().unwrap_or_default(),
            tier: record.tier.clone().unwrap_or_default(),
            scopes: record.scopes.join(" "),
            metadata: record.metadata.as_ref().map(|m| truncate(&m.to_string(), 80)).unwrap_or_default(),
            created: format::date(record.created_at),
            expiry,
            expiry_class,
            last_used: format::last_used(record.last_used_at, now),
            chart: format::sparkline(&counts),
            status,
            status_class,
            enabled: record.enabled,
            active: record.revoked_at.is_none(),
            revealable: record.encrypted_key.is_some(),
            credits: credits_lines(record, now),
        });
    }
    let first = format!("/admin/apps/{}?status={filter_status}&q={}", body.app.id, encode_path(&search));
    let next_page = next_cursor.map(|c| format!("{first}&cursor={c}"));
    let first_page = cursor.is_some().then_some(first);
    let flash = parts.flash.or_else(|| Flash::of_codes(parts.filter.ok.as_deref(), parts.filter.err.as_deref()));
    let address = format!("/admin/apps/{}", body.app.id);
    let page = AppPage {
        layout: Layout::signed_in(body.app.name.clone(), "apps", session, flash),
        app: body.app,
        totals,
        keys,
        search,
        next_page,
        first_page,
        statuses: choices(STATUSES.iter().map(|s| (*s, *s)), &filter_status),
        key_form: parts.key_form,
        modal: parts.modal.map(|m| m.on(&address)),
    };
    Ok(render(parts.status, &page))
}

/// One page of an application's keys under the status filter and the search, newest
/// first, after `cursor`; with the cursor of the next page when more keys match.
///
/// "active" and "all" are store filters; the other statuses are judged here on pages
/// read from the store, so a page is full even when few keys match.
async fn key_page(
    keys: &KeyManager<Arc<SqlStore>>,
    status: &str,
    search: &str,
    mut cursor: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<(Vec<KeyRecord>, Option<Uuid>), ApiError> {
    let mut query = match status {
        "active" => ListQuery::new().active_only(true),
        _ => ListQuery::new().include_revoked(true),
    }
    .search(search)
    .at(now)
    .limit(KEYS_PER_PAGE as u32 + 1);
    let mut found = Vec::new();
    loop {
        if let Some(c) = cursor {
            query = query.cursor(c);
        }
        let page = keys.list(query.clone()).await?;
        for record in page.items {
            let wanted = match status {
                "all" | "active" => true,
                other => format::status(&record, now).0.eq_ignore_ascii_case(other),
            };
            if !wanted {
                cursor = Some(record.id.0);
                continue;
            }
            if found.len() == KEYS_PER_PAGE {
                let next = found.last().map(|r: &KeyRecord| r.id.0);
                return Ok((found, next));
            }
            cursor = Some(record.id.0);
            found.push(record);
        }
        if page.next_cursor.is_none() {
            return Ok((found, None));
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// `GET /admin/apps/{id}`.
pub async fn app(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Query(filter): Query<KeyFilter>,
) -> Response {
    app_page(&state, &session, &id, AppPageParts { filter, ..AppPageParts::new() }).await
}

/// `POST /admin/apps/{id}/keys`: the new key, shown once, or the form with errors.
pub async fn create_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Posted(mut form): Posted<KeyForm>,
) -> Response {
    let Some(request) = form.request() else {
        let parts = AppPageParts::refused(StatusCode::BAD_REQUEST, Flash::check_fields(), form);
        return app_page(&state, &session, &id, parts).await;
    };
    let created =
        routes::apps::create_key(session.admin(), AxumState(state.clone()), AppPath::from_panel(&id), ApiJson(request))
            .await;
    match created {
        Ok((_, ApiJson(created))) => {
            let parts = AppPageParts::done("Key created.").showing("New key", created.key);
            app_page(&state, &session, &id, parts).await
        }
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            form.errors.refused(&e, &KEY_FIELDS);
            let parts = AppPageParts::refused(e.status, Flash::err(e.message.clone()), form);
            app_page(&state, &session, &id, parts).await
        }
        Err(e) => failed(&e),
    }
}

/// `POST /admin/apps/{id}/client-secret`: the new client secret, shown once.
pub async fn regenerate_secret(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    match routes::apps::regenerate_secret(session.admin(), AxumState(state.clone()), AppPath::from_panel(&id)).await {
        Ok(ApiJson(secret)) => {
            let parts = AppPageParts::done("Client secret regenerated; the old one no longer works.")
                .showing("New client secret", secret.client_secret);
            app_page(&state, &session, &id, parts).await
        }
        Err(e) => failed(&e),
    }
}

/// The recoverable setting's form.
#[derive(Deserialize)]
pub struct RecoverableForm {
    #[serde(default)]
    csrf: String,
    /// `on` or `off`.
    #[serde(default)]
    recoverable: String,
}

impl CarriesCsrf for RecoverableForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/apps/{id}/recoverable`: turns keeping keys recoverable on (for keys
/// created or rotated afterwards) or off (deleting the sealed copies), as
/// `PATCH /v1/apps/{id}` does.
pub async fn set_recoverable(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Posted(form): Posted<RecoverableForm>,
) -> Response {
    let (on, done) = match form.recoverable.as_str() {
        "on" => (true, "Keys created or rotated from now on can be revealed."),
        "off" => (false, "Keys are no longer kept; every sealed copy was deleted."),
        _ => return error_page(&ApiError::invalid("recoverable", "must be on or off")),
    };
    let patch = AppPatch { recoverable: Some(on), ..Default::default() };
    match routes::apps::update(session.admin(), AxumState(state.clone()), AppPath::from_panel(&id), ApiJson(patch))
        .await
    {
        Ok(_) => app_page(&state, &session, &id, AppPageParts::done(done)).await,
        Err(e) => failed(&e),
    }
}
