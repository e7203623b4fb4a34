//! Stored key hashes: self-describing strings, several algorithms side by side.
//!
//! A stored hash names its algorithm and parameters, so stored strings of mixed
//! algorithms coexist and all verify through one [`Hashing`]:
//!
//! | algorithm | stored string |
//! |---|---|
//! | SHA-256 | `$sha256$<64 lowercase hex>` |
//! | SHA-512 | `$sha512$<128 lowercase hex>` |
//! | HMAC-SHA-256 | `$hmac-sha256$kid=<kid>$<64 lowercase hex>` (kid: `[A-Za-z0-9_-]{1,32}`) |
//! | argon2id | PHC string `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>` |
//! | bcrypt | MCF `$2b$10$...` (verify also accepts `$2a$` and `$2y$`) |
//! | SHA-256 / SHA-512 of the key with a salt appended (imported only) | `$salted-sha256$salt=<salt as unpadded base64url>$<64 lowercase hex>`, `$salted-sha512$…` |
//! | any of these, of the key's `{secret}` segment alone (imported only) | `$secret$` then the hash: `$secret$$2b$10$...` |
//!
//! All comparisons of hash outputs are constant-time ([`subtle`]).

mod argon2;
mod bcrypt;
mod hmac;
mod import;
mod salted;
mod sha;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::argon2::{Argon2Params, Argon2idHasher};
pub use self::bcrypt::{BcryptHasher, DEFAULT_BCRYPT_COST};
pub use self::hmac::HmacSha256Hasher;
use self::salted::SaltedShaHasher;
use self::sha::Sha;
pub use self::sha::{Sha256Hasher, Sha512Hasher};
use crate::record::{ImportAlgorithm, ImportedHash};

/// The tag that marks a stored hash of a key's `{secret}` segment alone: it wraps the
/// hash of the secret (`$secret$$2b$10$…`). See [`crate::HashCovers`].
pub(crate) const SECRET_TAG: &str = "$secret$";

/// One hash algorithm with its current parameters.
///
/// Implement it to plug in a custom algorithm (see [`Hashing::with_hasher`]); its
/// stored strings must start with a tag of its own (`$name$...`).
pub trait Hasher: Send + Sync + 'static {
    /// Tag naming the algorithm, e.g. `"sha256"`, `"hmac-sha256"`, `"argon2id"`, `"bcrypt"`.
    fn algorithm(&self) -> &str;
    /// Hash a key into a self-describing stored string (random salt for slow hashes).
    fn hash(&self, key: &[u8]) -> String;
    /// Whether `stored` is a string of this hasher's algorithm.
    fn recognizes(&self, stored: &str) -> bool;
    /// Constant-time check of `key` against `stored`; false for unrecognized or garbled
    /// strings (never panics).
    fn verify(&self, key: &[u8], stored: &str) -> bool;
    /// True when `stored` (recognized) was made with other parameters than this hasher's
    /// current ones (argon2 m/t/p, bcrypt cost, HMAC kid other than current).
    fn needs_rehash(&self, stored: &str) -> bool;
    /// True for deliberately slow password hashes (argon2id, bcrypt).
    fn is_slow(&self) -> bool;
}

/// Errors from building a hasher or importing a hash issued elsewhere.
///
/// Messages never contain key or pepper material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// An HMAC pepper is shorter than 16 bytes.
    #[error("the HMAC pepper for kid `{kid}` is shorter than 16 bytes")]
    InvalidPepper {
        /// The key id the pepper was given for.
        kid: String,
    },
    /// A key id is not 1 to 32 characters of `[A-Za-z0-9_-]`.
    #[error("invalid HMAC key id {kid:?}: expected 1 to 32 characters of [A-Za-z0-9_-]")]
    InvalidKid {
        /// The rejected key id.
        kid: String,
    },
    /// The same key id was given twice.
    #[error("HMAC key id `{kid}` is given more than once")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// The current key id has no pepper.
    #[error("no HMAC pepper for the current key id `{kid}`")]
    UnknownKid {
        /// The current key id asked for.
        kid: String,
    },
    /// A bcrypt cost outside `4..=31`.
    #[error("bcrypt cost {cost} is outside 4..=31")]
    InvalidCost {
        /// The rejected cost.
        cost: u32,
    },
    /// Argon2 parameters the algorithm (or keypal's sanity limits) do not allow.
    #[error("invalid argon2 parameters: {reason}")]
    InvalidArgon2Params {
        /// What is wrong with them.
        reason: String,
    },
    /// A hash to import is not well-formed.
    #[error("cannot import {kind} hash: {reason}")]
    InvalidImport {
        /// The kind of hash that was being imported, e.g. `"SHA-256 hex"`, `"bcrypt"`.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name of an import's algorithm, digest encoding or coverage that keypal does not
    /// know (the name itself is not repeated: it may be anything a caller sent).
    #[error("unknown {what}: expected {expected}")]
    UnknownName {
        /// What was named: `"hash algorithm"`, `"digest encoding"` or `"hash coverage"`.
        what: &'static str,
        /// The names keypal knows.
        expected: &'static str,
    },
}

