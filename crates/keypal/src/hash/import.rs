//! Hashes issued elsewhere, turned into stored strings: SHA-256 and SHA-512 digests
//! in hex, base64 or base64url (salted or not), bcrypt and argon2id strings, each of
//! the whole key or of its secret segment.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::salted::format_salted;
use super::sha::Sha;
use super::{HashError, Hashing, SECRET_TAG, argon2, bcrypt, hex_decode, sha};
use crate::record::{DigestEncoding, HashCovers, ImportAlgorithm, ImportedHash};

/// Base64 decoding that takes the text with its `=` padding or without it.
const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_OPTIONAL);
const BASE64URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_OPTIONAL);

impl Hashing {
    /// The stored string of a hash issued elsewhere: keypal's own tags for SHA
    /// digests (`$sha256$<hex>`, `$sha512$<hex>`, and
    /// `$salted-sha256$salt=<salt as base64url>$<hex>` for a digest of the key with
    /// a salt appended), bcrypt and argon2id strings as they are; a hash of the
    /// secret segment alone wrapped in keypal's `$secret$` tag (`$secret$$2b$10$…`).
    /// Every manager verifies all of them.
    ///
    /// # Errors
    /// [`HashError::InvalidImport`] naming what is wrong: a digest of the wrong length
    /// or not in its encoding, a malformed bcrypt or argon2id string, an empty salt,
    /// or an encoding or salt given for bcrypt or argon2id.
    ///
    /// ```
    /// use keypal::hash::Hashing;
    /// use keypal::{DigestEncoding, HashCovers, ImportAlgorithm, ImportedHash};
    ///
    /// // SHA-256 of "test", as unpadded base64url: stored as keypal's hex.
    /// let digest = ImportedHash::new(ImportAlgorithm::Sha256, "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg")
    ///     .encoding(DigestEncoding::Base64Url);
    /// assert_eq!(
    ///     Hashing::import(&digest)?,
    ///     "$sha256$9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    /// );
    /// // The same digest of a key's secret segment alone.
    /// let secret = digest.clone().covers(HashCovers::Secret);
    /// assert!(Hashing::import(&secret)?.starts_with("$secret$$sha256$"));
    /// // One character short.
    /// let short = ImportedHash::new(ImportAlgorithm::Sha256, "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCg")
    ///     .encoding(DigestEncoding::Base64Url);
    /// assert_eq!(
    ///     Hashing::import(&short).unwrap_err().to_string(),
    ///     "cannot import SHA-256 base64url hash: expected 43 characters of base64url (44 with `=` padding)"
    /// );
    /// # Ok::<(), keypal::hash::HashError>(())
    /// ```
    pub fn import(hash: &ImportedHash) -> Result<String, HashError> {
        let stored = match hash.algorithm {
            ImportAlgorithm::Sha256 => import_digest(Sha::Sha256, hash)?,
            ImportAlgorithm::Sha512 => import_digest(Sha::Sha512, hash)?,
            ImportAlgorithm::Bcrypt => {
                only_sha_options(hash, "bcrypt")?;
                match bcrypt::parse_cost(&hash.value) {
                    Some(_) => hash.value.clone(),
                    None => {
                        return Err(HashError::InvalidImport {
                            kind: "bcrypt",
                            reason: "expected a 60-character $2a$, $2b$ or $2y$ hash with cost 4 to 31",
                        });
                    }
                }
            }
            ImportAlgorithm::Argon2id => {
                only_sha_options(hash, "argon2id")?;
                if !argon2::is_well_formed(&hash.value) {
                    return Err(HashError::InvalidImport {
                        kind: "argon2id",
                        reason: "expected a PHC string $argon2id$v=19$m=<KiB>,t=<iterations>,p=<lanes>$<salt>$<hash> \
                                 within keypal's limits",
                    });
                }
                hash.value.clone()
            }
        };
        Ok(match hash.covers {
            HashCovers::Key => stored,
            HashCovers::Secret => format!("{SECRET_TAG}{stored}"),
        })
    }
}

