//! The panel's pages and form handlers. They call the JSON API's handlers, so the
//! panel and the API share every rule and every audit entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{Html, IntoResponse, Response};
use keypal::KeyManager;
use keypal::{Action, Code, KeyId, KeyRecord, ListQuery, Store};
use keypal_sql::{Granularity, SqlStore};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::format;
use super::{Flash, FormErrors, Layout, PanelSession, SecretModal, asset, error_page, redirect, safe_next};
use crate::apps::{AppView, NewApp, TierInput};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, AppPath, KeyPath};
use crate::keys::{KeyPatchRequest, NewKeyRequest};
use crate::routes;
use crate::state::State;

type Shared = AxumState<Arc<State>>;

const HASHES: [&str; 5] = ["sha256", "sha512", "hmac-sha256", "argon2id", "bcrypt"];
const STATUSES: [&str; 6] = ["active", "all", "revoked", "disabled", "expired", "rotating"];

/// The actions the audit log holds (every one but `verified`, which goes to event sinks only).
fn audit_actions() -> impl Iterator<Item = &'static str> {
    Action::ALL.into_iter().filter(|a| *a != Action::Verified).map(Action::as_str)
}

/// An option of a `<select>`.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>, current: &str) -> Vec<Choice> {
    values
        .into_iter()
        .map(|(value, label)| Choice { value: value.to_owned(), label: label.to_owned(), selected: value == current })
        .collect()
}

fn layout(title: impl Into<String>, nav: &'static str, session: Option<&PanelSession>, flash: Option<Flash>) -> Layout {
    Layout {
        title: title.into(),
        nav,
        signed_in: session.is_some(),
        csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        flash,
    }
}

/// Renders a page, or an error page if the template fails.
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => error_page(&ApiError::internal(&e)),
    }
}

/// The message of a flash code from a redirect (`?ok=revoked`): fixed texts only.
fn flash_of(params: &BTreeMap<String, String>) -> Option<Flash> {
    let text = |code: &str| match code {
        "revoked" => "Key revoked.",
        "deleted" => "Key deleted.",
        "enabled" => "Key enabled.",
        "disabled" => "Key disabled.",
        "updated" => "Key updated.",
        "app_deleted" => "Application deleted and its keys revoked.",
        "logged_out" => "Logged out.",
        "already_revoked" => "The key was already revoked.",
        "not_found" => "No such key or application.",
        _ => "Done.",
    };
    if let Some(code) = params.get("ok") {
        return Flash::ok(text(code));
    }
    params.get("err").and_then(|code| Flash::err(text(code)))
}

// ---------------------------------------------------------------- error page

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
}

impl ErrorPage {
    pub fn new(heading: &str, message: &str) -> Self {
        ErrorPage { layout: layout(heading, "", None, None), heading: heading.to_owned(), message: message.to_owned() }
    }

    pub fn html(&self) -> Html<String> {
        Html(self.render().unwrap_or_else(|_| "error".to_owned()))
    }
}

// ---------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    error: Option<String>,
    next: String,
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    ok: Option<String>,
}

pub async fn home() -> Response {
    redirect("/admin/apps")
}

pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let flash = query.ok.as_deref().filter(|c| *c == "logged_out").and_then(|_| Flash::ok("Logged out."));
    let next = safe_next(query.next.as_deref().unwrap_or("/admin/apps")).to_owned();
    render(StatusCode::OK, &LoginPage { layout: layout("Log in", "", None, flash), error: None, next })
}

