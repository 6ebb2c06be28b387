//! Test support for the hostile suite: a cluster under watch while an attack runs, and the
//! raw bytes an attacker sends.
//!
//! Every attack runs inside [`Siege::run`], which checks what must hold whatever the attack:
//! all agents alive and none marked failed by another, the 100 keys written before present
//! and unchanged on every agent after, peak memory under idle + 64 MB, descriptors under the
//! configured caps, and the members list and a KV read answered within 100 ms at the median.

use super::{get, put, Agent, Spec};
use grapevine_core::wire::{self, Message, PROTOCOL_VERSION};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Descriptors an agent may hold: the gossip channel's 384 connections, the HTTP API's 256,
/// DNS's 32, and some 64 of its own (sockets, files, the runtime).
pub const FD_CAP: usize = 384 + 256 + 32 + 64;

/// The keys written before every attack.
pub const KEYS: usize = 100;

/// A process's resident memory in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Whether a process is running (not gone, not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        == Some(false)
}

/// A process's open descriptors.
pub fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process's CPU time (user + system) in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// What the watcher saw during an attack.
#[derive(Debug, Default)]
pub struct Seen {
    /// Peak resident memory per agent.
    pub peak_rss: Vec<u64>,
    /// Peak descriptors per agent.
    pub peak_fds: Vec<usize>,
    /// Latencies of `GET /v1/grapevine/members` on the first agent, ms.
    pub members_ms: Vec<f64>,
    /// Latencies of a KV read on the first agent, ms.
    pub kv_ms: Vec<f64>,
    /// (observer, member, status) whenever an agent saw a real member not alive.
    pub not_alive: Vec<(String, String, String)>,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::INFINITY;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A cluster of agents holding 100 keys, and its idle footprint.
pub struct Siege {
    /// The agents (each killed when dropped).
    pub agents: Vec<Agent>,
    /// Resident memory of each at rest, before any attack.
    pub idle_rss: Vec<u64>,
}

impl Siege {
    /// `n` agents on loopback with `args` each, joined, with [`KEYS`] keys written and
    /// spread, their idle memory measured.
    pub fn start(n: usize, args: &[&str]) -> Siege {
        let first = Spec::new("s0").args(args).start();
        first.wait_up();
        let mut agents = vec![first];
        for i in 1..n {
            let a = Spec::new(&format!("s{i}"))
                .args(args)
                .join(agents[0].gossip)
                .start();
            a.wait_up();
            agents.push(a);
        }
        let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
        let refs: Vec<&Agent> = agents.iter().collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        super::eventually(Duration::from_secs(20), || {
            super::all_alive(&refs, &name_refs)
        });
        for i in 0..KEYS {
            let code = put(
                &format!("http://{}/v1/kv/siege/key-{i:03}", agents[0].http),
                &format!("value-{i}"),
            );
            assert_eq!(code, 200, "writing key {i}");
        }
        let s = Siege {
            agents,
            idle_rss: Vec::new(),
        };
        super::eventually(Duration::from_secs(30), || s.keys_intact());
        // Let allocations settle: a second of idleness, then the footprint at rest.
        std::thread::sleep(Duration::from_secs(2));
        let idle_rss = s
            .agents
            .iter()
            .map(|a| rss(a.child.id()).unwrap_or(0))
            .collect();
        Siege { idle_rss, ..s }
    }

    /// Whether every agent holds the 100 keys with their values.
    pub fn keys_intact(&self) -> bool {
        self.agents.iter().all(|a| {
            let Some(body) = get(&format!("http://{}/v1/kv/siege/?recurse", a.http)) else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<Vec<serde_json::Value>>(&body) else {
                return false;
            };
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            v.len() == KEYS
                && v.iter().enumerate().all(|(i, e)| {
                    e["Key"] == format!("siege/key-{i:03}")
                        && b64.decode(e["Value"].as_str().unwrap_or_default()).ok()
                            == Some(format!("value-{i}").into_bytes())
                })
        })
    }

    /// Runs `attack` while watching the cluster, lets it settle for `settle`, and checks
    /// every invariant; returns what was seen (for the attack's own checks).
    pub fn run(&self, settle: Duration, attack: impl FnOnce()) -> Seen {
        self.run_checked(settle, true, attack)
    }

    /// Like `run`, for an "attack" that legitimately stores data (its memory is the data's).
    pub fn run_without_memory_bound(&self, settle: Duration, attack: impl FnOnce()) -> Seen {
        self.run_checked(settle, false, attack)
    }

