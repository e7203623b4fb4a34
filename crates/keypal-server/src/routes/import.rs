//! `POST /v1/apps/{id}/keys/import`: keys issued elsewhere, imported so they keep
//! working, as a JSON list of at most [`MAX_ITEMS`] items or as an NDJSON stream of any
//! length. Each item stands alone: it is imported whole or not at all, and the answer
//! says what became of each.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use keypal::hash::Hashing;
use keypal::{
    AuditContext, DigestEncoding, HashCovers, ImportAlgorithm, ImportKey, ImportedHash, KeyId, KeyManager, KeyRecord,
    Lookup,
};
use keypal_sql::SqlStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, Object, Schema};
use uuid::Uuid;

use super::apps::{find, new_key};
use crate::auth::Admin;
use crate::error::{ApiError, ErrorDetail};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AppPath, is_json};
use crate::keys::NewKeyRequest;
use crate::state::{AppRuntime, State};

/// The most items of the JSON form; more go as NDJSON.
pub const MAX_ITEMS: usize = 1000;
/// The largest body of the JSON form (its items' metadata included).
pub const MAX_JSON_BODY: usize = 8 * 1024 * 1024;
/// The longest line of the NDJSON form; a longer one is that line's error.
pub const MAX_LINE: usize = 64 * 1024;
/// The most results of the NDJSON form listed in the answer; the others are counted.
pub const MAX_REPORTED: usize = 10_000;
/// How long an import may take, its body included (other requests: 30 seconds).
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Items imported in one store transaction.
pub const BATCH: usize = 2000;
/// The longest plaintext key, as `POST /v1/verify` takes them.
const MAX_KEY: usize = 512;

/// The media type of the NDJSON form.
const NDJSON: &str = "application/x-ndjson";

/// Whether a request is an import, which may take [`IMPORT_TIMEOUT`].
pub fn is_import(path: &str) -> bool {
    path.strip_prefix("/v1/apps/").is_some_and(|rest| rest.ends_with("/keys/import") && rest.matches('/').count() == 2)
}

/// `POST /v1/apps/{id}/keys/import` as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The keys to import, at most 1000 (more: send them as `application/x-ndjson`).
    /// Each item is checked and imported alone: a bad one is reported in the answer and
    /// the others go in.
    #[schema(value_type = Vec<ImportItem>, max_items = 1000)]
    pub keys: Vec<Value>,
    /// Import keys even when their owner already has the most active keys the
    /// application allows (default false: such an item is `KEY_LIMIT_REACHED`).
    #[serde(default)]
    #[schema(example = false)]
    pub skip_limits: bool,
}

/// The query of `POST /v1/apps/{id}/keys/import`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Import keys even when their owner already has the most active keys the
    /// application allows (the NDJSON form's `skip_limits`; the JSON form may say it
    /// in its body too).
    #[param(example = false)]
    pub skip_limits: Option<bool>,
}

/// An NDJSON body: one `ImportItem` (a JSON object) a line; blank lines are skipped.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[expect(dead_code, reason = "a schema of the OpenAPI document only: the value is read as text")]
pub struct ImportLines(String);

/// A key to import: what is known of the key ([`ImportedKey`]) and the fields of a new
/// key ([`NewKeyRequest`]), in one JSON object.
#[derive(Debug)]
pub struct ImportItem {
    /// What is known of the key.
    pub key: ImportedKey,
    /// Name, owner, scopes, metadata, tier, expiry, credits and rate limit.
    pub details: NewKeyRequest,
}

/// The item's schema: one object with the properties of both (no others), which a
/// JSON schema's `allOf` of the two cannot say (each refuses the other's properties).
impl utoipa::PartialSchema for ImportItem {
    fn schema() -> RefOr<Schema> {
        let mut item = Object::new();
        item.description = Some(
            "A key to import: exactly one of `key` (its plaintext) or `hash`, with the fields of a new key \
             (`POST /v1/apps/{id}/keys`), which follow the same rules."
                .to_owned(),
        );
        for part in [ImportedKey::schema(), NewKeyRequest::schema()] {
            if let RefOr::T(Schema::Object(part)) = part {
                item.properties.extend(part.properties);
                item.required.extend(part.required);
            }
        }
        item.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        RefOr::T(Schema::Object(item))
    }
}

