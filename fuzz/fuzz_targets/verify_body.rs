//! The JSON body of `POST /v1/verify`, through the real router over an in-memory SQLite
//! database: see `verify_body` in the server's shared invariants.
#![no_main]

#[path = "../../crates/keypal-server/tests/invariants/mod.rs"]
mod invariants;

#[path = "server.rs"]
mod server;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    server::with_fixture(async |fixture| invariants::verify_body(fixture, data).await);
});
