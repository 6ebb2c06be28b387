//! The protocol's messages and their encodings. Each message is framed as
//! `type: u8, length: varint, body`, so a receiver skips types it does not know.

use super::codec::{Reader, Writer};
use super::DecodeError;
use crate::filter::{Filter, MAX_FILTER_BYTES, MAX_HASHES};
use crate::member::State;
use crate::name::{Name, MAX_NAME_LEN};
use std::net::SocketAddr;

/// The largest node tags (metadata) the wire format accepts, in bytes.
pub const MAX_TAGS_LEN: usize = 512;
/// Buckets in a membership digest (see [`crate::digest`]).
pub const DIGEST_BUCKETS: usize = 1024;
/// The most member entries one sync message may carry.
pub const MAX_SYNC_ENTRIES: usize = 1 << 20;
/// The smallest encoded size of a sync entry: used to reject hostile counts early.
const MIN_ENTRY_SIZE: usize = 1 + 1 + 7 + 1 + 1 + 1 + 1;

/// Message type codes on the wire. Never reuse a retired code.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    /// A direct probe.
    Ping = 1,
    /// A request to probe a target on our behalf.
    IndirectPing = 2,
    /// A probe's answer.
    Ack = 3,
    /// A relay's word that the target did not answer it.
    Nack = 4,
    /// A member is alive at an incarnation.
    Alive = 5,
    /// A member is suspected at an incarnation.
    Suspect = 6,
    /// A member is confirmed dead at an incarnation.
    Dead = 7,
    /// A member left gracefully.
    Leave = 8,
    /// Opens an anti-entropy exchange with the sender's digest root.
    SyncRequest = 9,
    /// The responder's bucket hashes, or word that the roots match.
    SyncBuckets = 10,
    /// The requester's entries in differing buckets.
    SyncPush = 11,
    /// The responder's entries in differing buckets.
    SyncPull = 12,
    /// Tree anti-entropy: the sender's hashes of some ranges of one tree level.
    TreeHashes = 13,
    /// Tree anti-entropy: the sender's item digests of some leaf ranges.
    TreeItems = 14,
    /// Tree anti-entropy: entries sent, and the keys of entries wanted.
    TreeEntries = 15,
    /// Tree anti-entropy of per-node state: deltas sent, and the nodes wanted.
    StateDeltas = 16,
    /// A user event spread by rumour mongering.
    UserEvent = 17,
    /// A recipient's feedback on a user event: whether it knew it.
    RumorAck = 18,
    /// Push-sum mass for aggregation.
    Aggregate = 19,
}

impl MessageType {
    /// The type for a wire code, if this build knows it.
    pub fn from_code(code: u8) -> Option<Self> {
        use MessageType::*;
        Some(match code {
            1 => Ping,
            2 => IndirectPing,
            3 => Ack,
            4 => Nack,
            5 => Alive,
            6 => Suspect,
            7 => Dead,
            8 => Leave,
            9 => SyncRequest,
            10 => SyncBuckets,
            11 => SyncPush,
            12 => SyncPull,
            13 => TreeHashes,
            14 => TreeItems,
            15 => TreeEntries,
            16 => StateDeltas,
            17 => UserEvent,
            18 => RumorAck,
            19 => Aggregate,
            _ => return None,
        })
    }

    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        use MessageType::*;
        match self {
            Ping => "ping",
            IndirectPing => "indirect_ping",
            Ack => "ack",
            Nack => "nack",
            Alive => "alive",
            Suspect => "suspect",
            Dead => "dead",
            Leave => "leave",
            SyncRequest => "sync_request",
            SyncBuckets => "sync_buckets",
            SyncPush => "sync_push",
            SyncPull => "sync_pull",
            TreeHashes => "tree_hashes",
            TreeItems => "tree_items",
            TreeEntries => "tree_entries",
            StateDeltas => "state_deltas",
            UserEvent => "user_event",
            RumorAck => "rumor_ack",
            Aggregate => "aggregate",
        }
    }
}

/// A member's name and the address it can be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    /// The member's name.
    pub name: Name,
    /// Its advertised address.
    pub addr: SocketAddr,
}

/// A direct probe of `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Matches the ack to the probe.
    pub seq: u32,
    /// Who the prober means to reach (an address may have changed hands).
    pub target: Name,
    /// The prober, so the target can answer over the reliable channel.
    pub source: NodeAddr,
    /// The prober's data roots, fingerprinted with `seq` as salt (see [`crate::roots`]);
    /// absent from builds before them.
    pub roots: Option<Fingerprints>,
}

