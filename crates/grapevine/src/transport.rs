//! The reliable channel over TCP, hardened: every connection, byte and second a peer can
//! make this node spend is bounded, and every refusal is counted by reason.
//!
//! A connection opens with a hello naming the connecting member's advertised address, so
//! frames are attributed to the member rather than to an ephemeral port:
//!
//! * `GV`, transport version 2, a mode byte (0: plain, 1: sealed);
//! * plain: the address (family 4 or 6, address bytes, port BE). Its IP must be the one the
//!   connection comes from: the TCP handshake proves that much, so a stranger cannot pass
//!   itself off as a member, nor have this node's answers sent to a third party;
//! * sealed (encryption on): one record (below) whose data is a random 8-byte connection id
//!   and the address; only a key holder can write it, and the replay guard refuses a copy.
//!
//! Either side may then write frames; the side that accepted writes its own hello first. A
//! plain frame is a u32 BE length and that many bytes. A sealed frame is a run of records,
//! each a u32 BE length and an envelope ([`crate::crypto`]) of at most 64 KiB of data, whose
//! body is the connection id, a record count, a flags byte (bit 0: the frame's last record)
//! and the data: a receiver authenticates every record before it keeps a byte of it, and
//! records cannot be replayed, reordered or moved to another connection.
//!
//! Limits ([`Limits`]): connections in all and per source address, handshakes pending per
//! source address, a deadline for the hello, for every read and for every frame, an idle
//! time after which a connection closes, the largest frame for each message type (checked
//! from the frame's first bytes, before any of its body is read), and budgets of bytes in
//! flight (read but not yet handled) per source address and in all, taken as bytes arrive:
//! a peer that announces a large frame and sends little costs what it sent, and one that
//! keeps a budget spent waits, then is dropped.

use crate::crypto::{Keyring, Opened, ReplayGuard};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The first bytes of every connection: "GV" and the transport version.
const MAGIC: [u8; 3] = *b"GV\x02";
/// Hello mode byte: the address in clear.
const PLAIN: u8 = 0;
/// Hello mode byte: the address in a sealed record.
const SEALED: u8 = 1;
/// The most data one sealed record carries.
pub const RECORD_DATA: usize = 64 * 1024;
/// Record header inside the envelope: connection id, record count, flags.
const RECORD_HEADER: usize = 8 + 4 + 1;
/// Record flag: the frame's last record.
const LAST: u8 = 1;
/// Bytes read (and budgeted) at a time.
const READ_CHUNK: usize = 64 * 1024;
/// The slowest a frame may arrive, beside the read deadline: a 16 MiB frame has four
/// minutes, a small one the read deadline alone.
const MIN_FRAME_RATE: u64 = 64 * 1024;

/// Bounds on what peers can make the reliable channel spend.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once, accepted and opened each (the default fits a process
    /// under the common 1,024-descriptor limit beside the HTTP API, DNS and files).
    pub max_connections: usize,
    /// Accepted connections from one IP address past their hello. Members each need one
    /// or two; 256 leaves room for a whole test cluster on one loopback address.
    pub max_per_source: usize,
    /// Accepted connections from one IP address still in their hello: a stranger cannot
    /// hold more while it stalls.
    pub max_pending_per_source: usize,
    /// How long a hello may take.
    pub handshake_timeout: Duration,
    /// How long any read may wait for its next bytes (a frame in progress, or a budget).
    pub read_timeout: Duration,
    /// How long a connection may carry nothing before it is closed.
    pub idle_timeout: Duration,
    /// Bytes read from connections and not yet handled, all together.
    pub inflight_total: usize,
    /// Bytes read from one IP address's connections and not yet handled.
    pub inflight_per_source: usize,
    /// Datagrams taken from one IP address (past it they are dropped unread).
    pub datagrams_per_source: grapevine_core::Rate,
    /// Datagrams taken from all addresses together.
    pub datagrams_total: grapevine_core::Rate,
    /// How far an envelope's timestamp may be from the local clock (encryption on): older
    /// ones are refused as replays, and the nonces of newer ones are remembered for as long.
    pub replay_window: Duration,
}

impl Default for Limits {
    /// 384 connections (plenty for a 200-member cluster's peers, under 1,024 descriptors),
    /// 256 per address past the hello, 64 per address in it (a whole loopback test cluster
    /// joining one agent at once greets within milliseconds), 5 s for a hello (Consul's
    /// handshake deadline), 10 s for a read (a lost SYN or segment is retried within it),
    /// 15 s of idleness (a connection serves every exchange with its peer meanwhile, while
    /// the peers a node met in that time, some 50 with 3 state partners a second, stay far
    /// under the cap whatever the cluster's size), 32 MiB in
    /// flight in all and 16 MiB per address (the largest frame, a membership table of
    /// 200,000): memory for the channel stays under 32 MiB whatever peers send.
    ///
    /// Datagrams: 4,000 at once and 2,000 a second from one address (a member sends a few a
    /// second; a cluster of hundreds of agents on one loopback address, while it forms, a
    /// few hundred), 40,000 and 20,000 a second in all; a flood is dropped before it is
    /// opened or decoded. Replay
    /// window 60 s, as the tolerated clock drift of replicated state: members' clocks must
    /// agree within it.
    fn default() -> Self {
        Limits {
            max_connections: 384,
            max_per_source: 256,
            max_pending_per_source: 64,
            handshake_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15),
            inflight_total: 32 << 20,
            inflight_per_source: grapevine_core::wire::MAX_FRAME,
            datagrams_per_source: grapevine_core::Rate::new(4_000, 2_000.0),
            datagrams_total: grapevine_core::Rate::new(40_000, 20_000.0),
            replay_window: Duration::from_secs(60),
        }
    }
}

