//! Per-node state, as Cassandra's endpoint states: each node owns a map of keys to values
//! with versions, a heartbeat and a generation; everyone holds a copy of everyone's, and
//! reconciles them by Scuttlebutt (van Renesse et al., 2008): for each node, the peer's
//! highest version tells what to send, in version order, with no gaps.
//!
//! * A higher generation (bumped when the owner restarts) replaces the old state whole.
//! * A delete is a tombstone with a version of its own. Holders collect tombstones after
//!   the grace period and remember the highest version collected (`gc_version`): a peer
//!   whose copy is older than that missed a delete it can no longer learn by delta, so it
//!   gets the whole state again and drops what is not in it.
//! * A key may carry an expiry (hybrid physical µs): it counts as absent from then on, and
//!   its owner turns it into a tombstone.

use crate::name::Name;
use std::collections::BTreeMap;

/// A value of a node's own key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value (empty for a tombstone).
    pub value: Vec<u8>,
    /// The owner's version counter when it was written.
    pub version: u64,
    /// Whether the key was deleted at this version.
    pub tombstone: bool,
    /// When the key expires (hybrid physical µs), if it does.
    pub expires_at: Option<u64>,
    /// When a tombstone was made (hybrid physical µs, owner's clock): collected after the
    /// grace period from then.
    pub since: u64,
}

impl Versioned {
    /// Whether the key is deleted or expired at `now`.
    pub fn is_gone(&self, now: u64) -> bool {
        self.tombstone || self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One node's state, as held by itself or any other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// Bumped by the owner at each start: a higher one replaces the whole state.
    pub generation: u64,
    /// The owner's liveness counter (phi-accrual detection watches it grow).
    pub heartbeat: u64,
    /// The highest version held: everything up to it is reflected here.
    pub max_version: u64,
    /// The highest version of a tombstone collected from this copy.
    pub gc_version: u64,
    /// The keys, tombstones included.
    pub entries: BTreeMap<String, Versioned>,
}

/// What a peer holds of a node: its generation, highest version and heartbeat.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    /// The generation of the peer's copy.
    pub generation: u64,
    /// Its highest version.
    pub max_version: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
}

/// The part of a node's state a peer lacks: entries above the peer's version, in version
/// order, up to `max_version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Whose state.
    pub node: Name,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat.
    pub heartbeat: u64,
    /// The receiver must drop its copy first: a new generation, or deletes it missed.
    pub reset: bool,
    /// The sender's `gc_version`: after a reset, the receiver lacks the same tombstones.
    pub gc_version: u64,
    /// Everything up to this version is covered once the delta is applied.
    pub max_version: u64,
    /// (key, value), in version order.
    pub entries: Vec<(String, Versioned)>,
}

impl NodeState {
    /// What a peer holding `held` of this state lacks, at most `max_entries` entries: in
    /// version order, so a cut delta still leaves the peer without gaps. A reset (a new
    /// generation, or deletes the peer missed) goes whole, whatever the limit: a peer that
    /// dropped its copy must get every key back at once.
    pub fn delta_for(&self, node: &Name, held: Held, max_entries: usize) -> Option<Delta> {
        if held.generation > self.generation {
            return None;
        }
        let reset = held.generation < self.generation || held.max_version < self.gc_version;
        let from = if reset { 0 } else { held.max_version };
        if !reset && from >= self.max_version && held.heartbeat >= self.heartbeat {
            return None;
        }
        let mut entries: Vec<(String, Versioned)> = self
            .entries
            .iter()
            .filter(|(_, v)| v.version > from)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by_key(|(_, v)| v.version);
        let max_version = if !reset && entries.len() > max_entries {
            entries.truncate(max_entries);
            entries.last().map_or(from, |(_, v)| v.version)
        } else {
            self.max_version.max(from)
        };
        Some(Delta {
            node: node.clone(),
            generation: self.generation,
            heartbeat: self.heartbeat,
            reset,
            gc_version: self.gc_version,
            max_version,
            entries,
        })
    }

