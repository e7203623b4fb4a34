//! # keypal-server
//!
//! `keypal serve`: the HTTP service for applications, keys, client secrets and verification.

mod config;
pub mod secrets;

pub use config::{ServeConfig, ServeConfigError, redact_url};
