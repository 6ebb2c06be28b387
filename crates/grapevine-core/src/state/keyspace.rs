//! The shared keyspace: keys any member may write, each resolved by the policy of its
//! prefix, summed into a Merkle tree for anti-entropy.
//!
//! Deletes and expiries (last-write-wins keys only) are tombstones: a write of no value, or
//! a value past its `expires_at`. A tombstone is collected once its timestamp is older than
//! the grace period. A node that was cut off for longer may still hold a value deleted and
//! collected meanwhile; to keep it from coming back, a write older than the grace period for
//! a key this node does not hold is refused and answered with a tombstone at the horizon,
//! which is later than it. So the grace period must exceed the longest partition after which
//! writes should survive (as Cassandra's `gc_grace_seconds`); older writes that never spread
//! are taken as deleted.

use super::crdt::{Lww, Merge};
use super::hlc::Timestamp;
use super::merkle::MerkleTree;
pub use super::value::Value;
use crate::name::Name;
use crate::wire::Writer;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// How concurrent writes to a key are resolved.
#[derive(Clone)]
pub enum Policy {
    /// Last write wins, by hybrid timestamp, ties by writer name.
    Lww,
    /// Version vectors: concurrent writes kept as siblings.
    MultiValue,
    /// The application's merge of whole values.
    Merge(Arc<dyn Merge>),
    /// A PN-counter.
    Counter,
    /// A max register.
    Max,
    /// An epoch register.
    Epoch,
    /// An add-wins set.
    Set,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Lww => "Lww",
            Policy::MultiValue => "MultiValue",
            Policy::Merge(_) => "Merge",
            Policy::Counter => "Counter",
            Policy::Max => "Max",
            Policy::Epoch => "Epoch",
            Policy::Set => "Set",
        })
    }
}

/// What happened to a remote entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The local value changed.
    Changed,
    /// The local value already covered it.
    Unchanged,
    /// Older than the grace period and unknown here: refused; the tombstone to answer with.
    Refused(Value),
}

/// A key as stored, with its item hash.
#[derive(Clone, Debug)]
struct Stored {
    key: Vec<u8>,
    value: Value,
    hash: u64,
    /// The keyspace's change count when this entry last changed here (local, not
    /// replicated: Consul's `ModifyIndex`, for check-and-set and watches).
    modified: u64,
}

/// The shared keyspace of one node.
#[derive(Clone, Debug)]
pub struct Keyspace {
    /// By (key hash, key): a Merkle range is a contiguous run.
    entries: BTreeMap<(u64, Vec<u8>), Stored>,
    tree: MerkleTree,
    /// Policies by key prefix, longest first.
    policies: Vec<(Vec<u8>, Policy)>,
    grace_micros: u64,
    /// Changes made here so far, local writes and merges alike.
    changes: u64,
}

/// A key's hash: its place in the tree.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// An entry's item hash: equal on two nodes iff they hold the same key and state.
pub fn item_hash(key: &[u8], v: &Value) -> u64 {
    let mut w = Writer::with_capacity(64);
    super::value::write_entry(&mut w, key, v);
    xxhash_rust::xxh3::xxh3_64(&w.buf)
}

impl Keyspace {
    /// An empty keyspace whose tombstones are collected `grace_micros` after their write.
    pub fn new(grace_micros: u64) -> Self {
        Keyspace {
            entries: BTreeMap::new(),
            tree: MerkleTree::default(),
            policies: Vec::new(),
            grace_micros,
            changes: 0,
        }
    }

