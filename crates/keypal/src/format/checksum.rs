//! The `{checksum}` segment: CRC32 of the text before it, as 6 base62 characters.
//!
//! Like GitHub's token checksums, it lets a key with a typo (or random garbage) be
//! rejected without a storage read, and lets scanners find leaked keys with almost no
//! false positives. It is not a security measure: anyone can compute it.

use super::Encoding;

/// Number of characters of a checksum.
pub const LEN: usize = 6;

/// The checksum of `data`: CRC32 (IEEE) in base62 (`0-9A-Za-z`), left-padded with `'0'`
/// to [`LEN`] characters. `62^6 > 2^32`, so every CRC fits.
///
/// ```
/// use keypal::format::checksum;
///
/// assert_eq!(&checksum::compute(""), b"000000");
/// assert!(checksum::verify("sk_", &checksum::compute("sk_")));
/// ```
pub fn compute(data: &str) -> [u8; LEN] {
    let alphabet = Encoding::Base62.alphabet();
    let mut value = crc32fast::hash(data.as_bytes());
    let mut out = [b'0'; LEN];
    for slot in out.iter_mut().rev() {
        // `value % 62 < 62`: the index is always in range.
        *slot = alphabet[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Whether `checksum` (the checksum characters, as bytes) is the checksum of `data`.
pub fn verify(data: &str, checksum: &[u8]) -> bool {
    compute(data) == checksum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // crc32("") = 0, crc32("123456789") = 0xCBF43926 = 3421780262.
        assert_eq!(&compute(""), b"000000");
        assert_eq!(&compute("123456789"), b"3jZRME");
        let mut value: u64 = 0;
        for &c in &compute("123456789") {
            let digit = Encoding::Base62.alphabet().iter().position(|&a| a == c);
            value = value * 62 + digit.map_or(0, |d| d as u64);
        }
        assert_eq!(value, 0xCBF4_3926);
    }

    #[test]
    fn verify_rejects_other_checksums() {
        let sum = compute("kota_free_");
        assert!(verify("kota_free_", &sum));
        assert!(!verify("kota_free-", &sum));
        assert!(!verify("kota_free_", &sum[..5]));
        assert!(!verify("kota_free_", b"0000000"));
    }
}
