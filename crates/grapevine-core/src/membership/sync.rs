//! Push-pull anti-entropy of the member table: an exchange compares digests bucket by
//! bucket, sends what the other side probably lacks (by its filter), and merges what comes
//! back. Exchanges run on a timer that shortens while views differ, with dead members and
//! seeds on the reconnect timer so partitions heal.

use super::{Membership, Origin};
use crate::event::Event;
use crate::filter::Filter;
use crate::member::State;
use crate::membership::messages::{
    Alive, Entry, Leave, Suspect, SyncBuckets, SyncEntries, SyncRequest,
};
use crate::membership::table::{Record, Table};
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::stats::DropReason;
use crate::time::Time;
use crate::wire::{self, PROTOCOL_VERSION_MIN};
use bytes::Bytes;
use rand::Rng;
use std::net::SocketAddr;

/// An exchange this node opened, awaiting its answer.
pub(crate) struct PendingSync {
    dst: SocketAddr,
    started: Time,
}

impl Membership {
    /// Runs the push-pull tick if due: an exchange with one random live member, unless
    /// pings showed that members hold this very table.
    pub(crate) fn push_pull_tick(&mut self, ctx: &mut Ctx, now: Time) {
        if now < self.next_push_pull {
            return;
        }
        let interval = ctx.config.push_pull_interval_for(ctx.members.live());
        self.next_push_pull = now + interval;
        if ctx.leaving {
            return;
        }
        if self.coverage.covered(now, interval) {
            // Pings since the last exchange showed members holding this very table: an
            // exchange would find nothing. It counts as one that agreed.
            ctx.stats.syncs_skipped += 1;
            self.catch_up = self.catch_up.saturating_sub(1);
            if self.catch_up > 0 {
                self.sync_soon(ctx, now);
            }
            return;
        }
        let peers = ctx.random_members(1, None, |_, r| r.state == State::Alive);
        if let Some(&p) = peers.first() {
            let dst = ctx.members.addr_of(ctx.members.get(p));
            self.start_sync(ctx, now, dst, false);
        }
    }

    /// Runs the reconnect tick if due: reaps the long gone, tidies the budgets, and tries
    /// a dead member and now and then a seed, which is how partitions heal.
    /// Returns whether it ran.
    pub(crate) fn reconnect_tick(&mut self, ctx: &mut Ctx, now: Time) -> bool {
        if now < self.next_reconnect {
            return false;
        }
        self.next_reconnect = now + ctx.config.membership.reconnect_interval;
        self.reconnect_ticks = self.reconnect_ticks.wrapping_add(1);
        self.reap(ctx, now);
        self.joins.tidy(now);
        let timeout = ctx.config.membership.sync_timeout;
        self.syncs
            .retain(|_, s| now.saturating_since(s.started) < timeout);
        if ctx.leaving {
            return true;
        }
        // Try one dead member: after a partition heals, this is how the sides meet again.
        let mut dead: Vec<Name> = ctx
            .members
            .non_alive()
            .filter(|(n, _)| {
                ctx.members
                    .find(n)
                    .is_some_and(|i| ctx.members.get(i).state == State::Dead)
            })
            .map(|(n, _)| n.clone())
            .collect();
        // Sorted so the choice depends on the seeded RNG only, not on hash-map order.
        dead.sort();
        if !dead.is_empty() {
            let pick = &dead[ctx.rng.gen_range(0..dead.len())];
            if let Some(i) = ctx.members.find(pick) {
                let dst = ctx.members.addr_of(ctx.members.get(i));
                self.start_sync(ctx, now, dst, false);
            }
        }
        // Seeds: until joined, or when alone, every tick; otherwise now and then, so a
        // cluster split with no dead members left to try still finds its way back.
        if !self.seeds.is_empty()
            && (!self.synced || ctx.members.live() <= 1 || self.reconnect_ticks.is_multiple_of(6))
        {
            let seed = self.seeds[ctx.rng.gen_range(0..self.seeds.len())];
            let join = !self.synced;
            // A seed that is a live member here is probed anyway: this side is not cut off
            // from it.
            if join || ctx.members.live() <= 1 || !ctx.live_member_at(seed) {
                self.start_sync(ctx, now, seed, join);
            }
        }
        true
    }

