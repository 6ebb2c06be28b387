//! SWIM's membership updates with incarnation precedence: alive, suspect, dead and left,
//! this node's refutations, and the suspicion timers that turn into deaths.

use super::{Membership, Origin};
use crate::config::Detector;
use crate::event::Event;
use crate::incarnation;
use crate::member::{Member, State};
use crate::membership::messages::{Alive, Dead, Leave, Suspect};
use crate::membership::suspicion::Suspicion;
use crate::membership::table::Record;
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::stats::DropReason;
use crate::time::Time;
use std::net::SocketAddr;

impl Membership {
    pub(crate) fn rebroadcast(&mut self, ctx: &mut Ctx, about: &Name, msg: &Message) {
        ctx.broadcasts.push(about.clone(), msg.encode());
    }

    /// Queues this node's own `Alive`, denying an accusation. Denials (this one and those
    /// relayed, see `on_alive`) are sent `REFUTATION_FACTOR` times as often as other gossip:
    /// a node the denial misses declares a live member dead when its timer runs out.
    pub(crate) fn broadcast_refutation(&mut self, ctx: &mut Ctx) {
        let alive = self.alive_msg(ctx);
        ctx.broadcasts
            .push_repeated(ctx.me.name.clone(), alive.encode(), REFUTATION_FACTOR);
    }

    /// Answers an accusation that came on the reliable channel with this node's `Alive` on
    /// it: the accuser reached this node where datagrams did not, and a gossiped denial may
    /// not reach it in time either. (Over UDP the ack that follows takes the denial along.)
    pub(crate) fn deny_to(&mut self, ctx: &mut Ctx, dst: SocketAddr) {
        if ctx.leaving {
            return;
        }
        let alive = self.alive_msg(ctx);
        ctx.send_frame(dst, ctx.rx_version, &alive);
    }

    pub(crate) fn refute(&mut self, ctx: &mut Ctx, now: Time, accused: u32, accusation: State) {
        self.incarnation = incarnation::refutation(self.incarnation, accused);
        ctx.stats.refutations += 1;
        ctx.awareness.apply(1);
        let inc = self.incarnation;
        ctx.members.update(ctx.me_idx, now, None, |r| {
            r.incarnation = inc;
            r.state = State::Alive;
        });
        self.broadcast_refutation(ctx);
        ctx.events.push_back(Event::Refuted {
            accusation,
            incarnation: inc,
        });
    }

