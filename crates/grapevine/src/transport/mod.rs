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

mod records;
pub(crate) mod refusal;

use crate::crypto::{Keyring, Opened, ReplayGuard};
use bytes::{Buf, Bytes, BytesMut};
use records::{Reader, Writer};
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

pub use refusal::Refusal;

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
mod tests;
