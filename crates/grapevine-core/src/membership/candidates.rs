//! Members heard of by hearsay, held until they answer a ping from the address claimed.

use super::{Membership, Origin};
use crate::detection;
use crate::detection::messages::Ack;
use crate::incarnation;
use crate::membership::messages::Alive;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::roots::Roots;
use crate::stats::DropReason;
use crate::time::Time;

/// A member heard of by gossip or from a stranger, not yet in the table: it must answer a
/// ping from this node first (see `verify`).
pub(crate) struct Candidate {
    alive: Alive,
    seq: u32,
    deadline: Time,
    tries: u8,
    relay: bool,
}

impl Membership {
    /// Holds a member heard of by hearsay until it proves itself: only one that answers a
    /// ping from the address claimed joins the table (and probe order). Fabricated members
    /// never answer, so however many get past admission, none dilutes the probing of real
    /// ones. The ping waits `CANDIDATE_WAIT` catch-up intervals first: while a whole cluster
    /// forms, anti-entropy with members brings most newcomers by then, and they need no
    /// ping; a real one that misses both pings still arrives that way.
    pub(crate) fn verify(&mut self, ctx: &mut Ctx, now: Time, m: Alive, relay: bool) {
        if let Some(c) = self.candidates.get_mut(&m.name) {
            if incarnation::newer(m.incarnation, c.alive.incarnation) && c.alive.addr == m.addr {
                c.alive = m;
            }
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            ctx.stats.drop(DropReason::RateLimited);
            return;
        }
        let seq = ctx.next_seq();
        let deadline = now + ctx.config.membership.push_pull_catchup_interval * CANDIDATE_WAIT;
        self.candidate_seqs.insert(seq, m.name.clone());
        self.candidates_due = self.candidates_due.min(deadline);
        self.candidates.insert(
            m.name.clone(),
            Candidate {
                alive: m,
                seq,
                deadline,
                tries: 0,
                relay,
            },
        );
    }

    /// Forgets a candidate that became a member another way.
    pub(crate) fn known_now(&mut self, name: &Name) {
        if self.candidates.is_empty() {
            return;
        }
        if let Some(c) = self.candidates.remove(name) {
            self.candidate_seqs.remove(&c.seq);
        }
    }

    fn ping_candidate(ctx: &mut Ctx, m: &Alive, seq: u32, roots: &Roots) {
        let ping = detection::ping(ctx, seq, m.name.clone(), roots);
        // Bare: the address is only claimed so far.
        ctx.send_bare(m.addr, Ctx::version_for(m.protocol), &[ping]);
    }

    /// Pings candidates again once, then forgets those that never answered.
    pub(crate) fn expire_candidates(&mut self, ctx: &mut Ctx, now: Time, roots: &Roots) {
        if now < self.candidates_due {
            return;
        }
        let mut due: Vec<Name> = self
            .candidates
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        for name in due {
            let Some(c) = self.candidates.get_mut(&name) else {
                continue;
            };
            if c.tries < CANDIDATE_TRIES {
                c.tries += 1;
                c.deadline = now
                    + if c.tries == 1 {
                        ctx.config.detection.probe_timeout
                    } else {
                        ctx.config.detection.probe_interval
                    };
                let (alive, seq) = (c.alive.clone(), c.seq);
                Self::ping_candidate(ctx, &alive, seq, roots);
            } else if let Some(c) = self.candidates.remove(&name) {
                self.candidate_seqs.remove(&c.seq);
                ctx.stats.drop(DropReason::Unverified);
            }
        }
        self.candidates_due = self
            .candidates
            .values()
            .map(|c| c.deadline)
            .min()
            .unwrap_or(Time::MAX);
    }
    /// Takes an ack that answers a candidate's ping from its claimed address: the candidate
    /// becomes a member. Returns the ack if it was no candidate's.
    pub(crate) fn on_candidate_ack(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: std::net::SocketAddr,
        m: Ack,
    ) -> Option<Ack> {
        if let Some(name) = self.candidate_seqs.get(&m.seq) {
            if self
                .candidates
                .get(name)
                .is_some_and(|c| c.alive.addr == from)
            {
                let name = name.clone();
                self.candidate_seqs.remove(&m.seq);
                if let Some(c) = self.candidates.remove(&name) {
                    self.on_alive(ctx, now, c.alive, Origin::Verified(c.relay));
                }
                return None;
            }
        }
        Some(m)
    }
}

/// The most members heard of by hearsay being verified at once (about 100 bytes each); past
/// it more are refused (they arrive by anti-entropy with a member if real). A joiner's
/// exchange may name thousands, most of which this node's own exchanges bring before their
/// ping is due.
const MAX_CANDIDATES: usize = 4096;

/// Catch-up intervals a candidate waits before its first ping (2 s in `lan`): time for this
/// node's own exchanges, which a node that sees news runs at that interval, to bring it if
/// real. Only a whole cluster forming at once, or two merging, hears of many members from
/// strangers; they come by anti-entropy meanwhile and need no ping.
const CANDIDATE_WAIT: u32 = 8;

/// Pings a candidate gets before it is forgotten (the first after `CANDIDATE_WAIT`, the
/// second a probe timeout later): a lost datagram does not cost a real member its place.
const CANDIDATE_TRIES: u8 = 2;
