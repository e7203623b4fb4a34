//! The schemas of the API's texts in the OpenAPI document: the same rules the checks in
//! [`crate::apps`] and [`crate::routes::apps`] apply, so a value the document allows is
//! one the server takes. Each is a type only for `#[schema(value_type = ...)]` and
//! `#[param(value_type = ...)]`.

use serde_json::json;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// Unicode's control characters (`Cc`, what `char::is_control` refuses), for a regular
/// expression's character class.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// Declares a unit type whose schema is `$schema`.
macro_rules! text_schema {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $name {}
    };
}

fn text(min: usize, max: usize, pattern: String, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .examples([json!(example)])
        .into()
}

/// The schema of a text that is one of `values`.
pub fn one_of<'a>(values: impl IntoIterator<Item = &'a str>) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)).into()
}

text_schema!(
    /// An owner id: 1-256 characters, no control characters.
    OwnerId => text(1, 256, format!("^[^{CONTROL}]*$"), "user_42")
);

text_schema!(
    /// A name: 1-100 characters, not only spaces, no control characters (stored trimmed).
    Name => text(1, 100, format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$"), "CI deploys")
);

text_schema!(
    /// A scope: 1-100 characters, no spaces or control characters.
    Scope => text(1, 100, format!("^[^\\s{CONTROL}]*$"), "billing:read")
);

text_schema!(
    /// Scopes: at most 100.
    Scopes => ArrayBuilder::new().items(Scope::schema()).max_items(Some(100)).examples([json!(["read", "billing:*"])]).into()
);

text_schema!(
    /// A verification's tag: 1-64 characters, no control characters.
    Tag => text(1, 64, format!("^[^{CONTROL}]*$"), "GET /v1/orders")
);

text_schema!(
    /// A verification's tags: at most 10.
    Tags => ArrayBuilder::new().items(Tag::schema()).max_items(Some(10)).examples([json!(["GET /v1/orders", "eu-west"])]).into()
);

text_schema!(
    /// An application's label: 1-32 of `a-z`, `0-9` and `-`.
    Label => text(1, 32, "^[a-z0-9-]*$".to_owned(), "billing")
);

text_schema!(
    /// A management token's name: 1-64 of `A-Z`, `a-z`, `0-9`, `.`, `_` and `-`.
    TokenName => text(1, 64, "^[A-Za-z0-9._-]*$".to_owned(), "ci")
);

text_schema!(
    /// A key template (docs/CORE.md): literal text without braces, `{app}`, `{label}`,
    /// `{tier}`, `{id:N:ENCODING}` (N 1-64), `{checksum}`, and one `{secret:N:ENCODING}`
    /// (N 16-256). `x-keypal-rules` says the rest: at most one `{tier}`, `{id}` and
    /// `{checksum}`, which comes last.
    Template => ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(template_pattern()))
        .examples([json!("sk-proj-{app}-{label}-{secret:32:base64url}")])
        .into()
);

text_schema!(
    /// An application's earlier key formats: at most 8 templates.
    LegacyTemplates => ArrayBuilder::new()
        .items(Template::schema())
        .max_items(Some(crate::apps::MAX_LEGACY_TEMPLATES))
        .examples([json!(["{secret:43:base64url}"])])
        .into()
);

/// See [`Template`]. Lengths may have leading zeros, as the template parser takes them.
fn template_pattern() -> String {
    let literal = format!("[^{{}}{CONTROL}]*");
    let encoding = "(?:base62|alnum|base64url|base32|hex)";
    let id_length = "0*(?:[1-9]|[1-5][0-9]|6[0-4])";
    let secret_length = "0*(?:1[6-9]|[2-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-6])";
    let other = format!("\\{{(?:app|label|tier|checksum|id:{id_length}:{encoding})\\}}");
    let secret = format!("\\{{secret:{secret_length}:{encoding}\\}}");
    format!("^{literal}(?:{other}{literal})*{secret}{literal}(?:{other}{literal})*$")
}

text_schema!(
    /// The text of `{tier}` in keys: not empty, no braces or control characters.
    TierSegment => ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(format!("^[^{{}}{CONTROL}]*$")))
        .examples([json!("free")])
        .into()
);

text_schema!(
    /// A rate limit: requests per second, minute, hour or day, like `100/hour`.
    RateLimitText => ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^ *[1-9][0-9]{0,8} */ *(s|sec|second|m|min|minute|h|hour|d|day) *$"))
        .examples([json!("100/hour")])
        .into()
);

text_schema!(
    /// A hash's name: `sha256`, `sha512`, `hmac-sha256`, `argon2id` or `bcrypt`.
    HashName => one_of(crate::apps::HASHES.iter().map(|h| h.name()))
);
