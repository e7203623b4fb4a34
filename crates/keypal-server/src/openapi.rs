//! The OpenAPI document (`GET /openapi.json`). Its operations come from the list of routes
//! that also makes the router ([`crate::routes::api`]), so none is missing; [`Refusals`]
//! then adds to each operation the refusals it can answer, from the error codes in
//! [`CODES`].

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::json;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema};

use crate::error::{ErrorBody, ErrorDetail};

/// An error code of the API: the HTTP status it comes with, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The HTTP status.
    pub status: u16,
    /// The stable code in `{"error": {"code"}}`.
    pub code: &'static str,
    /// What it means (also the message of its example in the document).
    pub meaning: &'static str,
}

/// Every error code the API answers. docs/SERVER.md's table of errors lists the same
/// codes (a test checks), and the document's example of each refusal comes from here.
///
/// ```
/// let codes = keypal_server::CODES;
/// assert!(codes.iter().any(|c| c.status == 404 && c.code == "NOT_FOUND"));
/// ```
pub const CODES: &[ErrorCode] = &[
    code(400, "INVALID_JSON", "the body is not a JSON object of the expected shape"),
    code(400, "INVALID_INPUT", "a value is out of bounds; `field` names it"),
    code(400, "INVALID_QUERY", "a query parameter is unknown or of the wrong type"),
    code(401, "UNAUTHENTICATED", "no credential, or a wrong one"),
    code(401, "TOKEN_EXPIRED", "the management token has expired; make a new one"),
    code(403, "INVALID_CLIENT_SECRET", "the client secret belongs to no application"),
    code(403, "KEY_LIMIT_REACHED", "the owner already has the most active keys the application allows"),
    code(403, "FORBIDDEN", "the key belongs to another owner"),
    code(403, "WEBHOOK_LIMIT_REACHED", "there are 100 webhooks already; delete one first"),
    code(403, "CROSS_SITE", "a request from another site, with the admin's cookie, would change something"),
    code(404, "NOT_FOUND", "no such application, key, webhook or delivery"),
    code(405, "METHOD_NOT_ALLOWED", "this endpoint does not take that method"),
    code(408, "REQUEST_TIMEOUT", "the request did not complete within 30 seconds"),
    code(409, "ALREADY_REVOKED", "the key is already revoked"),
    code(409, "NOT_RECOVERABLE", "this key was not kept encrypted; it was shown once"),
    code(409, "LABEL_TAKEN", "another application has this label"),
    code(409, "TOKEN_NAME_TAKEN", "a management token that is not revoked has this name"),
    code(409, "ALREADY_EXISTS", "the key is already stored"),
    code(409, "SERVICE_KEY_PINNED", "the service key is set by KEYPAL_SERVICE_KEY; change it there"),
    code(413, "PAYLOAD_TOO_LARGE", "the body is larger than 64 KiB"),
    code(415, "UNSUPPORTED_MEDIA_TYPE", "send a JSON body with Content-Type: application/json"),
    code(429, "TOO_MANY_ATTEMPTS", "too many failed logins from this address; wait `Retry-After` seconds"),
    code(500, "INTERNAL", "internal error"),
    code(500, "HASHING_FAILED", "a slow hash could not run"),
    code(503, "STORAGE_UNAVAILABLE", "the database is unavailable; try again"),
    code(503, "RATE_LIMITER_UNAVAILABLE", "the rate limiter is unavailable; try again"),
    code(503, "HASHING_BUSY", "every hashing thread is busy; try again after `Retry-After` seconds"),
];

const fn code(status: u16, code: &'static str, meaning: &'static str) -> ErrorCode {
    ErrorCode { status, code, meaning }
}

/// An operation's `x-keypal-rules`: the rules of its input that a JSON schema cannot say
/// (they depend on the time, on other fields or on what is stored), by field. A value
/// that breaks one is refused with 400 `INVALID_INPUT` naming the field.
pub fn rules(rules: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(rules.iter().map(|(field, rule)| ((*field).to_owned(), json!(rule))).collect())
}

/// keypal's HTTP API: the document served at `GET /openapi.json`.
///
/// ```
/// use utoipa::OpenApi;
/// let document = keypal_server::ApiDoc::openapi();
/// assert!(document.paths.paths.contains_key("/v1/verify"));
/// ```
pub struct ApiDoc;

impl OpenApi for ApiDoc {
    fn openapi() -> utoipa::openapi::OpenApi {
        DOCUMENT.clone()
    }
}

