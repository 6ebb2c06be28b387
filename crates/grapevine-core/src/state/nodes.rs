//! Every node's per-node state as held here, summed into a Merkle tree by node name, so an
//! exchange finds the nodes whose copies differ without listing them all: in steady state it
//! costs one root comparison, whatever the cluster size.

use super::endpoint::{Delta, Held, NodeState};
use super::merkle::MerkleTree;
use crate::name::Name;
use std::collections::BTreeMap;

/// A node's place in the tree: the hash of its name.
pub fn node_hash(name: &Name) -> u64 {
    name.hash64()
}

/// A copy's item hash: equal on two holders iff they hold the same generation, version and
/// heartbeat.
fn item_hash(name: &Name, h: Held) -> u64 {
    let mut buf = Vec::with_capacity(name.as_bytes().len() + 24);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&h.generation.to_le_bytes());
    buf.extend_from_slice(&h.max_version.to_le_bytes());
    buf.extend_from_slice(&h.heartbeat.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// The per-node states held by one node (its own among them).
#[derive(Clone, Debug, Default)]
pub struct NodeStates {
    states: BTreeMap<(u64, Name), NodeState>,
    tree: MerkleTree,
}

impl NodeStates {
    /// No state held.
    pub fn new() -> Self {
        NodeStates::default()
    }

    /// The tree over the copies.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Number of nodes whose state is held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The copy of `name`'s state.
    pub fn get(&self, name: &Name) -> Option<&NodeState> {
        self.states.get(&(node_hash(name), name.clone()))
    }

    /// Every copy, in tree order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &NodeState)> {
        self.states.iter().map(|((_, n), s)| (n, s))
    }

    /// Changes `name`'s copy through `f` (creating an empty one if needed), keeping the tree
    /// right; returns what `f` returned.
    pub fn update<R>(&mut self, name: &Name, f: impl FnOnce(&mut NodeState) -> R) -> R {
        let h = node_hash(name);
        let slot = (h, name.clone());
        let (existed, before) = match self.states.get(&slot) {
            Some(s) => (true, item_hash(name, s.held())),
            None => (false, 0),
        };
        let state = self.states.entry(slot).or_default();
        let out = f(state);
        let after = item_hash(name, state.held());
        if existed {
            self.tree.update(h, before, after);
        } else {
            self.tree.add(h, after);
            if self.tree.wants_rebuild() {
                self.rebuild();
            }
        }
        out
    }

    /// Forgets `name`'s state (a member reaped from the membership).
    pub fn remove(&mut self, name: &Name) -> Option<NodeState> {
        let h = node_hash(name);
        let s = self.states.remove(&(h, name.clone()))?;
        self.tree.remove(h, item_hash(name, s.held()));
        if self.tree.wants_rebuild() {
            self.rebuild();
        }
        Some(s)
    }

    /// Collects, in every copy, tombstones made before `horizon`; returns how many. What a
    /// copy holds (generation, version, heartbeat) is unchanged, so the tree is too.
    pub fn collect(&mut self, horizon: u64) -> usize {
        self.states.values_mut().map(|s| s.collect(horizon)).sum()
    }

    /// Applies a delta received for `d.node`; returns whether the copy changed.
    pub fn apply(&mut self, d: &Delta) -> bool {
        self.update(&d.node, |s| s.apply(d))
    }

    /// (node hash, item hash, what is held) of the copies in range `idx` of `level`.
    pub fn items_in(&self, level: u8, idx: u32) -> Vec<(u64, u64, Held, Name)> {
        let (lo, hi) = MerkleTree::span(level, idx);
        let first = Name::new("\u{0}").unwrap_or_else(|_| unreachable!("a valid name"));
        self.states
            .range((lo, first)..)
            .take_while(|((h, _), _)| *h <= hi)
            .map(|((h, n), s)| (*h, item_hash(n, s.held()), s.held(), n.clone()))
            .collect()
    }

    /// The names held whose hash is `h` (one, barring a collision).
    pub fn names_by_hash(&self, h: u64) -> Vec<Name> {
        let first = Name::new("\u{0}").unwrap_or_else(|_| unreachable!("a valid name"));
        self.states
            .range((h, first)..)
            .take_while(|((k, _), _)| *k == h)
            .map(|((_, n), _)| n.clone())
            .collect()
    }

    fn rebuild(&mut self) {
        self.tree = MerkleTree::build(
            self.states
                .iter()
                .map(|((h, n), s)| (*h, item_hash(n, s.held()))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn the_tree_tracks_every_copy() {
        let mut a = NodeStates::new();
        let mut b = NodeStates::new();
        for i in 0..600 {
            let name = n(&format!("node-{i}"));
            a.update(&name, |s| s.set("k", vec![1], None, 0));
        }
        for (name, s) in a.iter() {
            let d = s.delta_for(name, Held::default(), usize::MAX).unwrap();
            b.apply(&d);
        }
        assert_eq!(a.tree().root(), b.tree().root());
        assert_eq!(a.tree().depth(), 2);
        b.update(&n("node-3"), |s| s.beat());
        assert_ne!(a.tree().root(), b.tree().root());
        let leaf = MerkleTree::range_of(node_hash(&n("node-3")), 2);
        let items = b.items_in(2, leaf);
        assert!(items
            .iter()
            .any(|(_, _, h, name)| *name == n("node-3") && h.heartbeat == 1));
        b.remove(&n("node-3"));
        a.remove(&n("node-3"));
        assert_eq!(a.tree().root(), b.tree().root());
    }
}
