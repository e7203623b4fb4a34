//! The audit log: `/admin/audit`, filtered by application, action and owner, as
//! `GET /v1/audit` answers it.

use askama::Template;
use axum::extract::{Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use keypal::Action;
use serde::Deserialize;

use super::Shared;
use super::format;
use super::page::{Choice, Layout, choices, encode_path, error_page, render};
use super::session::PanelSession;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes;
use crate::routes::admin::AuditParams;

/// Events on one page of the log.
const EVENTS_PER_PAGE: u32 = 50;

/// The actions the audit log holds (every one but `verified`, which goes to event sinks only).
fn audit_actions() -> impl Iterator<Item = &'static str> {
    Action::ALL.into_iter().filter(|a| *a != Action::Verified).map(Action::as_str)
}

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

/// `GET /admin/audit` parameters.
#[derive(Deserialize, Default)]
pub struct AuditFilter {
    app_id: Option<String>,
    action: Option<String>,
    owner_id: Option<String>,
    cursor: Option<String>,
}

/// `GET /admin/audit`.
pub async fn audit(session: PanelSession, AxumState(state): Shared, Query(filter): Query<AuditFilter>) -> Response {
    let filter_app = filter.app_id.clone().filter(|a| !a.is_empty()).unwrap_or_default();
    let filter_action = filter.action.clone().filter(|a| audit_actions().any(|known| known == a)).unwrap_or_default();
    let filter_owner = filter.owner_id.clone().map(|o| o.trim().to_owned()).unwrap_or_default();
    let params = AuditParams {
        app_id: filter_app.parse().ok(),
        action: Some(filter_action.clone()).filter(|a| !a.is_empty()),
        owner_id: Some(filter_owner.clone()).filter(|o| !o.is_empty()),
        cursor: filter.cursor.as_deref().and_then(|c| c.parse().ok()),
        limit: Some(EVENTS_PER_PAGE),
        ..AuditParams::default()
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
            encode_path(&filter_owner)
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
        layout: Layout::signed_in("Audit log", "audit", &session, None),
        apps,
        actions: choices(audit_actions().map(|a| (a, a)), &filter_action),
        events,
        filter_owner,
        next_page,
    };
    render(StatusCode::OK, &page)
}
