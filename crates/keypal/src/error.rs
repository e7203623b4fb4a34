//! The errors of the key manager.

use crate::config::ConfigError;
use crate::format::FormatError;
use crate::hash::HashError;
use crate::ratelimit::RateLimiterError;
use crate::record::KeyId;
use crate::store::StoreError;

/// What went wrong. Rejected keys are not errors (they are a [`crate::Verification`]
/// with a [`crate::Code`]); errors are bad requests and failing backends.
///
/// Every variant has a stable machine-readable [`Error::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has problems (all of them are listed).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No key with this id (in this manager's namespace).
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// The key is already revoked.
    #[error("key {0} is already revoked")]
    AlreadyRevoked(KeyId),
    /// The owner has reached the maximum of active keys.
    #[error("the owner already has the maximum of {limit} active keys")]
    LimitReached {
        /// The limit in force.
        limit: u32,
    },
    /// A freshly generated id or digest collided with an existing key every time.
    #[error("generated keys collided with existing ones {attempts} times in a row")]
    Collision {
        /// How many attempts were made.
        attempts: u32,
    },
    /// The key to import is already stored (in this manager's namespace `existing`
    /// names it; a key whose id or digest another namespace holds is not named).
    /// Nothing was imported.
    #[error("the key is already stored{}", existing.map(|id| format!(" as key {id}")).unwrap_or_default())]
    AlreadyExists {
        /// The stored key, when it is this manager's.
        existing: Option<KeyId>,
    },
    /// A request field is invalid; `field` names it.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, like `name` or `scopes[2]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Generating a key failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A hash could not be made or imported.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The rate limiter could not decide.
    #[error(transparent)]
    RateLimiter(#[from] RateLimiterError),
    /// The key sealer failed to keep an encrypted copy: nothing was stored.
    #[error(transparent)]
    Seal(#[from] crate::secret::SealError),
    /// A slow hash could not run: its offload was saturated (`HASHING_BUSY`: try
    /// again shortly) or failed (`HASHING_FAILED`). Nothing was changed.
    #[error(transparent)]
    Offload(#[from] crate::offload::OffloadError),
    /// The store failed.
    #[error("storage failed: {0}")]
    Store(#[source] StoreError),
}

impl Error {
    /// The stable code: `CONFIG_INVALID`, `NOT_FOUND`, `ALREADY_REVOKED`, `KEY_LIMIT_REACHED`,
    /// `COLLISION`, `ALREADY_EXISTS`, `INVALID_INPUT`, `FORMAT_ERROR`, `HASH_ERROR`, `RATE_LIMITER_UNAVAILABLE`,
    /// `SEAL_ERROR`, `HASHING_BUSY`, `HASHING_FAILED`, `STORAGE_ERROR`.
    ///
    /// ```
    /// let error = keypal::Error::LimitReached { limit: 10 };
    /// assert_eq!(error.code(), "KEY_LIMIT_REACHED");
    /// assert_eq!(keypal::Error::AlreadyExists { existing: None }.code(), "ALREADY_EXISTS");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config(_) => "CONFIG_INVALID",
            Error::NotFound(_) => "NOT_FOUND",
            Error::AlreadyRevoked(_) => "ALREADY_REVOKED",
            Error::LimitReached { .. } => "KEY_LIMIT_REACHED",
            Error::Collision { .. } => "COLLISION",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::Invalid { .. } => "INVALID_INPUT",
            Error::Format(_) => "FORMAT_ERROR",
            Error::Hash(_) => "HASH_ERROR",
            Error::RateLimiter(_) => "RATE_LIMITER_UNAVAILABLE",
            Error::Seal(_) => "SEAL_ERROR",
            Error::Offload(e) => e.code(),
            Error::Store(_) => "STORAGE_ERROR",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), message: message.into() }
    }

    /// Maps a store error about key `id` to the manager's error.
    pub(crate) fn from_store(error: StoreError, id: KeyId) -> Self {
        match error {
            StoreError::NotFound => Error::NotFound(id),
            StoreError::AlreadyRevoked => Error::AlreadyRevoked(id),
            StoreError::LimitReached { limit } => Error::LimitReached { limit },
            other => Error::Store(other),
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::LimitReached { limit } => Error::LimitReached { limit },
            other => Error::Store(other),
        }
    }
}
