//! The sans-IO node: inputs are bytes with their arrival time, timeouts and commands;
//! outputs, polled, are transmits, events and the next deadline.
//!
//! This module is the facade: it owns each protocol's sub-machine and the [`context`]
//! they share, and delegates. Where a packet goes: [`dispatch`] opens and decodes it and
//! routes each message to its protocol (`detection`, `membership`, `rumor`, `aggregate`,
//! `replication`), whose handlers answer through the context's outbox; [`timers`] runs
//! each protocol's ticks and computes the next deadline as the earliest of theirs.

pub(crate) mod context;
mod dispatch;
mod timers;

pub use crate::error::CommandError;
pub use crate::state::{
    Agreement, KvChange, KvEntry, KvWrite, LostClaim, SlotMap, SlotOwner, Target, Versions,
    MAX_SLOTS,
};
pub use context::Transmit;

use crate::aggregate::rounds::Aggregation;
use crate::aggregate::{AggregateError, Estimate};
use crate::config::{Config, ConfigError};
use crate::detection::Detection;
use crate::event::Event;
use crate::member::{Member, State};
use crate::membership::messages::{Leave, MAX_TAGS_LEN};
use crate::membership::Membership;
use crate::name::Name;
use crate::roots::Roots;
use crate::rumor::mongering::RumorMongering;
use crate::state::endpoint::NodeState;
use crate::state::keyspace::{Applied, Keyspace, Policy, Value};
use crate::state::replication::{Replication, ReplicationStats};
use crate::stats::Stats;
use crate::time::Time;
use crate::wire::NodeAddr;
use context::Ctx;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

/// One member's protocol state machine.
pub struct Node {
    ctx: Ctx,
    detection: Detection,
    membership: Membership,
    rumors: RumorMongering,
    aggregation: Aggregation,
    replication: Replication,
}

impl Node {
    /// A node named `name`, reachable at `addr`, with its RNG seeded by `seed`.
    pub fn new(
        config: Config,
        name: Name,
        addr: SocketAddr,
        seed: u64,
        now: Time,
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        // Each timer starts at a random point of its first interval, so nodes started
        // together do not tick in lockstep. (The draws' order is part of a seeded run.)
        let probe = now + config.detection.probe_interval.mul_f64(rng.gen::<f64>());
        let gossip = now + config.membership.gossip_interval.mul_f64(rng.gen::<f64>());
        let push_pull = now
            + config
                .membership
                .push_pull_interval
                .mul_f64(0.5 + rng.gen::<f64>());
        let reconnect = now
            + config
                .membership
                .reconnect_interval
                .mul_f64(rng.gen::<f64>())
            + config.membership.reconnect_interval;
        let aggregate = now
            + config
                .aggregate
                .aggregate_interval
                .mul_f64(rng.gen::<f64>());
        Ok(Node {
            detection: Detection::new(&config, now, probe),
            membership: Membership::new(&config, now, [gossip, push_pull, reconnect]),
            rumors: RumorMongering::new(&config, now),
            aggregation: Aggregation::new(&config, aggregate),
            replication: Replication::new(&config, name.clone(), seed, now),
            ctx: Ctx::new(config, NodeAddr { name, addr }, rng, now),
        })
    }

    // ----- what the node is and knows -----

    /// This node's name.
    pub fn name(&self) -> &Name {
        &self.ctx.me.name
    }

    /// This node's advertised address.
    pub fn addr(&self) -> SocketAddr {
        self.ctx.me.addr
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u32 {
        self.membership.incarnation()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.ctx.awareness.score()
    }

    /// What this node is doing now: probe, health score, suspicions, rumour queue.
    pub fn internals(&self, now: Time) -> crate::inspect::Internals {
        let mut suspicions: Vec<_> = (self.membership.suspicions.iter())
            .map(|(n, s)| s.view(n, now))
            .collect();
        suspicions.sort_by_key(|s| (s.remaining.is_none(), s.remaining));
        crate::inspect::Internals {
            health_score: self.health_score(),
            probe: self.detection.probe_view(now),
            suspicions,
            queue_depth: self.pending_broadcasts(),
            incarnation: self.incarnation(),
        }
    }

    /// Members known, self included, in any state.
    pub fn num_members(&self) -> usize {
        self.ctx.members.len()
    }

    /// Members alive or suspect, self included.
    pub fn num_live(&self) -> usize {
        self.ctx.members.live()
    }

    /// Every known member, self included.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let m = &self.ctx.members;
        m.records().map(|r| m.to_member(r))
    }

