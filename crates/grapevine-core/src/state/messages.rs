//! Replicated state's messages: the steps of a tree exchange, and per-node state deltas.

use super::endpoint::{Delta, Held, Versioned};
use super::keyspace::Value;
use super::value;
use crate::name::Name;
use crate::wire::read_name;
use crate::wire::{Body, DecodeError, Reader, Writer};

/// Which replicated store a tree exchange is about: the shared keyspace.
pub const TREE_KEYSPACE: u8 = 0;
/// Which replicated store a tree exchange is about: the per-node states.
pub const TREE_NODES: u8 = 1;
/// The most keys one delta may carry.
pub const MAX_DELTA_ENTRIES: usize = 1 << 16;
/// The longest per-node key, in bytes.
pub const MAX_STATE_KEY_LEN: usize = 256;
/// The longest per-node value, in bytes (a member's whole state is bounded too, by
/// `max_node_state`).
pub const MAX_STATE_VALUE_LEN: usize = 64 * 1024;
/// The most ranges one tree message may name (every child of 4,096 differing ranges).
pub const MAX_TREE_RANGES: usize = 65_536;
/// The most item digests or wanted keys one tree message may carry.
pub const MAX_TREE_ITEMS: usize = 1 << 20;
/// The most entries one tree message may carry.
pub const MAX_TREE_ENTRIES: usize = 1 << 20;

/// Tree anti-entropy, one level down: the sender's hashes of `ranges` at `level` (each the
/// child of a range found differing one level up). No ranges: nothing differs, done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeHashes {
    /// The exchange.
    pub id: u32,
    /// The store ([`TREE_KEYSPACE`]).
    pub tree: u8,
    /// The sender's leaf level: the exchange descends to the shallower of the two.
    pub depth: u8,
    /// The level of the ranges.
    pub level: u8,
    /// (range index, hash).
    pub ranges: Vec<(u32, u64)>,
    /// The opening (level 0, from the initiator) names its sender, so the responder takes
    /// part only in exchanges opened by a live member from that member's address; `None`
    /// on every later step. Appended last: older readers skip it.
    pub sender: Option<Name>,
}

/// Tree anti-entropy at the leaves: the sender's (key hash, item hash) for every entry in
/// the leaf `ranges` at `level` that were found differing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeItems {
    /// The exchange.
    pub id: u32,
    /// The store.
    pub tree: u8,
    /// The level of the ranges.
    pub level: u8,
    /// The range indices.
    pub ranges: Vec<u32>,
    /// (key hash, item hash), sorted by key hash.
    pub items: Vec<(u64, u64)>,
    /// For per-node state, what the sender holds of each item's node, parallel to `items`
    /// (empty for the keyspace).
    pub held: Vec<Held>,
}

/// Tree anti-entropy of per-node state: deltas for the receiver, and the nodes the sender
/// wants, each with what it holds of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDeltas {
    /// The exchange.
    pub id: u32,
    /// Deltas, most-behind first.
    pub deltas: Vec<Delta>,
    /// (node hash, what the sender holds of it).
    pub want: Vec<(u64, Held)>,
}

/// Tree anti-entropy, the data: entries for the receiver to merge, and the key hashes of
/// the receiver's entries the sender wants back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntries {
    /// The exchange.
    pub id: u32,
    /// The store.
    pub tree: u8,
    /// (key, value).
    pub entries: Vec<(Vec<u8>, Value)>,
    /// Key hashes wanted.
    pub want: Vec<u64>,
}

fn write_held(w: &mut Writer, h: &Held) {
    w.u64(h.generation);
    w.u64(h.max_version);
    w.u64(h.heartbeat);
}

fn read_held(r: &mut Reader<'_>) -> Result<Held, DecodeError> {
    Ok(Held {
        generation: r.u64("held generation")?,
        max_version: r.u64("held version")?,
        heartbeat: r.u64("held heartbeat")?,
    })
}

fn write_delta(w: &mut Writer, d: &Delta) {
    w.lp(d.node.as_bytes());
    w.u64(d.generation);
    w.u64(d.heartbeat);
    w.u8(u8::from(d.reset));
    w.u64(d.gc_version);
    w.u64(d.max_version);
    w.varint(d.entries.len() as u32);
    for (k, v) in &d.entries {
        w.lp(k.as_bytes());
        w.lp(&v.value);
        w.u64(v.version);
        w.u8(u8::from(v.tombstone));
        match v.expires_at {
            Some(t) => {
                w.u8(1);
                w.u64(t);
            }
            None => w.u8(0),
        }
        w.u64(v.since);
    }
}