/// The set of hashers a manager accepts: one current (used for new hashes) plus any
/// number of others, so stored strings of mixed algorithms all verify.
///
/// A stored string goes to the first hasher that recognizes it: the current one, then
/// those added with [`Hashing::with_hasher`] in the order added, then the built-in
/// SHA-256, SHA-512, bcrypt, argon2id and salted SHA verifiers (which read cost,
/// parameters and salt from the string, so any cost verifies).
///
/// A hash of a key's `{secret}` segment alone (`$secret$…`, imported from a system
/// that hashed only that part) is checked by [`Hashing::verify_with_secret`].
///
/// ```
/// use std::sync::Arc;
/// use keypal::hash::{BcryptHasher, Hasher, Hashing, Sha256Hasher};
///
/// let hashing = Hashing::new(Arc::new(Sha256Hasher));
/// let stored = hashing.hash(b"sk_live_abc123");
/// assert!(stored.starts_with("$sha256$"));
/// assert!(hashing.verify(b"sk_live_abc123", &stored));
/// assert!(!hashing.verify(b"sk_live_abc124", &stored));
/// assert!(!hashing.needs_rehash(&stored));
///
/// // A bcrypt hash issued elsewhere still verifies, and asks to be re-hashed.
/// let old = BcryptHasher::new(4)?;
/// let legacy = old.hash(b"sk_live_legacy");
/// assert!(hashing.verify(b"sk_live_legacy", &legacy));
/// assert!(hashing.needs_rehash(&legacy));
/// # Ok::<(), keypal::hash::HashError>(())
/// ```
#[derive(Clone)]
pub struct Hashing {
    current: Arc<dyn Hasher>,
    added: Vec<Arc<dyn Hasher>>,
    fallbacks: Arc<[Arc<dyn Hasher>]>,
    dummy: Arc<OnceLock<String>>,
}

impl Hashing {
    /// A set with `current` for new hashes, which also accepts SHA-256, SHA-512, bcrypt
    /// (any cost), argon2id (any parameters) and imported salted SHA-256 and SHA-512
    /// stored strings.
    pub fn new(current: Arc<dyn Hasher>) -> Self {
        let fallbacks: [Arc<dyn Hasher>; 6] = [
            Arc::new(Sha256Hasher),
            Arc::new(Sha512Hasher),
            Arc::new(BcryptHasher::default_cost()),
            Arc::new(Argon2idHasher::default_params()),
            Arc::new(SaltedShaHasher(Sha::Sha256)),
            Arc::new(SaltedShaHasher(Sha::Sha512)),
        ];
        Self { current, added: Vec::new(), fallbacks: Arc::new(fallbacks), dummy: Arc::new(OnceLock::new()) }
    }

    /// Adds another accepted hasher (a custom algorithm, or HMAC with old peppers).
    /// The first hasher recognizing a string wins, the current one first.
    #[must_use]
    pub fn with_hasher(mut self, other: Arc<dyn Hasher>) -> Self {
        self.added.push(other);
        self
    }

    /// The hasher new hashes are made with.
    pub fn current(&self) -> &dyn Hasher {
        &*self.current
    }

    /// Hashes `key` with the current hasher.
    pub fn hash(&self, key: &[u8]) -> String {
        self.current.hash(key)
    }

