//! Conflict resolution for the shared keyspace: state-based CRDTs whose merge is
//! commutative, associative and idempotent, so replicas that have seen the same writes hold
//! the same value whatever the order and repetition in which the writes arrived.
//!
//! * [`Lww`]: last-write-wins on hybrid timestamps, ties by writer name.
//! * [`MvRegister`]: version vectors; concurrent writes are kept as siblings until a write
//!   that has seen them all replaces them (or an application [`Merge`] folds them).
//! * [`PnCounter`], [`MaxRegister`], [`EpochRegister`] (the higher epoch wins, ties by
//!   owner name, as Redis Cluster settles slot ownership), [`AwSet`] (add-wins set).

use super::hlc::Timestamp;
use crate::name::Name;
use std::collections::{BTreeMap, BTreeSet};

/// A version vector: for each writer, how many of its writes are included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionVector(pub BTreeMap<Name, u64>);

impl VersionVector {
    /// The count for `node` (zero if absent).
    pub fn get(&self, node: &Name) -> u64 {
        self.0.get(node).copied().unwrap_or(0)
    }

    /// Raises `node`'s count to at least `count`.
    pub fn observe(&mut self, node: &Name, count: u64) {
        let c = self.0.entry(node.clone()).or_insert(0);
        *c = (*c).max(count);
    }

    /// The pointwise maximum of `self` and `other`.
    pub fn merge(&mut self, other: &VersionVector) {
        for (n, &c) in &other.0 {
            self.observe(n, c);
        }
    }

    /// Whether every count of `other` is at most ours.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(n, &c)| self.get(n) >= c)
    }

    /// Whether neither covers the other: the writes were concurrent.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.covers(other) && !other.covers(self)
    }
}

/// A last-write-wins register. `value` is `None` for a delete (a tombstone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lww {
    /// When it was written.
    pub at: Timestamp,
    /// Who wrote it: breaks ties between equal timestamps.
    pub writer: Name,
    /// The value, or `None` once deleted.
    pub value: Option<Vec<u8>>,
    /// The hybrid-clock physical time (µs) after which the write counts as deleted: a TTL
    /// fixed by the writer, so every node expires it at the same moment of its own clock.
    pub expires_at: Option<u64>,
    /// Opaque flags the writer attached (Consul's KV `Flags`), carried with the value.
    pub flags: u64,
}

impl Lww {
    /// Keeps the later of the two writes (by timestamp, then writer, then value, so the
    /// outcome never depends on the order of arrival).
    pub fn merge(&mut self, other: &Lww) {
        let key = |l: &Lww| {
            (
                l.at,
                l.writer.clone(),
                l.value.clone(),
                l.expires_at,
                l.flags,
            )
        };
        if key(other) > key(self) {
            *self = other.clone();
        }
    }
}

/// A value of a multi-value register, with the version vector of the write.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sibling {
    /// The writes this one had seen, its own included.
    pub version: VersionVector,
    /// The value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// A multi-value register: concurrent writes survive side by side as siblings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MvRegister {
    /// The writes not overwritten by a later one, sorted.
    pub siblings: Vec<Sibling>,
}

impl MvRegister {
    /// The context a writer should send back with its next write: every sibling's version.
    pub fn context(&self) -> VersionVector {
        let mut vv = VersionVector::default();
        for s in &self.siblings {
            vv.merge(&s.version);
        }
        vv
    }

    /// A write by `writer` that has seen `context` (from [`MvRegister::context`]): it replaces
    /// the siblings the context covers and stands beside the others.
    pub fn write(&mut self, writer: &Name, context: &VersionVector, value: Option<Vec<u8>>) {
        let mut version = context.clone();
        // Above every count this writer has used, so the new write is never covered by an
        // older one of its own.
        let own = self
            .siblings
            .iter()
            .map(|s| s.version.get(writer))
            .max()
            .unwrap_or(0)
            .max(context.get(writer));
        version.0.insert(writer.clone(), own + 1);
        self.merge(&MvRegister {
            siblings: vec![Sibling { version, value }],
        });
    }

    /// The siblings' values folded by an application merge (deletes left out): how an
    /// application that would rather not see siblings reads the register.
    pub fn resolve(&self, merge: &dyn Merge) -> Option<Vec<u8>> {
        self.siblings
            .iter()
            .filter_map(|s| s.value.as_deref())
            .fold(None, |acc: Option<Vec<u8>>, v| {
                Some(match acc {
                    None => v.to_vec(),
                    Some(a) => merge.merge(&a, v),
                })
            })
    }

