//! The JSON body of key creation (`POST /v1/apps/{id}/keys`, `POST /v1/owners/{owner_id}/keys`;
//! the first byte picks which and the application), through the real router over an
//! in-memory SQLite database: see `create_key_body` in the server's shared invariants.
#![no_main]

#[path = "../../crates/keypal-server/tests/invariants/mod.rs"]
mod invariants;

#[path = "server.rs"]
mod server;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else { return };
    server::with_fixture(async |fixture| invariants::create_key_body(fixture, *selector, body).await);
});
