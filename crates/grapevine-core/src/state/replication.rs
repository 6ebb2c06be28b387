//! State replication for one node: its own per-node state, its copies of everyone else's,
//! the shared keyspace, and the rounds of tree exchanges that keep them in step.
//!
//! A round opens two exchanges (per-node states, shared keyspace) with each of
//! `state_fanout` members; each starts with a root comparison. Rounds run only when there
//! is news to spread: a node runs one as soon as its own data changed (a write, an expiry,
//! or entries an exchange brought), at most one per `state_interval`. A ping whose roots
//! differ from this node's (see [`crate::roots`]) opens an exchange of the differing store
//! with its sender at once, so a node that missed news gets it within a ping or two. While
//! nothing changes the interval doubles, up to `state_backoff_max`, and a round is skipped
//! outright when the latest pings showed equal roots: an idle cluster opens no exchange. Exchange ids opened here are below 2^31; answers from the responder
//! carry the id with the top bit set, so each side tells its own exchanges from the peer's.
//!
//! Only members write here. An exchange's opening names its sender, and the node answers
//! it only when that is a live member at the address the opening came from; every later
//! step must belong to an exchange this node opened with that address, or one it is
//! answering for it. A stranger's unsolicited entries are dropped (and counted), however
//! well formed.

use crate::config::Config;
use crate::message::Message;
use crate::name::Name;
use crate::roots::Coverage;
use crate::state::hlc::Hlc;
use crate::state::keyspace::{Applied, Keyspace, Policy, Value};
use crate::state::nodes::NodeStates;
use crate::state::reconcile::{self, Exchange, Stores};
use crate::stats::DropReason;
use crate::time::Time;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Marks an exchange id as the responder's.
const RESPONDER: u32 = 1 << 31;

/// The most exchanges this node answers at once: far above what `state_fanout` partners
/// per round open (each opens two), so only a flood of openings meets it.
const MAX_SERVING: usize = 4096;

/// Counters of the replication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Exchanges opened by this node.
    pub exchanges: u64,
    /// Exchanges that found something to move.
    pub exchanges_divergent: u64,
    /// Rounds run.
    pub rounds: u64,
    /// Exchanges opened at once because a ping showed a difference.
    pub exchanges_on_ping: u64,
    /// Rounds skipped because every ping compared since the last showed equal roots.
    pub rounds_quiet: u64,
    /// Rounds skipped because the bandwidth budget was spent.
    pub rounds_throttled: u64,
    /// Remote timestamps refused as too far ahead.
    pub clock_refusals: u64,
    /// Tombstones collected.
    pub collected: u64,
}

/// One node's replicated state and its exchanges.
pub(crate) struct Replication {
    me: Name,
    generation: u64,
    /// Added to protocol time to get hybrid physical time.
    wall_offset: u64,
    pub hlc: Hlc,
    pub nodes: NodeStates,
    pub keyspace: Keyspace,
    next_id: u32,
    open: HashMap<(SocketAddr, u32), (Exchange, Time, bool)>,
    /// Exchanges opened by members that this node is answering, by (peer, id): when the
    /// last step came.
    serving: HashMap<(SocketAddr, u32), Time>,
    last_exchange: HashMap<SocketAddr, Time>,
    /// When the next round is due while nothing changes (backed off).
    next_round: Time,
    /// The earliest the next round may run: one `state_interval` after the last that sent.
    earliest: Time,
    /// The roots (per-node states, keyspace) as the last round left them: a change since
    /// is news to spread.
    roots_at_round: (u64, u64),
    /// Rounds in a row that found this node's data unchanged: the interval is
    /// `state_interval × 2^quiet_rounds`.
    quiet_rounds: u32,
    /// Root comparisons made by pings.
    coverage: Coverage,
    /// When own keys are next expired and old tombstones possibly collected.
    next_housekeeping: Time,
    /// When tombstones in the copies of per-node state are next collected.
    next_collect: Time,
    rng: Xoshiro256PlusPlus,
    tokens: f64,
    tokens_at: Time,
    pub stats: ReplicationStats,
    /// The targets whose agreement this node checks.
    pub(super) tracking: super::target::Tracking,
    /// Slots this node claimed, by map, and at which epoch: to tell it when it lost one.
    pub(super) claims: std::collections::BTreeMap<(String, u32), u64>,
}