    /// Keeps every sibling of either side that no sibling of either side strictly covers.
    pub fn merge(&mut self, other: &MvRegister) {
        let mut all: Vec<Sibling> = self.siblings.drain(..).collect();
        all.extend(other.siblings.iter().cloned());
        all.sort();
        all.dedup();
        let keep: Vec<Sibling> = all
            .iter()
            .filter(|s| {
                !all.iter()
                    .any(|t| t.version != s.version && t.version.covers(&s.version))
            })
            .cloned()
            .collect();
        self.siblings = keep;
    }
}

/// An application's merge of two values of one key: it must be commutative, associative and
/// idempotent, or replicas may disagree for ever.
pub trait Merge: Send + Sync {
    /// The merge of `a` and `b`.
    fn merge(&self, a: &[u8], b: &[u8]) -> Vec<u8>;
}

/// A counter that goes up and down: per writer, the sums of its increments and decrements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PnCounter {
    /// Increments by writer.
    pub p: BTreeMap<Name, u64>,
    /// Decrements by writer.
    pub n: BTreeMap<Name, u64>,
}

impl PnCounter {
    /// Adds `delta` (negative to decrement) on behalf of `writer`.
    pub fn add(&mut self, writer: &Name, delta: i64) {
        let side = if delta >= 0 { &mut self.p } else { &mut self.n };
        let c = side.entry(writer.clone()).or_insert(0);
        *c = c.saturating_add(delta.unsigned_abs());
    }

    /// The counter's value.
    pub fn value(&self) -> i128 {
        let sum = |m: &BTreeMap<Name, u64>| m.values().map(|&v| i128::from(v)).sum::<i128>();
        sum(&self.p) - sum(&self.n)
    }

    /// Pointwise maximum per writer.
    pub fn merge(&mut self, other: &PnCounter) {
        for (side, theirs) in [(&mut self.p, &other.p), (&mut self.n, &other.n)] {
            for (w, &v) in theirs {
                let c = side.entry(w.clone()).or_insert(0);
                *c = (*c).max(v);
            }
        }
    }
}

/// A register that only grows: the largest value written wins.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct MaxRegister(pub i64);

impl MaxRegister {
    /// Keeps the larger.
    pub fn merge(&mut self, other: &MaxRegister) {
        self.0 = self.0.max(other.0);
    }
}

/// Ownership by epoch: the claim with the higher epoch wins, ties by owner name (then value),
/// as Redis Cluster settles a hash slot claimed by two masters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochRegister {
    /// The claim's epoch.
    pub epoch: u64,
    /// Who claims.
    pub owner: Name,
    /// What is claimed with it (an address, say).
    pub value: Vec<u8>,
}

impl EpochRegister {
    /// Keeps the winning claim.
    pub fn merge(&mut self, other: &EpochRegister) {
        if *other > *self {
            *self = other.clone();
        }
    }
}

/// A dot: the `counter`-th add made by `node`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    /// The node that added.
    pub node: Name,
    /// Its count of adds.
    pub counter: u64,
}

/// An add-wins set (an observed-remove set): a remove takes away only the adds it has seen,
/// so an add concurrent with a remove survives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwSet {
    /// Each present element with the adds that support it.
    pub elements: BTreeMap<Vec<u8>, BTreeSet<Dot>>,
    /// Every add seen, present or removed since.
    pub seen: VersionVector,
}

impl AwSet {
    /// Adds `element` on behalf of `node`.
    pub fn add(&mut self, node: &Name, element: Vec<u8>) {
        let counter = self.seen.get(node) + 1;
        self.seen.observe(node, counter);
        let dot = Dot {
            node: node.clone(),
            counter,
        };
        // The new add supersedes the ones seen here: keep only it.
        self.elements.insert(element, BTreeSet::from([dot]));
    }

    /// Removes `element`: the adds seen here are gone; concurrent ones elsewhere survive.
    pub fn remove(&mut self, element: &[u8]) {
        self.elements.remove(element);
    }

    /// Whether `element` is present.
    pub fn contains(&self, element: &[u8]) -> bool {
        self.elements.contains_key(element)
    }

