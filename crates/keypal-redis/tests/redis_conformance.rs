//! The whole store conformance suite against the real Redis, each test under a key
//! prefix of its own.

mod common;

mod redis {
    use super::common::redis_store;
    keypal_conformance::store_conformance!(optional redis_store());
}