/// Why a connection, frame or record was refused or dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// From an address outside `allowed_networks`.
    NotAllowed,
    /// Over `max_connections`.
    TooManyConnections,
    /// Over `max_per_source` or `max_pending_per_source`.
    TooManyFromSource,
    /// No hello within `handshake_timeout`.
    HandshakeTimeout,
    /// Not our transport (magic, version or address family).
    BadHello,
    /// A plain hello naming another IP than the connection's.
    HelloMismatch,
    /// A plain hello where encryption is on.
    Unencrypted,
    /// A sealed hello where encryption is off.
    Encrypted,
    /// A record for another cluster label.
    WrongLabel,
    /// A record no key of ours opens (a wrong key, or tampering).
    BadKey,
    /// A record shorter than its fields.
    Truncated,
    /// A record or sealed hello sealed outside the replay window.
    Stale,
    /// A record or sealed hello seen before.
    Replayed,
    /// Records out of order or from another connection.
    BadSequence,
    /// A frame over the limit of its type, or a record over its size.
    Oversized,
    /// No progress within `read_timeout`, or a frame slower than its deadline.
    ReadTimeout,
    /// The in-flight budget stayed spent for `read_timeout`.
    Budget,
    /// The socket failed.
    Io,
}

impl Refusal {
    fn of(e: crate::crypto::OpenError) -> Refusal {
        use crate::crypto::OpenError as E;
        match e {
            E::Unencrypted => Refusal::Unencrypted,
            E::Truncated => Refusal::Truncated,
            E::WrongLabel { .. } => Refusal::WrongLabel,
            E::NoKey => Refusal::BadKey,
            E::Stale { .. } => Refusal::Stale,
            E::Replayed => Refusal::Replayed,
        }
    }

    /// Every reason, for exporting counters.
    pub const ALL: [Refusal; 18] = [
        Refusal::NotAllowed,
        Refusal::TooManyConnections,
        Refusal::TooManyFromSource,
        Refusal::HandshakeTimeout,
        Refusal::BadHello,
        Refusal::HelloMismatch,
        Refusal::Unencrypted,
        Refusal::Encrypted,
        Refusal::WrongLabel,
        Refusal::BadKey,
        Refusal::Truncated,
        Refusal::Stale,
        Refusal::Replayed,
        Refusal::BadSequence,
        Refusal::Oversized,
        Refusal::ReadTimeout,
        Refusal::Budget,
        Refusal::Io,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::TooManyFromSource => "too_many_from_source",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::BadHello => "bad_hello",
            Refusal::HelloMismatch => "hello_mismatch",
            Refusal::Unencrypted => "unencrypted",
            Refusal::Encrypted => "encrypted",
            Refusal::WrongLabel => "wrong_label",
            Refusal::BadKey => "bad_key",
            Refusal::Truncated => "truncated",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::BadSequence => "bad_sequence",
            Refusal::Oversized => "oversized",
            Refusal::ReadTimeout => "read_timeout",
            Refusal::Budget => "budget",
            Refusal::Io => "io",
        }
    }
}

/// Counters of the channel: refusals by reason, connections open.
#[derive(Debug, Default)]
pub struct Counters {
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Connections open now (accepted and opened).
    pub open: AtomicUsize,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// Connections opened since the start.
    pub opened: AtomicU64,
}

