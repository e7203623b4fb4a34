//! The whole store conformance suite against the real PostgreSQL server, each test in a
//! schema of its own.

mod common;

mod postgres {
    use super::common::postgres_store;
    keypal_conformance::store_conformance!(optional postgres_store());
}
