//! What a ping tells its target about the prober's data, so that anti-entropy runs only where
//! it will find something.
//!
//! Every ping carries one byte per root the prober holds (its membership digest, its copies
//! of per-node state, the shared keyspace): the root's hash salted with the ping's sequence
//! number. Equal roots always give equal bytes. Different roots give different bytes with
//! probability 255/256, and since every ping draws a new salt, a difference survives k pings
//! unseen with probability 256⁻ᵏ. A node is pinged about twice a second in `lan`, so a
//! difference between neighbours shows within a second, for three bytes a ping (four with
//! their length): an idle cluster needs no exchange rounds at all to know it is idle.

use crate::detection::messages::Fingerprints;
use crate::time::Time;
use std::time::Duration;

/// The roots of a node's replicated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roots {
    /// The membership digest's root.
    pub membership: u64,
    /// The root of the tree over per-node states.
    pub nodes: u64,
    /// The root of the shared keyspace's tree.
    pub keyspace: u64,
}

/// Which of a peer's roots agree with this node's, as far as one ping could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// The membership tables look equal.
    pub membership: bool,
    /// The per-node states look equal.
    pub nodes: bool,
    /// The shared keyspaces look equal.
    pub keyspace: bool,
}

impl Roots {
    /// The fingerprints a ping with sequence number `salt` carries.
    pub fn fingerprints(&self, salt: u32) -> Fingerprints {
        Fingerprints([
            print(self.membership, salt, 0),
            print(self.nodes, salt, 1),
            print(self.keyspace, salt, 2),
        ])
    }

    /// Compares a peer's fingerprints, made with `salt`, with this node's roots.
    pub fn compare(&self, salt: u32, theirs: &Fingerprints) -> Comparison {
        let mine = self.fingerprints(salt).0;
        Comparison {
            membership: mine[0] == theirs.0[0],
            nodes: mine[1] == theirs.0[1],
            keyspace: mine[2] == theirs.0[2],
        }
    }
}

fn print(root: u64, salt: u32, which: u8) -> u8 {
    let seed = u64::from(salt) << 8 | u64::from(which);
    xxhash_rust::xxh3::xxh3_64_with_seed(&root.to_le_bytes(), seed) as u8
}

/// Whether the latest comparisons agreed: if the last few in a row did, and recently, a
/// periodic exchange has nothing to find and is skipped. A difference seen earlier and
/// followed by agreement was settled meanwhile (by gossip, or by the exchange it caused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    agreeing: u32,
    last: Time,
}

/// Comparisons in a row that must agree: one may agree by chance (1 in 256) where roots
/// differ, two only 1 in 65,536.
const AGREEING: u32 = 2;

impl Coverage {
    /// Records one comparison made at `now`.
    pub fn record(&mut self, now: Time, agreed: bool) {
        self.agreeing = if agreed {
            self.agreeing.saturating_add(1)
        } else {
            0
        };
        self.last = now;
    }

    /// Whether the last comparisons agreed, the latest of them within `window` of `now`.
    pub fn covered(&self, now: Time, window: Duration) -> bool {
        self.agreeing >= AGREEING && now.saturating_since(self.last) <= window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(m: u64, n: u64, k: u64) -> Roots {
        Roots {
            membership: m,
            nodes: n,
            keyspace: k,
        }
    }

    #[test]
    fn equal_roots_always_agree() {
        let a = roots(1, 2, 3);
        for salt in 0..10_000 {
            let c = a.compare(salt, &a.fingerprints(salt));
            assert!(c.membership && c.nodes && c.keyspace);
        }
    }

    #[test]
    fn a_difference_is_seen_at_almost_every_salt_and_only_in_its_root() {
        let (a, b) = (roots(1, 2, 3), roots(1, 2, 4));
        let mut seen = 0;
        for salt in 0..10_000 {
            let c = a.compare(salt, &b.fingerprints(salt));
            assert!(c.membership && c.nodes);
            seen += u32::from(!c.keyspace);
        }
        // 255/256 of 10,000 is 9,961; a fixed, unsalted byte would give 0 or 10,000.
        assert!((9_900..10_000).contains(&seen), "{seen}");
    }

    #[test]
    fn coverage_needs_recent_agreement_in_a_row() {
        let mut c = Coverage::default();
        let t = Time::ZERO + Duration::from_secs(10);
        let w = Duration::from_secs(1);
        assert!(!c.covered(t, w));
        c.record(t, true);
        assert!(!c.covered(t, w), "one agreement may be chance");
        c.record(t, true);
        assert!(c.covered(t, w));
        assert!(!c.covered(t + Duration::from_secs(2), w), "stale");
        c.record(t, false);
        assert!(!c.covered(t, w));
        c.record(t, true);
        c.record(t, true);
        assert!(c.covered(t, w), "a settled difference no longer counts");
    }
}
