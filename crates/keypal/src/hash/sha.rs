//! Plain SHA-256 and SHA-512: fast, deterministic, for random keys of 128+ bits.

use sha2::{Digest, Sha512};

use super::{Hasher, hex_decode, hex_encode};

pub(super) const SHA256_PREFIX: &str = "$sha256$";
const SHA512_PREFIX: &str = "$sha512$";

/// SHA-256 of the whole key, stored as `$sha256$<64 lowercase hex>`.
///
/// Fast and deterministic: right for random keys of 128 bits or more, where the digest
/// also serves as a unique lookup index.
///
/// ```
/// use keypal::hash::{Hasher, Sha256Hasher};
///
/// let stored = Sha256Hasher.hash(b"abc");
/// assert_eq!(
///     stored,
///     "$sha256$ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// assert!(Sha256Hasher.verify(b"abc", &stored));
/// assert!(!Sha256Hasher.verify(b"abd", &stored));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Hasher;

/// SHA-512 of the whole key, stored as `$sha512$<128 lowercase hex>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha512Hasher;

/// SHA-256 or SHA-512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sha {
    Sha256,
    Sha512,
}

impl Sha {
    /// The length of a digest in bytes.
    pub(super) fn len(self) -> usize {
        match self {
            Sha::Sha256 => 32,
            Sha::Sha512 => 64,
        }
    }
}

/// The stored string of a SHA-256 digest.
pub(super) fn format_sha256(digest: &[u8; 32]) -> String {
    format!("{SHA256_PREFIX}{}", hex_encode(digest))
}

/// The stored string of a digest by `sha` of the whole key (`$sha256$…`, `$sha512$…`).
pub(super) fn format_digest(sha: Sha, digest: &[u8]) -> String {
    let prefix = match sha {
        Sha::Sha256 => SHA256_PREFIX,
        Sha::Sha512 => SHA512_PREFIX,
    };
    format!("{prefix}{}", hex_encode(digest))
}

/// The digest in a `$sha256$` stored string; `None` when garbled.
pub(super) fn parse_sha256(stored: &str) -> Option<[u8; 32]> {
    hex_decode(stored.strip_prefix(SHA256_PREFIX)?)
}

impl Hasher for Sha256Hasher {
    fn algorithm(&self) -> &str {
        "sha256"
    }

    fn hash(&self, key: &[u8]) -> String {
        format_sha256(&super::sha256(key))
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(SHA256_PREFIX)
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        parse_sha256(stored).is_some_and(|expected| super::ct_eq(&expected, &super::sha256(key)))
    }

    fn needs_rehash(&self, _stored: &str) -> bool {
        false
    }

    fn is_slow(&self) -> bool {
        false
    }
}

fn sha512(key: &[u8]) -> [u8; 64] {
    Sha512::digest(key).into()
}

impl Hasher for Sha512Hasher {
    fn algorithm(&self) -> &str {
        "sha512"
    }

    fn hash(&self, key: &[u8]) -> String {
        format_digest(Sha::Sha512, &sha512(key))
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(SHA512_PREFIX)
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        stored
            .strip_prefix(SHA512_PREFIX)
            .and_then(hex_decode::<64>)
            .is_some_and(|expected| super::ct_eq(&expected, &sha512(key)))
    }

    fn needs_rehash(&self, _stored: &str) -> bool {
        false
    }

    fn is_slow(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{KEY, WRONG};
    use super::*;

    // From Python: hashlib.sha256(KEY).hexdigest(), hashlib.sha512(KEY).hexdigest().
    const SHA256_KAT: &str = "$sha256$95045fb699d555df1bca84b02ea4932c26289a75588feaa349eaf2a1b6d4fc16";
    const SHA512_KAT: &str = "$sha512$e46cf416b65287e50cfd54b21ac0cc4d11e5e2ce8daa2dbf6650500699cca6ad95f140fc14b1dce927d1cbc13a98a129f8941074663dc9660095c7fbc0949f30";

    #[test]
    fn sha256_known_answer() {
        assert_eq!(Sha256Hasher.hash(KEY), SHA256_KAT);
        assert!(Sha256Hasher.verify(KEY, SHA256_KAT));
        assert!(!Sha256Hasher.verify(WRONG, SHA256_KAT));
        let upper = format!("$sha256${}", SHA256_KAT[8..].to_ascii_uppercase());
        assert!(Sha256Hasher.verify(KEY, &upper));
    }

    #[test]
    fn sha512_known_answer() {
        assert_eq!(Sha512Hasher.hash(KEY), SHA512_KAT);
        assert!(Sha512Hasher.verify(KEY, SHA512_KAT));
        assert!(!Sha512Hasher.verify(WRONG, SHA512_KAT));
    }

    #[test]
    fn round_trip_and_flags() {
        for hasher in [&Sha256Hasher as &dyn Hasher, &Sha512Hasher] {
            let stored = hasher.hash(b"another key");
            assert!(hasher.recognizes(&stored));
            assert!(hasher.verify(b"another key", &stored));
            assert!(!hasher.verify(b"another kez", &stored));
            assert!(!hasher.needs_rehash(&stored));
            assert!(!hasher.is_slow());
        }
        assert_eq!(Sha256Hasher.algorithm(), "sha256");
        assert_eq!(Sha512Hasher.algorithm(), "sha512");
        assert!(!Sha256Hasher.recognizes(SHA512_KAT));
        assert!(!Sha512Hasher.recognizes(SHA256_KAT));
    }

    #[test]
    fn garbled_strings_are_rejected() {
        for (hasher, kat) in [(&Sha256Hasher as &dyn Hasher, SHA256_KAT), (&Sha512Hasher, SHA512_KAT)] {
            for cut in 0..kat.len() {
                assert!(!hasher.verify(KEY, &kat[..cut]), "{}", &kat[..cut]);
            }
            assert!(!hasher.verify(KEY, &format!("{kat}0")));
            assert!(!hasher.verify(KEY, &kat.replacen('9', "x", 1)));
            assert!(!hasher.verify(KEY, &kat.replacen('9', "é", 1)));
        }
        assert!(!Sha256Hasher.verify(KEY, SHA512_KAT));
        assert!(!Sha512Hasher.verify(KEY, SHA256_KAT));
    }
}