    /// Whether `key` matches `stored`, whichever accepted algorithm made it; false when no
    /// hasher recognizes `stored`, as for a hash of a key's secret segment alone
    /// (`$secret$…`: [`Hashing::verify_with_secret`] checks those).
    pub fn verify(&self, key: &[u8], stored: &str) -> bool {
        self.find(stored).is_some_and(|h| h.verify(key, stored))
    }

    /// Whether a key matches `stored`, whatever the hash covers: a hash of the
    /// `{secret}` segment alone (`$secret$<hash>`, see [`crate::HashCovers`]) is
    /// checked against `secret`, the segment the key's format finds in it (never
    /// matched when there is none), any other hash against the whole `key`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keypal::hash::{Hasher, Hashing, Sha256Hasher};
    ///
    /// let hashing = Hashing::new(Arc::new(Sha256Hasher));
    /// let of_secret = format!("$secret${}", Sha256Hasher.hash(b"0a1b2c"));
    /// assert!(hashing.verify_with_secret(b"kota_free_id_0a1b2c", Some(b"0a1b2c"), &of_secret));
    /// assert!(!hashing.verify_with_secret(b"kota_free_id_0a1b2c", None, &of_secret));
    /// // A hash of the whole key is checked against the whole key.
    /// let whole = Sha256Hasher.hash(b"kota_free_id_0a1b2c");
    /// assert!(hashing.verify_with_secret(b"kota_free_id_0a1b2c", Some(b"0a1b2c"), &whole));
    /// ```
    pub fn verify_with_secret(&self, key: &[u8], secret: Option<&[u8]>, stored: &str) -> bool {
        match stored.strip_prefix(SECRET_TAG) {
            Some(of_secret) => secret.is_some_and(|secret| self.verify(secret, of_secret)),
            None => self.verify(key, stored),
        }
    }

    /// Same as [`Hashing::verify`], but reuses an already computed SHA-256 of the key when
    /// `stored` is `$sha256$...` (the caller computed it for lookup), so the hot path
    /// hashes once.
    pub fn verify_with_sha256(&self, key: &[u8], key_sha256: &[u8; 32], stored: &str) -> bool {
        match stored.strip_prefix(sha::SHA256_PREFIX) {
            // Stored hex is lowercase (imports are normalized), so comparing the texts
            // is comparing the digests, without decoding.
            Some(hex) => ct_eq_lower_hex(key_sha256, hex.as_bytes()),
            None => self.verify(key, stored),
        }
    }

    /// True when `stored` is not of the current hasher, or the current hasher would make
    /// it with other parameters now.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        !self.current.recognizes(stored) || self.current.needs_rehash(stored)
    }

    /// Whether the current hasher is a deliberately slow one.
    pub fn is_slow(&self) -> bool {
        self.current.is_slow()
    }

    /// Whether checking a key against `stored` is deliberately slow: `stored` is of a
    /// slow algorithm (argon2id, bcrypt, or a custom one that says so).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keypal::hash::{BcryptHasher, Hasher, Hashing, Sha256Hasher};
    ///
    /// let hashing = Hashing::new(Arc::new(Sha256Hasher));
    /// assert!(!hashing.is_slow_hash(&hashing.hash(b"sk_live_abc123")));
    /// assert!(hashing.is_slow_hash(&BcryptHasher::new(4)?.hash(b"sk_live_abc123")));
    /// # Ok::<(), keypal::hash::HashError>(())
    /// ```
    pub fn is_slow_hash(&self, stored: &str) -> bool {
        let hash = stored.strip_prefix(SECRET_TAG).unwrap_or(stored);
        self.find(hash).is_some_and(|h| h.is_slow())
    }

    /// Costs about one verify under the current hasher, against a dummy hash computed once
    /// on first use, so that an unknown key takes as long as a known one.
    pub fn dummy_verify(&self, key: &[u8]) {
        let dummy = self.dummy.get_or_init(|| self.current.hash(b"keypal-dummy-key-for-timing"));
        std::hint::black_box(self.current.verify(key, dummy));
    }

    /// Wraps an existing SHA-256 hex digest (64 hex characters, any case) issued
    /// elsewhere as a stored string: [`Hashing::import`] of a hex SHA-256 digest.
    ///
    /// # Errors
    /// [`HashError::InvalidImport`] for anything but 64 hex characters.
    ///
    /// ```
    /// use keypal::hash::Hashing;
    ///
    /// let stored = Hashing::import_sha256_hex(&"AB".repeat(32))?;
    /// assert_eq!(stored, format!("$sha256${}", "ab".repeat(32)));
    /// # Ok::<(), keypal::hash::HashError>(())
    /// ```
    pub fn import_sha256_hex(hex: &str) -> Result<String, HashError> {
        Self::import(&ImportedHash::new(ImportAlgorithm::Sha256, hex))
    }

    /// Accepts an existing bcrypt MCF hash (`$2a$`, `$2b$` or `$2y$`, well-formed) as a
    /// stored string: [`Hashing::import`] of a bcrypt hash.
    ///
    /// # Errors
    /// [`HashError::InvalidImport`] when `mcf` is not such a hash (60 characters, cost 4
    /// to 31, canonical bcrypt base64).
    pub fn import_bcrypt(mcf: &str) -> Result<String, HashError> {
        Self::import(&ImportedHash::new(ImportAlgorithm::Bcrypt, mcf))
    }

    fn find(&self, stored: &str) -> Option<&dyn Hasher> {
        std::iter::once(&self.current)
            .chain(&self.added)
            .chain(self.fallbacks.iter())
            .find(|h| h.recognizes(stored))
            .map(|h| &**h)
    }
}