/// The document, made once.
pub static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
    let mut document = crate::routes::api().into_openapi();
    Security.modify(&mut document);
    Refusals.modify(&mut document);
    document
});

/// What the document says before its operations are added.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "keypal",
        description = "API keys for services in any language: applications, keys, client secrets and verification.\n\n\
            Every refusal is `{\"error\": {\"code\", \"message\", \"field\"?}}` with a stable code."
    ),
    tags(
        (name = "system", description = "Liveness, metrics and this document."),
        (name = "session", description = "The administrator's session."),
        (name = "applications", description = "Applications (admin session or management token)."),
        (name = "keys", description = "Keys of any application (admin session or management token)."),
        (name = "service key", description = "The key services present to verify keys (admin session)."),
        (name = "audit", description = "The audit log (admin session or management token)."),
        (name = "analytics", description = "Verification counts over time (admin session or management token)."),
        (name = "tokens", description = "Management tokens for scripts (admin session or management token)."),
        (name = "verification", description = "Verifying keys (service key)."),
        (name = "owners", description = "An application's backend manages its users' keys (client secret)."),
        (name = "webhooks", description = "Endpoints told about keys and applications, signed as Standard Webhooks says (admin session or management token)."),
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct BaseDoc;

/// The four ways to authenticate. The management API takes a management token wherever
/// it takes the admin session (the [`crate::auth::Admin`] extractor), except the service
/// key's operations, which take the session only ([`crate::auth::AdminSession`]); the
/// routes declare the session, and this adds the token to the operations that take it.
struct Security;

/// The operations that take the admin session and no management token.
const SESSION_ONLY: [&str; 2] = ["get_service_key", "rotate_service_key"];

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "The cookie `POST /v1/session` sets.",
            ))),
        );
        let mut management_token = Http::new(HttpAuthScheme::Bearer);
        management_token.description =
            Some("A management token (`kp_mgmt_...`, `POST /v1/tokens` or `keypal tokens create`).".to_owned());
        components.add_security_scheme("management_token", SecurityScheme::Http(management_token));
        let mut service_key = Http::new(HttpAuthScheme::Bearer);
        service_key.description = Some("The service key (`GET /v1/service-key`).".to_owned());
        components.add_security_scheme("service_key", SecurityScheme::Http(service_key));
        let mut client_secret = Http::new(HttpAuthScheme::Bearer);
        client_secret.description = Some("An application's client secret (`cs-...`).".to_owned());
        components.add_security_scheme("client_secret", SecurityScheme::Http(client_secret));

        let session_alone = serde_json::json!([{ "admin_session": [] }]);
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                let id = operation.operation_id.as_deref().unwrap_or_default();
                let declared = operation.security.as_ref().and_then(|s| serde_json::to_value(s).ok());
                if declared.as_ref() == Some(&session_alone) && !SESSION_ONLY.contains(&id) {
                    let token = SecurityRequirement::new("management_token", Vec::<String>::new());
                    operation.security.get_or_insert_with(Vec::new).push(token);
                }
            }
        }
    }
}

/// Adds to every operation the refusals it can answer besides its own (which its route
/// declares, naming their codes in the description):
///
/// - 400 `INVALID_INPUT` for a path or query value out of bounds, `INVALID_QUERY` for a
///   query that does not parse, `INVALID_JSON` for a body that does not;
/// - 401 `UNAUTHENTICATED` when it needs a credential, and `TOKEN_EXPIRED` when it takes a
///   management token; 403 `CROSS_SITE` when it changes something with the admin's cookie;
/// - 404 `NOT_FOUND` when its path names something (the path's id may name nothing);
/// - 413 `PAYLOAD_TOO_LARGE` and 415 `UNSUPPORTED_MEDIA_TYPE` when it takes a body;
/// - 408 `REQUEST_TIMEOUT` and 500 `INTERNAL` always; 503 `STORAGE_UNAVAILABLE` unless it
///   is tagged `system` (which never touches the database).
///
/// Each refusal's description lists its codes, with an example of each.
pub struct Refusals;

impl Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in operations(item) {
                let codes = refusals(method, operation);
                describe_refusals(operation, &codes);
            }
        }
    }
}

/// The operations of a path, by method.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| Some((method, operation?)))
    .collect()
}

