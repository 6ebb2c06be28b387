//! The networked node: a tokio task that drives a `grapevine_core::Node` with a UDP socket
//! and a TCP listener on the same port (`task`), the builder that starts it (`builder`), and
//! the handle the application holds (here). Every call of the handle is a closure run on the
//! task's state, in the task ([`Node::with_core`] for the core alone): what a call computes
//! is the core's (check-and-set, ownership maps, versions), where the simulator reaches it.

mod builder;
mod faults;
mod task;

pub use builder::NodeBuilder;
pub use grapevine_core::{
    KvChange, KvEntry, KvWrite, LostClaim, SlotMap, SlotOwner, Versions, MAX_SLOTS,
};

use crate::crypto::{Key, KeyringError};
use crate::snapshot::SnapshotError;
pub use faults::Faults;
use grapevine_core::{Agreement, CommandError, Estimate, Event, Member, Name, Target, Time};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;
use task::{state_view, Driver, Job, Next};
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

/// A running member of a cluster. Cheap to clone; the node stops when it leaves.
#[derive(Clone, Debug)]
pub struct Node {
    name: Name,
    addr: SocketAddr,
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<Event>,
    kv_index: watch::Receiver<u64>,
    states_root: watch::Receiver<u64>,
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
                if self.node.jobs.is_closed() {
                    return Err(Error::Stopped);
                }
                continue;
            }
            let changes = self.node.kv_changes(&self.prefix, self.seen).await?;
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

    /// Sends a job to the task and waits for it to be run.
    async fn send(&self, job: Job) -> Result<(), Error> {
        self.jobs.send(job).await.map_err(|_| Error::Stopped)
    }

    /// Runs `f` on the task's state at the current protocol time; returns its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Driver, Time) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |d, now| {
            let _ = tx.send(f(d, now));
            Next::Continue
        }))
        .await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Runs `f` on the protocol core, inside the node's task, at the current protocol time,
    /// and returns its result: for what this handle does not wrap.
    pub async fn with_core<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut grapevine_core::Node, Time) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.run(move |d, now| f(&mut d.core, now)).await
    }

    /// Every member known, in any state, this one included.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        self.with_core(|c, _| c.members().collect()).await
    }

    /// Sets a key of this node's own state; returns its version.
    pub async fn set_state(&self, key: &str, value: Vec<u8>) -> Result<u64, Error> {
        let key = key.to_string();
        Ok(self
            .with_core(move |c, now| c.set_state(now, &key, value, None))
            .await??)
    }

    /// Deletes a key of this node's own state; returns the tombstone's version, or `None`
    /// if the key was not set.
    pub async fn delete_state(&self, key: &str) -> Result<Option<u64>, Error> {
        let key = key.to_string();
        self.with_core(move |c, now| c.delete_state(now, &key))
            .await
    }

    /// The value of `key` in member `name`'s state, as known here.
    pub async fn state(&self, name: &Name, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let (name, key) = (name.clone(), key.to_string());
        self.with_core(move |c, now| c.state_value(now, &name, &key).map(<[u8]>::to_vec))
            .await
    }

    /// Writes a shared key (last write wins); `None` deletes it.
    pub async fn put(&self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), Error> {
        let key = key.to_vec();
        Ok(self
            .with_core(move |c, now| c.put_shared(now, &key, value, None))
            .await??)
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
        let key = key.to_vec();
        self.with_core(move |c, now| c.kv_entries(now, &key, prefix))
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
        let key = key.to_vec();
        Ok(self
            .with_core(move |c, now| c.put_cas(now, &key, value, cas))
            .await??)
    }

    /// A key-value client's write to a shared key: with flags, and check-and-set if
    /// `write.cas` is given; returns whether it wrote.
    pub async fn kv_write(&self, key: &[u8], write: KvWrite) -> Result<bool, Error> {
        let key = key.to_vec();
        Ok(self
            .with_core(move |c, now| c.kv_write(now, &key, write))
            .await??)
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
        let prefix = prefix.to_vec();
        self.with_core(move |c, now| c.kv_changes(now, &prefix, after))
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
        self.with_core(move |c, now| c.join(now, &addrs)).await?;
        Ok(n)
    }

    /// Raises a user event for every member.
    pub async fn broadcast(&self, name: &str, payload: Vec<u8>) -> Result<u64, Error> {
        let name = name.to_string();
        Ok(self
            .with_core(move |c, now| c.broadcast(now, &name, payload))
            .await??)
    }

    /// Runs a keyring change in the task; returns the keyring, primary first.
    async fn keyring(
        &self,
        change: impl FnOnce(&mut crate::crypto::Keyring) -> Result<(), KeyringError> + Send + 'static,
    ) -> Result<Vec<Key>, Error> {
        let r = self
            .run(move |d, _| {
                change(&mut d.keys_mut())?;
                Ok::<_, KeyringError>(d.keys().list().to_vec())
            })
            .await?;
        Ok(r?)
    }

    /// Installs a key to read with; returns the keyring, primary first.
    pub async fn keyring_install(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.keyring(move |k| {
            k.install(key);
            Ok(())
        })
        .await
    }

    /// Makes an installed key the one this node writes with.
    pub async fn keyring_use(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.keyring(move |k| k.use_key(&key)).await
    }

    /// Removes a key that is not the primary.
    pub async fn keyring_remove(&self, key: Key) -> Result<Vec<Key>, Error> {
        self.keyring(move |k| k.remove(&key)).await
    }

    /// The keys, primary first.
    pub async fn keyring_list(&self) -> Result<Vec<Key>, Error> {
        self.keyring(|_| Ok(())).await
    }

    /// Datagrams, connections and frames refused before reaching the protocol, by reason
    /// (`unencrypted`, `wrong_label`, `bad_key`, `replayed`, `rate_limited`, `oversized`,
    /// `too_many_from_source`, …: the datagram, envelope and transport layers' reasons).
    pub async fn refused(&self) -> Result<HashMap<&'static str, u64>, Error> {
        self.run(|d, _| {
            let mut all = d.refused.clone();
            for (r, n) in d.transport.counters.refused() {
                if n > 0 {
                    *all.entry(r.as_str()).or_insert(0) += n;
                }
            }
            all
        })
        .await
    }

    /// The protocol's counters: messages and bytes in and out, drops by reason, probes.
    pub async fn stats(&self) -> Result<grapevine_core::Stats, Error> {
        self.with_core(|c, _| c.stats().clone()).await
    }

    /// Fault injection, for demos and tests: drops every datagram and frame to or from
    /// these addresses until called again with others (empty: none).
    pub async fn block(&self, addrs: Vec<SocketAddr>) -> Result<(), Error> {
        self.run(move |d, _| d.blocked = addrs).await
    }

    /// What the node is doing now: its probe, health score, suspicions and rumour queue.
    pub async fn internals(&self) -> Result<grapevine_core::inspect::Internals, Error> {
        self.with_core(|c, now| c.internals(now)).await
    }

    /// Injects faults (an operator's drill): each ends by itself at its expiry. Replaces
    /// the faults in force; `Faults::default()` ends them all.
    pub async fn set_faults(&self, faults: Faults) -> Result<(), Error> {
        self.run(move |d, _| d.faults = faults).await
    }

    /// Records a failed member as left on its behalf (Serf's force-leave), so it is reaped
    /// instead of retried; refused for a member that is not failed here.
    pub async fn force_leave(&self, name: &str) -> Result<(), Error> {
        let name = Name::new(name)?;
        Ok(self
            .with_core(move |c, now| c.force_leave(now, &name))
            .await??)
    }

    /// The per-node state known here: every member's (`None`) or one member's keys, with
    /// their versions.
    pub async fn node_states(&self, name: Option<&str>) -> Result<Vec<NodeStateView>, Error> {
        let name = name.map(Name::new).transpose()?;
        self.run(move |d, now| d.node_states(now, name.as_ref()))
            .await
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
        self.with_core(|c, _| {
            c.node_state_versions()
                .map(|(n, g, v)| (n.as_str().to_string(), g, v))
                .collect()
        })
        .await
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
        let prefix = prefix.to_string();
        self.with_core(move |c, now| {
            let phys = c.physical_time(now);
            names
                .into_iter()
                .filter_map(|name| {
                    let s = c.node_state(&name)?;
                    Some(state_view(&name, s, phys, &prefix))
                })
                .collect()
        })
        .await
    }

    /// Sets this node's contribution to the cluster-wide metric `name` (push-sum: every
    /// member can then read the cluster's sum, average, count, min and max locally).
    pub async fn contribute(&self, name: &str, value: f64) -> Result<(), Error> {
        let name = name.to_string();
        Ok(self
            .with_core(move |c, _| c.contribute(&name, Some(value)))
            .await??)
    }

    /// Withdraws this node's contribution to `name`.
    pub async fn withdraw(&self, name: &str) -> Result<(), Error> {
        let name = name.to_string();
        Ok(self
            .with_core(move |c, _| c.contribute(&name, None))
            .await??)
    }

    /// This node's estimate of the cluster-wide aggregates of `name`.
    pub async fn aggregate(&self, name: &str) -> Result<Option<Estimate>, Error> {
        let name = name.to_string();
        self.with_core(move |c, _| c.aggregate(&name)).await
    }

    /// Every metric aggregated here, with this node's estimate.
    pub async fn aggregates(&self) -> Result<Vec<(String, Estimate)>, Error> {
        self.with_core(|c, _| {
            c.aggregate_names()
                .into_iter()
                .filter_map(|n| c.aggregate(&n).map(|e| (n, e)))
                .collect()
        })
        .await
    }

    /// Starts publishing what this node holds of `target`, so that members can tell whether
    /// the cluster agrees on it; returns whether the live members agree now. A member
    /// answers for a target only once it tracks it too (agents track the whole keyspace).
    pub async fn track(&self, target: Target) -> Result<Agreement, Error> {
        self.with_core(move |c, now| {
            c.track(now, target.clone());
            c.agreement(now, &target)
        })
        .await
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
        let key = key.to_string();
        self.with_core(move |c, now| c.versions(now, &key)).await
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
        let map = map.to_string();
        let claimed = self
            .with_core(move |c, now| c.claim(now, &map, slots, epoch))
            .await?;
        claimed.map_err(|e| match e {
            CommandError::MapName(m) => Error::MapName(m),
            CommandError::Slots { start, end, max } => Error::Slots { start, end, max },
            e => Error::Command(e),
        })
    }

    /// The ownership map `map` as held here, and this node's claims that lost to another.
    pub async fn slots(&self, map: &str) -> Result<SlotMap, Error> {
        let map = map.to_string();
        self.with_core(move |c, now| c.slot_map(now, &map)).await
    }

    /// Stops the node at once, without leaving: to the others it looks like a crash.
    pub async fn stop(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |_, _| {
            let _ = tx.send(());
            Next::Stop
        }))
        .await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Leaves the cluster gracefully (the others record this member as left, not failed)
    /// and stops the node.
    pub async fn leave(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |d, now| {
            d.core.leave(now);
            Next::Leave(tx)
        }))
        .await?;
        rx.await.map_err(|_| Error::Stopped)
    }
}
