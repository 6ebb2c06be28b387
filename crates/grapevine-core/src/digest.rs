//! The membership digest: 1,024 bucket sums of record hashes, and their sum as the root.
//!
//! Kept up to date on every change in O(1), so an anti-entropy exchange starts with
//! an 8-byte root; only when roots differ are the bucket sums compared, and only the
//! records of differing buckets cross the wire. In steady state push-pull therefore
//! costs a constant few dozen bytes whatever the cluster size.

use crate::membership::messages::DIGEST_BUCKETS;

const DIGEST_BUCKET_BITS: u32 = DIGEST_BUCKETS.trailing_zeros();

/// Bucket sums and root of a member table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    buckets: Box<[u64; DIGEST_BUCKETS]>,
    root: u64,
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            buckets: Box::new([0; DIGEST_BUCKETS]),
            root: 0,
        }
    }
}

impl Digest {
    /// The bucket of a name hash.
    pub fn bucket(name_hash: u64) -> usize {
        (name_hash >> (64 - DIGEST_BUCKET_BITS)) as usize
    }

    pub(crate) fn add(&mut self, name_hash: u64, record_hash: u64) {
        let b = Self::bucket(name_hash);
        self.buckets[b] = self.buckets[b].wrapping_add(record_hash);
        self.root = self.root.wrapping_add(record_hash);
    }

    pub(crate) fn remove(&mut self, name_hash: u64, record_hash: u64) {
        let b = Self::bucket(name_hash);
        self.buckets[b] = self.buckets[b].wrapping_sub(record_hash);
        self.root = self.root.wrapping_sub(record_hash);
    }

    /// The root: equal on two nodes (almost surely) iff their tables are equal.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The bucket sums.
    pub fn buckets(&self) -> &[u64; DIGEST_BUCKETS] {
        &self.buckets
    }

    /// A bit mask of the buckets where `other` differs from this digest.
    pub fn diff(&self, other: &[u64]) -> [u8; DIGEST_BUCKETS / 8] {
        let mut mask = [0u8; DIGEST_BUCKETS / 8];
        for (i, mine) in self.buckets.iter().enumerate() {
            if other.get(i) != Some(mine) {
                mask[i / 8] |= 1 << (i % 8);
            }
        }
        mask
    }
}