impl ToSchema for ImportItem {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        ImportedKey::schemas(schemas);
        NewKeyRequest::schemas(schemas);
    }
}

/// What an import item knows of its key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedKey {
    /// The plaintext key: it must be of the application's template or one of its
    /// `legacy_templates`, and is hashed as the application hashes its keys.
    #[schema(max_length = 512, example = "sk_live_51HqLyjWDarjtT1zdp7dcXy3Q")]
    pub key: Option<String>,
    /// Or the key's hash, as the other system stored it.
    pub hash: Option<ImportHash>,
    /// The key's `{id}` segment: required with a hash when the template has `{id}`.
    #[schema(min_length = 1, max_length = 256, example = "k3x9q2mfp7ta")]
    pub id: Option<String>,
    /// The key's first characters (as many as the application's keys show): required
    /// with a hash other than a plain SHA-256 of the whole key when the template has no `{id}`.
    #[schema(min_length = 1, max_length = 256, example = "sk_live_51Hq")]
    pub hint: Option<String>,
    /// The key's last four characters, shown in lists (with a hash; a plaintext key
    /// gives its own).
    #[schema(min_length = 1, max_length = 4, example = "Xy3Q")]
    pub last4: Option<String>,
    /// When the key was created in the other system (default: now); not in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(example = "2024-05-01T09:30:00Z")]
    pub created_at: Option<OffsetDateTime>,
    /// When the key was last used in the other system; not in the future.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(example = "2026-11-30T17:02:11Z")]
    pub last_used_at: Option<OffsetDateTime>,
    /// `false` imports the key disabled (default true).
    #[schema(example = true)]
    pub enabled: Option<bool>,
}

/// The fields of [`ImportedKey`]: the others of an item are those of a new key.
const IMPORTED_KEY_FIELDS: [&str; 8] = ["key", "hash", "id", "hint", "last4", "created_at", "last_used_at", "enabled"];

/// Every field of an import item: [`ImportedKey`]'s and a new key's ([`NewKeyRequest`]).
pub const ITEM_FIELDS: [&str; 18] = [
    "key",
    "hash",
    "id",
    "hint",
    "last4",
    "created_at",
    "last_used_at",
    "enabled",
    "name",
    "owner_id",
    "metadata",
    "scopes",
    "tier",
    "expires_in_days",
    "expires_at",
    "remaining",
    "rate_limit",
    "refill",
];

/// A key's hash as another system stored it (docs/CORE.md, "Importing keys").
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportHash {
    /// The algorithm (any case).
    #[schema(value_type = ImportHashAlgorithm)]
    pub algorithm: String,
    /// How a SHA digest is written (default hex; padded base64 or not).
    #[schema(value_type = Option<ImportHashEncoding>)]
    pub encoding: Option<String>,
    /// The text appended to the key before a SHA digest was taken.
    #[schema(min_length = 1, max_length = 256)]
    pub salt: Option<String>,
    /// What the hash covers: the whole key (default) or its `{secret}` segment.
    #[schema(value_type = Option<ImportHashCovers>)]
    pub covers: Option<String>,
    /// The hash: a digest in its encoding, or a bcrypt (`$2b$...`) or argon2id (PHC) string.
    #[schema(min_length = 1, max_length = 1024, example = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg")]
    pub value: String,
}

/// The algorithm of an imported hash.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[expect(dead_code, reason = "a schema of the OpenAPI document only: the value is read as text")]
pub enum ImportHashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// bcrypt, `$2a$`, `$2b$` or `$2y$`.
    Bcrypt,
    /// argon2id, a PHC string.
    Argon2id,
}

/// How an imported SHA digest is written.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[expect(dead_code, reason = "a schema of the OpenAPI document only: the value is read as text")]
pub enum ImportHashEncoding {
    /// Hexadecimal.
    Hex,
    /// Standard base64, padded or not.
    Base64,
    /// URL-safe base64, padded or not.
    Base64url,
}