#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    caller: Caller,
    AxumState(state): Shared,
    headers: axum::http::HeaderMap,
    form: Form<LoginForm>,
) -> Response {
    let next = safe_next(&form.next).to_owned();
    if !crate::auth::same_origin(&headers) {
        return super::forbidden("Cross-site requests are refused.");
    }
    match routes::admin::log_in(&state, &caller, &form.password).await {
        Ok(token) => {
            let tls = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
            match routes::admin::session_cookie(&token, crate::auth::SESSION_TTL.whole_seconds(), tls) {
                Ok(cookie) => {
                    let mut response = redirect(&next);
                    response.headers_mut().insert(SET_COOKIE, cookie);
                    response
                }
                Err(e) => error_page(&e),
            }
        }
        Err(e) => {
            let message = if e.status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed attempts from this address. Wait a few minutes and try again."
            } else if e.status == StatusCode::UNAUTHORIZED {
                "Wrong password."
            } else {
                "Logging in failed; try again."
            };
            let page = LoginPage { layout: layout("Log in", "", None, None), error: Some(message.to_owned()), next };
            render(e.status, &page)
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    session: PanelSession,
    AxumState(state): Shared,
    headers: axum::http::HeaderMap,
    form: Form<CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    match routes::admin::logout(AxumState(state), headers).await {
        Ok(api) => {
            let mut response = redirect("/admin/login?ok=logged_out");
            if let Some(cookie) = api.headers().get(SET_COOKIE) {
                response.headers_mut().insert(SET_COOKIE, cookie.clone());
            }
            response
        }
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- applications

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

impl AppForm {
    fn has(&self, field: &str) -> bool {
        self.errors.has(field)
    }
    fn error(&self, field: &str) -> &str {
        self.errors.error(field)
    }
    fn recoverable(&self) -> bool {
        self.recoverable.is_some()
    }

    /// The API request, or the form with errors next to its fields.
    fn request(&mut self) -> Option<NewApp> {
        let optional = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let max = match self.max_active_keys_per_owner.trim() {
            "" => None,
            n => match n.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.errors.set("max_active_keys_per_owner", "a whole number from 1 to 100000");
                    None
                }
            },
        };
        let mut tiers = BTreeMap::new();
        for line in self.tiers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(name), rate, None) => {
                    tiers.insert(name.to_owned(), TierInput { segment: None, rate_limit: rate.map(str::to_owned) });
                }
                _ => self.errors.set("tiers", format!("“{line}”: write a name and a rate, like free 100/hour")),
            }
        }
        let default_metadata = match optional(&self.default_metadata) {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(value) => Some(value),
                Err(e) => {
                    self.errors.set("default_metadata", format!("not valid JSON: {e}"));
                    None
                }
            },
        };
        if !self.errors.is_empty() {
            return None;
        }
        Some(NewApp {
            name: self.name.clone(),
            label: self.label.trim().to_owned(),
            default_metadata,
            template: optional(&self.template),
            hash: optional(&self.hash),
            bcrypt_cost: None,
            tiers: Some(tiers),
            default_tier: optional(&self.default_tier),
            max_active_keys_per_owner: max,
            recoverable: Some(self.recoverable()),
        })
    }
}

/// An API error as an error next to its field (or above the form).
fn field_error(errors: &mut FormErrors, error: &ApiError, known: &[&str]) {
    let field = error.field.as_deref().map(|f| f.split('.').next().unwrap_or(f)).filter(|f| known.contains(f));
    // Next to its field, "label: must be ..." reads better as "must be ...".
    let message = match (field, &error.field) {
        (Some(_), Some(path)) => error.message.strip_prefix(&format!("{path}: ")).unwrap_or(&error.message),
        _ => &error.message,
    };
    errors.set(field.unwrap_or("form"), message);
}

async fn app_views(state: &Arc<State>, session: &PanelSession) -> Result<Vec<AppView>, ApiError> {
    let ApiJson(list) = routes::apps::list(session.admin(), AxumState(state.clone())).await?;
    Ok(list.apps)
}

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
            let hashes = choices(HASHES.iter().map(|h| (*h, *h)), &form.hash);
            let modal = modal.map(|m| m.on("/admin/apps"));
            let page =
                AppsPage { layout: layout("Applications", "apps", Some(session), flash), apps, form, hashes, modal };
            render(status, &page)
        }
        Err(e) => error_page(&e),
    }
}

pub async fn apps(
    session: PanelSession,
    AxumState(state): Shared,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let form = AppForm { hash: "sha256".to_owned(), ..AppForm::default() };
    apps_page(&state, &session, StatusCode::OK, form, flash_of(&params), None).await
}