impl fmt::Debug for Hashing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let added: Vec<&str> = self.added.iter().map(|h| h.algorithm()).collect();
        f.debug_struct("Hashing")
            .field("current", &self.current.algorithm())
            .field("added", &added)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `data` (the digest the manager uses for lookup).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// 16 fresh salt bytes from the operating system. Should its generator fail, a salt
/// that is unique (not secret) from a process counter and the clock, which is all a
/// salt has to be.
fn salt16() -> [u8; 16] {
    let mut salt = [0u8; 16];
    if getrandom::fill(&mut salt).is_err() {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut digest = Sha256::new();
        digest.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        digest.update(nanos.to_le_bytes());
        digest.update(std::process::id().to_le_bytes());
        salt.copy_from_slice(&digest.finalize()[..16]);
    }
    salt
}

/// Lowercase hex of `bytes`.
fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `hex` is the lowercase hex of `bytes`, in constant time: every byte is
/// read, the digits are computed with arithmetic (no table lookups, no branches) and
/// differences are accumulated, which the compiler turns into a few vector instructions.
fn ct_eq_lower_hex(bytes: &[u8; 32], hex: &[u8]) -> bool {
    /// The lowercase hex digit of a nibble: `'0' + n`, plus the gap to `'a'` above 9.
    fn digit(nibble: u8) -> u8 {
        nibble + b'0' + u8::from(nibble > 9) * (b'a' - b'0' - 10)
    }
    let Ok(hex) = <&[u8; 64]>::try_from(hex) else {
        return false;
    };
    let mut diff = 0u16;
    for (i, &b) in bytes.iter().enumerate() {
        let expected = u16::from_le_bytes([digit(b >> 4), digit(b & 15)]);
        diff |= expected ^ u16::from_le_bytes([hex[2 * i], hex[2 * i + 1]]);
    }
    bool::from(diff.ct_eq(&0))
}

/// Constant-time equality of two byte strings whose lengths are public: every byte
/// is read, differences are accumulated without branching, and only the final
/// result goes through `subtle`'s optimization barrier.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    bool::from(diff.ct_eq(&0))
}

