//! Membership: who is in the cluster and in which state, kept by SWIM's updates (alive,
//! suspect, dead, left) with incarnation precedence, Lifeguard's suspicion, gossip on a
//! piggyback queue, verification of hearsay, and push-pull anti-entropy of the table.
//!
//! Files: `table` (the records and their digest), `updates` (precedence, refutation,
//! suspicion timers), `candidates` (members heard of by hearsay), `sync` (push-pull),
//! `broadcast` (the piggyback queue), `suspicion` (one timer).

pub(crate) mod broadcast;
mod candidates;
pub(crate) mod messages;
pub(crate) mod suspicion;
mod sync;
pub(crate) mod table;
mod updates;

use crate::admission::Limiter;
use crate::config::Config;
use crate::member::State;
use crate::membership::messages::{Alive, Dead, Leave, Suspect};
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::roots::Coverage;
use crate::time::Time;
use crate::wire::{PacketBuilder, PROTOCOL_VERSION};
use candidates::Candidate;
use hashbrown::HashMap;
use std::net::{IpAddr, SocketAddr};
use suspicion::Suspicions;
use sync::PendingSync;

/// Where a claim about a member came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This node's own probe or timer.
    Local,
    /// A gossiped broadcast that came from this address: rebroadcast if it changed our view.
    Gossip(SocketAddr),
    /// An anti-entropy exchange with `peer`; with the stranger's address when the peer is
    /// not a live member (a joiner), whose new members are rate-limited like gossip's.
    Sync(Name, Option<SocketAddr>),
    /// A new member that answered this node's verification ping; relayed if `true`.
    Verified(bool),
}

/// This node's membership protocol: its own incarnation and tags, the suspicions it holds,
/// the members being verified, and its push-pull exchanges.
pub(crate) struct Membership {
    incarnation: u32,
    tags: Vec<u8>,
    pub suspicions: Suspicions,
    /// New members taken in by gossip and from strangers, by source IP.
    joins: Limiter<IpAddr>,
    /// New members being verified, by name, and their names by the seq of their ping.
    candidates: HashMap<Name, Candidate>,
    candidate_seqs: HashMap<u32, Name>,
    /// The earliest of the candidates' deadlines (`Time::MAX` with none).
    candidates_due: Time,
    next_gossip: Time,
    next_push_pull: Time,
    next_reconnect: Time,
    syncs: HashMap<u32, PendingSync>,
    seeds: Vec<SocketAddr>,
    next_sync_id: u32,
    reconnect_ticks: u32,
    synced: bool,
    /// Exchanges still to run at the catch-up interval: reset by a divergent exchange, so a
    /// node keeps checking until several random peers in a row agree with it.
    catch_up: u32,
    /// Membership roots compared by pings.
    pub coverage: Coverage,
    /// Members that left the live set since the node last looked: their aggregation mass
    /// is gone with them (routed to aggregation by the node).
    pub departed: Vec<SocketAddr>,
}

