//! Probe target selection and the state of the probe in flight.
//!
//! Round-robin over a shuffled list (SWIM §4.3): each pass probes every member once,
//! in an order reshuffled per pass, with newcomers placed at random points of the rest of
//! the pass so they are neither probed at once nor last. A member that crashes is thus
//! probed by every other member within one pass: detection time is bounded, not just
//! expected.

use crate::chunked::ChunkedVec;
use crate::config::ProbeSelection;
use crate::membership::table::{Removal, Table};
use crate::name::Name;
use crate::time::Time;
use rand::Rng;
use std::net::SocketAddr;

/// Picks whom to probe next.
pub(crate) struct ProbeOrder {
    order: ChunkedVec<u32>,
    pos: usize,
    /// Newcomers not yet placed in `order`. Each is placed when drawn, at the cursor, so it
    /// lands at a uniformly random point of the rest of the pass; placing them lazily keeps
    /// a join (thousands of newcomers at once) from touching the whole order at random.
    fresh: ChunkedVec<u32>,
}

impl ProbeOrder {
    pub fn new() -> Self {
        ProbeOrder {
            order: ChunkedVec::new(),
            pos: 0,
            fresh: ChunkedVec::new(),
        }
    }

    /// Adds a newcomer, to be probed at a random point of the current pass.
    pub fn insert(&mut self, idx: u32) {
        self.fresh.push(idx);
    }

    /// Members held, placed or not.
    fn len(&self) -> usize {
        self.order.len() + self.fresh.len()
    }

    /// Keeps indices right after the member table removed a record.
    pub fn on_removed(&mut self, r: &Removal) {
        let placed = self.order.iter().position(|&i| i == r.removed);
        let fresh = self.fresh.iter().position(|&i| i == r.removed);
        if let Some(p) = fresh {
            self.fresh.swap_remove(p);
        } else if let Some(p) = placed {
            self.order.swap_remove(p);
            if self.pos > self.order.len() {
                self.pos = self.order.len();
            }
        }
        if let Some(from) = r.moved_from {
            for i in self.order.iter_mut().chain(self.fresh.iter_mut()) {
                if *i == from {
                    *i = r.removed;
                }
            }
        }
    }

    /// The member at position `pos` of the pass: the next placed one, or, with a chance in
    /// proportion to their number, a newcomer placed there now.
    fn draw<R: Rng>(&mut self, rng: &mut R) -> u32 {
        let remaining = self.order.len() - self.pos;
        if !self.fresh.is_empty() && rng.gen_range(0..remaining + self.fresh.len()) >= remaining {
            let idx = self.fresh.swap_remove(rng.gen_range(0..self.fresh.len()));
            // Placed at the cursor; the placed member there moves to the end, still unprobed.
            self.order.push(idx);
            let last = self.order.len() - 1;
            self.order.swap(self.pos, last);
        }
        *self.order.get(self.pos)
    }

    /// The next member worth probing: alive or suspect, not `me`.
    pub fn next<R: Rng>(
        &mut self,
        members: &Table,
        me: u32,
        mode: ProbeSelection,
        rng: &mut R,
    ) -> Option<u32> {
        if members.live() <= 1 || self.len() == 0 {
            return None;
        }
        if mode == ProbeSelection::Random {
            for _ in 0..64 {
                let j = rng.gen_range(0..self.len());
                let idx = match j.checked_sub(self.order.len()) {
                    Some(f) => *self.fresh.get(f),
                    None => *self.order.get(j),
                };
                if idx != me && members.get(idx).state.is_live() {
                    return Some(idx);
                }
            }
        }
        for _ in 0..=self.len() {
            if self.pos >= self.order.len() && self.fresh.is_empty() {
                self.pos = 0;
                // Fisher–Yates, as `SliceRandom::shuffle` does.
                for i in (1..self.order.len()).rev() {
                    let j = rng.gen_range(0..=i);
                    self.order.swap(i, j);
                }
            }
            let idx = self.draw(rng);
            self.pos += 1;
            if idx != me && members.get(idx).state.is_live() {
                return Some(idx);
            }
        }
        None
    }
}

/// Where the probe in flight stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the direct ack.
    Direct,
    /// Indirect probes and the reliable fallback are out.
    Indirect,
}

/// The probe in flight (a node runs one at a time).
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub seq: u32,
    pub target: Name,
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub started: Time,
    pub direct_deadline: Time,
    pub end: Time,
    pub phase: Phase,
    pub expected_nacks: u32,
    pub nacks: u32,
}

/// An indirect probe this node runs for another.
#[derive(Clone, Debug)]
pub(crate) struct Relay {
    pub requester: SocketAddr,
    pub seq: u32,
    pub nack: bool,
    pub deadline: Time,
    /// The version the request came in, used for the answer.
    pub version: u8,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::State;
    use crate::membership::table::Record;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn add(m: &mut Table, o: &mut ProbeOrder, i: u32) -> u32 {
        let name = Name::new(&format!("n{i}")).unwrap();
        let addr = format!("10.0.0.{}:7946", i + 1).parse().unwrap();
        let idx = m.insert(Record::new(name, 1, State::Alive, 1), addr, &[], Time::ZERO);
        o.insert(idx);
        idx
    }

    #[test]
    fn each_pass_probes_every_member_once_and_newcomers_within_the_pass() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let (mut m, mut o) = (Table::new(), ProbeOrder::new());
        let me = add(&mut m, &mut o, 0);
        for i in 1..20 {
            add(&mut m, &mut o, i);
        }
        let next = |m: &Table, o: &mut ProbeOrder, rng: &mut Xoshiro256PlusPlus| {
            o.next(m, me, ProbeSelection::RoundRobin, rng).unwrap()
        };
        // The first pass holds everyone: 19 probes reach 19 distinct members, never me.
        let mut seen: Vec<u32> = (0..19).map(|_| next(&m, &mut o, &mut rng)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 19);
        assert!(!seen.contains(&me));
        // Half-way through the next pass, five newcomers: they join its remainder, so the
        // pass still ends after every member, old and new, was probed once.
        let mut pass: Vec<u32> = (0..10).map(|_| next(&m, &mut o, &mut rng)).collect();
        let newcomers: Vec<u32> = (20..25).map(|i| add(&mut m, &mut o, i)).collect();
        pass.extend((0..14).map(|_| next(&m, &mut o, &mut rng)));
        let mut sorted = pass.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 24, "each of the 24 others once: {pass:?}");
        assert!(newcomers.iter().all(|n| pass[10..].contains(n)));
        // Neither all at once nor all last: they are spread over the rest of the pass.
        assert!(!newcomers.iter().all(|n| pass[10..15].contains(n)));
        assert!(!newcomers.iter().all(|n| pass[19..].contains(n)));
    }
}
