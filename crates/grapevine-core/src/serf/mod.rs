//! A second protocol engine: HashiCorp memberlist's wire format and SWIM behaviour, with
//! Serf's messages on top, so a grapevine agent can be a full member of a Serf cluster.
//!
//! Like [`crate::Node`] it is sans-IO: datagrams, stream messages and the time go in;
//! datagrams, stream dials, events and the next deadline come out. The pieces follow
//! memberlist's and Serf's own files: `wire` (net.go's formats), `security`, `swim`
//! (state.go: alive, suspect, dead, refutation, suspicion), `probe` (probing, Lifeguard's
//! awareness), `queue` (the transmit-limited queue), `cluster` (serf.go: intents, user
//! events, push-pull state) and `query` (queries and the internal `_serf_` ones).

mod cluster;
pub mod config;
pub mod messages;
pub mod msgpack;
mod probe;
mod query;
mod queue;
pub mod security;
mod swim;
pub mod wire;

pub use cluster::{MemberInfo, Status};
pub use config::SerfConfig;
pub use query::{QueryError, QueryParams};
pub use security::{Keyring, SecurityError};
pub use wire::WireError;

use crate::Time;
use queue::Queue;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Something to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A datagram.
    Packet {
        /// Destination.
        to: SocketAddr,
        /// Bytes, sealed.
        data: Vec<u8>,
    },
    /// Open a TCP connection, write `data`, and, if `reply`, read one stream message back
    /// and hand it to [`SerfNode::stream_reply`] (or report [`SerfNode::stream_failed`]).
    Dial {
        /// Names this exchange in the answer.
        id: u64,
        /// Destination.
        to: SocketAddr,
        /// Bytes, sealed.
        data: Vec<u8>,
        /// Whether an answer is expected.
        reply: bool,
    },
}

/// What the application hears.
#[derive(Debug, Clone, PartialEq)]
pub enum SerfEvent {
    /// A member joined (or came back).
    MemberJoin(MemberInfo),
    /// A member left gracefully.
    MemberLeave(MemberInfo),
    /// A member failed.
    MemberFailed(MemberInfo),
    /// A member's tags or address changed.
    MemberUpdate(MemberInfo),
    /// A failed or left member was forgotten.
    MemberReap(MemberInfo),
    /// A user event.
    User {
        /// Event clock.
        ltime: u64,
        /// Name.
        name: String,
        /// Payload.
        payload: Vec<u8>,
        /// May be coalesced.
        coalesce: bool,
    },
    /// A query to answer with [`SerfNode::respond`] before `deadline`.
    Query {
        /// Names it to `respond`.
        handle: u64,
        /// Query clock.
        ltime: u64,
        /// Name.
        name: String,
        /// Payload.
        payload: Vec<u8>,
        /// Who asks.
        source: String,
        /// The last moment a response is accepted.
        deadline: Time,
    },
    /// A member acknowledged one of our queries.
    QueryAck {
        /// The query.
        id: u64,
        /// Who.
        from: String,
    },
    /// A member answered one of our queries.
    QueryResponse {
        /// The query.
        id: u64,
        /// Who.
        from: String,
        /// The answer.
        payload: Vec<u8>,
    },
    /// One of our queries finished: its timeout passed, or every member it could reach
    /// answered.
    QueryDone {
        /// The query.
        id: u64,
    },
    /// Another member claimed this one suspect or dead, and it refuted.
    Refuted {
        /// The new incarnation.
        incarnation: u32,
    },
}