impl Membership {
    /// The protocol's state at start. Timers: the first gossip, push-pull and reconnect ticks.
    pub fn new(config: &Config, now: Time, timers: [Time; 3]) -> Self {
        let [next_gossip, next_push_pull, next_reconnect] = timers;
        Membership {
            incarnation: 0,
            tags: Vec::new(),
            suspicions: Suspicions::new(),
            joins: Limiter::new(
                config.membership.new_members_per_source,
                config.membership.new_members_total,
                now,
            ),
            candidates: HashMap::new(),
            candidate_seqs: HashMap::new(),
            candidates_due: Time::MAX,
            next_gossip,
            next_push_pull,
            next_reconnect,
            syncs: HashMap::new(),
            seeds: Vec::new(),
            next_sync_id: 0,
            reconnect_ticks: 0,
            synced: false,
            catch_up: 0,
            coverage: Coverage::default(),
            departed: Vec::new(),
        }
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The gossip tick only matters when there is something to gossip; an idle node is not
    /// woken five times a second for nothing. A rumour queued after a quiet spell goes out
    /// at once, then at the gossip interval.
    fn gossip_due(&self, ctx: &Ctx) -> Time {
        if ctx.broadcasts.is_empty() {
            Time::MAX
        } else {
            self.next_gossip
        }
    }

    /// When membership next needs the clock.
    pub fn deadline(&self, ctx: &Ctx) -> Time {
        let mut next = self
            .next_push_pull
            .min(self.next_reconnect)
            .min(self.gossip_due(ctx))
            .min(self.candidates_due);
        for s in self.suspicions.values() {
            next = next.min(s.deadline());
        }
        next
    }

    /// Starts this node at `incarnation` (a restarted node that remembers its last one).
    pub fn set_incarnation(&mut self, ctx: &mut Ctx, now: Time, incarnation: u32) {
        self.incarnation = incarnation;
        ctx.members
            .update(ctx.me_idx, now, None, |r| r.incarnation = incarnation);
    }

    /// Joins through `seeds`: an exchange with each, retried on the reconnect timer.
    pub fn join(&mut self, ctx: &mut Ctx, now: Time, seeds: &[SocketAddr]) {
        for s in seeds {
            if *s != ctx.me.addr && !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        self.announce(ctx, now);
        for &s in seeds {
            self.start_sync(ctx, now, s, true);
        }
    }

    /// Records this node as left and spreads the news.
    pub fn leave(&mut self, ctx: &mut Ctx, now: Time) {
        let inc = self.incarnation;
        ctx.members
            .update(ctx.me_idx, now, None, |r| r.state = State::Left);
        let msg = Message::Leave(Leave {
            name: ctx.me.name.clone(),
            incarnation: inc,
        });
        ctx.broadcasts.push(ctx.me.name.clone(), msg.encode());
        self.gossip(ctx, now);
    }

    /// Sets this node's tags and announces them with a new incarnation.
    pub fn set_tags(&mut self, ctx: &mut Ctx, now: Time, tags: Vec<u8>) {
        self.tags = tags;
        self.incarnation = self.incarnation.wrapping_add(1);
        self.announce(ctx, now);
    }

    fn announce(&mut self, ctx: &mut Ctx, now: Time) {
        let (inc, tags) = (self.incarnation, self.tags.clone());
        ctx.members
            .update(ctx.me_idx, now, None, |r| r.incarnation = inc);
        ctx.members.set_tags(ctx.me_idx, &tags);
        let alive = self.alive_msg(ctx);
        ctx.broadcasts.push(ctx.me.name.clone(), alive.encode());
    }

    fn alive_msg(&self, ctx: &Ctx) -> Message {
        Message::Alive(Alive {
            name: ctx.me.name.clone(),
            addr: ctx.me.addr,
            incarnation: self.incarnation,
            tags: self.tags.clone(),
            protocol: PROTOCOL_VERSION,
        })
    }

    /// This node's own finding that `name` (at `incarnation`) is unreachable, from a failed
    /// probe or a phi conviction: a suspicion, or without suspicion a death at once.
    pub fn accuse(&mut self, ctx: &mut Ctx, now: Time, name: Name, incarnation: u32) {
        let accuser = ctx.me.name.clone();
        if ctx.config.membership.suspicion {
            ctx.stats.suspicions_raised += 1;
            self.on_suspect(
                ctx,
                now,
                Suspect {
                    name,
                    incarnation,
                    accuser,
                },
                Origin::Local,
            );
        } else {
            self.declare_dead(ctx, now, name, incarnation);
        }
    }

    /// This node's own verdict that `name` is dead at `incarnation`.
    fn declare_dead(&mut self, ctx: &mut Ctx, now: Time, name: Name, incarnation: u32) {
        let accuser = ctx.me.name.clone();
        let dead = Dead {
            name,
            incarnation,
            accuser,
        };
        self.on_dead(ctx, now, dead, Origin::Local);
    }

    /// Runs the gossip tick if due: queued broadcasts to `fanout` random members.
    pub fn gossip_tick(&mut self, ctx: &mut Ctx, now: Time) {
        if now >= self.gossip_due(ctx) {
            self.next_gossip = now + ctx.config.membership.gossip_interval;
            self.gossip(ctx, now);
        }
    }

    fn gossip(&mut self, ctx: &mut Ctx, now: Time) {
        if ctx.broadcasts.is_empty() {
            return;
        }
        let to_dead = ctx.config.membership.gossip_to_dead_time;
        // The recently dead still hear gossip, so after a short outage they learn of their
        // death and refute it.
        let targets = ctx.random_members(ctx.config.membership.fanout, None, |m, r| {
            r.state.is_live()
                || (r.state == State::Dead
                    && m.since(&r.name)
                        .is_some_and(|t| now.saturating_since(t) < to_dead))
        });
        for t in targets {
            let (dst, version) = ctx.dst_of(t);
            let mut b =
                PacketBuilder::new(version, &ctx.config.label, ctx.config.wire.packet_budget);
            let limit = ctx.retransmit_limit();
            let n = ctx.broadcasts.fill(&mut b, limit);
            if n == 0 {
                break;
            }
            ctx.stats.broadcasts_out += n as u64;
            ctx.emit(dst, false, b.finish());
        }
    }
}
