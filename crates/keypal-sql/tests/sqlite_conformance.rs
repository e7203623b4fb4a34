//! The whole store conformance suite against SQLite, each test on a new database file.

mod common;

mod sqlite {
    use super::common::sqlite_store;
    keypal_conformance::store_conformance!(sqlite_store());
}