/// Exactly `N` bytes from `2 * N` hex digits of either case; `None` otherwise.
fn hex_decode<const N: usize>(hex: &str) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let hex = hex.as_bytes();
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Test key; the KATs of every algorithm use it (vectors from Python's hashlib,
    /// hmac, argon2-cffi and bcrypt).
    pub(super) const KEY: &[u8] = b"sk_live_Kq3vX9mB2nR7tY4wZ8pL1cF6hJ0dS5aE";
    /// `KEY` with its last character changed.
    pub(super) const WRONG: &[u8] = b"sk_live_Kq3vX9mB2nR7tY4wZ8pL1cF6hJ0dS5aF";

    fn fast_argon2() -> Argon2idHasher {
        Argon2idHasher::new(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap()
    }

    fn hmac(peppers: &[(&str, &[u8])], current: &str) -> HmacSha256Hasher {
        let peppers = peppers.iter().map(|(kid, p)| ((*kid).to_owned(), p.to_vec()));
        HmacSha256Hasher::new(peppers, current).unwrap()
    }

    #[test]
    fn hashing_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Hashing>();
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff];
        assert_eq!(hex_encode(&bytes), "000fa5ff");
        assert_eq!(hex_decode::<4>("000fa5ff"), Some(bytes));
        assert_eq!(hex_decode::<4>("000FA5FF"), Some(bytes));
        assert_eq!(hex_decode::<4>("000fa5f"), None);
        assert_eq!(hex_decode::<4>("000fa5fg"), None);
        assert_eq!(hex_decode::<2>("é1é"), None);
    }

    #[test]
    fn sha256_helper_matches_hasher() {
        let stored = Sha256Hasher.hash(KEY);
        assert_eq!(stored, format!("$sha256${}", hex_encode(&sha256(KEY))));
    }

    #[test]
    fn mixed_algorithms_verify_through_one_hashing() {
        let peppers: &[(&str, &[u8])] = &[("k1", b"0123456789abcdef")];
        let hmac = hmac(peppers, "k1");
        let stored = [
            Sha256Hasher.hash(KEY),
            Sha512Hasher.hash(KEY),
            BcryptHasher::new(4).unwrap().hash(KEY),
            BcryptHasher::new(5).unwrap().hash(KEY),
            fast_argon2().hash(KEY),
            hmac.hash(KEY),
        ];
        let hashing = Hashing::new(Arc::new(hmac));
        for s in &stored {
            assert!(hashing.verify(KEY, s), "{s}");
            assert!(!hashing.verify(WRONG, s), "{s}");
        }
        assert!(!hashing.needs_rehash(&stored[5]));
        for s in &stored[..5] {
            assert!(hashing.needs_rehash(s), "{s}");
        }
        assert!(!hashing.verify(KEY, "$unknown$abc"));
        assert!(!hashing.verify(KEY, ""));
    }

    #[test]
    fn current_is_used_for_new_hashes() {
        let hashing = Hashing::new(Arc::new(BcryptHasher::new(4).unwrap()));
        assert_eq!(hashing.current().algorithm(), "bcrypt");
        assert!(hashing.is_slow());
        let stored = hashing.hash(KEY);
        assert!(stored.starts_with("$2b$04$"));
        assert!(hashing.verify(KEY, &stored));
        assert!(!hashing.needs_rehash(&stored));
        assert!(!Hashing::new(Arc::new(Sha512Hasher)).is_slow());
    }

    #[test]
    fn needs_rehash_when_parameters_change() {
        let old = Hashing::new(Arc::new(BcryptHasher::new(4).unwrap()));
        let new = Hashing::new(Arc::new(BcryptHasher::new(5).unwrap()));
        let stored = old.hash(KEY);
        assert!(new.verify(KEY, &stored));
        assert!(new.needs_rehash(&stored));
        assert!(!old.needs_rehash(&stored));

        let stored = fast_argon2().hash(KEY);
        let more_memory = Argon2idHasher::new(Argon2Params { memory_kib: 128, iterations: 1, parallelism: 1 }).unwrap();
        let hashing = Hashing::new(Arc::new(more_memory));
        assert!(hashing.verify(KEY, &stored));
        assert!(hashing.needs_rehash(&stored));
        assert!(!Hashing::new(Arc::new(fast_argon2())).needs_rehash(&stored));
    }

    #[test]
    fn hmac_rotation() {
        let old_pepper: &[u8] = b"old-pepper-0123456789";
        let new_pepper: &[u8] = b"new-pepper-0123456789";
        let stored_old = hmac(&[("old", old_pepper)], "old").hash(KEY);

        // Both peppers in one hasher, the new one current.
        let both = Hashing::new(Arc::new(hmac(&[("old", old_pepper), ("new", new_pepper)], "new")));
        assert!(both.verify(KEY, &stored_old));
        assert!(both.needs_rehash(&stored_old));
        let stored_new = both.hash(KEY);
        assert!(stored_new.starts_with("$hmac-sha256$kid=new$"));
        assert!(!both.needs_rehash(&stored_new));

        // The old pepper in a hasher of its own, added with `with_hasher`.
        let added = Hashing::new(Arc::new(hmac(&[("new", new_pepper)], "new")))
            .with_hasher(Arc::new(hmac(&[("old", old_pepper)], "old")));
        assert!(added.verify(KEY, &stored_old));
        assert!(!added.verify(WRONG, &stored_old));
        assert!(added.needs_rehash(&stored_old));

        // Without the old pepper, the old hash no longer verifies.
        let dropped = Hashing::new(Arc::new(hmac(&[("new", new_pepper)], "new")));
        assert!(!dropped.verify(KEY, &stored_old));
        assert!(dropped.verify(KEY, &stored_new));
    }

    #[test]
    fn custom_hasher_via_with_hasher() {
        struct Reverse;
        impl Hasher for Reverse {
            fn algorithm(&self) -> &str {
                "reverse"
            }
            fn hash(&self, key: &[u8]) -> String {
                let rev: Vec<u8> = key.iter().rev().copied().collect();
                format!("$reverse${}", hex_encode(&rev))
            }
            fn recognizes(&self, stored: &str) -> bool {
                stored.starts_with("$reverse$")
            }
            fn verify(&self, key: &[u8], stored: &str) -> bool {
                self.hash(key) == stored
            }
            fn needs_rehash(&self, _: &str) -> bool {
                false
            }
            fn is_slow(&self) -> bool {
                false
            }
        }
        let stored = Reverse.hash(KEY);
        let hashing = Hashing::new(Arc::new(Sha256Hasher));
        assert!(!hashing.verify(KEY, &stored));
        let hashing = hashing.with_hasher(Arc::new(Reverse));
        assert!(hashing.verify(KEY, &stored));
        assert!(hashing.needs_rehash(&stored));
        assert!(format!("{hashing:?}").contains("reverse"));
    }

    #[test]
    fn lower_hex_comparison_checks_every_digit() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(8).wrapping_add(7));
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(32) {
            let bytes: [u8; 32] = chunk.try_into().unwrap();
            assert!(ct_eq_lower_hex(&bytes, hex_encode(&bytes).as_bytes()));
        }
        let hex = hex_encode(&bytes);
        assert!(ct_eq_lower_hex(&bytes, hex.as_bytes()));
        for at in 0..64 {
            let mut other = hex.clone().into_bytes();
            other[at] = if other[at] == b'0' { b'1' } else { b'0' };
            assert!(!ct_eq_lower_hex(&bytes, &other), "digit {at}");
        }
        // Stored hex is lowercase: uppercase digits do not match.
        assert!(!ct_eq_lower_hex(&bytes, hex.to_ascii_uppercase().as_bytes()));
        assert!(!ct_eq_lower_hex(&bytes, &hex.as_bytes()[1..]));
        assert!(!ct_eq_lower_hex(&bytes, format!("{hex}0").as_bytes()));
    }

    #[test]
    fn verify_with_sha256_reuses_the_digest() {
        let hashing = Hashing::new(Arc::new(Sha256Hasher));
        let stored = hashing.hash(KEY);
        let digest = sha256(KEY);
        assert!(hashing.verify_with_sha256(KEY, &digest, &stored));
        assert!(!hashing.verify_with_sha256(WRONG, &sha256(WRONG), &stored));
        // The digest, not the key, is what is compared for `$sha256$`.
        assert!(hashing.verify_with_sha256(WRONG, &digest, &stored));
        assert!(!hashing.verify_with_sha256(KEY, &digest, "$sha256$abc"));
        // Other algorithms fall back to a full verify.
        let stored = Sha512Hasher.hash(KEY);
        assert!(hashing.verify_with_sha256(KEY, &digest, &stored));
        assert!(!hashing.verify_with_sha256(WRONG, &digest, &stored));
    }

    #[test]
    fn dummy_verify_runs_under_the_current_hasher() {
        let hashing = Hashing::new(Arc::new(fast_argon2()));
        hashing.dummy_verify(KEY);
        let clone = hashing.clone();
        clone.dummy_verify(WRONG);
        let dummy = hashing.dummy.get().unwrap();
        assert!(dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(Arc::ptr_eq(&hashing.dummy, &clone.dummy));
    }

    #[test]
    fn import_sha256_hex() {
        let hex = "95045FB699D555DF1BCA84B02EA4932C26289A75588FEAA349EAF2A1B6D4FC16";
        let stored = Hashing::import_sha256_hex(hex).unwrap();
        assert_eq!(stored, format!("$sha256${}", hex.to_ascii_lowercase()));
        assert!(Hashing::new(Arc::new(Sha256Hasher)).verify(KEY, &stored));
        for bad in ["", &hex[1..], &format!("{hex}0"), &hex.replace('F', "g")] {
            let err = Hashing::import_sha256_hex(bad).unwrap_err();
            assert!(matches!(err, HashError::InvalidImport { .. }), "{bad}");
        }
    }

    #[test]
    fn import_bcrypt() {
        let mcf = "$2a$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW";
        assert_eq!(Hashing::import_bcrypt(mcf).unwrap(), mcf);
        let hashing = Hashing::new(Arc::new(Sha256Hasher));
        assert!(hashing.verify(KEY, &Hashing::import_bcrypt(mcf).unwrap()));
        let bad = [
            "",
            "$2x$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW",
            "$2b$03$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW",
            "$2b$32$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW",
            "$2b$1a$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW",
            "$2b$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfq",
            "$2b$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW0",
            "$2b$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfq!",
            "$2b$10$KeypalKatSaltValue1234YgBpfQKzFccdKJw4S1mYtKWwVUmmfqW",
            "$2b$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqX",
            "$argon2id$v=19$m=64,t=1,p=1$a2V5cGFsLWthdC1zYWx0IQ$6DkRzcLKNTyMjA0MKasFVjwzcDEHe1BgW",
        ];
        for b in bad {
            let err = Hashing::import_bcrypt(b).unwrap_err();
            assert!(matches!(err, HashError::InvalidImport { .. }), "{b}");
        }
    }

    #[test]
    fn a_hash_of_the_secret_is_checked_against_the_secret_only() {
        let hashing = Hashing::new(Arc::new(Sha256Hasher));
        let secret = &KEY[8..];
        let of_secret = format!("{SECRET_TAG}{}", BcryptHasher::new(4).unwrap().hash(secret));
        assert!(hashing.verify_with_secret(KEY, Some(secret), &of_secret));
        assert!(!hashing.verify_with_secret(KEY, Some(&WRONG[8..]), &of_secret));
        assert!(!hashing.verify_with_secret(KEY, None, &of_secret));
        assert!(!hashing.verify_with_secret(secret, Some(KEY), &of_secret));
        // Not a hash of the whole key, nor one to keep: slow like the hash it wraps, and
        // re-hashed whole under the current policy.
        assert!(!hashing.verify(KEY, &of_secret) && !hashing.verify(secret, &of_secret));
        assert!(hashing.is_slow_hash(&of_secret));
        assert!(hashing.needs_rehash(&of_secret));
        let of_secret = format!("{SECRET_TAG}{}", Sha256Hasher.hash(secret));
        assert!(!hashing.is_slow_hash(&of_secret));
        assert!(hashing.needs_rehash(&of_secret));
        // Wrapped twice is garbled.
        assert!(!hashing.verify_with_secret(KEY, Some(secret), &format!("{SECRET_TAG}{of_secret}")));
    }

    #[test]
    fn error_messages_hold_no_secrets() {
        let pepper = b"short-secret".to_vec();
        let err = HmacSha256Hasher::new([("k1".to_owned(), pepper)], "k1").unwrap_err();
        assert!(matches!(err, HashError::InvalidPepper { .. }));
        assert!(!err.to_string().contains("short-secret"));
        assert!(!format!("{err:?}").contains("short-secret"));
    }
}