fn read_delta(r: &mut Reader<'_>) -> Result<Delta, DecodeError> {
    let node = read_name(r, "delta node")?;
    let generation = r.u64("delta generation")?;
    let heartbeat = r.u64("delta heartbeat")?;
    let reset = r.u8("delta reset flag")? != 0;
    let gc_version = r.u64("delta gc version")?;
    let max_version = r.u64("delta version")?;
    let n = r.count("delta entries", MAX_DELTA_ENTRIES, 20)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.str("state key", MAX_STATE_KEY_LEN)?.to_string();
        let len = r.len("state value", MAX_STATE_VALUE_LEN)?;
        let value = r.bytes(len, "state value")?.to_vec();
        let version = r.u64("state version")?;
        let tombstone = r.u8("tombstone flag")? != 0;
        let expires_at = match r.u8("expiry flag")? {
            0 => None,
            _ => Some(r.u64("expiry")?),
        };
        let since = r.u64("tombstone time")?;
        entries.push((
            key,
            Versioned {
                value,
                version,
                tombstone,
                expires_at,
                since,
            },
        ));
    }
    Ok(Delta {
        node,
        generation,
        heartbeat,
        reset,
        gc_version,
        max_version,
        entries,
    })
}

impl Body for TreeHashes {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        w.u8(self.tree);
        w.u8(self.depth);
        w.u8(self.level);
        w.varint(self.ranges.len() as u32);
        for (i, h) in &self.ranges {
            w.varint(*i);
            w.u64(*h);
        }
        if let Some(n) = &self.sender {
            w.lp(n.as_bytes());
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("tree id")?;
        let tree = r.u8("tree")?;
        let depth = r.u8("tree depth")?;
        let level = r.u8("tree level")?;
        let n = r.count("tree ranges", MAX_TREE_RANGES, 9)?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            ranges.push((r.varint("tree range")?, r.u64("tree hash")?));
        }
        let sender = if r.is_empty() {
            None
        } else {
            Some(read_name(r, "tree sender")?)
        };
        Ok(TreeHashes {
            id,
            tree,
            depth,
            level,
            ranges,
            sender,
        })
    }
}

impl Body for TreeItems {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        w.u8(self.tree);
        w.u8(self.level);
        w.varint(self.ranges.len() as u32);
        for i in &self.ranges {
            w.varint(*i);
        }
        w.varint(self.items.len() as u32);
        for (k, h) in &self.items {
            w.u64(*k);
            w.u64(*h);
        }
        w.varint(self.held.len() as u32);
        for h in &self.held {
            write_held(w, h);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("tree id")?;
        let tree = r.u8("tree")?;
        let level = r.u8("tree level")?;
        let n = r.count("tree ranges", MAX_TREE_RANGES, 1)?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            ranges.push(r.varint("tree range")?);
        }
        let n = r.count("tree items", MAX_TREE_ITEMS, 16)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push((r.u64("item key hash")?, r.u64("item hash")?));
        }
        let held = if r.is_empty() {
            Vec::new()
        } else {
            let n = r.count("held versions", MAX_TREE_ITEMS, 24)?;
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(read_held(r)?);
            }
            held
        };
        Ok(TreeItems {
            id,
            tree,
            level,
            ranges,
            items,
            held,
        })
    }
}

impl Body for StateDeltas {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        w.varint(self.deltas.len() as u32);
        for d in &self.deltas {
            write_delta(w, d);
        }
        w.varint(self.want.len() as u32);
        for (k, h) in &self.want {
            w.u64(*k);
            write_held(w, h);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("state id")?;
        let n = r.count("deltas", MAX_TREE_ENTRIES, 30)?;
        let mut deltas = Vec::with_capacity(n);
        for _ in 0..n {
            deltas.push(read_delta(r)?);
        }
        let n = r.count("wanted nodes", MAX_TREE_ITEMS, 32)?;
        let mut want = Vec::with_capacity(n);
        for _ in 0..n {
            want.push((r.u64("wanted node")?, read_held(r)?));
        }
        Ok(StateDeltas { id, deltas, want })
    }
}

impl Body for TreeEntries {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        w.u8(self.tree);
        w.varint(self.entries.len() as u32);
        for (k, v) in &self.entries {
            value::write_entry(w, k, v);
        }
        w.varint(self.want.len() as u32);
        for k in &self.want {
            w.u64(*k);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("tree id")?;
        let tree = r.u8("tree")?;
        let n = r.count("tree entries", MAX_TREE_ENTRIES, 3)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(value::read_entry(r)?);
        }
        let n = r.count("wanted keys", MAX_TREE_ITEMS, 8)?;
        let mut want = Vec::with_capacity(n);
        for _ in 0..n {
            want.push(r.u64("wanted key")?);
        }
        Ok(TreeEntries {
            id,
            tree,
            entries,
            want,
        })
    }
}
