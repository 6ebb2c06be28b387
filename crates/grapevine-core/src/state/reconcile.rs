//! Tree anti-entropy between two replicas of the shared keyspace: compare roots, descend
//! where hashes differ, list the items of the differing leaves, then send and fetch only
//! the entries that differ.
//!
//! The initiator opens with its root ([`open`]); each side answers the other's message
//! with [`step`] until a message needs no answer:
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

use super::keyspace::{Applied, Keyspace, Value};
use super::merkle::FANOUT;
use crate::wire::{Message, TreeEntries, TreeHashes, TreeItems, TREE_KEYSPACE};
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

/// The message that opens exchange `id`: the initiator's root.
pub fn open(ks: &Keyspace, id: u32) -> Message {
    Message::TreeHashes(TreeHashes {
        id,
        tree: TREE_KEYSPACE,
        depth: ks.tree().depth(),
        level: 0,
        ranges: vec![(0, ks.tree().root())],
    })
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
}

impl Exchange {
    /// This side's state for exchange `id`.
    pub fn new(id: u32, initiator: bool, mode: Mode) -> Self {
        Exchange {
            id,
            initiator,
            mode,
        }
    }

    /// Handles one message of the exchange at hybrid physical time `now`; returns the
    /// answer, if one is due.
    pub fn step(&mut self, ks: &mut Keyspace, msg: &Message, now: u64) -> Option<Message> {
        match msg {
            Message::TreeHashes(m) => self.on_hashes(ks, m),
            Message::TreeItems(m) => self.on_items(ks, m),
            Message::TreeEntries(m) => self.on_entries(ks, m, now),
            _ => None,
        }
    }

    fn on_hashes(&mut self, ks: &Keyspace, m: &TreeHashes) -> Option<Message> {
        if m.ranges.is_empty() {
            return None;
        }
        let leaf = m.depth.min(ks.tree().depth());
        if m.level > leaf {
            // A peer that descended past our tree: nothing sensible to compare.
            return None;
        }
        let differing: Vec<u32> = m
            .ranges
            .iter()
            .filter(|(i, h)| ks.tree().hash(m.level, *i) != Some(*h))
            .map(|(i, _)| *i)
            .collect();
        if differing.is_empty() {
            return Some(Message::TreeHashes(TreeHashes {
                id: self.id,
                tree: m.tree,
                depth: ks.tree().depth(),
                level: m.level,
                ranges: Vec::new(),
            }));
        }
        if m.level < leaf {
            let level = m.level + 1;
            let ranges = differing
                .iter()
                .flat_map(|&p| (0..FANOUT as u32).map(move |c| p * FANOUT as u32 + c))
                .map(|i| (i, ks.tree().hash(level, i).unwrap_or(0)))
                .collect();
            return Some(Message::TreeHashes(TreeHashes {
                id: self.id,
                tree: m.tree,
                depth: ks.tree().depth(),
                level,
                ranges,
            }));
        }
        let items = differing
            .iter()
            .flat_map(|&r| ks.items_in(m.level, r))
            .collect();
        Some(Message::TreeItems(TreeItems {
            id: self.id,
            tree: m.tree,
            level: m.level,
            ranges: differing,
            items,
        }))
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
            for (k, h) in &mine {
                if theirs.get(k) != Some(h) {
                    entries.extend(ks.by_hash(*k).map(|(key, v)| (key.to_vec(), v.clone())));
                }
            }
        }
        let wanted: Vec<u64> = if want {
            theirs
                .iter()
                .filter(|(k, h)| mine.get(k) != Some(h))
                .map(|(k, _)| *k)
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
        for k in &m.want {
            back.extend(ks.by_hash(*k).map(|(key, v)| (key.to_vec(), v.clone())));
        }
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