    /// One member by name.
    pub fn member(&self, name: &Name) -> Option<Member> {
        let m = &self.ctx.members;
        m.find(name).map(|i| m.member(i))
    }

    /// The state this node holds for `name`, without copying the record.
    pub fn state_of(&self, name: &Name) -> Option<State> {
        let m = &self.ctx.members;
        m.find(name).map(|i| m.get(i).state)
    }

    /// Broadcasts still queued for dissemination.
    pub fn pending_broadcasts(&self) -> usize {
        self.ctx.broadcasts.len()
    }

    /// The digest root of this node's member table (equal on nodes that agree).
    pub fn digest_root(&self) -> u64 {
        self.ctx.members.digest().root()
    }

    /// Whether `leave` was called.
    pub fn is_leaving(&self) -> bool {
        self.ctx.leaving
    }

    /// The roots of this node's membership table, per-node states and keyspace.
    fn roots(&self) -> Roots {
        let (nodes, keyspace) = self.replication.roots();
        Roots {
            membership: self.ctx.members.digest().root(),
            nodes,
            keyspace,
        }
    }

    // ----- membership commands -----

    /// Starts this node at `incarnation` (a restarted node that remembers its last one).
    pub fn set_incarnation(&mut self, now: Time, incarnation: u32) {
        self.membership
            .set_incarnation(&mut self.ctx, now, incarnation);
    }

    /// Joins the cluster through `seeds`: an anti-entropy exchange with each, retried on
    /// the reconnect timer until one answers.
    pub fn join(&mut self, now: Time, seeds: &[SocketAddr]) {
        self.membership.join(&mut self.ctx, now, seeds);
    }

    /// Leaves gracefully: everyone will record this node as left, not failed. The node keeps
    /// answering probes until the driver stops it; stop once `pending_broadcasts()` is zero
    /// or after a few gossip intervals.
    pub fn leave(&mut self, now: Time) {
        if self.ctx.leaving {
            return;
        }
        self.ctx.leaving = true;
        self.detection.stop();
        self.membership.leave(&mut self.ctx, now);
    }

    /// Records a failed member as left on its behalf, as Serf's force-leave does, and spreads
    /// the news: it is then reaped after `left_reap_timeout` instead of being retried as a
    /// dead member. Refused for a member that is not failed here.
    pub fn force_leave(&mut self, now: Time, name: &Name) -> Result<(), CommandError> {
        let members = &self.ctx.members;
        let rec = members
            .find(name)
            .map(|i| members.get(i))
            .ok_or_else(|| CommandError::UnknownMember(name.as_str().to_string()))?;
        if rec.state != State::Dead {
            return Err(CommandError::NotFailed {
                name: name.as_str().to_string(),
                state: rec.state,
            });
        }
        let incarnation = rec.incarnation;
        let leave = Leave {
            name: name.clone(),
            incarnation,
        };
        self.membership.on_leave(&mut self.ctx, now, leave);
        self.route_departures();
        Ok(())
    }

    /// Sets this node's tags and announces them with a new incarnation.
    pub fn set_tags(&mut self, now: Time, tags: Vec<u8>) -> Result<(), CommandError> {
        if tags.len() > MAX_TAGS_LEN {
            return Err(CommandError::TagsTooLong { len: tags.len() });
        }
        if self.ctx.leaving {
            return Err(CommandError::Left);
        }
        self.membership.set_tags(&mut self.ctx, now, tags);
        Ok(())
    }

