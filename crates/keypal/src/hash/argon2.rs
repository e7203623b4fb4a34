//! argon2id, stored as a PHC string.

use std::fmt;

use ::argon2::password_hash::phc::PasswordHash;
use ::argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{HashError, Hasher, salt16};

const PREFIX: &str = "$argon2id$";
/// Upper bounds on parameters, for the hasher's own and for stored strings: a garbled or
/// hostile stored string must not make a verify allocate without bound.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 256;
const MAX_PARALLELISM: u32 = 255;

/// argon2id cost parameters.
///
/// The default is OWASP's recommendation: 19 456 KiB (19 MiB) of memory, 2 iterations,
/// parallelism 1. Besides argon2's own rules (at least 8 KiB per lane, 1 iteration, 1
/// lane), keypal caps memory at 4 GiB, iterations at 256 and parallelism at 255, for new
/// hashes and stored strings alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Params {
    /// Memory cost in KiB (`m`).
    pub memory_kib: u32,
    /// Number of passes over the memory (`t`).
    pub iterations: u32,
    /// Number of lanes (`p`).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

impl Argon2Params {
    fn within_limits(self) -> bool {
        self.memory_kib <= MAX_MEMORY_KIB && self.iterations <= MAX_ITERATIONS && self.parallelism <= MAX_PARALLELISM
    }
}

/// argon2id (version 0x13), stored as a PHC string
/// `$argon2id$v=19$m=<KiB>,t=<iterations>,p=<parallelism>$<salt>$<hash>` with a random
/// 16-byte salt and a 32-byte output.
///
/// Deliberately slow. Verify reads the parameters from the stored string, so strings made
/// with other parameters (by keypal or elsewhere) still verify, and
/// [`Hasher::needs_rehash`] reports them.
#[derive(Clone)]
pub struct Argon2idHasher {
    params: Argon2Params,
    argon2: Argon2<'static>,
}

impl Argon2idHasher {
    /// A hasher making new hashes with `params`.
    ///
    /// # Errors
    /// [`HashError::InvalidArgon2Params`] when argon2 does not allow `params` or they pass
    /// keypal's limits.
    pub fn new(params: Argon2Params) -> Result<Self, HashError> {
        if !params.within_limits() {
            return Err(HashError::InvalidArgon2Params {
                reason: format!(
                    "keypal allows at most {MAX_MEMORY_KIB} KiB of memory, \
                     {MAX_ITERATIONS} iterations and parallelism {MAX_PARALLELISM}"
                ),
            });
        }
        let argon_params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| HashError::InvalidArgon2Params { reason: e.to_string() })?;
        Ok(Self { params, argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params) })
    }

    /// The hasher with the default (OWASP) parameters.
    pub(super) fn default_params() -> Self {
        Self {
            params: Argon2Params::default(),
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT),
        }
    }
}

/// A stored string's parsed parts, when it is a well-formed argon2id PHC string within
/// keypal's limits. A missing `v=` means version 0x10, as in the reference implementation.
fn parse(stored: &str) -> Option<(PasswordHash, Params, Version)> {
    if !stored.starts_with(PREFIX) {
        return None;
    }
    let hash = PasswordHash::new(stored).ok()?;
    let params = Params::try_from(&hash).ok()?;
    let limits =
        Argon2Params { memory_kib: params.m_cost(), iterations: params.t_cost(), parallelism: params.p_cost() };
    if !limits.within_limits() {
        return None;
    }
    let version = Version::try_from(hash.version.unwrap_or(0x10)).ok()?;
    Some((hash, params, version))
}

/// Whether `stored` is an argon2id PHC string this module verifies: well-formed,
/// within keypal's limits, with a salt and a hash.
pub(super) fn is_well_formed(stored: &str) -> bool {
    parse(stored).is_some_and(|(hash, _, _)| hash.salt.is_some() && hash.hash.is_some())
}

impl Hasher for Argon2idHasher {
    fn algorithm(&self) -> &str {
        "argon2id"
    }

    fn hash(&self, key: &[u8]) -> String {
        // Fails only for parameters `new` has already checked; an empty string never
        // verifies.
        self.argon2.hash_password_with_salt(key, &salt16()).map(|hash| hash.to_string()).unwrap_or_default()
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    fn verify(&self, key: &[u8], stored: &str) -> bool {
        let Some((hash, params, version)) = parse(stored) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
            return false;
        };
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        Argon2::new(Algorithm::Argon2id, version, params)
            .hash_password_into(key, salt, &mut out)
            .is_ok_and(|()| out.ct_eq(expected.as_bytes()).into())
    }

    fn needs_rehash(&self, stored: &str) -> bool {
        parse(stored).is_none_or(|(_, params, version)| {
            version != Version::V0x13
                || params.m_cost() != self.params.memory_kib
                || params.t_cost() != self.params.iterations
                || params.p_cost() != self.params.parallelism
        })
    }

    fn is_slow(&self) -> bool {
        true
    }
}