impl Counters {
    /// Counts a refusal.
    pub fn refuse(&self, r: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|x| *x == r) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals so far, by reason.
    pub fn refused(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Per source address: connections and handshakes, and its in-flight budget.
struct Source {
    established: usize,
    pending: usize,
    budget: Arc<Semaphore>,
}

/// What every connection shares.
pub struct Shared {
    /// The limits.
    pub limits: Limits,
    /// This node's advertised address (its hello).
    pub me: SocketAddr,
    /// The cluster label (in every envelope).
    pub label: Vec<u8>,
    /// The keys (empty: no encryption), changed by the driver at run time.
    pub keyring: Arc<RwLock<Keyring>>,
    /// The replay guard, shared with datagrams.
    pub replay: Arc<Mutex<ReplayGuard>>,
    /// Networks peers may come from (empty: any).
    pub allowed: Vec<ipnet::IpNet>,
    /// Counters.
    pub counters: Arc<Counters>,
    budget: Arc<Semaphore>,
    sources: Mutex<HashMap<IpAddr, Source>>,
}

impl Shared {
    /// The shared state of a node's connections.
    pub fn new(
        limits: Limits,
        me: SocketAddr,
        label: Vec<u8>,
        keyring: Arc<RwLock<Keyring>>,
        replay: Arc<Mutex<ReplayGuard>>,
        allowed: Vec<ipnet::IpNet>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            budget: Arc::new(Semaphore::new(limits.inflight_total)),
            limits,
            me,
            label,
            keyring,
            replay,
            allowed,
            counters: Arc::new(Counters::default()),
            sources: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `ip` is in `allowed_networks` (all are when none is set).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(&ip))
    }

    fn encrypted(&self) -> bool {
        !self.keyring.read().map(|k| k.is_empty()).unwrap_or(true)
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Source>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bookkeeping of source `ip`, made on first use.
    fn source_of<'a>(
        &self,
        sources: &'a mut HashMap<IpAddr, Source>,
        ip: IpAddr,
    ) -> &'a mut Source {
        sources.entry(ip).or_insert_with(|| Source {
            established: 0,
            pending: 0,
            budget: Arc::new(Semaphore::new(self.limits.inflight_per_source)),
        })
    }

    /// Takes a pending-handshake slot for `ip`, if the limits allow a connection.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        if !self.allows(ip) {
            return Err(Refusal::NotAllowed);
        }
        if self.counters.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        let mut sources = self.sources();
        let s = self.source_of(&mut sources, ip);
        if s.pending >= self.limits.max_pending_per_source {
            return Err(Refusal::TooManyFromSource);
        }
        s.pending += 1;
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            shared: self.clone(),
            ip,
            established: false,
        })
    }

    /// A slot for a connection this node opens (counted, not limited per source).
    fn outbound(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        if self.counters.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        let mut sources = self.sources();
        let s = self.source_of(&mut sources, ip);
        s.established += 1;
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            shared: self.clone(),
            ip,
            established: true,
        })
    }

    fn source_budget(&self, ip: IpAddr) -> Option<Arc<Semaphore>> {
        self.sources().get(&ip).map(|s| s.budget.clone())
    }
}

/// One connection's place in the counts; given back when dropped.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
    established: bool,
}

impl Slot {
    /// Moves from pending to established, if the source has room.
    fn establish(&mut self) -> Result<(), Refusal> {
        let mut sources = self.shared.sources();
        let Some(s) = sources.get_mut(&self.ip) else {
            return Err(Refusal::Io);
        };
        if s.established >= self.shared.limits.max_per_source {
            return Err(Refusal::TooManyFromSource);
        }
        s.pending -= 1;
        s.established += 1;
        self.established = true;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.counters.open.fetch_sub(1, Ordering::Relaxed);
        let mut sources = self.shared.sources();
        if let Some(s) = sources.get_mut(&self.ip) {
            if self.established {
                s.established = s.established.saturating_sub(1);
            } else {
                s.pending = s.pending.saturating_sub(1);
            }
            if s.established == 0 && s.pending == 0 {
                sources.remove(&self.ip);
            }
        }
    }
}

/// Budget held by a frame until the node has handled it.
#[derive(Debug)]
pub struct Permit {
    _total: Option<OwnedSemaphorePermit>,
    _source: Option<OwnedSemaphorePermit>,
}

/// A frame for the node: who sent it (the address its connection proved), its bytes, and
/// the budget it holds until dropped.
#[derive(Debug)]
pub struct Inbound {
    /// The member's advertised address.
    pub from: SocketAddr,
    /// The core packet.
    pub frame: Bytes,
    /// Released when dropped.
    pub permit: Permit,
}

/// Word from a connection to the driver.
#[derive(Debug)]
pub enum Control {
    /// An accepted connection proved it comes from `peer`: answers to it may go this way.
    Connected {
        /// The peer's advertised address.
        peer: SocketAddr,
        /// Frames to write on the connection.
        tx: mpsc::Sender<Bytes>,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// IPv4-mapped IPv6 addresses compare as IPv4 (a dual-stack listener sees both forms).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Encodes an address: family 4 or 6, address bytes, port BE.
fn encode_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Decodes an address; `None` if malformed. Returns it and the bytes it took.
fn decode_addr(b: &[u8]) -> Option<(SocketAddr, usize)> {
    let (ip, n): (IpAddr, usize) = match *b.first()? {
        4 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(1..5)?).ok()?)),
            5,
        ),
        6 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(1..17)?).ok()?)),
            17,
        ),
        _ => return None,
    };
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(b.get(n..n + 2)?).ok()?);
    Some((SocketAddr::new(ip, port), n + 2))
}

