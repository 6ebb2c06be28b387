//! The networked node: a tokio task that drives a `grapevine_core::Node` with a UDP socket
//! and a TCP listener on the same port, and the handle the application holds.

use crate::crypto::{Key, Keyring, KeyringError, ReplayGuard};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::transport::{self, Inbound, Limits};
use bytes::Bytes;
use grapevine_core::state::crdt::EpochRegister;
use grapevine_core::state::keyspace::Value;
use grapevine_core::{Agreement, Config, Estimate, Event, Limiter, Member, Name, Target, Time};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What went wrong starting or talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No name was given.
    #[error("a node needs a name")]
    NoName,
    /// The name is not valid.
    #[error(transparent)]
    Name(#[from] grapevine_core::NameError),
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] grapevine_core::ConfigError),
    /// No profile has that name.
    #[error("unknown profile {0:?}: lan, wan or local")]
    UnknownProfile(String),
    /// Binding the UDP socket or TCP listener failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A command the protocol refused (a key too long, say).
    #[error(transparent)]
    Command(#[from] grapevine_core::CommandError),
    /// A keyring change was refused.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The data directory's snapshot could not be read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A contribution to an aggregate was refused.
    #[error(transparent)]
    Aggregate(#[from] grapevine_core::AggregateError),
    /// A slot claim out of range.
    #[error("slots {start}..{end} are not within 0..{max}")]
    Slots {
        /// First slot.
        start: u32,
        /// One past the last.
        end: u32,
        /// The number of slots a map has.
        max: u32,
    },
    /// An ownership map's name that cannot be one.
    #[error("a map name is 1 to 128 bytes with no '/': {0:?}")]
    MapName(String),
    /// The wait ended before the cluster agreed.
    #[error("no agreement within {0:?}")]
    Timeout(Duration),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Builds and starts a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    name: Option<String>,
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    config: Config,
    keyring: Keyring,
    data_dir: Option<PathBuf>,
    /// A profile name that matched none.
    profile: Option<String>,
    limits: Limits,
    allowed: Vec<ipnet::IpNet>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            name: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            seeds: Vec::new(),
            config: Config::lan(),
            keyring: Keyring::default(),
            data_dir: None,
            profile: None,
            limits: Limits::default(),
            allowed: Vec::new(),
        }
    }
}

impl NodeBuilder {
    /// The member name, unique in the cluster.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where to listen, UDP and TCP on the same port (port 0: any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The address other members reach this one at (default: the bound address).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Members to join through, as `host:port` (names are resolved again at every retry).
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The protocol configuration (a profile such as [`Config::lan`], possibly adjusted).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.profile = None;
        self
    }

    /// The protocol configuration of a named profile (`lan`, `wan` or `local`); an unknown
    /// name makes `start` fail.
    pub fn profile(mut self, name: &str) -> Self {
        match Config::profile(name) {
            Some(c) => {
                self.config = c;
                self.profile = None;
            }
            None => self.profile = Some(name.to_string()),
        }
        self
    }

    /// Encrypts and authenticates every packet with these keys (none: no encryption).
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }

    /// Bounds on connections, in-flight bytes, deadlines and datagram rates (see
    /// [`Limits`]; the defaults suit a cluster of up to a few hundred members).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Takes datagrams and connections only from these networks (empty: from anywhere).
    pub fn allowed_networks(mut self, networks: Vec<ipnet::IpNet>) -> Self {
        self.allowed = networks;
        self
    }

    /// Remembers members, incarnation, generation and own keys in `dir` across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Binds the sockets and starts the node's task on the current tokio runtime.
    pub async fn start(self) -> Result<Node, Error> {
        if let Some(p) = self.profile {
            return Err(Error::UnknownProfile(p));
        }
        let name = Name::new(self.name.as_deref().ok_or(Error::NoName)?)?;
        self.config.validate()?;
        let (udp, tcp, bound) = bind_pair(self.bind).await?;
        let advertise = self.advertise.unwrap_or(bound);
        let epoch = Instant::now();
        let seed = rand::random::<u64>();
        let mut core = grapevine_core::Node::new(
            self.config.clone(),
            name.clone(),
            advertise,
            seed,
            Time::ZERO,
        )?;
        let unix_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        core.set_wall_clock(unix_micros);
        let mut seeds = self.seeds;
        let snapshot = match &self.data_dir {
            Some(dir) => Snapshot::load(dir)?.filter(|s| s.name == name.as_str()),
            None => None,
        };
        // A restart comes back above everything said of its previous run: a higher
        // incarnation for membership, a higher generation for its state.
        let generation = snapshot.as_ref().map_or(unix_micros, |s| {
            unix_micros.max(s.generation.saturating_add(1))
        });
        core.set_generation(generation);
        if let Some(snap) = snapshot {
            core.set_incarnation(Time::ZERO, snap.incarnation.wrapping_add(1));
            for (k, v) in snap.state {
                core.set_state(Time::ZERO, &k, v, None)?;
            }
            seeds.extend(
                snap.members
                    .iter()
                    .filter(|(_, a)| *a != advertise)
                    .map(|(_, a)| a.to_string()),
            );
            tracing::info!(
                incarnation = snap.incarnation.wrapping_add(1),
                keys = core.node_state(&name).map_or(0, |s| s.entries.len()),
                "restored from the data directory"
            );
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (events_tx, _) = broadcast::channel(4096);
        let (kv_tx, kv_rx) = watch::channel(0u64);
        let (states_tx, states_rx) = watch::channel(core.node_states_root());
        let keyring = Arc::new(RwLock::new(self.keyring));
        let replay = Arc::new(Mutex::new(ReplayGuard::new(self.limits.replay_window)));
        let shared = transport::Shared::new(
            self.limits.clone(),
            advertise,
            self.config.label.clone(),
            keyring.clone(),
            replay.clone(),
            self.allowed,
        );
        let datagrams = Limiter::new(
            self.limits.datagrams_per_source,
            self.limits.datagrams_total,
            Time::ZERO,
        );
        let (inbound, frames_rx) = mpsc::channel(1024);
        let (control, control_rx) = mpsc::channel(256);
        let driver = Driver {
            core,
            config: self.config,
            me: advertise,
            epoch,
            udp,
            tcp,
            seeds,
            data_dir: self.data_dir,
            generation,
            blocked: Vec::new(),
            kv_index: kv_tx,
            states_root: states_tx,
            exports: 0,
            exporter: crate::metrics::Exporter::default(),
            writers: HashMap::new(),
            events: events_tx.clone(),
            joined: false,
            keyring,
            replay,
            transport: shared,
            datagrams,
            inbound,
            control,
            refused: HashMap::new(),
            claims: BTreeMap::new(),
        };
        tokio::spawn(driver.run(cmd_rx, frames_rx, control_rx));
        Ok(Node {
            name,
            addr: advertise,
            cmds: cmd_tx,
            events: events_tx,
            kv_index: kv_rx,
            states_root: states_rx,
        })
    }
}

