//! Management tokens: what scripts send as `Authorization: Bearer kp_mgmt_…` to the
//! management API (`/v1/apps`, `/v1/keys`, `/v1/audit`, `/v1/tokens`) instead of the
//! admin password and a session cookie.
//!
//! A token is named, shown once when it is made, and may expire. The database keeps a
//! keyed digest of it under the master key (like client secrets and sessions), never
//! the token: a `mgmt_token` document whose id is the token's id and whose lookup is the
//! digest, and a `mgmt_token_name` claim that keeps names unique among live tokens
//! (both written, and both deleted on revocation, in one transaction). Every request
//! reads the token's document (one indexed lookup), so a revocation holds on every
//! instance at once, whichever instance or command made it. `last_used_at` is written
//! at most once a minute per token.
//!
//! The HTTP handlers (`/v1/tokens`), the admin panel and `keypal tokens` all go through
//! [`Tokens`]: the rules are here once.

use keypal::{Action, AuditContext, Event, StoreError};
use keypal_sql::{NewObject, ObjectRef, SqlStore};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::schema::TokenName;
use crate::secrets::{self, Secrets, SecretsError};

/// The object kind of management tokens (id: the token's id; lookup: its keyed digest).
pub const KIND: &str = "mgmt_token";
/// The object kind of the names of live tokens (id: the name).
const NAME_KIND: &str = "mgmt_token_name";
/// What every management token starts with.
pub const PREFIX: &str = "kp_mgmt_";
/// The random characters after [`PREFIX`] (base62: about 238 bits).
const RANDOM_LENGTH: usize = 40;
/// The longest name.
pub const MAX_NAME_LENGTH: usize = 64;
/// The longest lifetime a token can be given, in days.
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;
/// `last_used_at` is written again only when it is older than this.
const LAST_USED_EVERY: time::Duration = time::Duration::minutes(1);

/// `POST /v1/tokens`, and `keypal tokens create`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What the token is for; the audit log names its changes `token:<name>`. Unique
    /// among tokens not revoked.
    #[schema(value_type = TokenName)]
    pub name: String,
    /// Expires after this many days (default: never).
    #[schema(minimum = 1, maximum = 3650, example = 90)]
    #[serde(default, deserialize_with = "crate::number::option")]
    pub expires_in_days: Option<u32>,
}

/// A management token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenView {
    /// Its id (what revoking takes).
    #[schema(example = crate::extract::example_id)]
    pub id: Uuid,
    /// Its name.
    #[schema(example = "ci")]
    pub name: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(example = "2026-12-03T10:15:00Z")]
    pub created_at: OffsetDateTime,
    /// When it stops working (`null`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(example = "2027-03-03T10:15:00Z")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last used (to the minute).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl TokenView {
    /// The actor its changes are audited as: `token:<name>`.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }

    /// Whether it has expired at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// `201` of `POST /v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token: shown once, never stored.
    #[schema(example = "kp_mgmt_R2H7gHhbzposmJlW0SiWOUUUHH6uMaUba0C1Cc8Q")]
    pub token: String,
    /// What is listed of it.
    pub record: TokenView,
}

/// `GET /v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Every token not revoked (expired ones included), oldest first.
    pub tokens: Vec<TokenView>,
}

/// Why a token could not be made, found, revoked or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// A value of the request is out of bounds.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (`name`, `expires_in_days`).
        field: &'static str,
        /// What is wrong.
        message: &'static str,
    },
    /// A live token already has this name.
    #[error("a management token named {0} exists; revoke it or choose another name")]
    NameTaken(String),
    /// No live token has this id.
    #[error("no such management token")]
    NotFound,
    /// The token presented is not one (wrong, or revoked).
    #[error("the management token is wrong or revoked")]
    Unknown,
    /// The token presented has expired.
    #[error("the management token has expired; make a new one")]
    Expired,
    /// The database failed.
    #[error("the database failed: {0}")]
    Store(#[from] StoreError),
    /// A stored token cannot be read.
    #[error("a stored management token cannot be read: {0}")]
    Corrupt(String),
    /// No random token could be made.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl TokenError {
    /// A stable, machine-readable code (the API's).
    ///
    /// ```
    /// use keypal_server::tokens::TokenError;
    /// assert_eq!(TokenError::Expired.code(), "TOKEN_EXPIRED");
    /// assert_eq!(TokenError::NameTaken("ci".into()).code(), "TOKEN_NAME_TAKEN");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Invalid { .. } => "INVALID_INPUT",
            TokenError::NameTaken(_) => "TOKEN_NAME_TAKEN",
            TokenError::NotFound => "NOT_FOUND",
            TokenError::Unknown => "UNAUTHENTICATED",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::Store(_) => "STORAGE_UNAVAILABLE",
            TokenError::Corrupt(_) | TokenError::Secrets(_) => "INTERNAL",
        }
    }
}

