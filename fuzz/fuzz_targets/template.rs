//! `Template::parse` on any text, with any variables: see `template` in the shared invariants.
#![no_main]

#[path = "../../crates/keypal/tests/invariants/mod.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (template, vars) = invariants::template_case(text);
    invariants::template(&template, &vars);
});