/// Binds UDP and TCP on one port. With port 0 the kernel picks a UDP port, which TCP may
/// have in use (another process's connection): then another port is tried.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), Error> {
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if addr.port() == 0 && attempt < 16 => {
                tracing::debug!(%bound, error = %e, "TCP cannot take the UDP port; another");
                attempt += 1;
            }
            Err(source) => {
                return Err(Error::Bind {
                    addr: bound,
                    source,
                })
            }
        }
    }
}

/// A command from the handle to the task.
enum Command {
    Members(oneshot::Sender<Vec<Member>>),
    SetState(String, Vec<u8>, oneshot::Sender<Result<u64, Error>>),
    GetState(Name, String, oneshot::Sender<Option<Vec<u8>>>),
    DeleteState(String, oneshot::Sender<Option<u64>>),
    Put(Vec<u8>, Option<Vec<u8>>, oneshot::Sender<Result<(), Error>>),
    Entries(Vec<u8>, bool, oneshot::Sender<Vec<KvEntry>>),
    Changes(Vec<u8>, u64, oneshot::Sender<Vec<KvChange>>),
    Cas(
        Vec<u8>,
        Option<Vec<u8>>,
        u64,
        oneshot::Sender<Result<bool, Error>>,
    ),
    Join(Vec<SocketAddr>, oneshot::Sender<()>),
    Broadcast(String, Vec<u8>, oneshot::Sender<Result<u64, Error>>),
    Keyring(KeyOp, oneshot::Sender<Result<Vec<Key>, Error>>),
    Refused(oneshot::Sender<HashMap<&'static str, u64>>),
    Leave(oneshot::Sender<()>),
    ForceLeave(Name, oneshot::Sender<Result<(), Error>>),
    NodeState(Option<Name>, oneshot::Sender<Vec<NodeStateView>>),
    NodeStateVersions(oneshot::Sender<Vec<(String, u64, u64)>>),
    NodeStatesPrefix(Vec<Name>, String, oneshot::Sender<Vec<NodeStateView>>),
    Stop(oneshot::Sender<()>),
    Stats(oneshot::Sender<grapevine_core::Stats>),
    Block(Vec<SocketAddr>, oneshot::Sender<()>),
    Contribute(String, Option<f64>, oneshot::Sender<Result<(), Error>>),
    Aggregates(Option<String>, oneshot::Sender<Vec<(String, Estimate)>>),
    Track(Target, oneshot::Sender<Agreement>),
    Versions(String, oneshot::Sender<Versions>),
    Claim(String, Range<u32>, Option<u64>, oneshot::Sender<u64>),
    Slots(String, oneshot::Sender<SlotMap>),
}

/// A keyring operation.
enum KeyOp {
    Install(Key),
    Use(Key),
    Remove(Key),
    List,
}

/// A running member of a cluster. Cheap to clone; the node stops when it leaves.
#[derive(Clone, Debug)]
pub struct Node {
    name: Name,
    addr: SocketAddr,
    cmds: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    kv_index: watch::Receiver<u64>,
    states_root: watch::Receiver<u64>,
}

/// A shared key as the HTTP API shows it: its value and the local change count when it
/// last changed (Consul's `ModifyIndex`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The keyspace's change count when it last changed here.
    pub modify_index: u64,
    /// The member whose write this value is: after concurrent writes, each writer can see
    /// whether it won.
    pub writer: String,
    /// The write's hybrid-logical-clock timestamp (microseconds since the UNIX epoch, and a
    /// logical count): later wins, ties by writer name.
    pub written_at: (u64, u32),
}

/// A shared key that changed: its value now (`None`: deleted or expired) and the local
/// change count at which it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvChange {
    /// The key.
    pub key: Vec<u8>,
    /// Its value now, or `None` if it was deleted or has expired.
    pub value: Option<Vec<u8>>,
    /// The keyspace's change count when it changed here.
    pub modify_index: u64,
}

/// The value of a last-write-wins key, unless it is a tombstone (other policies' values are
/// not bytes the API can hand out).
fn lww_value(v: &grapevine_core::state::keyspace::Value) -> Option<&[u8]> {
    match v {
        grapevine_core::state::keyspace::Value::Lww(l) => l.value.as_deref(),
        _ => None,
    }
}

/// A watch on the shared keys under a prefix: each `next` returns the changes since the
/// last one.
pub struct Watch {
    node: Node,
    prefix: Vec<u8>,
    seen: u64,
}

