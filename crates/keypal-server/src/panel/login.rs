//! Logging in and out: `/admin/login` and `/admin/logout`. The password check, its
//! throttling and the session cookie are the JSON API's (`POST /v1/session`).

use askama::Template;
use axum::Form;
use axum::extract::{Query, State as AxumState};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::Shared;
use super::form::CsrfForm;
use super::page::{Flash, Layout, error_page, forbidden, redirect, render};
use super::session::{PanelSession, Posted};
use crate::auth::Caller;
use crate::routes;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    error: Option<String>,
    next: String,
}

/// `GET /admin/login` parameters.
#[derive(Deserialize, Default)]
pub struct LoginQuery {
    /// The page to go to once logged in.
    next: Option<String>,
    /// `logged_out` after logging out.
    ok: Option<String>,
}

/// `GET /admin/login`.
pub async fn login_page(Query(query): Query<LoginQuery>) -> Response {
    let flash = query.ok.as_deref().filter(|c| *c == "logged_out").and_then(|_| Flash::ok("Logged out."));
    let next = safe_next(query.next.as_deref().unwrap_or("/admin/apps")).to_owned();
    render(StatusCode::OK, &LoginPage { layout: Layout::public("Log in", flash), error: None, next })
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    password: String,
    #[serde(default)]
    next: String,
}

/// `POST /admin/login`: to the page asked for, with a session cookie; or the form again.
pub async fn login(caller: Caller, AxumState(state): Shared, headers: HeaderMap, form: Form<LoginForm>) -> Response {
    let next = safe_next(&form.next).to_owned();
    match routes::admin::log_in(&state, &caller, &headers, &form.password).await {
        Ok(cookie) => {
            let mut response = redirect(&next);
            response.headers_mut().insert(SET_COOKIE, cookie);
            response
        }
        Err(e) if e.code == "CROSS_SITE" => forbidden("Cross-site requests are refused."),
        Err(e) => {
            let message = if e.status == StatusCode::TOO_MANY_REQUESTS {
                "Too many failed attempts from this address. Wait a few minutes and try again."
            } else if e.status == StatusCode::UNAUTHORIZED {
                "Wrong password."
            } else {
                "Logging in failed; try again."
            };
            let page = LoginPage { layout: Layout::public("Log in", None), error: Some(message.to_owned()), next };
            render(e.status, &page)
        }
    }
}

/// `POST /admin/logout`: ends the session, as `DELETE /v1/session` does.
pub async fn logout(_: PanelSession, AxumState(state): Shared, headers: HeaderMap, _: Posted<CsrfForm>) -> Response {
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

/// Where to go after logging in: a panel path, never another site.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with("/admin") && !next.starts_with("//") && !next.contains("://") && !next.contains('\\');
    if local { next } else { "/admin/apps" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_only_sends_people_back_into_the_panel() {
        assert_eq!(safe_next("/admin/apps/123"), "/admin/apps/123");
        assert_eq!(safe_next("https://evil.example/admin"), "/admin/apps");
        assert_eq!(safe_next("//evil.example"), "/admin/apps");
        assert_eq!(safe_next("/v1/apps"), "/admin/apps");
    }
}