    fn reap(&mut self, ctx: &mut Ctx, now: Time) {
        let mut gone: Vec<(Name, State)> = Vec::new();
        for (name, since) in ctx.members.non_alive() {
            let Some(i) = ctx.members.find(name) else {
                continue;
            };
            let state = ctx.members.get(i).state;
            let limit = match state {
                State::Dead => ctx.config.membership.dead_reap_timeout,
                State::Left => ctx.config.membership.left_reap_timeout,
                _ => continue,
            };
            if now.saturating_since(since) >= limit {
                gone.push((name.clone(), state));
            }
        }
        gone.sort();
        for (name, state) in gone {
            if let Some(i) = ctx.members.find(&name) {
                let removal = ctx.members.remove(i);
                ctx.order.on_removed(&removal);
                if removal.moved_from == Some(ctx.me_idx) {
                    ctx.me_idx = removal.removed;
                }
                ctx.events.push_back(Event::Reaped { name, state });
            }
        }
    }

    pub(crate) fn start_sync(&mut self, ctx: &mut Ctx, now: Time, dst: SocketAddr, join: bool) {
        if dst == ctx.me.addr {
            return;
        }
        self.next_sync_id = self.next_sync_id.wrapping_add(1);
        let id = self.next_sync_id;
        self.syncs.insert(id, PendingSync { dst, started: now });
        let req = Message::SyncRequest(SyncRequest {
            id,
            sender: ctx.me.clone(),
            root: ctx.members.digest().root(),
            members: ctx.members.len() as u32,
            join,
        });
        // The peer may be a seed we know only by address: speak the oldest version we can,
        // so any peer of a supported version understands the opening of the exchange.
        ctx.send_frame(dst, PROTOCOL_VERSION_MIN, &req);
    }

    /// Answers an exchange's opening. Every answer of an exchange goes to `from`, the address
    /// the frame's connection proved (on that connection, by the driver), never to an address
    /// the message names: a stranger cannot have this node push its table at a third party.
    pub(crate) fn on_sync_request(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        m: SyncRequest,
    ) {
        let in_sync = m.root == ctx.members.digest().root();
        if !in_sync && (m.join || m.members as usize != ctx.members.len()) {
            // Divergence seen from this side counts too: a node that is only ever asked (a
            // seed, say) must reconcile actively rather than wait for its long timer. Only a
            // difference in who is known counts (see `sync_done`).
            self.catch_up = CATCH_UP_ROUNDS;
            self.sync_soon(ctx, now);
        }
        let digest = ctx.members.digest();
        let (buckets, filter) = if in_sync && !m.join {
            (None, None)
        } else if (m.members as usize).saturating_mul(FILTER_WORTH) < ctx.members.len() {
            // A requester holding a small fraction of our table (a joiner, say) pushes its
            // few records whole more cheaply than we could build and send a filter of ours.
            (Some(digest.buckets().to_vec()), None)
        } else {
            // With the buckets, a filter of every record we hold: the requester then pushes
            // only what we probably lack, not whole buckets.
            let mut f = Filter::with_capacity(ctx.members.len());
            let seed = u64::from(m.id);
            for k in ctx.members.keys() {
                f.insert(k.record(), seed);
            }
            (Some(digest.buckets().to_vec()), Some(f))
        };
        let reply = Message::SyncBuckets(SyncBuckets {
            id: m.id,
            sender: ctx.me.clone(),
            buckets,
            filter,
        });
        ctx.send_frame(from, ctx.rx_version, &reply);
    }