pub async fn create_app(session: PanelSession, AxumState(state): Shared, Form(mut form): Form<AppForm>) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let Some(request) = form.request() else {
        return apps_page(
            &state,
            &session,
            StatusCode::BAD_REQUEST,
            form,
            Flash::err("Check the highlighted fields."),
            None,
        )
        .await;
    };
    match routes::apps::create(session.admin(), AxumState(state.clone()), ApiJson(request)).await {
        Ok((_, ApiJson(created))) => {
            let modal = SecretModal::once(format!("Client secret of {}", created.app.name), created.client_secret);
            let flash = Flash::ok(format!("Application {} created.", created.app.name));
            let form = AppForm { hash: "sha256".to_owned(), ..AppForm::default() };
            apps_page(&state, &session, StatusCode::OK, form, flash, modal).await
        }
        Err(e) if e.status.is_client_error() => {
            let known = [
                "name",
                "label",
                "template",
                "hash",
                "max_active_keys_per_owner",
                "tiers",
                "default_tier",
                "default_metadata",
            ];
            field_error(&mut form.errors, &e, &known);
            apps_page(&state, &session, e.status, form, Flash::err("Check the highlighted fields."), None).await
        }
        Err(e) => error_page(&e),
    }
}

pub async fn delete_app(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    match routes::apps::delete(session.admin(), AxumState(state), AppPath::from_panel(&id)).await {
        Ok(_) => redirect("/admin/apps?ok=app_deleted"),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- one application and its keys

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
    #[serde(skip)]
    errors: FormErrors,
}

impl KeyForm {
    fn has(&self, field: &str) -> bool {
        self.errors.has(field)
    }
    fn error(&self, field: &str) -> &str {
        self.errors.error(field)
    }

    fn request(&mut self) -> Option<NewKeyRequest> {
        let optional = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let mut request = NewKeyRequest {
            name: optional(&self.name),
            owner_id: optional(&self.owner_id),
            tier: optional(&self.tier),
            ..NewKeyRequest::default()
        };
        let scopes: Vec<String> = self.scopes.split_whitespace().map(str::to_owned).collect();
        if !scopes.is_empty() {
            request.scopes = Some(scopes);
        }
        if let Some(days) = optional(&self.expires_in_days) {
            match days.parse::<u32>() {
                Ok(days) => request.expires_in_days = Some(days),
                Err(_) => self.errors.set("expires_in_days", "a whole number of days from 1 to 3650"),
            }
        }
        if let Some(text) = optional(&self.metadata) {
            match serde_json::from_str::<Value>(&text) {
                Ok(value) => request.metadata = Some(value),
                Err(e) => self.errors.set("metadata", format!("not valid JSON: {e}")),
            }
        }
        self.errors.is_empty().then_some(request)
    }
}

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

struct AppPageParts {
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
}

async fn app_page(state: &Arc<State>, session: &PanelSession, id: &str, parts: AppPageParts) -> Response {
    match build_app_page(state, session, id, parts).await {
        Ok(page) => page,
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) => error_page(&e),
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
        });
    }
    let first = format!("/admin/apps/{}?status={filter_status}&q={}", body.app.id, super::encode_path(&search));
    let next_page = next_cursor.map(|c| format!("{first}&cursor={c}"));
    let first_page = cursor.is_some().then_some(first);
    let flash = parts.flash.or_else(|| {
        let mut params = BTreeMap::new();
        if let Some(ok) = parts.filter.ok {
            params.insert("ok".to_owned(), ok);
        }
        if let Some(err) = parts.filter.err {
            params.insert("err".to_owned(), err);
        }
        flash_of(&params)
    });
    let address = format!("/admin/apps/{}", body.app.id);
    let page = AppPage {
        layout: layout(body.app.name.clone(), "apps", Some(session), flash),
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

/// Keys shown on one page of an application's key table.
const KEYS_PER_PAGE: usize = 50;

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

pub async fn app(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Query(filter): Query<KeyFilter>,
) -> Response {
    app_page(&state, &session, &id, AppPageParts { filter, ..AppPageParts::new() }).await
}

pub async fn create_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(mut form): Form<KeyForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let Some(request) = form.request() else {
        let parts = AppPageParts {
            status: StatusCode::BAD_REQUEST,
            key_form: form,
            flash: Flash::err("Check the highlighted fields."),
            ..AppPageParts::new()
        };
        return app_page(&state, &session, &id, parts).await;
    };
    match routes::apps::create_key(
        session.admin(),
        AxumState(state.clone()),
        AppPath::from_panel(&id),
        ApiJson(request),
    )
    .await
    {
        Ok((_, ApiJson(created))) => {
            let parts = AppPageParts {
                flash: Flash::ok("Key created."),
                modal: SecretModal::once("New key", created.key),
                ..AppPageParts::new()
            };
            app_page(&state, &session, &id, parts).await
        }
        Err(e) if e.status.is_client_error() && e.status != StatusCode::NOT_FOUND => {
            field_error(&mut form.errors, &e, &["name", "owner_id", "scopes", "tier", "expires_in_days", "metadata"]);
            let parts = AppPageParts {
                status: e.status,
                key_form: form,
                flash: Flash::err(e.message.clone()),
                ..AppPageParts::new()
            };
            app_page(&state, &session, &id, parts).await
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) => error_page(&e),
    }
}

