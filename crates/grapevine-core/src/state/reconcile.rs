//! Tree anti-entropy between two replicas of the shared keyspace: compare roots, descend
//! where hashes differ, list the items of the differing leaves, then send and fetch only
//! the entries that differ.
//!
//! The initiator opens with its root ([`open`]); each side answers the other's message
//! with [`Exchange::step`] until a message needs no answer:
//!
//! 1. `TreeHashes` at level l: the receiver compares each range with its own. Above the
//!    leaf level (the shallower of the two trees), it answers with its hashes of the
//!    children of the ranges that differ; at the leaf level, with `TreeItems`, its item
//!    digests in those ranges. Nothing differs: an empty `TreeHashes` ends the exchange.
//! 2. `TreeItems`: the receiver compares item digests. It sends the entries it holds that
//!    the other lacks or holds otherwise, and asks for the converse, as the mode allows.
//! 3. `TreeEntries`: the receiver merges the entries and sends what was asked for, with
//!    tombstones for writes it refused as older than its grace period.
//!
//! Messages descend one level each, so an exchange over a tree of depth d takes about
//! d/2 + 2 round trips, and its bytes grow with the number of differing keys times d.
//!
//! Every message is bounded, whatever the size of the stores: entries sent and entries
//! asked for stop at the exchange's byte budget, item digests at [`MAX_ITEMS_PER_MESSAGE`]
//! (a window that moves from exchange to exchange), wanted keys at [`MAX_WANT`]. What does
//! not fit goes in the next exchange, which finds it still differing: any amount of state
//! converges, a chunk at a time, and no message outgrows what a receiver accepts.

use super::endpoint::{Delta, Held};
use super::keyspace::{Applied, Keyspace, Value};
use super::merkle::{MerkleTree, FANOUT};
use super::nodes::NodeStates;
use crate::message::Message;
use crate::name::Name;
use crate::state::messages::{
    StateDeltas, TreeEntries, TreeHashes, TreeItems, TREE_KEYSPACE, TREE_NODES,
};
use std::collections::BTreeMap;

/// Which way entries flow, as seen from the initiator.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The initiator sends what the responder lacks.
    Push,
    /// The initiator fetches what it lacks.
    Pull,
    /// Both.
    PushPull,
}

impl Mode {
    fn sends(self, initiator: bool) -> bool {
        match self {
            Mode::PushPull => true,
            Mode::Push => initiator,
            Mode::Pull => !initiator,
        }
    }
}

/// The message that opens exchange `id` of the shared keyspace: the initiator's root.
pub fn open(ks: &Keyspace, id: u32) -> Message {
    open_tree(ks.tree(), TREE_KEYSPACE, id)
}

/// The message that opens exchange `id` of the per-node states.
pub fn open_nodes(nodes: &NodeStates, id: u32) -> Message {
    open_tree(nodes.tree(), TREE_NODES, id)
}

fn open_tree(t: &MerkleTree, tree: u8, id: u32) -> Message {
    Message::TreeHashes(TreeHashes {
        id,
        tree,
        depth: t.depth(),
        level: 0,
        ranges: vec![(0, t.root())],
        sender: None,
    })
}

/// The most item digests one `TreeItems` carries (16 bytes each: 1 MiB).
pub const MAX_ITEMS_PER_MESSAGE: usize = 1 << 16;
/// The most keys one `TreeEntries` asks for.
pub const MAX_WANT: usize = 1 << 14;

/// Bytes a keyspace entry takes on the wire.
fn keyspace_entry_cost(key: &[u8], v: &Value) -> usize {
    let mut w = crate::wire::Writer::with_capacity(64);
    super::value::write_entry(&mut w, key, v);
    w.buf.len()
}

/// Takes entries while they fit `budget` bytes (always at least one, so a single entry
/// larger than the budget still moves); returns them and whether some were left out.
fn within_budget(
    entries: impl Iterator<Item = (Vec<u8>, Value)>,
    budget: usize,
) -> (Vec<(Vec<u8>, Value)>, bool) {
    let mut out = Vec::new();
    let mut left = budget;
    for (k, v) in entries {
        let cost = keyspace_entry_cost(&k, &v);
        if !out.is_empty() && cost > left {
            return (out, true);
        }
        left = left.saturating_sub(cost);
        out.push((k, v));
    }
    (out, false)
}

/// The replicated stores an exchange may be about.
pub struct Stores<'a> {
    /// The shared keyspace.
    pub keyspace: &'a mut Keyspace,
    /// The per-node states.
    pub nodes: &'a mut NodeStates,
}