/// Counters of what the engine did and refused.
#[derive(Debug, Clone, Default)]
pub struct SerfStats {
    /// Packets and stream messages dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Messages received, by memberlist type name.
    pub received: BTreeMap<&'static str, u64>,
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Bytes sent in datagrams.
    pub bytes_sent: u64,
    /// Stream exchanges opened.
    pub streams_opened: u64,
    /// Refutations.
    pub refutations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dial {
    PushPull { join: bool },
    TcpPing { seq: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    No,
    /// The leave intent is out; the memberlist leave follows once it has been sent or at
    /// `until`.
    Intent {
        id: u64,
        until: Time,
    },
    /// The memberlist dead-from-itself is out.
    Dead {
        id: u64,
        until: Time,
    },
    /// Both are out; still answering probes until `until`.
    Propagate {
        until: Time,
    },
    Done,
}

impl Leaving {
    /// Whether this member's dead claim about itself is out: it no longer refutes one.
    fn dead_claimed(self) -> bool {
        matches!(
            self,
            Leaving::Dead { .. } | Leaving::Propagate { .. } | Leaving::Done
        )
    }
}

/// A member of a Serf cluster, as a state machine.
pub struct SerfNode {
    cfg: SerfConfig,
    rng: Xoshiro256PlusPlus,
    nonces: ChaCha20Rng,
    members: BTreeMap<String, cluster::Member>,
    probe_order: Vec<String>,
    probe_idx: usize,
    /// memberlist's `numNodes`: members it still holds, the recently dead included; raised
    /// by a newcomer, recounted at each new probe round.
    est_nodes: usize,
    seq: u32,
    awareness: u32,
    probe: Option<probe::Probe>,
    relays: BTreeMap<u32, probe::Relay>,
    suspicions: BTreeMap<String, swim::Suspicion>,
    ml_queue: Queue,
    serf_queue: Queue,
    event_queue: Queue,
    query_queue: Queue,
    clocks: cluster::Clocks,
    event_log: Vec<Option<messages::EventsAt>>,
    query_log: Vec<Option<(u64, Vec<u32>)>>,
    recent_intents: BTreeMap<String, (u8, u64)>,
    queries: query::Queries,
    dials: BTreeMap<u64, Dial>,
    next_dial: u64,
    out: VecDeque<Output>,
    events: VecDeque<SerfEvent>,
    next_probe: Time,
    next_gossip: Time,
    next_push_pull: Time,
    next_reconnect: Time,
    next_reap: Time,
    leaving: Leaving,
    /// This member's leave intent, once it leaves: sent again beside its dead claim.
    leave_intent: Vec<u8>,
    stats: SerfStats,
}

impl std::fmt::Debug for SerfNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerfNode")
            .field("name", &self.cfg.name)
            .field("members", &self.members.len())
            .finish()
    }
}

impl SerfNode {
    /// A member that knows only itself. `seed` feeds both its choices and its nonces: give
    /// it 32 bytes from the operating system.
    pub fn new(cfg: SerfConfig, seed: [u8; 32], now: Time) -> Self {
        let mut s = SerfNode {
            rng: Xoshiro256PlusPlus::from_seed(seed),
            nonces: ChaCha20Rng::from_seed(seed.map(|b| b ^ 0x5a)),
            members: BTreeMap::new(),
            probe_order: Vec::new(),
            probe_idx: 0,
            est_nodes: 1,
            seq: 0,
            awareness: 0,
            probe: None,
            relays: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            ml_queue: Queue::default(),
            serf_queue: Queue::default(),
            event_queue: Queue::default(),
            query_queue: Queue::default(),
            clocks: cluster::Clocks::start(),
            event_log: vec![None; cfg.event_buffer.max(1)],
            query_log: vec![None; cfg.query_buffer.max(1)],
            recent_intents: BTreeMap::new(),
            queries: query::Queries::default(),
            dials: BTreeMap::new(),
            next_dial: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_probe: now + cfg.probe_interval,
            next_gossip: now + cfg.gossip_interval,
            next_push_pull: now + cfg.push_pull_interval,
            next_reconnect: now + cfg.reconnect_interval,
            next_reap: now + std::time::Duration::from_secs(15),
            leaving: Leaving::No,
            leave_intent: Vec::new(),
            stats: SerfStats::default(),
            cfg,
        };
        s.start(now);
        s
    }

    /// This member's settings.
    pub fn config(&self) -> &SerfConfig {
        &self.cfg
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Counters.
    pub fn stats(&self) -> &SerfStats {
        &self.stats
    }

    /// Lifeguard's health score: 0 is healthy.
    pub fn health_score(&self) -> u32 {
        self.awareness
    }

    /// The next datagram or dial to perform.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SerfEvent> {
        self.events.pop_front()
    }