    fn run_checked(&self, settle: Duration, memory: bool, attack: impl FnOnce()) -> Seen {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen {
            peak_rss: vec![0; self.agents.len()],
            peak_fds: vec![0; self.agents.len()],
            ..Seen::default()
        }));
        let pids: Vec<u32> = self.agents.iter().map(|a| a.child.id()).collect();
        let https: Vec<SocketAddr> = self.agents.iter().map(|a| a.http).collect();
        let names: Vec<String> = self.agents.iter().map(|a| a.name.clone()).collect();
        let watcher = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    {
                        let mut s = seen.lock().unwrap();
                        for (i, pid) in pids.iter().enumerate() {
                            s.peak_rss[i] = s.peak_rss[i].max(rss(*pid).unwrap_or(0));
                            s.peak_fds[i] = s.peak_fds[i].max(fds(*pid).unwrap_or(0));
                        }
                    }
                    if round.is_multiple_of(4) {
                        let t = Instant::now();
                        let body = get(&format!("http://{}/v1/grapevine/members", https[0]));
                        let members_ms = t.elapsed().as_secs_f64() * 1000.0;
                        let t = Instant::now();
                        let _ = get(&format!("http://{}/v1/kv/siege/key-042", https[0]));
                        let kv_ms = t.elapsed().as_secs_f64() * 1000.0;
                        let mut s = seen.lock().unwrap();
                        s.members_ms
                            .push(if body.is_some() { members_ms } else { 1e9 });
                        s.kv_ms.push(kv_ms);
                        for (i, h) in https.iter().enumerate() {
                            let view = super::members(*h);
                            for n in &names {
                                match view.get(n).map(String::as_str) {
                                    Some("alive") | Some("suspect") => {}
                                    other => s.not_alive.push((
                                        names[i].clone(),
                                        n.clone(),
                                        other.unwrap_or("unknown").to_string(),
                                    )),
                                }
                            }
                        }
                    }
                    round += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        attack();
        std::thread::sleep(settle);
        stop.store(true, Ordering::Relaxed);
        let _ = watcher.join();
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        self.check(&seen, memory);
        seen
    }

    fn check(&self, seen: &Seen, memory: bool) {
        for a in &self.agents {
            assert!(running(a.child.id()), "{} is still running", a.name);
        }
        assert!(
            seen.not_alive.is_empty(),
            "live members marked failed or unknown: {:?}",
            &seen.not_alive[..seen.not_alive.len().min(10)]
        );
        assert!(self.keys_intact(), "the 100 keys are intact on every agent");
        for (i, a) in self.agents.iter().enumerate() {
            let growth = seen.peak_rss[i].saturating_sub(self.idle_rss[i]);
            assert!(
                !memory || growth < 64 << 20,
                "{}: peak RSS {} MB over idle {} MB",
                a.name,
                seen.peak_rss[i] >> 20,
                self.idle_rss[i] >> 20
            );
            assert!(
                seen.peak_fds[i] < FD_CAP,
                "{}: {} descriptors",
                a.name,
                seen.peak_fds[i]
            );
        }
        let (m, k) = (median(&seen.members_ms), median(&seen.kv_ms));
        assert!(
            m < 100.0 && k < 100.0,
            "median latency: members {m:.1} ms, kv {k:.1} ms"
        );
        eprintln!(
            "held: peak RSS growth {:?} MB, peak fds {:?}, median members {m:.1} ms, kv {k:.1} ms",
            seen.peak_rss
                .iter()
                .zip(&self.idle_rss)
                .map(|(p, i)| (p.saturating_sub(*i)) >> 20)
                .collect::<Vec<_>>(),
            seen.peak_fds
        );
    }

    /// The sum of the samples on agent `i`'s `/metrics` whose line starts with `prefix`
    /// (`grapevine_dropped_total{layer="transport"` sums that layer's reasons).
    pub fn metric_sum(&self, i: usize, prefix: &str) -> f64 {
        let text = get(&format!("http://{}/metrics", self.agents[i].http)).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    /// The value of a metric series on agent `i`'s `/metrics` (0 if absent).
    pub fn metric(&self, i: usize, series: &str) -> f64 {
        get(&format!("http://{}/metrics", self.agents[i].http))
            .and_then(|t| super::metric(&t, series))
            .unwrap_or(0.0)
    }
}

/// A packet of `msgs` in the cluster's (empty) label.
pub fn packet(msgs: &[Message]) -> Vec<u8> {
    wire::encode_packet(PROTOCOL_VERSION, b"", msgs).to_vec()
}

/// A plain transport hello claiming `addr`.
pub fn hello(addr: SocketAddr) -> Vec<u8> {
    let mut h = b"GV\x02\x00".to_vec();
    match addr {
        SocketAddr::V4(v4) => {
            h.push(4);
            h.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            h.push(6);
            h.extend_from_slice(&v6.ip().octets());
        }
    }
    h.extend_from_slice(&addr.port().to_be_bytes());
    h
}

/// A length-prefixed frame.
pub fn frame(packet: &[u8]) -> Vec<u8> {
    let mut f = (packet.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(packet);
    f
}

/// Opens a connection to `dst`, greets as `claim` and sends `bytes`; returns it open.
pub fn connect_and_send(dst: SocketAddr, claim: SocketAddr, bytes: &[u8]) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2)).ok()?;
    s.write_all(&hello(claim)).ok()?;
    s.write_all(bytes).ok()?;
    Some(s)
}

/// A UDP socket on loopback, any port.
pub fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("a UDP socket")
}