impl Watch {
    /// Waits for the next change under the prefix and returns every key that changed, in
    /// the order of their changes.
    pub async fn next(&mut self) -> Result<Vec<KvChange>, Error> {
        loop {
            let now = self
                .node
                .kv_wait(self.seen, Duration::from_secs(3600))
                .await;
            if now <= self.seen {
                if self.node.cmds.is_closed() {
                    return Err(Error::Stopped);
                }
                continue;
            }
            let changes = self
                .node
                .ask(|tx| Command::Changes(self.prefix.clone(), self.seen, tx))
                .await?;
            self.seen = changes
                .iter()
                .map(|c| c.modify_index)
                .max()
                .unwrap_or(now)
                .max(now);
            if !changes.is_empty() {
                return Ok(changes);
            }
        }
    }
}

/// Asks `ask` every 50 ms until `done` holds of its answer (which is returned), or
/// [`Error::Timeout`] after `timeout`.
async fn poll_until<T, F, Fut>(
    timeout: Duration,
    mut ask: F,
    done: impl Fn(&T) -> bool,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let until = tokio::time::Instant::now() + timeout;
    loop {
        let answer = ask().await?;
        if done(&answer) {
            return Ok(answer);
        }
        if tokio::time::Instant::now() >= until {
            return Err(Error::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The most slots an ownership map has (Redis Cluster's 16,384).
pub const MAX_SLOTS: u32 = 16_384;

/// The shared-key prefix of an ownership map's slots.
fn slot_prefix(map: &str) -> Vec<u8> {
    format!("__own/{map}/").into_bytes()
}

/// The shared key of one slot.
fn slot_key(map: &str, slot: u32) -> Vec<u8> {
    format!("__own/{map}/{slot:05}").into_bytes()
}

/// What the live members publish under one key of their own state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// Every live member publishes the same value.
    pub agreed: bool,
    /// Each value published, with the members that publish it.
    pub versions: BTreeMap<Vec<u8>, Vec<String>>,
    /// Live members that publish nothing under the key.
    pub unknown: Vec<String>,
}

/// Who owns a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotOwner {
    /// The owner's name.
    pub owner: String,
    /// The epoch of its claim.
    pub epoch: u64,
    /// The address it claimed with.
    pub addr: String,
}

/// A claim of this node that another, higher one overrode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostClaim {
    /// The slot.
    pub slot: u32,
    /// The epoch this node claimed it at.
    pub epoch: u64,
    /// The claim that won.
    pub winner: SlotOwner,
}

/// An ownership map as held here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Each claimed slot's owner.
    pub owners: BTreeMap<u32, SlotOwner>,
    /// This node's claims that lost.
    pub lost: Vec<LostClaim>,
}

/// One member's per-node state as known here (Cassandra's endpoint state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStateView {
    /// The member.
    pub name: String,
    /// Its generation (bumped at each restart).
    pub generation: u64,
    /// The highest version of its state known here.
    pub version: u64,
    /// Its live keys: name, value, version.
    pub keys: Vec<(String, Vec<u8>, u64)>,
}

/// The node's events, as they happen. A subscriber that falls too far behind loses the
/// oldest (and is told how many).
pub struct Events(broadcast::Receiver<Event>);

impl Events {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.0.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Node {
    /// A builder: `Node::builder().name("a").bind(addr).seeds([...]).start().await`.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This member's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The address others reach it at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A subscription to events from now on.
    pub fn events(&self) -> Events {
        Events(self.events.subscribe())
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Every member known, in any state, this one included.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        self.ask(Command::Members).await
    }

    /// Sets a key of this node's own state; returns its version.
    pub async fn set_state(&self, key: &str, value: Vec<u8>) -> Result<u64, Error> {
        self.ask(|tx| Command::SetState(key.to_string(), value, tx))
            .await?
    }

    /// Deletes a key of this node's own state; returns the tombstone's version, or `None`
    /// if the key was not set.
    pub async fn delete_state(&self, key: &str) -> Result<Option<u64>, Error> {
        self.ask(|tx| Command::DeleteState(key.to_string(), tx))
            .await
    }

    /// The value of `key` in member `name`'s state, as known here.
    pub async fn state(&self, name: &Name, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.ask(|tx| Command::GetState(name.clone(), key.to_string(), tx))
            .await
    }

    /// Writes a shared key (last write wins); `None` deletes it.
    pub async fn put(&self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), Error> {
        self.ask(|tx| Command::Put(key.to_vec(), value, tx)).await?
    }

    /// A shared key's value, as known here.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut found = self.entries(key, false).await?;
        Ok(found.pop().map(|e| e.value))
    }

    /// The shared keys starting with `prefix` that hold a value, with it, in key order.
    pub async fn list(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let entries = self.entries(prefix, true).await?;
        Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
    }

    /// The shared key `key` (or, with `prefix`, every key under it) that holds a value,
    /// with its modify index.
    pub async fn entries(&self, key: &[u8], prefix: bool) -> Result<Vec<KvEntry>, Error> {
        self.ask(|tx| Command::Entries(key.to_vec(), prefix, tx))
            .await
    }

    /// Check-and-set: writes `value` (`None`: deletes) only if the key's modify index is
    /// `cas` (0: only if it holds no value). The check is against this replica: concurrent
    /// writes elsewhere still resolve by the key's policy.
    pub async fn put_cas(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        cas: u64,
    ) -> Result<bool, Error> {
        self.ask(|tx| Command::Cas(key.to_vec(), value, cas, tx))
            .await?
    }

    /// Watches the shared keys under `prefix` from now on.
    pub fn watch(&self, prefix: &[u8]) -> Watch {
        Watch {
            node: self.clone(),
            prefix: prefix.to_vec(),
            seen: self.kv_index(),
        }
    }

    /// The shared keys under `prefix` that changed here after change count `after`,
    /// deletions included, in the order of their changes.
    pub async fn kv_changes(&self, prefix: &[u8], after: u64) -> Result<Vec<KvChange>, Error> {
        self.ask(|tx| Command::Changes(prefix.to_vec(), after, tx))
            .await
    }