    /// The keyring, if gossip is encrypted.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.cfg.keyring.as_ref()
    }

    fn nonce(&mut self) -> [u8; 12] {
        self.nonces.gen()
    }

    fn drop_reason(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_default() += 1;
    }

    /// Seals and queues a datagram.
    fn send_packet(&mut self, to: SocketAddr, msg: Vec<u8>) {
        let nonce = self.nonce();
        let data = wire::seal_packet(
            msg,
            self.cfg.compression,
            self.cfg.keyring.as_ref(),
            self.cfg.encryption_version,
            nonce,
        );
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        self.out.push_back(Output::Packet { to, data });
    }

    /// Sends one message with as many broadcasts piggybacked as fit (memberlist's
    /// `sendMsg`).
    fn send_msg(&mut self, to: SocketAddr, msg: Vec<u8>) {
        let overhead = if self.cfg.keyring.is_some() { 45 } else { 0 };
        let avail = self.cfg.udp_buffer.saturating_sub(msg.len() + 2 + overhead);
        let extra = self.broadcasts(avail);
        if extra.is_empty() {
            self.send_packet(to, msg);
        } else {
            let mut all = vec![msg];
            all.extend(extra);
            self.send_packet(to, wire::compound(&all));
        }
    }

    /// Seals a stream message and dials it.
    fn dial(&mut self, to: SocketAddr, msg: Vec<u8>, what: Dial) -> u64 {
        let nonce = self.nonce();
        let data = wire::seal_stream(
            msg,
            self.cfg.compression,
            self.cfg.keyring.as_ref(),
            self.cfg.encryption_version,
            nonce,
        );
        self.next_dial += 1;
        let id = self.next_dial;
        self.dials.insert(id, what);
        self.stats.streams_opened += 1;
        self.out.push_back(Output::Dial {
            id,
            to,
            data,
            reply: true,
        });
        id
    }

    /// Broadcasts for one packet: memberlist's own first, then Serf's (intents, queries,
    /// events), as memberlist's `getBroadcasts` and Serf's delegate order them.
    ///
    /// Each queue counts the cluster as its Go owner does: memberlist by the members it
    /// holds, the recently dead included; Serf by every member it knows, failed and left
    /// included. Counting only the live would send half as many copies once members die,
    /// just when a share of them go to the dead.
    fn broadcasts(&mut self, limit: usize) -> Vec<Vec<u8>> {
        let max = queue::retransmit_limit(self.cfg.retransmit_mult, self.est_nodes);
        let mut msgs = self.ml_queue.take(2, limit, max);
        let max = queue::retransmit_limit(self.cfg.retransmit_mult, self.serf_count());
        for q in [
            &mut self.serf_queue,
            &mut self.query_queue,
            &mut self.event_queue,
        ] {
            let used: usize = msgs.iter().map(|m| m.len() + 2).sum();
            // Serf's messages travel as memberlist user messages: one more byte each.
            let more = q.take(3, limit.saturating_sub(used), max);
            msgs.extend(more.into_iter().map(|m| {
                let mut v = Vec::with_capacity(m.len() + 1);
                v.push(wire::code::USER);
                v.extend_from_slice(&m);
                v
            }));
        }
        msgs
    }

    /// Members not dead or left (memberlist's `NumMembers`).
    fn live_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| !m.state.dead_or_left())
            .count()
    }

    /// Serf's `NumNodes`: every member it knows, whatever its status.
    fn serf_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.status != cluster::Status::None)
            .count()
    }

    fn me(&self) -> &cluster::Member {
        // The table always holds this member: `start` puts it there and nothing removes it.
        &self.members[&self.cfg.name]
    }

    fn my_addr(&self) -> (Vec<u8>, u16) {
        (ip_bytes(self.cfg.addr.ip()), self.cfg.addr.port())
    }

    /// The earliest moment [`SerfNode::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Time {
        let mut t = self
            .next_probe
            .min(self.next_gossip)
            .min(self.next_push_pull)
            .min(self.next_reconnect)
            .min(self.next_reap);
        if let Some(p) = &self.probe {
            t = t.min(p.next_deadline());
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline);
        }
        for r in self.relays.values() {
            t = t.min(r.next_deadline());
        }
        if let Some(q) = self.queries.next_deadline() {
            t = t.min(q);
        }
        match self.leaving {
            Leaving::Intent { until, .. }
            | Leaving::Dead { until, .. }
            | Leaving::Propagate { until } => t.min(until),
            _ => t,
        }
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        self.probe_timers(now);
        self.suspicion_timers(now);
        self.relay_timers(now);
        self.query_timers(now);
        if now >= self.next_probe {
            self.probe_next(now);
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip(now);
        }
        if now >= self.next_push_pull {
            let n = self.est_nodes;
            self.next_push_pull = now + push_pull_scale(self.cfg.push_pull_interval, n);
            self.push_pull_random();
        }
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.cfg.reconnect_interval;
            self.reconnect();
        }
        if now >= self.next_reap {
            self.next_reap = now + std::time::Duration::from_secs(15);
            self.reap(now);
        }
        self.leave_progress(now);
    }

    /// memberlist's gossip round: up to `gossip_nodes` random members get the queued
    /// broadcasts.
    fn gossip(&mut self, now: Time) {
        if self.leaving == Leaving::Done {
            return;
        }
        let dead_grace = self.cfg.gossip_to_the_dead;
        let me = self.cfg.name.clone();
        // The dead still hear gossip for a while (they may only be cut off); those that left
        // said so and do not.
        let targets = self.random_members(self.cfg.gossip_nodes, |m| {
            m.name != me
                && match m.state {
                    cluster::NodeState::Alive | cluster::NodeState::Suspect => true,
                    cluster::NodeState::Dead => now.saturating_since(m.state_change) <= dead_grace,
                    cluster::NodeState::Left => false,
                }
        });
        let overhead = if self.cfg.keyring.is_some() { 45 } else { 0 };
        for to in targets {
            let msgs = self.broadcasts(self.cfg.udp_buffer.saturating_sub(2 + overhead));
            match msgs.len() {
                0 => return,
                1 => {
                    let m = msgs.into_iter().next().unwrap_or_default();
                    self.send_packet(to, m)
                }
                _ => {
                    let c = wire::compound(&msgs);
                    self.send_packet(to, c)
                }
            }
        }
    }

    /// Up to `k` random members passing `keep`, by address.
    fn random_members(
        &mut self,
        k: usize,
        keep: impl Fn(&cluster::Member) -> bool,
    ) -> Vec<SocketAddr> {
        let mut pool: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| keep(m))
            .map(cluster::Member::addr)
            .collect();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let i = self.rng.gen_range(0..pool.len());
            out.push(pool.swap_remove(i));
        }
        out
    }

    /// A periodic push-pull with one random live member.
    fn push_pull_random(&mut self) {
        let me = self.cfg.name.clone();
        if let Some(to) = self
            .random_members(1, |m| m.name != me && m.state == cluster::NodeState::Alive)
            .pop()
        {
            let msg = self.local_state(false);
            self.dial(to, msg, Dial::PushPull { join: false });
        }
    }

    /// Joins through these addresses: a push-pull with each.
    pub fn join(&mut self, seeds: &[SocketAddr]) {
        for &to in seeds {
            let msg = self.local_state(true);
            self.dial(to, msg, Dial::PushPull { join: true });
        }
    }

    /// How many bytes at the front of `buf` make one stream message: `Ok(None)` until they
    /// are all there.
    pub fn stream_len(&self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        Ok(
            wire::read_stream(buf, self.cfg.keyring.as_ref(), self.cfg.max_stream_bytes)?
                .map(|(_, n)| n),
        )
    }

    /// Handles a stream someone opened to us (one message, framed by
    /// [`SerfNode::stream_len`]); returns the answer to write back, if any.
    pub fn handle_stream(&mut self, from: SocketAddr, buf: &[u8], now: Time) -> Option<Vec<u8>> {
        let msg = match wire::read_stream(buf, self.cfg.keyring.as_ref(), self.cfg.max_stream_bytes)
        {
            Ok(Some((m, _))) => m,
            Ok(None) => {
                self.drop_reason("truncated");
                return None;
            }
            Err(e) => {
                tracing::debug!(%from, reason = e.reason(), "stream dropped");
                self.drop_reason(e.reason());
                return None;
            }
        };
        let nonce = self.nonce();
        let seal = |s: &Self, m: Vec<u8>| {
            wire::seal_stream(
                m,
                s.cfg.compression,
                s.cfg.keyring.as_ref(),
                s.cfg.encryption_version,
                nonce,
            )
        };
        match msg {
            wire::StreamMsg::PushPull { join, nodes, user } => {
                *self.stats.received.entry("push_pull").or_default() += 1;
                let reply = self.local_state(join);
                let sealed = seal(self, reply);
                self.merge_remote(join, nodes, &user, now);
                Some(sealed)
            }
            wire::StreamMsg::Msg(wire::Msg::Ping(p)) => {
                *self.stats.received.entry("ping").or_default() += 1;
                if !p.node.is_empty() && p.node != self.cfg.name {
                    self.drop_reason("wrong_node");
                    return None;
                }
                let ack = wire::Msg::Ack {
                    seq: p.seq,
                    payload: Vec::new(),
                }
                .encode();
                Some(seal(self, ack))
            }
            wire::StreamMsg::Msg(wire::Msg::User(b)) => {
                *self.stats.received.entry("user").or_default() += 1;
                self.handle_serf(&b, now);
                None
            }
            wire::StreamMsg::Msg(_) => {
                self.drop_reason("unexpected");
                None
            }
        }
    }

    /// The answer to a dial that expected one.
    pub fn stream_reply(&mut self, id: u64, buf: &[u8], now: Time) {
        let Some(what) = self.dials.remove(&id) else {
            return;
        };
        let msg = match wire::read_stream(buf, self.cfg.keyring.as_ref(), self.cfg.max_stream_bytes)
        {
            Ok(Some((m, _))) => m,
            Ok(None) => return self.drop_reason("truncated"),
            Err(e) => return self.drop_reason(e.reason()),
        };
        match (what, msg) {
            (Dial::PushPull { join }, wire::StreamMsg::PushPull { nodes, user, .. }) => {
                self.merge_remote(join, nodes, &user, now);
                if join {
                    // Serf announces itself once it is in (serf.go's broadcastJoin).
                    self.broadcast_join();
                }
            }
            (Dial::TcpPing { seq }, wire::StreamMsg::Msg(wire::Msg::Ack { seq: s, .. }))
                if s == seq =>
            {
                self.tcp_ack(seq, now);
            }
            (_, wire::StreamMsg::Msg(wire::Msg::Err(_))) => self.drop_reason("remote_error"),
            _ => self.drop_reason("unexpected"),
        }
    }

    /// A dial that failed (refused, timed out, or closed without an answer).
    pub fn stream_failed(&mut self, id: u64) {
        self.dials.remove(&id);
    }

    /// Handles a datagram.
    pub fn handle_packet(&mut self, from: SocketAddr, buf: &[u8], now: Time) {
        let msgs = match wire::open_packet(buf, self.cfg.keyring.as_ref()) {
            Ok(m) => m,
            Err(e) => return self.drop_reason(e.reason()),
        };
        for m in msgs {
            match m {
                Ok(m) => self.handle_msg(from, m, now),
                Err(e) => self.drop_reason(e.reason()),
            }
        }
    }

    fn handle_msg(&mut self, from: SocketAddr, m: wire::Msg, now: Time) {
        use wire::Msg;
        let name = match &m {
            Msg::Ping(_) => "ping",
            Msg::IndirectPing(_) => "indirect_ping",
            Msg::Ack { .. } => "ack",
            Msg::Nack { .. } => "nack",
            Msg::Suspect(_) => "suspect",
            Msg::Alive(_) => "alive",
            Msg::Dead(_) => "dead",
            Msg::User(_) => "user",
            Msg::Err(_) => "err",
        };
        *self.stats.received.entry(name).or_default() += 1;
        match m {
            Msg::Ping(p) => self.handle_ping(from, p),
            Msg::IndirectPing(p) => self.handle_indirect(from, p, now),
            Msg::Ack { seq, .. } => self.handle_ack(seq, now),
            Msg::Nack { seq } => self.handle_nack(seq),
            Msg::Suspect(s) => self.suspect_node(s, now),
            Msg::Alive(a) => self.alive_node(a, now, false),
            Msg::Dead(d) => self.dead_node(d, now),
            Msg::User(b) => self.handle_serf(&b, now),
            Msg::Err(_) => self.drop_reason("unexpected"),
        }
    }
}

/// An IP address as memberlist carries it (4 bytes for IPv4).
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// An IP address from memberlist's bytes (4 or 16, the latter possibly IPv4-mapped).
pub(crate) fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            let v6 = std::net::Ipv6Addr::from(a);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// memberlist's push-pull interval, scaled up past 32 members.
fn push_pull_scale(interval: std::time::Duration, n: usize) -> std::time::Duration {
    if n <= 32 {
        return interval;
    }
    let mult = ((n as f64).log2() - 32f64.log2()).ceil() + 1.0;
    interval.mul_f64(mult)
}
