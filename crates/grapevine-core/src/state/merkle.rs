//! A hash tree over the 64-bit key-hash space, for anti-entropy that costs what differs.
//!
//! Level `l` splits the key-hash space into 16^l equal ranges, range `i` holding the keys
//! whose hash starts with the `4l` bits of `i`. A range's hash is the wrapping sum of its
//! items' hashes, so a write updates one sum per level (O(depth)), and two replicas compare
//! roots, then the children of the ranges that differ, down to the leaves, whose items they
//! list: bytes and round trips grow with the divergence and the depth (log16 of the
//! keyspace), not with its size.
//!
//! The depth follows the number of items (about 16 per leaf, between 1 and [`MAX_DEPTH`]
//! levels below the root); the owner rebuilds the sums when it changes. Two trees of
//! different depths compare at the shallower depth: every level down to it is kept by both.

/// The deepest leaf level: 16^5 ≈ 1 M leaves (8 MiB of sums), enough for tens of millions of
/// keys at about 16 a leaf.
pub const MAX_DEPTH: u8 = 5;

/// Children per range.
pub const FANOUT: usize = 16;

/// Range sums for levels 0 (the root) to `depth`.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    depth: u8,
    /// `levels[l]` has 16^l sums.
    levels: Vec<Vec<u64>>,
    items: u64,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree::with_depth(1)
    }
}

/// The leaf depth suited to `items` items: about 16 per leaf.
pub fn depth_for(items: u64) -> u8 {
    let mut depth = 1u8;
    let mut leaves = FANOUT as u64;
    while depth < MAX_DEPTH && items > leaves * FANOUT as u64 {
        depth += 1;
        leaves *= FANOUT as u64;
    }
    depth
}

impl MerkleTree {
    /// An empty tree with leaves at `depth` (clamped to 1..=[`MAX_DEPTH`]).
    pub fn with_depth(depth: u8) -> Self {
        let depth = depth.clamp(1, MAX_DEPTH);
        MerkleTree {
            depth,
            levels: (0..=u32::from(depth))
                .map(|l| vec![0; FANOUT.pow(l)])
                .collect(),
            items: 0,
        }
    }

    /// A tree over `items` (key hash, item hash), at the depth their number calls for.
    pub fn build(items: impl Iterator<Item = (u64, u64)> + Clone) -> Self {
        let n = items.clone().count() as u64;
        let mut t = MerkleTree::with_depth(depth_for(n));
        for (k, h) in items {
            t.add(k, h);
        }
        t
    }

    /// The leaf level.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Number of items summed.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Whether the number of items calls for another depth (a rebuild): with hysteresis,
    /// so a keyspace hovering at a boundary does not rebuild at every write.
    pub fn wants_rebuild(&self) -> bool {
        let want = depth_for(self.items);
        want > self.depth || depth_for(self.items.saturating_mul(4)) < self.depth
    }

    /// The root hash: the sum of every item hash.
    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// The hash of range `idx` at `level`, if the tree keeps that level and range.
    pub fn hash(&self, level: u8, idx: u32) -> Option<u64> {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(idx as usize))
            .copied()
    }

    /// The range at `level` that holds `key_hash`.
    pub fn range_of(key_hash: u64, level: u8) -> u32 {
        if level == 0 {
            0
        } else {
            (key_hash >> (64 - 4 * u32::from(level))) as u32
        }
    }

    /// The key hashes of range `idx` at `level`, as an inclusive interval.
    pub fn span(level: u8, idx: u32) -> (u64, u64) {
        if level == 0 {
            return (0, u64::MAX);
        }
        let shift = 64 - 4 * u32::from(level);
        let lo = u64::from(idx) << shift;
        (lo, lo | ((1u64 << shift) - 1))
    }

    /// Adds an item.
    pub fn add(&mut self, key_hash: u64, item_hash: u64) {
        self.apply(key_hash, |s| s.wrapping_add(item_hash));
        self.items += 1;
    }

    /// Removes an item added before.
    pub fn remove(&mut self, key_hash: u64, item_hash: u64) {
        self.apply(key_hash, |s| s.wrapping_sub(item_hash));
        self.items = self.items.saturating_sub(1);
    }

    /// Replaces an item's hash.
    pub fn update(&mut self, key_hash: u64, old: u64, new: u64) {
        self.apply(key_hash, |s| s.wrapping_sub(old).wrapping_add(new));
    }

    fn apply(&mut self, key_hash: u64, f: impl Fn(u64) -> u64) {
        for (l, sums) in self.levels.iter_mut().enumerate() {
            let i = Self::range_of(key_hash, l as u8) as usize;
            if let Some(s) = sums.get_mut(i) {
                *s = f(*s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn depth_follows_the_item_count() {
        assert_eq!(depth_for(0), 1);
        assert_eq!(depth_for(256), 1);
        assert_eq!(depth_for(257), 2);
        assert_eq!(depth_for(1_000_000), 4);
        assert_eq!(depth_for(u64::MAX), MAX_DEPTH);
    }

    #[test]
    fn sums_are_consistent_across_levels_and_order_free() {
        let items: Vec<(u64, u64)> = (0..5000u64).map(|i| (mix(i), mix((i + 1) << 40))).collect();
        let t = MerkleTree::build(items.iter().copied());
        let mut rev = MerkleTree::with_depth(t.depth());
        for &(k, h) in items.iter().rev() {
            rev.add(k, h);
        }
        assert_eq!(t.root(), rev.root());
        for l in 0..t.depth() {
            for i in 0..FANOUT.pow(u32::from(l)) as u32 {
                let children: u64 = (0..FANOUT as u32)
                    .map(|c| t.hash(l + 1, i * 16 + c).unwrap())
                    .fold(0, u64::wrapping_add);
                assert_eq!(children, t.hash(l, i).unwrap());
            }
        }
    }

    #[test]
    fn one_change_touches_one_range_per_level() {
        let items: Vec<(u64, u64)> = (0..1000u64).map(|i| (mix(i), mix(!i))).collect();
        let a = MerkleTree::build(items.iter().copied());
        let mut b = a.clone();
        let (k, h) = items[17];
        b.update(k, h, h ^ 1);
        for l in 0..=a.depth() {
            let differing = (0..FANOUT.pow(u32::from(l)) as u32)
                .filter(|&i| a.hash(l, i) != b.hash(l, i))
                .collect::<Vec<_>>();
            assert_eq!(differing, vec![MerkleTree::range_of(k, l)]);
        }
        let (lo, hi) = MerkleTree::span(a.depth(), MerkleTree::range_of(k, a.depth()));
        assert!(lo <= k && k <= hi);
    }
}