/// What an imported hash covers.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[expect(dead_code, reason = "a schema of the OpenAPI document only: the value is read as text")]
pub enum ImportHashCovers {
    /// The whole key.
    Key,
    /// The key's `{secret}` segment only.
    Secret,
}

/// What became of the items of an import.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    /// Items imported.
    pub created: u64,
    /// Items whose key was already stored (nothing changed).
    pub exists: u64,
    /// Items refused (nothing stored).
    pub errors: u64,
    /// The JSON form: one result per item, in order. The NDJSON form: a result per item
    /// that was not created (`exists` and `error`), in line order, the first 10 000 of them.
    pub results: Vec<ImportResult>,
    /// Results of the NDJSON form counted but not listed, past the first 10 000.
    pub unreported: u64,
}

/// What became of one item.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    /// The item: its place in `keys` (from 0) in the JSON form, its line number (from
    /// 1, blank lines counted) in the NDJSON form.
    #[schema(example = 0)]
    pub index: u64,
    /// `created`, `exists` or `error`.
    pub status: ImportStatus,
    /// The new key's id (`created`), or the stored key's (`exists`, when it is this
    /// application's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Why the item was refused (`error`): the code and message a request of its own
    /// would have been answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImportStatus {
    /// Imported.
    Created,
    /// Already stored: nothing changed.
    Exists,
    /// Refused: nothing stored.
    Error,
}

/// Imports keys into one application, a batch of items at a time: what
/// `POST /v1/apps/{id}/keys/import` and `keypal keys import` share. Each item stands
/// alone: imported whole or not at all, its result in its place.
pub struct KeyImporter {
    runtime: Arc<AppRuntime>,
    keys: KeyManager<Arc<SqlStore>>,
    skip_limits: bool,
}

impl std::fmt::Debug for KeyImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyImporter").field("app", &self.runtime.app.id).finish_non_exhaustive()
    }
}

/// An item of an import: its place (index or line number) and its JSON object, or why
/// it could not be read.
pub type NumberedItem = (u64, Result<Value, ApiError>);

impl KeyImporter {
    /// An importer into `runtime`'s application, its changes audited with `context`;
    /// `skip_limits` imports keys past their owner's limit of active keys.
    pub(crate) fn new(runtime: Arc<AppRuntime>, context: AuditContext, skip_limits: bool) -> Self {
        let keys = runtime.keys.with_context(context);
        KeyImporter { runtime, keys, skip_limits }
    }

    /// Imports a batch of items in one store transaction, answering for each in order.
    /// An `Err` is the store failing: none of the batch is stored.
    pub async fn import(&self, items: Vec<NumberedItem>) -> Result<Vec<ImportResult>, ApiError> {
        let mut results = Vec::with_capacity(items.len());
        let mut imports = Vec::new();
        let mut places = Vec::new();
        for (index, item) in items {
            match item.and_then(|value| self.request(value)) {
                Ok(import) => {
                    places.push(results.len());
                    imports.push(import);
                    results.push(ImportResult { index, status: ImportStatus::Created, id: None, error: None });
                }
                Err(error) => results.push(ImportResult::failed(index, error)),
            }
        }
        let stored = self.keys.import_many(imports).await?;
        for (place, outcome) in places.into_iter().zip(stored) {
            if let Some(result) = results.get_mut(place) {
                *result = ImportResult::of(result.index, outcome.map(|record| Some(record.id)));
            }
        }
        Ok(results)
    }

    /// Checks one item as [`KeyImporter::import`] would, storing nothing (a dry run):
    /// `created` when it would be.
    pub async fn check(&self, (index, item): NumberedItem) -> ImportResult {
        match item.and_then(|value| self.request(value)) {
            Ok(import) => ImportResult::of(index, self.keys.check_import(import).await.map(|()| None)),
            Err(error) => ImportResult::failed(index, error),
        }
    }