/// The writing side of a connection: a hello (once), then frames, sealed when encryption
/// is on.
struct Writer {
    wr: OwnedWriteHalf,
    shared: Arc<Shared>,
    conn_id: [u8; 8],
    records: u32,
    hello_sent: bool,
}

impl Writer {
    fn new(wr: OwnedWriteHalf, shared: Arc<Shared>) -> Self {
        Writer {
            wr,
            shared,
            conn_id: rand::random(),
            records: 0,
            hello_sent: false,
        }
    }

    fn sealed(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let mut body = Vec::with_capacity(RECORD_HEADER + data.len());
        body.extend_from_slice(&self.conn_id);
        body.extend_from_slice(&self.records.to_be_bytes());
        body.push(if last { LAST } else { 0 });
        body.extend_from_slice(data);
        self.records = self.records.wrapping_add(1);
        let keyring = self
            .shared
            .keyring
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        let env = keyring.seal(&self.shared.label, &body, now_ms());
        let mut out = Vec::with_capacity(4 + env.len());
        out.extend_from_slice(&(env.len() as u32).to_be_bytes());
        out.extend_from_slice(&env);
        out
    }

    async fn hello(&mut self) -> io::Result<()> {
        if self.hello_sent {
            return Ok(());
        }
        self.hello_sent = true;
        let mut out = MAGIC.to_vec();
        if self.shared.encrypted() {
            out.push(SEALED);
            let mut addr = Vec::new();
            encode_addr(&mut addr, self.shared.me);
            out.extend_from_slice(&self.sealed(&addr, true));
        } else {
            out.push(PLAIN);
            encode_addr(&mut out, self.shared.me);
        }
        self.wr.write_all(&out).await
    }

    async fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.hello().await?;
        if !self.shared.encrypted() {
            let len = u32::try_from(frame.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
            self.wr.write_all(&len.to_be_bytes()).await?;
            return self.wr.write_all(frame).await;
        }
        let mut chunks = frame.chunks(RECORD_DATA).peekable();
        if chunks.peek().is_none() {
            let r = self.sealed(&[], true);
            return self.wr.write_all(&r).await;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let r = self.sealed(c, last);
            self.wr.write_all(&r).await?;
        }
        Ok(())
    }
}

/// The reading side of a connection: the peer's hello, then frames within the limits.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    shared: Arc<Shared>,
    /// The connection's source IP (its budget).
    ip: IpAddr,
    /// The peer's connection id and next record count (sealed connections).
    peer_conn: Option<([u8; 8], u32)>,
    /// On a connection this node opened: the peer's hello is still to come (it precedes
    /// the peer's first frame).
    await_hello: bool,
}

/// One opened record: its data and whether it ends its frame.
struct Record {
    data: Vec<u8>,
    last: bool,
}

impl Reader {
    fn new(rd: OwnedReadHalf, shared: Arc<Shared>, ip: IpAddr, await_hello: bool) -> Self {
        Reader {
            rd,
            buf: BytesMut::new(),
            shared,
            ip,
            peer_conn: None,
            await_hello,
        }
    }

    fn no_permit() -> Permit {
        Permit {
            _total: None,
            _source: None,
        }
    }

