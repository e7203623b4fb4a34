//! # keypal-axum
//!
//! Verify API keys on every request of an axum (or any tower) service, in one line.
//!
//! - [`ApiKeyLayer`] takes the key from `Authorization: Bearer`, `X-API-Key`, a header
//!   of your choice or (opt-in) a query parameter, verifies it with a [`Verifier`] —
//!   a [`keypal::KeyManager`] in process, or a [`RemoteVerifier`] calling a running
//!   `keypal serve` — and answers refusals as clients expect: 401 with
//!   `WWW-Authenticate: Bearer` (RFC 6750), 403 `insufficient_scope`, 429 with
//!   `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers, 503 when
//!   verification itself fails (never a pass). See [`Rejection`] for the table.
//! - [`VerifiedKey`] (and `Option<VerifiedKey>`) extracts the verified key in handlers;
//!   [`RequireScopes`] and [`Cost`] are route layers.
//! - [`self_service`] is a router your signed-in users manage their own keys with.
//!
//! ```
//! use axum::{Router, routing::get};
//! use keypal::{KeyManager, MemoryStore};
//! use keypal_axum::{ApiKeyLayer, RequireScopes, VerifiedKey};
//!
//! async fn list_invoices(key: VerifiedKey) -> String {
//!     format!("invoices of {}", key.owner_id().unwrap_or("nobody"))
//! }
//!
//! let keys = KeyManager::builder().prefix("sk_live").store(MemoryStore::new()).build()?;
//! let app: Router = Router::new()
//!     .route("/invoices", get(list_invoices).route_layer(RequireScopes::all(["invoices:read"])))
//!     .route("/me", get(|key: VerifiedKey| async move { key.owner_id().unwrap_or("").to_owned() }))
//!     .layer(ApiKeyLayer::new(keys.clone()));
//! # let _ = app;
//! # Ok::<(), keypal::Error>(())
//! ```
//!
//! A key is never logged: the layer's own events name the result code and the key's
//! id, and the headers that carry keys are marked sensitive for the logging layers
//! inside it.
#![forbid(unsafe_code)]

mod answer;
mod extract;
mod guard;
mod layer;
mod remote;
mod self_service;
mod source;
mod verifier;

pub use answer::{MISSING_KEY, RATELIMIT, RATELIMIT_POLICY, Rejection, VERIFICATION_UNAVAILABLE, json_error_body};
pub use extract::VerifiedKey;
pub use guard::{Cost, CostService, RequireScopes, RequireScopesService};
pub use layer::{ApiKeyLayer, ApiKeyService};
pub use remote::{DEFAULT_TIMEOUT, MAX_CACHE_TTL, RemoteVerifier};
pub use self_service::{
    CreatedKey, KeyList, KeyView, MAX_GRACE, OwnerKeyRequest, OwnerOf, SelfService, SelfServiceError, self_service,
};
pub use source::KeySource;
pub use verifier::{KeyInfo, Verdict, Verifier, VerifierError};