    /// The core request of an item.
    fn request(&self, value: Value) -> Result<ImportKey, ApiError> {
        let item = ImportItem::from_json(value)?;
        let details = new_key(&self.runtime.app, item.details)?;
        let known = item.key;
        let mut import = match (known.key, known.hash) {
            (Some(key), None) => {
                if key.is_empty() || key.len() > MAX_KEY {
                    return Err(ApiError::invalid("key", "must be 1 to 512 bytes"));
                }
                for (field, given) in [("id", known.id.is_some()), ("hint", known.hint.is_some())] {
                    if given {
                        return Err(ApiError::invalid(field, "only with `hash`: a plaintext key gives its own"));
                    }
                }
                if known.last4.is_some() {
                    return Err(ApiError::invalid("last4", "only with `hash`: a plaintext key gives its own"));
                }
                ImportKey::plaintext(key)
            }
            (None, Some(hash)) => ImportKey::hash(hash.imported()?),
            (Some(_), Some(_)) => return Err(ApiError::invalid("key", "give `key` or `hash`, not both")),
            (None, None) => return Err(ApiError::invalid("key", "give the key (`key`) or its hash (`hash`)")),
        };
        if let Some(id) = known.id {
            import = import.id(lookup_text("id", id, 256)?);
        }
        if let Some(hint) = known.hint {
            import = import.hint(lookup_text("hint", hint, 256)?);
        }
        if let Some(last4) = known.last4 {
            import = import.last4(lookup_text("last4", last4, 4)?);
        }
        let now = OffsetDateTime::now_utc();
        if let Some(at) = known.created_at {
            import = import.created_at(not_future("created_at", at, now)?);
        }
        if let Some(at) = known.last_used_at {
            import = import.last_used_at(not_future("last_used_at", at, now)?);
        }
        if known.enabled == Some(false) {
            import = import.enabled(false);
        }
        if self.skip_limits {
            import = import.skip_owner_limit();
        }
        Ok(import.with(details))
    }
}

impl ImportItem {
    /// An item from its JSON object: its own fields ([`ImportedKey`]) and those of a new
    /// key ([`NewKeyRequest`]), each refusing fields it does not know, so an unknown field
    /// is refused as in a request of its own.
    fn from_json(value: Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = value else {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", "an item is a JSON object"));
        };
        let (own, details): (Map<String, Value>, Map<String, Value>) =
            fields.into_iter().partition(|(name, _)| IMPORTED_KEY_FIELDS.contains(&name.as_str()));
        let fit = |error: serde_json::Error| {
            ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the item does not fit: {error}"))
        };
        Ok(ImportItem {
            key: serde_json::from_value(Value::Object(own)).map_err(fit)?,
            details: serde_json::from_value(Value::Object(details)).map_err(fit)?,
        })
    }
}

impl ImportHash {
    /// The core's hash, or the field at fault.
    fn imported(self) -> Result<ImportedHash, ApiError> {
        let algorithm: ImportAlgorithm = self.algorithm.parse()?;
        if self.value.is_empty() || self.value.len() > 1024 {
            return Err(ApiError::invalid("hash.value", "must be 1 to 1024 bytes"));
        }
        let mut hash = ImportedHash::new(algorithm, self.value);
        if let Some(encoding) = self.encoding {
            hash = hash.encoding(encoding.parse::<DigestEncoding>()?);
        }
        if let Some(salt) = self.salt {
            if salt.len() > 256 {
                return Err(ApiError::invalid("hash.salt", "must be at most 256 bytes"));
            }
            hash = hash.salt(salt);
        }
        if let Some(covers) = self.covers {
            hash = hash.covers(covers.parse::<HashCovers>()?);
        }
        Ok(hash)
    }
}