    /// The shared keyspace's change count now (Consul's `X-Consul-Index`).
    pub fn kv_index(&self) -> u64 {
        *self.kv_index.borrow()
    }

    /// Waits until the change count passes `after`, or `timeout`; returns it (a blocking
    /// query).
    pub async fn kv_wait(&self, after: u64, timeout: Duration) -> u64 {
        let mut rx = self.kv_index.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&v| v > after)).await;
        let now = *rx.borrow();
        now
    }

    /// Joins through more members (`host:port`, resolved now).
    pub async fn join<I, S>(&self, seeds: I) -> Result<usize, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut addrs = Vec::new();
        for s in seeds {
            if let Ok(found) = tokio::net::lookup_host(s.as_ref()).await {
                addrs.extend(found);
            }
        }
        let n = addrs.len();
        self.ask(|tx| Command::Join(addrs, tx)).await?;
        Ok(n)
    }

    /// Raises a user event for every member.
    pub async fn broadcast(&self, name: &str, payload: Vec<u8>) -> Result<u64, Error> {
        self.ask(|tx| Command::Broadcast(name.to_string(), payload, tx))
            .await?
    }

    /// Installs a key to read with; returns the keyring, primary first.
    pub async fn keyring_install(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.ask(|tx| Command::Keyring(KeyOp::Install(key), tx))
            .await?
    }

    /// Makes an installed key the one this node writes with.
    pub async fn keyring_use(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.ask(|tx| Command::Keyring(KeyOp::Use(key), tx)).await?
    }

    /// Removes a key that is not the primary.
    pub async fn keyring_remove(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.ask(|tx| Command::Keyring(KeyOp::Remove(key), tx))
            .await?
    }

    /// The keys, primary first.
    pub async fn keyring_list(&self) -> Result<Vec<Key>, Error> {
        self.ask(|tx| Command::Keyring(KeyOp::List, tx)).await?
    }

    /// Datagrams, connections and frames refused before reaching the protocol, by reason
    /// (`unencrypted`, `wrong_label`, `bad_key`, `replayed`, `rate_limited`, `oversized`,
    /// `too_many_from_source`, …: the datagram, envelope and transport layers' reasons).
    pub async fn refused(&self) -> Result<HashMap<&'static str, u64>, Error> {
        self.ask(Command::Refused).await
    }

    /// The protocol's counters: messages and bytes in and out, drops by reason, probes.
    pub async fn stats(&self) -> Result<grapevine_core::Stats, Error> {
        self.ask(Command::Stats).await
    }

    /// Fault injection, for demos and tests: drops every datagram and frame to or from
    /// these addresses until called again with others (empty: none).
    pub async fn block(&self, addrs: Vec<SocketAddr>) -> Result<(), Error> {
        self.ask(|tx| Command::Block(addrs, tx)).await
    }

    /// Records a failed member as left on its behalf (Serf's force-leave), so it is reaped
    /// instead of retried; refused for a member that is not failed here.
    pub async fn force_leave(&self, name: &str) -> Result<(), Error> {
        let name = Name::new(name)?;
        self.ask(|tx| Command::ForceLeave(name, tx)).await?
    }

    /// The per-node state known here: every member's (`None`) or one member's keys, with
    /// their versions.
    pub async fn node_states(&self, name: Option<&str>) -> Result<Vec<NodeStateView>, Error> {
        let name = name.map(Name::new).transpose()?;
        self.ask(|tx| Command::NodeState(name, tx)).await
    }

    /// The root hash of the per-node states held here: it moves when any of them changes.
    pub fn node_states_root(&self) -> u64 {
        *self.states_root.borrow()
    }

    /// The root of the per-node states held here, as a channel that wakes its holder when
    /// it moves (and closes when the node stops): a catalog kept from per-node state waits
    /// on it instead of asking.
    pub fn node_states_watch(&self) -> watch::Receiver<u64> {
        self.states_root.clone()
    }

    /// Every per-node state held here by member name, with its generation and version: what
    /// changed since an earlier call, without copying any value.
    pub async fn node_state_versions(&self) -> Result<Vec<(String, u64, u64)>, Error> {
        self.ask(Command::NodeStateVersions).await
    }

    /// The live keys under `prefix` of the per-node states of `names` (those held here).
    pub async fn node_states_with_prefix(
        &self,
        names: &[String],
        prefix: &str,
    ) -> Result<Vec<NodeStateView>, Error> {
        let names = names
            .iter()
            .filter_map(|n| Name::new(n).ok())
            .collect::<Vec<_>>();
        self.ask(|tx| Command::NodeStatesPrefix(names, prefix.to_string(), tx))
            .await
    }

    /// Sets this node's contribution to the cluster-wide metric `name` (push-sum: every
    /// member can then read the cluster's sum, average, count, min and max locally).
    pub async fn contribute(&self, name: &str, value: f64) -> Result<(), Error> {
        self.ask(|tx| Command::Contribute(name.to_string(), Some(value), tx))
            .await?
    }

    /// Withdraws this node's contribution to `name`.
    pub async fn withdraw(&self, name: &str) -> Result<(), Error> {
        self.ask(|tx| Command::Contribute(name.to_string(), None, tx))
            .await?
    }

    /// This node's estimate of the cluster-wide aggregates of `name`.
    pub async fn aggregate(&self, name: &str) -> Result<Option<Estimate>, Error> {
        let mut v = self
            .ask(|tx| Command::Aggregates(Some(name.to_string()), tx))
            .await?;
        Ok(v.pop().map(|(_, e)| e))
    }

    /// Every metric aggregated here, with this node's estimate.
    pub async fn aggregates(&self) -> Result<Vec<(String, Estimate)>, Error> {
        self.ask(|tx| Command::Aggregates(None, tx)).await
    }

    /// Starts publishing what this node holds of `target`, so that members can tell whether
    /// the cluster agrees on it; returns whether the live members agree now. A member
    /// answers for a target only once it tracks it too (agents track the whole keyspace).
    pub async fn track(&self, target: Target) -> Result<Agreement, Error> {
        self.ask(|tx| Command::Track(target, tx)).await
    }

    /// Waits until every live member publishes the value of `target` held here (convergence
    /// detection); [`Error::Timeout`] if that does not happen within `timeout`.
    pub async fn await_agreement(
        &self,
        target: Target,
        timeout: Duration,
    ) -> Result<Agreement, Error> {
        poll_until(timeout, || self.track(target.clone()), |a| a.agreed).await
    }

    /// What every live member publishes under `key` of its own state, grouped by value
    /// (Cassandra's schema versions, with `key` = `"schema"`).
    pub async fn versions(&self, key: &str) -> Result<Versions, Error> {
        self.ask(|tx| Command::Versions(key.to_string(), tx)).await
    }

    /// Waits until every live member publishes one and the same value under `key` (as
    /// Cassandra waits for schema agreement), or `timeout`.
    pub async fn await_versions(&self, key: &str, timeout: Duration) -> Result<Versions, Error> {
        poll_until(timeout, || self.versions(key), |v| v.agreed).await
    }

    /// Claims `slots` of the ownership map `map` for this node at `epoch` (default: one
    /// above the highest epoch in the map here). A claim at a higher epoch wins; equal
    /// epochs break by owner name. Returns the epoch claimed at.
    pub async fn claim(
        &self,
        map: &str,
        slots: Range<u32>,
        epoch: Option<u64>,
    ) -> Result<u64, Error> {
        if map.is_empty() || map.len() > 128 || map.contains('/') {
            return Err(Error::MapName(map.to_string()));
        }
        if slots.start >= slots.end || slots.end > MAX_SLOTS {
            return Err(Error::Slots {
                start: slots.start,
                end: slots.end,
                max: MAX_SLOTS,
            });
        }
        self.ask(|tx| Command::Claim(map.to_string(), slots, epoch, tx))
            .await
    }

    /// The ownership map `map` as held here, and this node's claims that lost to another.
    pub async fn slots(&self, map: &str) -> Result<SlotMap, Error> {
        self.ask(|tx| Command::Slots(map.to_string(), tx)).await
    }

    /// Stops the node at once, without leaving: to the others it looks like a crash.
    pub async fn stop(&self) -> Result<(), Error> {
        self.ask(Command::Stop).await
    }

    /// Leaves the cluster gracefully (the others record this member as left, not failed)
    /// and stops the node.
    pub async fn leave(&self) -> Result<(), Error> {
        self.ask(Command::Leave).await
    }
}

