//! Who may use the panel: the logged-in admin's session, and the CSRF token that every
//! state-changing request must carry.
//!
//! [`PanelSession`] sends strangers to the login page and refuses cross-site POSTs.
//! [`Posted`] (a form's `csrf` field) and [`CsrfHeader`] (the script's `x-csrf-token`
//! header) then refuse a request whose token is not this session's, before the handler
//! runs: they come after [`PanelSession`] in a handler's arguments.

use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::page::{encode_path, error_page, forbidden, redirect};
use crate::auth::{self, Caller, SESSION_COOKIE};
use crate::state::State;

/// A logged-in admin, seen from the panel: unauthenticated page requests are sent to
/// the login page (and back afterwards); cross-site POSTs are refused.
pub struct PanelSession {
    /// The session's CSRF token.
    pub csrf: String,
    /// Where the request came from.
    pub caller: Caller,
}

impl PanelSession {
    /// The admin, for the JSON API's handlers.
    pub fn admin(&self) -> auth::Admin {
        auth::Admin::session(self.caller.clone())
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
        let csrf = csrf_of(state, &token);
        // For the token checks of `Posted` and `CsrfHeader`, later in the same request.
        parts.extensions.insert(SessionCsrf(csrf.clone()));
        Ok(PanelSession { csrf, caller })
    }
}

/// The CSRF token of the request's session, once [`PanelSession`] has accepted it.
#[derive(Clone)]
struct SessionCsrf(String);

/// Refuses `presented` unless it is the token of the request's session (none without one).
fn check_csrf(session: Option<&SessionCsrf>, presented: &str) -> Result<(), CsrfRefused> {
    match session {
        Some(SessionCsrf(csrf)) if !presented.is_empty() && bool::from(presented.as_bytes().ct_eq(csrf.as_bytes())) => {
            Ok(())
        }
        _ => Err(CsrfRefused),
    }
}

/// A state change without this session's CSRF token: refused with 403.
pub struct CsrfRefused;

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        forbidden("The form has expired or did not come from this site. Reload the page and try again.")
    }
}

/// A form that carries the CSRF token of the page it was posted from.
pub trait CarriesCsrf {
    /// The token, as posted.
    fn csrf(&self) -> &str;
}

/// A form posted from a page of this session: read, then refused with 403 unless its
/// token is the session's.
pub struct Posted<T>(pub T);

impl<T: DeserializeOwned + CarriesCsrf> FromRequest<Arc<State>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<State>) -> Result<Self, Response> {
        let session = request.extensions().get::<SessionCsrf>().cloned();
        let Form(form) = Form::<T>::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        check_csrf(session.as_ref(), form.csrf()).map_err(IntoResponse::into_response)?;
        Ok(Posted(form))
    }
}

/// A call from the page's script whose `x-csrf-token` header is the session's token
/// (refused with 403 otherwise).
pub struct CsrfHeader;

impl FromRequestParts<Arc<State>> for CsrfHeader {
    type Rejection = CsrfRefused;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<State>) -> Result<Self, CsrfRefused> {
        let token = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
        check_csrf(parts.extensions.get::<SessionCsrf>(), token).map(|()| CsrfHeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sessions_own_token_passes() {
        let session = SessionCsrf("token".to_owned());
        assert!(check_csrf(Some(&session), "token").is_ok());
        assert!(check_csrf(Some(&session), "other").is_err());
        assert!(check_csrf(Some(&session), "").is_err());
        assert!(check_csrf(Some(&SessionCsrf(String::new())), "").is_err(), "an empty token never passes");
        assert!(check_csrf(None, "token").is_err(), "no session, no state change");
    }
}
