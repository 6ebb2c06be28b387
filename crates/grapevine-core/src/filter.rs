//! A Bloom filter over record keys, carried by anti-entropy exchanges so each side
//! sends only the records the other probably lacks.
//!
//! Seeded per exchange: a false positive (a record wrongly taken as already held) only
//! delays that record to a later exchange with another seed, since the digests still differ.

/// Bits per element: about 1 % false positives with 7 hashes.
const BITS_PER_ELEMENT: usize = 10;
/// Hash functions.
const HASHES: u8 = 7;
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

    /// The bit positions of `key`: double hashing, reduced modulo the bit count.
    fn positions(&self, key: u64, seed: u64) -> impl Iterator<Item = usize> {
        let m = (self.bits.len() as u64) * 8;
        // A power of two (as this build makes them) is reduced with a mask; any other size
        // a peer sends still works, with a division.
        let pow2 = m.is_power_of_two();
        let h1 = mix(key ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let h2 = (h1.rotate_left(32)) | 1;
        (0..u64::from(self.hashes)).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            (if pow2 { h & (m - 1) } else { h % m }) as usize
        })
    }

    /// Adds `key` under `seed`.
    pub fn insert(&mut self, key: u64, seed: u64) {
        if self.bits.is_empty() {
            return;
        }
        for p in self.positions(key, seed) {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    /// Whether `key` was probably added under `seed` (never false for an added key).
    pub fn contains(&self, key: u64, seed: u64) -> bool {
        if self.bits.is_empty() {
            return false;
        }
        self.positions(key, seed)
            .all(|p| self.bits[p / 8] & (1 << (p % 8)) != 0)
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
        assert!(fp < 2_000, "{fp} false positives in 100,000");
        let other = (0..10_000u64)
            .filter(|k| f.contains(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 43))
            .count();
        assert!(
            other < 500,
            "another seed gives independent positions: {other}"
        );
    }
}
