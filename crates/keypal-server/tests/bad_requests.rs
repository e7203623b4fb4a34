//! A table of bad requests against a real server over the socket: every one is a 4xx
//! with the JSON error shape and a stable code, and none of them changes anything.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Db, TestServer, json_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Who a request claims to be.
#[derive(Debug, Clone, Copy)]
enum Auth {
    /// No credentials.
    None,
    /// The admin session cookie.
    Admin,
    /// A session cookie no session has.
    BogusCookie,
    /// `Authorization: Bearer <service key>`.
    Service,
    /// `Authorization: Bearer <a wrong service key>`.
    WrongService,
    /// `Authorization: Bearer <application A's client secret>`.
    Client,
    /// `Authorization: Bearer <a client secret no application has>`.
    WrongSecret,
    /// `Authorization: Basic ...`.
    Basic,
    /// `Authorization: Bearer <the management token named ci>`.
    Token,
    /// `Authorization: Bearer <a management token that expired>`.
    ExpiredToken,
    /// `Authorization: Bearer <a management token no one made>`.
    WrongToken,
}

/// What a request sends.
#[derive(Debug, Clone)]
enum Body {
    /// Nothing.
    Empty,
    /// JSON, as `application/json`.
    Json(Value),
    /// These bytes, with this content type (or none).
    Raw(Option<&'static str>, Vec<u8>),
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Body::Json(value)
    }
}

fn raw(content_type: Option<&'static str>, bytes: impl Into<Vec<u8>>) -> Body {
    Body::Raw(content_type, bytes.into())
}

fn json_raw(bytes: impl Into<Vec<u8>>) -> Body {
    raw(Some("application/json"), bytes)
}

/// One bad request and the answer it must get.
#[derive(Debug, Clone)]
struct Row {
    method: &'static str,
    /// With placeholders: `{app}`, `{app_b}`, `{key}`, `{bob_key}`, `{revoked}`, `{b_key}`, `{unknown}`.
    path: String,
    auth: Auth,
    body: Body,
    status: u16,
    /// `CODE` or `CODE/field` (then `error.field` must be that field).
    code: &'static str,
}

fn r(
    method: &'static str,
    path: impl Into<String>,
    auth: Auth,
    body: impl Into<Body>,
    status: u16,
    code: &'static str,
) -> Row {
    Row { method, path: path.into(), auth, body: body.into(), status, code }
}

/// `POST /v1/apps` as admin with `{"name": "N", "label": "new"}` and `fields`.
fn new_app(fields: Value, status: u16, code: &'static str) -> Row {
    let mut body = json!({"name": "N", "label": "new"});
    if let (Some(body), Some(fields)) = (body.as_object_mut(), fields.as_object()) {
        body.extend(fields.clone());
    }
    CREATE_APP.row(body, status, code)
}

/// A method, path and caller that many rows share.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    auth: Auth,
}

impl Endpoint {
    /// The row sending `body` here, which must be answered with `status` and `code`.
    fn row(&self, body: impl Into<Body>, status: u16, code: &'static str) -> Row {
        r(self.method, self.path, self.auth, body, status, code)
    }
}

/// `POST /v1/apps` as admin.
const CREATE_APP: Endpoint = Endpoint { method: "POST", path: "/v1/apps", auth: Auth::Admin };
/// `POST /v1/apps/{app}/keys` as admin.
const NEW_KEY: Endpoint = Endpoint { method: "POST", path: "/v1/apps/{app}/keys", auth: Auth::Admin };
/// `PATCH /v1/apps/{app}` as admin.
const PATCH_APP: Endpoint = Endpoint { method: "PATCH", path: "/v1/apps/{app}", auth: Auth::Admin };
/// `PATCH /v1/keys/{key}` as admin.
const PATCH_KEY: Endpoint = Endpoint { method: "PATCH", path: "/v1/keys/{key}", auth: Auth::Admin };
/// `POST /v1/keys/{key}/rotate` as admin.
const ROTATE: Endpoint = Endpoint { method: "POST", path: "/v1/keys/{key}/rotate", auth: Auth::Admin };
/// `POST /v1/apps/{app}/keys/import` as admin.
const IMPORT: Endpoint = Endpoint { method: "POST", path: "/v1/apps/{app}/keys/import", auth: Auth::Admin };
/// `POST /v1/verify` with the service key (`{secret}` in the body is application A's client secret).
const VERIFY: Endpoint = Endpoint { method: "POST", path: "/v1/verify", auth: Auth::Service };
/// `POST /v1/tokens` as admin.
const NEW_TOKEN: Endpoint = Endpoint { method: "POST", path: "/v1/tokens", auth: Auth::Admin };
/// `POST /v1/webhooks` as admin (the server refuses private addresses).
const NEW_WEBHOOK: Endpoint = Endpoint { method: "POST", path: "/v1/webhooks", auth: Auth::Admin };
/// `POST /v1/owners/dave/keys` with application A's client secret.
const OWNER_KEY: Endpoint = Endpoint { method: "POST", path: "/v1/owners/dave/keys", auth: Auth::Client };

/// The fixture the table refers to.
struct Fixture {
    /// Application A: tier `free`, one active key per owner.
    app: String,
    secret: String,
    /// Application B.
    app_b: String,
    /// alice's key in A (alice is at A's limit).
    key: String,
    /// bob's key in A.
    bob_key: String,
    /// carol's revoked key in A.
    revoked: String,
    /// alice's key in B.
    b_key: String,
    /// The management token named `ci`, and its id.
    token: String,
    token_id: String,
    /// A management token past its expiry.
    expired_token: String,
}

impl Fixture {
    fn path(&self, path: &str) -> String {
        path.replace("{app}", &self.app)
            .replace("{app_b}", &self.app_b)
            .replace("{key}", &self.key)
            .replace("{bob_key}", &self.bob_key)
            .replace("{revoked}", &self.revoked)
            .replace("{b_key}", &self.b_key)
            .replace("{token}", &self.token_id)
            .replace("{unknown}", "0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71")
    }
}

