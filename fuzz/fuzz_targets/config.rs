//! A configuration text, as TOML and as JSON: see `config` in the shared invariants.
#![no_main]

#[path = "../../crates/keypal/tests/invariants/mod.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    invariants::config(text);
});
