//! Property tests of the whole manager: whatever a client sends, verify answers
//! with a code and never panics; a stored key verifies and any change to it does not.

#![allow(clippy::panic)] // test helpers: a panic is a failed test

use keypal::{Code, KeyManager, MemoryStore, NewKey};
use proptest::prelude::*;

fn manager() -> KeyManager<MemoryStore> {
    KeyManager::builder()
        .template("kp_{id:8:base32}_{secret:24:base62}{checksum}")
        .store(MemoryStore::new())
        .build()
        .unwrap_or_else(|e| panic!("test manager: {e}"))
}

proptest! {
    #[test]
    fn verify_of_arbitrary_text_is_a_rejection_not_a_panic(text in any::<String>()) {
        let keys = manager();
        let v = pollster::block_on(keys.verify(&text));
        let code = v.map(|v| v.code()).unwrap_or(Code::Valid);
        prop_assert!(matches!(code, Code::Malformed | Code::NotFound), "{code:?}");
    }

    #[test]
    fn a_stored_key_verifies_and_no_single_character_change_does(position in 0usize..64, replacement in 0x21u8..0x7f) {
        let keys = manager();
        let created = pollster::block_on(keys.create(NewKey::new())).unwrap_or_else(|e| panic!("{e}"));
        let key = created.key.expose();
        prop_assert!(pollster::block_on(keys.verify(key)).map(|v| v.is_valid()).unwrap_or(false));
        let position = position % key.len();
        prop_assume!(key.as_bytes()[position] != replacement);
        let mut changed = key.as_bytes().to_vec();
        changed[position] = replacement;
        let changed = String::from_utf8(changed).unwrap_or_default();
        let code = pollster::block_on(keys.verify(&changed)).map(|v| v.code()).unwrap_or(Code::Valid);
        // The checksum catches it before any storage read.
        prop_assert_eq!(code, Code::Malformed);
    }
}
