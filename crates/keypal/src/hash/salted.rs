//! SHA-256 and SHA-512 of a key with a salt appended, as other systems stored them
//! (the TypeScript keypal's `salt` option: `sha256(key + salt)`). Imported, verified,
//! and re-hashed under the manager's policy after the first successful verification;
//! never made for new keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256, Sha512};

use super::sha::Sha;
use super::{Hasher, hex_decode, hex_encode, salt16};

/// The tag of the stored strings of salted digests by `sha`.
fn prefix(sha: Sha) -> &'static str {
    match sha {
        Sha::Sha256 => "$salted-sha256$salt=",
        Sha::Sha512 => "$salted-sha512$salt=",
    }
}

/// The digest by `sha` of `key` followed by `salt`.
fn digest(sha: Sha, key: &[u8], salt: &[u8]) -> Vec<u8> {
    match sha {
        Sha::Sha256 => Sha256::new().chain_update(key).chain_update(salt).finalize().to_vec(),
        Sha::Sha512 => Sha512::new().chain_update(key).chain_update(salt).finalize().to_vec(),
    }
}

/// The stored string of a salted digest:
/// `$salted-sha256$salt=<salt as unpadded base64url>$<lowercase hex>` (or `sha512`).
/// The salt is kept as base64url, so any salt text (a `$` included) fits.
pub(super) fn format_salted(sha: Sha, salt: &[u8], digest: &[u8]) -> String {
    format!("{}{}${}", prefix(sha), URL_SAFE_NO_PAD.encode(salt), hex_encode(digest))
}

/// SHA-256 or SHA-512 of the key with a salt appended, stored as
/// `$salted-sha256$salt=<base64url>$<hex>`: verifies imported salted digests.
#[derive(Debug, Clone, Copy)]
pub(super) struct SaltedShaHasher(pub(super) Sha);

impl SaltedShaHasher {
    /// The salt and the digest of a stored string of this hasher; `None` when garbled.
    fn parse(&self, stored: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let (salt, hex) = stored.strip_prefix(prefix(self.0))?.split_once('$')?;
        let salt = URL_SAFE_NO_PAD.decode(salt).ok().filter(|salt| !salt.is_empty())?;
        let digest = match self.0 {
            Sha::Sha256 => hex_decode::<32>(hex)?.to_vec(),
            Sha::Sha512 => hex_decode::<64>(hex)?.to_vec(),
        };
        Some((salt, digest))
    }
}

impl Hasher for SaltedShaHasher {
    fn algorithm(&self) -> &str {
        match self.0 {
            Sha::Sha256 => "salted-sha256",
            Sha::Sha512 => "salted-sha512",
        }
    }

    /// A new salted digest with 16 random bytes of salt (keypal makes none itself: this
    /// hasher only verifies imported ones).
    fn hash(&self, key: &[u8]) -> String {
        let salt = salt16();
        format_salted(self.0, &salt, &digest(self.0, key, &salt))
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(prefix(self.0))
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        self.parse(stored).is_some_and(|(salt, expected)| super::ct_eq(&expected, &digest(self.0, key, &salt)))
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

    // From Python: hashlib.sha256(KEY + b"pepper$1").hexdigest(), and sha512.
    const SALTED_256: &str =
        "$salted-sha256$salt=cGVwcGVyJDE$280b2241e4cc9923700f1dae93bce3ea1e69b34e226cccc9391ded7e2cdceb96";

    #[test]
    fn salted_known_answer() {
        let hasher = SaltedShaHasher(Sha::Sha256);
        assert!(hasher.verify(KEY, SALTED_256));
        assert!(!hasher.verify(WRONG, SALTED_256));
        assert!(!SaltedShaHasher(Sha::Sha512).recognizes(SALTED_256));
    }

    #[test]
    fn round_trip_and_garbled_strings() {
        for sha in [Sha::Sha256, Sha::Sha512] {
            let hasher = SaltedShaHasher(sha);
            let stored = hasher.hash(KEY);
            assert!(hasher.recognizes(&stored));
            assert!(hasher.verify(KEY, &stored));
            assert!(!hasher.verify(WRONG, &stored));
            assert!(!hasher.is_slow() && !hasher.needs_rehash(&stored));
            for cut in 0..stored.len() {
                assert!(!hasher.verify(KEY, &stored[..cut]), "{}", &stored[..cut]);
            }
            assert!(!hasher.verify(KEY, &format!("{stored}0")));
            // An empty salt is not a salted hash.
            let empty = format_salted(sha, b"", &digest(sha, KEY, b""));
            assert!(!hasher.verify(KEY, &empty));
        }
    }
}