impl Hashing {
    /// The import form of a stored hash ([`Hashing::import`]'s inverse), for moving
    /// keys to another application or deployment: `None` for a hash no other
    /// deployment can check (HMAC-SHA256, keyed by this deployment's master key) or a
    /// string that is not a stored hash.
    ///
    /// ```
    /// use keypal::hash::Hashing;
    /// use keypal::{HashCovers, ImportAlgorithm, ImportedHash};
    ///
    /// let hash = ImportedHash::new(ImportAlgorithm::Bcrypt, "$2b$04$Ts8IrTmFQ8R4HLW6hE8zQ.Ki.TYrVBg6dUmdVPuUJaSn/BjE/1ipy")
    ///     .covers(HashCovers::Secret);
    /// let stored = Hashing::import(&hash)?;
    /// assert_eq!(Hashing::export(&stored), Some(hash));
    /// assert_eq!(Hashing::export("$hmac-sha256$v1$00ff"), None);
    /// # Ok::<(), keypal::hash::HashError>(())
    /// ```
    pub fn export(stored: &str) -> Option<ImportedHash> {
        let (covers, hash) = match stored.strip_prefix(SECRET_TAG) {
            Some(hash) => (HashCovers::Secret, hash),
            None => (HashCovers::Key, stored),
        };
        let exported = if let Some(hex) = hash.strip_prefix("$sha256$") {
            hex_decode::<32>(hex)?;
            ImportedHash::new(ImportAlgorithm::Sha256, hex)
        } else if let Some(hex) = hash.strip_prefix("$sha512$") {
            hex_decode::<64>(hex)?;
            ImportedHash::new(ImportAlgorithm::Sha512, hex)
        } else if let Some((sha, rest)) =
            [(ImportAlgorithm::Sha256, "$salted-sha256$salt="), (ImportAlgorithm::Sha512, "$salted-sha512$salt=")]
                .into_iter()
                .find_map(|(sha, prefix)| hash.strip_prefix(prefix).map(|rest| (sha, rest)))
        {
            let (salt, hex) = rest.split_once('$')?;
            let salt = String::from_utf8(BASE64URL.decode(salt).ok()?).ok()?;
            ImportedHash::new(sha, hex).salt(salt)
        } else if bcrypt::parse_cost(hash).is_some() {
            ImportedHash::new(ImportAlgorithm::Bcrypt, hash)
        } else if argon2::is_well_formed(hash) {
            ImportedHash::new(ImportAlgorithm::Argon2id, hash)
        } else {
            return None;
        };
        let exported = exported.covers(covers);
        // Only what imports back to the same stored string.
        (Hashing::import(&exported).ok()? == stored).then_some(exported)
    }
}

/// The stored string of a SHA-256 or SHA-512 digest, salted or not.
fn import_digest(sha: Sha, hash: &ImportedHash) -> Result<String, HashError> {
    let encoding = hash.encoding.unwrap_or_default();
    let (kind, reason) = match (sha, encoding) {
        (Sha::Sha256, DigestEncoding::Hex) => ("SHA-256 hex", "expected 64 hex characters"),
        (Sha::Sha256, DigestEncoding::Base64) => {
            ("SHA-256 base64", "expected 44 characters of base64 (43 without `=` padding)")
        }
        (Sha::Sha256, DigestEncoding::Base64Url) => {
            ("SHA-256 base64url", "expected 43 characters of base64url (44 with `=` padding)")
        }
        (Sha::Sha512, DigestEncoding::Hex) => ("SHA-512 hex", "expected 128 hex characters"),
        (Sha::Sha512, DigestEncoding::Base64) => {
            ("SHA-512 base64", "expected 88 characters of base64 (86 without `=` padding)")
        }
        (Sha::Sha512, DigestEncoding::Base64Url) => {
            ("SHA-512 base64url", "expected 86 characters of base64url (88 with `=` padding)")
        }
    };
    let value = hash.value.as_str();
    let digest = match (encoding, sha) {
        (DigestEncoding::Hex, Sha::Sha256) => hex_decode::<32>(value).map(Vec::from),
        (DigestEncoding::Hex, Sha::Sha512) => hex_decode::<64>(value).map(Vec::from),
        (DigestEncoding::Base64, _) => BASE64.decode(value).ok(),
        (DigestEncoding::Base64Url, _) => BASE64URL.decode(value).ok(),
    }
    .filter(|digest| digest.len() == sha.len())
    .ok_or(HashError::InvalidImport { kind, reason })?;
    match hash.salt.as_deref() {
        None => Ok(sha::format_digest(sha, &digest)),
        Some("") => {
            Err(HashError::InvalidImport { kind, reason: "the salt is empty (leave it out for a digest without salt)" })
        }
        Some(salt) => Ok(format_salted(sha, salt.as_bytes(), &digest)),
    }
}

/// Refuses the options only SHA digests have (an encoding, a salt) on a bcrypt or
/// argon2id string, which carries its own salt and encoding.
fn only_sha_options(hash: &ImportedHash, kind: &'static str) -> Result<(), HashError> {
    if hash.encoding.is_some() {
        return Err(HashError::InvalidImport {
            kind,
            reason: "an encoding applies to SHA-256 and SHA-512 digests only",
        });
    }
    if hash.salt.is_some() {
        return Err(HashError::InvalidImport {
            kind,
            reason: "a salt applies to SHA-256 and SHA-512 digests only (this string carries its own)",
        });
    }
    Ok(())
}