    pub(crate) fn on_alive(&mut self, ctx: &mut Ctx, now: Time, m: Alive, origin: Origin) {
        if m.name == ctx.me.name {
            if ctx.leaving {
                return;
            }
            let differs = m.addr != ctx.me.addr || m.tags != self.tags;
            if incarnation::newer(m.incarnation, self.incarnation)
                || (m.incarnation == self.incarnation && differs)
            {
                self.refute(ctx, now, m.incarnation, State::Alive);
            }
            return;
        }
        let name_hash = m.name.hash64();
        let Some(idx) = ctx.members.find_hashed(&m.name, name_hash) else {
            if ctx.members.len() >= ctx.config.membership.max_members {
                ctx.stats.drop(DropReason::TableFull);
                return;
            }
            // New members are relayed as rumours by nodes in steady state. Those learned by
            // anti-entropy are not: the exchanges spread them. Nor are those heard while this
            // node is itself catching up with a busy queue: when a whole cluster starts at
            // once, relaying every join would flood every queue for nothing, and the fast
            // exchanges spread them. A lone late joiner is still relayed: catch-up exchanges
            // reach only a few nodes before they stop, and one node missing it would lack it
            // until its next long push-pull. A member's own exchange with us is news worth
            // spreading either way.
            let is_peer = matches!(&origin, Origin::Sync(p, _) if *p == m.name);
            let relay = match origin {
                Origin::Sync(..) => is_peer,
                Origin::Gossip(_) => {
                    self.catch_up == 0 || ctx.broadcasts.len() < RELAY_WHILE_CATCHING_UP
                }
                Origin::Local => true,
                Origin::Verified(relay) => relay,
            };
            // Gossip relayed by a live member (from its address) is taken as a member's
            // exchange is.
            let from_member = match &origin {
                Origin::Gossip(from) => ctx.live_member_at(*from),
                _ => false,
            };
            if !from_member && !self.admit_new_member(ctx, now, &origin) {
                return;
            }
            // Hearsay, a member named by a stranger (by gossip from an address that is no
            // live member's, or in the exchange of a joiner not yet a member here), must
            // answer a ping first. A member that introduces itself, from its own address or
            // over a connection from its own IP, is taken at its word: pinging it would only
            // tell whether a datagram's source was forged (forged ones stay within
            // admission's budgets).
            let hearsay = match &origin {
                Origin::Gossip(from) => !from_member && *from != m.addr,
                Origin::Sync(..) | Origin::Local | Origin::Verified(_) => false,
            };
            if hearsay && ctx.config.membership.verify_hearsay {
                self.verify(ctx, now, m, relay);
                return;
            }
            self.known_now(&m.name);
            let rec = Record::new(m.name.clone(), m.incarnation, State::Alive, m.protocol);
            let idx = ctx
                .members
                .insert_hashed(rec, name_hash, m.addr, &m.tags, now);
            let member = ctx.members.member(idx);
            ctx.order.insert(idx);
            ctx.events.push_back(Event::Joined { member });
            if relay {
                self.rebroadcast(ctx, &m.name.clone(), &Message::Alive(m));
            }
            return;
        };
        let rec = ctx.members.get(idx);
        let held = rec.state;
        if ctx.members.addr_of(rec) != m.addr {
            let reclaimable = !held.is_live()
                && match (
                    ctx.config.membership.dead_reclaim_time,
                    ctx.members.since(&m.name),
                ) {
                    (Some(t), Some(since)) => now.saturating_since(since) >= t,
                    _ => false,
                };
            if !reclaimable {
                ctx.events.push_back(Event::Conflict {
                    name: m.name,
                    known: ctx.members.addr_of(rec),
                    claimed: m.addr,
                });
                return;
            }
        } else if !incarnation::alive_overrides(held, rec.incarnation, m.incarnation) {
            return;
        }
        let tags_changed = ctx.members.tags_of(rec) != m.tags.as_slice();
        let addr_changed = ctx.members.addr_of(rec) != m.addr;
        // A member raises its incarnation to deny an accusation (or to change its tags).
        let refutes = incarnation::newer(m.incarnation, rec.incarnation);
        self.suspicions.remove(&m.name);
        ctx.members
            .update(idx, now, addr_changed.then_some(m.addr), |r| {
                r.incarnation = m.incarnation;
                r.state = State::Alive;
                r.set_protocol(m.protocol);
            });
        if tags_changed {
            ctx.members.set_tags(idx, &m.tags);
        }
        let member = ctx.members.member(idx);
        match held {
            State::Suspect => ctx.events.push_back(Event::Alive { member }),
            State::Dead | State::Left => ctx.events.push_back(Event::Joined { member }),
            State::Alive if tags_changed || addr_changed => {
                ctx.events.push_back(Event::Updated { member })
            }
            State::Alive => {}
        }
        let factor = if refutes { REFUTATION_FACTOR } else { 1 };
        ctx.broadcasts
            .push_repeated(m.name.clone(), Message::Alive(m).encode(), factor);
    }

    /// Whether a member never seen before may be considered on the word of `origin`:
    /// gossip within `new_members_per_source` (its datagram's source, which may be forged)
    /// and `new_members_total`; exchanges, over connections that proved their source, and
    /// this node's own findings always. A refusal is counted and makes the node catch up
    /// with a member, which brings it the new members that are real.
    pub(crate) fn admit_new_member(&mut self, ctx: &mut Ctx, now: Time, origin: &Origin) -> bool {
        let Origin::Gossip(from) = origin else {
            return true;
        };
        let source = from.ip();
        if self.joins.allow(&source, now) {
            return true;
        }
        ctx.stats.drop(DropReason::RateLimited);
        self.sync_soon(ctx, now);
        false
    }