pub async fn regenerate_secret(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    match routes::apps::regenerate_secret(session.admin(), AxumState(state.clone()), AppPath::from_panel(&id)).await {
        Ok(ApiJson(secret)) => {
            let parts = AppPageParts {
                flash: Flash::ok("Client secret regenerated; the old one no longer works."),
                modal: SecretModal::once("New client secret", secret.client_secret),
                ..AppPageParts::new()
            };
            app_page(&state, &session, &id, parts).await
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) => error_page(&e),
    }
}

#[derive(Deserialize)]
pub struct RecoverableForm {
    #[serde(default)]
    csrf: String,
    /// `on` or `off`.
    #[serde(default)]
    recoverable: String,
}

/// Turns keeping keys recoverable on (for keys created or rotated afterwards) or off
/// (deleting the sealed copies), as `PATCH /v1/apps/{id}` does.
pub async fn set_recoverable(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(form): Form<RecoverableForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let (on, done) = match form.recoverable.as_str() {
        "on" => (true, "Keys created or rotated from now on can be revealed."),
        "off" => (false, "Keys are no longer kept; every sealed copy was deleted."),
        _ => return error_page(&ApiError::invalid("recoverable", "must be on or off")),
    };
    let patch = crate::apps::AppPatch { recoverable: Some(on), ..Default::default() };
    match routes::apps::update(session.admin(), AxumState(state.clone()), AppPath::from_panel(&id), ApiJson(patch))
        .await
    {
        Ok(_) => app_page(&state, &session, &id, AppPageParts { flash: Flash::ok(done), ..AppPageParts::new() }).await,
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- one key

/// The application page a key belongs to.
async fn app_of_key(state: &State, id: &str) -> Option<String> {
    let id: KeyId = id.parse().ok()?;
    state.store.get(id).await.ok().flatten().and_then(|r| r.namespace.clone())
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grace_seconds: String,
}

pub async fn rotate_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
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
            let parts = AppPageParts {
                flash: Flash::ok(message),
                modal: SecretModal::once("New key", rotated.key),
                ..AppPageParts::new()
            };
            app_page(&state, &session, &app_id, parts).await
        }
        Err(e) if e.code == "ALREADY_REVOKED" => redirect(&format!("/admin/apps/{app_id}?err=already_revoked")),
        Err(e) if e.status.is_client_error() => {
            let parts = AppPageParts { status: e.status, flash: Flash::err(e.message.clone()), ..AppPageParts::new() };
            app_page(&state, &session, &app_id, parts).await
        }
        Err(e) => error_page(&e),
    }
}

