//! The node's task: one tokio task owns the core, the UDP socket and the TCP listener, and
//! runs the jobs the handle sends, the packets that arrive and the core's timers, one at a
//! time.

use super::NodeStateView;
use crate::crypto::{Keyring, ReplayGuard};
use crate::snapshot::Snapshot;
use crate::transport::{self, Inbound};
use bytes::Bytes;
use grapevine_core::{Config, Event, Limiter, Name, Time};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Work the handle sends the task: a closure over the task's state, run at the current
/// protocol time, which says whether the task goes on.
pub(super) type Job = Box<dyn FnOnce(&mut Driver, Time) -> Next + Send>;

/// What the task does after a job.
pub(super) enum Next {
    /// Goes on.
    Continue,
    /// Lets the leave spread for a few gossip intervals, answers, then stops.
    Leave(oneshot::Sender<()>),
    /// Stops at once (a crash, to the others).
    Stop,
}

/// The task's state.
pub(super) struct Driver {
    pub(super) core: grapevine_core::Node,
    pub(super) config: Config,
    pub(super) me: SocketAddr,
    pub(super) epoch: Instant,
    pub(super) udp: Arc<UdpSocket>,
    pub(super) tcp: TcpListener,
    pub(super) seeds: Vec<String>,
    pub(super) writers: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) joined: bool,
    /// The keys, shared with the connections (changed at run time).
    pub(super) keyring: Arc<RwLock<Keyring>>,
    /// Envelopes seen lately, shared with the connections: replays are refused.
    pub(super) replay: Arc<Mutex<ReplayGuard>>,
    /// What connections share: limits, budgets, counters.
    pub(super) transport: Arc<transport::Shared>,
    /// Datagrams taken per source IP and in all.
    pub(super) datagrams: Limiter<IpAddr>,
    /// Where connections deliver frames.
    pub(super) inbound: mpsc::Sender<Inbound>,
    /// Where connections report themselves.
    pub(super) control: mpsc::Sender<transport::Control>,
    pub(super) refused: HashMap<&'static str, u64>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) generation: u64,
    pub(super) blocked: Vec<SocketAddr>,
    /// Faults injected by a drill.
    pub(super) faults: super::Faults,
    /// Datagrams held by a delay drill now.
    pub(super) delayed: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) kv_index: watch::Sender<u64>,
    /// The root of the per-node states, published when it moves.
    pub(super) states_root: watch::Sender<u64>,
    /// Metric exports so far.
    pub(super) exports: u64,
    pub(super) exporter: crate::metrics::Exporter,
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

    pub(super) fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keyring> {
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

    pub(super) async fn run(
        mut self,
        mut jobs: mpsc::Receiver<Job>,
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
                    Ok((_, from)) if self.fault_drops(from) => {}
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
                    if self.blocked.contains(&inbound.from)
                        || self.faults.is_cut(inbound.from, tokio::time::Instant::now())
                    {
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
                Some(job) = jobs.recv(), if leaving.is_none() => {
                    let now = self.now();
                    match job(&mut self, now) {
                        Next::Continue => {}
                        Next::Stop => return,
                        Next::Leave(done) => {
                            // Give the leave message time to spread, then stop.
                            let until =
                                tokio::time::Instant::now() + self.config.membership.gossip_interval * 5;
                            leaving = Some((done, until));
                        }
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

    pub(super) fn node_states(&self, now: Time, only: Option<&Name>) -> Vec<NodeStateView> {
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
            if t.reliable && self.faults.is_cut(t.dst, tokio::time::Instant::now()) {
                continue;
            }
            if !t.reliable && self.fault_drops(t.dst) {
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
                if let Some(delay) = self.faults.delay(tokio::time::Instant::now()) {
                    self.send_later(payload, t.dst, delay);
                    continue;
                }
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

    /// Whether a drill drops this datagram to or from `peer` (counted as `drill`).
    fn fault_drops(&mut self, peer: SocketAddr) -> bool {
        let now = tokio::time::Instant::now();
        if !self.faults.prune(now) {
            return false;
        }
        let dropped = self.faults.drops(peer, now, &mut rand::thread_rng());
        if dropped {
            *self.refused.entry("drill").or_insert(0) += 1;
        }
        dropped
    }

    /// Sends a datagram after `delay` (a delay drill), unless too many are held already.
    fn send_later(&mut self, payload: Bytes, dst: SocketAddr, delay: std::time::Duration) {
        use std::sync::atomic::Ordering;
        if self.delayed.load(Ordering::Relaxed) >= super::faults::MAX_DELAYED {
            *self.refused.entry("drill").or_insert(0) += 1;
            return;
        }
        self.delayed.fetch_add(1, Ordering::Relaxed);
        let (udp, held) = (self.udp.clone(), self.delayed.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = udp.send_to(&payload, dst).await;
            held.fetch_sub(1, Ordering::Relaxed);
        });
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
            self.config.membership.sync_timeout,
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
pub(super) fn state_view(
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