    /// Starts keeping each direct probe's round trip (the last 1,024) for
    /// `take_rtt_samples`: a driver that exports a latency histogram calls this once.
    pub fn record_rtt_samples(&mut self) {
        self.detection.record_rtt_samples();
    }

    /// The round trips recorded since the last call, oldest first.
    pub fn take_rtt_samples(&mut self) -> Vec<Duration> {
        self.detection.take_rtt_samples()
    }

    /// Hands the members that left the live set to aggregation, whose running epoch their
    /// mass was part of.
    fn route_departures(&mut self) {
        for addr in self.membership.departed.drain(..) {
            self.aggregation.departed(&self.ctx.config, addr);
        }
    }

    // ----- outputs -----

    /// The next datagram or frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ctx.poll_transmit()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ctx.poll_event()
    }

    // ----- replicated state -----

    /// Sets the hybrid clock's offset: protocol time plus `offset_micros` is wall-clock time
    /// in microseconds since the UNIX epoch (the simulator leaves it at zero).
    pub fn set_wall_clock(&mut self, offset_micros: u64) {
        self.replication.set_wall_offset(offset_micros);
    }

    /// Sets this node's state generation: bump it at every start (a higher one replaces the
    /// state others hold for this node).
    pub fn set_generation(&mut self, generation: u64) {
        self.replication.set_generation(generation);
    }

    /// Sets a key of this node's own state, expiring after `ttl` if given; returns its
    /// version.
    pub fn set_state(
        &mut self,
        now: Time,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<u64, CommandError> {
        self.replication.set_state(&self.ctx, now, key, value, ttl)
    }

    /// Deletes a key of this node's own state; returns the tombstone's version.
    pub fn delete_state(&mut self, now: Time, key: &str) -> Option<u64> {
        self.replication.delete_own(key, now)
    }

    /// The state held for member `name` (this node's own included).
    pub fn node_state(&self, name: &Name) -> Option<&NodeState> {
        self.replication.nodes.get(name)
    }

    /// The value of `key` in `name`'s state, unless deleted or expired.
    pub fn state_value(&self, now: Time, name: &Name, key: &str) -> Option<&[u8]> {
        self.replication.state_value(now, name, key)
    }

    /// Writes a shared key last-write-wins (`None` deletes it), expiring after `ttl`.
    pub fn put_shared(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<(), CommandError> {
        self.replication.put_shared_checked(now, key, value, ttl)
    }

    /// Merges `value` into a shared key: how CRDT operations are written (build the new
    /// state from [`Node::shared`] and merge it in).
    pub fn merge_shared(&mut self, now: Time, key: &[u8], value: &Value) -> Applied {
        self.replication.merge_shared(key, value, now)
    }

    /// Resolves shared keys starting with `prefix` by `policy`.
    pub fn set_policy(&mut self, prefix: &[u8], policy: Policy) {
        self.replication.set_policy(prefix, policy);
    }

    /// The root hash of the per-node states held here: equal on two nodes iff (barring
    /// collisions) they hold the same copies.
    pub fn node_states_root(&self) -> u64 {
        self.replication.nodes.tree().root()
    }

    /// Every per-node state held here: member name, generation and highest version (what a
    /// reader compares to find the states that changed).
    pub fn node_state_versions(&self) -> impl Iterator<Item = (&Name, u64, u64)> + '_ {
        self.replication
            .nodes
            .iter()
            .map(|(n, s)| (n, s.generation, s.max_version))
    }

    /// The shared keyspace as held here.
    pub fn shared(&self) -> &Keyspace {
        &self.replication.keyspace
    }

    /// The hybrid-clock physical time at `now`, as keyspace reads take it.
    pub fn physical_time(&self, now: Time) -> u64 {
        self.replication.physical(now)
    }

    /// Replication counters.
    pub fn replication_stats(&self) -> &ReplicationStats {
        &self.replication.stats
    }

    /// Starts publishing, in this node's own state, which value of `target` it holds, so
    /// every member can tell whether the cluster agrees on it (as Cassandra's nodes publish
    /// their schema version). A target is a shared key, or a key of a member's own state.
    pub fn track(&mut self, now: Time, target: Target) {
        self.replication.track(&mut self.ctx, now, target);
    }

    /// Whether every live member (this one included) publishes the value of `target` this
    /// node holds; if not, who publishes another or none.
    pub fn agreement(&self, now: Time, target: &Target) -> Agreement {
        self.replication.agreement(&self.ctx, now, target)
    }

    /// What every live member publishes under `key` of its own state, grouped by value.
    pub fn versions(&self, now: Time, key: &str) -> Versions {
        self.replication.versions(&self.ctx, now, key)
    }

    /// The shared key `key` (or, with `prefix`, every key under it) that holds a value,
    /// with its modify index, in key order.
    pub fn kv_entries(&self, now: Time, key: &[u8], prefix: bool) -> Vec<KvEntry> {
        let phys = self.replication.physical(now);
        crate::state::kv::entries(&self.replication.keyspace, phys, key, prefix)
    }

    /// The shared keys under `prefix` that changed here after change count `after`.
    pub fn kv_changes(&self, now: Time, prefix: &[u8], after: u64) -> Vec<KvChange> {
        let phys = self.replication.physical(now);
        crate::state::kv::changes(&self.replication.keyspace, phys, prefix, after)
    }

    /// Check-and-set on a shared key: writes only if its modify index here is `cas` (0:
    /// only if it holds no value); returns whether it wrote.
    pub fn put_cas(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        cas: u64,
    ) -> Result<bool, CommandError> {
        self.replication.put_cas(now, key, value, cas)
    }

    /// A key-value client's write to a shared key (flags, check-and-set); returns whether
    /// it wrote.
    pub fn kv_write(
        &mut self,
        now: Time,
        key: &[u8],
        write: KvWrite,
    ) -> Result<bool, CommandError> {
        self.replication.kv_write(now, key, write)
    }

    /// Claims `slots` of ownership map `map` at `epoch` (default: one above the map's
    /// highest here); returns the epoch claimed at.
    pub fn claim(
        &mut self,
        now: Time,
        map: &str,
        slots: Range<u32>,
        epoch: Option<u64>,
    ) -> Result<u64, CommandError> {
        self.replication.claim(&self.ctx, now, map, slots, epoch)
    }

    /// Ownership map `map` as held here, and this node's claims that lost.
    pub fn slot_map(&self, now: Time, map: &str) -> SlotMap {
        self.replication.slot_map(&self.ctx, now, map)
    }

    // ----- user events -----

    /// Raises a user event: delivered here, then spread to every member by rumour mongering.
    pub fn broadcast(
        &mut self,
        now: Time,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        self.rumors.raise(&mut self.ctx, now, name, payload)
    }

    /// User events this node is still spreading.
    pub fn spreading_events(&self) -> usize {
        self.rumors.spreading()
    }

    // ----- aggregation -----

    /// Sets (or, with `None`, withdraws) this node's contribution to the metric `name`,
    /// aggregated cluster-wide by push-sum (see the `aggregate` module).
    pub fn contribute(&mut self, name: &str, value: Option<f64>) -> Result<(), AggregateError> {
        self.aggregation.contribute(&self.ctx, name, value)
    }

    /// This node's estimate of the cluster-wide aggregates of `name`.
    pub fn aggregate(&self, name: &str) -> Option<Estimate> {
        self.aggregation.estimate(name)
    }

    /// The running epoch's estimate of `name` (moving until the epoch settles).
    pub fn aggregate_current(&self, name: &str) -> Option<Estimate> {
        self.aggregation.aggregates.current(name)
    }

    /// This node's own contribution to `name`.
    pub fn contribution(&self, name: &str) -> Option<f64> {
        self.aggregation.aggregates.contribution(name)
    }

    /// The metrics aggregated here, sorted, without repeats.
    pub fn aggregate_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .aggregation
            .aggregates
            .names()
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