    /// Reads until `n` bytes are buffered (never more), each read within the read deadline
    /// and all by `until`.
    async fn fill(&mut self, n: usize, until: tokio::time::Instant) -> Result<(), Refusal> {
        while self.buf.len() < n {
            let room = (n - self.buf.len()).min(READ_CHUNK);
            self.buf.reserve(room);
            let deadline = until.min(tokio::time::Instant::now() + self.shared.limits.read_timeout);
            let mut limited = (&mut self.rd).take(room as u64);
            let read = limited.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Err(Refusal::ReadTimeout),
                Ok(Err(_) | Ok(0)) => return Err(Refusal::Io),
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Takes budget for `n` more bytes, waiting at most the read deadline.
    async fn budget(&self, n: usize, permits: &mut Permit) -> Result<(), Refusal> {
        let n = u32::try_from(n).map_err(|_| Refusal::Oversized)?;
        let wait = self.shared.limits.read_timeout;
        let total = tokio::time::timeout(wait, self.shared.budget.clone().acquire_many_owned(n))
            .await
            .map_err(|_| Refusal::Budget)?
            .map_err(|_| Refusal::Io)?;
        merge(&mut permits._total, total);
        if let Some(source) = self.shared.source_budget(self.ip) {
            let p = tokio::time::timeout(wait, source.acquire_many_owned(n))
                .await
                .map_err(|_| Refusal::Budget)?
                .map_err(|_| Refusal::Io)?;
            merge(&mut permits._source, p);
        }
        Ok(())
    }

    /// Reads the peer's hello within the handshake deadline; returns its address. With
    /// `check_ip`, a plain hello must name that IP.
    async fn hello(&mut self, check_ip: Option<IpAddr>) -> Result<SocketAddr, Refusal> {
        let until = tokio::time::Instant::now() + self.shared.limits.handshake_timeout;
        let r = async {
            self.fill(4, until).await?;
            if self.buf[..3] != MAGIC {
                return Err(Refusal::BadHello);
            }
            let mode = self.buf[3];
            self.buf.advance(4);
            match (mode, self.shared.encrypted()) {
                (PLAIN, false) => {
                    self.fill(1, until).await?;
                    let need = match self.buf[0] {
                        4 => 7,
                        6 => 19,
                        _ => return Err(Refusal::BadHello),
                    };
                    self.fill(need, until).await?;
                    let (addr, n) = decode_addr(&self.buf).ok_or(Refusal::BadHello)?;
                    self.buf.advance(n);
                    if let Some(ip) = check_ip {
                        if canonical(addr.ip()) != canonical(ip) {
                            return Err(Refusal::HelloMismatch);
                        }
                    }
                    Ok(addr)
                }
                (SEALED, true) => {
                    // A hello is tiny: a larger record is refused before it is read.
                    let max = 64 + Keyring::overhead(&self.shared.label);
                    let rec = self.record(until, max, None).await?;
                    let (addr, _) = decode_addr(&rec.data).ok_or(Refusal::BadHello)?;
                    Ok(addr)
                }
                (PLAIN, true) => Err(Refusal::Unencrypted),
                (SEALED, false) => Err(Refusal::Encrypted),
                _ => Err(Refusal::BadHello),
            }
        };
        match tokio::time::timeout_at(until, r).await {
            Ok(Err(Refusal::ReadTimeout)) | Err(_) => Err(Refusal::HandshakeTimeout),
            Ok(r) => r,
        }
    }

    /// Reads one sealed record of at most `max` bytes (budgeted into `permit` before its
    /// body is read, when given), opens it, and checks its place in the stream: the first
    /// record of a connection (its hello) sets the connection id, every later one must
    /// carry it and the next count.
    async fn record(
        &mut self,
        until: tokio::time::Instant,
        max: usize,
        permit: Option<&mut Permit>,
    ) -> Result<Record, Refusal> {
        self.fill(4, until).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > max {
            return Err(Refusal::Oversized);
        }
        if let Some(p) = permit {
            self.budget(len, p).await?;
        }
        self.fill(4 + len, until).await?;
        self.buf.advance(4);
        let env = self.buf.split_to(len);
        let keyring = self
            .shared
            .keyring
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        let opened: Opened = keyring
            .open(&self.shared.label, &env)
            .map_err(Refusal::of)?;
        self.shared
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&opened, now_ms())
            .map_err(Refusal::of)?;
        let mut data = opened.body;
        if data.len() < RECORD_HEADER {
            return Err(Refusal::Truncated);
        }
        let mut conn = [0u8; 8];
        conn.copy_from_slice(&data[..8]);
        let count = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        match self.peer_conn {
            None if count == 0 => self.peer_conn = Some((conn, 1)),
            Some((id, next)) if id == conn && next == count => {
                self.peer_conn = Some((id, next.wrapping_add(1)));
            }
            _ => return Err(Refusal::BadSequence),
        }
        let last = data[12] & LAST != 0;
        data.drain(..RECORD_HEADER);
        Ok(Record { data, last })
    }

    /// The next frame, within its type's limit and the budgets; `Ok(None)` when the
    /// connection has been idle past the limit, or closed cleanly between frames.
    async fn frame(&mut self, idle: &Idle) -> Result<Option<Inbound>, Refusal> {
        loop {
            // Wait for the first bytes, for as long as the connection is in use either way.
            while self.buf.is_empty() {
                let wait = idle.left(self.shared.limits.idle_timeout);
                if wait.is_zero() {
                    return Ok(None);
                }
                self.buf.reserve(4);
                let mut limited = (&mut self.rd).take(4);
                match tokio::time::timeout(wait, limited.read_buf(&mut self.buf)).await {
                    Err(_) => continue,
                    Ok(Err(_)) => return Err(Refusal::Io),
                    Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(_)) => {}
                }
            }
            idle.touch();
            if !self.await_hello {
                break;
            }
            self.await_hello = false;
            // The peer answers on the connection this node opened: its hello first.
            self.hello(None).await?;
        }
        if self.shared.encrypted() {
            self.sealed_frame().await.map(Some)
        } else {
            self.plain_frame().await.map(Some)
        }
    }

