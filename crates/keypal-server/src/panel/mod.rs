//! The admin web panel at `/admin`: server-rendered pages (askama), a small script for
//! dialogs, copying and revealing, and nothing loaded from elsewhere.
//!
//! Every state-changing request is a POST carrying the session's CSRF token (a form
//! field, or the `x-csrf-token` header for the two reveal calls), and is refused when
//! its `Origin` is another site. The session cookie is SameSite=Strict. Pages are sent
//! with a strict Content-Security-Policy: scripts and styles from this server only, no
//! inline code. Secrets never appear in URLs: new keys and secrets are shown in the
//! answer to the POST that made them.
//!
//! A module per page: `login`, `apps` (the applications), `app` (one application
//! and its keys), `usage` (an application's usage dashboard), `key` (one key, with its history), `settings` (the service key), `tokens` (management
//! tokens), `webhooks` (webhooks and their deliveries) and `audit`. What they share: `page` (the frame, flash messages, the secret
//! dialog, error pages and redirects), `form` (typed text into the API's requests,
//! errors next to fields), `session` (the admin's session and the CSRF checks) and
//! `format` (times, states and charts). Every change a page makes, and every rule it follows, is the JSON API's:
//! the handlers call the functions of `crate::routes`, never the store, to change
//! anything.

mod app;
mod apps;
mod audit;
mod form;
mod format;
mod key;
mod login;
mod page;
mod session;
mod settings;
mod tokens;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY};
use axum::http::{HeaderName, HeaderValue};
use axum::routing::{MethodRouter, any, get, post};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::State;

/// The state the panel's handlers take.
type Shared = AxumState<Arc<State>>;

/// The panel's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A route's methods, answering others with the panel's own 405 page (inside the
/// security headers' layers, unlike the service's JSON fallback).
fn page(methods: MethodRouter<Arc<State>>) -> MethodRouter<Arc<State>> {
    methods.fallback(page::wrong_method)
}

/// The panel's routes, with its security headers.
pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/admin", page(get(apps::home)))
        .route("/admin/", page(get(apps::home)))
        .route("/admin/login", page(get(login::login_page).post(login::login)))
        .route("/admin/logout", page(post(login::logout)))
        .route("/admin/apps", page(get(apps::apps).post(apps::create_app)))
        .route("/admin/apps/{id}", page(get(app::app)))
        .route("/admin/apps/{id}/usage", page(get(usage::usage)))
        .route("/admin/apps/{id}/delete", page(post(apps::delete_app)))
        .route("/admin/apps/{id}/keys", page(post(app::create_key)))
        .route("/admin/apps/{id}/client-secret", page(post(app::regenerate_secret)))
        .route("/admin/apps/{id}/recoverable", page(post(app::set_recoverable)))
        .route("/admin/keys/{id}/edit", page(get(key::edit_key_page).post(key::edit_key)))
        .route("/admin/keys/{id}/rotate", page(post(key::rotate_key)))
        .route("/admin/keys/{id}/reveal", page(post(key::reveal_key)))
        .route("/admin/keys/{id}/{action}", page(post(key::key_action)))
        .route("/admin/settings", page(get(settings::settings)))
        .route("/admin/service-key/reveal", page(post(settings::reveal_service_key)))
        .route("/admin/service-key/rotate", page(post(settings::rotate_service_key)))
        .route("/admin/audit", page(get(audit::audit)))
        .route("/admin/tokens", page(get(tokens::tokens).post(tokens::create_token)))
        .route("/admin/tokens/{id}/revoke", page(post(tokens::revoke_token)))
        .route("/admin/webhooks", page(get(webhooks::webhooks).post(webhooks::create_webhook)))
        .route("/admin/webhooks/{id}", page(get(webhooks::webhook).post(webhooks::edit_webhook)))
        .route("/admin/webhooks/{id}/test", page(post(webhooks::test_webhook)))
        .route("/admin/webhooks/{id}/secret", page(post(webhooks::rotate_secret)))
        .route("/admin/webhooks/{id}/delete", page(post(webhooks::delete_webhook)))
        .route("/admin/webhooks/{id}/deliveries/{delivery_id}/retry", page(post(webhooks::retry_delivery)))
        .route("/admin/static/app.css", page(get(page::stylesheet)))
        .route("/admin/static/app.js", page(get(page::script)))
        .route("/admin/{*rest}", any(page::not_found))
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
