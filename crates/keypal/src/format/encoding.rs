//! Character sets of id and secret segments, and unbiased random strings over them.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::FormatError;

/// The character set of an `{id:..}` or `{secret:..}` segment.
///
/// Serialized (and parsed with [`FromStr`]) as its lowercase [`name`](Encoding::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `0-9A-Za-z` (62 characters).
    Base62,
    /// `0-9A-Za-z`, the same alphabet as [`Encoding::Base62`] under another name.
    Alnum,
    /// `A-Za-z0-9-_` (64 characters, URL-safe base64 without padding).
    Base64Url,
    /// `a-z2-7` (32 characters, RFC 4648 base32 in lowercase).
    Base32,
    /// `0-9a-f` (16 characters, lowercase hexadecimal).
    Hex,
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
const HEX: &[u8] = b"0123456789abcdef";

impl Encoding {
    /// Every encoding, in declaration order.
    pub const ALL: [Encoding; 5] =
        [Encoding::Base62, Encoding::Alnum, Encoding::Base64Url, Encoding::Base32, Encoding::Hex];

    /// The characters of this encoding, as ASCII bytes.
    pub fn alphabet(self) -> &'static [u8] {
        match self {
            Encoding::Base62 | Encoding::Alnum => BASE62,
            Encoding::Base64Url => BASE64URL,
            Encoding::Base32 => BASE32,
            Encoding::Hex => HEX,
        }
    }

    /// Whether byte `b` is a character of this encoding.
    pub fn contains(self, b: u8) -> bool {
        match self {
            Encoding::Base62 | Encoding::Alnum => is_alnum(b),
            Encoding::Base64Url => is_base64url(b),
            Encoding::Base32 => is_base32(b),
            Encoding::Hex => is_hex(b),
        }
    }

    /// Whether every byte of `text` is in the alphabet.
    ///
    /// Range comparisons without early exit, one loop per encoding: the compiler turns
    /// each into a few vector instructions per 16 characters.
    #[inline]
    pub fn contains_all(self, text: &[u8]) -> bool {
        // Not inlined: the caller then loads only the constants of its encoding's loop.
        #[inline(never)]
        fn all(text: &[u8], member: impl Fn(u8) -> bool) -> bool {
            text.iter().fold(true, |all, &b| all & member(b))
        }
        match self {
            Encoding::Base62 | Encoding::Alnum => all(text, is_alnum),
            Encoding::Base64Url => all(text, is_base64url),
            Encoding::Base32 => all(text, is_base32),
            Encoding::Hex => all(text, is_hex),
        }
    }

    /// The lowercase name used in templates and configuration (`"base64url"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Base62 => "base62",
            Encoding::Alnum => "alnum",
            Encoding::Base64Url => "base64url",
            Encoding::Base32 => "base32",
            Encoding::Hex => "hex",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = FormatError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|encoding| encoding.name() == name)
            .ok_or_else(|| FormatError::UnknownEncoding { name: name.to_owned() })
    }
}

/// `len` random characters of `encoding`, drawn from the operating system's CSPRNG.
///
/// Each character is uniform over the alphabet (rejection sampling, no modulo bias).
pub fn random_string(encoding: Encoding, len: usize) -> Result<String, FormatError> {
    let mut out = String::with_capacity(len);
    push_random(&mut out, encoding, len)?;
    Ok(out)
}

/// Appends `len` random characters of `encoding` to `out`.
pub(crate) fn push_random(out: &mut String, encoding: Encoding, len: usize) -> Result<(), FormatError> {
    let alphabet = encoding.alphabet();
    let n = alphabet.len();
    // Largest multiple of n not above 256: bytes below it map uniformly onto the alphabet.
    let limit = 256 - 256 % n;
    let mut buf = [0u8; 64];
    let mut missing = len;
    let result = loop {
        if missing == 0 {
            break Ok(());
        }
        if let Err(err) = getrandom::fill(&mut buf) {
            break Err(FormatError::Random(err));
        }
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit).take(missing) {
            out.push(char::from(alphabet[usize::from(b) % n]));
            missing -= 1;
        }
    };
    buf.zeroize();
    result
}

