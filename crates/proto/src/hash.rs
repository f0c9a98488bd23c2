//! Keyed hashing from a seed the caller passes in: std's algorithm (SipHash-1-3) with keys
//! that do not come from the OS, so that a machine built from the same seed hashes, and so
//! lays out and iterates its tables, the same way on every run (reproducible simulations),
//! while a seed drawn from the OS keeps the keys secret from whoever chooses the addresses.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use siphasher::sip::SipHasher13;
use std::hash::BuildHasher;

/// A [`BuildHasher`] of SipHash-1-3 with fixed keys (what `std`'s `RandomState` does, with
/// keys from the OS instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeededState {
    k0: u64,
    k1: u64,
}

impl SeededState {
    /// Keys as given.
    pub const fn with_keys(k0: u64, k1: u64) -> Self {
        SeededState { k0, k1 }
    }

    /// `n` independent key pairs derived from a 32-byte seed (ChaCha20 stream), for the
    /// several tables of one machine.
    pub fn derive<const N: usize>(seed: [u8; 32]) -> [SeededState; N] {
        let mut rng = ChaCha20Rng::from_seed(seed);
        std::array::from_fn(|_| SeededState::with_keys(rng.next_u64(), rng.next_u64()))
    }
}

impl BuildHasher for SeededState {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_hashes_other_seed_other_hashes() {
        let [a, b] = SeededState::derive::<2>([1; 32]);
        let [a2, _] = SeededState::derive::<2>([1; 32]);
        let [c, _] = SeededState::derive::<2>([2; 32]);
        assert_eq!(a.hash_one(42u128), a2.hash_one(42u128));
        assert_ne!(a.hash_one(42u128), b.hash_one(42u128));
        assert_ne!(a.hash_one(42u128), c.hash_one(42u128));
    }
}
