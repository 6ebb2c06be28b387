//! A blocked Bloom filter over record keys, carried by anti-entropy exchanges so each
//! side sends only the records the other probably lacks.
//!
//! Blocked: all of a key's bits fall in one 64-bit word, so adding or testing a key is a
//! single memory access (a filter is built over a whole member table for every divergent
//! exchange). The price is a slightly higher false-positive rate than a classic filter.
//!
//! Seeded per exchange: a false positive (a record wrongly taken as already held) only
//! delays that record to a later exchange with another seed, since the digests still differ.

/// Bits per element: with 7 bits per key in 64-bit blocks, under 3 % false positives (the
/// test below measures it on 100,000 absent keys).
const BITS_PER_ELEMENT: usize = 10;
/// Hash functions.
const HASHES: u8 = 7;
/// The most bits a key may set: six-bit slices of one 64-bit hash.
pub const MAX_HASHES: u8 = 10;
/// The largest filter accepted, in bytes (8 Mbit: 800,000 members).
pub const MAX_FILTER_BYTES: usize = 1 << 20;

/// A Bloom filter of 64-bit keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Number of hash functions.
    pub hashes: u8,
    /// The bit array.
    pub bits: Vec<u8>,
}

/// splitmix64's finaliser: a fast, well-mixing 64-bit permutation.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Filter {
    /// An empty filter sized for `n` elements (a power of two of bytes, at least 10 bits each).
    pub fn with_capacity(n: usize) -> Self {
        let bytes = (n.max(64) * BITS_PER_ELEMENT)
            .div_ceil(8)
            .next_power_of_two()
            .min(MAX_FILTER_BYTES);
        Filter {
            hashes: HASHES,
            bits: vec![0; bytes],
        }
    }

    /// The word and the bit mask of `key` under `seed`: one mixed hash gives both, the
    /// word from its top 22 bits and up to seven bit positions from six-bit slices of its
    /// low 42; a second mix gives any further positions.
    fn locate(&self, key: u64, seed: u64) -> (usize, u64) {
        let words = (self.bits.len() / 8) as u64;
        let h = mix(key ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let top = h >> 42;
        let word = if words.is_power_of_two() {
            top & (words - 1)
        } else {
            top % words
        };
        let hashes = u32::from(self.hashes.min(MAX_HASHES));
        let mut mask = 0u64;
        for i in 0..hashes.min(7) {
            mask |= 1 << ((h >> (6 * i)) & 63);
        }
        if hashes > 7 {
            let g = mix(h);
            for i in 0..hashes - 7 {
                mask |= 1 << ((g >> (6 * i)) & 63);
            }
        }
        (word as usize, mask)
    }

    fn word(&self, w: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.bits[w * 8..w * 8 + 8]);
        u64::from_le_bytes(a)
    }

    /// Adds `key` under `seed`.
    pub fn insert(&mut self, key: u64, seed: u64) {
        if self.bits.len() < 8 {
            return;
        }
        let (w, mask) = self.locate(key, seed);
        let v = self.word(w) | mask;
        self.bits[w * 8..w * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Whether `key` was probably added under `seed` (never false for an added key).
    pub fn contains(&self, key: u64, seed: u64) -> bool {
        if self.bits.len() < 8 {
            return false;
        }
        let (w, mask) = self.locate(key, seed);
        self.word(w) & mask == mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut f = Filter::with_capacity(10_000);
        for k in 0..10_000u64 {
            f.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 42);
        }
        for k in 0..10_000u64 {
            assert!(f.contains(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 42));
        }
        let fp = (10_000..110_000u64)
            .filter(|k| f.contains(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 42))
            .count();
        assert!(fp < 3_000, "{fp} false positives in 100,000");
        let other = (0..10_000u64)
            .filter(|k| f.contains(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 43))
            .count();
        assert!(
            other < 500,
            "another seed gives independent positions: {other}"
        );
    }
}