impl Stores<'_> {
    fn tree(&self, tree: u8) -> Option<&MerkleTree> {
        match tree {
            TREE_KEYSPACE => Some(self.keyspace.tree()),
            TREE_NODES => Some(self.nodes.tree()),
            _ => None,
        }
    }

    /// (key hash, item hash) of range `idx` of `level`, and for per-node state what is held.
    fn items(&self, tree: u8, level: u8, idx: u32) -> (Vec<(u64, u64)>, Vec<Held>) {
        match tree {
            TREE_NODES => self
                .nodes
                .items_in(level, idx)
                .into_iter()
                .map(|(k, h, held, _)| ((k, h), held))
                .unzip(),
            _ => (self.keyspace.items_in(level, idx), Vec::new()),
        }
    }
}

/// Bytes a delta entry takes on the wire, about: for filling a budget.
fn entry_cost(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + 32
}

/// What a side knows of an exchange in progress.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The exchange id.
    pub id: u32,
    /// Whether this side opened it.
    pub initiator: bool,
    /// The flow.
    pub mode: Mode,
    /// The most bytes of per-node deltas to put in one message (about).
    pub budget: usize,
    /// The most bytes of keyspace entries to put in one message (at least one entry goes).
    pub entries_budget: usize,
}

impl Exchange {
    /// This side's state for exchange `id`.
    pub fn new(id: u32, initiator: bool, mode: Mode) -> Self {
        Exchange {
            id,
            initiator,
            mode,
            budget: 1 << 20,
            entries_budget: 1 << 20,
        }
    }

    /// Handles one message of a keyspace exchange at hybrid physical time `now`; returns
    /// the answer, if one is due.
    pub fn step(&mut self, ks: &mut Keyspace, msg: &Message, now: u64) -> Option<Message> {
        let mut nodes = NodeStates::new();
        self.step_stores(
            &mut Stores {
                keyspace: ks,
                nodes: &mut nodes,
            },
            msg,
            now,
        )
    }

    /// Handles one message of an exchange of either store; returns the answer, if due.
    pub fn step_stores(&mut self, s: &mut Stores<'_>, msg: &Message, now: u64) -> Option<Message> {
        match msg {
            Message::TreeHashes(m) => self.on_hashes(s, m),
            Message::TreeItems(m) if m.tree == TREE_NODES => self.on_node_items(s, m),
            Message::TreeItems(m) => self.on_items(s.keyspace, m),
            Message::TreeEntries(m) => self.on_entries(s.keyspace, m, now),
            Message::StateDeltas(m) => self.on_deltas(s.nodes, m),
            _ => None,
        }
    }

    fn on_hashes(&mut self, s: &Stores<'_>, m: &TreeHashes) -> Option<Message> {
        if m.ranges.is_empty() {
            return None;
        }
        let t = s.tree(m.tree)?;
        let leaf = m.depth.min(t.depth());
        if m.level > leaf {
            // A peer that descended past our tree: nothing sensible to compare.
            return None;
        }
        // Ranges the level does not have are ignored (a hostile or confused peer), so each
        // differing range is real and its children exist: an answer is at most 16 hashes
        // per range of ours.
        let differing: Vec<u32> = m
            .ranges
            .iter()
            .filter(|(i, h)| t.hash(m.level, *i).is_some_and(|mine| mine != *h))
            .map(|(i, _)| *i)
            .collect();
        if differing.is_empty() {
            return Some(Message::TreeHashes(TreeHashes {
                id: self.id,
                tree: m.tree,
                depth: t.depth(),
                level: m.level,
                ranges: Vec::new(),
                sender: None,
            }));
        }
        if m.level < leaf {
            let level = m.level + 1;
            let ranges = differing
                .iter()
                .flat_map(|&p| (0..FANOUT as u32).map(move |c| p.saturating_mul(FANOUT as u32) + c))
                .map(|i| (i, t.hash(level, i).unwrap_or(0)))
                .collect();
            return Some(Message::TreeHashes(TreeHashes {
                id: self.id,
                tree: m.tree,
                depth: t.depth(),
                level,
                ranges,
                sender: None,
            }));
        }
        let (mut items, mut held) = (Vec::new(), Vec::new());
        for &r in &differing {
            let (i, h) = s.items(m.tree, m.level, r);
            items.extend(i);
            held.extend(h);
        }
        if items.len() > MAX_ITEMS_PER_MESSAGE {
            // Too many to compare in one message (a tree of one level against a large
            // store): a window of them, placed by the exchange id so that successive
            // exchanges cover them all. The other side compares only what is listed.
            let start = xxhash_rust::xxh3::xxh3_64(&self.id.to_le_bytes()) as usize % items.len();
            items.rotate_left(start);
            items.truncate(MAX_ITEMS_PER_MESSAGE);
            if held.is_empty() {
                items.sort_unstable();
            } else {
                held.rotate_left(start);
                held.truncate(MAX_ITEMS_PER_MESSAGE);
                let mut pairs: Vec<_> = items.into_iter().zip(held).collect();
                pairs.sort_unstable_by_key(|(i, _)| *i);
                (items, held) = pairs.into_iter().unzip();
            }
        }
        Some(Message::TreeItems(TreeItems {
            id: self.id,
            tree: m.tree,
            level: m.level,
            ranges: differing,
            items,
            held,
        }))
    }

