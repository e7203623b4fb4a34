//! [`PlainKey`]: a plaintext API key that never shows itself by accident.

use std::fmt;

use zeroize::Zeroizing;

/// A plaintext API key.
///
/// `Debug` and `Display` are redacted, so a key that ends up in a log line or an
/// error message shows as `PlainKey(<redacted>)`. The memory is zeroized on drop.
/// Call [`PlainKey::expose`] at the one place the key must be shown or sent.
///
/// ```
/// use keypal::PlainKey;
///
/// let key = PlainKey::new("sk_live_abc123");
/// assert_eq!(key.expose(), "sk_live_abc123");
/// assert_eq!(format!("{key}"), "PlainKey(<redacted>)");
/// assert_eq!(format!("{key:?}"), "PlainKey(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(Zeroizing<String>);

impl PlainKey {
    /// Wraps a plaintext key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(Zeroizing::new(key.into()))
    }

    /// The plaintext. Call it only where the key must leave the program
    /// (shown once to its owner, sent in a header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first `n` characters (or fewer for a shorter key), for display.
    pub fn start(&self, n: usize) -> &str {
        first_chars(&self.0, n)
    }

    /// The last `n` characters (or fewer for a shorter key), for display.
    pub fn end(&self, n: usize) -> &str {
        let count = self.0.chars().count();
        let skip = count.saturating_sub(n);
        let start = self.0.char_indices().nth(skip).map_or(self.0.len(), |(i, _)| i);
        &self.0[start..]
    }
}

/// The first `n` characters of `text` (all of it when shorter): a key's start and its
/// lookup hint, the same when a key is stored and when it is presented.
pub(crate) fn first_chars(text: &str, n: usize) -> &str {
    let end = text.char_indices().nth(n).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

impl From<String> for PlainKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&str> for PlainKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

impl fmt::Display for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

/// Anything a presented key can be read from: a [`PlainKey`], a `str` or a `String`.
///
/// ```
/// use keypal::{AsKey, PlainKey};
///
/// fn len(key: &(impl AsKey + ?Sized)) -> usize { key.key_str().len() }
/// assert_eq!(len("abc"), 3);
/// assert_eq!(len(&PlainKey::new("abcd")), 4);
/// ```
pub trait AsKey {
    /// The key's text.
    fn key_str(&self) -> &str;
}

impl AsKey for PlainKey {
    fn key_str(&self) -> &str {
        self.expose()
    }
}

impl AsKey for str {
    fn key_str(&self) -> &str {
        self
    }
}

impl AsKey for String {
    fn key_str(&self) -> &str {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_end_take_characters() {
        let key = PlainKey::new("brdnv_sk_a7b3c9d2");
        assert_eq!(key.start(12), "brdnv_sk_a7b");
        assert_eq!(key.end(4), "c9d2");
        assert_eq!(key.start(100), key.expose());
        assert_eq!(key.end(100), key.expose());
    }

    #[test]
    fn redacted_everywhere() {
        let key = PlainKey::new("secret-value");
        assert!(!format!("{key:?} {key}").contains("secret-value"));
    }
}

/// Keeps an encrypted copy of each new key, for services that let an administrator
/// reveal a key again later ("recoverable" keys). keypal's core never decrypts: it
/// stores what [`KeySealer::seal`] returns in [`KeyRecord::encrypted_key`](crate::KeyRecord).
///
/// ```
/// use keypal::{KeyId, KeyManager, KeySealer, MemoryStore, NewKey, PlainKey, SealError};
///
/// /// Not encryption: shows where a real sealer (an AEAD under a master key) plugs in.
/// struct Reversed;
/// impl KeySealer for Reversed {
///     fn seal(&self, id: KeyId, key: &PlainKey) -> Result<String, SealError> {
///         Ok(format!("{id}:{}", key.expose().chars().rev().collect::<String>()))
///     }
/// }
///
/// # pollster::block_on(async {
/// let keys = KeyManager::builder().store(MemoryStore::new()).key_sealer(Reversed).build()?;
/// let created = keys.create(NewKey::new()).await?;
/// assert!(created.record.encrypted_key.unwrap().starts_with(&created.record.id.to_string()));
/// # Ok::<(), keypal::Error>(())
/// # }).unwrap();
/// ```
pub trait KeySealer: Send + Sync + 'static {
    /// The encrypted copy of `key`, whose record will have id `id` (bind it to the id,
    /// e.g. as associated data, so a copy cannot be moved to another record).
    fn seal(&self, id: crate::KeyId, key: &PlainKey) -> Result<String, SealError>;
}

/// A key could not be sealed (the sealer's own reason; never the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealing the key failed: {0}")]
pub struct SealError(pub String);