impl Replication {
    /// Replication for `me`, its own RNG seeded from `seed` (so membership's random draws
    /// are the same with or without state). Rounds start at a point of the first interval
    /// fixed by the name, so nodes started together do not exchange in lockstep.
    pub fn new(config: &Config, me: Name, seed: u64, now: Time) -> Self {
        let phase = (me.hash64() >> 11) as f64 / (1u64 << 53) as f64;
        let first_round = now + config.state.state_interval.mul_f64(phase);
        Replication {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x57a7_e5ee_d000_0001),
            me,
            generation: 1,
            wall_offset: 0,
            hlc: Hlc::new(config.state.max_clock_drift),
            nodes: NodeStates::new(),
            keyspace: Keyspace::new(
                u64::try_from(config.state.tombstone_grace.as_micros()).unwrap_or(u64::MAX),
            ),
            next_id: 0,
            open: HashMap::new(),
            serving: HashMap::new(),
            last_exchange: HashMap::new(),
            next_round: first_round,
            earliest: first_round,
            roots_at_round: (0, 0),
            quiet_rounds: 0,
            coverage: Coverage::default(),
            next_housekeeping: first_round,
            next_collect: first_round,
            tokens: 0.0,
            tokens_at: now,
            stats: ReplicationStats::default(),
            tracking: super::target::Tracking::default(),
            claims: std::collections::BTreeMap::new(),
        }
    }

    /// Hybrid physical time at protocol time `now`.
    pub fn physical(&self, now: Time) -> u64 {
        now.as_micros().saturating_add(self.wall_offset)
    }

    pub fn set_wall_offset(&mut self, offset: u64) {
        self.wall_offset = offset;
    }

    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
        let me = self.me.clone();
        if self.nodes.get(&me).is_some() {
            self.nodes.update(&me, |s| {
                if s.generation < generation {
                    *s = crate::state::endpoint::NodeState {
                        generation,
                        ..Default::default()
                    };
                }
            });
        }
    }

    /// Sets a key of this node's own state; `ttl` in microseconds.
    pub fn set_own(&mut self, key: &str, value: Vec<u8>, ttl: Option<u64>, now: Time) -> u64 {
        let at = self.physical(now);
        let generation = self.generation;
        let me = self.me.clone();
        self.nodes.update(&me, |s| {
            s.generation = s.generation.max(generation);
            s.set(key, value, ttl.map(|t| at.saturating_add(t)), at)
        })
    }

    /// Deletes a key of this node's own state.
    pub fn delete_own(&mut self, key: &str, now: Time) -> Option<u64> {
        let at = self.physical(now);
        let me = self.me.clone();
        self.nodes.get(&me)?;
        self.nodes.update(&me, |s| s.delete(key, at))
    }

    /// A last-write-wins write (or delete, with `None`) of a shared key by this node.
    pub fn put_shared(
        &mut self,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<u64>,
        flags: u64,
        now: Time,
    ) {
        let phys = self.physical(now);
        let at = self.hlc.now(phys);
        let mut v =
            crate::state::keyspace::lww(at, &self.me, value, ttl.map(|t| phys.saturating_add(t)));
        if let Value::Lww(l) = &mut v {
            l.flags = flags;
        }
        self.keyspace.apply(key, &v, phys);
    }

    /// Merges a value into a shared key (a CRDT operation's result, say).
    pub fn merge_shared(&mut self, key: &[u8], value: &Value, now: Time) -> Applied {
        let phys = self.physical(now);
        self.keyspace.apply(key, value, phys)
    }

    pub fn set_policy(&mut self, prefix: &[u8], policy: Policy) {
        self.keyspace.set_policy(prefix, policy);
    }

    /// Whether this node holds anything, or runs in pull mode (where a node holding nothing
    /// is the one that must ask). Otherwise nodes holding state reach it, so a cluster that
    /// does not use replicated state pays nothing for it.
    fn active(&self, config: &Config) -> bool {
        !self.nodes.is_empty()
            || !self.keyspace.is_empty()
            || config.state.state_mode == crate::state::reconcile::Mode::Pull
    }

    /// The roots of the two trees.
    pub fn roots(&self) -> (u64, u64) {
        (self.nodes.tree().root(), self.keyspace.tree().root())
    }

    /// Whether this node has news: its data changed since the last round.
    fn has_news(&self) -> bool {
        self.roots() != self.roots_at_round
    }

    /// When the next round is due: as soon as one may run once there is news, else at the
    /// backed-off time (never while the node holds nothing and has no news).
    fn round_deadline(&self, config: &Config) -> Time {
        if self.has_news() {
            self.next_round.min(self.earliest)
        } else if self.active(config) {
            self.next_round
        } else {
            Time::MAX
        }
    }

    /// When `tick` must next run.
    pub fn deadline(&self, config: &Config) -> Time {
        let housekeeping = if self.nodes.is_empty() && self.keyspace.is_empty() {
            Time::MAX
        } else {
            self.next_housekeeping
        };
        self.round_deadline(config).min(housekeeping)
    }

    /// Whether a round is due at `now`.
    pub fn round_due(&self, config: &Config, now: Time) -> bool {
        now >= self.round_deadline(config)
    }

    /// Records what a ping from member `peer` showed at `now`: whether its per-node states
    /// and its keyspace looked equal to this node's. Returns the exchanges to open with it
    /// of those that differ, unless one with it is under way or began less than a
    /// `state_interval` ago (so pings, forged ones included, open at most one a second), or
    /// the bandwidth budget is spent.
    pub fn compared(
        &mut self,
        config: &Config,
        now: Time,
        peer: SocketAddr,
        nodes: bool,
        keyspace: bool,
    ) -> Vec<(SocketAddr, Message)> {
        self.coverage.record(now, nodes && keyspace);
        let mut out = Vec::new();
        let recent = self
            .last_exchange
            .get(&peer)
            .is_some_and(|t| now.saturating_since(*t) < config.state.state_interval);
        if (nodes && keyspace) || recent || self.open.keys().any(|(p, _)| *p == peer) {
            return out;
        }
        if let Some(rate) = config.state.state_bandwidth {
            self.refill(rate, now);
            if self.tokens < 0.0 {
                self.stats.rounds_throttled += 1;
                return out;
            }
        }
        self.stats.exchanges_on_ping += 1;
        self.last_exchange.insert(peer, now);
        self.open_with(config, now, peer, !nodes, !keyspace, &mut out);
        out
    }

    /// Accounts for `bytes` of state sent at `now` against the bandwidth budget.
    pub fn spent(&mut self, config: &Config, bytes: usize, now: Time) {
        if let Some(rate) = config.state.state_bandwidth {
            self.refill(rate, now);
            self.tokens -= bytes as f64;
        }
    }

    fn refill(&mut self, rate: u64, now: Time) {
        let dt = now.saturating_since(self.tokens_at).as_secs_f64();
        self.tokens_at = now;
        // A burst of at most one second's worth.
        self.tokens = (self.tokens + dt * rate as f64).min(rate as f64);
    }

    /// The time between rounds after `quiet_rounds` quiet ones: doubling from
    /// `state_interval` up to `state_backoff_max`.
    fn backoff(&self, config: &Config) -> std::time::Duration {
        config
            .state
            .state_interval
            .saturating_mul(1 << self.quiet_rounds.min(20))
            .min(
                config
                    .state
                    .state_backoff_max
                    .max(config.state.state_interval),
            )
    }

    /// Housekeeping, if due, and a round, if due: the exchanges to open with partners chosen
    /// from `candidates` (random live members, more than the fanout so the bias has a
    /// choice).
    pub fn tick(
        &mut self,
        config: &Config,
        now: Time,
        candidates: &[SocketAddr],
    ) -> Vec<(SocketAddr, Message)> {
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + config.state.state_interval;
            let timeout = config.membership.sync_timeout;
            self.open
                .retain(|_, (_, started, _)| now.saturating_since(*started) < timeout);
            self.serving
                .retain(|_, last| now.saturating_since(*last) < timeout);
            self.housekeeping(config, now);
        }
        if !self.round_due(config, now) {
            return Vec::new();
        }
        let news = self.has_news();
        let covered = self.coverage.covered(now, self.backoff(config));
        self.roots_at_round = self.roots();
        self.quiet_rounds = if news {
            0
        } else {
            self.quiet_rounds.saturating_add(1)
        };
        self.next_round = now + self.backoff(config);
        if !news && covered {
            // The latest pings showed members holding equal roots: nothing to find.
            self.stats.rounds_quiet += 1;
            return Vec::new();
        }
        if let Some(rate) = config.state.state_bandwidth {
            self.refill(rate, now);
            if self.tokens < 0.0 {
                self.stats.rounds_throttled += 1;
                return Vec::new();
            }
        }
        self.stats.rounds += 1;
        self.earliest = now + config.state.state_interval;
        let mut out = Vec::new();
        let mut pool: Vec<SocketAddr> = candidates.to_vec();
        for _ in 0..config.state.state_fanout {
            if pool.is_empty() {
                break;
            }
            let j = if self.rng.gen::<f64>() < config.state.state_divergence_bias {
                // The partner least recently exchanged with (never: first).
                (0..pool.len())
                    .min_by_key(|&i| (self.last_exchange.get(&pool[i]).copied(), i))
                    .unwrap_or(0)
            } else {
                self.rng.gen_range(0..pool.len())
            };
            let peer = pool.swap_remove(j);
            self.last_exchange.insert(peer, now);
            self.open_with(config, now, peer, true, true, &mut out);
        }
        // Forget partners not seen for long: the map stays bounded by recent partners.
        let horizon = config.state.state_interval * 600;
        self.last_exchange
            .retain(|_, t| now.saturating_since(*t) < horizon);
        out
    }

    /// Opens exchanges of the per-node states and of the keyspace, as asked, with `peer`.
    fn open_with(
        &mut self,
        config: &Config,
        now: Time,
        peer: SocketAddr,
        nodes: bool,
        keyspace: bool,
        out: &mut Vec<(SocketAddr, Message)>,
    ) {
        for (nodes_tree, wanted) in [(true, nodes), (false, keyspace)] {
            if !wanted {
                continue;
            }
            self.next_id = (self.next_id + 1) % RESPONDER;
            let id = self.next_id;
            let mut msg = if nodes_tree {
                reconcile::open_nodes(&self.nodes, id)
            } else {
                reconcile::open(&self.keyspace, id)
            };
            if let Message::TreeHashes(h) = &mut msg {
                h.sender = Some(self.me.clone());
            }
            let ex = Self::exchange(config, id, true);
            self.open.insert((peer, id), (ex, now, false));
            self.stats.exchanges += 1;
            out.push((peer, msg));
        }
    }

    /// Expires own keys (every `state_interval`) and collects old tombstones and expired
    /// values (every quarter of the grace period, at most every minute: a scan of everything
    /// held).
    fn housekeeping(&mut self, config: &Config, now: Time) {
        let phys = self.physical(now);
        let me = self.me.clone();
        if self.nodes.get(&me).is_some() {
            self.nodes.update(&me, |s| s.expire(phys));
        }
        if now >= self.next_collect {
            self.stats.collected += self.keyspace.collect(phys) as u64;
            let every = (config.state.tombstone_grace / 4).min(std::time::Duration::from_secs(60));
            self.next_collect = now + every.max(config.state.state_interval);
            let grace = u64::try_from(config.state.tombstone_grace.as_micros()).unwrap_or(u64::MAX);
            self.stats.collected += self.nodes.collect(phys.saturating_sub(grace)) as u64;
        }
    }

    /// Bumps this node's heartbeat.
    pub fn beat(&mut self) {
        let generation = self.generation;
        let me = self.me.clone();
        self.nodes.update(&me, |s| {
            s.generation = s.generation.max(generation);
            s.beat();
        });
    }

    fn exchange(config: &Config, id: u32, initiator: bool) -> Exchange {
        let mut ex = Exchange::new(id, initiator, config.state.state_mode);
        ex.budget = config.state.state_budget;
        ex.entries_budget = config.state.state_chunk;
        ex
    }

    /// Handles a tree message from `from`; returns the answer, if due, and the members
    /// whose heartbeat it raised, or why it was dropped. `is_member(name, from)` says
    /// whether `name` is a live member at `from`: an opening must name one.
    pub fn on_message(
        &mut self,
        config: &Config,
        now: Time,
        from: SocketAddr,
        msg: &Message,
        is_member: impl Fn(&Name) -> bool,
    ) -> Result<(Option<Message>, Vec<Name>), DropReason> {
        self.admit(config, now, from, msg, is_member)?;
        let before: Vec<(Name, u64)> = match msg {
            Message::StateDeltas(m) => m
                .deltas
                .iter()
                .map(|d| {
                    let hb = self.nodes.get(&d.node).map_or(0, |s| s.heartbeat);
                    (d.node.clone(), hb)
                })
                .collect(),
            _ => Vec::new(),
        };
        let reply = self.handle(config, now, from, msg);
        let beats = before
            .into_iter()
            .filter(|(n, hb)| self.nodes.get(n).is_some_and(|s| s.heartbeat > *hb))
            .map(|(n, _)| n)
            .collect();
        Ok((reply, beats))
    }

    /// Whether a message belongs to an exchange this node takes part in; an opening from
    /// a live member starts one.
    fn admit(
        &mut self,
        config: &Config,
        now: Time,
        from: SocketAddr,
        msg: &Message,
        is_member: impl Fn(&Name) -> bool,
    ) -> Result<(), DropReason> {
        let id = match msg {
            Message::TreeHashes(m) => m.id,
            Message::TreeItems(m) => m.id,
            Message::TreeEntries(m) => m.id,
            Message::StateDeltas(m) => m.id,
            _ => return Err(DropReason::Unexpected),
        };
        if id & RESPONDER != 0 {
            // An answer: to an exchange this node opened with `from` (checked in `handle`).
            return if self.open.contains_key(&(from, id & !RESPONDER)) {
                Ok(())
            } else {
                Err(DropReason::Unsolicited)
            };
        }
        let key = (from, id);
        if let Message::TreeHashes(m) = msg {
            if m.level == 0 {
                match &m.sender {
                    Some(name) if is_member(name) => {}
                    _ => return Err(DropReason::NotMember),
                }
                if !self.serving.contains_key(&key) && self.serving.len() >= MAX_SERVING {
                    let timeout = config.membership.sync_timeout;
                    self.serving
                        .retain(|_, last| now.saturating_since(*last) < timeout);
                    if self.serving.len() >= MAX_SERVING {
                        return Err(DropReason::RateLimited);
                    }
                }
                self.serving.insert(key, now);
                return Ok(());
            }
        }
        match self.serving.get_mut(&key) {
            Some(last) => {
                *last = now;
                Ok(())
            }
            None => Err(DropReason::Unsolicited),
        }
    }

    fn handle(
        &mut self,
        config: &Config,
        now: Time,
        from: SocketAddr,
        msg: &Message,
    ) -> Option<Message> {
        let phys = self.physical(now);
        // Writes stamped too far in our future would win every later write: they are
        // refused (and counted); the others advance our clock past them.
        let sanitized;
        let msg = match msg {
            Message::TreeEntries(m) => {
                let refused: Vec<bool> = m
                    .entries
                    .iter()
                    .map(|(_, v)| match v {
                        Value::Lww(l) => self.hlc.observe(l.at, phys).is_err(),
                        _ => false,
                    })
                    .collect();
                let n = refused.iter().filter(|r| **r).count();
                if n == 0 {
                    msg
                } else {
                    // Copied only when something must be left out.
                    self.stats.clock_refusals += n as u64;
                    let mut keep = m.clone();
                    let mut flags = refused.into_iter();
                    keep.entries.retain(|_| !flags.next().unwrap_or(false));
                    sanitized = Message::TreeEntries(keep);
                    &sanitized
                }
            }
            other => other,
        };
        let id = match msg {
            Message::TreeHashes(m) => m.id,
            Message::TreeItems(m) => m.id,
            Message::TreeEntries(m) => m.id,
            Message::StateDeltas(m) => m.id,
            _ => return None,
        };
        let mut stores = Stores {
            keyspace: &mut self.keyspace,
            nodes: &mut self.nodes,
        };
        if id & RESPONDER != 0 {
            let key = (from, id & !RESPONDER);
            let (ex, _, moved) = self.open.get_mut(&key)?;
            if matches!(
                msg,
                Message::TreeItems(_) | Message::TreeEntries(_) | Message::StateDeltas(_)
            ) {
                *moved = true;
            }
            let reply = ex.step_stores(&mut stores, msg, phys);
            if reply.is_none() {
                if let Some((_, _, moved)) = self.open.remove(&key) {
                    if moved {
                        self.stats.exchanges_divergent += 1;
                    }
                }
            }
            reply
        } else {
            let mut ex = Self::exchange(config, id | RESPONDER, false);
            let reply = ex.step_stores(&mut stores, msg, phys);
            let over = match &reply {
                None => true,
                Some(Message::TreeHashes(h)) => h.ranges.is_empty(),
                Some(_) => false,
            };
            if over {
                // Nothing more can come of it: the exchange is over on this side.
                self.serving.remove(&(from, id));
            }
            reply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::hlc::Timestamp;
    use crate::state::keyspace::lww;
    use crate::state::messages::{TreeEntries, TREE_KEYSPACE};
    use std::time::Duration;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7946))
    }

    fn secs(t: u64) -> Time {
        Time::ZERO + Duration::from_secs(t)
    }

    /// A node holding state whose first round has run, at 10 s.
    fn started() -> (Config, Replication) {
        let config = Config::lan();
        let mut r = Replication::new(&config, Name::new("me").unwrap(), 1, Time::ZERO);
        r.set_own("k", b"v".to_vec(), None, Time::ZERO);
        let out = r.tick(&config, secs(10), &[addr(1), addr(2), addr(3)]);
        // News (the write): three partners, two trees each.
        assert_eq!(out.len(), 6);
        (config, r)
    }

    #[test]
    fn rounds_are_skipped_while_pings_show_equal_roots() {
        let (config, mut r) = started();
        assert_eq!(
            r.deadline(&config),
            secs(11),
            "housekeeping and the next round"
        );
        r.compared(&config, secs(11), addr(7), true, true);
        r.compared(&config, secs(11), addr(8), true, true);
        for t in [11, 12, 13, 14, 15, 16, 17, 18] {
            assert!(r.tick(&config, secs(t), &[addr(1)]).is_empty(), "{t}");
            r.compared(&config, secs(t), addr(7), true, true);
            r.compared(&config, secs(t), addr(8), true, true);
        }
        assert_eq!(
            (r.stats.rounds, r.stats.rounds_quiet),
            (1, 3),
            "at 11, 13 and 17 s"
        );
    }

    #[test]
    fn without_pings_rounds_back_off_to_the_maximum_and_news_ends_the_wait() {
        let (config, mut r) = started();
        let mut at = Vec::new();
        for t in 11..400 {
            if !r.tick(&config, secs(t), &[addr(1)]).is_empty() {
                at.push(t);
            }
        }
        // 1, 2, 4, ... 64 s apart, then 64 s (`state_backoff_max`).
        assert_eq!(at, [11, 13, 17, 25, 41, 73, 137, 201, 265, 329, 393]);
        r.set_own("k", b"w".to_vec(), None, secs(400));
        assert!(r.deadline(&config) <= secs(400), "news is due at once");
        assert_eq!(r.tick(&config, secs(400), &[addr(1)]).len(), 2);
        assert_eq!(r.deadline(&config), secs(401));
    }

    #[test]
    fn a_ping_showing_a_difference_opens_an_exchange_of_that_store_at_once() {
        let (config, mut r) = started();
        let out = r.compared(&config, secs(10), addr(9), true, false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, addr(9));
        assert!(matches!(&out[0].1, Message::TreeHashes(h) if h.tree == TREE_KEYSPACE));
        // Not twice while it runs, and not with a partner of the round still under way.
        assert!(r
            .compared(&config, secs(10), addr(9), false, false)
            .is_empty());
        assert!(r
            .compared(&config, secs(10), addr(1), false, true)
            .is_empty());
        // The difference is no news of this node's: no round before the backed-off one.
        assert_eq!(r.deadline(&config), secs(11));
        // Once the exchange ended, not again within a second: forged pings make no storm.
        r.open.clear();
        assert!(r
            .compared(&config, secs(10), addr(9), true, false)
            .is_empty());
        assert_eq!(r.compared(&config, secs(11), addr(9), true, false).len(), 1);
        assert_eq!(r.stats.exchanges_on_ping, 2);
    }

    #[test]
    fn writes_stamped_too_far_ahead_are_refused_and_counted() {
        let config = Config::lan();
        let me = Name::new("me").unwrap();
        let mut r = Replication::new(&config, me, 1, Time::ZERO);
        let now = Time::ZERO + Duration::from_secs(100);
        let phys = r.physical(now);
        let w = Name::new("w").unwrap();
        let ahead = phys + 2 * config.state.max_clock_drift.as_micros() as u64;
        let msg = Message::TreeEntries(TreeEntries {
            id: 5,
            tree: TREE_KEYSPACE,
            entries: vec![
                (
                    b"far".to_vec(),
                    lww(Timestamp::new(ahead, 0), &w, Some(vec![1]), None),
                ),
                (
                    b"near".to_vec(),
                    lww(Timestamp::new(phys, 0), &w, Some(vec![2]), None),
                ),
            ],
            want: Vec::new(),
        });
        let from: SocketAddr = "10.0.0.9:7946".parse().unwrap();
        // Entries arrive as a step of an exchange this node answers.
        r.serving.insert((from, 5), now);
        r.on_message(&config, now, from, &msg, |_| true).unwrap();
        assert!(r.keyspace.get(b"far", phys).is_none());
        assert!(r.keyspace.get(b"near", phys).is_some());
        assert_eq!(r.stats.clock_refusals, 1);
        // Our clock moved past the accepted write.
        assert!(r.hlc.last() > Timestamp::new(phys, 0));
    }
}