/// The error codes an operation can answer: those its route names, and the common ones.
fn refusals(method: &str, operation: &Operation) -> BTreeSet<&'static str> {
    let mut codes: BTreeSet<&'static str> = operation
        .responses
        .responses
        .iter()
        .filter_map(|(status, response)| match response {
            RefOr::T(response) => Some((status, response)),
            RefOr::Ref(_) => None,
        })
        .flat_map(|(status, response)| named_codes(status, &response.description))
        .collect();
    let parameters = operation.parameters.iter().flatten().filter_map(|p| match p {
        RefOr::T(parameter) => Some(&parameter.parameter_in),
        RefOr::Ref(_) => None,
    });
    let (mut path, mut query) = (false, false);
    for place in parameters {
        path |= matches!(place, ParameterIn::Path);
        query |= matches!(place, ParameterIn::Query);
    }
    let body = operation.request_body.is_some();
    let requirements: Vec<serde_json::Value> =
        operation.security.iter().flatten().filter_map(|r| serde_json::to_value(r).ok()).collect();
    let accepts = |scheme: &str| requirements.iter().any(|r| r.get(scheme).is_some());
    let credential =
        !requirements.is_empty() && requirements.iter().all(|r| r.as_object().is_some_and(|o| !o.is_empty()));
    let system = operation.tags.iter().flatten().any(|t| t == "system");
    let hashes = operation.operation_id.as_deref().is_some_and(|id| SLOW_HASHING.contains(&id));

    let mut add = |yes: bool, code: &'static str| {
        if yes {
            codes.insert(code);
        }
    };
    add(path || query || body, "INVALID_INPUT");
    add(query, "INVALID_QUERY");
    add(body, "INVALID_JSON");
    add(credential, "UNAUTHENTICATED");
    add(accepts("management_token"), "TOKEN_EXPIRED");
    add(accepts("admin_session") && method != "get", "CROSS_SITE");
    add(path, "NOT_FOUND");
    add(body, "PAYLOAD_TOO_LARGE");
    add(body, "UNSUPPORTED_MEDIA_TYPE");
    add(true, "REQUEST_TIMEOUT");
    add(true, "INTERNAL");
    add(!system, "STORAGE_UNAVAILABLE");
    add(hashes, "HASHING_BUSY");
    add(hashes, "HASHING_FAILED");
    codes
}

/// The operations that may run a slow hash (a key's check or the dummy check of an
/// unknown key, the hash of a new or rotated key, the admin password's check) on the
/// hashing threads, and so answer 503 `HASHING_BUSY` or 500 `HASHING_FAILED`.
const SLOW_HASHING: [&str; 5] = ["verify", "create_key", "create_owner_key", "rotate_key", "log_in"];

/// The codes of [`CODES`] with this status that a description names.
fn named_codes<'a>(status: &'a str, description: &'a str) -> impl Iterator<Item = &'static str> + 'a {
    description
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter_map(move |word| CODES.iter().find(|c| c.code == word && c.status.to_string() == status))
        .map(|c| c.code)
}

/// Writes one response per status of `codes`: a description listing the codes and what
/// each means, the error body's schema, and an example of each code.
fn describe_refusals(operation: &mut Operation, codes: &BTreeSet<&'static str>) {
    let mut statuses: Vec<u16> = CODES.iter().filter(|c| codes.contains(c.code)).map(|c| c.status).collect();
    statuses.dedup();
    for status in statuses {
        let of_status: Vec<&ErrorCode> =
            CODES.iter().filter(|c| c.status == status && codes.contains(c.code)).collect();
        let description =
            of_status.iter().map(|c| format!("`{}`: {}.", c.code, c.meaning)).collect::<Vec<_>>().join(" ");
        let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        for c in &of_status {
            let example = ExampleBuilder::new()
                .summary(c.code)
                .value(Some(json!({ "error": { "code": c.code, "message": c.meaning } })))
                .build();
            content.examples.insert(c.code.to_owned(), RefOr::T(example));
        }
        let mut response = Response::new(description);
        response.content.insert("application/json".to_owned(), RefOr::T(content));
        if status == 429 {
            response.headers.insert(
                "Retry-After".to_owned(),
                RefOr::T(
                    utoipa::openapi::header::HeaderBuilder::new()
                        .schema(Some(u64::schema()))
                        .description(Some("Seconds to wait before trying again."))
                        .build(),
                ),
            );
        }
        operation.responses.responses.insert(status.to_string(), RefOr::T(response));
    }
}
