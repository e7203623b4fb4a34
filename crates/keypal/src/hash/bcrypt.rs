//! bcrypt, stored in modular crypt format.

use super::{HashError, Hasher, salt16};

/// The bcrypt cost keypal uses unless told otherwise.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

const MIN_COST: u32 = 4;
const MAX_COST: u32 = 31;
/// bcrypt reads at most this many bytes of a key.
const MAX_KEY_LEN: usize = 72;
/// bcrypt's base64 alphabet.
const ALPHABET: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// bcrypt, stored as MCF `$2b$<cost>$<22-char salt><31-char hash>` with a random salt.
///
/// Deliberately slow. Verify reads the cost from the stored string and accepts the
/// `$2a$`, `$2b$` and `$2y$` variants, so imported hashes and hashes of any cost verify;
/// [`Hasher::needs_rehash`] reports a cost other than this hasher's.
///
/// bcrypt reads only the first 72 bytes of its input. keypal hashes the raw key (so
/// hashes imported from other systems verify), which is fine for every keypal key format
/// (all shorter than 72 bytes). To never let two keys with the same 72-byte start match,
/// [`Hasher::verify`] is false for any key longer than 72 bytes: do not pick bcrypt for a
/// format with longer keys.
#[derive(Debug, Clone, Copy)]
pub struct BcryptHasher {
    cost: u32,
}

impl BcryptHasher {
    /// A hasher making new hashes with `cost` (4 to 31; each step doubles the work).
    ///
    /// # Errors
    /// [`HashError::InvalidCost`] for a cost outside 4..=31.
    pub fn new(cost: u32) -> Result<Self, HashError> {
        if (MIN_COST..=MAX_COST).contains(&cost) { Ok(Self { cost }) } else { Err(HashError::InvalidCost { cost }) }
    }

    /// The hasher with [`DEFAULT_BCRYPT_COST`].
    pub(super) fn default_cost() -> Self {
        Self { cost: DEFAULT_BCRYPT_COST }
    }
}

/// The cost of a well-formed `$2a$`, `$2b$` or `$2y$` bcrypt hash: 60 characters, a
/// two-digit cost in 4..=31, and 53 characters of bcrypt base64 whose unused trailing
/// bits (of the salt and of the hash) are zero.
pub(super) fn parse_cost(mcf: &str) -> Option<u32> {
    let bytes = mcf.as_bytes();
    if bytes.len() != 60 {
        return None;
    }
    let (head, body) = bytes.split_at(7);
    let [b'$', b'2', b'a' | b'b' | b'y', b'$', tens @ b'0'..=b'9', ones @ b'0'..=b'9', b'$'] = *head else {
        return None;
    };
    let cost = u32::from((tens - b'0') * 10 + (ones - b'0'));
    let mut digits = [0usize; 53];
    for (digit, &c) in digits.iter_mut().zip(body) {
        *digit = ALPHABET.iter().position(|&a| a == c)?;
    }
    // 22 characters carry the 16-byte salt (4 spare bits), 31 the 23-byte hash (2).
    let canonical = digits[21] & 0x0f == 0 && digits[52] & 0x03 == 0;
    ((MIN_COST..=MAX_COST).contains(&cost) && canonical).then_some(cost)
}

impl Hasher for BcryptHasher {
    fn algorithm(&self) -> &str {
        "bcrypt"
    }

    fn hash(&self, key: &[u8]) -> String {
        // Fails only for a cost `new` has already checked; an empty string never verifies.
        ::bcrypt::hash_with_salt(key, self.cost, salt16())
            .map(|parts| parts.format_for_version(::bcrypt::Version::TwoB))
            .unwrap_or_default()
    }

    fn recognizes(&self, stored: &str) -> bool {
        ["$2a$", "$2b$", "$2y$"].iter().any(|prefix| stored.starts_with(prefix))
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        // `bcrypt::verify` compares in constant time (`subtle`).
        key.len() <= MAX_KEY_LEN && parse_cost(stored).is_some() && ::bcrypt::verify(key, stored).unwrap_or(false)
    }

    fn needs_rehash(&self, stored: &str) -> bool {
        parse_cost(stored) != Some(self.cost)
    }

    fn is_slow(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{KEY, WRONG};
    use super::*;

    // From Python: bcrypt.hashpw(KEY, b"$2b$10$KeypalKatSaltValue123u"), and the same with
    // $2a$ and $2y$ (same output).
    const KAT: &str = "$2b$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW";
    const KAT_2A: &str = "$2a$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW";
    const KAT_2Y: &str = "$2y$10$KeypalKatSaltValue123uYgBpfQKzFccdKJw4S1mYtKWwVUmmfqW";

    fn fast() -> BcryptHasher {
        BcryptHasher::new(4).unwrap()
    }

    #[test]
    fn known_answers() {
        let h = fast();
        for kat in [KAT, KAT_2A, KAT_2Y] {
            assert!(h.recognizes(kat));
            assert!(h.verify(KEY, kat), "{kat}");
            assert!(!h.verify(WRONG, kat), "{kat}");
            assert_eq!(parse_cost(kat), Some(10));
        }
        assert!(h.needs_rehash(KAT));
        assert!(!BcryptHasher::default_cost().needs_rehash(KAT));
    }

    #[test]
    fn round_trip_and_flags() {
        let h = fast();
        let stored = h.hash(KEY);
        assert!(stored.starts_with("$2b$04$"), "{stored}");
        assert_eq!(parse_cost(&stored), Some(4));
        assert!(h.verify(KEY, &stored));
        assert!(!h.verify(WRONG, &stored));
        assert!(!h.needs_rehash(&stored));
        assert!(BcryptHasher::new(5).unwrap().needs_rehash(&stored));
        assert_ne!(stored, h.hash(KEY), "salt is random");
        assert!(h.is_slow());
        assert_eq!(h.algorithm(), "bcrypt");
    }

    #[test]
    fn keys_longer_than_72_bytes_never_verify() {
        let h = fast();
        let long = [b'k'; 72];
        let stored = h.hash(&long);
        assert!(h.verify(&long, &stored));
        let mut longer = long.to_vec();
        longer.push(b'x');
        assert!(!h.verify(&longer, &stored));
        assert!(!h.verify(&longer, &h.hash(&longer)));
    }

    #[test]
    fn garbled_strings_are_rejected() {
        let h = fast();
        for cut in 0..KAT.len() {
            assert!(!h.verify(KEY, &KAT[..cut]), "{}", &KAT[..cut]);
        }
        for bad in [
            format!("{KAT}W"),
            KAT.replace("$2b$", "$2x$"),
            KAT.replace("$10$", "$+9$"),
            KAT.replace("$10$", "$03$"),
            KAT.replace("$10$", "$32$"),
            KAT.replace("$10$", "$99$"),
            KAT.replace("Keypal", "Key!al"),
            KAT.replace("Keypal", "Keypé"),
            KAT.replace("123u", "1234"),
            KAT.replace("mfqW", "mfqX"),
        ] {
            assert!(!h.verify(KEY, &bad), "{bad}");
            assert!(h.needs_rehash(&bad), "{bad}");
        }
    }

    #[test]
    fn cost_is_checked() {
        for cost in [0, 3, 32, 100] {
            assert!(matches!(BcryptHasher::new(cost), Err(HashError::InvalidCost { .. })));
        }
        assert!(BcryptHasher::new(4).is_ok());
        assert!(BcryptHasher::new(31).is_ok());
    }
}
