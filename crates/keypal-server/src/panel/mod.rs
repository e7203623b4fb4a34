//! The admin web panel at `/admin`: server-rendered pages (askama), a small script for
//! dialogs, copying and revealing, and nothing loaded from elsewhere.
//!
//! Every state-changing request is a POST carrying the session's CSRF token (a form
//! field, or the `x-csrf-token` header for the two reveal calls), and is refused when
//! its `Origin` is another site. The session cookie is SameSite=Strict. Pages are sent
//! with a strict Content-Security-Policy: scripts and styles from this server only, no
//! inline code. Secrets never appear in URLs: new keys and secrets are shown in the
//! answer to the POST that made them.

mod format;
mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use subtle::ConstantTimeEq;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{self, Caller, SESSION_COOKIE};
use crate::state::State;

/// The panel's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A route's methods, answering others with the panel's own 405 page (inside the
/// security headers' layers, unlike the service's JSON fallback).
fn page(methods: MethodRouter<Arc<State>>) -> MethodRouter<Arc<State>> {
    methods.fallback(pages::wrong_method)
}

/// The panel's routes, with its security headers.
pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/admin", page(get(pages::home)))
        .route("/admin/", page(get(pages::home)))
        .route("/admin/login", page(get(pages::login_page).post(pages::login)))
        .route("/admin/logout", page(post(pages::logout)))
        .route("/admin/apps", page(get(pages::apps).post(pages::create_app)))
        .route("/admin/apps/{id}", page(get(pages::app)))
        .route("/admin/apps/{id}/delete", page(post(pages::delete_app)))
        .route("/admin/apps/{id}/keys", page(post(pages::create_key)))
        .route("/admin/apps/{id}/client-secret", page(post(pages::regenerate_secret)))
        .route("/admin/apps/{id}/recoverable", page(post(pages::set_recoverable)))
        .route("/admin/keys/{id}/edit", page(get(pages::edit_key_page).post(pages::edit_key)))
        .route("/admin/keys/{id}/rotate", page(post(pages::rotate_key)))
        .route("/admin/keys/{id}/reveal", page(post(pages::reveal_key)))
        .route("/admin/keys/{id}/{action}", page(post(pages::key_action)))
        .route("/admin/settings", page(get(pages::settings)))
        .route("/admin/service-key/reveal", page(post(pages::reveal_service_key)))
        .route("/admin/service-key/rotate", page(post(pages::rotate_service_key)))
        .route("/admin/audit", page(get(pages::audit)))
        .route("/admin/static/app.css", page(get(pages::stylesheet)))
        .route("/admin/static/app.js", page(get(pages::script)))
        .route("/admin/{*rest}", any(pages::not_found))
        .layer(SetResponseHeaderLayer::overriding(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ))
        // Not `no-referrer`: under it browsers send `Origin: null` with the panel's own
        // form posts, which the same-origin check must refuse. `same-origin` still keeps
        // panel URLs from other sites.
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// A message shown at the top of a page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok` or `err` (the CSS class).
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

impl Flash {
    fn ok(message: impl Into<String>) -> Option<Self> {
        Some(Flash { kind: "ok", message: message.into() })
    }
    fn err(message: impl Into<String>) -> Option<Self> {
        Some(Flash { kind: "err", message: message.into() })
    }
}

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The page title.
    pub title: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// Whether an admin is logged in (shows the navigation).
    pub signed_in: bool,
    /// The session's CSRF token (empty when logged out).
    pub csrf: String,
    /// A message.
    pub flash: Option<Flash>,
}

/// A secret shown once in a modal dialog.
#[derive(Debug, Clone)]
pub struct SecretModal {
    /// The dialog title.
    pub title: String,
    /// The secret.
    pub secret: String,
    /// The warning under the title.
    pub warning: &'static str,
    /// The page's own address: the script puts it in the history in place of the POST
    /// that answered with the secret, so reloading does not send the form again.
    pub page: String,
}

impl SecretModal {
    fn once(title: impl Into<String>, secret: impl Into<String>) -> Option<Self> {
        Some(SecretModal {
            title: title.into(),
            secret: secret.into(),
            warning: "Copy it now: it is shown only once and cannot be shown again.",
            page: String::new(),
        })
    }

    fn on(self, page: &str) -> Self {
        SecretModal { page: page.to_owned(), ..self }
    }
}

/// Form values and the errors next to each field.
#[derive(Debug, Clone, Default)]
pub struct FormErrors(BTreeMap<String, String>);

impl FormErrors {
    /// Whether `field` has an error.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
    /// The error of `field` (empty when none).
    pub fn error(&self, field: &str) -> &str {
        self.0.get(field).map_or("", String::as_str)
    }
    fn set(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.insert(field.into(), message.into());
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A logged-in admin, seen from the panel: unauthenticated page requests are sent to
/// the login page (and back afterwards); cross-site POSTs are refused.
pub struct PanelSession {
    /// The session's CSRF token.
    pub csrf: String,
    /// Where the request came from.
    pub caller: Caller,
}

impl PanelSession {
    /// Refuses a state change whose CSRF token is not this session's.
    fn check_csrf(&self, presented: &str) -> Result<(), CsrfRefused> {
        if bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) && !presented.is_empty() {
            Ok(())
        } else {
            Err(CsrfRefused)
        }
    }

    fn admin(&self) -> auth::Admin {
        auth::Admin { caller: self.caller.clone() }
    }
}

/// A state change without this session's CSRF token: refused with 403.
pub struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        forbidden("The form has expired or did not come from this site. Reload the page and try again.")
    }
}

/// The CSRF token of a session: a keyed digest of its token, so nothing more is stored.
fn csrf_of(state: &State, token: &str) -> String {
    state.secrets.digest(&format!("csrf:{token}"))
}

impl FromRequestParts<Arc<State>> for PanelSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, Response> {
        if parts.method != Method::GET && !auth::same_origin(&parts.headers) {
            return Err(forbidden("Cross-site requests are refused."));
        }
        let token = auth::cookie(parts, SESSION_COOKIE).map(str::to_owned);
        let valid = match &token {
            Some(token) => auth::session_is_valid(state, token).await.map_err(|e| error_page(&e))?,
            None => false,
        };
        let Some(token) = token.filter(|_| valid) else {
            // Back to this page (with its filters) after logging in; after a POST, to the applications.
            let next = match parts.uri.path_and_query() {
                Some(page) if parts.method == Method::GET => page.as_str(),
                _ => "/admin/apps",
            };
            return Err(redirect(&format!("/admin/login?next={}", encode_path(next))));
        };
        let caller = Caller::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        Ok(PanelSession { csrf: csrf_of(state, &token), caller })
    }
}

/// A `303 See Other` to a path of this server.
pub fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/admin/apps"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// Percent-encodes the characters of a path that a query value cannot hold.
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Where to go after logging in: a panel path, never another site.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with("/admin") && !next.starts_with("//") && !next.contains("://") && !next.contains('\\');
    if local { next } else { "/admin/apps" }
}

fn forbidden(message: &str) -> Response {
    let page = pages::ErrorPage::new("Refused", message);
    (StatusCode::FORBIDDEN, page.html()).into_response()
}

/// An error page for a failure of the server (never a secret in it).
fn error_page(error: &crate::error::ApiError) -> Response {
    let page = pages::ErrorPage::new("Something went wrong", &error.message);
    (error.status, page.html()).into_response()
}

/// Static text with its content type.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body).into_response()
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
        assert_eq!(encode_path("/admin/apps/a b?c"), "/admin/apps/a%20b%3Fc");
    }
}