    async fn plain_frame(&mut self) -> Result<Inbound, Refusal> {
        let mut until = tokio::time::Instant::now() + self.shared.limits.read_timeout;
        self.fill(4, until).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > grapevine_core::wire::MAX_FRAME {
            return Err(Refusal::Oversized);
        }
        until += Duration::from_secs(len as u64 / MIN_FRAME_RATE);
        // The type's limit, from the frame's first bytes: version, label, type.
        self.fill(4 + len.min(2), until).await?;
        let head = match self.buf.get(5) {
            Some(&label) => len.min(2 + label as usize + 1),
            None => len,
        };
        self.fill(4 + head, until).await?;
        let limit = match grapevine_core::wire::peek_first_type(&self.buf[4..4 + head], len) {
            Ok(Some(Some(code))) => grapevine_core::wire::frame_limit(code),
            _ => grapevine_core::wire::MAX_FRAME,
        };
        if len > limit {
            return Err(Refusal::Oversized);
        }
        self.buf.advance(4);
        let mut permit = Self::no_permit();
        let mut frame = BytesMut::new();
        while frame.len() < len {
            let step = (len - frame.len()).min(READ_CHUNK);
            self.budget(step, &mut permit).await?;
            self.fill(step, until).await?;
            frame.extend_from_slice(&self.buf.split_to(step));
        }
        Ok(Inbound {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            frame: frame.freeze(),
            permit,
        })
    }

    async fn sealed_frame(&mut self) -> Result<Inbound, Refusal> {
        let mut until = tokio::time::Instant::now() + self.shared.limits.read_timeout;
        let mut permit = Self::no_permit();
        let mut frame = BytesMut::new();
        let mut limit = grapevine_core::wire::MAX_FRAME;
        let max = RECORD_DATA + RECORD_HEADER + Keyring::overhead(&self.shared.label);
        loop {
            let rec = self.record(until, max, Some(&mut permit)).await?;
            if frame.is_empty() {
                if let Ok(Some(Some(code))) =
                    grapevine_core::wire::peek_first_type(&rec.data, usize::MAX)
                {
                    limit = grapevine_core::wire::frame_limit(code);
                }
            }
            if frame.len() + rec.data.len() > limit {
                return Err(Refusal::Oversized);
            }
            frame.extend_from_slice(&rec.data);
            until += Duration::from_secs(rec.data.len() as u64 / MIN_FRAME_RATE)
                + self.shared.limits.read_timeout / 8;
            if rec.last {
                break;
            }
        }
        Ok(Inbound {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            frame: frame.freeze(),
            permit,
        })
    }
}

fn merge(slot: &mut Option<OwnedSemaphorePermit>, p: OwnedSemaphorePermit) {
    match slot {
        Some(s) => s.merge(p),
        None => *slot = Some(p),
    }
}

/// When a connection last carried a frame either way, shared by its two halves.
#[derive(Clone)]
struct Idle(Arc<AtomicU64>, tokio::time::Instant);

impl Idle {
    fn new() -> Self {
        Idle(Arc::new(AtomicU64::new(0)), tokio::time::Instant::now())
    }

