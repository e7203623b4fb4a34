//! What every page of the panel is made of: the frame (title, navigation, CSRF token),
//! the message at its top, the dialog that shows a secret once, and the answers that
//! are not a page of their own (redirects, error pages, the static files).

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::session::PanelSession;
use crate::error::ApiError;

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

impl Layout {
    /// The frame of a page for a logged-in admin, `nav` being its navigation entry.
    pub fn signed_in(
        title: impl Into<String>,
        nav: &'static str,
        session: &PanelSession,
        flash: Option<Flash>,
    ) -> Self {
        Layout { title: title.into(), nav, signed_in: true, csrf: session.csrf.clone(), flash }
    }

    /// The frame of a page anyone may see (no navigation, no CSRF token).
    pub fn public(title: impl Into<String>, flash: Option<Flash>) -> Self {
        Layout { title: title.into(), nav: "", signed_in: false, csrf: String::new(), flash }
    }
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
    /// A message that something was done.
    pub fn ok(message: impl Into<String>) -> Option<Self> {
        Some(Flash { kind: "ok", message: message.into() })
    }

    /// A message that something failed.
    pub fn err(message: impl Into<String>) -> Option<Self> {
        Some(Flash { kind: "err", message: message.into() })
    }

    /// The message of a form that was not accepted.
    pub fn check_fields() -> Option<Self> {
        Flash::err("Check the highlighted fields.")
    }

    /// The message of a redirect's code (`?ok=revoked`, `?err=not_found`): fixed texts
    /// only, `ok` first.
    pub fn of_codes(ok: Option<&str>, err: Option<&str>) -> Option<Self> {
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
            "token_revoked" => "Management token revoked; it no longer works.",
            "token_not_found" => "No such management token (revoked already?).",
            "webhook_updated" => "Webhook saved.",
            "webhook_deleted" => "Webhook deleted.",
            "webhook_not_found" => "No such webhook.",
            "webhook_test_sent" => "Test event queued; its delivery is listed below within a second or two.",
            "delivery_retried" => "Delivery queued again.",
            "delivery_not_found" => "No such delivery.",
            _ => "Done.",
        };
        match (ok, err) {
            (Some(code), _) => Flash::ok(text(code)),
            (None, Some(code)) => Flash::err(text(code)),
            (None, None) => None,
        }
    }
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
    /// A secret that cannot be shown again.
    pub fn once(title: impl Into<String>, secret: impl Into<String>) -> Option<Self> {
        Some(SecretModal {
            title: title.into(),
            secret: secret.into(),
            warning: "Copy it now: it is shown only once and cannot be shown again.",
            page: String::new(),
        })
    }

    /// The dialog on the page at `page`.
    pub fn on(self, page: &str) -> Self {
        SecretModal { page: page.to_owned(), ..self }
    }
}

/// An option of a `<select>`.
pub struct Choice {
    /// What the form sends.
    pub value: String,
    /// What the option shows.
    pub label: String,
    /// Whether it is the current one.
    pub selected: bool,
}

/// The options of a `<select>` from `(value, label)` pairs, `current` selected.
pub fn choices<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>, current: &str) -> Vec<Choice> {
    values
        .into_iter()
        .map(|(value, label)| Choice { value: value.to_owned(), label: label.to_owned(), selected: value == current })
        .collect()
}

/// Renders a page, or an error page if the template fails.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => error_page(&ApiError::internal(&e)),
    }
}

/// The page of an error or a refusal.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
}

/// An error page with its status.
fn error_answer(status: StatusCode, heading: &str, message: &str) -> Response {
    let page =
        ErrorPage { layout: Layout::public(heading, None), heading: heading.to_owned(), message: message.to_owned() };
    (status, Html(page.render().unwrap_or_else(|_| "error".to_owned()))).into_response()
}

/// A request refused with 403.
pub fn forbidden(message: &str) -> Response {
    error_answer(StatusCode::FORBIDDEN, "Refused", message)
}

/// An error page for a failure of the server (never a secret in it).
pub fn error_page(error: &ApiError) -> Response {
    error_answer(error.status, "Something went wrong", &error.message)
}

/// The answer to an API error that no form on the page shows: back to the applications
/// with a message when the application or key is gone, an error page otherwise.
pub fn failed(error: &ApiError) -> Response {
    if error.status == StatusCode::NOT_FOUND { redirect("/admin/apps?err=not_found") } else { error_page(error) }
}

/// A `303 See Other` to a path of this server.
pub fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/admin/apps"));
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// Percent-encodes the characters of a path that a query value cannot hold.
pub fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A method an address does not take.
pub async fn wrong_method() -> Response {
    error_answer(StatusCode::METHOD_NOT_ALLOWED, "Not allowed", "This address does not take that kind of request.")
}

/// Any other address under `/admin`: a page, with the panel's headers.
pub async fn not_found() -> Response {
    error_answer(StatusCode::NOT_FOUND, "Not found", "There is no such page in the admin panel.")
}

/// `GET /admin/static/app.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../static/app.css"))
}

/// `GET /admin/static/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../static/app.js"))
}

/// Static text with its content type.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_query_values_whole() {
        assert_eq!(encode_path("/admin/apps/a b?c"), "/admin/apps/a%20b%3Fc");
    }

    #[test]
    fn redirect_codes_show_fixed_texts_and_ok_wins() {
        let shown = |ok, err| Flash::of_codes(ok, err).map(|f| (f.kind, f.message));
        assert_eq!(shown(Some("revoked"), None), Some(("ok", "Key revoked.".to_owned())));
        assert_eq!(shown(None, Some("not_found")), Some(("err", "No such key or application.".to_owned())));
        assert_eq!(shown(Some("<script>"), None), Some(("ok", "Done.".to_owned())));
        assert_eq!(shown(Some("deleted"), Some("not_found")).map(|f| f.0), Some("ok"));
        assert_eq!(shown(None, None), None);
    }
}
