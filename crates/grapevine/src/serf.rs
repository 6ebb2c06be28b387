//! The Serf engine on tokio: one UDP socket and one TCP listener on the same port, as
//! memberlist binds them, driving [`grapevine_core::serf::SerfNode`].

use grapevine_core::serf::{wire, Output, SerfConfig, SerfEvent, SerfNode};
use grapevine_core::Time;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

/// Why the Serf member could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum SerfError {
    /// The port could not be bound.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The member's task has stopped.
    #[error("the Serf member has stopped")]
    Stopped,
}

/// TCP connections served at once (memberlist refuses push-pulls past 128).
const MAX_INBOUND: usize = 128;
/// TCP connections opened at once.
const MAX_OUTBOUND: usize = 64;
/// memberlist's TCPTimeout for the LAN.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce(&mut SerfNode, Time) + Send>;

enum Inbound {
    Stream {
        from: SocketAddr,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    Dialed {
        id: u64,
        result: Option<Vec<u8>>,
    },
}

/// A handle on a running Serf member; clones share it.
#[derive(Clone)]
pub struct SerfAgent {
    jobs: mpsc::Sender<Job>,
    events: broadcast::Sender<SerfEvent>,
    name: String,
    addr: SocketAddr,
}

impl std::fmt::Debug for SerfAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SerfAgent({} at {})", self.name, self.addr)
    }
}