/// The import item that brings a key back (`keypal keys export`): how it is found (a
/// key found by its digest as the SHA-256 of the whole key, which that digest is; else
/// its `id` or `hint` with its stored hash), `last4` and the fields of a new key.
/// `None` when the key cannot be moved: found by id or hint with a hash keyed by this
/// deployment's master key (HMAC-SHA256).
pub fn export_item(record: &KeyRecord) -> Option<Value> {
    let mut item = Map::new();
    let hash = match &record.lookup {
        Lookup::Digest(_) => ImportedHash::new(ImportAlgorithm::Sha256, record.lookup.value()),
        Lookup::Id(id) => {
            item.insert("id".into(), id.clone().into());
            Hashing::export(&record.hash)?
        }
        Lookup::Hint(hint) => {
            item.insert("hint".into(), hint.clone().into());
            Hashing::export(&record.hash)?
        }
    };
    let mut exported = Map::new();
    exported.insert("algorithm".into(), hash.algorithm.to_string().into());
    if let Some(salt) = &hash.salt {
        exported.insert("salt".into(), salt.clone().into());
    }
    if hash.covers == HashCovers::Secret {
        exported.insert("covers".into(), "secret".into());
    }
    exported.insert("value".into(), hash.value.clone().into());
    item.insert("hash".into(), exported.into());
    let time = |at: OffsetDateTime| at.format(&Rfc3339).ok().map(Value::String);
    let fields = [
        ("last4", (!record.last4.is_empty()).then(|| record.last4.clone().into())),
        ("owner_id", record.owner_id.clone().map(Value::from)),
        ("name", record.name.clone().map(Value::from)),
        ("scopes", (!record.scopes.is_empty()).then(|| record.scopes.clone().into())),
        ("metadata", record.metadata.clone()),
        ("tier", record.tier.clone().map(Value::from)),
        ("expires_at", record.expires_at.and_then(time)),
        ("created_at", time(record.created_at)),
        ("last_used_at", record.last_used_at.and_then(time)),
        ("enabled", (!record.enabled).then_some(Value::Bool(false))),
        ("remaining", record.remaining.map(Value::from)),
        ("rate_limit", record.rate_limit.map(|limit| limit.to_string().into())),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            item.insert(name.into(), value);
        }
    }
    Some(Value::Object(item))
}

/// An `id`, `hint` or `last4`: 1 to `max` characters without control characters.
fn lookup_text(field: &str, text: String, max: usize) -> Result<String, ApiError> {
    let count = text.chars().count();
    if count == 0 || count > max || text.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, format!("must be 1 to {max} characters without control characters")));
    }
    Ok(text)
}

/// A time of the other system's: not after `now`.
fn not_future(field: &str, at: OffsetDateTime, now: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    if at > now {
        return Err(ApiError::invalid(field, "must not be in the future"));
    }
    Ok(at)
}

impl ImportResult {
    /// The result of an item the core imported (`Ok` with the new key's id, `None` in a
    /// dry run) or refused.
    fn of(index: u64, outcome: Result<Option<KeyId>, keypal::Error>) -> Self {
        match outcome {
            Ok(id) => ImportResult { index, status: ImportStatus::Created, id: id.map(|id| id.0), error: None },
            Err(keypal::Error::AlreadyExists { existing }) => {
                ImportResult { index, status: ImportStatus::Exists, id: existing.map(|id| id.0), error: None }
            }
            Err(error) => ImportResult::failed(index, error.into()),
        }
    }

    /// The result of an item refused.
    fn failed(index: u64, error: ApiError) -> Self {
        let error = ErrorDetail { code: error.code, message: error.message, field: error.field };
        ImportResult { index, status: ImportStatus::Error, id: None, error: Some(error) }
    }
}

impl ImportReport {
    /// Counts an item's result, and lists it unless `list` says not to.
    pub fn add(&mut self, result: ImportResult, list: impl Fn(ImportStatus, usize) -> bool) {
        match result.status {
            ImportStatus::Created => self.created += 1,
            ImportStatus::Exists => self.exists += 1,
            ImportStatus::Error => self.errors += 1,
        }
        if list(result.status, self.results.len()) {
            self.results.push(result);
        } else if result.status != ImportStatus::Created {
            self.unreported += 1;
        }
    }
}