    pub(crate) fn on_suspect(&mut self, ctx: &mut Ctx, now: Time, m: Suspect, origin: Origin) {
        if m.name == ctx.me.name {
            if ctx.leaving {
                return;
            }
            if incarnation::must_refute(self.incarnation, m.incarnation) {
                self.refute(ctx, now, m.incarnation, State::Suspect);
            } else {
                // An accusation already refuted: whoever still spreads it has not heard the
                // denial, so it goes out again (the next packet, an ack to the buddy probe
                // that carried the accusation included, takes it).
                self.broadcast_refutation(ctx);
            }
            return;
        }
        let Some(idx) = ctx.members.find(&m.name) else {
            return;
        };
        let rec = ctx.members.get(idx);
        if rec.state == State::Suspect && rec.incarnation == m.incarnation {
            // A confirmation: with Lifeguard, it shortens the timer and is re-gossiped.
            if ctx.config.detection.lifeguard {
                if let Some(s) = self.suspicions.get_mut(&m.name) {
                    if s.confirm(&m.accuser) {
                        self.rebroadcast(ctx, &m.name.clone(), &Message::Suspect(m));
                    }
                }
            }
            return;
        }
        if !incarnation::suspect_overrides(rec.state, rec.incarnation, m.incarnation) {
            return;
        }
        let live = ctx.members.live();
        let min = ctx.config.suspicion_min_timeout(live);
        let (max, k) = if ctx.config.detection.lifeguard {
            let k = ctx
                .config
                .membership
                .suspicion_confirmations
                .min(live.saturating_sub(2) as u32);
            (
                min * ctx.config.membership.suspicion_max_timeout_mult.max(1),
                k,
            )
        } else {
            (min, 0)
        };
        self.suspicions.insert(
            m.name.clone(),
            Suspicion::new(m.incarnation, m.accuser.clone(), now, min, max, k),
        );
        ctx.members.update(idx, now, None, |r| {
            r.state = State::Suspect;
            r.incarnation = m.incarnation;
        });
        let member = ctx.members.member(idx);
        let local = origin == Origin::Local;
        let addr = member.addr;
        ctx.events.push_back(Event::Suspected {
            member,
            accuser: m.accuser.clone(),
            local,
        });
        let name = m.name.clone();
        let accusation = Message::Suspect(m);
        if local && ctx.config.detection.lifeguard {
            // The suspect hears its own accusation straight from the accuser too (as the
            // buddy system tells it on every later probe): gossip's few copies go out in the
            // same tick, and were all of them lost, nobody could deny it.
            let version = ctx.version_to(Some(&name));
            ctx.send_packet(addr, version, std::slice::from_ref(&accusation));
        }
        self.rebroadcast(ctx, &name, &accusation);
    }

