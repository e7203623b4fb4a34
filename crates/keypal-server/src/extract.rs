//! Extractors whose rejections are [`ApiError`]s, so every bad request gets the JSON error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::ApiError;
use crate::schema::OwnerId;

/// A JSON object body (`Content-Type: application/json`), or a 400/413/415 [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(unsupported_media_type());
        }
        let body = Bytes::from_request(request, state).await?;
        json_object(&body).map(ApiJson)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A body that is empty or JSON: its bytes, read within the body limit (413) and, when
/// not empty, sent as `Content-Type: application/json` (415). Code that calls a handler
/// directly converts JSON text into one.
#[derive(Debug, Clone, Default)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(request.headers());
        let body = Bytes::from_request(request, state).await?;
        if !json && !is_blank(&body) {
            return Err(unsupported_media_type());
        }
        Ok(JsonBytes(body))
    }
}

impl From<String> for JsonBytes {
    fn from(json: String) -> Self {
        JsonBytes(Bytes::from(json))
    }
}

impl From<Bytes> for JsonBytes {
    fn from(json: Bytes) -> Self {
        JsonBytes(json)
    }
}

impl JsonBytes {
    /// The JSON object, or the defaults when the body is empty.
    pub fn optional<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        optional_json(&self.0)
    }
}

/// Query parameters, or a 400 `INVALID_QUERY`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters, or a 400 `INVALID_INPUT` naming the one that does not parse.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// An example id in the document (a UUID v7, like every id keypal makes).
pub fn example_id() -> serde_json::Value {
    serde_json::json!("0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d")
}

/// The path of `/v1/apps/{id}...`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AppPath {
    /// The application's id.
    #[param(example = example_id)]
    pub id: Uuid,
}

/// The path of `/v1/keys/{id}...`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The key's id.
    #[param(example = example_id)]
    pub id: Uuid,
}

/// The path of `/v1/tokens/{id}`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The management token's id.
    #[param(example = example_id)]
    pub id: Uuid,
}

/// The path of `/v1/owners/{owner_id}/keys`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OwnerPath {
    /// The owner: 1-256 characters, no control characters.
    #[param(inline, value_type = OwnerId)]
    pub owner_id: String,
}

/// The path of `/v1/owners/{owner_id}/keys/{key_id}...`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OwnerKeyPath {
    /// The owner: 1-256 characters, no control characters.
    #[param(inline, value_type = OwnerId)]
    pub owner_id: String,
    /// The key's id.
    #[param(example = example_id)]
    pub key_id: Uuid,
}

/// The id of a page's path for the admin panel, whose pages answer an id that is not a
/// UUID as one that names nothing: it becomes the nil UUID, which no application or key
/// has (keypal's ids are UUID v7), so the handler answers 404.
fn panel_id(id: &str) -> Uuid {
    id.parse().unwrap_or(Uuid::nil())
}

impl AppPath {
    /// The path of the application `id` names, for the admin panel (see [`panel_id`]).
    pub fn from_panel(id: &str) -> ApiPath<Self> {
        ApiPath(AppPath { id: panel_id(id) })
    }
}

impl KeyPath {
    /// The path of the key `id` names, for the admin panel (see [`panel_id`]).
    pub fn from_panel(id: &str) -> ApiPath<Self> {
        ApiPath(KeyPath { id: panel_id(id) })
    }
}

impl TokenPath {
    /// The path of the management token `id` names, for the admin panel (see [`panel_id`]).
    pub fn from_panel(id: &str) -> ApiPath<Self> {
        ApiPath(TokenPath { id: panel_id(id) })
    }
}

/// An optional JSON object body: no body, or `null` (what a client sends for an optional
/// body it has none of), means the defaults.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if is_blank(body) || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    json_object(body)
}

/// A JSON object (arrays, strings, numbers and `null` are refused: serde would otherwise
/// take an array for a struct).
///
/// Read once without tracking where the reader is; only a body that fails is read again
/// through axum's reader, which tracks the path (allocating each field's name) so the
/// error can name the field at fault. Both read the same JSON the same way.
fn json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => match serde_json::from_slice(body) {
            Ok(value) => Ok(value),
            Err(_) => Ok(axum::Json::<T>::from_bytes(body)?.0),
        },
        Some(_) => Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", "the body must be a JSON object")),
    }
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Whether the content type is `application/json` or `application/*+json` (parameters allowed).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|subtype| subtype.ends_with("+json"))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "send a JSON body with Content-Type: application/json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        #[serde(default)]
        limits: Vec<u32>,
    }

    fn message(body: &str) -> (String, String) {
        match json_object::<Body>(body.as_bytes()) {
            Ok(read) => panic!("{body} was read: {read:?}"),
            Err(e) => (e.code.to_owned(), e.message.clone()),
        }
    }

    #[test]
    fn a_body_that_fits_is_read_and_one_that_does_not_names_the_field_at_fault() {
        let read = json_object::<Body>(br#" {"name": "a", "limits": [1, 2]} "#).map(|b| (b.name, b.limits));
        assert_eq!(read.ok(), Some(("a".to_owned(), vec![1, 2])));

        let (code, text) = message(r#"{"name": "a", "limits": [1, "two"]}"#);
        assert_eq!(code, "INVALID_JSON");
        assert!(text.contains("limits[1]"), "{text}");
        let (code, text) = message(r#"{"name": "a", "extra": 1}"#);
        assert_eq!(code, "INVALID_JSON");
        assert!(text.contains("extra"), "{text}");
        let (code, text) = message(r#"{"name": "a"} trailing"#);
        assert_eq!(code, "INVALID_JSON");
        assert!(text.contains("trailing characters"), "{text}");
        assert_eq!(message("[1]").0, "INVALID_JSON");
        assert_eq!(message("").0, "INVALID_JSON");
    }
}