    pub(crate) fn on_sync_buckets(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        m: SyncBuckets,
    ) {
        let Some(pending) = self.syncs.get(&m.id).filter(|p| p.dst == from) else {
            ctx.stats.drop(DropReason::Unexpected);
            return;
        };
        let peer = pending.dst;
        let Some(buckets) = m.buckets else {
            self.syncs.remove(&m.id);
            self.sync_done(ctx, now, peer, false);
            return;
        };
        let mask = ctx.members.digest().diff(&buckets);
        if mask.iter().all(|b| *b == 0) {
            self.syncs.remove(&m.id);
            self.sync_done(ctx, now, peer, false);
            return;
        }
        let seed = u64::from(m.id);
        // Push what the responder probably lacks, and a filter of every record of ours in
        // the differing buckets, sent or not, so its reply leaves out what we hold.
        let theirs = m.filter;
        let mut mine = Filter::with_capacity(ctx.members.len());
        let me = ctx.me_idx;
        let push = Self::entries_frame(
            ctx,
            wire::MessageType::SyncPush,
            m.id,
            &mask,
            Some(&mut mine),
            // Our own record always goes: a false positive must never hide a joiner.
            |_, i, key| !theirs.as_ref().is_some_and(|f| f.contains(key, seed)) || i == me,
        );
        ctx.stats.sent(wire::MessageType::SyncPush);
        ctx.emit(from, true, push);
    }

    /// Encodes a SyncPush/SyncPull frame straight from the member table, in one buffer:
    /// the records of the `mask` buckets for which `keep(index, record hash)` holds, and,
    /// when `own` is given, a filter of all those buckets' record hashes after them.
    pub(crate) fn entries_frame(
        ctx: &Ctx,
        kind: wire::MessageType,
        id: u32,
        mask: &[u8; crate::membership::messages::DIGEST_BUCKETS / 8],
        mut own: Option<&mut Filter>,
        mut keep: impl FnMut(&Table, u32, u64) -> bool,
    ) -> Bytes {
        // About 30 bytes an entry, for the share of buckets that differ: a guess that saves
        // most regrowth of a large frame without reserving a whole table for a small one.
        let buckets = mask.iter().map(|b| b.count_ones() as usize).sum::<usize>();
        let share = ctx.members.len() * buckets / crate::membership::messages::DIGEST_BUCKETS;
        let estimate = 64 + 30 * share / 8;
        let mut f = wire::FrameWriter::new(ctx.rx_version, &ctx.config.label, kind, estimate);
        f.w.varint(id);
        f.w.lp(ctx.me.name.as_bytes());
        f.w.addr(ctx.me.addr);
        f.w.bytes(mask);
        let count_at = f.placeholder();
        let seed = u64::from(id);
        let count = ctx
            .members
            .write_entries(mask, &mut f.w, |members, i, key| {
                if let Some(own) = own.as_deref_mut() {
                    own.insert(key, seed);
                }
                keep(members, i, key)
            });
        f.patch(count_at, count);
        if let Some(own) = own {
            crate::membership::messages::write_filter(&mut f.w, own);
        }
        f.finish()
    }

    pub(crate) fn on_sync_push(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        m: SyncEntries,
    ) {
        // Reply with our records in the differing buckets that the requester's filter says it
        // lacks. A requester that sent no filter is taken to hold none of them.
        let seed = u64::from(m.id);
        let theirs = &m.filter;
        let pull = Self::entries_frame(
            ctx,
            wire::MessageType::SyncPull,
            m.id,
            &m.mask,
            None,
            |_, _, key| !theirs.as_ref().is_some_and(|f| f.contains(key, seed)),
        );
        ctx.stats.sent(wire::MessageType::SyncPull);
        ctx.emit(from, true, pull);
        // A joiner is not a member yet: what it brings is admitted as gossip is.
        let stranger = (!ctx.is_member_at(&m.sender.name, from)).then_some(from);
        if self.merge(ctx, now, &m.sender.name, stranger, m.entries) {
            self.catch_up = CATCH_UP_ROUNDS;
            self.sync_soon(ctx, now);
        }
    }

    pub(crate) fn on_sync_pull(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        m: SyncEntries,
    ) {
        if self.syncs.get(&m.id).is_none_or(|p| p.dst != from) {
            ctx.stats.drop(DropReason::Unexpected);
            return;
        }
        let Some(pending) = self.syncs.remove(&m.id) else {
            return;
        };
        let changed = self.merge(ctx, now, &m.sender.name, None, m.entries);
        self.sync_done(ctx, now, pending.dst, changed);
    }

    /// Views differed lately: exchange again after the catch-up interval rather than the
    /// long one.
    pub(crate) fn sync_soon(&mut self, ctx: &Ctx, now: Time) {
        let soon = now + ctx.config.membership.push_pull_catchup_interval;
        if soon < self.next_push_pull {
            self.next_push_pull = soon;
        }
    }