/// Revoke, delete, enable or disable a key, then back to its application.
pub async fn key_action(
    session: PanelSession,
    AxumState(state): Shared,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    if action == "reveal" {
        // The reveal call comes from the page's script, with the token in a header instead.
        return super::forbidden("Reveal with the button on the page.");
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
        Err(e) if e.code == "ALREADY_REVOKED" => redirect(&format!("/admin/apps/{app_id}?err=already_revoked")),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect(&format!("/admin/apps/{app_id}?err=not_found")),
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/keys/{id}/reveal` from the page's script: the CSRF token is a header.
pub async fn reveal_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(refused) = session.check_csrf(token) {
        return refused.into_response();
    }
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
}

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
    #[serde(skip)]
    errors: FormErrors,
}

impl EditForm {
    fn has(&self, field: &str) -> bool {
        self.errors.has(field)
    }
    fn error(&self, field: &str) -> &str {
        self.errors.error(field)
    }

    fn request(&mut self) -> Option<KeyPatchRequest> {
        let name = Some(self.name.trim().to_owned()).filter(|n| !n.is_empty());
        let scopes: Vec<String> = self.scopes.split_whitespace().map(str::to_owned).collect();
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
            text => match serde_json::from_str::<Value>(text) {
                Ok(value) => Some(Some(value)),
                Err(e) => {
                    self.errors.set("metadata", format!("not valid JSON: {e}"));
                    None
                }
            },
        };
        if !self.errors.is_empty() {
            return None;
        }
        Some(KeyPatchRequest {
            name: Some(name),
            metadata,
            scopes: Some(scopes),
            expires_at,
            ..KeyPatchRequest::default()
        })
    }
}

async fn edit_page(
    state: &Arc<State>,
    session: &PanelSession,
    id: &str,
    form: Option<EditForm>,
    status: StatusCode,
    flash: Option<Flash>,
) -> Response {
    let ApiJson(key) = match routes::keys::get(session.admin(), AxumState(state.clone()), KeyPath::from_panel(id)).await
    {
        Ok(key) => key,
        Err(e) if e.status == StatusCode::NOT_FOUND => return redirect("/admin/apps?err=not_found"),
        Err(e) => return error_page(&e),
    };
    let app_id = key.app_id.clone().unwrap_or_default();
    let app_name = state.app_by_text(&app_id).map(|r| r.app.name.clone()).unwrap_or_default();
    let form = form.unwrap_or_else(|| EditForm {
        name: key.name.clone().unwrap_or_default(),
        scopes: key.scopes.join(" "),
        expires_on: key.expires_at.map(|at| at.date().to_string()).unwrap_or_default(),
        expires_was: key.expires_at.map(|at| at.date().to_string()).unwrap_or_default(),
        metadata: key
            .metadata
            .as_ref()
            .map(|m| serde_json::to_string_pretty(m).unwrap_or_default())
            .unwrap_or_default(),
        ..EditForm::default()
    });
    let page = EditKeyPage {
        layout: layout("Edit key", "apps", Some(session), flash),
        app_id,
        app_name,
        key_id: id.to_owned(),
        masked: key.masked,
        form,
    };
    render(status, &page)
}

pub async fn edit_key_page(session: PanelSession, AxumState(state): Shared, Path(id): Path<String>) -> Response {
    edit_page(&state, &session, &id, None, StatusCode::OK, None).await
}

pub async fn edit_key(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Form(mut form): Form<EditForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let Some(request) = form.request() else {
        return edit_page(
            &state,
            &session,
            &id,
            Some(form),
            StatusCode::BAD_REQUEST,
            Flash::err("Check the highlighted fields."),
        )
        .await;
    };
    match routes::keys::update(session.admin(), AxumState(state.clone()), KeyPath::from_panel(&id), ApiJson(request))
        .await
    {
        Ok(ApiJson(key)) => redirect(&format!("/admin/apps/{}?ok=updated", key.app_id.unwrap_or_default())),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/apps?err=not_found"),
        Err(e) if e.status.is_client_error() => {
            field_error(&mut form.errors, &e, &["name", "scopes", "expires_at", "metadata"]);
            if form.errors.has("expires_at") {
                let message = form.errors.error("expires_at").to_owned();
                form.errors.set("expires_on", message);
            }
            edit_page(&state, &session, &id, Some(form), e.status, Flash::err("Check the highlighted fields.")).await
        }
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- service key

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    masked: String,
    /// The service key comes from `KEYPAL_SERVICE_KEY`: no rotate form.
    pinned: bool,
    modal: Option<SecretModal>,
}

fn mask(secret: &str) -> String {
    let start: String = secret.chars().take(10).collect();
    let end: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{start}…{end}")
}

async fn settings_page(
    state: &Arc<State>,
    session: &PanelSession,
    status: StatusCode,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
) -> Response {
    match state.service_key().await {
        Ok(key) => render(
            status,
            &SettingsPage {
                layout: layout("Service key", "settings", Some(session), flash),
                masked: mask(&key),
                pinned: state.service_key_pinned(),
                modal: modal.map(|m| m.on("/admin/settings")),
            },
        ),
        Err(e) => error_page(&e),
    }
}

pub async fn settings(session: PanelSession, AxumState(state): Shared) -> Response {
    settings_page(&state, &session, StatusCode::OK, None, None).await
}

pub async fn reveal_service_key(
    session: PanelSession,
    AxumState(state): Shared,
    headers: axum::http::HeaderMap,
) -> Response {
    let token = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(refused) = session.check_csrf(token) {
        return refused.into_response();
    }
    routes::admin::service_key(session.admin(), AxumState(state)).await.into_response()
}

pub async fn rotate_service_key(
    session: PanelSession,
    AxumState(state): Shared,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refused) = session.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    match state.rotate_service_key(session.admin().context()).await {
        Ok(key) => {
            let modal = SecretModal::once("New service key", key);
            let flash = Flash::ok("Service key rotated; the old one no longer works.");
            settings_page(&state, &session, StatusCode::OK, flash, modal).await
        }
        Err(e) if e.code == "SERVICE_KEY_PINNED" => {
            settings_page(&state, &session, e.status, Flash::err(e.message), None).await
        }
        Err(e) => error_page(&e),
    }
}

// ---------------------------------------------------------------- audit log

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    apps: Vec<Choice>,
    actions: Vec<Choice>,
    events: Vec<EventRow>,
    filter_owner: String,
    next_page: Option<String>,
}

struct EventRow {
    at: String,
    action: String,
    /// The application's name, or its id when it no longer exists.
    app: String,
    key_id: String,
    owner: String,
    actor: String,
    ip: String,
    /// The event's details as compact JSON (never a secret).
    details: String,
}

#[derive(Deserialize, Default)]
pub struct AuditFilter {
    app_id: Option<String>,
    action: Option<String>,
    owner_id: Option<String>,
    cursor: Option<String>,
}

pub async fn audit(session: PanelSession, AxumState(state): Shared, Query(filter): Query<AuditFilter>) -> Response {
    let filter_app = filter.app_id.clone().filter(|a| !a.is_empty()).unwrap_or_default();
    let filter_action = filter.action.clone().filter(|a| audit_actions().any(|known| known == a)).unwrap_or_default();
    let filter_owner = filter.owner_id.clone().map(|o| o.trim().to_owned()).unwrap_or_default();
    let params = routes::admin::AuditParams {
        app_id: filter_app.parse().ok(),
        action: Some(filter_action.clone()).filter(|a| !a.is_empty()),
        owner_id: Some(filter_owner.clone()).filter(|o| !o.is_empty()),
        cursor: filter.cursor.as_deref().and_then(|c| c.parse().ok()),
        limit: Some(50),
        ..routes::admin::AuditParams::default()
    };
    let list = match routes::admin::audit(session.admin(), AxumState(state.clone()), ApiQuery(params)).await {
        Ok(ApiJson(list)) => list,
        Err(e) => return error_page(&e),
    };
    let runtimes = state.apps();
    let app_name = |namespace: String| {
        runtimes.iter().find(|r| r.app.namespace() == namespace).map_or(namespace, |r| r.app.name.clone())
    };
    let events = list
        .events
        .into_iter()
        .map(|e| EventRow {
            at: format::date_time(e.at),
            action: e.action,
            app: e.app_id.map(&app_name).unwrap_or_default(),
            key_id: e.key_id.map(|k| k.to_string()).unwrap_or_default(),
            owner: e.owner_id.unwrap_or_default(),
            actor: e.actor,
            ip: e.ip.unwrap_or_default(),
            details: e.details.map(|d| d.to_string()).unwrap_or_default(),
        })
        .collect();
    let next_page = list.next_cursor.map(|c| {
        format!(
            "/admin/audit?app_id={filter_app}&action={filter_action}&owner_id={}&cursor={c}",
            super::encode_path(&filter_owner)
        )
    });
    let apps = choices(
        runtimes
            .iter()
            .map(|r| (r.app.namespace(), r.app.name.clone()))
            .collect::<Vec<_>>()
            .iter()
            .map(|(v, l)| (v.as_str(), l.as_str())),
        &filter_app,
    );
    let page = AuditPage {
        layout: layout("Audit log", "audit", Some(&session), None),
        apps,
        actions: choices(audit_actions().map(|a| (a, a)), &filter_action),
        events,
        filter_owner,
        next_page,
    };
    render(StatusCode::OK, &page)
}

// ---------------------------------------------------------------- static files

/// A method an address does not take.
pub async fn wrong_method() -> Response {
    let page = ErrorPage::new("Not allowed", "This address does not take that kind of request.");
    (StatusCode::METHOD_NOT_ALLOWED, page.html()).into_response()
}

/// Any other address under `/admin`: a page, with the panel's headers.
pub async fn not_found() -> Response {
    let page = ErrorPage::new("Not found", "There is no such page in the admin panel.");
    (StatusCode::NOT_FOUND, page.html()).into_response()
}

pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../static/app.css"))
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../static/app.js"))
}