    /// An add survives a merge if both sides hold it, or one holds it and the other has
    /// not seen it (so could not have removed it).
    pub fn merge(&mut self, other: &AwSet) {
        let mut keys: BTreeSet<Vec<u8>> = self.elements.keys().cloned().collect();
        keys.extend(other.elements.keys().cloned());
        let empty = BTreeSet::new();
        let mut merged = BTreeMap::new();
        for k in keys {
            let mine = self.elements.get(&k).unwrap_or(&empty);
            let theirs = other.elements.get(&k).unwrap_or(&empty);
            let dots: BTreeSet<Dot> = mine
                .iter()
                .filter(|d| theirs.contains(d) || other.seen.get(&d.node) < d.counter)
                .chain(
                    theirs
                        .iter()
                        .filter(|d| mine.contains(d) || self.seen.get(&d.node) < d.counter),
                )
                .cloned()
                .collect();
            if !dots.is_empty() {
                merged.insert(k, dots);
            }
        }
        self.elements = merged;
        self.seen.merge(&other.seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn lww_takes_the_later_write_and_breaks_ties_by_writer() {
        let mut a = Lww {
            at: Timestamp::new(10, 0),
            writer: n("a"),
            value: Some(b"1".to_vec()),
            expires_at: None,
            flags: 0,
        };
        let b = Lww {
            at: Timestamp::new(10, 0),
            writer: n("b"),
            value: Some(b"2".to_vec()),
            expires_at: None,
            flags: 0,
        };
        a.merge(&b);
        assert_eq!(a.value.as_deref(), Some(&b"2"[..]));
        let del = Lww {
            at: Timestamp::new(11, 0),
            writer: n("a"),
            value: None,
            expires_at: None,
            flags: 0,
        };
        a.merge(&del);
        assert_eq!(a.value, None);
    }

    #[test]
    fn concurrent_writes_become_siblings_until_a_write_that_saw_both() {
        let mut x = MvRegister::default();
        let mut y = MvRegister::default();
        x.write(&n("a"), &VersionVector::default(), Some(b"from a".to_vec()));
        y.write(&n("b"), &VersionVector::default(), Some(b"from b".to_vec()));
        x.merge(&y);
        assert_eq!(x.siblings.len(), 2);
        let ctx = x.context();
        x.write(&n("c"), &ctx, Some(b"resolved".to_vec()));
        assert_eq!(x.siblings.len(), 1);
        assert_eq!(x.siblings[0].value.as_deref(), Some(&b"resolved"[..]));
        // The stale sibling arriving again changes nothing.
        x.merge(&y);
        assert_eq!(x.siblings.len(), 1);
    }

    #[test]
    fn siblings_can_be_folded_by_an_application_merge() {
        struct Longest;
        impl Merge for Longest {
            fn merge(&self, a: &[u8], b: &[u8]) -> Vec<u8> {
                if (b.len(), b) > (a.len(), a) {
                    b.to_vec()
                } else {
                    a.to_vec()
                }
            }
        }
        let mut x = MvRegister::default();
        let mut y = MvRegister::default();
        x.write(&n("a"), &VersionVector::default(), Some(b"short".to_vec()));
        y.write(
            &n("b"),
            &VersionVector::default(),
            Some(b"longer one".to_vec()),
        );
        x.merge(&y);
        assert_eq!(x.siblings.len(), 2);
        assert_eq!(x.resolve(&Longest).as_deref(), Some(&b"longer one"[..]));
    }

    #[test]
    fn add_wins_over_a_concurrent_remove() {
        let mut a = AwSet::default();
        a.add(&n("a"), b"x".to_vec());
        let mut b = a.clone();
        b.remove(b"x");
        a.add(&n("a"), b"x".to_vec());
        let mut m = b.clone();
        m.merge(&a);
        assert!(m.contains(b"x"), "the re-add was not seen by the remove");
        // A remove that saw every add wins.
        let mut c = m.clone();
        c.remove(b"x");
        m.merge(&c);
        assert!(!m.contains(b"x"));
    }

    #[test]
    fn epoch_register_prefers_higher_epoch_then_owner() {
        let mut r = EpochRegister {
            epoch: 3,
            owner: n("b"),
            value: vec![],
        };
        r.merge(&EpochRegister {
            epoch: 3,
            owner: n("a"),
            value: vec![],
        });
        assert_eq!(r.owner, n("b"));
        r.merge(&EpochRegister {
            epoch: 4,
            owner: n("a"),
            value: vec![],
        });
        assert_eq!((r.epoch, r.owner.clone()), (4, n("a")));
    }

    #[test]
    fn pn_counter_sums_each_writers_contribution_once() {
        let mut a = PnCounter::default();
        a.add(&n("a"), 5);
        let mut b = PnCounter::default();
        b.add(&n("b"), -2);
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.value(), 3);
    }
}