    fn on_node_items(&mut self, s: &Stores<'_>, m: &TreeItems) -> Option<Message> {
        let theirs: BTreeMap<u64, (u64, Held)> = m
            .items
            .iter()
            .zip(m.held.iter())
            .map(|(&(k, h), &held)| (k, (h, held)))
            .collect();
        let mut mine: BTreeMap<u64, (u64, Held, Name)> = BTreeMap::new();
        for &r in &m.ranges {
            for (k, h, held, name) in s.nodes.items_in(m.level, r) {
                mine.insert(k, (h, held, name));
            }
        }
        let mut deltas = Vec::new();
        if self.mode.sends(self.initiator) {
            for (k, (h, _, name)) in &mine {
                let their = theirs.get(k);
                if their.map(|t| t.0) != Some(*h) {
                    let held = their.map(|t| t.1).unwrap_or_default();
                    deltas.push((name.clone(), held));
                }
            }
        }
        let deltas = self.fill(s.nodes, deltas);
        let want: Vec<(u64, Held)> = if self.mode.sends(!self.initiator) {
            theirs
                .iter()
                .filter(|(k, (h, _))| mine.get(k).map(|m| m.0) != Some(*h))
                .map(|(k, _)| (*k, mine.get(k).map(|m| m.1).unwrap_or_default()))
                .collect()
        } else {
            Vec::new()
        };
        if deltas.is_empty() && want.is_empty() {
            return None;
        }
        Some(Message::StateDeltas(StateDeltas {
            id: self.id,
            deltas,
            want,
        }))
    }

    fn on_deltas(&mut self, nodes: &mut NodeStates, m: &StateDeltas) -> Option<Message> {
        for d in &m.deltas {
            nodes.apply(d);
        }
        let asked: Vec<_> = m
            .want
            .iter()
            .flat_map(|(k, held)| nodes.names_by_hash(*k).into_iter().map(move |n| (n, *held)))
            .collect();
        let deltas = self.fill(nodes, asked);
        if deltas.is_empty() {
            return None;
        }
        Some(Message::StateDeltas(StateDeltas {
            id: self.id,
            deltas,
            want: Vec::new(),
        }))
    }

    /// The deltas for peers holding what `wanted` says, most-behind first, within the
    /// byte budget (a node's delta cut short keeps its versions gap-free).
    fn fill(&self, nodes: &NodeStates, wanted: Vec<(Name, Held)>) -> Vec<Delta> {
        let mut candidates: Vec<(u64, Delta)> = wanted
            .into_iter()
            .filter_map(|(name, held)| {
                let state = nodes.get(&name)?;
                let lag = if held.generation < state.generation {
                    u64::MAX
                } else {
                    state.max_version.saturating_sub(held.max_version)
                };
                let d = state.delta_for(&name, held, usize::MAX)?;
                Some((lag, d))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node.cmp(&b.1.node)));
        let mut left = self.budget;
        let mut out = Vec::new();
        for (_, mut d) in candidates {
            let header = d.node.as_bytes().len() + 48;
            if left < header {
                break;
            }
            left -= header;
            if !d.reset {
                let mut keep = 0;
                for (k, v) in &d.entries {
                    let c = entry_cost(k, &v.value);
                    if c > left {
                        break;
                    }
                    left -= c;
                    keep += 1;
                }
                if keep < d.entries.len() {
                    d.entries.truncate(keep);
                    // Versions advance only as far as the entries sent (none fit: not at all;
                    // the heartbeat still does).
                    d.max_version = d.entries.last().map_or(0, |(_, v)| v.version);
                }
            } else {
                let all: usize = d.entries.iter().map(|(k, v)| entry_cost(k, &v.value)).sum();
                left = left.saturating_sub(all);
            }
            out.push(d);
            if left == 0 {
                break;
            }
        }
        out
    }