/// Salted one-byte fingerprints of a sender's roots: membership, per-node states, keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprints(pub [u8; 3]);

/// The most fingerprint bytes a ping may carry: room for a newer build's extra roots.
const MAX_FINGERPRINTS: usize = 16;

/// A request to probe `target` for `requester` and report back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndirectPing {
    /// The requester's sequence number, echoed in the ack or nack.
    pub seq: u32,
    /// The member to probe.
    pub target: NodeAddr,
    /// Whether the requester wants a nack if the target does not answer.
    pub nack: bool,
    /// The member that asked.
    pub requester: NodeAddr,
}

/// The answer to a ping (direct, relayed or over the reliable channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The probe's sequence number.
    pub seq: u32,
}

/// A relay's report that the target did not answer within its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The requester's sequence number.
    pub seq: u32,
}

/// A member's entry as carried by gossip and anti-entropy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The member's name.
    pub name: Name,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u32,
    /// The state the sender holds for it.
    pub state: State,
    /// Its tags (application metadata), at most [`MAX_TAGS_LEN`] bytes.
    pub tags: Vec<u8>,
    /// The newest protocol version the member speaks.
    pub protocol: u8,
}

/// A member is alive at `incarnation`, at `addr`, with these tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alive {
    /// The member's name.
    pub name: Name,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u32,
    /// Its tags.
    pub tags: Vec<u8>,
    /// The newest protocol version it speaks.
    pub protocol: u8,
}

/// `accuser` suspects `name` at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The suspected member.
    pub name: Name,
    /// The incarnation suspected.
    pub incarnation: u32,
    /// Who suspects it (distinct accusers shorten the suspicion timeout).
    pub accuser: Name,
}

/// `accuser` declares `name` dead at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dead {
    /// The member declared dead.
    pub name: Name,
    /// The incarnation declared dead.
    pub incarnation: u32,
    /// Who declared it.
    pub accuser: Name,
}

/// `name` left the cluster gracefully at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    /// The member leaving.
    pub name: Name,
    /// Its incarnation when it left.
    pub incarnation: u32,
}

/// Opens an anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// The exchange's id, echoed by every reply.
    pub id: u32,
    /// The requester.
    pub sender: NodeAddr,
    /// The requester's digest root.
    pub root: u64,
    /// How many members the requester knows.
    pub members: u32,
    /// Whether this is a join (the responder then always answers with its buckets).
    pub join: bool,
}

/// The responder's digest buckets; `None` when the roots already match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncBuckets {
    /// The exchange's id.
    pub id: u32,
    /// The responder.
    pub sender: NodeAddr,
    /// [`DIGEST_BUCKETS`] bucket hashes, or `None` if in sync.
    pub buckets: Option<Vec<u64>>,
    /// With the buckets: a filter of the responder's record keys, seeded with the exchange
    /// id (an appended field: absent from senders that do not filter).
    pub filter: Option<Filter>,
}

/// Entries of the buckets that differ, from one side of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEntries {
    /// The exchange's id.
    pub id: u32,
    /// The side sending these entries.
    pub sender: NodeAddr,
    /// Which buckets differ (bit i of byte i/8).
    pub mask: [u8; DIGEST_BUCKETS / 8],
    /// The sender's entries in those buckets.
    pub entries: Vec<Entry>,
    /// In a push: a filter of all the requester's record keys in those buckets, seeded with
    /// the exchange id, so the reply leaves out what it already holds (appended field).
    pub filter: Option<Filter>,
}