    /// Resolves keys starting with `prefix` by `policy` (the longest matching prefix wins;
    /// keys matching none are last-write-wins).
    pub fn set_policy(&mut self, prefix: &[u8], policy: Policy) {
        self.policies.retain(|(p, _)| p != prefix);
        self.policies.push((prefix.to_vec(), policy));
        self.policies.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    /// The policy of `key`.
    pub fn policy(&self, key: &[u8]) -> &Policy {
        self.policies
            .iter()
            .find(|(p, _)| key.starts_with(p))
            .map_or(&Policy::Lww, |(_, pol)| pol)
    }

    /// How many changes this keyspace has seen (local writes and merges): grows with every
    /// change, so a watcher waits for it to pass the value it last saw.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The change count when `key` last changed here, if it is held.
    pub fn modified(&self, key: &[u8]) -> Option<u64> {
        self.entries
            .get(&(key_hash(key), key.to_vec()))
            .map(|s| s.modified)
    }

    /// The Merkle tree over the entries.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Number of entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, unless deleted or expired at `now` (hybrid physical µs).
    pub fn get(&self, key: &[u8], now: u64) -> Option<&Value> {
        self.raw(key).filter(|v| !v.is_gone(now))
    }

    /// The value of `key` as held, tombstones included.
    pub fn raw(&self, key: &[u8]) -> Option<&Value> {
        self.entries
            .get(&(key_hash(key), key.to_vec()))
            .map(|s| &s.value)
    }

    /// Every live entry, in key-hash order.
    pub fn iter(&self, now: u64) -> impl Iterator<Item = (&[u8], &Value)> {
        self.entries
            .values()
            .filter(move |s| !s.value.is_gone(now))
            .map(|s| (s.key.as_slice(), &s.value))
    }

    /// Every entry, tombstones included, that changed here after change count `after`, with
    /// the count at its change: what a watcher that last saw `after` has missed.
    pub fn changed_since(&self, after: u64) -> impl Iterator<Item = (&[u8], &Value, u64)> {
        self.entries
            .values()
            .filter(move |s| s.modified > after)
            .map(|s| (s.key.as_slice(), &s.value, s.modified))
    }

    /// (key hash, item hash) of the entries in range `idx` of tree level `level`.
    pub fn items_in(&self, level: u8, idx: u32) -> Vec<(u64, u64)> {
        let (lo, hi) = MerkleTree::span(level, idx);
        self.entries
            .range((lo, Vec::new())..)
            .take_while(|((h, _), _)| *h <= hi)
            .map(|((h, _), s)| (*h, s.hash))
            .collect()
    }

    /// The entries whose key hash is `h` (one, barring a collision).
    pub fn by_hash(&self, h: u64) -> impl Iterator<Item = (&[u8], &Value)> {
        self.entries
            .range((h, Vec::new())..)
            .take_while(move |((k, _), _)| *k == h)
            .map(|(_, s)| (s.key.as_slice(), &s.value))
    }

    /// Merges `value` into `key` (a local write or a remote entry), at hybrid physical
    /// time `now`.
    pub fn apply(&mut self, key: &[u8], value: &Value, now: u64) -> Applied {
        let h = key_hash(key);
        let custom = match self.policy(key) {
            Policy::Merge(m) => Some(m.clone()),
            _ => None,
        };
        let slot = (h, key.to_vec());
        match self.entries.get_mut(&slot) {
            Some(s) => {
                let mut merged = s.value.clone();
                merged.merge(value, custom.as_deref());
                if merged == s.value {
                    return Applied::Unchanged;
                }
                let new = item_hash(key, &merged);
                self.tree.update(h, s.hash, new);
                self.changes += 1;
                s.value = merged;
                s.hash = new;
                s.modified = self.changes;
            }
            None => {
                let horizon = now.saturating_sub(self.grace_micros);
                if value.written_at().is_some_and(|t| t < horizon) {
                    return Applied::Refused(Value::Lww(Lww {
                        at: Timestamp::new(horizon, 0),
                        writer: horizon_writer(),
                        value: None,
                        expires_at: None,
                        flags: 0,
                    }));
                }
                let hash = item_hash(key, value);
                self.tree.add(h, hash);
                self.changes += 1;
                self.entries.insert(
                    slot,
                    Stored {
                        key: key.to_vec(),
                        value: value.clone(),
                        hash,
                        modified: self.changes,
                    },
                );
                self.maybe_rebuild();
            }
        }
        Applied::Changed
    }

    /// Removes tombstones and expired values older than the grace period; returns how many.
    pub fn collect(&mut self, now: u64) -> usize {
        let horizon = now.saturating_sub(self.grace_micros);
        let gone: Vec<(u64, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|(_, s)| {
                s.value.is_gone(now) && s.value.gone_since().is_some_and(|t| t < horizon)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            if let Some(s) = self.entries.remove(k) {
                self.tree.remove(k.0, s.hash);
                self.changes += 1;
            }
        }
        self.maybe_rebuild();
        gone.len()
    }

    fn maybe_rebuild(&mut self) {
        if self.tree.wants_rebuild() {
            self.tree = MerkleTree::build(self.entries.iter().map(|((h, _), s)| (*h, s.hash)));
        }
    }
}

/// The writer named on horizon tombstones: sorts before any member name, so a real delete
/// at the same instant wins.
fn horizon_writer() -> Name {
    Name::new("\u{0}").unwrap_or_else(|_| unreachable!("a one-byte name is valid"))
}

/// A last-write-wins write of `value` (or a delete, with `None`) by `writer` at `at`.
pub fn lww(at: Timestamp, writer: &Name, value: Option<Vec<u8>>, expires_at: Option<u64>) -> Value {
    Value::Lww(Lww {
        at,
        writer: writer.clone(),
        value,
        expires_at,
        flags: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    const GRACE: u64 = 1_000_000;

    #[test]
    fn writes_merge_and_the_tree_follows_the_entries() {
        let mut a = Keyspace::new(GRACE);
        let mut b = Keyspace::new(GRACE);
        let w1 = lww(Timestamp::new(10, 0), &n("x"), Some(b"1".to_vec()), None);
        let w2 = lww(Timestamp::new(20, 0), &n("y"), Some(b"2".to_vec()), None);
        assert_eq!(a.apply(b"k", &w1, 10), Applied::Changed);
        assert_eq!(a.apply(b"k", &w2, 20), Applied::Changed);
        assert_eq!(b.apply(b"k", &w2, 20), Applied::Changed);
        assert_eq!(b.apply(b"k", &w1, 20), Applied::Unchanged);
        assert_eq!(a.tree().root(), b.tree().root());
        assert_eq!(a.get(b"k", 20), Some(&w2));
    }

    /// An application merge: the union of comma-separated items, sorted (commutative,
    /// associative, idempotent).
    struct Union;
    impl Merge for Union {
        fn merge(&self, a: &[u8], b: &[u8]) -> Vec<u8> {
            let mut items: Vec<&[u8]> = a
                .split(|&c| c == b',')
                .chain(b.split(|&c| c == b','))
                .filter(|i| !i.is_empty())
                .collect();
            items.sort();
            items.dedup();
            items.join(&b',')
        }
    }

    #[test]
    fn an_application_merge_resolves_its_prefix_in_any_order() {
        let writes = [b"b,c".to_vec(), b"a".to_vec(), b"c,d".to_vec()];
        let mut roots = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut k = Keyspace::new(GRACE);
            k.set_policy(b"tags/", Policy::Merge(Arc::new(Union)));
            for i in order {
                k.apply(b"tags/web", &Value::Custom(writes[i].clone()), 1);
            }
            assert_eq!(
                k.get(b"tags/web", 1),
                Some(&Value::Custom(b"a,b,c,d".to_vec()))
            );
            roots.push(k.tree().root());
        }
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn every_change_is_counted_and_entries_remember_theirs() {
        let mut k = Keyspace::new(GRACE);
        let w = |t: u64, v: &[u8]| lww(Timestamp::new(t, 0), &n("x"), Some(v.to_vec()), None);
        k.apply(b"a", &w(1, b"1"), 1);
        k.apply(b"b", &w(1, b"1"), 1);
        assert_eq!(
            (k.changes(), k.modified(b"a"), k.modified(b"b")),
            (2, Some(1), Some(2))
        );
        assert_eq!(k.apply(b"a", &w(1, b"1"), 1), Applied::Unchanged);
        assert_eq!(k.changes(), 2, "no change, no count");
        k.apply(b"a", &w(2, b"2"), 2);
        assert_eq!((k.changes(), k.modified(b"a")), (3, Some(3)));
    }

    #[test]
    fn policies_go_by_longest_prefix() {
        let mut k = Keyspace::new(GRACE);
        k.set_policy(b"c/", Policy::Counter);
        k.set_policy(b"c/max/", Policy::Max);
        assert!(matches!(k.policy(b"c/hits"), Policy::Counter));
        assert!(matches!(k.policy(b"c/max/x"), Policy::Max));
        assert!(matches!(k.policy(b"other"), Policy::Lww));
    }

    #[test]
    fn tombstones_are_collected_and_old_writes_do_not_come_back() {
        let mut k = Keyspace::new(GRACE);
        let put = lww(Timestamp::new(100, 0), &n("x"), Some(b"v".to_vec()), None);
        let del = lww(Timestamp::new(200, 0), &n("x"), None, None);
        k.apply(b"k", &put, 100);
        k.apply(b"k", &del, 200);
        assert_eq!(k.get(b"k", 300), None);
        assert_eq!(k.collect(200 + GRACE), 0, "not before the grace period");
        assert_eq!(k.collect(201 + GRACE), 1);
        assert!(k.is_empty());
        assert_eq!(k.tree().root(), 0);
        // A node cut off since before the delete offers the old value: refused, with a
        // tombstone that beats it.
        match k.apply(b"k", &put, 300 + GRACE) {
            Applied::Refused(t) => {
                let mut stale = put.clone();
                stale.merge(&t, None);
                assert!(stale.is_gone(300 + GRACE));
            }
            other => panic!("{other:?}"),
        }
        assert!(k.is_empty());
    }

    #[test]
    fn expired_values_vanish_then_are_collected() {
        let mut k = Keyspace::new(GRACE);
        let v = lww(
            Timestamp::new(100, 0),
            &n("x"),
            Some(b"v".to_vec()),
            Some(500),
        );
        k.apply(b"k", &v, 100);
        assert!(k.get(b"k", 499).is_some());
        assert!(k.get(b"k", 500).is_none());
        assert_eq!(k.collect(500 + GRACE), 0);
        assert_eq!(k.collect(501 + GRACE), 1);
    }

    #[test]
    fn the_tree_deepens_as_the_keyspace_grows() {
        let mut k = Keyspace::new(GRACE);
        for i in 0..5000u32 {
            let v = lww(
                Timestamp::new(1, 0),
                &n("x"),
                Some(i.to_le_bytes().to_vec()),
                None,
            );
            k.apply(format!("key{i}").as_bytes(), &v, 1);
        }
        assert_eq!(k.tree().depth(), 3);
        let rebuilt = MerkleTree::build(k.entries.iter().map(|((h, _), s)| (*h, s.hash)));
        assert_eq!(rebuilt.root(), k.tree().root());
        let leaf = MerkleTree::range_of(key_hash(b"key7"), 3);
        assert!(k
            .items_in(3, leaf)
            .iter()
            .any(|(h, _)| *h == key_hash(b"key7")));
    }
}