    pub(crate) fn sync_done(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        peer: SocketAddr,
        divergent: bool,
    ) {
        ctx.stats.syncs += 1;
        if divergent {
            ctx.stats.syncs_divergent += 1;
            self.catch_up = CATCH_UP_ROUNDS;
        } else {
            self.catch_up = self.catch_up.saturating_sub(1);
        }
        if self.catch_up > 0 {
            self.sync_soon(ctx, now);
        }
        if !self.synced {
            self.synced = true;
            ctx.events.push_back(Event::Synced { peer, at: now });
        }
    }

    /// Applies an exchange's entries; true if they changed who is known or who is live here
    /// (a join, a death, a revival, a departure): news of that kind is what catch-up
    /// exchanges are for. Newer incarnations of live members are gossip's, already on their
    /// way, and under heavy loss a stream of refutations would otherwise keep every node
    /// exchanging four times a second.
    pub(crate) fn merge(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        peer: &Name,
        stranger: Option<SocketAddr>,
        entries: Vec<Entry>,
    ) -> bool {
        let before = (ctx.members.len(), ctx.members.live());
        ctx.stats.sync_entries_in += entries.len() as u64;
        // A join's first exchange adds a whole table: grow the index and the event queue
        // once, not by doubling. (Entries already known only over-reserve by their count.)
        let room = entries.len().min(
            ctx.config
                .membership
                .max_members
                .saturating_sub(ctx.members.len()),
        );
        ctx.members.reserve(room);
        ctx.events.reserve(room + 1);
        for e in entries {
            let origin = Origin::Sync(peer.clone(), stranger);
            // The state test first: most entries are alive and need no look-up here.
            if e.state != State::Alive
                && e.name != ctx.me.name
                && ctx.members.find(&e.name).is_none()
            {
                // An unknown member in another state: record it as it is, so the tables (and
                // their digests) converge, and a dead one is retried by the reconnect timer.
                if ctx.members.len() >= ctx.config.membership.max_members {
                    ctx.stats.drop(DropReason::TableFull);
                    continue;
                }
                if stranger.is_some() {
                    // A stranger's word about others' deaths and departures is not taken.
                    ctx.stats.drop(DropReason::NotMember);
                    continue;
                }
                let state = if e.state == State::Suspect {
                    State::Alive
                } else {
                    e.state
                };
                self.known_now(&e.name);
                let rec = Record::new(e.name.clone(), e.incarnation, state, e.protocol);
                let idx = ctx.members.insert(rec, e.addr, &e.tags, now);
                ctx.order.insert(idx);
                if state == State::Alive {
                    let member = ctx.members.member(idx);
                    ctx.events.push_back(Event::Joined { member });
                } else {
                    continue;
                }
            }
            match e.state {
                State::Alive => self.on_alive(
                    ctx,
                    now,
                    Alive {
                        name: e.name,
                        addr: e.addr,
                        incarnation: e.incarnation,
                        tags: e.tags,
                        protocol: e.protocol,
                    },
                    origin,
                ),
                // Another node's verdict of death is only a suspicion here (as in memberlist):
                // the accused gets a chance to refute, which matters after a partition.
                State::Suspect | State::Dead => self.on_suspect(
                    ctx,
                    now,
                    Suspect {
                        name: e.name,
                        incarnation: e.incarnation,
                        accuser: peer.clone(),
                    },
                    origin,
                ),
                State::Left => self.on_leave(
                    ctx,
                    now,
                    Leave {
                        name: e.name,
                        incarnation: e.incarnation,
                    },
                ),
            }
        }
        (ctx.members.len(), ctx.members.live()) != before
    }
}

/// A responder sends its filter only to a requester holding more than 1/`FILTER_WORTH` of
/// its member count: a filter costs 10 bits for each record of ours, an entry pushed needlessly
/// about 24 bytes, so below that share the filter costs more than it saves.
const FILTER_WORTH: usize = 24;

/// Agreeing exchanges in a row after which a node drops back to the long push-pull interval.
pub(crate) const CATCH_UP_ROUNDS: u32 = 3;
