//! The master key and everything derived from it: the pepper of HMAC-hashed keys, the
//! key that digests client secrets, service keys and session tokens, and the key
//! that seals recoverable keys and the service key (XChaCha20-Poly1305).
//!
//! The master key comes from `KEYPAL_MASTER_KEY` or a key file created on first start
//! with mode 0600. Derived keys use HKDF-SHA-256 with one label per purpose, so no two
//! purposes ever share a key. One more label gives the master key's check value: what a
//! database records on first start, so that a process with another master key is
//! refused before it can answer anything ([`crate::Deployment`]).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use keypal::Encoding;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Why the master key could not be loaded or a secret could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// `KEYPAL_MASTER_KEY` or the key file does not hold 32 bytes as 64 hex characters or base64.
    #[error("the master key must be 32 bytes, as 64 hex characters or base64 (from {source_name})")]
    BadMasterKey {
        /// Where it came from (never the key).
        source_name: String,
    },
    /// The key file could not be read or created.
    #[error("cannot use the key file {path}: {error}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("the random source failed: {0}")]
    Random(String),
}

/// A sealed value that cannot be opened (another master key, or tampered with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value cannot be opened with this master key")]
pub struct UnsealError;

/// The master key's derived keys. Cheap to share behind an `Arc`.
pub struct Secrets {
    pepper: Zeroizing<[u8; 32]>,
    digest_key: Zeroizing<[u8; 32]>,
    seal: XChaCha20Poly1305,
    check: [u8; 32],
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

/// The HKDF label of the master key's check value. A label of its own: the check value
/// is a one-way function of the master key that no other purpose shares, so knowing it
/// gives nothing about the key or any key derived from it.
pub const CHECK_LABEL: &str = "keypal/master-key-check/v1";

/// Where a new master key was created, to tell the operator once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedKeyFile(pub String);

/// Reads 32 bytes written as 64 hex characters or base64 (standard or URL-safe, padded or not).
fn parse_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let text = text.trim();
    let mut out = Zeroizing::new([0u8; 32]);
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        return Some(out);
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().find_map(|engine| {
        let bytes = Zeroizing::new(engine.decode(text).ok()?);
        (bytes.len() == 32).then(|| {
            out.copy_from_slice(&bytes);
            out.clone()
        })
    })
}

/// Lowercase hex, written straight into one allocation of the final size: this runs
/// twice on every `POST /v1/verify` (service key, client secret), and a key's hex
/// text never leaves copies behind in memory freed by a growing string.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