    /// Applies a delta; returns whether anything changed.
    pub fn apply(&mut self, d: &Delta) -> bool {
        if d.generation < self.generation {
            return false;
        }
        let mut changed = false;
        let replace =
            d.generation > self.generation || (d.reset && d.max_version >= self.max_version);
        if d.generation == self.generation && d.reset && !replace {
            // A reset older than our copy: stale.
            return false;
        }
        if replace {
            *self = NodeState {
                generation: d.generation,
                heartbeat: d.heartbeat,
                max_version: 0,
                gc_version: d.gc_version,
                entries: BTreeMap::new(),
            };
            changed = true;
        }
        if d.heartbeat > self.heartbeat {
            self.heartbeat = d.heartbeat;
            changed = true;
        }
        for (k, v) in &d.entries {
            let newer = self
                .entries
                .get(k)
                .is_none_or(|old| old.version < v.version);
            if newer && v.version <= d.max_version {
                self.entries.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        if d.max_version > self.max_version {
            self.max_version = d.max_version;
            changed = true;
        }
        changed
    }

    /// What this copy holds, for a digest.
    pub fn held(&self) -> Held {
        Held {
            generation: self.generation,
            max_version: self.max_version,
            heartbeat: self.heartbeat,
        }
    }

    /// Collects tombstones made before `horizon`; returns how many.
    pub fn collect(&mut self, horizon: u64) -> usize {
        let before = self.entries.len();
        let gc = &mut self.gc_version;
        self.entries.retain(|_, v| {
            let old = v.tombstone && v.since < horizon;
            if old {
                *gc = (*gc).max(v.version);
            }
            !old
        });
        before - self.entries.len()
    }

    /// The value of `key`, unless deleted or expired at `now`.
    pub fn get(&self, key: &str, now: u64) -> Option<&[u8]> {
        self.entries
            .get(key)
            .filter(|v| !v.is_gone(now))
            .map(|v| v.value.as_slice())
    }

    // ----- the owner's writes ----------------------------------------------------------

    /// Bumps our heartbeat.
    pub fn beat(&mut self) {
        self.heartbeat += 1;
    }

    /// Sets a key of our own state; returns its version.
    pub fn set(&mut self, key: &str, value: Vec<u8>, expires_at: Option<u64>, now: u64) -> u64 {
        self.max_version += 1;
        self.entries.insert(
            key.to_string(),
            Versioned {
                value,
                version: self.max_version,
                tombstone: false,
                expires_at,
                since: now,
            },
        );
        self.max_version
    }

    /// Deletes a key of our own state (a tombstone); returns its version, if it existed.
    pub fn delete(&mut self, key: &str, now: u64) -> Option<u64> {
        let live = self.entries.get(key).is_some_and(|v| !v.tombstone);
        if !live {
            return None;
        }
        self.max_version += 1;
        self.entries.insert(
            key.to_string(),
            Versioned {
                value: Vec::new(),
                version: self.max_version,
                tombstone: true,
                expires_at: None,
                since: now,
            },
        );
        Some(self.max_version)
    }

    /// Turns our own expired keys into tombstones; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, v)| !v.tombstone && v.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.delete(k, now);
        }
        expired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Name {
        Name::new("me").unwrap()
    }

    fn sync(from: &NodeState, to: &mut NodeState, max_entries: usize) -> bool {
        match from.delta_for(&me(), to.held(), max_entries) {
            Some(d) => to.apply(&d),
            None => false,
        }
    }

    #[test]
    fn deltas_carry_only_what_the_peer_lacks_in_version_order() {
        let mut own = NodeState::default();
        own.set("a", b"1".to_vec(), None, 0);
        own.set("b", b"2".to_vec(), None, 0);
        let mut copy = NodeState::default();
        assert!(sync(&own, &mut copy, 100));
        own.set("a", b"3".to_vec(), None, 0);
        let d = own.delta_for(&me(), copy.held(), 100).unwrap();
        assert_eq!(d.entries.len(), 1, "only the new write");
        assert!(copy.apply(&d));
        assert_eq!(copy, own);
        assert!(own.delta_for(&me(), copy.held(), 100).is_none());
    }

    #[test]
    fn a_cut_delta_leaves_no_gap() {
        let mut own = NodeState::default();
        for i in 0..10 {
            own.set(&format!("k{i}"), vec![i], None, 0);
        }
        let mut copy = NodeState::default();
        let d = own.delta_for(&me(), copy.held(), 4).unwrap();
        assert_eq!(d.max_version, 4);
        copy.apply(&d);
        assert_eq!(copy.max_version, 4);
        while sync(&own, &mut copy, 4) {}
        assert_eq!(copy, own);
    }

    #[test]
    fn a_new_generation_replaces_the_old_state() {
        let mut old = NodeState {
            generation: 1,
            ..NodeState::default()
        };
        old.set("stale", b"x".to_vec(), None, 0);
        let mut copy = NodeState::default();
        sync(&old, &mut copy, 100);
        let mut restarted = NodeState {
            generation: 2,
            ..NodeState::default()
        };
        restarted.set("fresh", b"y".to_vec(), None, 0);
        sync(&restarted, &mut copy, 100);
        assert_eq!(copy.get("stale", 0), None);
        assert_eq!(copy.get("fresh", 0), Some(&b"y"[..]));
        // The old generation cannot come back.
        assert!(!sync(&old, &mut copy, 100));
        assert!(old.delta_for(&me(), copy.held(), 100).is_none());
    }

    #[test]
    fn heartbeats_travel_without_entries() {
        let mut own = NodeState::default();
        own.set("a", b"1".to_vec(), None, 0);
        let mut copy = NodeState::default();
        sync(&own, &mut copy, 100);
        own.beat();
        let d = own.delta_for(&me(), copy.held(), 100).unwrap();
        assert!(d.entries.is_empty());
        assert!(copy.apply(&d));
        assert_eq!(copy.heartbeat, 1);
    }

    #[test]
    fn collected_tombstones_force_a_reset_on_peers_that_missed_them() {
        let mut own = NodeState::default();
        own.set("doomed", b"x".to_vec(), None, 0);
        own.set("kept", b"k".to_vec(), None, 0);
        // A peer copied the state, then was cut off while the key was deleted.
        let mut cut_off = NodeState::default();
        sync(&own, &mut cut_off, 100);
        own.delete("doomed", 10);
        assert_eq!(own.collect(11), 1);
        assert!(!own.entries.contains_key("doomed"));
        let d = own.delta_for(&me(), cut_off.held(), 100).unwrap();
        assert!(d.reset, "the peer missed a collected delete");
        cut_off.apply(&d);
        assert_eq!(cut_off.get("doomed", 20), None, "deleted key stays gone");
        assert_eq!(cut_off.get("kept", 20), Some(&b"k"[..]));
    }

    #[test]
    fn expired_keys_vanish_and_become_tombstones_at_their_owner() {
        let mut own = NodeState::default();
        own.set("ttl", b"v".to_vec(), Some(100), 0);
        assert!(own.get("ttl", 99).is_some());
        assert!(own.get("ttl", 100).is_none());
        assert_eq!(own.expire(100), 1);
        assert!(own.entries["ttl"].tombstone);
    }
}
