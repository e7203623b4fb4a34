//! Management tokens: `/admin/tokens`, their list, the new-token form (the token is
//! shown once, in the secret dialog) and revoking one, as `GET /v1/tokens`,
//! `POST /v1/tokens` and `DELETE /v1/tokens/{id}` do.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;

use super::Shared;
use super::form::{CsrfForm, FormErrors};
use super::format;
use super::page::{Flash, Layout, SecretModal, error_page, redirect, render};
use super::session::{CarriesCsrf, PanelSession, Posted};
use crate::extract::{ApiJson, TokenPath};
use crate::routes;
use crate::state::State;
use crate::tokens::NewToken;

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    tokens: Vec<TokenRow>,
    form: TokenForm,
    modal: Option<SecretModal>,
}

/// A token as the page lists it.
struct TokenRow {
    id: String,
    name: String,
    created: String,
    expiry: String,
    /// The expiry's badge class.
    expiry_class: &'static str,
    last_used: String,
}

/// The new-token form: what was typed, and errors.
#[derive(Deserialize, Default)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(skip)]
    errors: FormErrors,
}

impl CarriesCsrf for TokenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The fields of the form, which the API's refusals may name.
const TOKEN_FIELDS: [&str; 2] = ["name", "expires_in_days"];

impl TokenForm {
    /// The API request, or the form with errors next to its fields.
    fn request(&mut self) -> Option<NewToken> {
        let days = self.errors.whole_number("expires_in_days", &self.expires_in_days, "a whole number from 1 to 3650");
        self.errors.is_empty().then(|| NewToken { name: self.name.trim().to_owned(), expires_in_days: days })
    }
}

/// The tokens' page with `form` under them.
async fn tokens_page(
    state: &Arc<State>,
    session: &PanelSession,
    status: StatusCode,
    form: TokenForm,
    flash: Option<Flash>,
    modal: Option<SecretModal>,
) -> Response {
    let list = match routes::tokens::list(session.admin(), AxumState(state.clone())).await {
        Ok(ApiJson(list)) => list,
        Err(e) => return error_page(&e),
    };
    let now = OffsetDateTime::now_utc();
    let tokens = list
        .tokens
        .into_iter()
        .map(|token| {
            let (expiry, expiry_class) = format::expiry(token.expires_at, now);
            TokenRow {
                id: token.id.to_string(),
                name: token.name,
                created: format::date(token.created_at),
                expiry,
                expiry_class,
                last_used: format::last_used(token.last_used_at, now),
            }
        })
        .collect();
    let layout = Layout::signed_in("Management tokens", "tokens", session, flash);
    render(status, &TokensPage { layout, tokens, form, modal: modal.map(|m| m.on("/admin/tokens")) })
}

/// `GET /admin/tokens`.
pub async fn tokens(
    session: PanelSession,
    AxumState(state): Shared,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let flash = Flash::of_codes(params.get("ok").map(String::as_str), params.get("err").map(String::as_str));
    tokens_page(&state, &session, StatusCode::OK, TokenForm::default(), flash, None).await
}

/// `POST /admin/tokens`: the new token, shown once, or the form with errors.
pub async fn create_token(
    session: PanelSession,
    AxumState(state): Shared,
    Posted(mut form): Posted<TokenForm>,
) -> Response {
    let Some(request) = form.request() else {
        return tokens_page(&state, &session, StatusCode::BAD_REQUEST, form, Flash::check_fields(), None).await;
    };
    match routes::tokens::create(session.admin(), AxumState(state.clone()), ApiJson(request)).await {
        Ok((_, ApiJson(created))) => {
            let modal = SecretModal::once(format!("Management token {}", created.record.name), created.token);
            let flash = Flash::ok(format!("Management token {} created.", created.record.name));
            tokens_page(&state, &session, StatusCode::OK, TokenForm::default(), flash, modal).await
        }
        Err(e) if e.status.is_client_error() => {
            form.errors.refused(&e, &TOKEN_FIELDS);
            tokens_page(&state, &session, e.status, form, Flash::check_fields(), None).await
        }
        Err(e) => error_page(&e),
    }
}

/// `POST /admin/tokens/{id}/revoke`, as `DELETE /v1/tokens/{id}`.
pub async fn revoke_token(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    _: Posted<CsrfForm>,
) -> Response {
    match routes::tokens::revoke(session.admin(), AxumState(state), TokenPath::from_panel(&id)).await {
        Ok(_) => redirect("/admin/tokens?ok=token_revoked"),
        Err(e) if e.status == StatusCode::NOT_FOUND => redirect("/admin/tokens?err=token_not_found"),
        Err(e) => error_page(&e),
    }
}
