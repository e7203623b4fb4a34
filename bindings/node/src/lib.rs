//! The native part of the npm package `keypal`: the Rust core and stores, reached from
//! JavaScript through Node-API. This crate only converts: every format, hash, policy,
//! verification step and store is the one of the `keypal`, `keypal-sql` and
//! `keypal-redis` crates. The JavaScript API (`createApiKeyManager`, the store classes,
//! `KeypalError`, `authenticate`) wraps these functions in `index.js`.

mod config;
mod convert;
mod failure;
mod input;
mod manager;
mod runtime;
mod stores;

pub use manager::NativeManager;
pub use stores::{NativeMemoryStore, NativeRedisStore, NativeSqlStore};

/// The JSON Schema of the configuration `createApiKeyManager` takes, in camelCase (the
/// Rust `Config`'s schema with its property names as JavaScript writes them).
#[napi_derive::napi]
pub fn config_schema() -> String {
    config::camel_schema().to_string()
}

/// Every verification code with its sentence for people, in pipeline order.
#[napi_derive::napi]
pub fn verification_codes() -> std::collections::HashMap<String, String> {
    keypal::Code::ALL.iter().map(|code| (code.as_str().to_owned(), code.message().to_owned())).collect()
}

/// The verification codes in the order of `Code::ALL`: the indexes of the numbers a
/// verification settled on the calling thread is answered with.
#[napi_derive::napi]
pub fn code_list() -> Vec<&'static str> {
    keypal::Code::ALL.iter().map(|code| code.as_str()).collect()
}