impl Secrets {
    /// Derives every key from a 32-byte master key.
    pub fn from_master_key(master: &[u8; 32]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(b"keypal"), master);
        let derive = |label: &[u8]| {
            let mut out = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA-256's 8160-byte limit: expand cannot fail.
            let _ = hkdf.expand(label, out.as_mut());
            out
        };
        let seal_key = derive(b"keypal/seal/v1");
        let check = derive(CHECK_LABEL.as_bytes());
        Self {
            pepper: derive(b"keypal/pepper/v1"),
            digest_key: derive(b"keypal/secret-digest/v1"),
            seal: XChaCha20Poly1305::new(&(*seal_key).into()),
            check: *check,
        }
    }

    /// Reads the master key from `KEYPAL_MASTER_KEY` (passed in as `configured`) or else
    /// the key file; `None` when neither is there (see [`Secrets::create_key_file`]).
    pub fn read(configured: Option<&str>, key_file: &Path) -> Result<Option<Self>, SecretsError> {
        if let Some(text) = configured {
            let key = parse_key(text).ok_or(SecretsError::BadMasterKey { source_name: "KEYPAL_MASTER_KEY".into() })?;
            return Ok(Some(Self::from_master_key(&key)));
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                let key = parse_key(&text)
                    .ok_or_else(|| SecretsError::BadMasterKey { source_name: key_file.display().to_string() })?;
                Ok(Some(Self::from_master_key(&key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SecretsError::KeyFile { path: key_file.display().to_string(), error }),
        }
    }

    /// Creates `key_file` (it must not exist) holding a new random master key, mode 0600.
    pub fn create_key_file(key_file: &Path) -> Result<(Self, CreatedKeyFile), SecretsError> {
        let file_error = |error| SecretsError::KeyFile { path: key_file.display().to_string(), error };
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).map_err(|e| SecretsError::Random(e.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(key_file).map_err(file_error)?;
        let text = Zeroizing::new(hex(key.as_ref()));
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(file_error)?;
        Ok((Self::from_master_key(&key), CreatedKeyFile(key_file.display().to_string())))
    }

    /// The master key's check value as lowercase hex: HKDF-SHA-256 of the master key
    /// with the label [`CHECK_LABEL`]. Two master keys have the same check value only
    /// if they are the same key; the value reveals nothing else about it.
    ///
    /// ```
    /// use keypal_server::secrets::Secrets;
    /// let check = Secrets::from_master_key(&[7; 32]).check_value();
    /// assert_eq!(check.len(), 64);
    /// assert_eq!(check, Secrets::from_master_key(&[7; 32]).check_value());
    /// assert_ne!(check, Secrets::from_master_key(&[8; 32]).check_value());
    /// ```
    pub fn check_value(&self) -> String {
        hex(&self.check)
    }

    /// Whether `stored` is this master key's check value (compared in constant time).
    pub fn matches_check_value(&self, stored: &str) -> bool {
        bool::from(self.check_value().as_bytes().ct_eq(stored.as_bytes()))
    }

    /// The pepper of applications that hash their keys with HMAC-SHA-256 (as a string for the core's config).
    pub fn pepper(&self) -> String {
        hex(self.pepper.as_ref())
    }

    /// A keyed digest of a high-entropy secret (client secret, service key, session token),
    /// as lowercase hex: what is stored and looked up instead of the secret.
    pub fn digest(&self, secret: &str) -> String {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.digest_key.as_ref())
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(secret.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Encrypts `plaintext`, bound to `context` (a key id, `service_key`): base64url of nonce ‖ ciphertext.
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, SecretsError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| SecretsError::Random(e.to_string()))?;
        let sealed = self
            .seal
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .map_err(|_| SecretsError::Random("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what [`Secrets::seal`] made with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<String>, UnsealError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed).map_err(|_| UnsealError)?;
        if bytes.len() < 24 {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let nonce = XNonce::try_from(nonce).map_err(|_| UnsealError)?;
        let plain =
            self.seal.decrypt(&nonce, Payload { msg: ciphertext, aad: context.as_bytes() }).map_err(|_| UnsealError)?;
        String::from_utf8(plain).map(Zeroizing::new).map_err(|_| UnsealError)
    }
}

/// HMAC accepts keys of any length; a 32-byte key can never be refused.
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::KeyInit>::new(&Default::default())
}

/// A new random token: `prefix` followed by `len` base62 characters.
pub fn token(prefix: &str, len: usize) -> Result<String, SecretsError> {
    let body = keypal::format::random_string(Encoding::Base62, len).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(format!("{prefix}{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_from_hex_and_base64_and_nothing_else() {
        let hex_key = "00".repeat(32);
        assert!(parse_key(&hex_key).is_some());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).is_some());
        assert!(parse_key(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])).is_some());
        assert!(parse_key("too short").is_none());
        assert!(parse_key(&base64::engine::general_purpose::STANDARD.encode([7u8; 31])).is_none());
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let a = Secrets::from_master_key(&[1; 32]);
        let b = Secrets::from_master_key(&[2; 32]);
        let sealed = a.seal("key-1", "sk-proj-secret").unwrap();
        assert_eq!(a.open("key-1", &sealed).unwrap().as_str(), "sk-proj-secret");
        assert_eq!(a.open("key-2", &sealed), Err(UnsealError), "bound to its context");
        assert_eq!(b.open("key-1", &sealed), Err(UnsealError), "bound to its master key");
        assert_eq!(a.open("key-1", "garbage!"), Err(UnsealError));
        assert_ne!(a.seal("key-1", "x").unwrap(), a.seal("key-1", "x").unwrap(), "a fresh nonce each time");
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
    }

    #[test]
    fn digests_are_keyed_and_purposes_get_different_keys() {
        let a = Secrets::from_master_key(&[1; 32]);
        let b = Secrets::from_master_key(&[2; 32]);
        assert_eq!(a.digest("cs-abc"), a.digest("cs-abc"));
        assert_ne!(a.digest("cs-abc"), b.digest("cs-abc"));
        assert_ne!(a.pepper(), hex(a.digest_key.as_ref()));
    }

    #[test]
    fn a_missing_key_file_is_created_with_mode_0600_and_read_back() {
        let dir = std::env::temp_dir().join(format!("keypal-secrets-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keypal.key");
        assert!(Secrets::read(None, &path).unwrap().is_none(), "no key file yet");
        let (first, created) = Secrets::create_key_file(&path).unwrap();
        assert_eq!(created.0, path.display().to_string());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let second = Secrets::read(None, &path).unwrap().unwrap();
        assert_eq!(first.digest("x"), second.digest("x"), "the same key after a restart");
        assert!(matches!(Secrets::create_key_file(&path), Err(SecretsError::KeyFile { .. })), "never overwritten");
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(Secrets::read(None, &path), Err(SecretsError::BadMasterKey { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_check_value_is_a_purpose_of_its_own_and_never_the_key() {
        let master = [9u8; 32];
        let secrets = Secrets::from_master_key(&master);
        let check = secrets.check_value();
        assert!(secrets.matches_check_value(&check));
        assert!(!Secrets::from_master_key(&[10; 32]).matches_check_value(&check));
        assert!(!secrets.matches_check_value(""));
        for other in [hex(&master), secrets.pepper(), hex(secrets.digest_key.as_ref())] {
            assert_ne!(check, other);
        }
    }
}
