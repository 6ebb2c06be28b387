//! Probe target selection and the state of the probe in flight.
//!
//! Round-robin over a shuffled list (SWIM §4.3): each pass probes every member once,
//! in an order reshuffled per pass, with newcomers inserted at random positions so
//! they are neither probed at once nor last. A member that crashes is thus probed by
//! every other member within one pass: detection time is bounded, not just expected.

use crate::chunked::ChunkedVec;
use crate::config::ProbeSelection;
use crate::membership::{Membership, Removal};
use crate::name::Name;
use crate::time::Time;
use rand::Rng;
use std::net::SocketAddr;

/// Picks whom to probe next.
pub(crate) struct ProbeOrder {
    order: ChunkedVec<u32>,
    pos: usize,
}

impl ProbeOrder {
    pub fn new() -> Self {
        ProbeOrder {
            order: ChunkedVec::new(),
            pos: 0,
        }
    }

    /// Adds a newcomer at a random position.
    pub fn insert<R: Rng>(&mut self, idx: u32, rng: &mut R) {
        self.order.push(idx);
        let n = self.order.len();
        let j = rng.gen_range(0..n);
        self.order.swap(j, n - 1);
    }

    /// Keeps indices right after the member table removed a record.
    pub fn on_removed(&mut self, r: &Removal) {
        let found = self.order.iter().position(|&i| i == r.removed);
        if let Some(p) = found {
            self.order.swap_remove(p);
            if self.pos > self.order.len() {
                self.pos = self.order.len();
            }
        }
        if let Some(from) = r.moved_from {
            for i in self.order.iter_mut() {
                if *i == from {
                    *i = r.removed;
                }
            }
        }
    }

    /// The next member worth probing: alive or suspect, not `me`.
    pub fn next<R: Rng>(
        &mut self,
        members: &Membership,
        me: u32,
        mode: ProbeSelection,
        rng: &mut R,
    ) -> Option<u32> {
        if members.live() <= 1 || self.order.is_empty() {
            return None;
        }
        if mode == ProbeSelection::Random {
            for _ in 0..64 {
                let idx = *self.order.get(rng.gen_range(0..self.order.len()));
                if idx != me && members.get(idx).state.is_live() {
                    return Some(idx);
                }
            }
        }
        for _ in 0..=self.order.len() {
            if self.pos >= self.order.len() {
                self.pos = 0;
                // Fisher–Yates, as `SliceRandom::shuffle` does.
                for i in (1..self.order.len()).rev() {
                    let j = rng.gen_range(0..=i);
                    self.order.swap(i, j);
                }
            }
            let idx = *self.order.get(self.pos);
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