/// What the database keeps of a token (its created time is the document's).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    /// Unix seconds.
    expires_at: Option<i64>,
    /// Unix seconds.
    last_used_at: Option<i64>,
}

fn instant(seconds: i64) -> Result<OffsetDateTime, TokenError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|e| TokenError::Corrupt(e.to_string()))
}

/// Whether `name` is 1-64 of `A-Z`, `a-z`, `0-9`, `.`, `_` and `-` (it goes into the
/// audit log's actor, and onto command lines).
pub fn check_name(name: &str) -> Result<(), TokenError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LENGTH || !name.chars().all(allowed) {
        return Err(TokenError::Invalid { field: "name", message: "must be 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'" });
    }
    Ok(())
}

/// The management tokens of a deployment: its database and master key.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use keypal_server::tokens::{NewToken, Tokens};
/// let deployment = keypal_server::Deployment::open(&keypal_server::ServeConfig::default()).await?;
/// let tokens = Tokens::new(&deployment.store, &deployment.secrets);
/// let operator = keypal::AuditContext::new("cli");
/// let created = tokens.create(&NewToken { name: "ci".into(), expires_in_days: Some(90) }, operator.clone()).await?;
/// assert!(created.token.starts_with("kp_mgmt_"));
/// assert_eq!(tokens.authenticate(&created.token).await?.name, "ci");
/// tokens.revoke(created.record.id, operator).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'a> {
    store: &'a SqlStore,
    secrets: &'a Secrets,
}

impl<'a> Tokens<'a> {
    /// The tokens kept in `store`, digested under `secrets`.
    pub fn new(store: &'a SqlStore, secrets: &'a Secrets) -> Self {
        Tokens { store, secrets }
    }

    /// Makes a token, audited as `token_created` by `context`'s actor; the answer holds
    /// it, once.
    pub async fn create(&self, request: &NewToken, context: AuditContext) -> Result<CreatedToken, TokenError> {
        check_name(&request.name)?;
        let now = OffsetDateTime::now_utc();
        let expires_at = match request.expires_in_days {
            None => None,
            Some(days) if (1..=MAX_EXPIRES_IN_DAYS).contains(&days) => {
                Some(now + time::Duration::days(i64::from(days)))
            }
            Some(_) => return Err(TokenError::Invalid { field: "expires_in_days", message: "must be 1 to 3650" }),
        };
        let token = secrets::token(PREFIX, RANDOM_LENGTH)?;
        let digest = self.secrets.digest(&token);
        let id = Uuid::now_v7();
        let text_id = id.to_string();
        let stored = Stored {
            name: request.name.clone(),
            expires_at: expires_at.map(OffsetDateTime::unix_timestamp),
            last_used_at: None,
        };
        let body = serde_json::to_value(&stored).map_err(|e| TokenError::Corrupt(e.to_string()))?;
        let claim = json!({ "token_id": text_id });
        let objects = [
            NewObject { kind: NAME_KIND, id: &request.name, lookup: None, body: &claim },
            NewObject { kind: KIND, id: &text_id, lookup: Some(&digest), body: &body },
        ];
        let event = token_event(Action::TokenCreated, now, context, &text_id, &request.name);
        match self.store.insert_objects(&objects, Some(&event)).await {
            // The id and digest are fresh random values: the name is what is taken.
            Err(StoreError::Duplicate) => return Err(TokenError::NameTaken(request.name.clone())),
            inserted => inserted?,
        }
        // As the database recorded it (its creation time is the database's).
        let object = self.store.get_object(KIND, &text_id).await?.ok_or(TokenError::NotFound)?;
        let (record, _) = view(&object)?;
        Ok(CreatedToken { token, record })
    }

