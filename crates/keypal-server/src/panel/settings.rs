//! The service key: `/admin/settings`, revealing and rotating it, as
//! `GET /v1/service-key` and `POST /v1/service-key/rotate` do.

use std::sync::Arc;

use askama::Template;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::form::CsrfForm;
use super::page::{Flash, Layout, SecretModal, error_page, render};
use super::session::{CsrfHeader, PanelSession, Posted};
use crate::auth::AdminSession;
use crate::extract::ApiJson;
use crate::routes;
use crate::state::State;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    masked: String,
    /// The service key comes from `KEYPAL_SERVICE_KEY`: no rotate form.
    pinned: bool,
    modal: Option<SecretModal>,
}

/// The first ten and the last four characters of a secret.
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
    match routes::admin::service_key(AdminSession(session.admin()), AxumState(state.clone())).await {
        Ok(ApiJson(key)) => render(
            status,
            &SettingsPage {
                layout: Layout::signed_in("Service key", "settings", session, flash),
                masked: mask(&key.service_key),
                pinned: state.service_key_pinned(),
                modal: modal.map(|m| m.on("/admin/settings")),
            },
        ),
        Err(e) => error_page(&e),
    }
}

/// `GET /admin/settings`.
pub async fn settings(session: PanelSession, AxumState(state): Shared) -> Response {
    settings_page(&state, &session, StatusCode::OK, None, None).await
}

/// `POST /admin/service-key/reveal` from the page's script (the CSRF token is a
/// header): the JSON API's answer.
pub async fn reveal_service_key(session: PanelSession, AxumState(state): Shared, _: CsrfHeader) -> Response {
    routes::admin::service_key(AdminSession(session.admin()), AxumState(state)).await.into_response()
}

/// `POST /admin/service-key/rotate`: the new service key, shown once; refused while
/// the environment sets it.
pub async fn rotate_service_key(session: PanelSession, AxumState(state): Shared, _: Posted<CsrfForm>) -> Response {
    match routes::admin::rotate_service_key(AdminSession(session.admin()), AxumState(state.clone())).await {
        Ok(ApiJson(key)) => {
            let modal = SecretModal::once("New service key", key.service_key);
            let flash = Flash::ok("Service key rotated; the old one no longer works.");
            settings_page(&state, &session, StatusCode::OK, flash, modal).await
        }
        Err(e) if e.code == "SERVICE_KEY_PINNED" => {
            settings_page(&state, &session, e.status, Flash::err(e.message), None).await
        }
        Err(e) => error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_secret_shows_its_ends_only() {
        assert_eq!(mask("kp_svc_R2H7gHhbzposmJlW0SiWOUUUHH6uMaUba0C1Cc8Q"), "kp_svc_R2H…Cc8Q");
    }
}
