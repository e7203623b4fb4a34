//! A presented key under the WithoutId format kind: see `key_text` in the shared invariants.
#![no_main]

use std::sync::LazyLock;

#[path = "../../crates/keypal/tests/invariants/mod.rs"]
mod invariants;

use invariants::{KeyKind, KeyKit};

static KIT: LazyLock<KeyKit> = LazyLock::new(|| KeyKit::new(KeyKind::WithoutId));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    invariants::key_text(&KIT, &KIT.key_text(data));
});
