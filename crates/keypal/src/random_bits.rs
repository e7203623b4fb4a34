//! A hash-map hasher for keys that are already uniformly random.

use std::hash::{BuildHasher, Hasher};

/// Spreads the random bits of `x` over all 64 bits. A UUID v7's last eight bytes
/// start with its variant and counter bits; hash tables read both the low bits
/// (bucket) and the high bits (tag), so every output bit must depend on the random ones.
fn spread(x: u64) -> u64 {
    (x ^ x.rotate_right(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Hashes keys whose bytes are already uniformly random — SHA-256 digests of
/// generated keys, the random tail of UUID v7 key ids — by spreading their last eight
/// bytes, instead of running SipHash over them on every lookup.
///
/// Only keys keypal generated itself are inserted under such hashes, so nobody can
/// crowd a bucket; a lookup of a chosen value costs one probe sequence like any other.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RandomBits;

impl BuildHasher for RandomBits {
    type Hasher = RandomBitsHasher;

    fn build_hasher(&self) -> RandomBitsHasher {
        RandomBitsHasher(0)
    }
}

#[derive(Debug)]
pub(crate) struct RandomBitsHasher(u64);

impl Hasher for RandomBitsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.last_chunk::<8>() {
            Some(tail) => self.0 ^= spread(u64::from_le_bytes(*tail)),
            None => bytes.iter().for_each(|b| self.0 = spread(self.0 ^ u64::from(*b))),
        }
    }

    /// Slices hash their length first: it carries no information here.
    fn write_usize(&mut self, _: usize) {}
}