/// Nested arrays `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// A JSON object of about `bytes` bytes.
fn big_json(bytes: usize) -> Vec<u8> {
    format!(r#"{{"name": "{}", "label": "big"}}"#, "x".repeat(bytes)).into_bytes()
}

#[allow(clippy::too_many_lines)]
fn table() -> Vec<Row> {
    use Auth::{
        Admin, Basic, BogusCookie, Client, ExpiredToken, None as Anon, Service, Token, WrongSecret, WrongService,
        WrongToken,
    };
    let e = Body::Empty;
    let long = |n: usize| "x".repeat(n);
    let app_ok = json!({"name": "New", "label": "new"});
    vec![
        // ---- /v1/session (at most two wrong passwords: the login throttle allows five) ----
        r("POST", "/v1/session", Anon, e.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        r("POST", "/v1/session", Anon, json!({}), 400, "INVALID_JSON"),
        r("POST", "/v1/session", Anon, json!({"password": 123}), 400, "INVALID_JSON"),
        r("POST", "/v1/session", Anon, json!({"password": "x", "user": "admin"}), 400, "INVALID_JSON"),
        r("POST", "/v1/session", Anon, json!({"password": "wrong"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/session", Anon, json!({"password": ""}), 401, "UNAUTHENTICATED"),
        r(
            "POST",
            "/v1/session",
            Anon,
            raw(Some("application/x-www-form-urlencoded"), "password=x"),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        r("GET", "/v1/session", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("PUT", "/v1/session", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- POST /v1/apps: credentials ----
        r("POST", "/v1/apps", Anon, app_ok.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps", BogusCookie, app_ok.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps", Service, app_ok.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps", Client, app_ok.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/apps", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        // ---- POST /v1/apps: name ----
        CREATE_APP.row(json!({}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"label": "new"}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"name": "New"}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"name": "", "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": "   ", "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": long(101), "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": "bell\u{7}", "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": "nul\u{0}byte", "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": "line\nbreak", "label": "new"}), 400, "INVALID_INPUT/name"),
        CREATE_APP.row(json!({"name": 5, "label": "new"}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"name": null, "label": "new"}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"name": ["New"], "label": "new"}), 400, "INVALID_JSON"),
        // ---- label ----
        CREATE_APP.row(json!({"name": "New", "label": ""}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": "Caps"}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": "under_score"}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": "with space"}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": "é"}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": long(33)}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": "nul\u{0}"}), 400, "INVALID_INPUT/label"),
        CREATE_APP.row(json!({"name": "New", "label": 7}), 400, "INVALID_JSON"),
        CREATE_APP.row(json!({"name": "Again", "label": "alpha"}), 409, "LABEL_TAKEN"),
        // ---- template ----
        new_app(json!({"template": "sk-{secret:32:base64url"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-}{secret:32:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-{secret:32:base99}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-{secret:4:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-{secret:x:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-{bogus}-{secret:32:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-no-secret"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": ""}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk-{secret:32:hex}-{secret:32:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(json!({"template": "sk\u{0}{secret:32:hex}"}), 400, "INVALID_INPUT/template"),
        new_app(
            json!({"template": "{tier}_{secret:32:hex}", "tiers": {"free": {}}}),
            400,
            "INVALID_INPUT/default_tier",
        ),
        new_app(json!({"template": 12}), 400, "INVALID_JSON"),
        // ---- legacy_templates: each checked as a template is ----
        new_app(json!({"legacy_templates": ["{secret:43:base64url"]}), 400, "INVALID_INPUT/legacy_templates[0]"),
        new_app(
            json!({"legacy_templates": ["{secret:43:base64url}", "sk-no-secret"]}),
            400,
            "INVALID_INPUT/legacy_templates[1]",
        ),
        new_app(json!({"legacy_templates": ["{secret:4:hex}"]}), 400, "INVALID_INPUT/legacy_templates[0]"),
        new_app(json!({"legacy_templates": ["{bogus}{secret:32:hex}"]}), 400, "INVALID_INPUT/legacy_templates[0]"),
        new_app(json!({"legacy_templates": ["\u{1b}{secret:32:hex}"]}), 400, "INVALID_INPUT/legacy_templates[0]"),
        new_app(
            json!({"template": "sk_{secret:32:hex}", "legacy_templates": ["sk_{secret:32:hex}"]}),
            400,
            "INVALID_INPUT/legacy_templates[0]",
        ),
        new_app(
            json!({"legacy_templates": ["{secret:43:base64url}", "{secret:43:base64url}"]}),
            400,
            "INVALID_INPUT/legacy_templates[1]",
        ),
        new_app(
            json!({"legacy_templates": (0..9).map(|n| format!("v{n}_{{secret:32:hex}}")).collect::<Vec<_>>()}),
            400,
            "INVALID_INPUT/legacy_templates",
        ),
        new_app(json!({"legacy_templates": "{secret:43:base64url}"}), 400, "INVALID_JSON"),
        new_app(json!({"legacy_templates": [7]}), 400, "INVALID_JSON"),
        // ---- hash and bcrypt_cost ----
        new_app(json!({"hash": "md5"}), 400, "INVALID_INPUT/hash"),
        new_app(json!({"hash": "SHA256"}), 400, "INVALID_INPUT/hash"),
        new_app(json!({"hash": ""}), 400, "INVALID_INPUT/hash"),
        new_app(json!({"hash": 1}), 400, "INVALID_JSON"),
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": 99}), 400, "INVALID_INPUT/bcrypt_cost"),
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": 3}), 400, "INVALID_INPUT/bcrypt_cost"),
        // bcrypt's own range is 4-31; a service holds it to 10-15 (31 takes a day and a half).
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": 31}), 400, "INVALID_INPUT/bcrypt_cost"),
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": 9}), 400, "INVALID_INPUT/bcrypt_cost"),
        new_app(json!({"bcrypt_cost": 12}), 400, "INVALID_INPUT/bcrypt_cost"),
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": -1}), 400, "INVALID_JSON"),
        new_app(json!({"hash": "bcrypt", "bcrypt_cost": "12"}), 400, "INVALID_JSON"),
        // ---- tiers and default_tier ----
        new_app(json!({"tiers": {"free": {"rate_limit": "lots"}}}), 400, "INVALID_INPUT/tiers.free.rate_limit"),
        new_app(json!({"tiers": {"free": {"rate_limit": "10/fortnight"}}}), 400, "INVALID_INPUT/tiers.free.rate_limit"),
        new_app(json!({"tiers": {"free": {"rate_limit": "0/minute"}}}), 400, "INVALID_INPUT/tiers.free.rate_limit"),
        new_app(json!({"tiers": {"free": {"rate_limit": "-5/minute"}}}), 400, "INVALID_INPUT/tiers.free.rate_limit"),
        new_app(json!({"tiers": {"free": {"rate_limit": 10}}}), 400, "INVALID_JSON"),
        new_app(json!({"tiers": {"free": {"limit": "10/minute"}}}), 400, "INVALID_JSON"),
        new_app(json!({"tiers": {"free": {"segment": "has space"}}}), 400, "INVALID_INPUT/tiers.free.segment"),
        new_app(json!({"tiers": {"free": {"segment": "nul\u{0}"}}}), 400, "INVALID_INPUT/tiers.free.segment"),
        new_app(json!({"tiers": {"bad\u{1}": {}}}), 400, "INVALID_INPUT"),
        new_app(json!({"tiers": {"": {}}}), 400, "INVALID_INPUT"),
        new_app(json!({"tiers": {"a": {"segment": "s"}, "b": {"segment": "s"}}}), 400, "INVALID_INPUT/tiers.b.segment"),
        new_app(json!({"tiers": ["free"]}), 400, "INVALID_JSON"),
        new_app(json!({"tiers": {"free": "10/minute"}}), 400, "INVALID_JSON"),
        new_app(json!({"default_tier": "gold"}), 400, "INVALID_INPUT/default_tier"),
        new_app(json!({"tiers": {"free": {}}, "default_tier": "gold"}), 400, "INVALID_INPUT/default_tier"),
        new_app(json!({"default_tier": 3}), 400, "INVALID_JSON"),
        // ---- max_active_keys_per_owner, recoverable, metadata, unknown fields ----
        new_app(json!({"max_active_keys_per_owner": 0}), 400, "INVALID_INPUT/max_active_keys_per_owner"),
        new_app(json!({"credits_low_threshold": 0}), 400, "INVALID_INPUT/credits_low_threshold"),
        new_app(json!({"credits_low_threshold": u64::MAX}), 400, "INVALID_INPUT/credits_low_threshold"),
        new_app(json!({"credits_low_threshold": -1}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"credits_low_threshold": 0}), 400, "INVALID_INPUT/credits_low_threshold"),
        new_app(json!({"max_active_keys_per_owner": 100_001}), 400, "INVALID_INPUT/max_active_keys_per_owner"),
        new_app(json!({"max_active_keys_per_owner": -1}), 400, "INVALID_JSON"),
        new_app(json!({"max_active_keys_per_owner": 1.5}), 400, "INVALID_JSON"),
        new_app(json!({"max_active_keys_per_owner": "10"}), 400, "INVALID_JSON"),
        new_app(json!({"max_active_keys_per_owner": 4_294_967_296_u64}), 400, "INVALID_JSON"),
        new_app(json!({"recoverable": "yes"}), 400, "INVALID_JSON"),
        new_app(json!({"default_metadata": {"plan": "team"}, "extra": 1}), 400, "INVALID_JSON"),
        new_app(json!({"default_metadata": {"note": "nul\u{0}"}}), 400, "INVALID_INPUT/default_metadata"),
        new_app(json!({"default_metadata": {"nul\u{0}": 1}}), 400, "INVALID_INPUT/default_metadata"),
        // ---- bodies that are not a new application ----
        CREATE_APP.row(json!([]), 400, "INVALID_JSON"),
        CREATE_APP.row(json!(["New", "new"]), 400, "INVALID_JSON"),
        CREATE_APP.row(json!("New"), 400, "INVALID_JSON"),
        CREATE_APP.row(json!(null), 400, "INVALID_JSON"),
        CREATE_APP.row(json_raw("{not json"), 400, "INVALID_JSON"),
        CREATE_APP.row(json_raw(""), 400, "INVALID_JSON"),
        CREATE_APP.row(json_raw(r#"{"name": "N", "label": "new"} trailing"#), 400, "INVALID_JSON"),
        CREATE_APP.row(json_raw(r#"{"name": "N", "name": "M", "label": "new"}"#), 400, "INVALID_JSON"),
        CREATE_APP.row(json_raw(*b"{\"name\": \"\xff\xfe\", \"label\": \"new\"}"), 400, "INVALID_JSON"),
        CREATE_APP.row(
            json_raw(r#"{"name": "N", "label": "new", "default_metadata": "#.to_owned() + &nested(200) + "}"),
            400,
            "INVALID_JSON",
        ),
        CREATE_APP.row(json_raw(nested(30_000)), 400, "INVALID_JSON"),
        CREATE_APP.row(raw(Some("text/plain"), r#"{"name": "N", "label": "new"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        CREATE_APP.row(raw(None, r#"{"name": "N", "label": "new"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        CREATE_APP.row(raw(Some("application/xml"), "<app/>"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        CREATE_APP.row(e.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        CREATE_APP.row(json_raw(big_json(1 << 20)), 413, "PAYLOAD_TOO_LARGE"),
        CREATE_APP.row(json_raw(big_json(65 * 1024)), 413, "PAYLOAD_TOO_LARGE"),
        r("PUT", "/v1/apps", Admin, app_ok.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("DELETE", "/v1/apps", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/apps/{id} ----
        r("GET", "/v1/apps/{app}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/apps/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/apps/not-a-uuid", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("GET", "/v1/apps/{key}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/apps/%FF%FE", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("GET", "/v1/apps/%00", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("GET", format!("/v1/apps/{}", long(5000)), Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("PATCH", "/v1/apps/{unknown}", Admin, json!({"name": "X"}), 404, "NOT_FOUND"),
        r(
            "PATCH",
            "/v1/apps/'%3B%20DROP%20TABLE%20keypal_keys%3B--",
            Admin,
            json!({"name": "X"}),
            400,
            "INVALID_INPUT/id",
        ),
        r("PATCH", "/v1/apps/{app}", Anon, json!({"name": "X"}), 401, "UNAUTHENTICATED"),
        r("DELETE", "/v1/apps/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("DELETE", "/v1/apps/garbage", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("DELETE", "/v1/apps/{app}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("DELETE", "/v1/apps/{app}", Client, e.clone(), 401, "UNAUTHENTICATED"),
        PATCH_APP.row(json!({"name": ""}), 400, "INVALID_INPUT/name"),
        PATCH_APP.row(json!({"name": "tab\there"}), 400, "INVALID_INPUT/name"),
        PATCH_APP.row(json!({"name": long(101)}), 400, "INVALID_INPUT/name"),
        PATCH_APP.row(json!({"name": 42}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"label": "renamed"}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"recoverable": "yes"}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"template": "sk-{secret:32"}), 400, "INVALID_INPUT/template"),
        PATCH_APP.row(json!({"template": "sk-{secret:32:base7}"}), 400, "INVALID_INPUT/template"),
        PATCH_APP.row(json!({"template": "sk-{secret:8:hex}"}), 400, "INVALID_INPUT/template"),
        PATCH_APP.row(json!({"template": "sk-\u{7f}{secret:32:hex}"}), 400, "INVALID_INPUT/template"),
        PATCH_APP.row(json!({"legacy_templates": ["{secret:43:base64"]}), 400, "INVALID_INPUT/legacy_templates[0]"),
        PATCH_APP.row(
            json!({"template": "sk_{secret:32:hex}", "legacy_templates": ["{secret:43:base64url}", "sk_{secret:32:hex}"]}),
            400,
            "INVALID_INPUT/legacy_templates[1]",
        ),
        PATCH_APP.row(json!({"hash": "md5"}), 400, "INVALID_INPUT/hash"),
        PATCH_APP.row(json!({"bcrypt_cost": 12}), 400, "INVALID_INPUT/bcrypt_cost"),
        PATCH_APP.row(json!({"hash": "bcrypt", "bcrypt_cost": 40}), 400, "INVALID_INPUT/bcrypt_cost"),
        PATCH_APP.row(json!({"hash": "bcrypt", "bcrypt_cost": 16}), 400, "INVALID_INPUT/bcrypt_cost"),
        PATCH_APP.row(json!({"tiers": {"free": {"rate_limit": "often"}}}), 400, "INVALID_INPUT/tiers.free.rate_limit"),
        PATCH_APP.row(json!({"tiers": {"free": {"burst": 3}}}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"default_tier": "gold"}), 400, "INVALID_INPUT/default_tier"),
        PATCH_APP.row(json!({"max_active_keys_per_owner": 0}), 400, "INVALID_INPUT/max_active_keys_per_owner"),
        PATCH_APP.row(json!({"max_active_keys_per_owner": 100_001}), 400, "INVALID_INPUT/max_active_keys_per_owner"),
        PATCH_APP.row(json!({"max_active_keys_per_owner": -5}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"max_active_keys_per_owner": "ten"}), 400, "INVALID_JSON"),
        PATCH_APP.row(json!({"default_metadata": {"k": "\u{0}"}}), 400, "INVALID_INPUT/default_metadata"),
        PATCH_APP.row(json!({"name": "Fine", "hash": "md5"}), 400, "INVALID_INPUT/hash"),
        PATCH_APP.row(raw(Some("text/plain"), r#"{"name": "X"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        PATCH_APP.row(e.clone(), 415, "UNSUPPORTED_MEDIA_TYPE"),
        PATCH_APP.row(json_raw(""), 400, "INVALID_JSON"),
        PATCH_APP.row(json_raw("name=X"), 400, "INVALID_JSON"),
        r("POST", "/v1/apps/{app}", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        r("PUT", "/v1/apps/{app}", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/apps/{id}/client-secret ----
        r("POST", "/v1/apps/{unknown}/client-secret", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/apps/nope/client-secret", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("POST", "/v1/apps/{app}/client-secret", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps/{app}/client-secret", Client, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/apps/{app}/client-secret", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- POST /v1/apps/{id}/keys ----
        r("POST", "/v1/apps/{app}/keys", Anon, json!({}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps/{app}/keys", Client, json!({}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps/{unknown}/keys", Admin, json!({}), 404, "NOT_FOUND"),
        r("POST", "/v1/apps/not-an-app/keys", Admin, json!({}), 400, "INVALID_INPUT/id"),
        NEW_KEY.row(json!({"owner_id": ""}), 400, "INVALID_INPUT/owner_id"),
        NEW_KEY.row(json!({"owner_id": long(257)}), 400, "INVALID_INPUT/owner_id"),
        NEW_KEY.row(json!({"owner_id": "a\nb"}), 400, "INVALID_INPUT/owner_id"),
        NEW_KEY.row(json!({"owner_id": "nul\u{0}"}), 400, "INVALID_INPUT/owner_id"),
        NEW_KEY.row(json!({"owner_id": 7}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"name": ""}), 400, "INVALID_INPUT/name"),
        NEW_KEY.row(json!({"name": long(101)}), 400, "INVALID_INPUT/name"),
        NEW_KEY.row(json!({"name": "esc\u{1b}[0m"}), 400, "INVALID_INPUT/name"),
        NEW_KEY.row(json!({"scopes": ["read write"]}), 400, "INVALID_INPUT/scopes"),
        NEW_KEY.row(json!({"scopes": [""]}), 400, "INVALID_INPUT/scopes"),
        NEW_KEY.row(json!({"scopes": ["nul\u{0}"]}), 400, "INVALID_INPUT/scopes"),
        NEW_KEY.row(
            json!({"scopes": (0..101).map(|i| format!("s{i}")).collect::<Vec<_>>()}),
            400,
            "INVALID_INPUT/scopes",
        ),
        NEW_KEY.row(json!({"scopes": [1, 2]}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"scopes": "read"}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"tier": "gold"}), 400, "INVALID_INPUT/tier"),
        NEW_KEY.row(json!({"tier": 1}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"expires_in_days": 0}), 400, "INVALID_INPUT/expires_in_days"),
        NEW_KEY.row(json!({"expires_in_days": 3651}), 400, "INVALID_INPUT/expires_in_days"),
        NEW_KEY.row(json!({"expires_in_days": -1}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"expires_in_days": "7"}), 400, "INVALID_JSON"),
        NEW_KEY.row(
            json!({"expires_in_days": 7, "expires_at": "2099-01-01T00:00:00Z"}),
            400,
            "INVALID_INPUT/expires_at",
        ),
        NEW_KEY.row(json!({"expires_at": "2000-01-01T00:00:00Z"}), 400, "INVALID_INPUT/expires_at"),
        NEW_KEY.row(json!({"expires_at": "tomorrow"}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"expires_at": "2099-13-45T00:00:00Z"}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"expires_at": 4_102_444_800_u64}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"remaining": -1}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"remaining": 9_223_372_036_854_775_808_u64}), 400, "INVALID_INPUT/remaining"),
        NEW_KEY.row(json_raw(r#"{"remaining": 18446744073709551616}"#), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"remaining": "5"}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"remaining": 1.5}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"rate_limit": "fast"}), 400, "INVALID_INPUT/rate_limit"),
        NEW_KEY.row(json!({"rate_limit": "10/eon"}), 400, "INVALID_INPUT/rate_limit"),
        NEW_KEY.row(json!({"rate_limit": 10}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"metadata": {"k": "nul\u{0}"}}), 400, "INVALID_INPUT/metadata"),
        NEW_KEY.row(json!({"owner": "alice"}), 400, "INVALID_JSON"),
        NEW_KEY.row(json!({"owner_id": "alice"}), 403, "KEY_LIMIT_REACHED"),
        NEW_KEY.row(raw(Some("text/plain"), "{}"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        NEW_KEY.row(json_raw("{\"name\": \"a\x00b\"}"), 400, "INVALID_JSON"),
        // ---- POST /v1/apps/{id}/keys/import (a bad item is the answer's, not the request's) ----
        r("POST", "/v1/apps/{app}/keys/import", Anon, json!({"keys": []}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps/{unknown}/keys/import", Admin, json!({"keys": []}), 404, "NOT_FOUND"),
        IMPORT.row(json!({}), 400, "INVALID_JSON"),
        IMPORT.row(json!({"keys": {"key": "k"}}), 400, "INVALID_JSON"),
        IMPORT.row(json!({"keys": [], "skip_limits": "yes"}), 400, "INVALID_JSON"),
        IMPORT.row(json!({"keys": [], "dry_run": true}), 400, "INVALID_JSON"),
        IMPORT.row(json!([{"key": "k"}]), 400, "INVALID_JSON"),
        IMPORT.row(json_raw(r#"{"keys": [{"key": "k"}"#), 400, "INVALID_JSON"),
        IMPORT.row(json!({"keys": vec![json!({}); 1001]}), 400, "INVALID_INPUT/keys"),
        IMPORT.row(raw(Some("text/csv"), "key\nsk_live_x\n"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        IMPORT.row(raw(None, "{}"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        IMPORT.row(json_raw(big_json(9 * 1024 * 1024)), 413, "PAYLOAD_TOO_LARGE"),
        r("POST", "/v1/apps/{app}/keys/import?skip_limits=maybe", Admin, json!({"keys": []}), 400, "INVALID_QUERY"),
        r("POST", "/v1/apps/{app}/keys/import?dry_run=true", Admin, json!({"keys": []}), 400, "INVALID_QUERY"),
        // ---- GET /v1/apps/{id}/keys ----
        r("GET", "/v1/apps/{app}/keys", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/apps/{unknown}/keys", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/apps/{app}/keys?limit=0", Admin, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/apps/{app}/keys?limit=1001", Admin, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/apps/{app}/keys?limit=ten", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?limit=-1", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?limit=99999999999", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?cursor=not-a-uuid", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?include_revoked=maybe", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?color=blue", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/apps/{app}/keys?owner_id=a%00b", Admin, e.clone(), 400, "INVALID_INPUT/owner_id"),
        r("PUT", "/v1/apps/{app}/keys", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/keys/{id} ----
        r("GET", "/v1/keys/{key}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/keys/{key}", Service, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/keys/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/keys/garbage", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("GET", "/v1/keys/{app}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("PATCH", "/v1/keys/{unknown}", Admin, json!({"name": "x"}), 404, "NOT_FOUND"),
        r("PATCH", "/v1/keys/12345", Admin, json!({"name": "x"}), 400, "INVALID_INPUT/id"),
        r("PATCH", "/v1/keys/{key}", Anon, json!({"enabled": false}), 401, "UNAUTHENTICATED"),
        PATCH_KEY.row(json!({"name": 5}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"name": ""}), 400, "INVALID_INPUT/name"),
        PATCH_KEY.row(json!({"name": "c\rr"}), 400, "INVALID_INPUT/name"),
        PATCH_KEY.row(json!({"enabled": "no"}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"scopes": "read"}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"scopes": ["a b"]}), 400, "INVALID_INPUT/scopes"),
        PATCH_KEY.row(json!({"tier": "gold"}), 400, "INVALID_INPUT/tier"),
        PATCH_KEY.row(json!({"remaining": -1}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"remaining": 9_223_372_036_854_775_808_u64}), 400, "INVALID_INPUT/remaining"),
        PATCH_KEY.row(json!({"expires_at": "soon"}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"expires_at": "2000-01-01T00:00:00Z"}), 400, "INVALID_INPUT/expires_at"),
        PATCH_KEY.row(json!({"metadata": {"k": "\u{0}"}}), 400, "INVALID_INPUT/metadata"),
        PATCH_KEY.row(json!({"metadata": {"ok": 1}, "owner_id": "eve"}), 400, "INVALID_JSON"),
        PATCH_KEY.row(json!({"enabled": false, "scopes": ["bad scope"]}), 400, "INVALID_INPUT/scopes"),
        PATCH_KEY.row(raw(Some("text/plain"), r#"{"name": "x"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        r("PATCH", "/v1/keys/{revoked}", Admin, json!({"name": "again"}), 409, "ALREADY_REVOKED"),
        r("PUT", "/v1/keys/{key}", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        r("POST", "/v1/keys/{key}", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- rotate ----
        r("POST", "/v1/keys/{unknown}/rotate", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/keys/garbage/rotate", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("POST", "/v1/keys/{key}/rotate", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/keys/{revoked}/rotate", Admin, e.clone(), 409, "ALREADY_REVOKED"),
        ROTATE.row(json!({"grace_seconds": 2_592_001}), 400, "INVALID_INPUT/grace_seconds"),
        ROTATE.row(json!({"grace_seconds": u64::MAX}), 400, "INVALID_INPUT/grace_seconds"),
        ROTATE.row(json!({"grace_seconds": -1}), 400, "INVALID_JSON"),
        ROTATE.row(json!({"grace_seconds": "60"}), 400, "INVALID_JSON"),
        ROTATE.row(json!({"grace_seconds": 1.5}), 400, "INVALID_JSON"),
        ROTATE.row(json!({"grace": 60}), 400, "INVALID_JSON"),
        ROTATE.row(json!([60]), 400, "INVALID_JSON"),
        ROTATE.row(json_raw("{"), 400, "INVALID_JSON"),
        ROTATE.row(json_raw(*b"\xff"), 400, "INVALID_JSON"),
        ROTATE.row(raw(Some("text/plain"), r#"{"grace_seconds": 60}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ROTATE.row(raw(None, r#"{"grace_seconds": 60}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        ROTATE.row(json_raw(format!(r#"{{"grace_seconds": 1, "x": "{}"}}"#, long(1 << 20))), 413, "PAYLOAD_TOO_LARGE"),
        r("GET", "/v1/keys/{key}/rotate", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- revoke, delete, reveal ----
        r("POST", "/v1/keys/{unknown}/revoke", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/keys/garbage/revoke", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("POST", "/v1/keys/{key}/revoke", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/keys/{key}/revoke", Client, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/keys/{revoked}/revoke", Admin, e.clone(), 409, "ALREADY_REVOKED"),
        r("DELETE", "/v1/keys/{key}/revoke", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("DELETE", "/v1/keys/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("DELETE", "/v1/keys/garbage", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("DELETE", "/v1/keys/{key}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("DELETE", "/v1/keys/{key}", BogusCookie, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/keys/{unknown}/reveal", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/keys/garbage/reveal", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("POST", "/v1/keys/{key}/reveal", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/keys/{key}/reveal", Admin, e.clone(), 409, "NOT_RECOVERABLE"),
        r("GET", "/v1/keys/{key}/reveal", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/verify ----
        r("POST", "/v1/verify", Anon, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/verify", WrongService, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/verify", Client, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/verify", Admin, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/verify", Basic, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        VERIFY.row(json!({"key": "k", "client_secret": "cs-wrong"}), 403, "INVALID_CLIENT_SECRET"),
        VERIFY.row(json!({"key": "k", "client_secret": ""}), 403, "INVALID_CLIENT_SECRET"),
        VERIFY.row(json!({}), 400, "INVALID_JSON"),
        VERIFY.row(json!(["k", "{secret}"]), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"client_secret": "{secret}"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": 5, "client_secret": "{secret}"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": null, "client_secret": "{secret}"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "cost": -1}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "cost": "1"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "scopes": "read"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "scopes": [1]}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "app": "alpha"}), 400, "INVALID_JSON"),
        VERIFY.row(raw(Some("text/plain"), r#"{"key": "k", "client_secret": "cs"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        VERIFY.row(json_raw("key=k&client_secret=cs"), 400, "INVALID_JSON"),
        VERIFY.row(
            json_raw(format!(r#"{{"key": "{}", "client_secret": "cs"}}"#, long(1 << 20))),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "tags": "GET /a"}), 400, "INVALID_JSON"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "tags": [""]}), 400, "INVALID_INPUT/tags[0]"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "tags": ["a", long(65)]}), 400, "INVALID_INPUT/tags[1]"),
        VERIFY.row(json!({"key": "k", "client_secret": "{secret}", "tags": ["a\tb"]}), 400, "INVALID_INPUT/tags[0]"),
        VERIFY.row(
            json!({"key": "k", "client_secret": "{secret}", "tags": vec!["t"; 11]}),
            400,
            "INVALID_INPUT/tags",
        ),
        r("GET", "/v1/verify", Service, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/analytics/verifications ----
        r("GET", "/v1/analytics/verifications?app_id={app}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/analytics/verifications?app_id={app}", Client, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/analytics/verifications?app_id={app}", Service, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/analytics/verifications", Admin, e.clone(), 400, "INVALID_INPUT/app_id"),
        r("GET", "/v1/analytics/verifications?app_id={app}&granularity=week", Admin, e.clone(), 400, "INVALID_INPUT/granularity"),
        r(
            "GET",
            "/v1/analytics/verifications?app_id={app}&granularity=minute&from=2026-01-01T00:00:00Z&to=2026-01-04T00:00:00Z",
            Admin,
            e.clone(),
            400,
            "INVALID_INPUT/from",
        ),
        r("GET", "/v1/analytics/verifications?app_id={app}&from=soon", Admin, e.clone(), 400, "INVALID_INPUT/from"),
        r("GET", "/v1/analytics/verifications?app_id={app}&group_by=color", Admin, e.clone(), 400, "INVALID_INPUT/group_by"),
        r("GET", "/v1/analytics/verifications?app_id={app}&limit=0", Admin, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/analytics/verifications?app_id=nope", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/analytics/verifications?app_id={unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/analytics/verifications?key_id={unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/analytics/verifications?app_id={app_b}&key_id={key}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/analytics/verifications?app_id={app}", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("GET", "/v1/owners/alice/usage", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/usage", Admin, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/a%00b/usage", Client, e.clone(), 400, "INVALID_INPUT/owner_id"),
        r("GET", "/v1/owners/alice/usage?granularity=year", Client, e.clone(), 400, "INVALID_INPUT/granularity"),
        r("GET", "/v1/owners/alice/usage?group_by=key", Client, e.clone(), 400, "INVALID_INPUT/group_by"),
        r("GET", "/v1/owners/alice/usage?app_id={app}", Client, e.clone(), 400, "INVALID_QUERY"),
        // ---- /v1/owners/... ----
        r("GET", "/v1/owners/alice/keys", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/keys", WrongSecret, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/keys", Service, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/keys", Admin, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/a%00b/keys", Client, e.clone(), 400, "INVALID_INPUT/owner_id"),
        r("GET", "/v1/owners/alice/keys?limit=0", Client, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/owners/alice/keys?limit=1001", Client, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/owners/alice/keys?include_revoked=maybe", Client, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/owners/alice/keys?cursor=not-a-uuid", Client, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/owners/alice/keys?owner_id=bob", Client, e.clone(), 400, "INVALID_QUERY"),
        r("POST", "/v1/owners/dave/keys", Anon, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/owners/dave/keys", WrongSecret, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        OWNER_KEY.row(json!({}), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!(["n"]), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!({"name": ""}), 400, "INVALID_INPUT/name"),
        OWNER_KEY.row(json!({"name": "   "}), 400, "INVALID_INPUT/name"),
        OWNER_KEY.row(json!({"name": long(101)}), 400, "INVALID_INPUT/name"),
        OWNER_KEY.row(json!({"name": 5}), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!({"name": "n", "expires_in_days": 0}), 400, "INVALID_INPUT/expires_in_days"),
        OWNER_KEY.row(json!({"name": "n", "expires_in_days": 366}), 400, "INVALID_INPUT/expires_in_days"),
        OWNER_KEY.row(json!({"name": "n", "expires_in_days": 1.5}), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!({"name": "n", "expires_in_days": "x"}), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!({"name": "n", "expires_in_days": -3}), 400, "INVALID_JSON"),
        OWNER_KEY.row(json!({"name": "n", "scopes": ["a b"]}), 400, "INVALID_INPUT/scopes"),
        OWNER_KEY.row(json!({"name": "n", "metadata": ["\u{0}"]}), 400, "INVALID_INPUT/metadata"),
        OWNER_KEY.row(json!({"name": "n", "tier": "free"}), 400, "INVALID_JSON"),
        OWNER_KEY.row(raw(Some("text/plain"), r#"{"name": "n"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        r("POST", "/v1/owners/a%01b/keys", Client, json!({"name": "n"}), 400, "INVALID_INPUT/owner_id"),
        r(
            "POST",
            format!("/v1/owners/{}/keys", long(257)),
            Client,
            json!({"name": "n"}),
            400,
            "INVALID_INPUT/owner_id",
        ),
        r("POST", "/v1/owners/alice/keys", Client, json!({"name": "second"}), 403, "KEY_LIMIT_REACHED"),
        r("POST", "/v1/owners/alice/keys/{bob_key}/revoke", Client, e.clone(), 403, "FORBIDDEN"),
        r("POST", "/v1/owners/alice/keys/{unknown}/revoke", Client, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/owners/alice/keys/not-a-key/revoke", Client, e.clone(), 400, "INVALID_INPUT/key_id"),
        r("POST", "/v1/owners/alice/keys/{b_key}/revoke", Client, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/owners/carol/keys/{revoked}/revoke", Client, e.clone(), 409, "ALREADY_REVOKED"),
        r("POST", "/v1/owners/alice/keys/{key}/revoke", WrongSecret, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/owners/alice/keys/{key}/revoke", Admin, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/keys/{key}/revoke", Client, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("DELETE", "/v1/owners/alice/keys", Client, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        // ---- /v1/audit ----
        r("GET", "/v1/audit", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/audit", Service, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/audit?action=exploded", Admin, e.clone(), 400, "INVALID_INPUT/action"),
        r("GET", "/v1/audit?limit=0", Admin, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/audit?limit=1001", Admin, e.clone(), 400, "INVALID_INPUT/limit"),
        r("GET", "/v1/audit?limit=many", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/audit?app_id=nope", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/audit?key_id=nope", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/audit?cursor=nope", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/audit?since=yesterday", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/audit?owner_id=%00", Admin, e.clone(), 400, "INVALID_INPUT/owner_id"),
        r("POST", "/v1/audit", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- the service key ----
        r("GET", "/v1/service-key", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/service-key", Service, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/service-key/rotate", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/service-key/rotate", Client, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/service-key/rotate", BogusCookie, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/service-key/rotate", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("GET", "/v1/service-key", Token, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/service-key/rotate", Token, e.clone(), 401, "UNAUTHENTICATED"),
        // ---- management tokens: who may use them, and where ----
        r("POST", "/v1/tokens", Anon, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/tokens", BogusCookie, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/tokens", Service, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/tokens", Client, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/tokens", WrongToken, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/tokens", ExpiredToken, json!({"name": "n"}), 401, "TOKEN_EXPIRED"),
        r("POST", "/v1/tokens", Basic, json!({"name": "n"}), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/tokens", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/tokens", WrongToken, e.clone(), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/apps", ExpiredToken, e.clone(), 401, "TOKEN_EXPIRED"),
        r("GET", "/v1/apps", WrongToken, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/apps", ExpiredToken, app_ok.clone(), 401, "TOKEN_EXPIRED"),
        r("GET", "/v1/audit", ExpiredToken, e.clone(), 401, "TOKEN_EXPIRED"),
        r("DELETE", "/v1/keys/{key}", WrongToken, e.clone(), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/verify", Token, json!({"key": "k", "client_secret": "cs"}), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/owners/alice/keys", Token, e.clone(), 401, "UNAUTHENTICATED"),
        // ---- POST /v1/tokens ----
        NEW_TOKEN.row(json!({}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": ""}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": "with space"}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": "token:ci"}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": "é"}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": "nul\u{0}"}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": long(65)}), 400, "INVALID_INPUT/name"),
        NEW_TOKEN.row(json!({"name": 5}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": null}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": 0}), 400, "INVALID_INPUT/expires_in_days"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": 3651}), 400, "INVALID_INPUT/expires_in_days"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": u64::MAX}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": 1.5}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": -1}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "n", "expires_in_days": "30"}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "n", "scopes": ["read"]}), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!(["n"]), 400, "INVALID_JSON"),
        NEW_TOKEN.row(json!({"name": "ci"}), 409, "TOKEN_NAME_TAKEN"),
        NEW_TOKEN.row(json!({"name": "expired"}), 409, "TOKEN_NAME_TAKEN"),
        NEW_TOKEN.row(raw(Some("text/plain"), r#"{"name": "n"}"#), 415, "UNSUPPORTED_MEDIA_TYPE"),
        NEW_TOKEN.row(json_raw(format!(r#"{{"name": "{}"}}"#, long(1 << 20))), 413, "PAYLOAD_TOO_LARGE"),
        r("POST", "/v1/tokens", Token, json!({"name": ""}), 400, "INVALID_INPUT/name"),
        r("POST", "/v1/tokens", Token, json!({"name": "ci"}), 409, "TOKEN_NAME_TAKEN"),
        // ---- DELETE /v1/tokens/{id} ----
        r("DELETE", "/v1/tokens/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("DELETE", "/v1/tokens/{unknown}", Token, e.clone(), 404, "NOT_FOUND"),
        r("DELETE", "/v1/tokens/garbage", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("DELETE", "/v1/tokens/{token}", Anon, e.clone(), 401, "UNAUTHENTICATED"),
        r("DELETE", "/v1/tokens/{token}", Client, e.clone(), 401, "UNAUTHENTICATED"),
        r("DELETE", "/v1/tokens/{token}", ExpiredToken, e.clone(), 401, "TOKEN_EXPIRED"),
        r("GET", "/v1/tokens/{token}", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("POST", "/v1/tokens/{token}", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
        r("PATCH", "/v1/tokens", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- webhooks ----
        r("POST", "/v1/webhooks", Anon, json!({"url": "https://a.example/", "events": ["key.created"]}), 401, "UNAUTHENTICATED"),
        r("POST", "/v1/webhooks", Client, json!({"url": "https://a.example/", "events": ["key.created"]}), 401, "UNAUTHENTICATED"),
        r("GET", "/v1/webhooks", ExpiredToken, e.clone(), 401, "TOKEN_EXPIRED"),
        NEW_WEBHOOK.row(json!({}), 400, "INVALID_JSON"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/"}), 400, "INVALID_JSON"),
        NEW_WEBHOOK.row(json!({"url": "ftp://a.example/", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "not a url", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "https://u:p@a.example/", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "http://127.0.0.1:8080/", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "http://169.254.169.254/latest", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "http://[fd00::1]/", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "http://localhost/", "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": format!("https://a.example/{}", long(2048)), "events": ["key.created"]}), 400, "INVALID_INPUT/url"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": []}), 400, "INVALID_INPUT/events"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.exploded"]}), 400, "INVALID_INPUT/events"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": "key.created"}), 400, "INVALID_JSON"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.created"], "app_id": "0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71"}), 400, "INVALID_INPUT/app_id"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.created"], "app_id": "garbage"}), 400, "INVALID_JSON"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.created"], "description": long(501)}), 400, "INVALID_INPUT/description"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.created"], "description": "bell\u{7}"}), 400, "INVALID_INPUT/description"),
        NEW_WEBHOOK.row(json!({"url": "https://a.example/", "events": ["key.created"], "secret": "whsec_mine"}), 400, "INVALID_JSON"),
        NEW_WEBHOOK.row(raw(Some("text/plain"), "{}"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        r("GET", "/v1/webhooks/{unknown}", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/webhooks/garbage", Admin, e.clone(), 400, "INVALID_INPUT/id"),
        r("PATCH", "/v1/webhooks/{unknown}", Admin, json!({}), 404, "NOT_FOUND"),
        r("PATCH", "/v1/webhooks/{unknown}", Admin, json!({"enabled": "yes"}), 400, "INVALID_JSON"),
        r("DELETE", "/v1/webhooks/{unknown}", Token, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/webhooks/{unknown}/secret", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/webhooks/{unknown}/test", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/webhooks/{unknown}/deliveries", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/webhooks/{unknown}/deliveries?limit=many", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("GET", "/v1/webhooks/{unknown}/deliveries?nope=1", Admin, e.clone(), 400, "INVALID_QUERY"),
        r("POST", "/v1/webhooks/{unknown}/deliveries/{unknown}/retry", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/webhooks/{unknown}/deliveries/garbage/retry", Admin, e.clone(), 400, "INVALID_INPUT/delivery_id"),
        r("PUT", "/v1/webhooks/{unknown}", Admin, json!({}), 405, "METHOD_NOT_ALLOWED"),
        // ---- unknown paths ----
        r("GET", "/nope", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/nope", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v2/apps", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/apps/", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/keys", Admin, json!({}), 404, "NOT_FOUND"),
        r("GET", "/v1/apps/{app}/nope", Admin, e.clone(), 404, "NOT_FOUND"),
        r("POST", "/v1/keys/{key}/rotate/now", Admin, e.clone(), 404, "NOT_FOUND"),
        r("GET", "/v1/owners/alice", Client, e.clone(), 404, "NOT_FOUND"),
        r("DELETE", "/healthz", Admin, e.clone(), 405, "METHOD_NOT_ALLOWED"),
    ]
}

/// The request of a row, ready to send.
fn request(server: &TestServer, fx: &Fixture, row: &Row) -> reqwest::RequestBuilder {
    let method = Method::from_bytes(row.method.as_bytes()).unwrap();
    let request = server.anon(method, &fx.path(&row.path));
    let request = match row.auth {
        Auth::None => request,
        Auth::Admin => request.header("cookie", server.cookie.as_deref().unwrap()),
        Auth::BogusCookie => request.header("cookie", "keypal_session=not-a-session"),
        Auth::Service => request.bearer_auth(&server.service_key),
        Auth::WrongService => request.bearer_auth("kp_svc_wrong"),
        Auth::Client => request.bearer_auth(&fx.secret),
        Auth::WrongSecret => request.bearer_auth("cs-wrong"),
        Auth::Basic => request.basic_auth("admin", Some(&server.admin_password)),
        Auth::Token => request.bearer_auth(&fx.token),
        Auth::ExpiredToken => request.bearer_auth(&fx.expired_token),
        Auth::WrongToken => request.bearer_auth("kp_mgmt_wrong"),
    };
    match &row.body {
        Body::Empty => request,
        Body::Json(value) => {
            let text = value.to_string().replace("{secret}", &fx.secret);
            request.header("content-type", "application/json").body(text)
        }
        Body::Raw(content_type, bytes) => {
            let request = match content_type {
                Some(content_type) => request.header("content-type", *content_type),
                None => request,
            };
            request.body(bytes.clone())
        }
    }
}

/// Everything a bad request must not change: the applications (with key counts), every
/// key of each, the audit log, the service key and that the client secrets still work.
async fn snapshot(server: &TestServer, secrets: &[&str]) -> Value {
    let (status, apps) = json_of(server.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{apps}");
    let mut keys = serde_json::Map::new();
    for app in apps["apps"].as_array().unwrap() {
        let id = app["id"].as_str().unwrap();
        let url = format!("/v1/apps/{id}/keys?include_revoked=true&limit=1000");
        let (status, list) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        keys.insert(id.to_owned(), list["keys"].clone());
    }
    let mut events = Vec::new();
    let mut url = "/v1/audit?limit=1000".to_owned();
    loop {
        let (status, page) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/v1/audit?limit=1000&cursor={cursor}"),
            None => break,
        }
    }
    let (status, service_key) = json_of(server.admin(Method::GET, "/v1/service-key").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let mut secrets_work = Vec::new();
    for secret in secrets {
        let response = server.anon(Method::GET, "/v1/owners/nobody/keys").bearer_auth(secret).send().await.unwrap();
        secrets_work.push(response.status() == StatusCode::OK);
    }
    // The management tokens, but for their last use (using one is no change).
    let (status, mut tokens) = json_of(server.admin(Method::GET, "/v1/tokens").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    for token in tokens["tokens"].as_array_mut().unwrap() {
        token.as_object_mut().unwrap().remove("last_used_at");
    }
    let (status, webhooks) = json_of(server.admin(Method::GET, "/v1/webhooks").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{webhooks}");
    json!({
        "apps": apps, "keys": keys, "audit": events, "service_key": service_key, "secrets_work": secrets_work,
        "tokens": tokens, "webhooks": webhooks,
    })
}

async fn setup(server: &TestServer) -> (Fixture, String) {
    let (app, secret) = server
        .create_app(json!({
            "name": "Alpha", "label": "alpha", "max_active_keys_per_owner": 1,
            "tiers": {"free": {"rate_limit": "100/minute"}},
        }))
        .await;
    let app = app["id"].as_str().unwrap().to_owned();
    let (app_b, secret_b) = server.create_app(json!({"name": "Beta", "label": "beta"})).await;
    let app_b = app_b["id"].as_str().unwrap().to_owned();
    let id = |record: Value| record["id"].as_str().unwrap().to_owned();
    let key = id(server.create_key(&app, json!({"owner_id": "alice", "name": "laptop"})).await.1);
    let bob_key = id(server.create_key(&app, json!({"owner_id": "bob", "metadata": {"m": 1}})).await.1);
    let revoked = id(server.create_key(&app, json!({"owner_id": "carol"})).await.1);
    let response = server.admin(Method::POST, &format!("/v1/keys/{revoked}/revoke")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let b_key = id(server.create_key(&app_b, json!({"owner_id": "alice"})).await.1);
    let new_token = async |name: &str| {
        let request = server.admin(Method::POST, "/v1/tokens").json(&json!({"name": name, "expires_in_days": 1}));
        let (status, created) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (created["token"].as_str().unwrap().to_owned(), id(created["record"].clone()))
    };
    let (token, token_id) = new_token("ci").await;
    // A token made to expire a day from now, its expiry then moved into the past.
    let (expired_token, expired_id) = new_token("expired").await;
    let deployment = keypal_server::Deployment::open(&server.config).await.unwrap();
    let kind = keypal_server::tokens::KIND;
    let mut stored = deployment.store.get_object(kind, &expired_id).await.unwrap().unwrap();
    stored.body["expires_at"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 60);
    assert!(deployment.store.update_object(kind, &expired_id, &stored.body, None).await.unwrap());
    deployment.store.close().await;
    let fixture = Fixture { app, secret, app_b, key, bob_key, revoked, b_key, token, token_id, expired_token };
    (fixture, secret_b)
}

async fn every_bad_request_is_a_stable_4xx_and_changes_nothing(db: Db) {
    let mut server = TestServer::start(db).await;
    server.login().await;
    let (fx, secret_b) = setup(&server).await;
    let before = snapshot(&server, &[&fx.secret, &secret_b]).await;
    assert_eq!(before["secrets_work"], json!([true, true]));

    let rows = table();
    assert!(rows.len() >= 120, "only {} rows", rows.len());
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let what = format!("#{i} {} {} ({:?})", row.method, row.path, row.auth);
        let response = match request(&server, &fx, row).send().await {
            Ok(response) => response,
            Err(e) => {
                failures.push(format!("{what}: the request failed: {e}"));
                continue;
            }
        };
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let (code, field) = match row.code.split_once('/') {
            Some((code, field)) => (code, Some(field)),
            None => (row.code, None),
        };
        let message = body["error"]["message"].as_str().unwrap_or_default();
        let mut problems = Vec::new();
        if status.as_u16() != row.status {
            problems.push(format!("status {status}, expected {}", row.status));
        }
        if !status.is_client_error() {
            problems.push(format!("{status} is not a 4xx"));
        }
        if !content_type.starts_with("application/json") {
            problems.push(format!("content-type {content_type:?}"));
        }
        if body["error"]["code"] != code {
            problems.push(format!("code {}, expected {code}", body["error"]["code"]));
        }
        if message.trim().is_empty() {
            problems.push("no message".to_owned());
        }
        if let Some(field) = field
            && body["error"]["field"] != field
        {
            problems.push(format!("field {}, expected {field}", body["error"]["field"]));
        }
        if !problems.is_empty() {
            let shown: String = text.chars().take(300).collect();
            failures.push(format!("{what}: {} — body {shown}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));

    let after = snapshot(&server, &[&fx.secret, &secret_b]).await;
    let counts = |s: &Value| {
        s["apps"]["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["label"].clone(), a["active_keys"].clone(), a["total_keys"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&after), counts(&before), "key counts");
    assert_eq!(after["audit"].as_array().unwrap().len(), before["audit"].as_array().unwrap().len(), "audit log length");
    assert_eq!(after["apps"], before["apps"], "the applications");
    assert_eq!(after["keys"], before["keys"], "the keys");
    assert_eq!(after["audit"], before["audit"], "the audit log");
    assert_eq!(after["service_key"], before["service_key"], "the service key");
    assert_eq!(after["secrets_work"], json!([true, true]), "the client secrets");
    server.stop().await;
}

common::on_both!(every_bad_request_is_a_stable_4xx_and_changes_nothing);

/// The admin's cookie does not let another site change anything: a state-changing
/// request whose `Origin` is not this server is refused (403 `CROSS_SITE`) before it
/// does anything, logging in and out included. Reads, this server's own origin and
/// clients that send no `Origin` (not browsers) are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_with_the_admin_cookie_from_another_site_are_refused() {
    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let (app, _) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let own = server.url("");
    for origin in ["http://127.0.0.1:1", "https://evil.example", "null"] {
        for (method, path) in [
            (Method::POST, "/v1/service-key/rotate".to_owned()),
            (Method::POST, format!("/v1/apps/{app_id}/client-secret")),
            (Method::DELETE, format!("/v1/apps/{app_id}")),
            (Method::POST, "/v1/tokens".to_owned()),
            (Method::DELETE, format!("/v1/tokens/{}", uuid::Uuid::now_v7())),
            (Method::POST, "/v1/session".to_owned()),
            (Method::DELETE, "/v1/session".to_owned()),
        ] {
            let request = server.admin(method.clone(), &path).header("origin", origin);
            let request = if path == "/v1/session" && method == Method::POST {
                request.json(&json!({"password": server.admin_password}))
            } else {
                request
            };
            let (status, body) = json_of(request.send().await.unwrap()).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (StatusCode::FORBIDDEN, &json!("CROSS_SITE")),
                "{method} {path} from {origin}"
            );
        }
    }
    let (status, _) =
        json_of(server.admin(Method::GET, "/v1/apps").header("origin", "https://evil.example").send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK, "a read");
    let response = server.admin(Method::POST, "/v1/service-key/rotate").header("origin", &own).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "this server's own page ({own})");
    let response = server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the application is still there");
    server.stop().await;
}

/// Rotating a key whose tier the application no longer has is a 400 naming the tier,
/// not a 500, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_key_of_a_removed_tier_is_refused() {
    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let tiers = json!({"free": {"rate_limit": "100/hour"}, "pro": {"rate_limit": "1000/hour"}});
    let (app, _) = server
        .create_app(json!({"name": "T", "label": "t", "template": "kp_{tier}_{secret:32:base62}", "tiers": tiers, "default_tier": "free"}))
        .await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (_, record) = server.create_key(&app_id, json!({"tier": "pro"})).await;
    let key_id = record["id"].as_str().unwrap().to_owned();
    let patch = json!({"tiers": {"free": {"rate_limit": "100/hour"}}});
    let response = server.admin(Method::PATCH, &format!("/v1/apps/{app_id}")).json(&patch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) =
        json_of(server.admin(Method::POST, &format!("/v1/keys/{key_id}/rotate")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!((&body["error"]["code"], &body["error"]["field"]), (&json!("INVALID_INPUT"), &json!("tier")), "{body}");
    let (_, key) = json_of(server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap()).await;
    assert!(key["rotated_to"].is_null() && key["revoked_at"].is_null(), "unchanged: {key}");
    server.stop().await;
}

/// A body that never arrives whole is answered after 30 s with 408, the usual error
/// body and `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_times_out_with_an_error_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(Db::Sqlite).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\": ",
        server.service_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), stream.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "answered within a minute");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 408"), "{answer}");
    assert!(lower.contains("connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"REQUEST_TIMEOUT""#), "{answer}");
    assert!(answer.contains("within 30 seconds"), "{answer}");
    server.stop().await;
}

/// A client still sending a body over the limit when the server has refused it can send
/// it whole and gets the 413: the server reads the rest before closing, instead of
/// closing with unread data (which resets the connection under the client's writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_an_oversized_body_gets_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(Db::Sqlite).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let length = 1 << 20;
    let head = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        server.service_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Past the limit, then a pause (the server has refused the body by then), then the rest.
    let chunk = vec![b' '; 128 * 1024];
    stream.write_all(&chunk).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut sent = chunk.len();
    while sent < length {
        let n = chunk.len().min(length - sent);
        // A client such as hyper's gives up on the request when a write fails.
        if let Err(e) = stream.write_all(&chunk[..n]).await {
            panic!("the connection was closed while the body was being sent ({sent} bytes): {e}");
        }
        sent += n;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(matches!(read, Ok(Ok(_))), "the answer is read whole: {read:?}");
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    server.stop().await;
}

/// A body over the limit is refused with 413 and `Connection: close`, and the client's
/// next request goes through on a new connection. The client gets the 413, not a broken
/// pipe, even while still sending a body of megabytes: the server reads the rest of a
/// body of up to 4 MiB before closing (a close with unread data resets the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_closes_its_connection_and_the_next_request_works() {
    let server = TestServer::start(Db::Sqlite).await;
    for _ in 0..20 {
        let body = format!(r#"{{"key": "{}", "client_secret": "cs"}}"#, "k".repeat(3 << 20));
        let response = server
            .anon(Method::POST, "/v1/verify")
            .bearer_auth(&server.service_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
        let response = server.anon(Method::GET, "/v1/verify").bearer_auth(&server.service_key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    // The admin panel's forms too.
    let form = format!("password={}", "p".repeat(3 << 20));
    let response = server
        .anon(Method::POST, "/admin/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
    server.stop().await;
}

/// An application id in another UUID form (upper case, braces, no hyphens) names the same
/// application for every call, and deleting through one removes the stored application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_id_in_any_uuid_form_names_the_same_application() {
    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let (app, _) = server.create_app(json!({"name": "Forms", "label": "forms"})).await;
    let id = app["id"].as_str().unwrap().to_owned();
    let upper = id.to_uppercase();
    let braced = format!("{{{id}}}");
    let simple = id.replace('-', "");

    let url = format!("/v1/apps/{upper}");
    let (status, patched) =
        json_of(server.admin(Method::PATCH, &url).json(&json!({"name": "Renamed"})).send().await.unwrap()).await;
    assert_eq!((status, &patched["app"]["name"]), (StatusCode::OK, &json!("Renamed")), "{patched}");
    let (_, got) = json_of(server.admin(Method::GET, &format!("/v1/apps/{id}")).send().await.unwrap()).await;
    assert_eq!(got["app"]["name"], "Renamed");

    let url = format!("/v1/apps/{braced}/client-secret");
    let (status, body) = json_of(server.admin(Method::POST, &url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = body["client_secret"].as_str().unwrap().to_owned();

    let (status, body) =
        json_of(server.admin(Method::DELETE, &format!("/v1/apps/{simple}")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let config = server.config.clone();
    let (admin_password, service_key) = (server.admin_password.clone(), server.service_key.clone());
    server.stop().await;

    // After a restart the application is still gone, and so is its client secret.
    let mut restarted = TestServer::start_with({
        let mut c = config;
        c.admin_password = Some(admin_password);
        c.service_key = Some(service_key);
        c
    })
    .await;
    restarted.login().await;
    let (_, apps) = json_of(restarted.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(apps["apps"], json!([]), "deleted for good: {apps}");
    let response = restarted.anon(Method::GET, "/v1/owners/o/keys").bearer_auth(&secret).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    restarted.stop().await;
}