    /// Every token not revoked, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenView>, TokenError> {
        let objects = self.store.list_objects(KIND).await?;
        objects.into_iter().map(|object| view(&object).map(|(view, _)| view)).collect()
    }

    /// Revokes the token `id` (it stops working on every instance at once, and its name
    /// is free again), audited as `token_revoked` by `context`'s actor; returns what it was.
    pub async fn revoke(&self, id: Uuid, context: AuditContext) -> Result<TokenView, TokenError> {
        let text_id = id.to_string();
        let object = self.store.get_object(KIND, &text_id).await?.ok_or(TokenError::NotFound)?;
        let (token, _) = view(&object)?;
        let claim = json!({ "token_id": text_id });
        // Its name never changes: the token and the claim of its name go together.
        let objects = [
            ObjectRef { kind: KIND, id: &text_id, body: None },
            ObjectRef { kind: NAME_KIND, id: &token.name, body: Some(&claim) },
        ];
        let event = token_event(Action::TokenRevoked, OffsetDateTime::now_utc(), context, &text_id, &token.name);
        if !self.store.delete_objects(&objects, Some(&event)).await? {
            return Err(TokenError::NotFound);
        }
        Ok(token)
    }

    /// The token `presented` is, when it is a live one: [`TokenError::Unknown`] for a
    /// wrong or revoked one, [`TokenError::Expired`] past its expiry. Records its use
    /// (at most once a minute).
    pub async fn authenticate(&self, presented: &str) -> Result<TokenView, TokenError> {
        if !presented.starts_with(PREFIX) {
            return Err(TokenError::Unknown);
        }
        let digest = self.secrets.digest(presented);
        let object = self.store.find_object(KIND, &digest).await?.ok_or(TokenError::Unknown)?;
        let (mut token, mut stored) = view(&object)?;
        let now = OffsetDateTime::now_utc();
        if token.is_expired_at(now) {
            return Err(TokenError::Expired);
        }
        if token.last_used_at.is_none_or(|at| now - at >= LAST_USED_EVERY) {
            stored.last_used_at = Some(now.unix_timestamp());
            token.last_used_at = Some(instant(now.unix_timestamp())?);
            let body = serde_json::to_value(&stored).map_err(|e| TokenError::Corrupt(e.to_string()))?;
            // Best effort: a missed write shows an older last use, and refuses nothing.
            if let Err(error) = self.store.update_object(KIND, &object.id, &body, None).await {
                tracing::warn!(%error, token = %token.id, "recording a management token's last use failed");
            }
        }
        Ok(token)
    }
}

/// A stored token's view, and what is stored.
/// The audit event of a change to the token `id` named `name` (never the token itself).
fn token_event(action: Action, at: OffsetDateTime, context: AuditContext, id: &str, name: &str) -> Event {
    let mut event = Event::new(action, at, context);
    event.details = Some(json!({ "token_id": id, "name": name }));
    event
}

fn view(object: &keypal_sql::Object) -> Result<(TokenView, Stored), TokenError> {
    let stored: Stored = serde_json::from_value(object.body.clone()).map_err(|e| TokenError::Corrupt(e.to_string()))?;
    let id = object.id.parse().map_err(|_| TokenError::Corrupt(format!("the id {} is not a UUID", object.id)))?;
    let view = TokenView {
        id,
        name: stored.name.clone(),
        created_at: object.created_at,
        expires_at: stored.expires_at.map(instant).transpose()?,
        last_used_at: stored.last_used_at.map(instant).transpose()?,
    };
    Ok((view, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_words_safe_on_a_command_line() {
        for good in ["ci", "deploy-bot", "team_a.prod", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "with space", "token:ci", "é", "line\nbreak", &"x".repeat(65)] {
            assert!(matches!(check_name(bad), Err(TokenError::Invalid { field: "name", .. })), "{bad:?}");
        }
    }
}