/// Any protocol message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// See [`Ping`].
    Ping(Ping),
    /// See [`IndirectPing`].
    IndirectPing(IndirectPing),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Alive`].
    Alive(Alive),
    /// See [`Suspect`].
    Suspect(Suspect),
    /// See [`Dead`].
    Dead(Dead),
    /// See [`Leave`].
    Leave(Leave),
    /// See [`SyncRequest`].
    SyncRequest(SyncRequest),
    /// See [`SyncBuckets`].
    SyncBuckets(SyncBuckets),
    /// The requester's half of the exchange.
    SyncPush(SyncEntries),
    /// The responder's half of the exchange.
    SyncPull(SyncEntries),
    /// See [`TreeHashes`].
    TreeHashes(TreeHashes),
    /// See [`TreeItems`].
    TreeItems(TreeItems),
    /// See [`TreeEntries`].
    TreeEntries(TreeEntries),
    /// See [`StateDeltas`].
    StateDeltas(StateDeltas),
    /// See [`UserEvent`].
    UserEvent(UserEvent),
    /// See [`RumorAck`].
    RumorAck(RumorAck),
    /// See [`Aggregate`].
    Aggregate(Aggregate),
}

/// The longest aggregated metric's name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 128;

/// Half of a node's push-sum mass for each metric it aggregates.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The aggregation epoch it belongs to.
    pub epoch: u64,
    /// The sender's round in that epoch.
    pub round: u32,
    /// One mass per metric.
    pub entries: Vec<AggregateMass>,
}

/// One metric's push-sum mass, and the extremes seen.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateMass {
    /// The metric.
    pub name: String,
    /// Value mass.
    pub s: f64,
    /// Weight of contributions.
    pub w: f64,
    /// Weight of the anchor's unit (for sums and counts).
    pub c: f64,
    /// Smallest contribution seen.
    pub min: f64,
    /// Largest contribution seen.
    pub max: f64,
}

/// The longest user event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;
/// The largest user event payload, in bytes: an event travels in one datagram.
pub const MAX_EVENT_PAYLOAD: usize = 1024;

/// A user event: a broadcast that is not state, spread by rumour mongering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// Its id, for deduplication.
    pub id: u64,
    /// The member that raised it.
    pub origin: Name,
    /// The application's name for it.
    pub name: String,
    /// The application's payload.
    pub payload: Vec<u8>,
    /// Forwards so far.
    pub hops: u8,
    /// Whether the sender wants feedback (a [`RumorAck`]).
    pub feedback: bool,
}

/// Feedback on a user event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RumorAck {
    /// The event.
    pub id: u64,
    /// Whether the recipient already knew it.
    pub knew: bool,
}

/// Which replicated store a tree exchange is about: the shared keyspace.
pub const TREE_KEYSPACE: u8 = 0;
/// Which replicated store a tree exchange is about: the per-node states.
pub const TREE_NODES: u8 = 1;
/// The most keys one delta may carry.
pub const MAX_DELTA_ENTRIES: usize = 1 << 16;
/// The longest per-node key, in bytes.
pub const MAX_STATE_KEY_LEN: usize = 256;

/// The most ranges one tree message may name (every child of 4,096 differing ranges).
pub const MAX_TREE_RANGES: usize = 65_536;
/// The most item digests or wanted keys one tree message may carry.
pub const MAX_TREE_ITEMS: usize = 1 << 20;
/// The most entries one tree message may carry.
pub const MAX_TREE_ENTRIES: usize = 1 << 20;

/// Tree anti-entropy, one level down: the sender's hashes of `ranges` at `level` (each the
/// child of a range found differing one level up). No ranges: nothing differs, done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeHashes {
    /// The exchange.
    pub id: u32,
    /// The store ([`TREE_KEYSPACE`]).
    pub tree: u8,
    /// The sender's leaf level: the exchange descends to the shallower of the two.
    pub depth: u8,
    /// The level of the ranges.
    pub level: u8,
    /// (range index, hash).
    pub ranges: Vec<(u32, u64)>,
    /// The opening (level 0, from the initiator) names its sender, so the responder takes
    /// part only in exchanges opened by a live member from that member's address; `None`
    /// on every later step. Appended last: older readers skip it.
    pub sender: Option<Name>,
}

/// Tree anti-entropy at the leaves: the sender's (key hash, item hash) for every entry in
/// the leaf `ranges` at `level` that were found differing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeItems {
    /// The exchange.
    pub id: u32,
    /// The store.
    pub tree: u8,
    /// The level of the ranges.
    pub level: u8,
    /// The range indices.
    pub ranges: Vec<u32>,
    /// (key hash, item hash), sorted by key hash.
    pub items: Vec<(u64, u64)>,
    /// For per-node state, what the sender holds of each item's node, parallel to `items`
    /// (empty for the keyspace).
    pub held: Vec<crate::state::endpoint::Held>,
}

/// Tree anti-entropy of per-node state: deltas for the receiver, and the nodes the sender
/// wants, each with what it holds of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDeltas {
    /// The exchange.
    pub id: u32,
    /// Deltas, most-behind first.
    pub deltas: Vec<crate::state::endpoint::Delta>,
    /// (node hash, what the sender holds of it).
    pub want: Vec<(u64, crate::state::endpoint::Held)>,
}

/// Tree anti-entropy, the data: entries for the receiver to merge, and the key hashes of
/// the receiver's entries the sender wants back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntries {
    /// The exchange.
    pub id: u32,
    /// The store.
    pub tree: u8,
    /// (key, value).
    pub entries: Vec<(Vec<u8>, crate::state::keyspace::Value)>,
    /// Key hashes wanted.
    pub want: Vec<u64>,
}

fn write_held(w: &mut Writer, h: &crate::state::endpoint::Held) {
    w.u64(h.generation);
    w.u64(h.max_version);
    w.u64(h.heartbeat);
}

fn read_held(r: &mut Reader<'_>) -> Result<crate::state::endpoint::Held, DecodeError> {
    Ok(crate::state::endpoint::Held {
        generation: r.u64("held generation")?,
        max_version: r.u64("held version")?,
        heartbeat: r.u64("held heartbeat")?,
    })
}

fn write_delta(w: &mut Writer, d: &crate::state::endpoint::Delta) {
    w.lp(d.node.as_bytes());
    w.u64(d.generation);
    w.u64(d.heartbeat);
    w.u8(u8::from(d.reset));
    w.u64(d.gc_version);
    w.u64(d.max_version);
    w.varint(d.entries.len() as u32);
    for (k, v) in &d.entries {
        w.lp(k.as_bytes());
        w.lp(&v.value);
        w.u64(v.version);
        w.u8(u8::from(v.tombstone));
        match v.expires_at {
            Some(t) => {
                w.u8(1);
                w.u64(t);
            }
            None => w.u8(0),
        }
        w.u64(v.since);
    }
}

fn read_delta(r: &mut Reader<'_>) -> Result<crate::state::endpoint::Delta, DecodeError> {
    let node = read_name(r, "delta node")?;
    let generation = r.u64("delta generation")?;
    let heartbeat = r.u64("delta heartbeat")?;
    let reset = r.u8("delta reset flag")? != 0;
    let gc_version = r.u64("delta gc version")?;
    let max_version = r.u64("delta version")?;
    let n = r.count("delta entries", MAX_DELTA_ENTRIES, 20)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let key = r.str("state key", MAX_STATE_KEY_LEN)?.to_string();
        let len = r.len("state value", super::value::MAX_VALUE_LEN)?;
        let value = r.bytes(len, "state value")?.to_vec();
        let version = r.u64("state version")?;
        let tombstone = r.u8("tombstone flag")? != 0;
        let expires_at = match r.u8("expiry flag")? {
            0 => None,
            _ => Some(r.u64("expiry")?),
        };
        let since = r.u64("tombstone time")?;
        entries.push((
            key,
            crate::state::endpoint::Versioned {
                value,
                version,
                tombstone,
                expires_at,
                since,
            },
        ));
    }
    Ok(crate::state::endpoint::Delta {
        node,
        generation,
        heartbeat,
        reset,
        gc_version,
        max_version,
        entries,
    })
}

pub(crate) fn read_name(r: &mut Reader<'_>, what: &'static str) -> Result<Name, DecodeError> {
    let s = r.str(what, MAX_NAME_LEN)?;
    Name::new(s).map_err(|_| DecodeError::InvalidName { what })
}

fn read_node(r: &mut Reader<'_>, what: &'static str) -> Result<NodeAddr, DecodeError> {
    Ok(NodeAddr {
        name: read_name(r, what)?,
        addr: r.addr(what)?,
    })
}

fn write_node(w: &mut Writer, n: &NodeAddr) {
    w.lp(n.name.as_str().as_bytes());
    w.addr(n.addr);
}

fn read_tags(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.len("tags", MAX_TAGS_LEN)?;
    Ok(r.bytes(len, "tags")?.to_vec())
}

fn read_mask(r: &mut Reader<'_>) -> Result<[u8; DIGEST_BUCKETS / 8], DecodeError> {
    let mut mask = [0u8; DIGEST_BUCKETS / 8];
    mask.copy_from_slice(r.bytes(DIGEST_BUCKETS / 8, "bucket mask")?);
    Ok(mask)
}

/// Optional trailing fingerprints: absent when the body ends here. Fewer than this build
/// compares count as none; more (a newer build's) are skipped.
fn read_fingerprints(r: &mut Reader<'_>) -> Result<Option<Fingerprints>, DecodeError> {
    if r.is_empty() {
        return Ok(None);
    }
    let len = r.len("ping fingerprints", MAX_FINGERPRINTS)?;
    let b = r.bytes(len, "ping fingerprints")?;
    Ok(match b {
        [m, n, k, ..] => Some(Fingerprints([*m, *n, *k])),
        _ => None,
    })
}

/// An optional trailing filter: absent when the body ends here.
fn read_filter(r: &mut Reader<'_>) -> Result<Option<Filter>, DecodeError> {
    if r.is_empty() {
        return Ok(None);
    }
    let hashes = r.u8("filter hash count")?;
    if hashes == 0 || hashes > MAX_HASHES {
        return Err(DecodeError::TooMany {
            what: "filter hashes",
            count: hashes as usize,
            max: MAX_HASHES as usize,
        });
    }
    let len = r.len("filter", MAX_FILTER_BYTES)?;
    if len % 8 != 0 {
        return Err(DecodeError::Misaligned {
            what: "filter",
            len,
            multiple: 8,
        });
    }
    Ok(Some(Filter::from_parts(hashes, r.bytes(len, "filter")?)))
}

pub(crate) fn write_filter(w: &mut Writer, f: &Filter) {
    w.u8(f.hashes());
    w.varint(f.len_bytes() as u32);
    for word in f.to_bytes() {
        w.bytes(&word);
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let name = read_name(r, "entry name")?;
    let addr = r.addr("entry address")?;
    let incarnation = r.varint("entry incarnation")?;
    let code = r.u8("entry state")?;
    let state = State::from_code(code).ok_or(DecodeError::InvalidState(code))?;
    let protocol = r.u8("entry protocol")?;
    let tags = read_tags(r)?;
    Ok(Entry {
        name,
        addr,
        incarnation,
        state,
        tags,
        protocol,
    })
}

pub(crate) fn write_entry(w: &mut Writer, e: &EntryRef<'_>) {
    w.lp(e.name);
    w.addr(e.addr);
    w.varint(e.incarnation);
    w.u8(e.state.code());
    w.u8(e.protocol);
    w.lp(e.tags);
}

/// A borrowed entry, encoded straight from the member table without copying.
pub(crate) struct EntryRef<'a> {
    pub name: &'a [u8],
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: State,
    pub protocol: u8,
    pub tags: &'a [u8],
}

impl Message {
    /// This message's wire type.
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Ping(_) => MessageType::Ping,
            Message::IndirectPing(_) => MessageType::IndirectPing,
            Message::Ack(_) => MessageType::Ack,
            Message::Nack(_) => MessageType::Nack,
            Message::Alive(_) => MessageType::Alive,
            Message::Suspect(_) => MessageType::Suspect,
            Message::Dead(_) => MessageType::Dead,
            Message::Leave(_) => MessageType::Leave,
            Message::SyncRequest(_) => MessageType::SyncRequest,
            Message::SyncBuckets(_) => MessageType::SyncBuckets,
            Message::SyncPush(_) => MessageType::SyncPush,
            Message::SyncPull(_) => MessageType::SyncPull,
            Message::TreeHashes(_) => MessageType::TreeHashes,
            Message::TreeItems(_) => MessageType::TreeItems,
            Message::TreeEntries(_) => MessageType::TreeEntries,
            Message::StateDeltas(_) => MessageType::StateDeltas,
            Message::UserEvent(_) => MessageType::UserEvent,
            Message::RumorAck(_) => MessageType::RumorAck,
            Message::Aggregate(_) => MessageType::Aggregate,
        }
    }

    /// Appends the framed message (type, length, body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::with_capacity(64);
        self.encode_body(&mut w);
        out.push(self.kind() as u8);
        let mut lw = Writer {
            buf: std::mem::take(out),
        };
        lw.varint(u32::try_from(w.buf.len()).unwrap_or(u32::MAX));
        lw.bytes(&w.buf);
        *out = lw.buf;
    }

    /// The framed encoding as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_body(&self, w: &mut Writer) {
        match self {
            Message::Ping(m) => {
                w.varint(m.seq);
                w.lp(m.target.as_str().as_bytes());
                write_node(w, &m.source);
                if let Some(f) = &m.roots {
                    w.lp(&f.0);
                }
            }
            Message::IndirectPing(m) => {
                w.varint(m.seq);
                write_node(w, &m.target);
                w.u8(u8::from(m.nack));
                write_node(w, &m.requester);
            }
            Message::Ack(m) => w.varint(m.seq),
            Message::Nack(m) => w.varint(m.seq),
            Message::Alive(m) => {
                w.lp(m.name.as_str().as_bytes());
                w.addr(m.addr);
                w.varint(m.incarnation);
                w.u8(m.protocol);
                w.lp(&m.tags);
            }
            Message::Suspect(m) => {
                w.lp(m.name.as_str().as_bytes());
                w.varint(m.incarnation);
                w.lp(m.accuser.as_str().as_bytes());
            }
            Message::Dead(m) => {
                w.lp(m.name.as_str().as_bytes());
                w.varint(m.incarnation);
                w.lp(m.accuser.as_str().as_bytes());
            }
            Message::Leave(m) => {
                w.lp(m.name.as_str().as_bytes());
                w.varint(m.incarnation);
            }
            Message::SyncRequest(m) => {
                w.varint(m.id);
                write_node(w, &m.sender);
                w.u64(m.root);
                w.varint(m.members);
                w.u8(u8::from(m.join));
            }
            Message::SyncBuckets(m) => {
                w.varint(m.id);
                write_node(w, &m.sender);
                match &m.buckets {
                    None => w.u8(0),
                    Some(b) => {
                        w.u8(1);
                        for h in b.iter().take(DIGEST_BUCKETS) {
                            w.u64(*h);
                        }
                        for _ in b.len()..DIGEST_BUCKETS {
                            w.u64(0);
                        }
                        if let Some(f) = &m.filter {
                            write_filter(w, f);
                        }
                    }
                }
            }
            Message::SyncPush(m) | Message::SyncPull(m) => {
                w.varint(m.id);
                write_node(w, &m.sender);
                w.bytes(&m.mask);
                w.varint(u32::try_from(m.entries.len()).unwrap_or(u32::MAX));
                for e in &m.entries {
                    write_entry(
                        w,
                        &EntryRef {
                            name: e.name.as_bytes(),
                            addr: e.addr,
                            incarnation: e.incarnation,
                            state: e.state,
                            protocol: e.protocol,
                            tags: &e.tags,
                        },
                    );
                }
                if let Some(f) = &m.filter {
                    write_filter(w, f);
                }
            }
            Message::TreeHashes(m) => {
                w.varint(m.id);
                w.u8(m.tree);
                w.u8(m.depth);
                w.u8(m.level);
                w.varint(m.ranges.len() as u32);
                for (i, h) in &m.ranges {
                    w.varint(*i);
                    w.u64(*h);
                }
                if let Some(n) = &m.sender {
                    w.lp(n.as_bytes());
                }
            }
            Message::TreeItems(m) => {
                w.varint(m.id);
                w.u8(m.tree);
                w.u8(m.level);
                w.varint(m.ranges.len() as u32);
                for i in &m.ranges {
                    w.varint(*i);
                }
                w.varint(m.items.len() as u32);
                for (k, h) in &m.items {
                    w.u64(*k);
                    w.u64(*h);
                }
                w.varint(m.held.len() as u32);
                for h in &m.held {
                    write_held(w, h);
                }
            }
            Message::UserEvent(m) => {
                w.u64(m.id);
                w.lp(m.origin.as_bytes());
                w.lp(m.name.as_bytes());
                w.lp(&m.payload);
                w.u8(m.hops);
                w.u8(u8::from(m.feedback));
            }
            Message::RumorAck(m) => {
                w.u64(m.id);
                w.u8(u8::from(m.knew));
            }
            Message::Aggregate(m) => {
                w.u64(m.epoch);
                w.varint(m.round);
                w.varint(m.entries.len() as u32);
                for e in &m.entries {
                    w.lp(e.name.as_bytes());
                    for x in [e.s, e.w, e.c, e.min, e.max] {
                        w.u64(x.to_bits());
                    }
                }
            }
            Message::StateDeltas(m) => {
                w.varint(m.id);
                w.varint(m.deltas.len() as u32);
                for d in &m.deltas {
                    write_delta(w, d);
                }
                w.varint(m.want.len() as u32);
                for (k, h) in &m.want {
                    w.u64(*k);
                    write_held(w, h);
                }
            }
            Message::TreeEntries(m) => {
                w.varint(m.id);
                w.u8(m.tree);
                w.varint(m.entries.len() as u32);
                for (k, v) in &m.entries {
                    super::value::write_entry(w, k, v);
                }
                w.varint(m.want.len() as u32);
                for k in &m.want {
                    w.u64(*k);
                }
            }
        }
    }

    /// Decodes one message body of a known type. Trailing bytes in the body are
    /// ignored, so a newer sender may append fields.
    pub fn decode(kind: MessageType, body: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader::new(body);
        let r = &mut r;
        Ok(match kind {
            MessageType::Ping => Message::Ping(Ping {
                seq: r.varint("ping seq")?,
                target: read_name(r, "ping target")?,
                source: read_node(r, "ping source")?,
                roots: read_fingerprints(r)?,
            }),
            MessageType::IndirectPing => Message::IndirectPing(IndirectPing {
                seq: r.varint("indirect ping seq")?,
                target: read_node(r, "indirect ping target")?,
                nack: r.u8("indirect ping nack flag")? != 0,
                requester: read_node(r, "indirect ping requester")?,
            }),
            MessageType::Ack => Message::Ack(Ack {
                seq: r.varint("ack seq")?,
            }),
            MessageType::Nack => Message::Nack(Nack {
                seq: r.varint("nack seq")?,
            }),
            MessageType::Alive => Message::Alive(Alive {
                name: read_name(r, "alive name")?,
                addr: r.addr("alive address")?,
                incarnation: r.varint("alive incarnation")?,
                protocol: r.u8("alive protocol")?,
                tags: read_tags(r)?,
            }),
            MessageType::Suspect => Message::Suspect(Suspect {
                name: read_name(r, "suspect name")?,
                incarnation: r.varint("suspect incarnation")?,
                accuser: read_name(r, "suspect accuser")?,
            }),
            MessageType::Dead => Message::Dead(Dead {
                name: read_name(r, "dead name")?,
                incarnation: r.varint("dead incarnation")?,
                accuser: read_name(r, "dead accuser")?,
            }),
            MessageType::Leave => Message::Leave(Leave {
                name: read_name(r, "leave name")?,
                incarnation: r.varint("leave incarnation")?,
            }),
            MessageType::SyncRequest => Message::SyncRequest(SyncRequest {
                id: r.varint("sync id")?,
                sender: read_node(r, "sync sender")?,
                root: r.u64("sync root")?,
                members: r.varint("sync member count")?,
                join: r.u8("sync join flag")? != 0,
            }),
            MessageType::SyncBuckets => {
                let id = r.varint("sync id")?;
                let sender = read_node(r, "sync sender")?;
                let buckets = match r.u8("sync buckets flag")? {
                    0 => None,
                    _ => {
                        let raw = r.bytes(DIGEST_BUCKETS * 8, "sync buckets")?;
                        Some(
                            raw.chunks_exact(8)
                                .map(|c| {
                                    let mut a = [0u8; 8];
                                    a.copy_from_slice(c);
                                    u64::from_le_bytes(a)
                                })
                                .collect(),
                        )
                    }
                };
                let filter = if buckets.is_some() {
                    read_filter(r)?
                } else {
                    None
                };
                Message::SyncBuckets(SyncBuckets {
                    id,
                    sender,
                    buckets,
                    filter,
                })
            }
            MessageType::SyncPush | MessageType::SyncPull => {
                let id = r.varint("sync id")?;
                let sender = read_node(r, "sync sender")?;
                let mask = read_mask(r)?;
                let n = r.count("sync entries", MAX_SYNC_ENTRIES, MIN_ENTRY_SIZE)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(read_entry(r)?);
                }
                let filter = read_filter(r)?;
                let m = SyncEntries {
                    id,
                    sender,
                    filter,
                    mask,
                    entries,
                };
                if kind == MessageType::SyncPush {
                    Message::SyncPush(m)
                } else {
                    Message::SyncPull(m)
                }
            }
            MessageType::TreeHashes => {
                let id = r.varint("tree id")?;
                let tree = r.u8("tree")?;
                let depth = r.u8("tree depth")?;
                let level = r.u8("tree level")?;
                let n = r.count("tree ranges", MAX_TREE_RANGES, 9)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    ranges.push((r.varint("tree range")?, r.u64("tree hash")?));
                }
                let sender = if r.is_empty() {
                    None
                } else {
                    Some(read_name(r, "tree sender")?)
                };
                Message::TreeHashes(TreeHashes {
                    id,
                    tree,
                    depth,
                    level,
                    ranges,
                    sender,
                })
            }
            MessageType::TreeItems => {
                let id = r.varint("tree id")?;
                let tree = r.u8("tree")?;
                let level = r.u8("tree level")?;
                let n = r.count("tree ranges", MAX_TREE_RANGES, 1)?;
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    ranges.push(r.varint("tree range")?);
                }
                let n = r.count("tree items", MAX_TREE_ITEMS, 16)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push((r.u64("item key hash")?, r.u64("item hash")?));
                }
                let held = if r.is_empty() {
                    Vec::new()
                } else {
                    let n = r.count("held versions", MAX_TREE_ITEMS, 24)?;
                    let mut held = Vec::with_capacity(n);
                    for _ in 0..n {
                        held.push(read_held(r)?);
                    }
                    held
                };
                Message::TreeItems(TreeItems {
                    id,
                    tree,
                    level,
                    ranges,
                    items,
                    held,
                })
            }
            MessageType::TreeEntries => {
                let id = r.varint("tree id")?;
                let tree = r.u8("tree")?;
                let n = r.count("tree entries", MAX_TREE_ENTRIES, 3)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(super::value::read_entry(r)?);
                }
                let n = r.count("wanted keys", MAX_TREE_ITEMS, 8)?;
                let mut want = Vec::with_capacity(n);
                for _ in 0..n {
                    want.push(r.u64("wanted key")?);
                }
                Message::TreeEntries(TreeEntries {
                    id,
                    tree,
                    entries,
                    want,
                })
            }
            MessageType::UserEvent => {
                let id = r.u64("event id")?;
                let origin = read_name(r, "event origin")?;
                let name = r.str("event name", MAX_EVENT_NAME_LEN)?.to_string();
                let len = r.len("event payload", MAX_EVENT_PAYLOAD)?;
                let payload = r.bytes(len, "event payload")?.to_vec();
                Message::UserEvent(UserEvent {
                    id,
                    origin,
                    name,
                    payload,
                    hops: r.u8("event hops")?,
                    feedback: r.u8("event feedback flag")? != 0,
                })
            }
            MessageType::Aggregate => {
                let epoch = r.u64("aggregate epoch")?;
                let round = r.varint("aggregate round")?;
                let n = r.count("aggregate entries", crate::aggregate::MAX_METRICS, 41)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str("metric name", MAX_METRIC_NAME_LEN)?.to_string();
                    let mut x = [0f64; 5];
                    for v in &mut x {
                        *v = f64::from_bits(r.u64("aggregate mass")?);
                    }
                    entries.push(AggregateMass {
                        name,
                        s: x[0],
                        w: x[1],
                        c: x[2],
                        min: x[3],
                        max: x[4],
                    });
                }
                Message::Aggregate(Aggregate {
                    epoch,
                    round,
                    entries,
                })
            }
            MessageType::RumorAck => Message::RumorAck(RumorAck {
                id: r.u64("rumor ack id")?,
                knew: r.u8("rumor ack flag")? != 0,
            }),
            MessageType::StateDeltas => {
                let id = r.varint("state id")?;
                let n = r.count("deltas", MAX_TREE_ENTRIES, 30)?;
                let mut deltas = Vec::with_capacity(n);
                for _ in 0..n {
                    deltas.push(read_delta(r)?);
                }
                let n = r.count("wanted nodes", MAX_TREE_ITEMS, 32)?;
                let mut want = Vec::with_capacity(n);
                for _ in 0..n {
                    want.push((r.u64("wanted node")?, read_held(r)?));
                }
                Message::StateDeltas(StateDeltas { id, deltas, want })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_is_not_whole_words_is_refused() {
        let body = |filter: Option<Filter>| {
            let m = Message::SyncBuckets(SyncBuckets {
                id: 7,
                sender: NodeAddr {
                    name: Name::new("b").unwrap(),
                    addr: "10.0.0.2:7946".parse().unwrap(),
                },
                buckets: Some(vec![0; DIGEST_BUCKETS]),
                filter,
            });
            let mut w = Writer::with_capacity(64);
            m.encode_body(&mut w);
            w.buf
        };
        let whole = body(Some(Filter::from_parts(7, &[0xff; 64])));
        assert!(matches!(
            Message::decode(MessageType::SyncBuckets, &whole),
            Ok(Message::SyncBuckets(SyncBuckets {
                filter: Some(_),
                ..
            }))
        ));
        // The same message with a filter of 63 bytes: hash count, length, bits.
        let mut cut = body(None);
        cut.extend_from_slice(&[7, 63]);
        cut.extend_from_slice(&[0xff; 63]);
        assert_eq!(
            Message::decode(MessageType::SyncBuckets, &cut),
            Err(DecodeError::Misaligned {
                what: "filter",
                len: 63,
                multiple: 8,
            })
        );
    }
}