impl SerfAgent {
    /// Binds `bind` (UDP and TCP) and starts a member with `cfg`, joining through `seeds`
    /// (names resolved again and retried every second until a member answers).
    pub async fn start(
        cfg: SerfConfig,
        bind: SocketAddr,
        seeds: Vec<String>,
        allowed: Vec<ipnet::IpNet>,
    ) -> Result<SerfAgent, SerfError> {
        let udp = UdpSocket::bind(bind)
            .await
            .map_err(|e| SerfError::Bind(bind, e))?;
        let tcp = TcpListener::bind(bind)
            .await
            .map_err(|e| SerfError::Bind(bind, e))?;
        let epoch = Instant::now();
        let name = cfg.name.clone();
        let addr = cfg.addr;
        let node = SerfNode::new(cfg, rand::random(), Time::ZERO);
        let (jobs, job_rx) = mpsc::channel(256);
        let (events, _) = broadcast::channel(4096);
        let task = Task {
            node,
            epoch,
            udp,
            tcp,
            events: events.clone(),
            inbound_slots: Arc::new(Semaphore::new(MAX_INBOUND)),
            outbound_slots: Arc::new(Semaphore::new(MAX_OUTBOUND)),
            allowed,
        };
        tokio::spawn(task.run(job_rx));
        let agent = SerfAgent {
            jobs,
            events,
            name,
            addr,
        };
        if !seeds.is_empty() {
            let a = agent.clone();
            tokio::spawn(async move { a.join_until_joined(seeds).await });
        }
        Ok(agent)
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its gossip address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<SerfEvent> {
        self.events.subscribe()
    }

    /// Runs `f` on the engine, at the current time, and returns what it returns.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SerfNode, Time) -> R + Send + 'static,
    ) -> Result<R, SerfError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |n, now| {
            let _ = tx.send(f(n, now));
        });
        self.jobs.send(job).await.map_err(|_| SerfError::Stopped)?;
        rx.await.map_err(|_| SerfError::Stopped)
    }

    /// Joins through `host:port` addresses; returns how many resolved.
    pub async fn join(&self, addrs: Vec<String>) -> Result<usize, SerfError> {
        let mut resolved = Vec::new();
        for a in &addrs {
            if let Ok(mut it) = tokio::net::lookup_host(a.as_str()).await {
                if let Some(sa) = it.next() {
                    resolved.push(sa);
                }
            }
        }
        let n = resolved.len();
        self.with(move |node, _| node.join(&resolved)).await?;
        Ok(n)
    }

    async fn join_until_joined(self, seeds: Vec<String>) {
        loop {
            if self.join(seeds.clone()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let others = self
                .with(|n, _| n.members().len())
                .await
                .unwrap_or(usize::MAX);
            if others > 1 {
                return;
            }
        }
    }

    /// Leaves gracefully: Serf's leave intent, then memberlist's, then the propagation
    /// delay; waits until the engine says it is done (at most its own timeouts, and 1 s).
    pub async fn leave(&self) -> Result<(), SerfError> {
        let most = self
            .with(|n, now| {
                n.leave(now);
                let c = n.config();
                c.broadcast_timeout * 2 + c.leave_propagate_delay
            })
            .await?;
        let until = Instant::now() + most + Duration::from_secs(1);
        while Instant::now() < until {
            if self.with(|n, _| n.has_left()).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

struct Task {
    node: SerfNode,
    epoch: Instant,
    udp: UdpSocket,
    tcp: TcpListener,
    events: broadcast::Sender<SerfEvent>,
    inbound_slots: Arc<Semaphore>,
    outbound_slots: Arc<Semaphore>,
    /// Networks gossip is taken from (empty: any), as memberlist's CIDRsAllowed.
    allowed: Vec<ipnet::IpNet>,
}

impl Task {
    fn allows(&self, from: SocketAddr) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(&from.ip()))
    }

    fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(256);
        let mut buf = vec![0u8; 65_536];
        let mut metrics_at = Instant::now();
        loop {
            self.flush(&in_tx).await;
            if metrics_at.elapsed() >= Duration::from_secs(1) {
                metrics_at = Instant::now();
                publish(&self.node);
            }
            let deadline = self.node.poll_timeout();
            let wait =
                Duration::from_micros(deadline.as_micros().saturating_sub(self.now().as_micros()))
                    .min(Duration::from_secs(1));
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r.map_err(|_| ()).and_then(|(n, f)| {
                        if self.allows(f) { Ok((n, f)) } else { count_drop("not_allowed"); Err(()) }
                    }) {
                        let now = self.now();
                        self.node.handle_packet(from, &buf[..n], now);
                    }
                }
                r = self.tcp.accept() => {
                    if let Ok((conn, from)) = r.map_err(|_| ()).and_then(|(c, f)| {
                        if self.allows(f) { Ok((c, f)) } else { count_drop("not_allowed"); Err(()) }
                    }) {
                        match self.inbound_slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let tx = in_tx.clone();
                                let limit = self.node.config().max_stream_bytes;
                                tokio::spawn(async move {
                                    serve(conn, from, tx, limit).await;
                                    drop(permit);
                                });
                            }
                            Err(_) => count_drop("tcp_busy"),
                        }
                    }
                }
                Some(m) = in_rx.recv() => {
                    let now = self.now();
                    match m {
                        Inbound::Stream { from, bytes, reply } => {
                            let _ = reply.send(self.node.handle_stream(from, &bytes, now));
                        }
                        Inbound::Dialed { id, result: Some(b) } => self.node.stream_reply(id, &b, now),
                        Inbound::Dialed { id, result: None } => self.node.stream_failed(id),
                    }
                }
                j = jobs.recv() => {
                    let Some(job) = j else { return };
                    let now = self.now();
                    job(&mut self.node, now);
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let now = self.now();
            if now >= self.node.poll_timeout() {
                self.node.handle_timeout(now);
            }
        }
    }

    async fn flush(&mut self, in_tx: &mpsc::Sender<Inbound>) {
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Packet { to, data } => {
                    if let Err(e) = self.udp.send_to(&data, to).await {
                        tracing::debug!(error = %e, %to, "datagram not sent");
                    }
                }
                Output::Dial {
                    id,
                    to,
                    data,
                    reply,
                } => {
                    let Ok(permit) = self.outbound_slots.clone().try_acquire_owned() else {
                        count_drop("dial_busy");
                        self.node.stream_failed(id);
                        continue;
                    };
                    let tx = in_tx.clone();
                    let limit = self.node.config().max_stream_bytes;
                    tokio::spawn(async move {
                        let result =
                            tokio::time::timeout(TCP_TIMEOUT, dial(to, data, reply, limit))
                                .await
                                .ok()
                                .flatten();
                        if reply || result.is_none() {
                            let _ = tx.send(Inbound::Dialed { id, result }).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
        while let Some(e) = self.node.poll_event() {
            let _ = self.events.send(e);
        }
    }
}

/// Reads one stream message, bounded by `limit` bytes.
async fn read_message(conn: &mut TcpStream, limit: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match wire::frame_len(&buf, limit) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Some(buf);
            }
            Ok(None) => {}
            Err(e) => {
                count_drop(e.reason());
                return None;
            }
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut conn: TcpStream, from: SocketAddr, tx: mpsc::Sender<Inbound>, limit: usize) {
    let work = async {
        let bytes = read_message(&mut conn, limit).await?;
        let (reply, rx) = oneshot::channel();
        tx.send(Inbound::Stream { from, bytes, reply }).await.ok()?;
        if let Some(answer) = rx.await.ok()? {
            conn.write_all(&answer).await.ok()?;
            conn.flush().await.ok()?;
        }
        Some(())
    };
    let _ = tokio::time::timeout(TCP_TIMEOUT, work).await;
}

async fn dial(to: SocketAddr, data: Vec<u8>, reply: bool, limit: usize) -> Option<Vec<u8>> {
    let mut conn = TcpStream::connect(to).await.ok()?;
    conn.write_all(&data).await.ok()?;
    if !reply {
        return Some(Vec::new());
    }
    read_message(&mut conn, limit).await
}

fn count_drop(reason: &'static str) {
    metrics::counter!(crate::metrics::DROPPED, "layer" => "serf", "reason" => reason).increment(1);
}

/// Publishes the engine's counters and membership for Prometheus.
fn publish(node: &SerfNode) {
    let s = node.stats();
    for (reason, n) in &s.dropped {
        metrics::counter!(crate::metrics::DROPPED, "layer" => "serf_engine", "reason" => *reason)
            .absolute(*n);
    }
    for (kind, n) in &s.received {
        metrics::counter!("grapevine_serf_messages_received_total", "type" => *kind).absolute(*n);
    }
    metrics::counter!("grapevine_serf_packets_sent_total").absolute(s.packets_sent);
    metrics::counter!("grapevine_serf_bytes_sent_total").absolute(s.bytes_sent);
    metrics::counter!("grapevine_serf_refutations_total").absolute(s.refutations);
    metrics::gauge!("grapevine_serf_health_score").set(f64::from(node.health_score()));
    let mut by_status = std::collections::BTreeMap::<&str, u32>::new();
    for m in node.members() {
        *by_status.entry(m.status.as_str()).or_default() += 1;
    }
    for st in ["alive", "leaving", "left", "failed"] {
        metrics::gauge!("grapevine_serf_members", "status" => st)
            .set(f64::from(by_status.get(st).copied().unwrap_or(0)));
    }
}