    /// Turns the suspicions whose timers ran out into deaths, or, with Lifeguard, into
    /// last-chance probes (pushed to `final_probes`) when few confirmed them. `running` is
    /// the probe in flight: its target, start and end.
    pub(crate) fn expire_suspicions(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        running: Option<(&Name, Time, Time)>,
        final_probes: &mut Vec<Name>,
    ) {
        if self.suspicions.is_empty() {
            return;
        }
        let mut due: Vec<(Name, u32)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.deadline())
            .map(|(n, s)| (n.clone(), s.incarnation))
            .collect();
        due.sort();
        for (name, incarnation) in due {
            // Lifeguard: a suspicion that few others confirmed gets a last-chance probe (or
            // waits for the one under way) before it becomes a death. The
            // probe carries the accusation (the buddy system), so a live suspect whose
            // refutation never reached this node sends it back in its ack; a dead one fails
            // the probe and is declared then. Well-confirmed suspicions (k independent
            // accusers, the usual case for a real crash) are declared at once.
            // (Only where this node probes: not with phi-accrual alone, nor while leaving.)
            let probing = ctx.config.detection.detector != Detector::Phi && !ctx.leaving;
            // A probe of the suspect begun before the deadline and still under way decides,
            // whatever came before it. (Not one begun since: with a single other member every
            // probe is of the suspect, and waiting for each next one would wait for ever.)
            let running = running
                .filter(|(target, _, _)| **target == name)
                .map(|(_, started, end)| (started, end));
            if let (Some((started, end)), true) = (running, probing) {
                if let Some(s) = self.suspicions.get_mut(&name) {
                    if started < s.deadline() {
                        s.await_probe(end);
                        continue;
                    }
                }
            }
            if ctx.config.detection.lifeguard && probing {
                if let Some(s) = self.suspicions.get_mut(&name) {
                    if s.wants_last_chance() {
                        s.await_last_chance();
                        final_probes.push(name.clone());
                        continue;
                    }
                }
            }
            self.suspicions.remove(&name);
            self.declare_dead(ctx, now, name, incarnation);
        }
    }

    /// Applies a verdict that takes a member out of the cluster, `to` being `Dead` or `Left`:
    /// refutes it if it is about this node, else records it if it takes precedence. Returns
    /// the member's new view when it changed.
    pub(crate) fn retire(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        name: &Name,
        incarnation: u32,
        to: State,
    ) -> Option<Member> {
        if *name == ctx.me.name {
            if !ctx.leaving && incarnation::must_refute(self.incarnation, incarnation) {
                self.refute(ctx, now, incarnation, to);
            }
            return None;
        }
        let idx = ctx.members.find(name)?;
        let rec = ctx.members.get(idx);
        let overrides = if to == State::Left {
            incarnation::leave_overrides
        } else {
            incarnation::dead_overrides
        };
        if !overrides(rec.state, rec.incarnation, incarnation) {
            return None;
        }
        if rec.state.is_live() {
            // Its aggregation mass is gone with it: the running epoch ends early, unreported.
            self.departed.push(ctx.members.addr_of(rec));
        }
        self.suspicions.remove(name);
        ctx.members.update(idx, now, None, |r| {
            r.state = to;
            r.incarnation = incarnation;
        });
        Some(ctx.members.member(idx))
    }

    pub(crate) fn on_dead(&mut self, ctx: &mut Ctx, now: Time, m: Dead, origin: Origin) {
        // A death by hearsay at an incarnation newer than any this node knows of the member
        // is only a suspicion: the member may never have reached it (one forged datagram
        // claims any), and as a suspect it is heard out and refutes.
        if let Origin::Gossip(_) = origin {
            let newer = ctx.members.find(&m.name).is_some_and(|i| {
                let r = ctx.members.get(i);
                r.state.is_live() && incarnation::newer(m.incarnation, r.incarnation)
            });
            if newer {
                let Dead {
                    name,
                    incarnation,
                    accuser,
                } = m;
                return self.on_suspect(
                    ctx,
                    now,
                    Suspect {
                        name,
                        incarnation,
                        accuser,
                    },
                    origin,
                );
            }
        }
        let Some(member) = self.retire(ctx, now, &m.name, m.incarnation, State::Dead) else {
            return;
        };
        let local = origin == Origin::Local;
        if local {
            ctx.stats.declared_dead += 1;
        }
        ctx.events.push_back(Event::Failed { member, local });
        self.rebroadcast(ctx, &m.name.clone(), &Message::Dead(m));
    }

    pub(crate) fn on_leave(&mut self, ctx: &mut Ctx, now: Time, m: Leave) {
        let Some(member) = self.retire(ctx, now, &m.name, m.incarnation, State::Left) else {
            return;
        };
        ctx.events.push_back(Event::Left { member });
        self.rebroadcast(ctx, &m.name.clone(), &Message::Leave(m));
    }
}

/// A node catching up still relays a join it hears by gossip while fewer broadcasts than
/// this wait in its queue: a join among few news, not one of a whole cluster starting.
const RELAY_WHILE_CATCHING_UP: usize = 16;

/// How many times the usual retransmissions a refutation gets (see `broadcast_refutation`).
/// Simulated at 20 % loss on 9 nodes: with 2, live nodes were still declared dead (5 in 17
/// hours, on an earlier build); with 3, none in 114 hours (docs/measurements.md).
const REFUTATION_FACTOR: u32 = 3;