/// The task's state.
struct Driver {
    core: grapevine_core::Node,
    config: Config,
    me: SocketAddr,
    epoch: Instant,
    udp: UdpSocket,
    tcp: TcpListener,
    seeds: Vec<String>,
    writers: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    events: broadcast::Sender<Event>,
    joined: bool,
    /// The keys, shared with the connections (changed at run time).
    keyring: Arc<RwLock<Keyring>>,
    /// Envelopes seen lately, shared with the connections: replays are refused.
    replay: Arc<Mutex<ReplayGuard>>,
    /// What connections share: limits, budgets, counters.
    transport: Arc<transport::Shared>,
    /// Datagrams taken per source IP and in all.
    datagrams: Limiter<IpAddr>,
    /// Where connections deliver frames.
    inbound: mpsc::Sender<Inbound>,
    /// Where connections report themselves.
    control: mpsc::Sender<transport::Control>,
    refused: HashMap<&'static str, u64>,
    data_dir: Option<PathBuf>,
    generation: u64,
    blocked: Vec<SocketAddr>,
    kv_index: watch::Sender<u64>,
    /// The root of the per-node states, published when it moves.
    states_root: watch::Sender<u64>,
    /// Metric exports so far.
    exports: u64,
    exporter: crate::metrics::Exporter,
    /// Slots this node claimed, by map, and at which epoch: to tell it when it lost one.
    claims: BTreeMap<(String, u32), u64>,
}

