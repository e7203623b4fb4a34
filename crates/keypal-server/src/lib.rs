//! # keypal-server
//!
//! `keypal serve`: the HTTP service for platform teams whose services are written in
//! any language. Applications have their own key formats and client secrets; services
//! verify keys with `POST /v1/verify` behind a service key; an application's backend
//! manages its users' keys with its client secret; administrators manage everything
//! after logging in. Keys live in keypal's SQL stores (SQLite by default).
//!
//! ```no_run
//! # async fn run() -> Result<(), keypal_server::ServeError> {
//! let config = keypal_server::ServeConfig::default(); // 127.0.0.1:8080, sqlite://keypal.db
//! keypal_server::serve(config).await
//! # }
//! ```

mod apps;
mod auth;
mod cluster;
mod config;
mod deployment;
mod error;
mod extract;
mod hashing;
mod keys;
mod metrics;
mod number;
mod openapi;
pub mod operator;
mod panel;
mod patch;
mod routes;
mod schema;
pub mod secrets;
mod serve;
mod state;
mod throttle;
pub mod tokens;
mod webhooks;

pub use config::{ServeConfig, ServeConfigError, redact_url};
pub use deployment::{Deployment, DeploymentError};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use hashing::HashPool;
pub use metrics::Metrics;
pub use openapi::{ApiDoc, CODES, ErrorCode};
pub use serve::{ServeError, Server, serve, shutdown_signal};
pub use state::{BootError, Generated};
pub use webhooks::EVENT_TYPES;
pub use webhooks::delivery::retry_after as webhook_retry_after;
pub use webhooks::signing as webhook_signing;
pub use webhooks::{WebhookSettings, address_refused as webhook_address_refused};
