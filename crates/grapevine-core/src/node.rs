//! The sans-IO SWIM node: inputs are bytes with their arrival time, timeouts and
//! commands; outputs, polled, are transmits, events and the next deadline.
//!
//! Where a message goes: `handle_datagram`/`handle_frame` open and check the packet
//! (`wire::open_packet`), decode each message and call `dispatch`, which hands it to
//! the handler named after it (`on_ping`, `on_ack`, `on_alive`, `on_sync_request`, …).
//! Handlers answer through `send_packet`/`send_frame`, which queue a [`Transmit`].

use crate::admission::Limiter;
use crate::aggregate::{AggregateError, Aggregates, Estimate};
use crate::awareness::Awareness;
use crate::broadcast::BroadcastQueue;
use crate::config::{Config, ConfigError, Detector};
use crate::event::Event;
use crate::filter::Filter;
use crate::incarnation;
use crate::member::{Member, State};
use crate::membership::{Membership, Record};
use crate::name::Name;
use crate::phi::PhiDetector;
use crate::probe::{Phase, Probe, ProbeOrder, Relay};
use crate::replication::{Replication, ReplicationStats};
use crate::roots::{Coverage, Roots};
use crate::rumor::{Rules, Rumors};
use crate::state::endpoint::NodeState;
use crate::state::keyspace::{Applied, Keyspace, Policy, Value};
use crate::stats::{DropReason, Stats};
use crate::suspicion::Suspicion;
use crate::time::Time;
use crate::wire::{
    self, Ack, Alive, Dead, Entry, IndirectPing, Leave, Message, Nack, NodeAddr, PacketBuilder,
    Ping, Suspect, SyncBuckets, SyncEntries, SyncRequest, MAX_TAGS_LEN, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};
use bytes::Bytes;
use hashbrown::HashMap;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Bytes to send, and whether they need the reliable (stream) channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// `true`: one frame on the reliable channel (TCP); `false`: one datagram (UDP).
    pub reliable: bool,
    /// The packet, header and checksum included.
    pub payload: Bytes,
}

/// An error from a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Tags over the wire limit.
    #[error("tags are {len} bytes, the limit is {MAX_TAGS_LEN}")]
    TagsTooLong {
        /// Their length.
        len: usize,
    },
    /// The node has left.
    #[error("the node has left the cluster")]
    Left,
    /// Over this member's rate of user events (`events_per_origin`).
    #[error("too many user events: at most {burst} at once and {per_second} a second")]
    RateLimited {
        /// The burst allowed.
        burst: u32,
        /// The sustained rate allowed, a second.
        per_second: u32,
    },
    /// No member of that name is known.
    #[error("no member named {0:?} is known")]
    UnknownMember(String),
    /// Force-leave applies to failed members only: a live one would refute it.
    #[error("{name:?} is {state:?}, not failed: only a failed member can be forced to leave")]
    NotFailed {
        /// The member.
        name: String,
        /// Its state here.
        state: State,
    },
    /// A key, value or name over its wire limit.
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Where a claim about a member came from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
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

/// A member heard of by gossip or from a stranger, not yet in the table: it must answer a
/// ping from this node first (see `verify`).
struct Candidate {
    alive: Alive,
    seq: u32,
    deadline: Time,
    tries: u8,
    relay: bool,
}

struct PendingSync {
    dst: SocketAddr,
    started: Time,
}

struct Timers {
    probe: Time,
    gossip: Time,
    push_pull: Time,
    reconnect: Time,
    /// The next heartbeat and phi check (phi-accrual detection only).
    heartbeat: Time,
    /// The next push of user events (while any is spreading).
    rumor: Time,
    /// The next aggregation round (while anything is aggregated).
    aggregate: Time,
}

/// One member's protocol state machine.
pub struct Node {
    config: Config,
    me: NodeAddr,
    me_idx: u32,
    incarnation: u32,
    tags: Vec<u8>,
    rng: Xoshiro256PlusPlus,
    members: Membership,
    order: ProbeOrder,
    probe: Option<Probe>,
    relays: HashMap<u32, Relay>,
    suspicions: HashMap<Name, Suspicion>,
    /// Suspects owed a last-chance probe before they are declared dead.
    final_probes: Vec<Name>,
    /// When a probe answered only over TCP was last logged, and how many since.
    fallback_logged: Option<Time>,
    fallbacks_unlogged: u64,
    broadcasts: BroadcastQueue,
    awareness: Awareness,
    syncs: HashMap<u32, PendingSync>,
    seeds: Vec<SocketAddr>,
    seq: u32,
    next_sync_id: u32,
    reconnect_ticks: u32,
    timers: Timers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Round trips of direct probes not yet taken by `take_rtt_samples`, if recorded.
    rtt_samples: Option<VecDeque<Duration>>,
    leaving: bool,
    synced: bool,
    /// The version of the packet being handled: replies are written in it.
    rx_version: u8,
    /// Exchanges still to run at the catch-up interval: reset by a divergent exchange, so a
    /// node keeps checking until several random peers in a row agree with it.
    catch_up: u32,
    /// Per-node state, the shared keyspace and their exchanges.
    replication: Replication,
    /// Membership roots compared by pings.
    sync_coverage: Coverage,
    /// Heartbeat arrivals, for phi-accrual detection.
    phi: PhiDetector,
    /// User events being spread, and those seen.
    rumors: Rumors,
    aggregates: Aggregates,
    /// New members taken in by gossip and from strangers, by source IP.
    joins: Limiter<IpAddr>,
    /// New members being verified, by name, and their names by the seq of their ping.
    candidates: HashMap<Name, Candidate>,
    candidate_seqs: HashMap<u32, Name>,
    /// The earliest of the candidates' deadlines (`Time::MAX` with none).
    candidates_due: Time,
    /// New user events accepted, by origin.
    event_budget: Limiter<Name>,
    /// Targets whose value this node publishes for agreement checks.
    tracked: Vec<Target>,
    /// The tracked targets the cluster agreed on at the last check.
    agreed: Vec<Target>,
}

/// Something whose value the cluster may agree on: a shared key, or a key of one member's
/// own state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A shared key.
    Shared(Vec<u8>),
    /// `(member, key)`: a key of that member's state.
    NodeKey(Name, String),
    /// The whole shared keyspace (its Merkle root): agreement means every live member holds
    /// exactly the same keys, versions and tombstones.
    Keyspace,
}

impl Target {
    /// The key of a member's own state under which it publishes what it holds of this.
    pub fn seen_key(&self) -> String {
        let h = match self {
            Target::Shared(k) => xxhash_rust::xxh3::xxh3_64(k),
            Target::Keyspace => 0x6b65_7973_7061_6365,
            Target::NodeKey(n, k) => {
                let mut b = n.as_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(k.as_bytes());
                xxhash_rust::xxh3::xxh3_64(&b) ^ 1
            }
        };
        format!("__seen/{h:016x}")
    }
}