impl Driver {
    /// Writes the snapshot, if the node has a data directory; a failure is logged, not fatal.
    fn save(&self) {
        let Some(dir) = &self.data_dir else { return };
        let now = self.now();
        let me = self.core.name().clone();
        let members = self
            .core
            .members()
            .filter(|m| m.state.is_live() && m.name != me)
            .map(|m| (m.name.as_str().to_string(), m.addr))
            .collect();
        let phys = self.core.physical_time(now);
        let state = self
            .core
            .node_state(&me)
            .map(|s| {
                s.entries
                    .iter()
                    .filter(|(k, v)| !v.is_gone(phys) && !k.starts_with("__"))
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let snap = Snapshot {
            version: 1,
            name: me.as_str().to_string(),
            incarnation: self.core.incarnation(),
            generation: self.generation,
            members,
            state,
        };
        if let Err(e) = snap.save(dir) {
            tracing::warn!(error = %e, "cannot write the snapshot");
        }
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a datagram from `from`, or counts why not: from outside the allowed
    /// networks, or over its source's rate.
    fn admit_datagram(&mut self, from: SocketAddr) -> bool {
        let reason = if !self.transport.allows(from.ip()) {
            "not_allowed"
        } else if !self.datagrams.allow(&from.ip(), self.now()) {
            "rate_limited"
        } else {
            return true;
        };
        *self.refused.entry(reason).or_insert(0) += 1;
        crate::metrics::log_refusal(reason, &from);
        false
    }

    /// Opens an incoming datagram's envelope, counting and logging what is refused.
    fn open(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        let opened = self.keys().open(&self.config.label, bytes).and_then(|o| {
            if self.keys().is_empty() {
                return Ok(o.body);
            }
            let mut replay = self.replay.lock().unwrap_or_else(|e| e.into_inner());
            replay.check(&o, unix_millis())?;
            Ok(o.body)
        });
        match opened {
            Ok(p) => Some(p),
            Err(e) => {
                *self.refused.entry(e.reason()).or_insert(0) += 1;
                crate::metrics::log_refusal(e.reason(), &from);
                None
            }
        }
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    fn instant(&self, t: Time) -> tokio::time::Instant {
        if t == Time::MAX {
            return tokio::time::Instant::now() + Duration::from_secs(3600);
        }
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(t.as_micros()))
    }

    async fn resolve_seeds(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for s in &self.seeds {
            match tokio::net::lookup_host(s.as_str()).await {
                Ok(addrs) => out.extend(addrs.filter(|a| *a != self.me)),
                Err(e) => tracing::warn!(seed = %s, error = %e, "cannot resolve seed"),
            }
        }
        out
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut frames_rx: mpsc::Receiver<Inbound>,
        mut control_rx: mpsc::Receiver<transport::Control>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        let mut snapshot = tokio::time::interval(Duration::from_secs(2));
        let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
        self.core.record_rtt_samples();
        let mut leaving: Option<(oneshot::Sender<()>, tokio::time::Instant)> = None;
        loop {
            self.flush().await;
            if let Some((_, until)) = &leaving {
                if tokio::time::Instant::now() >= *until {
                    break;
                }
            }
            let deadline = self.instant(self.core.poll_timeout());
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((_, from)) if self.blocked.contains(&from) => {}
                    Ok((n, from)) => {
                        if self.admit_datagram(from) {
                            let bytes = buf[..n].to_vec();
                            if let Some(packet) = self.open(from, &bytes) {
                                let now = self.now();
                                self.core.handle_datagram(now, from, &packet);
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "udp receive failed"),
                },
                Some(inbound) = frames_rx.recv() => {
                    if self.blocked.contains(&inbound.from) {
                        continue;
                    }
                    // Frames come opened (and authenticated, with encryption on) by their
                    // connection; the budget they hold is released once handled.
                    let now = self.now();
                    self.core.handle_frame(now, inbound.from, &inbound.frame);
                    drop(inbound);
                }
                Some(control) = control_rx.recv() => match control {
                    transport::Control::Connected { peer, tx } => {
                        // Answers to this peer may take the connection it opened.
                        if self.writers.get(&peer).is_none_or(|w| w.is_closed()) {
                            self.writers.insert(peer, tx);
                        }
                    }
                },
                r = self.tcp.accept() => match r {
                    Ok((stream, remote)) => transport::accept(
                        self.transport.clone(),
                        stream,
                        remote,
                        self.inbound.clone(),
                        self.control.clone(),
                    ),
                    Err(e) => {
                        // Out of descriptors, say: wait a little rather than spin.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(cmd) = cmds.recv(), if leaving.is_none() => {
                    if let Command::Stop(done) = cmd {
                        let _ = done.send(());
                        return;
                    }
                    if let Some(done) = self.command(cmd) {
                        // Give the leave message time to spread, then stop.
                        let until = tokio::time::Instant::now() + self.config.gossip_interval * 5;
                        leaving = Some((done, until));
                    }
                }
                _ = retry.tick(), if !self.joined && !self.seeds.is_empty() => {
                    let seeds = self.resolve_seeds().await;
                    if !seeds.is_empty() {
                        let now = self.now();
                        self.core.join(now, &seeds);
                    }
                }
                _ = snapshot.tick(), if self.data_dir.is_some() => self.save(),
                _ = metrics_tick.tick() => self.export_metrics(),
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.core.handle_timeout(now);
                }
            }
        }
        self.save();
        if let Some((done, _)) = leaving {
            let _ = done.send(());
        }
    }

    /// Handles a command; returns the reply channel of a leave, which ends the task.
    fn command(&mut self, cmd: Command) -> Option<oneshot::Sender<()>> {
        let now = self.now();
        match cmd {
            Command::Members(tx) => {
                let _ = tx.send(self.core.members().collect());
            }
            Command::SetState(k, v, tx) => {
                let _ = tx.send(self.core.set_state(now, &k, v, None).map_err(Error::from));
            }
            Command::DeleteState(k, tx) => {
                let _ = tx.send(self.core.delete_state(now, &k));
            }
            Command::GetState(n, k, tx) => {
                let _ = tx.send(self.core.state_value(now, &n, &k).map(<[u8]>::to_vec));
            }
            Command::Put(k, v, tx) => {
                let _ = tx.send(self.core.put_shared(now, &k, v, None).map_err(Error::from));
            }
            Command::Entries(key, prefix, tx) => {
                let phys = self.core.physical_time(now);
                let ks = self.core.shared();
                let entry = |k: &[u8], v: &Value| match v {
                    Value::Lww(l) => l.value.as_ref().map(|value| KvEntry {
                        key: k.to_vec(),
                        value: value.clone(),
                        modify_index: ks.modified(k).unwrap_or(0),
                        writer: l.writer.as_str().to_string(),
                        written_at: (l.at.physical, l.at.logical),
                    }),
                    _ => None,
                };
                let mut out: Vec<KvEntry> = if prefix {
                    // Entries are kept in key-hash order: a prefix means a scan.
                    ks.iter(phys)
                        .filter(|(k, _)| k.starts_with(&key))
                        .filter_map(|(k, v)| entry(k, v))
                        .collect()
                } else {
                    ks.get(&key, phys)
                        .and_then(|v| entry(&key, v))
                        .into_iter()
                        .collect()
                };
                out.sort_by(|a, b| a.key.cmp(&b.key));
                let _ = tx.send(out);
            }
            Command::Changes(prefix, after, tx) => {
                let phys = self.core.physical_time(now);
                let mut out: Vec<KvChange> = self
                    .core
                    .shared()
                    .changed_since(after)
                    .filter(|(k, _, _)| k.starts_with(&prefix))
                    .map(|(k, v, at)| KvChange {
                        key: k.to_vec(),
                        value: (!v.is_gone(phys))
                            .then(|| lww_value(v))
                            .flatten()
                            .map(<[u8]>::to_vec),
                        modify_index: at,
                    })
                    .collect();
                out.sort_by_key(|c| c.modify_index);
                let _ = tx.send(out);
            }
            Command::Cas(key, value, cas, tx) => {
                let phys = self.core.physical_time(now);
                let ks = self.core.shared();
                let current = if ks.get(&key, phys).is_some() {
                    ks.modified(&key).unwrap_or(0)
                } else {
                    0
                };
                let r = if current == cas {
                    self.core
                        .put_shared(now, &key, value, None)
                        .map(|()| true)
                        .map_err(Error::from)
                } else {
                    Ok(false)
                };
                let _ = tx.send(r);
            }
            Command::Join(addrs, tx) => {
                self.core.join(now, &addrs);
                let _ = tx.send(());
            }
            Command::Broadcast(name, payload, tx) => {
                let _ = tx.send(
                    self.core
                        .broadcast(now, &name, payload)
                        .map_err(Error::from),
                );
            }
            Command::Keyring(op, tx) => {
                let r = match op {
                    KeyOp::Install(k) => {
                        self.keys_mut().install(k);
                        Ok(())
                    }
                    KeyOp::Use(k) => self.keys_mut().use_key(&k),
                    KeyOp::Remove(k) => self.keys_mut().remove(&k),
                    KeyOp::List => Ok(()),
                };
                let _ = tx.send(r.map(|()| self.keys().list().to_vec()).map_err(Error::from));
            }
            Command::Refused(tx) => {
                let mut all = self.refused.clone();
                for (r, n) in self.transport.counters.refused() {
                    if n > 0 {
                        *all.entry(r.as_str()).or_insert(0) += n;
                    }
                }
                let _ = tx.send(all);
            }
            Command::Leave(tx) => {
                self.core.leave(now);
                return Some(tx);
            }
            Command::ForceLeave(name, tx) => {
                let _ = tx.send(self.core.force_leave(now, &name).map_err(Error::from));
            }
            Command::NodeState(name, tx) => {
                let _ = tx.send(self.node_states(now, name.as_ref()));
            }
            Command::NodeStateVersions(tx) => {
                let out = self
                    .core
                    .node_state_versions()
                    .map(|(n, g, v)| (n.as_str().to_string(), g, v))
                    .collect();
                let _ = tx.send(out);
            }
            Command::NodeStatesPrefix(names, prefix, tx) => {
                let phys = self.core.physical_time(now);
                let out = names
                    .into_iter()
                    .filter_map(|name| {
                        let s = self.core.node_state(&name)?;
                        Some(state_view(&name, s, phys, &prefix))
                    })
                    .collect();
                let _ = tx.send(out);
            }
            Command::Stop(tx) => {
                let _ = tx.send(());
            }
            Command::Stats(tx) => {
                let _ = tx.send(self.core.stats().clone());
            }
            Command::Block(addrs, tx) => {
                self.blocked = addrs;
                let _ = tx.send(());
            }
            Command::Contribute(name, value, tx) => {
                let _ = tx.send(self.core.contribute(&name, value).map_err(Error::from));
            }
            Command::Aggregates(name, tx) => {
                let names = match name {
                    Some(n) => vec![n],
                    None => self.core.aggregate_names(),
                };
                let out = names
                    .into_iter()
                    .filter_map(|n| self.core.aggregate(&n).map(|e| (n, e)))
                    .collect();
                let _ = tx.send(out);
            }
            Command::Track(target, tx) => {
                self.core.track(now, target.clone());
                let _ = tx.send(self.core.agreement(now, &target));
            }
            Command::Versions(key, tx) => {
                let _ = tx.send(self.versions(now, &key));
            }
            Command::Claim(map, slots, epoch, tx) => {
                let _ = tx.send(self.claim(now, &map, slots, epoch));
            }
            Command::Slots(map, tx) => {
                let _ = tx.send(self.slot_map(now, &map));
            }
        }
        None
    }

    /// What each live member publishes under `key` of its own state.
    fn versions(&self, now: Time, key: &str) -> Versions {
        let mut out = Versions::default();
        for m in self.core.members().filter(|m| m.state.is_live()) {
            let name = m.name.as_str().to_string();
            match self.core.state_value(now, &m.name, key) {
                Some(v) => out.versions.entry(v.to_vec()).or_default().push(name),
                None => out.unknown.push(name),
            }
        }
        for names in out.versions.values_mut() {
            names.sort();
        }
        out.unknown.sort();
        out.agreed = out.unknown.is_empty() && out.versions.len() == 1;
        out
    }

    /// Claims `slots` of `map` at `epoch` (default: one above the map's highest); returns
    /// the epoch claimed at.
    fn claim(&mut self, now: Time, map: &str, slots: Range<u32>, epoch: Option<u64>) -> u64 {
        let epoch = epoch.unwrap_or_else(|| {
            let phys = self.core.physical_time(now);
            let prefix = slot_prefix(map);
            self.core
                .shared()
                .iter(phys)
                .filter(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(_, v)| match v {
                    Value::Epoch(e) => Some(e.epoch),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
                .saturating_add(1)
        });
        let claim = Value::Epoch(EpochRegister {
            epoch,
            owner: self.core.name().clone(),
            value: self.me.to_string().into_bytes(),
        });
        for slot in slots {
            self.core.merge_shared(now, &slot_key(map, slot), &claim);
            self.claims.insert((map.to_string(), slot), epoch);
        }
        epoch
    }

    /// The claimed slots of `map` as held here, and this node's claims that lost.
    fn slot_map(&self, now: Time, map: &str) -> SlotMap {
        let phys = self.core.physical_time(now);
        let prefix = slot_prefix(map);
        let me = self.core.name();
        let mut owners = BTreeMap::new();
        for (k, v) in self.core.shared().iter(phys) {
            let Some(slot) = k
                .strip_prefix(prefix.as_slice())
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Value::Epoch(e) = v {
                owners.insert(
                    slot,
                    SlotOwner {
                        owner: e.owner.as_str().to_string(),
                        epoch: e.epoch,
                        addr: String::from_utf8_lossy(&e.value).into_owned(),
                    },
                );
            }
        }
        let lost = self
            .claims
            .iter()
            .filter(|((m, _), _)| m == map)
            .filter_map(|((_, slot), epoch)| {
                let o = owners.get(slot)?;
                (o.owner != me.as_str()).then(|| LostClaim {
                    slot: *slot,
                    epoch: *epoch,
                    winner: o.clone(),
                })
            })
            .collect();
        SlotMap { owners, lost }
    }

    /// Adds what changed in the core's counters to the `metrics` facade.
    fn export_metrics(&mut self) {
        let rtts = self.core.take_rtt_samples();
        let counters = &self.transport.counters;
        let refused = counters.refused();
        let transport = crate::metrics::Transport {
            refused: &refused,
            connections: counters.open.load(std::sync::atomic::Ordering::Relaxed),
            // Read from /proc, which lists every UDP socket of the host: every tenth export
            // (10 s) is plenty for a counter scraped every 15 s or so.
            kernel_drops: self
                .exports
                .is_multiple_of(10)
                .then(|| crate::metrics::kernel_drops(self.me.port()))
                .flatten(),
        };
        self.exports = self.exports.wrapping_add(1);
        self.exporter.export(
            self.core.stats(),
            self.core.replication_stats(),
            self.core.members().map(|m| m.state),
            &self.refused,
            &transport,
            &rtts,
        );
    }

    fn node_states(&self, now: Time, only: Option<&Name>) -> Vec<NodeStateView> {
        let phys = self.core.physical_time(now);
        let mut names: Vec<Name> = match only {
            Some(n) => vec![n.clone()],
            None => self.core.members().map(|m| m.name).collect(),
        };
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                // A member that never set a key has no state yet: shown empty.
                let Some(s) = self.core.node_state(&name) else {
                    return self.core.member(&name).map(|_| NodeStateView {
                        name: name.as_str().to_string(),
                        generation: 0,
                        version: 0,
                        keys: Vec::new(),
                    });
                };
                Some(state_view(&name, s, phys, ""))
            })
            .collect()
    }

    /// Sends what the core has to send and publishes its events.
    async fn flush(&mut self) {
        let changes = self.core.shared().changes();
        self.kv_index.send_if_modified(|v| {
            let moved = *v != changes;
            *v = changes;
            moved
        });
        let root = self.core.node_states_root();
        self.states_root.send_if_modified(|v| {
            let moved = *v != root;
            *v = root;
            moved
        });
        while let Some(e) = self.core.poll_event() {
            if matches!(e, Event::Synced { .. }) {
                self.joined = true;
            }
            let _ = self.events.send(e);
        }
        while let Some(t) = self.core.poll_transmit() {
            if self.blocked.contains(&t.dst) {
                continue;
            }
            if !t.reliable {
                let payload = {
                    let keys = self.keys();
                    if keys.is_empty() {
                        t.payload
                    } else {
                        Bytes::from(keys.seal(&self.config.label, &t.payload, unix_millis()))
                    }
                };
                if let Err(e) = self.udp.send_to(&payload, t.dst).await {
                    tracing::debug!(dst = %t.dst, error = %e, "udp send failed");
                }
                continue;
            }
            // Frames are sealed record by record by their connection.
            let tx = self.writer(t.dst);
            if tx.try_send(t.payload).is_err() {
                // A full or dead writer: start afresh for the next frame.
                self.writers.remove(&t.dst);
            }
        }
    }

    /// The frame writer to `dst`, connecting if there is none.
    fn writer(&mut self, dst: SocketAddr) -> mpsc::Sender<Bytes> {
        if let Some(tx) = self.writers.get(&dst) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(64);
        // As long as an exchange may take: a lost SYN is sent again after a second, and a
        // shorter limit would turn it into a failed exchange. (A fallback probe's frame that
        // arrives that late is ignored, which is what a timeout would have made of it.)
        transport::connect(
            self.transport.clone(),
            dst,
            self.config.sync_timeout,
            rx,
            self.inbound.clone(),
        );
        self.writers.insert(dst, tx.clone());
        tx
    }
}

/// The wall clock in milliseconds since the UNIX epoch (envelopes' timestamps).
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A member's state as shown: the keys under `prefix` that are neither deleted nor expired.
fn state_view(
    name: &Name,
    s: &grapevine_core::state::endpoint::NodeState,
    phys: u64,
    prefix: &str,
) -> NodeStateView {
    let mut keys: Vec<(String, Vec<u8>, u64)> = s
        .entries
        .iter()
        .filter(|(k, v)| k.starts_with(prefix) && !v.is_gone(phys))
        .map(|(k, v)| (k.clone(), v.value.clone(), v.version))
        .collect();
    keys.sort();
    NodeStateView {
        name: name.as_str().to_string(),
        generation: s.generation,
        version: s.max_version,
        keys,
    }
}