impl fmt::Debug for Argon2idHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Argon2idHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{KEY, WRONG};
    use super::*;

    // From Python: argon2.low_level.hash_secret(KEY, b"keypal-kat-salt!", time_cost=2,
    // memory_cost=19456, parallelism=1, hash_len=32, type=Type.ID, version=19).
    const KAT: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$a2V5cGFsLWthdC1zYWx0IQ$ylpUrEHkvHnTq8XV/PcixQRrQqVk4f1lbqiXaiXDFk4";
    // Same with memory_cost=64, time_cost=1.
    const LOW_KAT: &str =
        "$argon2id$v=19$m=64,t=1,p=1$a2V5cGFsLWthdC1zYWx0IQ$6DkRzcLKNTyMjA0MKasFVjwzcDEHe1BgW+o13L4Y9i0";
    // Same as LOW_KAT with version=16.
    const V16_KAT: &str =
        "$argon2id$v=16$m=64,t=1,p=1$a2V5cGFsLWthdC1zYWx0IQ$QePU/TrQi6w2JFWjwASuqzgiNtaELJJ3Y1oMFJc0v0c";

    fn fast() -> Argon2idHasher {
        Argon2idHasher::new(Argon2Params { memory_kib: 64, iterations: 1, parallelism: 1 }).unwrap()
    }

    #[test]
    fn known_answers() {
        let h = fast();
        for kat in [KAT, LOW_KAT, V16_KAT] {
            assert!(h.verify(KEY, kat), "{kat}");
            assert!(!h.verify(WRONG, kat), "{kat}");
        }
        assert!(!h.needs_rehash(LOW_KAT));
        assert!(h.needs_rehash(KAT));
        assert!(h.needs_rehash(V16_KAT));
        assert!(!Argon2idHasher::default_params().needs_rehash(KAT));
    }

    #[test]
    fn round_trip_and_flags() {
        let h = fast();
        let stored = h.hash(KEY);
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{stored}");
        assert!(h.recognizes(&stored));
        assert!(h.verify(KEY, &stored));
        assert!(!h.verify(WRONG, &stored));
        assert!(!h.needs_rehash(&stored));
        assert_ne!(stored, h.hash(KEY), "salt is random");
        assert!(h.is_slow());
        assert_eq!(h.algorithm(), "argon2id");
    }

    #[test]
    fn needs_rehash_on_any_parameter_change() {
        let stored = fast().hash(KEY);
        for (m, t, p) in [(128, 1, 1), (64, 2, 1), (64, 1, 2)] {
            let h = Argon2idHasher::new(Argon2Params { memory_kib: m, iterations: t, parallelism: p }).unwrap();
            assert!(h.verify(KEY, &stored));
            assert!(h.needs_rehash(&stored), "{m} {t} {p}");
        }
    }

    #[test]
    fn garbled_strings_are_rejected() {
        let h = fast();
        for cut in 0..LOW_KAT.len() {
            assert!(!h.verify(KEY, &LOW_KAT[..cut]), "{}", &LOW_KAT[..cut]);
        }
        for bad in [
            format!("{LOW_KAT}!"),
            format!("{LOW_KAT}$"),
            LOW_KAT.replace("argon2id", "argon2i"),
            LOW_KAT.replace("v=19", "v=18"),
            LOW_KAT.replace("m=64", "m=4"),
            LOW_KAT.replace("m=64", "m=99999999999"),
            LOW_KAT.replace("m=64", "m=4294967295"),
            LOW_KAT.replace("t=1", "t=0"),
            LOW_KAT.replace("t=1", "t=4000000000"),
            LOW_KAT.replace("p=1", "p=0"),
            LOW_KAT.replace("p=1", "p=x"),
            LOW_KAT.replace("a2V5cGFsLWthdC1zYWx0IQ", "a2V5"),
            LOW_KAT.replace("a2V5cGFsLWthdC1zYWx0IQ", "!!!"),
            LOW_KAT.replace("6DkR", "é"),
            "$argon2id$".to_owned(),
        ] {
            assert!(!h.verify(KEY, &bad), "{bad}");
            assert!(h.needs_rehash(&bad), "{bad}");
        }
        // Well-formed, but outputs of another length that do not match.
        assert!(!h.verify(KEY, &format!("{LOW_KAT}A")));
        assert!(!h.verify(KEY, &LOW_KAT.replace("$6DkR", "$")));
    }

    #[test]
    fn params_are_checked() {
        let bad = [(0, 1, 1), (7, 1, 1), (64, 0, 1), (64, 1, 0), (64, 1, 9)];
        for (m, t, p) in bad {
            let params = Argon2Params { memory_kib: m, iterations: t, parallelism: p };
            assert!(matches!(Argon2idHasher::new(params), Err(HashError::InvalidArgon2Params { .. })), "{params:?}");
        }
        let too_much = Argon2Params { memory_kib: MAX_MEMORY_KIB + 1, ..Argon2Params::default() };
        assert!(Argon2idHasher::new(too_much).is_err());
        assert!(Argon2idHasher::new(Argon2Params::default()).is_ok());
    }

    #[test]
    fn default_params_are_owasp() {
        let p = Argon2Params::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19456, 2, 1));
        assert_eq!(Argon2idHasher::default_params().params, p);
    }
}