/// Imports keys issued elsewhere so they keep working.
///
/// As `application/json`: `{"keys": [ImportItem, ...], "skip_limits"?}` with at most
/// 1000 items, answered with one result per item. As `application/x-ndjson`: one
/// `ImportItem` a line, as many as wanted (each line at most 64 KiB), read as it comes;
/// answered with the totals and the results of the lines not created (the first 10 000).
/// Each item is imported whole or not at all, and audited `imported`; importing a key
/// already stored reports `exists` and changes nothing, so an import can be sent again.
#[utoipa::path(post, path = "/v1/apps/{id}/keys/import", operation_id = "import_keys", tag = "keys",
    params(AppPath, ImportParams),
    request_body(description = "the keys, as a JSON list or as NDJSON lines",
        content((ImportRequest = "application/json"), (ImportLines = "application/x-ndjson"))),
    security(("admin_session" = [])),
    responses((status = 200, description = "what became of each item", body = ImportReport)))]
pub async fn import_keys(
    admin: Admin,
    AxumState(state): AxumState<Arc<State>>,
    ApiPath(AppPath { id }): ApiPath<AppPath>,
    ApiQuery(params): ApiQuery<ImportParams>,
    request: Request,
) -> Result<ApiJson<ImportReport>, ApiError> {
    let mut skip_limits = params.skip_limits.unwrap_or(false);
    let mut report = ImportReport::default();
    if is_ndjson(request.headers()) {
        let importer = KeyImporter::new(find(&state, id)?, admin.context(), skip_limits);
        let listed = |status, listed| status != ImportStatus::Created && listed < MAX_REPORTED;
        let mut lines = Lines::new(request.into_body());
        let mut batch = Vec::with_capacity(BATCH);
        while let Some((number, line)) = lines.next().await? {
            let item = match line {
                Line::Text(text) => match line_item(&text) {
                    Some(item) => item,
                    None => continue,
                },
                Line::TooLong => Err(line_too_long()),
            };
            batch.push((number, item));
            if batch.len() == BATCH {
                for result in importer.import(std::mem::take(&mut batch)).await? {
                    report.add(result, listed);
                }
            }
        }
        for result in importer.import(batch).await? {
            report.add(result, listed);
        }
        return Ok(ApiJson(report));
    }
    if !is_json(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the keys as Content-Type: application/json or application/x-ndjson",
        ));
    }
    let ApiJson(body) = ApiJson::<ImportRequest>::from_request(request, &state).await?;
    if body.keys.len() > MAX_ITEMS {
        return Err(ApiError::invalid("keys", "at most 1000 items; send more as application/x-ndjson"));
    }
    skip_limits |= body.skip_limits;
    let importer = KeyImporter::new(find(&state, id)?, admin.context(), skip_limits);
    let items = (0u64..).zip(body.keys).map(|(index, item)| (index, Ok(item))).collect();
    for result in importer.import(items).await? {
        report.add(result, |_, _| true);
    }
    Ok(ApiJson(report))
}

/// The item on an NDJSON line (without its line break): `None` for a blank line, else
/// its JSON value or `INVALID_JSON`.
pub fn line_item(text: &[u8]) -> Option<Result<Value, ApiError>> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(serde_json::from_slice::<Value>(text).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the line is not valid JSON: {e}"))
    }))
}

/// The error of an NDJSON line longer than [`MAX_LINE`].
pub fn line_too_long() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the line is longer than 64 KiB")
}

/// Whether the body is NDJSON (`application/x-ndjson`, parameters allowed).
fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(NDJSON))
}