    fn on_items(&mut self, ks: &Keyspace, m: &TreeItems) -> Option<Message> {
        let theirs: BTreeMap<u64, u64> = m.items.iter().copied().collect();
        let mine: BTreeMap<u64, u64> = m
            .ranges
            .iter()
            .flat_map(|&r| ks.items_in(m.level, r))
            .collect();
        let send = self.mode.sends(self.initiator);
        let want = self.mode.sends(!self.initiator);
        let mut entries = Vec::new();
        if send {
            let differing = mine
                .iter()
                .filter(|(k, h)| theirs.get(k) != Some(h))
                .flat_map(|(k, _)| ks.by_hash(*k).map(|(key, v)| (key.to_vec(), v.clone())));
            entries = within_budget(differing, self.entries_budget).0;
        }
        let wanted: Vec<u64> = if want {
            theirs
                .iter()
                .filter(|(k, h)| mine.get(k) != Some(h))
                .map(|(k, _)| *k)
                .take(MAX_WANT)
                .collect()
        } else {
            Vec::new()
        };
        if entries.is_empty() && wanted.is_empty() {
            return None;
        }
        Some(Message::TreeEntries(TreeEntries {
            id: self.id,
            tree: m.tree,
            entries,
            want: wanted,
        }))
    }

    fn on_entries(&mut self, ks: &mut Keyspace, m: &TreeEntries, now: u64) -> Option<Message> {
        let mut back: Vec<(Vec<u8>, Value)> = Vec::new();
        for (key, v) in &m.entries {
            if let Applied::Refused(tombstone) = ks.apply(key, v, now) {
                back.push((key.clone(), tombstone));
            }
        }
        let asked = m
            .want
            .iter()
            .take(MAX_WANT)
            .flat_map(|k| ks.by_hash(*k).map(|(key, v)| (key.to_vec(), v.clone())));
        let budget = self.entries_budget.saturating_sub(
            back.iter()
                .map(|(k, v)| keyspace_entry_cost(k, v))
                .sum::<usize>(),
        );
        back.extend(within_budget(asked, budget.max(1)).0);
        if back.is_empty() {
            return None;
        }
        Some(Message::TreeEntries(TreeEntries {
            id: self.id,
            tree: m.tree,
            entries: back,
            want: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Name;
    use crate::state::hlc::Timestamp;
    use crate::state::keyspace::lww;

    fn replica(keys: u32) -> Keyspace {
        let mut k = Keyspace::new(u64::MAX);
        let w = Name::new("w").unwrap();
        for i in 0..keys {
            let v = lww(
                Timestamp::new(1, 0),
                &w,
                Some(i.to_le_bytes().to_vec()),
                None,
            );
            k.apply(format!("key-{i}").as_bytes(), &v, 1);
        }
        k
    }

    /// Runs an exchange from `a` to `b`; returns the messages sent.
    fn run(a: &mut Keyspace, b: &mut Keyspace, mode: Mode) -> usize {
        let mut ea = Exchange::new(1, true, mode);
        let mut eb = Exchange::new(1, false, mode);
        let mut msg = open(a, 1);
        let mut sent = 1;
        let mut at_b = true;
        loop {
            let reply = if at_b {
                eb.step(b, &msg, 2)
            } else {
                ea.step(a, &msg, 2)
            };
            match reply {
                Some(m) => {
                    msg = m;
                    sent += 1;
                    at_b = !at_b;
                }
                None => return sent,
            }
        }
    }

    /// Runs a per-node state exchange from `a` to `b` with a byte budget; returns messages.
    fn run_nodes(a: &mut NodeStates, b: &mut NodeStates, mode: Mode, budget: usize) -> usize {
        let (mut ea, mut eb) = (Exchange::new(1, true, mode), Exchange::new(1, false, mode));
        ea.budget = budget;
        eb.budget = budget;
        let (mut ka, mut kb) = (Keyspace::new(u64::MAX), Keyspace::new(u64::MAX));
        let mut msg = open_nodes(a, 1);
        let mut sent = 1;
        let mut at_b = true;
        loop {
            let reply = if at_b {
                let mut st = Stores {
                    keyspace: &mut kb,
                    nodes: b,
                };
                eb.step_stores(&mut st, &msg, 0)
            } else {
                let mut st = Stores {
                    keyspace: &mut ka,
                    nodes: a,
                };
                ea.step_stores(&mut st, &msg, 0)
            };
            match reply {
                Some(m) => {
                    msg = m;
                    sent += 1;
                    at_b = !at_b;
                }
                None => return sent,
            }
        }
    }

    fn cluster_states(n: u32) -> NodeStates {
        let mut s = NodeStates::new();
        for i in 0..n {
            let name = Name::new(&format!("node-{i}")).unwrap();
            s.update(&name, |st| {
                st.set(
                    "addr",
                    format!("10.0.{}.{}", i / 256, i % 256).into_bytes(),
                    None,
                    0,
                )
            });
        }
        s
    }

    #[test]
    fn node_states_reconcile_both_ways_and_only_what_differs() {
        let (mut a, mut b) = (cluster_states(2000), cluster_states(2000));
        assert_eq!(run_nodes(&mut a, &mut b, Mode::PushPull, 1 << 20), 2);
        let x = Name::new("node-5").unwrap();
        let y = Name::new("node-6").unwrap();
        a.update(&x, |s| s.set("load", b"0.5".to_vec(), None, 0));
        b.update(&y, |s| s.beat());
        b.update(&y, |s| s.set("load", b"0.9".to_vec(), None, 0));
        run_nodes(&mut a, &mut b, Mode::PushPull, 1 << 20);
        assert_eq!(a.tree().root(), b.tree().root());
        assert_eq!(b.get(&x).unwrap().get("load", 0), Some(&b"0.5"[..]));
        assert_eq!(a.get(&y).unwrap().heartbeat, 1);
    }

    #[test]
    fn a_small_budget_only_slows_convergence() {
        let mut a = cluster_states(300);
        let mut b = NodeStates::new();
        let mut rounds = 0;
        while a.tree().root() != b.tree().root() {
            run_nodes(&mut a, &mut b, Mode::Push, 2_000);
            rounds += 1;
            assert!(rounds < 100, "no progress");
        }
        assert!(rounds > 3, "the budget limited each exchange: {rounds}");
        for (name, s) in a.iter() {
            assert_eq!(b.get(name), Some(s));
        }
    }

    #[test]
    fn ranges_a_level_does_not_have_are_ignored() {
        let mut a = replica(100);
        let mut ex = Exchange::new(1, false, Mode::PushPull);
        let hostile = Message::TreeHashes(TreeHashes {
            id: 1,
            tree: TREE_KEYSPACE,
            depth: 5,
            level: 1,
            ranges: vec![(u32::MAX, 1), (1 << 30, 2), (16, 3)],
            sender: None,
        });
        match ex.step(&mut a, &hostile, 0) {
            Some(Message::TreeHashes(m)) => assert!(m.ranges.is_empty(), "{m:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equal_replicas_settle_in_one_round_trip() {
        let (mut a, mut b) = (replica(1000), replica(1000));
        assert_eq!(run(&mut a, &mut b, Mode::PushPull), 2);
    }

    #[test]
    fn push_pull_repairs_both_sides_and_push_only_one() {
        let w = Name::new("z").unwrap();
        let fresh = |i: u32| lww(Timestamp::new(5, 0), &w, Some(vec![i as u8]), None);
        for mode in [Mode::PushPull, Mode::Push, Mode::Pull] {
            let (mut a, mut b) = (replica(3000), replica(3000));
            a.apply(b"key-7", &fresh(1), 5);
            b.apply(b"key-9", &fresh(2), 5);
            b.apply(b"only-b", &fresh(3), 5);
            run(&mut a, &mut b, mode);
            let has = |k: &Keyspace, key: &[u8], v: u32| k.get(key, 5) == Some(&fresh(v));
            match mode {
                Mode::PushPull => {
                    assert_eq!(a.tree().root(), b.tree().root());
                    assert!(has(&a, b"only-b", 3) && has(&b, b"key-7", 1));
                }
                Mode::Push => {
                    assert!(has(&b, b"key-7", 1));
                    assert!(a.get(b"only-b", 5).is_none());
                }
                Mode::Pull => {
                    assert!(has(&a, b"only-b", 3) && has(&a, b"key-9", 2));
                    assert!(!has(&b, b"key-7", 1));
                }
            }
        }
    }
}