/// Whether the live members agree on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// Every live member publishes the value held here.
    pub agreed: bool,
    /// Live members that publish another value.
    pub differ: Vec<Name>,
    /// Live members that publish nothing for it (yet).
    pub unknown: Vec<Name>,
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
        let mut members = Membership::new();
        let me_idx = members.insert(
            Record::new(name.clone(), 0, State::Alive, PROTOCOL_VERSION),
            addr,
            &[],
            now,
        );
        let mut order = ProbeOrder::new();
        order.insert(me_idx);
        let jitter = |rng: &mut Xoshiro256PlusPlus, d: std::time::Duration| {
            now + d.mul_f64(rng.gen::<f64>())
        };
        let timers = Timers {
            probe: jitter(&mut rng, config.probe_interval),
            gossip: jitter(&mut rng, config.gossip_interval),
            push_pull: now + config.push_pull_interval.mul_f64(0.5 + rng.gen::<f64>()),
            reconnect: jitter(&mut rng, config.reconnect_interval) + config.reconnect_interval,
            heartbeat: if config.detector == Detector::Swim {
                Time::MAX
            } else {
                now + config.heartbeat_interval
            },
            rumor: now,
            aggregate: jitter(&mut rng, config.aggregate_interval),
        };
        let awareness = Awareness::new(if config.lifeguard {
            config.awareness_max_multiplier
        } else {
            1
        });
        let broadcasts = BroadcastQueue::new(config.max_broadcasts);
        let name_for_state = name.clone();
        Ok(Node {
            me: NodeAddr { name, addr },
            me_idx,
            incarnation: 0,
            tags: Vec::new(),
            rng,
            members,
            order,
            probe: None,
            relays: HashMap::new(),
            suspicions: HashMap::new(),
            final_probes: Vec::new(),
            fallback_logged: None,
            fallbacks_unlogged: 0,
            broadcasts,
            awareness,
            syncs: HashMap::new(),
            seeds: Vec::new(),
            seq: 0,
            next_sync_id: 0,
            reconnect_ticks: 0,
            timers,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            rtt_samples: None,
            leaving: false,
            synced: false,
            rx_version: PROTOCOL_VERSION,
            catch_up: 0,
            replication: Replication::new(&config, name_for_state, seed, now),
            sync_coverage: Coverage::default(),
            phi: PhiDetector::new(config.heartbeat_interval),
            rumors: Rumors::default(),
            aggregates: Aggregates::new(config.aggregate_epoch_rounds),
            joins: Limiter::new(config.new_members_per_source, config.new_members_total, now),
            candidates: HashMap::new(),
            candidate_seqs: HashMap::new(),
            candidates_due: Time::MAX,
            event_budget: Limiter::new(config.events_per_origin, config.events_total, now),
            tracked: Vec::new(),
            agreed: Vec::new(),
            config,
        })
    }

    // ----- public accessors -------------------------------------------------------------

    /// This node's name.
    pub fn name(&self) -> &Name {
        &self.me.name
    }

    /// This node's advertised address.
    pub fn addr(&self) -> SocketAddr {
        self.me.addr
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    /// Members known, self included, in any state.
    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    /// Members alive or suspect, self included.
    pub fn num_live(&self) -> usize {
        self.members.live()
    }

    /// Every known member, self included.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.members.records().map(|r| self.members.to_member(r))
    }

    /// One member by name.
    pub fn member(&self, name: &Name) -> Option<Member> {
        self.members.find(name).map(|i| self.members.member(i))
    }

    /// The state this node holds for `name`, without copying the record.
    pub fn state_of(&self, name: &Name) -> Option<State> {
        self.members.find(name).map(|i| self.members.get(i).state)
    }

    /// Broadcasts still queued for dissemination.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// The digest root of this node's member table (equal on nodes that agree).
    pub fn digest_root(&self) -> u64 {
        self.members.digest().root()
    }

    // ----- commands ---------------------------------------------------------------------

    /// Starts this node at `incarnation` (a restarted node that remembers its last one).
    pub fn set_incarnation(&mut self, now: Time, incarnation: u32) {
        self.incarnation = incarnation;
        self.members
            .update(self.me_idx, now, None, |r| r.incarnation = incarnation);
    }

    /// Joins the cluster through `seeds`: an anti-entropy exchange with each, retried on
    /// the reconnect timer until one answers.
    pub fn join(&mut self, now: Time, seeds: &[SocketAddr]) {
        for s in seeds {
            if *s != self.me.addr && !self.seeds.contains(s) {
                self.seeds.push(*s);
            }
        }
        self.announce(now);
        for &s in seeds {
            self.start_sync(now, s, true);
        }
    }

    /// Leaves gracefully: everyone will record this node as left, not failed. The node keeps
    /// answering probes until the driver stops it; stop once `pending_broadcasts()` is zero
    /// or after a few gossip intervals.
    pub fn leave(&mut self, now: Time) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.probe = None;
        let inc = self.incarnation;
        self.members
            .update(self.me_idx, now, None, |r| r.state = State::Left);
        let msg = Message::Leave(Leave {
            name: self.me.name.clone(),
            incarnation: inc,
        });
        self.broadcasts.push(self.me.name.clone(), msg.encode());
        self.gossip(now);
    }

    /// Records a failed member as left on its behalf, as Serf's force-leave does, and spreads
    /// the news: it is then reaped after `left_reap_timeout` instead of being retried as a
    /// dead member. Refused for a member that is not failed here.
    pub fn force_leave(&mut self, now: Time, name: &Name) -> Result<(), CommandError> {
        let rec = self
            .members
            .find(name)
            .map(|i| self.members.get(i))
            .ok_or_else(|| CommandError::UnknownMember(name.as_str().to_string()))?;
        if rec.state != State::Dead {
            return Err(CommandError::NotFailed {
                name: name.as_str().to_string(),
                state: rec.state,
            });
        }
        let incarnation = rec.incarnation;
        self.on_leave(
            now,
            Leave {
                name: name.clone(),
                incarnation,
            },
        );
        Ok(())
    }

    /// Starts keeping each direct probe's round trip (the last 1,024) for
    /// `take_rtt_samples`: a driver that exports a latency histogram calls this once.
    pub fn record_rtt_samples(&mut self) {
        self.rtt_samples.get_or_insert_with(VecDeque::new);
    }

    /// The round trips recorded since the last call, oldest first.
    pub fn take_rtt_samples(&mut self) -> Vec<Duration> {
        self.rtt_samples
            .as_mut()
            .map(|s| s.drain(..).collect())
            .unwrap_or_default()
    }

    /// Whether `leave` was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Sets this node's tags and announces them with a new incarnation.
    pub fn set_tags(&mut self, now: Time, tags: Vec<u8>) -> Result<(), CommandError> {
        if tags.len() > MAX_TAGS_LEN {
            return Err(CommandError::TagsTooLong { len: tags.len() });
        }
        if self.leaving {
            return Err(CommandError::Left);
        }
        self.tags = tags;
        self.incarnation = self.incarnation.wrapping_add(1);
        self.announce(now);
        Ok(())
    }

    fn announce(&mut self, now: Time) {
        let (inc, tags) = (self.incarnation, self.tags.clone());
        self.members
            .update(self.me_idx, now, None, |r| r.incarnation = inc);
        self.members.set_tags(self.me_idx, &tags);
        let alive = self.alive_msg();
        self.broadcasts.push(self.me.name.clone(), alive.encode());
    }

    fn alive_msg(&self) -> Message {
        Message::Alive(Alive {
            name: self.me.name.clone(),
            addr: self.me.addr,
            incarnation: self.incarnation,
            tags: self.tags.clone(),
            protocol: PROTOCOL_VERSION,
        })
    }

    // ----- outputs ----------------------------------------------------------------------

    /// The next datagram or frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > IDLE_QUEUE_CAPACITY {
            self.transmits.shrink_to(IDLE_QUEUE_CAPACITY);
        }
        t
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        // A sync can add thousands of events at once; don't keep that capacity forever.
        if e.is_none() && self.events.capacity() > IDLE_QUEUE_CAPACITY {
            self.events.shrink_to(IDLE_QUEUE_CAPACITY);
        }
        e
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Time {
        let t = &self.timers;
        let mut next = t
            .probe
            .min(t.push_pull)
            .min(t.reconnect)
            .min(self.replication.deadline(&self.config))
            .min(t.heartbeat);
        if self.rumors.spreading() > 0 {
            next = next.min(t.rumor);
        }
        if self.aggregates.is_active() {
            next = next.min(t.aggregate);
        }
        // The gossip tick only matters when there is something to gossip; an idle node is not
        // woken five times a second for nothing. A rumour queued after a quiet spell goes out
        // at once, then at the gossip interval.
        if !self.broadcasts.is_empty() {
            next = next.min(t.gossip);
        }
        if let Some(p) = &self.probe {
            next = next.min(if p.phase == Phase::Direct {
                p.direct_deadline
            } else {
                p.end
            });
        }
        for r in self.relays.values() {
            next = next.min(r.deadline);
        }
        for s in self.suspicions.values() {
            next = next.min(s.deadline());
        }
        next.min(self.candidates_due)
    }

    // ----- inputs -----------------------------------------------------------------------

    /// A datagram arrived from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.handle_input(now, from, bytes, false);
    }

    /// A frame arrived on the reliable channel from `from` at `now`.
    pub fn handle_frame(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.handle_input(now, from, bytes, true);
    }

    fn handle_input(&mut self, now: Time, from: SocketAddr, bytes: &[u8], reliable: bool) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let max = if reliable {
            self.config.max_frame
        } else {
            self.config.max_datagram
        };
        // A frame within the channel's limit must also be within its type's.
        let max = match (reliable, wire::peek_first_type(bytes, bytes.len())) {
            (true, Ok(Some(Some(code)))) => max.min(wire::frame_limit(code)),
            _ => max,
        };
        let packet = match wire::open_packet(bytes, &self.config.label, max) {
            Ok(p) => {
                Stats::packet_bytes(&mut self.stats.bytes_in_by_type, bytes);
                p
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped packet");
                self.stats.drop(DropReason::of(&e));
                return;
            }
        };
        // Decode everything first: a packet with one bad message is dropped whole.
        let mut msgs = Vec::new();
        for raw in packet.messages() {
            match raw.and_then(|raw| raw.decode()) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => self.stats.drop(DropReason::UnknownType),
                Err(e) => {
                    tracing::debug!(%from, error = %e, "dropped malformed packet");
                    self.stats.drop(DropReason::of(&e));
                    return;
                }
            }
        }
        self.rx_version = packet.version;
        for m in msgs {
            self.stats.messages_in[m.kind() as usize & 31] += 1;
            self.dispatch(now, from, m, reliable);
        }
        self.rx_version = PROTOCOL_VERSION;
    }

    fn dispatch(&mut self, now: Time, from: SocketAddr, msg: Message, reliable: bool) {
        match msg {
            Message::Ping(m) => self.on_ping(now, from, m, reliable),
            Message::IndirectPing(m) => self.on_indirect_ping(now, from, m),
            Message::Ack(m) => self.on_ack(now, from, m, reliable),
            Message::Nack(m) => self.on_nack(m),
            Message::Alive(m) => self.on_alive(now, m, Origin::Gossip(from)),
            Message::Suspect(m) => {
                let about_me = m.name == self.me.name;
                self.on_suspect(now, m, Origin::Gossip(from));
                if about_me && reliable {
                    self.deny_to(from);
                }
            }
            Message::Dead(m) => {
                let about_me = m.name == self.me.name;
                self.on_dead(now, m, Origin::Gossip(from));
                if about_me && reliable {
                    self.deny_to(from);
                }
            }
            Message::Leave(m) => self.on_leave(now, m),
            Message::SyncRequest(_)
            | Message::SyncBuckets(_)
            | Message::SyncPush(_)
            | Message::SyncPull(_)
                if !reliable =>
            {
                self.stats.drop(DropReason::WrongChannel)
            }
            Message::SyncRequest(m) => self.on_sync_request(now, from, m),
            Message::SyncBuckets(m) => self.on_sync_buckets(now, from, m),
            Message::SyncPush(m) => self.on_sync_push(now, from, m),
            Message::SyncPull(m) => self.on_sync_pull(now, from, m),
            Message::TreeHashes(_)
            | Message::TreeItems(_)
            | Message::TreeEntries(_)
            | Message::StateDeltas(_)
                if !reliable =>
            {
                self.stats.drop(DropReason::WrongChannel)
            }
            m @ (Message::TreeHashes(_)
            | Message::TreeItems(_)
            | Message::TreeEntries(_)
            | Message::StateDeltas(_)) => self.on_state_message(now, from, &m),
            Message::UserEvent(m) => self.on_user_event(now, from, m),
            Message::Aggregate(m) => {
                let (me, members) = (&self.me.name, &self.members);
                self.aggregates
                    .on_message(from, &m, || Self::anchor_of(me, members));
            }
            Message::RumorAck(m) => {
                let rules = self.rumor_rules();
                self.rumors.feedback(m.id, m.knew, &rules, &mut self.rng);
            }
        }
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.progress_probe(now);
        if now >= self.timers.probe {
            self.start_probe(now);
        }
        self.expire_relays(now);
        self.expire_suspicions(now);
        self.expire_candidates(now);
        if now >= self.timers.gossip && !self.broadcasts.is_empty() {
            self.timers.gossip = now + self.config.gossip_interval;
            self.gossip(now);
        }
        if now >= self.timers.push_pull {
            self.push_pull_tick(now);
        }
        if now >= self.timers.reconnect {
            self.reconnect_tick(now);
        }
        if now >= self.timers.rumor && self.rumors.spreading() > 0 {
            self.timers.rumor = now + self.config.gossip_interval;
            self.push_rumors(now);
        }
        if now >= self.timers.heartbeat {
            self.timers.heartbeat = now + self.config.heartbeat_interval;
            self.replication.beat();
            self.convict(now);
        }
        self.state_round(now);
        if now >= self.timers.aggregate {
            self.timers.aggregate = now + self.config.aggregate_interval;
            self.aggregate_round();
        }
    }

    // ----- sending ----------------------------------------------------------------------

    fn retransmit_limit(&self) -> u32 {
        self.config.retransmit_limit(self.members.live())
    }

    /// The version to write for a member announcing `protocol`: the newest both speak.
    fn version_for(protocol: u8) -> u8 {
        protocol.clamp(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION)
    }

    /// The version to write to `dst`: the member's if known by name, else the one we were
    /// addressed in (replies), else ours.
    fn version_to(&self, name: Option<&Name>) -> u8 {
        match name.and_then(|n| self.members.find(n)) {
            Some(i) => Self::version_for(self.members.get(i).protocol()),
            None => self.rx_version,
        }
    }

    /// Sends `first` in one datagram, with queued broadcasts piggybacked up to the budget:
    /// to members only (see `send_bare`).
    fn send_packet(&mut self, dst: SocketAddr, version: u8, first: &[Message]) {
        self.send_datagram(dst, version, first, true);
    }

    /// Sends `first` in one datagram and nothing more: the answer to an address that is not
    /// known as a member's is no larger than what asked for it, so a spoofed source cannot
    /// turn this node into an amplifier.
    fn send_bare(&mut self, dst: SocketAddr, version: u8, first: &[Message]) {
        self.send_datagram(dst, version, first, false);
    }

    fn send_datagram(&mut self, dst: SocketAddr, version: u8, first: &[Message], piggyback: bool) {
        let mut b = PacketBuilder::new(version, &self.config.label, self.config.packet_budget);
        for m in first {
            b.push_forced(m);
            self.stats.sent(m.kind());
        }
        if piggyback {
            let limit = self.retransmit_limit();
            let piggybacked = self.broadcasts.fill(&mut b, limit);
            self.stats.broadcasts_out += piggybacked as u64;
        }
        self.emit(dst, false, b.finish());
    }

    /// Whether a live member other than this node is known at `addr`.
    fn live_member_at(&self, addr: SocketAddr) -> bool {
        self.members
            .at_addr(addr)
            .any(|i| i != self.me_idx && self.members.get(i).state.is_live())
    }

    /// Whether `name` is a live member known at `addr`.
    fn is_member_at(&self, name: &Name, addr: SocketAddr) -> bool {
        self.members.find(name).is_some_and(|i| {
            let r = self.members.get(i);
            r.state.is_live() && self.members.addr_of(r) == addr
        })
    }

    /// Sends one message as one frame on the reliable channel.
    fn send_frame(&mut self, dst: SocketAddr, version: u8, msg: &Message) {
        self.send_frame_of(dst, version, std::slice::from_ref(msg));
    }

    /// Sends messages together as one frame on the reliable channel.
    fn send_frame_of(&mut self, dst: SocketAddr, version: u8, msgs: &[Message]) {
        for m in msgs {
            self.stats.sent(m.kind());
        }
        let payload = wire::encode_packet(version, &self.config.label, msgs);
        self.emit(dst, true, payload);
    }

    fn emit(&mut self, dst: SocketAddr, reliable: bool, payload: Bytes) {
        self.stats.packets_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        Stats::packet_bytes(&mut self.stats.bytes_out_by_type, &payload);
        self.transmits.push_back(Transmit {
            dst,
            reliable,
            payload,
        });
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Up to `n` random members other than this node and `exclude` for which `pred` holds.
    fn random_members(
        &mut self,
        n: usize,
        exclude: Option<u32>,
        pred: impl Fn(&Membership, &Record) -> bool,
    ) -> Vec<u32> {
        let len = self.members.len();
        let mut out: Vec<u32> = Vec::with_capacity(n);
        if n == 0 || len <= 1 {
            return out;
        }
        let ok = |i: u32, out: &Vec<u32>, members: &Membership| {
            i != self.me_idx
                && Some(i) != exclude
                && !out.contains(&i)
                && pred(members, members.get(i))
        };
        if len > 64 {
            for _ in 0..16 * n {
                let i = self.rng.gen_range(0..len) as u32;
                if ok(i, &out, &self.members) {
                    out.push(i);
                    if out.len() == n {
                        return out;
                    }
                }
            }
        }
        // Small table, or most members ineligible: choose among all eligible ones.
        let mut eligible: Vec<u32> = (0..len as u32)
            .filter(|&i| ok(i, &out, &self.members))
            .collect();
        while out.len() < n && !eligible.is_empty() {
            let j = self.rng.gen_range(0..eligible.len());
            out.push(eligible.swap_remove(j));
        }
        out
    }

    // ----- probing ----------------------------------------------------------------------

    fn start_probe(&mut self, now: Time) {
        self.timers.probe = now + self.awareness.scale(self.config.probe_interval);
        if self.leaving || self.probe.is_some() || self.config.detector == Detector::Phi {
            return;
        }
        let Some(idx) = self.next_probe_target() else {
            return;
        };
        let rec = self.members.get(idx);
        let (target, addr, incarnation) =
            (rec.name.clone(), self.members.addr_of(rec), rec.incarnation);
        let version = Self::version_for(rec.protocol());
        let seq = self.next_seq();
        self.probe = Some(Probe {
            seq,
            target: target.clone(),
            addr,
            incarnation,
            started: now,
            direct_deadline: now + self.awareness.scale(self.config.probe_timeout),
            end: self.timers.probe,
            phase: Phase::Direct,
            expected_nacks: 0,
            nacks: 0,
        });
        self.stats.probes += 1;
        let ping = self.ping(seq, target.clone());
        let end = self.timers.probe;
        if let Some(s) = self.suspicion_mut(&target) {
            s.probing(end);
        }
        // Buddy system: tell the suspect it is suspected, so it refutes at once. The
        // accusation goes first: the suspect's refutation is then queued before it answers
        // the ping, and its ack carries the refutation back.
        match self.buddy_accusation(&target) {
            Some(buddy) => self.send_packet(addr, version, &[buddy, ping]),
            None => self.send_packet(addr, version, &[ping]),
        }
    }

    /// The accusation a probe of `target` carries (Lifeguard's buddy system): this node's
    /// view that it is suspect, if it is and Lifeguard is on.
    fn buddy_accusation(&self, target: &Name) -> Option<Message> {
        if !self.config.lifeguard {
            return None;
        }
        let rec = self.members.get(self.members.find(target)?);
        (rec.state == State::Suspect).then(|| {
            Message::Suspect(Suspect {
                name: target.clone(),
                incarnation: rec.incarnation,
                accuser: self.me.name.clone(),
            })
        })
    }

    /// This node's suspicion of `name`, if any. (Most probes and acks concern unsuspected
    /// members: an empty table is answered without hashing the name.)
    fn suspicion_mut(&mut self, name: &Name) -> Option<&mut Suspicion> {
        if self.suspicions.is_empty() {
            return None;
        }
        self.suspicions.get_mut(name)
    }

    /// The member to probe next: a suspect owed a last-chance probe (see
    /// `expire_suspicions`), picked at random so that nodes holding several share the work,
    /// else the next in the probe order.
    fn next_probe_target(&mut self) -> Option<u32> {
        while !self.final_probes.is_empty() {
            let i = self.rng.gen_range(0..self.final_probes.len());
            let name = self.final_probes.swap_remove(i);
            if self.suspicions.contains_key(&name) {
                if let Some(idx) = self.members.find(&name) {
                    return Some(idx);
                }
            }
        }
        self.order.next(
            &self.members,
            self.me_idx,
            self.config.probe_selection,
            &mut self.rng,
        )
    }

    fn progress_probe(&mut self, now: Time) {
        let Some(p) = &self.probe else { return };
        if p.phase == Phase::Direct && now >= p.direct_deadline {
            self.go_indirect();
        }
        if self.probe.as_ref().is_some_and(|p| now >= p.end) {
            self.probe_failed(now);
        }
    }

    fn go_indirect(&mut self) {
        let Some(p) = &self.probe else { return };
        let (seq, target, addr) = (p.seq, p.target.clone(), p.addr);
        let target_idx = self.members.find(&target);
        let relays = self.random_members(self.config.indirect_checks, target_idx, |_, r| {
            r.state == State::Alive
        });
        let req = Message::IndirectPing(IndirectPing {
            seq,
            target: NodeAddr {
                name: target.clone(),
                addr,
            },
            nack: true,
            requester: self.me.clone(),
        });
        for &r in &relays {
            let rec = self.members.get(r);
            let (dst, version) = (self.members.addr_of(rec), Self::version_for(rec.protocol()));
            self.send_packet(dst, version, std::slice::from_ref(&req));
        }
        if self.config.fallback_probe {
            let version = self.version_to(Some(&target));
            // The buddy system holds on this path too: a suspect that lost the direct ping
            // learns of the accusation here and answers with its denial (see `dispatch`).
            let buddy = self.buddy_accusation(&target);
            let ping = self.ping(seq, target);
            match buddy {
                Some(accusation) => self.send_frame_of(addr, version, &[accusation, ping]),
                None => self.send_frame(addr, version, &ping),
            }
        }
        if let Some(p) = &mut self.probe {
            p.phase = Phase::Indirect;
            p.expected_nacks = relays.len() as u32;
        }
    }

    fn probe_failed(&mut self, now: Time) {
        let Some(p) = self.probe.take() else { return };
        self.stats.probes_failed += 1;
        if let Some(s) = self.suspicion_mut(&p.target) {
            s.last_chance_failed(now);
        }
        // Lifeguard: missing nacks mean our own network or process is the problem.
        let delta = if p.expected_nacks > 0 {
            (p.expected_nacks - p.nacks.min(p.expected_nacks)) as i32
        } else {
            1
        };
        self.awareness.apply(delta);
        let Some(idx) = self.members.find(&p.target) else {
            return;
        };
        let rec = self.members.get(idx);
        if !rec.state.is_live() || rec.incarnation != p.incarnation {
            return;
        }
        self.accuse(now, p.target, p.incarnation);
    }

    /// This node's own finding that `name` (at `incarnation`) is unreachable, from a failed
    /// probe or a phi conviction: a suspicion, or without suspicion a death at once.
    fn accuse(&mut self, now: Time, name: Name, incarnation: u32) {
        let accuser = self.me.name.clone();
        if self.config.suspicion {
            self.stats.suspicions_raised += 1;
            self.on_suspect(
                now,
                Suspect {
                    name,
                    incarnation,
                    accuser,
                },
                Origin::Local,
            );
        } else {
            self.on_dead(
                now,
                Dead {
                    name,
                    incarnation,
                    accuser,
                },
                Origin::Local,
            );
        }
    }

    /// A ping of `target`, carrying this node's roots fingerprinted with `seq`.
    fn ping(&self, seq: u32, target: Name) -> Message {
        Message::Ping(Ping {
            seq,
            target,
            source: self.me.clone(),
            roots: Some(self.roots().fingerprints(seq)),
        })
    }

    /// The roots of this node's membership table, per-node states and keyspace.
    fn roots(&self) -> Roots {
        let (nodes, keyspace) = self.replication.roots();
        Roots {
            membership: self.members.digest().root(),
            nodes,
            keyspace,
        }
    }

    fn on_ping(&mut self, now: Time, from: SocketAddr, m: Ping, reliable: bool) {
        if m.target != self.me.name {
            self.stats.drop(DropReason::WrongTarget);
            return;
        }
        // A member's roots say whether anti-entropy with it would find anything.
        if let Some(prints) = &m.roots {
            if self.is_member_at(&m.source.name, from) {
                let c = self.roots().compare(m.seq, prints);
                self.sync_coverage.record(now, c.membership);
                let opening =
                    self.replication
                        .compared(&self.config, now, from, c.nodes, c.keyspace);
                for (dst, msg) in opening {
                    self.send_state(now, dst, &msg);
                }
            }
        }
        let ack = Message::Ack(Ack { seq: m.seq });
        let version = self.rx_version;
        if reliable {
            // On the connection it came by (`from` is the address that connection proved).
            self.send_frame(from, version, &ack);
        } else if self.is_member_at(&m.source.name, from) {
            self.send_packet(from, version, &[ack]);
        } else {
            self.send_bare(from, version, &[ack]);
        }
    }

    fn on_indirect_ping(&mut self, now: Time, from: SocketAddr, m: IndirectPing) {
        // Only for members, and only of members: otherwise anyone could make this node send
        // probes to any address.
        let target_known = self
            .members
            .find(&m.target.name)
            .is_some_and(|i| self.members.addr_of(self.members.get(i)) == m.target.addr);
        if !target_known || !self.is_member_at(&m.requester.name, from) {
            self.stats.drop(DropReason::NotMember);
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            self.stats.drop(DropReason::RateLimited);
            return;
        }
        let seq = self.next_seq();
        self.relays.insert(
            seq,
            Relay {
                requester: m.requester.addr,
                seq: m.seq,
                nack: m.nack,
                deadline: now + self.relay_timeout(),
                version: self.rx_version,
            },
        );
        let version = self.version_to(Some(&m.target.name));
        let ping = self.ping(seq, m.target.name);
        self.send_packet(m.target.addr, version, &[ping]);
    }

    fn on_ack(&mut self, now: Time, from: SocketAddr, m: Ack, reliable: bool) {
        if let Some(p) = &self.probe {
            if p.seq == m.seq {
                let direct = p.phase == Phase::Direct;
                if direct {
                    self.awareness.apply(-1);
                    let rtt = now.saturating_since(p.started);
                    self.stats.rtt_micros_sum += rtt.as_micros() as u64;
                    self.stats.rtt_count += 1;
                    if let Some(samples) = &mut self.rtt_samples {
                        if samples.len() >= RTT_SAMPLES_MAX {
                            samples.pop_front();
                        }
                        samples.push_back(rtt);
                    }
                } else if reliable {
                    self.stats.fallback_acks += 1;
                    // Worth an operator's attention (memberlist warns each time), but under
                    // heavy loss it happens every few probes: at most one line per 10 s, with
                    // the count since the last.
                    self.fallbacks_unlogged += 1;
                    if self
                        .fallback_logged
                        .is_none_or(|t| now.saturating_since(t) >= FALLBACK_LOG_EVERY)
                    {
                        tracing::warn!(
                            member = %p.target.as_str(),
                            addr = %p.addr,
                            probes = self.fallbacks_unlogged,
                            "probe answered only over TCP: UDP to or from this member may be \
                             blocked"
                        );
                        self.fallback_logged = Some(now);
                        self.fallbacks_unlogged = 0;
                    }
                } else if from != p.addr {
                    self.stats.indirect_acks += 1;
                }
                if let Some(p) = self.probe.take() {
                    if let Some(s) = self.suspicion_mut(&p.target) {
                        s.answered(now);
                    }
                }
                return;
            }
        }
        if let Some(r) = self.relays.remove(&m.seq) {
            self.send_packet(r.requester, r.version, &[Message::Ack(Ack { seq: r.seq })]);
            return;
        }
        if let Some(name) = self.candidate_seqs.get(&m.seq) {
            if self
                .candidates
                .get(name)
                .is_some_and(|c| c.alive.addr == from)
            {
                let name = name.clone();
                self.candidate_seqs.remove(&m.seq);
                if let Some(c) = self.candidates.remove(&name) {
                    self.on_alive(now, c.alive, Origin::Verified(c.relay));
                }
                return;
            }
        }
        self.stats.drop(DropReason::Unexpected);
    }

    fn on_nack(&mut self, m: Nack) {
        match &mut self.probe {
            Some(p) if p.seq == m.seq => p.nacks += 1,
            _ => self.stats.drop(DropReason::Unexpected),
        }
    }

    /// How long a relay waits for the target before it nacks: the nack must reach the
    /// requester before its probe ends, a probe interval after it began and one probe
    /// timeout after it went indirect, or Lifeguard would read every probe of a dead member
    /// as missing nacks (this node's own fault) and slow the prober down. Four fifths of the
    /// indirect phase leave room for the nack's trip.
    fn relay_timeout(&self) -> Duration {
        let c = &self.config;
        c.probe_timeout
            .min(c.probe_interval.saturating_sub(c.probe_timeout))
            .mul_f64(0.8)
    }

    fn expire_relays(&mut self, now: Time) {
        if self.relays.is_empty() {
            return;
        }
        let expired: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(s, _)| *s)
            .collect();
        let mut expired = expired;
        expired.sort_unstable();
        for seq in expired {
            if let Some(r) = self.relays.remove(&seq) {
                if r.nack {
                    self.send_packet(
                        r.requester,
                        r.version,
                        &[Message::Nack(Nack { seq: r.seq })],
                    );
                }
            }
        }
    }

    // ----- membership updates -------------------------------------------------------------

    fn rebroadcast(&mut self, about: &Name, msg: &Message) {
        self.broadcasts.push(about.clone(), msg.encode());
    }

    /// Queues this node's own `Alive`, denying an accusation. Denials (this one and those
    /// relayed, see `on_alive`) are sent `REFUTATION_FACTOR` times as often as other gossip:
    /// a node the denial misses declares a live member dead when its timer runs out.
    fn broadcast_refutation(&mut self) {
        let alive = self.alive_msg();
        self.broadcasts
            .push_repeated(self.me.name.clone(), alive.encode(), REFUTATION_FACTOR);
    }

    /// Answers an accusation that came on the reliable channel with this node's `Alive` on
    /// it: the accuser reached this node where datagrams did not, and a gossiped denial may
    /// not reach it in time either. (Over UDP the ack that follows takes the denial along.)
    fn deny_to(&mut self, dst: SocketAddr) {
        if self.leaving {
            return;
        }
        let alive = self.alive_msg();
        self.send_frame(dst, self.rx_version, &alive);
    }

    fn refute(&mut self, now: Time, accused: u32, accusation: State) {
        self.incarnation = incarnation::refutation(self.incarnation, accused);
        self.stats.refutations += 1;
        self.awareness.apply(1);
        let inc = self.incarnation;
        self.members.update(self.me_idx, now, None, |r| {
            r.incarnation = inc;
            r.state = State::Alive;
        });
        self.broadcast_refutation();
        self.events.push_back(Event::Refuted {
            accusation,
            incarnation: inc,
        });
    }

    fn on_alive(&mut self, now: Time, m: Alive, origin: Origin) {
        if m.name == self.me.name {
            if self.leaving {
                return;
            }
            let differs = m.addr != self.me.addr || m.tags != self.tags;
            if incarnation::newer(m.incarnation, self.incarnation)
                || (m.incarnation == self.incarnation && differs)
            {
                self.refute(now, m.incarnation, State::Alive);
            }
            return;
        }
        let name_hash = m.name.hash64();
        let Some(idx) = self.members.find_hashed(&m.name, name_hash) else {
            if self.members.len() >= self.config.max_members {
                self.stats.drop(DropReason::TableFull);
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
                    self.catch_up == 0 || self.broadcasts.len() < RELAY_WHILE_CATCHING_UP
                }
                Origin::Local => true,
                Origin::Verified(relay) => relay,
            };
            // Gossip relayed by a live member (from its address) is taken as a member's
            // exchange is.
            let from_member = match &origin {
                Origin::Gossip(from) => self.live_member_at(*from),
                _ => false,
            };
            if !from_member && !self.admit_new_member(now, &origin) {
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
            if hearsay && self.config.verify_hearsay {
                self.verify(now, m, relay);
                return;
            }
            self.known_now(&m.name);
            let rec = Record::new(m.name.clone(), m.incarnation, State::Alive, m.protocol);
            let idx = self
                .members
                .insert_hashed(rec, name_hash, m.addr, &m.tags, now);
            let member = self.members.member(idx);
            self.order.insert(idx);
            self.events.push_back(Event::Joined { member });
            if relay {
                self.rebroadcast(&m.name.clone(), &Message::Alive(m));
            }
            return;
        };
        let rec = self.members.get(idx);
        let held = rec.state;
        if self.members.addr_of(rec) != m.addr {
            let reclaimable = !held.is_live()
                && match (self.config.dead_reclaim_time, self.members.since(&m.name)) {
                    (Some(t), Some(since)) => now.saturating_since(since) >= t,
                    _ => false,
                };
            if !reclaimable {
                self.events.push_back(Event::Conflict {
                    name: m.name,
                    known: self.members.addr_of(rec),
                    claimed: m.addr,
                });
                return;
            }
        } else if !incarnation::alive_overrides(held, rec.incarnation, m.incarnation) {
            return;
        }
        let tags_changed = self.members.tags_of(rec) != m.tags.as_slice();
        let addr_changed = self.members.addr_of(rec) != m.addr;
        // A member raises its incarnation to deny an accusation (or to change its tags).
        let refutes = incarnation::newer(m.incarnation, rec.incarnation);
        self.suspicions.remove(&m.name);
        self.members
            .update(idx, now, addr_changed.then_some(m.addr), |r| {
                r.incarnation = m.incarnation;
                r.state = State::Alive;
                r.set_protocol(m.protocol);
            });
        if tags_changed {
            self.members.set_tags(idx, &m.tags);
        }
        let member = self.members.member(idx);
        match held {
            State::Suspect => self.events.push_back(Event::Alive { member }),
            State::Dead | State::Left => self.events.push_back(Event::Joined { member }),
            State::Alive if tags_changed || addr_changed => {
                self.events.push_back(Event::Updated { member })
            }
            State::Alive => {}
        }
        let factor = if refutes { REFUTATION_FACTOR } else { 1 };
        self.broadcasts
            .push_repeated(m.name.clone(), Message::Alive(m).encode(), factor);
    }

    /// Whether a member never seen before may be considered on the word of `origin`:
    /// gossip within `new_members_per_source` (its datagram's source, which may be forged)
    /// and `new_members_total`; exchanges, over connections that proved their source, and
    /// this node's own findings always. A refusal is counted and makes the node catch up
    /// with a member, which brings it the new members that are real.
    fn admit_new_member(&mut self, now: Time, origin: &Origin) -> bool {
        let Origin::Gossip(from) = origin else {
            return true;
        };
        let source = from.ip();
        if self.joins.allow(&source, now) {
            return true;
        }
        self.stats.drop(DropReason::RateLimited);
        self.sync_soon(now);
        false
    }

    /// Holds a member heard of by hearsay until it proves itself: only one that answers a
    /// ping from the address claimed joins the table (and probe order). Fabricated members
    /// never answer, so however many get past admission, none dilutes the probing of real
    /// ones. The ping waits `CANDIDATE_WAIT` catch-up intervals first: while a whole cluster
    /// forms, anti-entropy with members brings most newcomers by then, and they need no
    /// ping; a real one that misses both pings still arrives that way.
    fn verify(&mut self, now: Time, m: Alive, relay: bool) {
        if let Some(c) = self.candidates.get_mut(&m.name) {
            if incarnation::newer(m.incarnation, c.alive.incarnation) && c.alive.addr == m.addr {
                c.alive = m;
            }
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            self.stats.drop(DropReason::RateLimited);
            return;
        }
        let seq = self.next_seq();
        let deadline = now + self.config.push_pull_catchup_interval * CANDIDATE_WAIT;
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
    fn known_now(&mut self, name: &Name) {
        if self.candidates.is_empty() {
            return;
        }
        if let Some(c) = self.candidates.remove(name) {
            self.candidate_seqs.remove(&c.seq);
        }
    }

    fn ping_candidate(&mut self, m: &Alive, seq: u32) {
        let ping = self.ping(seq, m.name.clone());
        // Bare: the address is only claimed so far.
        self.send_bare(m.addr, Self::version_for(m.protocol), &[ping]);
    }

    /// Pings candidates again once, then forgets those that never answered.
    fn expire_candidates(&mut self, now: Time) {
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
                        self.config.probe_timeout
                    } else {
                        self.config.probe_interval
                    };
                let (alive, seq) = (c.alive.clone(), c.seq);
                self.ping_candidate(&alive, seq);
            } else if let Some(c) = self.candidates.remove(&name) {
                self.candidate_seqs.remove(&c.seq);
                self.stats.drop(DropReason::Unverified);
            }
        }
        self.candidates_due = self
            .candidates
            .values()
            .map(|c| c.deadline)
            .min()
            .unwrap_or(Time::MAX);
    }

    fn on_suspect(&mut self, now: Time, m: Suspect, origin: Origin) {
        if m.name == self.me.name {
            if self.leaving {
                return;
            }
            if incarnation::must_refute(self.incarnation, m.incarnation) {
                self.refute(now, m.incarnation, State::Suspect);
            } else {
                // An accusation already refuted: whoever still spreads it has not heard the
                // denial, so it goes out again (the next packet, an ack to the buddy probe
                // that carried the accusation included, takes it).
                self.broadcast_refutation();
            }
            return;
        }
        let Some(idx) = self.members.find(&m.name) else {
            return;
        };
        let rec = self.members.get(idx);
        if rec.state == State::Suspect && rec.incarnation == m.incarnation {
            // A confirmation: with Lifeguard, it shortens the timer and is re-gossiped.
            if self.config.lifeguard {
                if let Some(s) = self.suspicions.get_mut(&m.name) {
                    if s.confirm(&m.accuser) {
                        self.rebroadcast(&m.name.clone(), &Message::Suspect(m));
                    }
                }
            }
            return;
        }
        if !incarnation::suspect_overrides(rec.state, rec.incarnation, m.incarnation) {
            return;
        }
        let live = self.members.live();
        let min = self.config.suspicion_min_timeout(live);
        let (max, k) = if self.config.lifeguard {
            let k = self
                .config
                .suspicion_confirmations
                .min(live.saturating_sub(2) as u32);
            (min * self.config.suspicion_max_timeout_mult.max(1), k)
        } else {
            (min, 0)
        };
        self.suspicions.insert(
            m.name.clone(),
            Suspicion::new(m.incarnation, m.accuser.clone(), now, min, max, k),
        );
        self.members.update(idx, now, None, |r| {
            r.state = State::Suspect;
            r.incarnation = m.incarnation;
        });
        let member = self.members.member(idx);
        let local = origin == Origin::Local;
        let addr = member.addr;
        self.events.push_back(Event::Suspected {
            member,
            accuser: m.accuser.clone(),
            local,
        });
        let name = m.name.clone();
        let accusation = Message::Suspect(m);
        if local && self.config.lifeguard {
            // The suspect hears its own accusation straight from the accuser too (as the
            // buddy system tells it on every later probe): gossip's few copies go out in the
            // same tick, and were all of them lost, nobody could deny it.
            let version = self.version_to(Some(&name));
            self.send_packet(addr, version, std::slice::from_ref(&accusation));
        }
        self.rebroadcast(&name, &accusation);
    }

    fn expire_suspicions(&mut self, now: Time) {
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
            let probing = self.config.detector != Detector::Phi && !self.leaving;
            // A probe of the suspect begun before the deadline and still under way decides,
            // whatever came before it. (Not one begun since: with a single other member every
            // probe is of the suspect, and waiting for each next one would wait for ever.)
            let running = self
                .probe
                .as_ref()
                .filter(|p| p.target == name)
                .map(|p| (p.started, p.end));
            if let (Some((started, end)), true) = (running, probing) {
                if let Some(s) = self.suspicions.get_mut(&name) {
                    if started < s.deadline() {
                        s.await_probe(end);
                        continue;
                    }
                }
            }
            if self.config.lifeguard && probing {
                if let Some(s) = self.suspicions.get_mut(&name) {
                    if s.wants_last_chance() {
                        s.await_last_chance();
                        self.final_probes.push(name.clone());
                        continue;
                    }
                }
            }
            self.suspicions.remove(&name);
            let accuser = self.me.name.clone();
            self.on_dead(
                now,
                Dead {
                    name,
                    incarnation,
                    accuser,
                },
                Origin::Local,
            );
        }
    }

    /// Applies a verdict that takes a member out of the cluster, `to` being `Dead` or `Left`:
    /// refutes it if it is about this node, else records it if it takes precedence. Returns
    /// the member's new view when it changed.
    fn retire(&mut self, now: Time, name: &Name, incarnation: u32, to: State) -> Option<Member> {
        if *name == self.me.name {
            if !self.leaving && incarnation::must_refute(self.incarnation, incarnation) {
                self.refute(now, incarnation, to);
            }
            return None;
        }
        let idx = self.members.find(name)?;
        let rec = self.members.get(idx);
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
            let addr = self.members.addr_of(rec);
            self.aggregates
                .departed(addr, (self.config.aggregate_epoch_rounds / 6).max(1));
        }
        self.suspicions.remove(name);
        self.members.update(idx, now, None, |r| {
            r.state = to;
            r.incarnation = incarnation;
        });
        Some(self.members.member(idx))
    }

    fn on_dead(&mut self, now: Time, m: Dead, origin: Origin) {
        // A death by hearsay at an incarnation newer than any this node knows of the member
        // is only a suspicion: the member may never have reached it (one forged datagram
        // claims any), and as a suspect it is heard out and refutes.
        if let Origin::Gossip(_) = origin {
            let newer = self.members.find(&m.name).is_some_and(|i| {
                let r = self.members.get(i);
                r.state.is_live() && incarnation::newer(m.incarnation, r.incarnation)
            });
            if newer {
                let Dead {
                    name,
                    incarnation,
                    accuser,
                } = m;
                return self.on_suspect(
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
        let Some(member) = self.retire(now, &m.name, m.incarnation, State::Dead) else {
            return;
        };
        let local = origin == Origin::Local;
        if local {
            self.stats.declared_dead += 1;
        }
        self.events.push_back(Event::Failed { member, local });
        self.rebroadcast(&m.name.clone(), &Message::Dead(m));
    }

    fn on_leave(&mut self, now: Time, m: Leave) {
        let Some(member) = self.retire(now, &m.name, m.incarnation, State::Left) else {
            return;
        };
        self.events.push_back(Event::Left { member });
        self.rebroadcast(&m.name.clone(), &Message::Leave(m));
    }

    // ----- dissemination ----------------------------------------------------------------

    fn gossip(&mut self, now: Time) {
        if self.broadcasts.is_empty() {
            return;
        }
        let to_dead = self.config.gossip_to_dead_time;
        // The recently dead still hear gossip, so after a short outage they learn of their
        // death and refute it.
        let targets = self.random_members(self.config.fanout, None, |m, r| {
            r.state.is_live()
                || (r.state == State::Dead
                    && m.since(&r.name)
                        .is_some_and(|t| now.saturating_since(t) < to_dead))
        });
        for t in targets {
            let rec = self.members.get(t);
            let (dst, version) = (self.members.addr_of(rec), Self::version_for(rec.protocol()));
            let mut b = PacketBuilder::new(version, &self.config.label, self.config.packet_budget);
            let limit = self.retransmit_limit();
            let n = self.broadcasts.fill(&mut b, limit);
            if n == 0 {
                break;
            }
            self.stats.broadcasts_out += n as u64;
            self.emit(dst, false, b.finish());
        }
    }

    // ----- anti-entropy -------------------------------------------------------------------

    fn push_pull_tick(&mut self, now: Time) {
        let interval = self.config.push_pull_interval_for(self.members.live());
        self.timers.push_pull = now + interval;
        if self.leaving {
            return;
        }
        if self.sync_coverage.covered(now, interval) {
            // Pings since the last exchange showed members holding this very table: an
            // exchange would find nothing. It counts as one that agreed.
            self.stats.syncs_skipped += 1;
            self.catch_up = self.catch_up.saturating_sub(1);
            if self.catch_up > 0 {
                self.sync_soon(now);
            }
            return;
        }
        let peers = self.random_members(1, None, |_, r| r.state == State::Alive);
        if let Some(&p) = peers.first() {
            let dst = self.members.addr_of(self.members.get(p));
            self.start_sync(now, dst, false);
        }
    }

    fn reconnect_tick(&mut self, now: Time) {
        self.timers.reconnect = now + self.config.reconnect_interval;
        self.reconnect_ticks = self.reconnect_ticks.wrapping_add(1);
        self.reap(now);
        self.joins.tidy(now);
        self.event_budget.tidy(now);
        let timeout = self.config.sync_timeout;
        self.syncs
            .retain(|_, s| now.saturating_since(s.started) < timeout);
        if self.leaving {
            return;
        }
        // Try one dead member: after a partition heals, this is how the sides meet again.
        let mut dead: Vec<Name> = self
            .members
            .non_alive()
            .filter(|(n, _)| {
                self.members
                    .find(n)
                    .is_some_and(|i| self.members.get(i).state == State::Dead)
            })
            .map(|(n, _)| n.clone())
            .collect();
        // Sorted so the choice depends on the seeded RNG only, not on hash-map order.
        dead.sort();
        if !dead.is_empty() {
            let pick = &dead[self.rng.gen_range(0..dead.len())];
            if let Some(i) = self.members.find(pick) {
                let dst = self.members.addr_of(self.members.get(i));
                self.start_sync(now, dst, false);
            }
        }
        // Seeds: until joined, or when alone, every tick; otherwise now and then, so a
        // cluster split with no dead members left to try still finds its way back.
        if !self.seeds.is_empty()
            && (!self.synced || self.members.live() <= 1 || self.reconnect_ticks.is_multiple_of(6))
        {
            let seed = self.seeds[self.rng.gen_range(0..self.seeds.len())];
            let join = !self.synced;
            // A seed that is a live member here is probed anyway: this side is not cut off
            // from it.
            if join || self.members.live() <= 1 || !self.live_member_at(seed) {
                self.start_sync(now, seed, join);
            }
        }
    }

    fn reap(&mut self, now: Time) {
        let mut gone: Vec<(Name, State)> = Vec::new();
        for (name, since) in self.members.non_alive() {
            let Some(i) = self.members.find(name) else {
                continue;
            };
            let state = self.members.get(i).state;
            let limit = match state {
                State::Dead => self.config.dead_reap_timeout,
                State::Left => self.config.left_reap_timeout,
                _ => continue,
            };
            if now.saturating_since(since) >= limit {
                gone.push((name.clone(), state));
            }
        }
        gone.sort();
        for (name, state) in gone {
            if let Some(i) = self.members.find(&name) {
                let removal = self.members.remove(i);
                self.order.on_removed(&removal);
                if removal.moved_from == Some(self.me_idx) {
                    self.me_idx = removal.removed;
                }
                self.events.push_back(Event::Reaped { name, state });
            }
        }
    }

    fn start_sync(&mut self, now: Time, dst: SocketAddr, join: bool) {
        if dst == self.me.addr {
            return;
        }
        self.next_sync_id = self.next_sync_id.wrapping_add(1);
        let id = self.next_sync_id;
        self.syncs.insert(id, PendingSync { dst, started: now });
        let req = Message::SyncRequest(SyncRequest {
            id,
            sender: self.me.clone(),
            root: self.members.digest().root(),
            members: self.members.len() as u32,
            join,
        });
        // The peer may be a seed we know only by address: speak the oldest version we can,
        // so any peer of a supported version understands the opening of the exchange.
        self.send_frame(dst, PROTOCOL_VERSION_MIN, &req);
    }

    /// Answers an exchange's opening. Every answer of an exchange goes to `from`, the address
    /// the frame's connection proved (on that connection, by the driver), never to an address
    /// the message names: a stranger cannot have this node push its table at a third party.
    fn on_sync_request(&mut self, now: Time, from: SocketAddr, m: SyncRequest) {
        let in_sync = m.root == self.members.digest().root();
        if !in_sync && (m.join || m.members as usize != self.members.len()) {
            // Divergence seen from this side counts too: a node that is only ever asked (a
            // seed, say) must reconcile actively rather than wait for its long timer. Only a
            // difference in who is known counts (see `sync_done`).
            self.catch_up = CATCH_UP_ROUNDS;
            self.sync_soon(now);
        }
        let digest = self.members.digest();
        let (buckets, filter) = if in_sync && !m.join {
            (None, None)
        } else if (m.members as usize).saturating_mul(FILTER_WORTH) < self.members.len() {
            // A requester holding a small fraction of our table (a joiner, say) pushes its
            // few records whole more cheaply than we could build and send a filter of ours.
            (Some(digest.buckets().to_vec()), None)
        } else {
            // With the buckets, a filter of every record we hold: the requester then pushes
            // only what we probably lack, not whole buckets.
            let mut f = Filter::with_capacity(self.members.len());
            let seed = u64::from(m.id);
            for k in self.members.keys() {
                f.insert(k.record(), seed);
            }
            (Some(digest.buckets().to_vec()), Some(f))
        };
        let reply = Message::SyncBuckets(SyncBuckets {
            id: m.id,
            sender: self.me.clone(),
            buckets,
            filter,
        });
        self.send_frame(from, self.rx_version, &reply);
    }

    fn on_sync_buckets(&mut self, now: Time, from: SocketAddr, m: SyncBuckets) {
        let Some(pending) = self.syncs.get(&m.id).filter(|p| p.dst == from) else {
            self.stats.drop(DropReason::Unexpected);
            return;
        };
        let peer = pending.dst;
        let Some(buckets) = m.buckets else {
            self.syncs.remove(&m.id);
            self.sync_done(now, peer, false);
            return;
        };
        let mask = self.members.digest().diff(&buckets);
        if mask.iter().all(|b| *b == 0) {
            self.syncs.remove(&m.id);
            self.sync_done(now, peer, false);
            return;
        }
        let seed = u64::from(m.id);
        // Push what the responder probably lacks, and a filter of every record of ours in
        // the differing buckets, sent or not, so its reply leaves out what we hold.
        let theirs = m.filter;
        let mut mine = Filter::with_capacity(self.members.len());
        let me = self.me_idx;
        let push = self.entries_frame(
            wire::MessageType::SyncPush,
            m.id,
            &mask,
            Some(&mut mine),
            // Our own record always goes: a false positive must never hide a joiner.
            |_, i, key| !theirs.as_ref().is_some_and(|f| f.contains(key, seed)) || i == me,
        );
        self.stats.sent(wire::MessageType::SyncPush);
        self.emit(from, true, push);
    }

    /// Encodes a SyncPush/SyncPull frame straight from the member table, in one buffer:
    /// the records of the `mask` buckets for which `keep(index, record hash)` holds, and,
    /// when `own` is given, a filter of all those buckets' record hashes after them.
    fn entries_frame(
        &self,
        kind: wire::MessageType,
        id: u32,
        mask: &[u8; wire::DIGEST_BUCKETS / 8],
        mut own: Option<&mut Filter>,
        mut keep: impl FnMut(&Membership, u32, u64) -> bool,
    ) -> Bytes {
        // About 30 bytes an entry, for the share of buckets that differ: a guess that saves
        // most regrowth of a large frame without reserving a whole table for a small one.
        let buckets = mask.iter().map(|b| b.count_ones() as usize).sum::<usize>();
        let share = self.members.len() * buckets / wire::DIGEST_BUCKETS;
        let estimate = 64 + 30 * share / 8;
        let mut f = wire::FrameWriter::new(self.rx_version, &self.config.label, kind, estimate);
        f.w.varint(id);
        f.w.lp(self.me.name.as_bytes());
        f.w.addr(self.me.addr);
        f.w.bytes(mask);
        let count_at = f.placeholder();
        let seed = u64::from(id);
        let count = self
            .members
            .write_entries(mask, &mut f.w, |members, i, key| {
                if let Some(own) = own.as_deref_mut() {
                    own.insert(key, seed);
                }
                keep(members, i, key)
            });
        f.patch(count_at, count);
        if let Some(own) = own {
            wire::write_filter(&mut f.w, own);
        }
        f.finish()
    }

    fn on_sync_push(&mut self, now: Time, from: SocketAddr, m: SyncEntries) {
        // Reply with our records in the differing buckets that the requester's filter says it
        // lacks. A requester that sent no filter is taken to hold none of them.
        let seed = u64::from(m.id);
        let theirs = &m.filter;
        let pull = self.entries_frame(
            wire::MessageType::SyncPull,
            m.id,
            &m.mask,
            None,
            |_, _, key| !theirs.as_ref().is_some_and(|f| f.contains(key, seed)),
        );
        self.stats.sent(wire::MessageType::SyncPull);
        self.emit(from, true, pull);
        // A joiner is not a member yet: what it brings is admitted as gossip is.
        let stranger = (!self.is_member_at(&m.sender.name, from)).then_some(from);
        if self.merge(now, &m.sender.name, stranger, m.entries) {
            self.catch_up = CATCH_UP_ROUNDS;
            self.sync_soon(now);
        }
    }

    fn on_sync_pull(&mut self, now: Time, from: SocketAddr, m: SyncEntries) {
        if self.syncs.get(&m.id).is_none_or(|p| p.dst != from) {
            self.stats.drop(DropReason::Unexpected);
            return;
        }
        let Some(pending) = self.syncs.remove(&m.id) else {
            return;
        };
        let changed = self.merge(now, &m.sender.name, None, m.entries);
        self.sync_done(now, pending.dst, changed);
    }

    /// Views differed lately: exchange again after the catch-up interval rather than the
    /// long one.
    fn sync_soon(&mut self, now: Time) {
        let soon = now + self.config.push_pull_catchup_interval;
        if soon < self.timers.push_pull {
            self.timers.push_pull = soon;
        }
    }

    fn sync_done(&mut self, now: Time, peer: SocketAddr, divergent: bool) {
        self.stats.syncs += 1;
        if divergent {
            self.stats.syncs_divergent += 1;
            self.catch_up = CATCH_UP_ROUNDS;
        } else {
            self.catch_up = self.catch_up.saturating_sub(1);
        }
        if self.catch_up > 0 {
            self.sync_soon(now);
        }
        if !self.synced {
            self.synced = true;
            self.events.push_back(Event::Synced { peer, at: now });
        }
    }

    /// Applies an exchange's entries; true if they changed who is known or who is live here
    /// (a join, a death, a revival, a departure): news of that kind is what catch-up
    /// exchanges are for. Newer incarnations of live members are gossip's, already on their
    /// way, and under heavy loss a stream of refutations would otherwise keep every node
    /// exchanging four times a second.
    fn merge(
        &mut self,
        now: Time,
        peer: &Name,
        stranger: Option<SocketAddr>,
        entries: Vec<Entry>,
    ) -> bool {
        let before = (self.members.len(), self.members.live());
        self.stats.sync_entries_in += entries.len() as u64;
        // A join's first exchange adds a whole table: grow the index and the event queue
        // once, not by doubling. (Entries already known only over-reserve by their count.)
        let room = entries
            .len()
            .min(self.config.max_members.saturating_sub(self.members.len()));
        self.members.reserve(room);
        self.events.reserve(room + 1);
        for e in entries {
            let origin = Origin::Sync(peer.clone(), stranger);
            // The state test first: most entries are alive and need no look-up here.
            if e.state != State::Alive
                && e.name != self.me.name
                && self.members.find(&e.name).is_none()
            {
                // An unknown member in another state: record it as it is, so the tables (and
                // their digests) converge, and a dead one is retried by the reconnect timer.
                if self.members.len() >= self.config.max_members {
                    self.stats.drop(DropReason::TableFull);
                    continue;
                }
                if stranger.is_some() {
                    // A stranger's word about others' deaths and departures is not taken.
                    self.stats.drop(DropReason::NotMember);
                    continue;
                }
                let state = if e.state == State::Suspect {
                    State::Alive
                } else {
                    e.state
                };
                self.known_now(&e.name);
                let rec = Record::new(e.name.clone(), e.incarnation, state, e.protocol);
                let idx = self.members.insert(rec, e.addr, &e.tags, now);
                self.order.insert(idx);
                if state == State::Alive {
                    let member = self.members.member(idx);
                    self.events.push_back(Event::Joined { member });
                } else {
                    continue;
                }
            }
            match e.state {
                State::Alive => self.on_alive(
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
                    now,
                    Suspect {
                        name: e.name,
                        incarnation: e.incarnation,
                        accuser: peer.clone(),
                    },
                    origin,
                ),
                State::Left => self.on_leave(
                    now,
                    Leave {
                        name: e.name,
                        incarnation: e.incarnation,
                    },
                ),
            }
        }
        (self.members.len(), self.members.live()) != before
    }
}

impl Node {
    // ----- replicated state -------------------------------------------------------------

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
        ttl: Option<std::time::Duration>,
    ) -> Result<u64, CommandError> {
        check_len("state key", key.len(), wire::MAX_STATE_KEY_LEN)?;
        check_len("state value", value.len(), wire::MAX_VALUE_LEN)?;
        if let Some(own) = self.replication.nodes.get(&self.me.name) {
            // Tombstones count too: they travel until collected.
            let held: usize = own
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .map(|(k, v)| k.len() + v.value.len())
                .sum();
            check_len(
                "this member's state",
                held + key.len() + value.len(),
                self.config.max_node_state,
            )?;
        }
        let ttl = ttl.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Ok(self.replication.set_own(key, value, ttl, now))
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
        let phys = self.replication.physical(now);
        self.replication.nodes.get(name)?.get(key, phys)
    }

    /// Writes a shared key last-write-wins (`None` deletes it), expiring after `ttl`.
    pub fn put_shared(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), CommandError> {
        check_len("shared key", key.len(), wire::MAX_KEY_LEN)?;
        check_len(
            "shared value",
            value.as_ref().map_or(0, |v| v.len()),
            wire::MAX_VALUE_LEN,
        )?;
        let ttl = ttl.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.replication.put_shared(key, value, ttl, now);
        Ok(())
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

    /// Raises a user event: delivered here, then spread to every member by rumour mongering.
    pub fn broadcast(
        &mut self,
        now: Time,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        check_len("event name", name.len(), wire::MAX_EVENT_NAME_LEN)?;
        check_len("event payload", payload.len(), wire::MAX_EVENT_PAYLOAD)?;
        if !self.event_budget.allow(&self.me.name, now) {
            let r = self.config.events_per_origin;
            return Err(CommandError::RateLimited {
                burst: r.burst,
                per_second: r.per_second.round() as u32,
            });
        }
        let id = self.rumors.next_id(&self.me.name);
        let event = wire::UserEvent {
            id,
            origin: self.me.name.clone(),
            name: name.to_string(),
            payload,
            hops: 0,
            feedback: self.config.rumor_feedback,
        };
        self.take_event(now, &event);
        Ok(id)
    }

    /// Starts publishing, in this node's own state, which value of `target` it holds, so
    /// every member can tell whether the cluster agrees on it (as Cassandra's nodes publish
    /// their schema version). A target is a shared key, or a key of a member's own state.
    pub fn track(&mut self, now: Time, target: Target) {
        if !self.tracked.contains(&target) {
            self.tracked.push(target);
        }
        self.publish_seen(now);
    }

    /// Whether every live member (this one included) publishes the value of `target` this
    /// node holds; if not, who publishes another or none.
    pub fn agreement(&self, now: Time, target: &Target) -> Agreement {
        let mine = self.seen_hash(now, target);
        let key = target.seen_key();
        let mut agreement = Agreement {
            agreed: true,
            differ: Vec::new(),
            unknown: Vec::new(),
        };
        for r in self.members.records() {
            if !r.state.is_live() {
                continue;
            }
            let published = self
                .state_value(now, &r.name, &key)
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_le_bytes);
            match published {
                Some(h) if h == mine => {}
                Some(_) => agreement.differ.push(r.name.clone()),
                None => agreement.unknown.push(r.name.clone()),
            }
        }
        agreement.agreed = agreement.differ.is_empty() && agreement.unknown.is_empty();
        agreement
    }

    /// The hash of the value of `target` held here (zero when absent).
    fn seen_hash(&self, now: Time, target: &Target) -> u64 {
        match target {
            Target::Shared(key) => self
                .replication
                .keyspace
                .get(key, self.replication.physical(now))
                .map_or(0, |v| crate::state::keyspace::item_hash(key, v)),
            Target::Keyspace => self.replication.keyspace.tree().root(),
            Target::NodeKey(node, key) => self
                .state_value(now, node, key)
                .map_or(0, xxhash_rust::xxh3::xxh3_64),
        }
    }

    /// Publishes the hashes of the tracked targets that changed, and reports agreements
    /// reached or lost.
    fn publish_seen(&mut self, now: Time) {
        for i in 0..self.tracked.len() {
            let target = self.tracked[i].clone();
            let h = self.seen_hash(now, &target);
            let key = target.seen_key();
            let current = self
                .state_value(now, &self.me.name.clone(), &key)
                .map(|v| v.to_vec());
            if current.as_deref() != Some(&h.to_le_bytes()[..]) {
                self.replication
                    .set_own(&key, h.to_le_bytes().to_vec(), None, now);
            }
            let agreed = self.agreement(now, &target).agreed;
            let was = self.agreed.contains(&target);
            if agreed != was {
                if agreed {
                    self.agreed.push(target.clone());
                } else {
                    self.agreed.retain(|t| *t != target);
                }
                self.events.push_back(Event::Agreement {
                    target: target.clone(),
                    agreed,
                });
            }
        }
    }

    // ----- aggregation ------------------------------------------------------------------

    /// Sets (or, with `None`, withdraws) this node's contribution to the metric `name`,
    /// aggregated cluster-wide by push-sum (see [`crate::aggregate`]).
    pub fn contribute(&mut self, name: &str, value: Option<f64>) -> Result<(), AggregateError> {
        let (me, members) = (&self.me.name, &self.members);
        self.aggregates
            .contribute(name, value, || Self::anchor_of(me, members))
    }

    /// This node's estimate of the cluster-wide aggregates of `name`.
    pub fn aggregate(&self, name: &str) -> Option<Estimate> {
        self.aggregates.estimate(name)
    }

    /// The running epoch's estimate of `name` (moving until the epoch settles).
    pub fn aggregate_current(&self, name: &str) -> Option<Estimate> {
        self.aggregates.current(name)
    }

    /// This node's own contribution to `name`.
    pub fn contribution(&self, name: &str) -> Option<f64> {
        self.aggregates.contribution(name)
    }

    /// The metrics aggregated here, sorted, without repeats.
    pub fn aggregate_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.aggregates.names().map(str::to_string).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether `me` is the lowest-named live member: the one that brings the unit of
    /// anchor mass to an epoch.
    fn anchor_of(me: &Name, members: &Membership) -> bool {
        crate::aggregate::is_anchor(
            me,
            members
                .records()
                .filter(|r| r.state.is_live())
                .map(|r| &r.name),
        )
    }

    /// A push-sum round: half of every mass to one random live member.
    fn aggregate_round(&mut self) {
        if !self.aggregates.is_active() {
            return;
        }
        let (me, members) = (&self.me.name, &self.members);
        // Membership grows after a node starts aggregating: every 16 rounds it checks it is
        // still the anchor (an O(N) look, so not every round).
        if self.aggregates.round() % 16 == 15 {
            self.aggregates.set_anchor(Self::anchor_of(me, members));
        }
        let Some(msg) = self.aggregates.tick(|| Self::anchor_of(me, members)) else {
            return;
        };
        let peer = self.random_members(1, None, |_, r| r.state.is_live());
        let Some(&p) = peer.first() else {
            // Alone: the half stays here.
            self.aggregates.undo(&msg);
            return;
        };
        let dst = self.members.addr_of(self.members.get(p));
        let version = Self::version_for(self.members.get(p).protocol());
        // Mass that does not fit one datagram goes in several; each is one message.
        let mut batch = wire::Aggregate {
            epoch: msg.epoch,
            round: msg.round,
            entries: Vec::new(),
        };
        let mut size = 0;
        for e in msg.entries {
            let len = e.name.len() + 42;
            if !batch.entries.is_empty() && size + len > self.config.packet_budget - 64 {
                let full = std::mem::take(&mut batch.entries);
                self.send_packet(
                    dst,
                    version,
                    &[Message::Aggregate(wire::Aggregate {
                        entries: full,
                        ..batch.clone()
                    })],
                );
                size = 0;
            }
            size += len;
            batch.entries.push(e);
        }
        if !batch.entries.is_empty() {
            self.send_packet(dst, version, &[Message::Aggregate(batch)]);
        }
    }

    /// User events this node is still spreading.
    pub fn spreading_events(&self) -> usize {
        self.rumors.spreading()
    }

    fn rumor_rules(&self) -> Rules {
        Rules {
            feedback: self.config.rumor_feedback,
            stop: self.config.rumor_stop,
            k: self.config.rumor_k,
            ttl: self.config.rumor_ttl,
            max_hops: self.config.rumor_max_hops,
        }
    }

    /// Takes in an event (ours or received); returns whether it was new.
    fn take_event(&mut self, now: Time, event: &wire::UserEvent) -> bool {
        let rules = self.rumor_rules();
        let new = self.rumors.receive(event, now, &rules);
        if new {
            self.events.push_back(Event::User {
                id: event.id,
                origin: event.origin.clone(),
                name: event.name.clone(),
                payload: event.payload.clone(),
            });
            if self.timers.rumor > now + self.config.gossip_interval {
                self.timers.rumor = now;
            }
        }
        new
    }

    fn on_user_event(&mut self, now: Time, from: SocketAddr, event: wire::UserEvent) {
        if !self.rumors.knows(event.id) && !self.event_budget.allow(&event.origin, now) {
            // Not taken, so not known: a later copy is taken once the budget allows.
            self.stats.drop(DropReason::RateLimited);
            return;
        }
        let new = self.take_event(now, &event);
        if event.feedback {
            let version = self.rx_version;
            self.send_bare(
                from,
                version,
                &[Message::RumorAck(wire::RumorAck {
                    id: event.id,
                    knew: !new,
                })],
            );
        }
    }

    /// Pushes the events being spread to `rumor_fanout` random live members.
    fn push_rumors(&mut self, now: Time) {
        let rules = self.rumor_rules();
        self.rumors.expire(now, &rules);
        let peers = self.random_members(self.config.rumor_fanout, None, |_, r| r.state.is_live());
        for p in peers {
            let events = self.rumors.next_push(&rules, &mut self.rng);
            if events.is_empty() {
                break;
            }
            let dst = self.members.addr_of(self.members.get(p));
            let version = Self::version_for(self.members.get(p).protocol());
            let msgs: Vec<Message> = events.into_iter().map(Message::UserEvent).collect();
            // One packet per budget's worth of events.
            let mut batch: Vec<Message> = Vec::new();
            let mut size = 0;
            for m in msgs {
                let len = m.encode().len();
                if !batch.is_empty() && size + len > self.config.packet_budget - 64 {
                    self.send_packet(dst, version, &batch);
                    batch.clear();
                    size = 0;
                }
                size += len;
                batch.push(m);
            }
            if !batch.is_empty() {
                self.send_packet(dst, version, &batch);
            }
        }
    }

    /// A round of state exchanges, if due and this node holds any state.
    fn state_round(&mut self, now: Time) {
        if now < self.replication.deadline(&self.config) {
            return;
        }
        if !self.tracked.is_empty() && self.replication.round_due(&self.config, now) {
            self.publish_seen(now);
        }
        let want = self.config.state_fanout + 8;
        let candidates: Vec<SocketAddr> = self
            .random_members(want, None, |_, r| r.state.is_live())
            .into_iter()
            .map(|i| self.members.addr_of(self.members.get(i)))
            .collect();
        let opening = self.replication.tick(&self.config, now, &candidates);
        for (dst, msg) in opening {
            self.send_state(now, dst, &msg);
        }
    }

    fn on_state_message(&mut self, now: Time, from: SocketAddr, msg: &Message) {
        let members = &self.members;
        let is_member = |name: &Name| {
            members.find(name).is_some_and(|i| {
                let r = members.get(i);
                r.state.is_live() && members.addr_of(r) == from
            })
        };
        let (reply, beats) =
            match self
                .replication
                .on_message(&self.config, now, from, msg, is_member)
            {
                Ok(r) => r,
                Err(reason) => {
                    tracing::debug!(%from, ?reason, "dropped a state message");
                    self.stats.drop(reason);
                    return;
                }
            };
        if self.config.detector != Detector::Swim {
            for name in beats {
                self.phi.report(&name, now);
            }
        }
        if let Some(reply) = reply {
            self.send_state(now, from, &reply);
        }
    }

    /// Phi-accrual: suspects (or, without suspicion, declares dead) the live members whose
    /// heartbeats have been silent past the threshold, as a failed probe would.
    fn convict(&mut self, now: Time) {
        for name in self.phi.over(self.config.phi_threshold, now) {
            self.phi.forget(&name);
            let Some(idx) = self.members.find(&name) else {
                continue;
            };
            let rec = self.members.get(idx);
            if !rec.state.is_live() || idx == self.me_idx {
                continue;
            }
            let incarnation = rec.incarnation;
            self.accuse(now, name, incarnation);
        }
    }

    fn send_state(&mut self, now: Time, dst: SocketAddr, msg: &Message) {
        self.stats.sent(msg.kind());
        let payload = wire::encode_packet(
            self.rx_version,
            &self.config.label,
            std::slice::from_ref(msg),
        );
        self.stats.state_bytes_out += payload.len() as u64;
        self.replication.spent(&self.config, payload.len(), now);
        self.emit(dst, true, payload);
    }
}

/// `Ok` if `len` is within `max`, else the typed error naming `what`.
fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CommandError> {
    if len > max {
        return Err(CommandError::TooLong { what, len, max });
    }
    Ok(())
}

/// Capacity kept by the output queues once drained.
const IDLE_QUEUE_CAPACITY: usize = 64;

/// A responder sends its filter only to a requester holding more than 1/`FILTER_WORTH` of
/// its member count: a filter costs 10 bits for each record of ours, an entry pushed needlessly
/// about 24 bytes, so below that share the filter costs more than it saves.
const FILTER_WORTH: usize = 24;

/// A node catching up still relays a join it hears by gossip while fewer broadcasts than
/// this wait in its queue: a join among few news, not one of a whole cluster starting.
const RELAY_WHILE_CATCHING_UP: usize = 16;

/// Agreeing exchanges in a row after which a node drops back to the long push-pull interval.
const CATCH_UP_ROUNDS: u32 = 3;

/// How many times the usual retransmissions a refutation gets (see `broadcast_refutation`).
/// Simulated at 20 % loss on 9 nodes: with 2, live nodes were still declared dead (5 in 17
/// hours, on an earlier build); with 3, none in 114 hours (docs/measurements.md).
const REFUTATION_FACTOR: u32 = 3;

/// At most one log line per this long about probes answered only over TCP.
const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(10);

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

/// The most indirect probes this node runs for others at once: each lives a fraction of a
/// probe interval, and members ask a few per interval.
const MAX_RELAYS: usize = 1024;

/// The most probe round trips kept for `take_rtt_samples` between two calls.
const RTT_SAMPLES_MAX: usize = 1024;