/// A line of an NDJSON body.
enum Line {
    /// Its bytes, without the line break.
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE`]: its bytes were dropped as they came.
    TooLong,
}

/// The lines of a body, read as it comes: at most one line ([`MAX_LINE`]) and one
/// chunk of the body are held at a time.
struct Lines {
    body: Body,
    chunk: Bytes,
    line: Vec<u8>,
    too_long: bool,
    number: u64,
    ended: bool,
}

impl Lines {
    fn new(body: Body) -> Self {
        Self { body, chunk: Bytes::new(), line: Vec::new(), too_long: false, number: 0, ended: false }
    }

    /// The next line and its number (from 1), `None` at the end of the body, or an error
    /// when the body cannot be read (the client went away).
    async fn next(&mut self) -> Result<Option<(u64, Line)>, ApiError> {
        loop {
            if !self.chunk.is_empty() {
                let end = self.chunk.iter().position(|&b| b == b'\n');
                let piece = self.chunk.split_to(end.map_or(self.chunk.len(), |at| at + 1));
                self.append(&piece[..end.map_or(piece.len(), |_| piece.len() - 1)]);
                if end.is_some() {
                    return Ok(Some(self.finish()));
                }
                continue;
            }
            if self.ended {
                if self.line.is_empty() && !self.too_long {
                    return Ok(None);
                }
                return Ok(Some(self.finish()));
            }
            let mut body = std::pin::Pin::new(&mut self.body);
            match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "an import's body could not be read");
                    return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", "the body could not be read"));
                }
                None => self.ended = true,
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.too_long {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.too_long = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn finish(&mut self) -> (u64, Line) {
        self.number += 1;
        let line = if std::mem::take(&mut self.too_long) {
            Line::TooLong
        } else {
            let mut text = std::mem::take(&mut self.line);
            if text.last() == Some(&b'\r') {
                text.pop();
            }
            Line::Text(text)
        };
        (self.number, line)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    /// The lines of a body that arrives in these chunks, as text or `None` when too long.
    async fn lines_of(chunks: Vec<Vec<u8>>) -> Vec<(u64, Option<String>)> {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        let mut lines = Lines::new(Body::from_stream(stream));
        let mut out = Vec::new();
        while let Some((number, line)) = lines.next().await.unwrap() {
            out.push((
                number,
                match line {
                    Line::Text(text) => Some(String::from_utf8(text).unwrap()),
                    Line::TooLong => None,
                },
            ));
        }
        out
    }

    #[tokio::test]
    async fn lines_are_read_across_chunks_and_a_long_one_is_dropped_as_it_comes() {
        let text = "a\r\nbc\n\nd";
        // However the body is cut into chunks, the lines are the same.
        for size in 1..=text.len() {
            let chunks = text.as_bytes().chunks(size).map(<[u8]>::to_vec).collect();
            let want =
                vec![(1, Some("a".into())), (2, Some("bc".into())), (3, Some(String::new())), (4, Some("d".into()))];
            assert_eq!(lines_of(chunks).await, want, "chunks of {size}");
        }
        assert_eq!(lines_of(vec![]).await, []);
        assert_eq!(lines_of(vec![b"x\n".to_vec()]).await, [(1, Some("x".into()))], "no line after the last break");

        let long = vec![b'y'; MAX_LINE + 1];
        let chunks = vec![b"ok\n".to_vec(), long[..1000].to_vec(), long[1000..].to_vec(), b"\nlast".to_vec()];
        assert_eq!(lines_of(chunks).await, [(1, Some("ok".into())), (2, None), (3, Some("last".into()))]);
        let exactly = vec![b'z'; MAX_LINE];
        let read = lines_of(vec![exactly.clone()]).await;
        assert_eq!(read, [(1, Some(String::from_utf8(exactly).unwrap()))], "a line of 64 KiB is not too long");
    }

    #[test]
    fn item_fields_are_the_properties_of_the_item_schema() {
        use utoipa::PartialSchema;
        let RefOr::T(Schema::Object(item)) = ImportItem::schema() else { panic!("the item is an object") };
        let mut properties: Vec<&str> = item.properties.keys().map(String::as_str).collect();
        let mut fields = ITEM_FIELDS.to_vec();
        properties.sort_unstable();
        fields.sort_unstable();
        assert_eq!(properties, fields);
        assert!(IMPORTED_KEY_FIELDS.iter().all(|f| ITEM_FIELDS.contains(f)));
    }

    #[test]
    fn imports_are_the_import_paths_only() {
        assert!(is_import("/v1/apps/0190f3c2-7c1e-7d3a-9b5e-2f4c6a8e0b1d/keys/import"));
        assert!(!is_import("/v1/apps/x/keys"));
        assert!(!is_import("/v1/apps/x/y/keys/import"));
        assert!(!is_import("/v1/keys/import"));
    }
}