/// Whether `lo <= b <= hi`, with one comparison.
fn in_range(b: u8, lo: u8, hi: u8) -> bool {
    b.wrapping_sub(lo) <= hi - lo
}

/// `0-9A-Za-z`. Setting bit 5 maps `A-Z` onto `a-z` and no byte outside `A-Z` into it.
fn is_alnum(b: u8) -> bool {
    in_range(b, b'0', b'9') | in_range(b | 0x20, b'a', b'z')
}

/// `A-Za-z0-9-_`.
fn is_base64url(b: u8) -> bool {
    is_alnum(b) | (b == b'-') | (b == b'_')
}

/// `a-z2-7`.
fn is_base32(b: u8) -> bool {
    in_range(b, b'a', b'z') | in_range(b, b'2', b'7')
}

/// `0-9a-f`.
fn is_hex(b: u8) -> bool {
    in_range(b, b'0', b'9') | in_range(b, b'a', b'f')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn alphabets_match_contains() {
        for encoding in Encoding::ALL {
            let alphabet = encoding.alphabet();
            for b in 0..=u8::MAX {
                assert_eq!(encoding.contains(b), alphabet.contains(&b), "{encoding} {b}");
                assert_eq!(encoding.contains_all(&[b]), alphabet.contains(&b), "{encoding} {b}");
                // One stranger anywhere among good characters is found.
                for at in [0, 15, 16, 31, 32, 47] {
                    let mut text = [alphabet[0]; 48];
                    text[at] = b;
                    assert_eq!(encoding.contains_all(&text), alphabet.contains(&b), "{encoding} {b} at {at}");
                }
            }
            assert!(encoding.contains_all(alphabet));
            assert!(encoding.contains_all(b""));
            let mut sorted = alphabet.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), alphabet.len(), "{encoding} has duplicates");
        }
        assert_eq!(Encoding::Base62.alphabet().len(), 62);
        assert_eq!(Encoding::Base64Url.alphabet().len(), 64);
        assert_eq!(Encoding::Base32.alphabet().len(), 32);
        assert_eq!(Encoding::Hex.alphabet().len(), 16);
    }

    #[test]
    fn names_round_trip_through_fromstr_display_and_serde() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StrDeserializer};

        for encoding in Encoding::ALL {
            assert_eq!(encoding.name().parse::<Encoding>().unwrap(), encoding);
            assert_eq!(encoding.to_string(), encoding.name());
            let de: StrDeserializer<'_, Error> = encoding.name().into_deserializer();
            assert_eq!(Encoding::deserialize(de).unwrap(), encoding);
        }
        assert!(matches!("Base62".parse::<Encoding>(), Err(FormatError::UnknownEncoding { .. })));
        assert!("base58".parse::<Encoding>().is_err());
    }

    #[test]
    fn random_strings_have_the_length_and_only_alphabet_characters() {
        for encoding in Encoding::ALL {
            for len in [0, 1, 63, 64, 65, 300] {
                let s = random_string(encoding, len).unwrap();
                assert_eq!(s.len(), len);
                assert!(s.bytes().all(|b| encoding.contains(b)), "{encoding}: {s}");
            }
        }
    }

    #[test]
    fn every_alphabet_character_can_appear() {
        for encoding in Encoding::ALL {
            // 64 * 400 draws: the chance that a given character never shows up is < 1e-100.
            let s = random_string(encoding, 64 * 400).unwrap();
            for &c in encoding.alphabet() {
                assert!(s.as_bytes().contains(&c), "{encoding}: {} never drawn", char::from(c));
            }
        }
    }

    #[test]
    fn schema_names_the_lowercase_variants() {
        let schema = schemars::schema_for!(Encoding);
        let text = schema.as_value().to_string();
        for encoding in Encoding::ALL {
            assert!(text.contains(&format!("\"{}\"", encoding.name())), "{text}");
        }
    }
}