    fn touch(&self) {
        self.0
            .store(self.1.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time left before the connection has been idle for `limit`.
    fn left(&self, limit: Duration) -> Duration {
        let last = Duration::from_millis(self.0.load(Ordering::Relaxed));
        (last + limit).saturating_sub(self.1.elapsed())
    }
}

/// Runs a connection's two halves until either ends: frames read go to the node as from
/// `peer`; frames on `rx` are written.
async fn run(
    reader: Reader,
    writer: Writer,
    peer: SocketAddr,
    rx: mpsc::Receiver<Bytes>,
    to_node: mpsc::Sender<Inbound>,
    slot: Slot,
) {
    let idle = Idle::new();
    let shared = reader.shared.clone();
    let read_idle = idle.clone();
    let mut reading = tokio::spawn(async move {
        let mut reader = reader;
        loop {
            match reader.frame(&read_idle).await {
                Ok(Some(mut f)) => {
                    f.from = peer;
                    read_idle.touch();
                    if to_node.send(f).await.is_err() {
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(r) => return Some(r),
            }
        }
    });
    let write_idle = idle.clone();
    let limit = shared.limits.idle_timeout;
    // Returns whether writing failed (rather than ran out of frames to write: an accepted
    // connection whose writer the driver did not take still carries the peer's frames).
    let mut writing = tokio::spawn(async move {
        let (mut writer, mut rx) = (writer, rx);
        loop {
            let wait = write_idle.left(limit);
            if wait.is_zero() {
                return false;
            }
            match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) => continue,
                Ok(None) => return false,
                Ok(Some(f)) => {
                    write_idle.touch();
                    if writer.frame(&f).await.is_err() {
                        return true;
                    }
                }
            }
        }
    });
    let mut write_done = false;
    loop {
        tokio::select! {
            r = &mut reading => {
                writing.abort();
                if let Ok(Some(reason)) = r {
                    refused(&shared, reason, peer);
                }
                break;
            }
            failed = &mut writing, if !write_done => {
                write_done = true;
                if matches!(failed, Ok(true)) {
                    reading.abort();
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// Counts a refusal and logs it (the first of each kind at warn, the rest at debug).
pub(crate) fn refused(shared: &Shared, reason: Refusal, peer: SocketAddr) {
    shared.counters.refuse(reason);
    if reason == Refusal::Io {
        tracing::debug!(%peer, "connection ended");
        return;
    }
    crate::metrics::log_refusal(reason.as_str(), &peer);
}

/// Serves a connection accepted from `remote`: limits, hello, then frames both ways.
pub fn accept(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    to_node: mpsc::Sender<Inbound>,
    control: mpsc::Sender<Control>,
) {
    let ip = canonical(remote.ip());
    let mut slot = match shared.admit(ip) {
        Ok(s) => s,
        Err(r) => {
            refused(&shared, r, remote);
            return;
        }
    };
    shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut reader = Reader::new(rd, shared.clone(), ip, false);
        let peer = match reader.hello(Some(ip)).await {
            Ok(p) => p,
            Err(r) => {
                refused(&shared, r, remote);
                return;
            }
        };
        if let Err(r) = slot.establish() {
            refused(&shared, r, remote);
            return;
        }
        let (tx, rx) = mpsc::channel(64);
        let _ = control.send(Control::Connected { peer, tx }).await;
        let writer = Writer::new(wr, shared.clone());
        run(reader, writer, peer, rx, to_node, slot).await;
    });
}

/// Opens a connection to `dst` (from this node's advertised IP when it is a local one) and
/// runs it: frames from `rx` are written, frames the peer writes back go to the node.
pub fn connect(
    shared: Arc<Shared>,
    dst: SocketAddr,
    connect_timeout: Duration,
    rx: mpsc::Receiver<Bytes>,
    to_node: mpsc::Sender<Inbound>,
) {
    let slot = match shared.outbound(canonical(dst.ip())) {
        Ok(s) => s,
        Err(r) => {
            refused(&shared, r, dst);
            return;
        }
    };
    shared.counters.opened.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let stream = match tokio::time::timeout(connect_timeout, open(shared.me, dst)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%dst, error = %e, "cannot connect");
                return;
            }
            Err(_) => {
                tracing::debug!(%dst, "connect timed out");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut writer = Writer::new(wr, shared.clone());
        if writer.hello().await.is_err() {
            return;
        }
        let reader = Reader::new(rd, shared.clone(), canonical(dst.ip()), true);
        run(reader, writer, dst, rx, to_node, slot).await;
    });
}

/// Connects from the advertised IP when it is one of this host's (so the peer sees the
/// address the hello names), else from wherever the kernel chooses.
async fn open(me: SocketAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = if dst.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if me.is_ipv4() == dst.is_ipv4() && !me.ip().is_unspecified() {
        let _ = socket.bind(SocketAddr::new(me.ip(), 0));
    }
    socket.connect(dst).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use grapevine_core::wire::{self, Ack, Message, PROTOCOL_VERSION};
    use tokio::net::TcpListener;

    fn quick() -> Limits {
        Limits {
            handshake_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    struct Side {
        shared: Arc<Shared>,
        frames: mpsc::Receiver<Inbound>,
        control: mpsc::Receiver<Control>,
        addr: SocketAddr,
        inbound: mpsc::Sender<Inbound>,
    }

    /// A listening side with `limits` and `keys`, accepting in the background.
    async fn side(limits: Limits, keys: Keyring) -> Side {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(
            limits,
            addr,
            b"lbl".to_vec(),
            Arc::new(RwLock::new(keys)),
            Arc::new(Mutex::new(ReplayGuard::new(Duration::from_secs(60)))),
            Vec::new(),
        );
        let (tx, frames) = mpsc::channel(16);
        let (ctx, control) = mpsc::channel(16);
        let (s, t) = (shared.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok((stream, remote)) = listener.accept().await {
                accept(s.clone(), stream, remote, t.clone(), ctx.clone());
            }
        });
        Side {
            shared,
            frames,
            control,
            addr,
            inbound: tx,
        }
    }

    fn ack(seq: u32) -> Bytes {
        wire::encode_packet(PROTOCOL_VERSION, b"lbl", &[Message::Ack(Ack { seq })])
    }

    /// How many refusals for `r` there are, once there are `n` or 2 s have passed (and
    /// 100 ms more, for any past the count).
    async fn refused_n(s: &Shared, r: Refusal, n: u64) -> u64 {
        let count = || {
            s.counters
                .refused()
                .into_iter()
                .find(|(x, _)| *x == r)
                .map_or(0, |(_, n)| n)
        };
        for _ in 0..100 {
            if count() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        count()
    }

    async fn refused(s: &Shared, r: Refusal) -> u64 {
        refused_n(s, r, 1).await
    }

    async fn both_ways(keys: Keyring) {
        let mut a = side(quick(), keys.clone()).await;
        let mut b = side(quick(), keys).await;
        let (tx, rx) = mpsc::channel(8);
        connect(
            a.shared.clone(),
            b.addr,
            Duration::from_secs(1),
            rx,
            a.inbound.clone(),
        );
        tx.send(ack(1)).await.unwrap();
        tx.send(ack(2)).await.unwrap();
        for seq in [1, 2] {
            let f = b.frames.recv().await.unwrap();
            assert_eq!(f.from, a.addr, "attributed to the hello's address");
            assert_eq!(f.frame, ack(seq));
        }
        // b learns it may answer on that connection, and does.
        let Some(Control::Connected { peer, tx: back }) = b.control.recv().await else {
            panic!("no control message");
        };
        assert_eq!(peer, a.addr);
        back.send(ack(3)).await.unwrap();
        let f = a.frames.recv().await.unwrap();
        assert_eq!((f.from, f.frame), (b.addr, ack(3)));
        assert!(
            a.control.try_recv().is_err(),
            "a opened it: nothing to report"
        );
    }

    #[tokio::test]
    async fn frames_go_both_ways_on_one_connection_plain_and_sealed() {
        both_ways(Keyring::default()).await;
        both_ways(Keyring::new([5; 32])).await;
    }

    async fn raw(dst: SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(dst).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    fn plain_hello(addr: SocketAddr) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.push(PLAIN);
        encode_addr(&mut h, addr);
        h
    }

    #[tokio::test]
    async fn a_hello_naming_another_ip_is_refused() {
        let b = side(quick(), Keyring::default()).await;
        let _s = raw(b.addr, &plain_hello("10.1.2.3:7946".parse().unwrap())).await;
        assert_eq!(refused(&b.shared, Refusal::HelloMismatch).await, 1);
    }

    #[tokio::test]
    async fn a_frame_over_its_types_limit_is_refused_before_its_body() {
        let b = side(quick(), Keyring::default()).await;
        let me: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut bytes = plain_hello(me);
        // An ack announcing 10 MiB: acks are small, so its header is enough to refuse it.
        let head = ack(1);
        bytes.extend_from_slice(&(10u32 << 20).to_be_bytes());
        bytes.extend_from_slice(&head[..head.len() - 4]);
        let _s = raw(b.addr, &bytes).await;
        assert_eq!(refused(&b.shared, Refusal::Oversized).await, 1);
        assert_eq!(b.shared.budget.available_permits(), quick().inflight_total);
    }

    #[tokio::test]
    async fn a_stalled_hello_and_a_dribbled_frame_time_out() {
        let b = side(quick(), Keyring::default()).await;
        let _silent = raw(b.addr, b"G").await;
        assert_eq!(refused(&b.shared, Refusal::HandshakeTimeout).await, 1);
        let mut bytes = plain_hello("127.0.0.1:9".parse().unwrap());
        bytes.extend_from_slice(&100u32.to_be_bytes());
        bytes.extend_from_slice(&ack(1)[..5]);
        let _dribble = raw(b.addr, &bytes).await;
        assert_eq!(refused(&b.shared, Refusal::ReadTimeout).await, 1);
    }

    #[tokio::test]
    async fn handshakes_pending_from_one_address_are_capped() {
        let limits = Limits {
            max_pending_per_source: 3,
            ..quick()
        };
        let b = side(limits, Keyring::default()).await;
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(raw(b.addr, b"GV").await);
        }
        assert_eq!(refused_n(&b.shared, Refusal::TooManyFromSource, 2).await, 2);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_budget_waits_then_is_dropped() {
        let limits = Limits {
            inflight_total: 100 << 10,
            ..quick()
        };
        let b = side(limits, Keyring::default()).await;
        // A 200 KiB frame of keyspace entries (whose type allows 8 MiB), sent whole.
        let mut frame = vec![PROTOCOL_VERSION, 3, b'l', b'b', b'l', 15];
        frame.resize(200 << 10, 0);
        let mut bytes = plain_hello("127.0.0.1:9".parse().unwrap());
        bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&frame);
        let _s = raw(b.addr, &bytes).await;
        assert_eq!(refused(&b.shared, Refusal::Budget).await, 1);
        // The budget it held is back.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(b.shared.budget.available_permits(), 100 << 10);
    }

    #[tokio::test]
    async fn a_replayed_sealed_connection_and_a_plain_one_are_refused() {
        let keys = Keyring::new([7; 32]);
        let b = side(quick(), keys.clone()).await;
        // Record what a member writes: its hello and a frame.
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let a = side(quick(), keys).await;
        let (tx, rx) = mpsc::channel(8);
        connect(
            a.shared.clone(),
            sink_addr,
            Duration::from_secs(1),
            rx,
            a.inbound.clone(),
        );
        tx.send(ack(1)).await.unwrap();
        let (mut s, _) = sink.accept().await.unwrap();
        let mut recorded = vec![0u8; 4096];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = s.read(&mut recorded).await.unwrap();
        recorded.truncate(n);
        // Played to b twice: the first is taken, the copy refused.
        let _first = raw(b.addr, &recorded).await;
        let _copy = raw(b.addr, &recorded).await;
        assert_eq!(refused(&b.shared, Refusal::Replayed).await, 1);
        let _plain = raw(b.addr, &plain_hello("127.0.0.1:9".parse().unwrap())).await;
        assert_eq!(refused(&b.shared, Refusal::Unencrypted).await, 1);
    }
}
