//! HMAC-SHA-256 with a server-side pepper, named by a key id so peppers can rotate.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{HashError, Hasher, hex_decode, hex_encode};

const PREFIX: &str = "$hmac-sha256$kid=";
const MIN_PEPPER_LEN: usize = 16;
const MAX_KID_LEN: usize = 32;
/// SHA-256's block size: HMAC keys are hashed down to or zero-padded up to it.
const BLOCK_LEN: usize = 64;

/// HMAC-SHA-256 of the whole key under a secret pepper, stored as
/// `$hmac-sha256$kid=<kid>$<64 lowercase hex>`.
///
/// The recommended default for random keys of 128+ bits: fast and deterministic (the
/// output can serve as a unique lookup index), and a leaked database alone does not
/// allow checking guesses. Peppers are named by key ids (`[A-Za-z0-9_-]{1,32}`); new
/// hashes use the current one, and stored strings of any other kid this hasher holds a
/// pepper for still verify (and report [`Hasher::needs_rehash`]).
///
/// [`Hasher::recognizes`] is true only for strings whose kid this hasher holds, so a
/// hasher holding retired peppers can sit beside the current one in a
/// [`Hashing`](super::Hashing). Peppers are zeroized on drop and never shown by `Debug`.
pub struct HmacSha256Hasher {
    /// Per kid, the pepper as an HMAC block key: hashed if longer than a block, then
    /// zero-padded, which is what HMAC does with any key.
    peppers: BTreeMap<String, Zeroizing<[u8; BLOCK_LEN]>>,
    current_kid: String,
}

impl HmacSha256Hasher {
    /// A hasher holding `peppers` (kid, pepper), making new hashes with `current_kid`.
    ///
    /// Each pepper must be at least 16 bytes (32 random bytes recommended), each kid
    /// 1 to 32 characters of `[A-Za-z0-9_-]` and given once, and `current_kid` one of them.
    ///
    /// # Errors
    /// [`HashError::InvalidKid`], [`HashError::InvalidPepper`], [`HashError::DuplicateKid`]
    /// or [`HashError::UnknownKid`] (for `current_kid`) when those rules are broken.
    pub fn new(peppers: impl IntoIterator<Item = (String, Vec<u8>)>, current_kid: &str) -> Result<Self, HashError> {
        let mut map = BTreeMap::new();
        for (kid, pepper) in peppers {
            let pepper = Zeroizing::new(pepper);
            if !valid_kid(&kid) {
                return Err(HashError::InvalidKid { kid });
            }
            if pepper.len() < MIN_PEPPER_LEN {
                return Err(HashError::InvalidPepper { kid });
            }
            let mut block = Zeroizing::new([0u8; BLOCK_LEN]);
            if pepper.len() > BLOCK_LEN {
                block[..32].copy_from_slice(&Sha256::digest(&*pepper));
            } else {
                block[..pepper.len()].copy_from_slice(&pepper);
            }
            if map.contains_key(&kid) {
                return Err(HashError::DuplicateKid { kid });
            }
            map.insert(kid, block);
        }
        if !map.contains_key(current_kid) {
            return Err(HashError::UnknownKid { kid: current_kid.to_owned() });
        }
        Ok(Self { peppers: map, current_kid: current_kid.to_owned() })
    }

    fn mac(block_key: &[u8; BLOCK_LEN], key: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new(block_key.into());
        mac.update(key);
        mac.finalize().into_bytes().into()
    }
}

/// `(kid, hex)` of a well-formed stored string's parts, unchecked hex.
fn split(stored: &str) -> Option<(&str, &str)> {
    let (kid, hex) = stored.strip_prefix(PREFIX)?.split_once('$')?;
    valid_kid(kid).then_some((kid, hex))
}

fn valid_kid(kid: &str) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Hasher for HmacSha256Hasher {
    fn algorithm(&self) -> &str {
        "hmac-sha256"
    }

    fn hash(&self, key: &[u8]) -> String {
        let mac = self.peppers.get(&self.current_kid).map(|block| Self::mac(block, key));
        match mac {
            Some(mac) => format!("{PREFIX}{}${}", self.current_kid, hex_encode(&mac)),
            // Unreachable: `new` makes sure the current kid has a pepper. An empty
            // string never verifies.
            None => String::new(),
        }
    }

    fn recognizes(&self, stored: &str) -> bool {
        split(stored).is_some_and(|(kid, _)| self.peppers.contains_key(kid))
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        let Some((kid, hex)) = split(stored) else {
            return false;
        };
        let (Some(block), Some(expected)) = (self.peppers.get(kid), hex_decode::<32>(hex)) else {
            return false;
        };
        super::ct_eq(&expected, &Self::mac(block, key))
    }

    fn needs_rehash(&self, stored: &str) -> bool {
        split(stored).is_none_or(|(kid, _)| kid != self.current_kid)
    }

    fn is_slow(&self) -> bool {
        false
    }
}

