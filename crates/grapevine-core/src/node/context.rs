//! What every protocol of a node shares: who it is, its configuration, its one RNG, the
//! member view, and the outbox its transmits, events and counters go to.
//!
//! Protocols take a `&mut Ctx` beside their own state; nothing here knows any protocol's
//! rules. Sending lives here because every datagram a member is sent piggybacks the
//! membership broadcasts queued for it (memberlist's piggyback queue).

use crate::config::Config;
use crate::detection::awareness::Awareness;
use crate::detection::probe::ProbeOrder;
use crate::event::Event;
use crate::membership::broadcast::BroadcastQueue;
use crate::membership::table::{Record, Table};
use crate::message::Message;
use crate::name::Name;
use crate::stats::Stats;
use crate::wire::{self, NodeAddr, PacketBuilder, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use bytes::Bytes;
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Bytes to send, and whether they need the reliable (stream) channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dst: SocketAddr,
    /// Frame on the reliable channel (true) or one datagram (false).
    pub reliable: bool,
    /// The encoded packet.
    pub payload: Bytes,
}

/// Capacity kept by the output queues once drained.
const IDLE_QUEUE_CAPACITY: usize = 64;

/// The state shared by every protocol of one node.
pub(crate) struct Ctx {
    pub config: Config,
    pub me: NodeAddr,
    /// This node's index in `members` (it moves when the table removes a record).
    pub me_idx: u32,
    /// The node's only source of randomness: seeded, so a run is reproducible.
    pub rng: Xoshiro256PlusPlus,
    /// The member table: the view every protocol reads.
    pub members: Table,
    /// The probe order, kept in step with the table's indices.
    pub order: ProbeOrder,
    /// Membership broadcasts waiting to be piggybacked.
    pub broadcasts: BroadcastQueue,
    /// Lifeguard's local health: raised by failed probes and refutations, lowered by acks.
    pub awareness: Awareness,
    /// Set by `leave`: the node still answers, but starts nothing.
    pub leaving: bool,
    /// The version of the packet being handled: replies are written in it.
    pub rx_version: u8,
    seq: u32,
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub stats: Stats,
}

impl Ctx {
    /// A context for `me`, the only member of its table so far.
    pub fn new(config: Config, me: NodeAddr, rng: Xoshiro256PlusPlus, now: crate::Time) -> Ctx {
        let mut members = Table::new();
        let me_idx = members.insert(
            Record::new(me.name.clone(), 0, crate::State::Alive, PROTOCOL_VERSION),
            me.addr,
            &[],
            now,
        );
        let mut order = ProbeOrder::new();
        order.insert(me_idx);
        let awareness = Awareness::new(if config.detection.lifeguard {
            config.detection.awareness_max_multiplier
        } else {
            1
        });
        Ctx {
            broadcasts: BroadcastQueue::new(config.membership.max_broadcasts),
            me,
            me_idx,
            rng,
            members,
            order,
            awareness,
            leaving: false,
            rx_version: PROTOCOL_VERSION,
            seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        }
    }

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

    /// How many times a broadcast is sent at the present cluster size.
    pub fn retransmit_limit(&self) -> u32 {
        self.config.retransmit_limit(self.members.live())
    }

    /// The version to write for a member announcing `protocol`: the newest both speak.
    pub fn version_for(protocol: u8) -> u8 {
        protocol.clamp(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION)
    }

    /// The version to write to `dst`: the member's if known by name, else the one we were
    /// addressed in (replies), else ours.
    pub fn version_to(&self, name: Option<&Name>) -> u8 {
        match name.and_then(|n| self.members.find(n)) {
            Some(i) => Self::version_for(self.members.get(i).protocol()),
            None => self.rx_version,
        }
    }

    /// Member `idx`'s address and the version to write to it.
    pub fn dst_of(&self, idx: u32) -> (SocketAddr, u8) {
        let rec = self.members.get(idx);
        (self.members.addr_of(rec), Self::version_for(rec.protocol()))
    }

    /// Sends `first` in one datagram, with queued broadcasts piggybacked up to the budget:
    /// to members only (see `send_bare`).
    pub fn send_packet(&mut self, dst: SocketAddr, version: u8, first: &[Message]) {
        self.send_datagram(dst, version, first, true);
    }

    /// Sends `first` in one datagram and nothing more: the answer to an address that is not
    /// known as a member's is no larger than what asked for it, so a spoofed source cannot
    /// turn this node into an amplifier.
    pub fn send_bare(&mut self, dst: SocketAddr, version: u8, first: &[Message]) {
        self.send_datagram(dst, version, first, false);
    }

    fn send_datagram(&mut self, dst: SocketAddr, version: u8, first: &[Message], piggyback: bool) {
        let mut b = PacketBuilder::new(version, &self.config.label, self.config.wire.packet_budget);
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
    pub fn live_member_at(&self, addr: SocketAddr) -> bool {
        self.members
            .at_addr(addr)
            .any(|i| i != self.me_idx && self.members.get(i).state.is_live())
    }

    /// Whether `name` is a live member known at `addr`.
    pub fn is_member_at(&self, name: &Name, addr: SocketAddr) -> bool {
        self.members.find(name).is_some_and(|i| {
            let r = self.members.get(i);
            r.state.is_live() && self.members.addr_of(r) == addr
        })
    }

    /// Sends one message as one frame on the reliable channel.
    pub fn send_frame(&mut self, dst: SocketAddr, version: u8, msg: &Message) {
        self.send_frame_of(dst, version, std::slice::from_ref(msg));
    }

    /// Sends messages together as one frame on the reliable channel.
    pub fn send_frame_of(&mut self, dst: SocketAddr, version: u8, msgs: &[Message]) {
        for m in msgs {
            self.stats.sent(m.kind());
        }
        let payload = wire::encode_packet(version, &self.config.label, msgs);
        self.emit(dst, true, payload);
    }

    /// Queues an encoded packet.
    pub fn emit(&mut self, dst: SocketAddr, reliable: bool, payload: Bytes) {
        self.stats.packets_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        Stats::packet_bytes(&mut self.stats.bytes_out_by_type, &payload);
        self.transmits.push_back(Transmit {
            dst,
            reliable,
            payload,
        });
    }

    /// A fresh sequence number for a ping.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Up to `n` random members other than this node and `exclude` for which `pred` holds.
    pub fn random_members(
        &mut self,
        n: usize,
        exclude: Option<u32>,
        pred: impl Fn(&Table, &Record) -> bool,
    ) -> Vec<u32> {
        let len = self.members.len();
        let mut out: Vec<u32> = Vec::with_capacity(n);
        if n == 0 || len <= 1 {
            return out;
        }
        let me_idx = self.me_idx;
        let ok = |i: u32, out: &Vec<u32>, members: &Table| {
            i != me_idx && Some(i) != exclude && !out.contains(&i) && pred(members, members.get(i))
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

    /// Whether this node is the lowest-named live member: the one that brings the unit of
    /// anchor mass to an aggregation epoch.
    pub fn is_anchor(&self) -> bool {
        crate::aggregate::is_anchor(
            &self.me.name,
            self.members
                .records()
                .filter(|r| r.state.is_live())
                .map(|r| &r.name),
        )
    }
}
