//! A hash-map hasher for keys that are already uniformly random.

use std::hash::{BuildHasher, Hasher};

/// Hashes keys whose bytes are already uniformly random — SHA-256 digests of
/// generated keys, the random tail of UUID v7 key ids — by taking their last eight
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
            Some(tail) => self.0 ^= u64::from_le_bytes(*tail),
            None => bytes.iter().for_each(|b| self.0 = self.0.rotate_left(8) ^ u64::from(*b)),
        }
    }

    /// Slices hash their length first: it carries no information here.
    fn write_usize(&mut self, _: usize) {}
}