impl fmt::Debug for HmacSha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacSha256Hasher")
            .field("kids", &self.peppers.keys().collect::<Vec<_>>())
            .field("current_kid", &self.current_kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{KEY, WRONG};
    use super::*;

    // From Python: hmac.new(pepper, KEY, hashlib.sha256).hexdigest().
    const PEPPER: &[u8] = b"keypal-kat-pepper-2026";
    const KAT: &str = "$hmac-sha256$kid=k2026$e0cc9dcda2fe50434e177682b52aea6b549516b63b19b59101c429f4a9f65132";
    // Pepper bytes(range(100)): longer than a block, so HMAC hashes it first.
    const LONG_KAT: &str = "$hmac-sha256$kid=long$05d2981fea566e726a75eb6c0853b5f377190732507a27367dcc9fa928f4d975";

    fn hasher(kid: &str, pepper: &[u8]) -> HmacSha256Hasher {
        HmacSha256Hasher::new([(kid.to_owned(), pepper.to_vec())], kid).unwrap()
    }

    #[test]
    fn known_answer() {
        let h = hasher("k2026", PEPPER);
        assert_eq!(h.hash(KEY), KAT);
        assert!(h.verify(KEY, KAT));
        assert!(!h.verify(WRONG, KAT));
    }

    #[test]
    fn known_answer_long_pepper() {
        let long: Vec<u8> = (0..100).collect();
        let h = hasher("long", &long);
        assert_eq!(h.hash(KEY), LONG_KAT);
        assert!(h.verify(KEY, LONG_KAT));
        assert!(!h.verify(WRONG, LONG_KAT));
    }

    #[test]
    fn block_sized_pepper_matches_rfc_4231() {
        // RFC 4231, test case 6: a 131-byte key.
        let key = [0xaa_u8; 131];
        let h = hasher("rfc", &key);
        let stored = h.hash(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(stored, "$hmac-sha256$kid=rfc$60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn round_trip_and_flags() {
        let h = hasher("k1", b"0123456789abcdef");
        let stored = h.hash(b"another key");
        assert!(h.recognizes(&stored));
        assert!(h.verify(b"another key", &stored));
        assert!(!h.verify(b"another kez", &stored));
        assert!(!h.needs_rehash(&stored));
        assert!(!h.is_slow());
        assert_eq!(h.algorithm(), "hmac-sha256");
        // Another pepper under the same kid gives another hash.
        assert!(!hasher("k1", b"0123456789abcdeF").verify(b"another key", &stored));
    }

    #[test]
    fn kids_and_rehash() {
        let old = hasher("k2026", PEPPER);
        let both = HmacSha256Hasher::new(
            [("k2026".to_owned(), PEPPER.to_vec()), ("k2027".to_owned(), b"pepper-of-2027-abcdef".to_vec())],
            "k2027",
        )
        .unwrap();
        assert!(both.recognizes(KAT));
        assert!(both.verify(KEY, KAT));
        assert!(both.needs_rehash(KAT));
        let new = both.hash(KEY);
        assert!(new.starts_with("$hmac-sha256$kid=k2027$"));
        assert!(!both.needs_rehash(&new));
        // A hasher without the kid's pepper neither recognizes nor verifies it.
        assert!(!old.recognizes(&new));
        assert!(!old.verify(KEY, &new));
    }

    #[test]
    fn garbled_strings_are_rejected() {
        let h = hasher("k2026", PEPPER);
        for cut in 0..KAT.len() {
            assert!(!h.verify(KEY, &KAT[..cut]), "{}", &KAT[..cut]);
        }
        for bad in [
            format!("{KAT}0"),
            KAT.replacen('e', "x", 1),
            KAT.replace("kid=k2026", "kid="),
            KAT.replace("kid=k2026", "kid=k2026$"),
            KAT.replace("kid=k2026", "kid=k2.26"),
            KAT.replace("kid=k2026", "k2026"),
            KAT.replace("e0cc", "é0c"),
        ] {
            assert!(!h.verify(KEY, &bad), "{bad}");
        }
    }

    #[test]
    fn construction_is_checked() {
        let ok_pepper = b"0123456789abcdef".to_vec();
        let make = |kid: &str, pepper: &[u8], current: &str| {
            HmacSha256Hasher::new([(kid.to_owned(), pepper.to_vec())], current)
        };
        assert!(matches!(make("k1", &ok_pepper[..15], "k1"), Err(HashError::InvalidPepper { .. })));
        for kid in ["", "a b", "k$1", "é", &"k".repeat(33)] {
            assert!(matches!(make(kid, &ok_pepper, kid), Err(HashError::InvalidKid { .. })), "{kid}");
        }
        assert!(make(&"k".repeat(32), &ok_pepper, &"k".repeat(32)).is_ok());
        assert!(make("Az09_-", &ok_pepper, "Az09_-").is_ok());
        assert!(matches!(make("k1", &ok_pepper, "k2"), Err(HashError::UnknownKid { .. })));
        let dup =
            HmacSha256Hasher::new([("k1".to_owned(), ok_pepper.clone()), ("k1".to_owned(), ok_pepper.clone())], "k1");
        assert!(matches!(dup, Err(HashError::DuplicateKid { .. })));
    }

    #[test]
    fn debug_shows_no_pepper() {
        let h = hasher("k2026", PEPPER);
        let shown = format!("{h:?}");
        assert!(shown.contains("k2026"));
        assert!(!shown.contains("keypal-kat-pepper"));
        assert!(!shown.contains("107")); // the pepper's first byte, b'k'
    }
}
