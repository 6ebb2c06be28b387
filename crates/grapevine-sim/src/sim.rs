//! The discrete-event engine: real `grapevine_core::Node`s exchanging bytes over a
//! simulated network, in simulated time. One seeded RNG drives every random choice,
//! and events are ordered by (time, insertion number), so a seed fixes the run.

use crate::net::{self, NetConfig, Topology};
use crate::sockets::Ledger;
use bytes::Bytes;
use grapevine_core::{Config, Event, Name, Node, Time};
use hashbrown::HashMap;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// What the simulator reports as it runs.
pub trait Observer {
    /// `node` emitted `event` at `now`.
    fn on_event(&mut self, _now: Time, _node: u32, _event: &Event) {}
    /// `node` sent `bytes` bytes (one datagram or frame) at `now`.
    fn on_send(&mut self, _now: Time, _node: u32, _bytes: usize, _reliable: bool) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

enum Kind {
    Deliver {
        to: u32,
        from: SocketAddr,
        payload: Bytes,
        reliable: bool,
        slow_checked: bool,
    },
    Timer {
        node: u32,
        generation: u32,
    },
}

struct Scheduled {
    at: Time,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// How a slow node is slow: every message it receives is handled only after a delay
/// drawn uniformly from this range.
#[derive(Clone, Copy, Debug)]
pub struct Slowness {
    /// Shortest delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

struct SimNode {
    name: Name,
    addr: SocketAddr,
    core: Option<Node>,
    timer_at: Time,
    generation: u32,
    restarts: u32,
    slow: Option<Slowness>,
}

/// A simulated cluster.
pub struct Sim {
    seed: u64,
    now: Time,
    next_seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, u32>,
    rng: Xoshiro256PlusPlus,
    /// The network's behaviour (latency, loss).
    pub net: NetConfig,
    /// Who can reach whom.
    pub topology: Topology,
    events_processed: u64,
    /// Reused for each node's transmits, so draining a node allocates nothing.
    outgoing: Vec<grapevine_core::Transmit>,
    /// What the nodes' sends cost on real sockets.
    sockets: Ledger,
}

/// The simulated address of node `i` (in 240.0.0.0/4, reserved: never a real host).
pub fn sim_addr(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::new(
        240 | ((i >> 24) as u8 & 0x0f),
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    );
    SocketAddr::new(IpAddr::V4(ip), 7946)
}

/// The simulated name of node `i`, zero-padded so every name has the same length.
pub fn sim_name(i: u32) -> Name {
    // Fixed width keeps message sizes independent of N, so per-node bytes compare fairly.
    // At most 15 ASCII bytes ("node-" and ten digits): always a valid name.
    Name::new(&format!("node-{i:06}")).expect("a formatted node name is valid")
}

impl Sim {
    /// An empty simulation seeded with `seed`.
    pub fn new(seed: u64, net: NetConfig) -> Self {
        Sim {
            seed,
            now: Time::ZERO,
            next_seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x005e_ed0f_5173),
            net,
            topology: Topology::default(),
            events_processed: 0,
            outgoing: Vec::new(),
            sockets: Ledger::default(),
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Events handled so far.
    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// What the nodes' sends have cost on real sockets so far.
    pub fn sockets(&self) -> &Ledger {
        &self.sockets
    }

    /// The simulator's RNG, for scenarios' own random choices.
    pub fn rng(&mut self) -> &mut Xoshiro256PlusPlus {
        &mut self.rng
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s core, if it is running.
    pub fn node(&self, i: u32) -> Option<&Node> {
        self.nodes.get(i as usize).and_then(|n| n.core.as_ref())
    }

    /// Node `i`'s core, mutably, if it is running (call [`Sim::poke`] after driving it).
    pub fn node_mut(&mut self, i: u32) -> Option<&mut Node> {
        self.nodes.get_mut(i as usize).and_then(|n| n.core.as_mut())
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: u32) -> bool {
        self.node(i).is_some()
    }

    /// Node `i`'s name.
    pub fn name(&self, i: u32) -> &Name {
        &self.nodes[i as usize].name
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: u32) -> SocketAddr {
        self.nodes[i as usize].addr
    }

    /// Adds a node (not yet started) and returns its index.
    pub fn add_node(&mut self) -> u32 {
        let i = self.nodes.len() as u32;
        let addr = sim_addr(i);
        self.by_addr.insert(addr, i);
        self.nodes.push(SimNode {
            name: sim_name(i),
            addr,
            core: None,
            timer_at: Time::MAX,
            generation: 0,
            restarts: 0,
            slow: None,
        });
        i
    }

    /// Makes node `i` slow (or not).
    pub fn set_slow(&mut self, i: u32, slow: Option<Slowness>) {
        self.nodes[i as usize].slow = slow;
    }

    /// Starts (or restarts) node `i` with `config` and joins it through `seeds`.
    pub fn start(&mut self, i: u32, config: Config, seeds: &[u32], obs: &mut impl Observer) {
        let n = &mut self.nodes[i as usize];
        let seed = self.seed
            ^ (u64::from(i) << 20)
            ^ u64::from(n.restarts).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        n.restarts += 1;
        let core = match Node::new(config, n.name.clone(), n.addr, seed, self.now) {
            Ok(c) => c,
            Err(e) => panic!("simulation config rejected: {e}"),
        };
        n.core = Some(core);
        let seed_addrs: Vec<SocketAddr> = seeds
            .iter()
            .filter(|&&s| s != i)
            .map(|&s| sim_addr(s))
            .collect();
        let now = self.now;
        if let Some(c) = self.nodes[i as usize].core.as_mut() {
            if !seed_addrs.is_empty() {
                c.join(now, &seed_addrs);
            }
        }
        self.poke(i, obs);
    }

    /// Crashes node `i`: it stops at once, sending nothing more; messages to it are lost.
    pub fn crash(&mut self, i: u32) {
        let n = &mut self.nodes[i as usize];
        n.core = None;
        n.generation = n.generation.wrapping_add(1);
        n.timer_at = Time::MAX;
    }

    /// Collects node `i`'s outputs after it was driven: transmits, events, its next timer.
    pub fn poke(&mut self, i: u32, obs: &mut impl Observer) {
        let now = self.now;
        let Some(core) = self.nodes[i as usize].core.as_mut() else {
            return;
        };
        let mut outgoing = std::mem::take(&mut self.outgoing);
        while let Some(t) = core.poll_transmit() {
            outgoing.push(t);
        }
        while let Some(e) = core.poll_event() {
            obs.on_event(now, i, &e);
        }
        let deadline = core.poll_timeout();
        let from = self.nodes[i as usize].addr;
        for t in outgoing.drain(..) {
            obs.on_send(now, i, t.payload.len(), t.reliable);
            let to = self.by_addr.get(&t.dst).copied();
            let reachable = to.filter(|&to| {
                self.topology.can_reach(i, to) && self.nodes[to as usize].core.is_some()
            });
            if t.reliable {
                self.sockets.frame(now, i, reachable, t.payload.len());
            } else {
                self.sockets.datagram(i, t.payload.len());
            }
            let Some(to) = to else {
                continue;
            };
            if !self.topology.can_reach(i, to) {
                continue;
            }
            if !t.reliable && self.net.loss > 0.0 && self.rng.gen::<f64>() < self.net.loss {
                continue;
            }
            let mut d = net::delay(&self.net, self.seed, i, to, &mut self.rng);
            if t.reliable {
                match net::frame_delay(&self.net, d, &mut self.rng) {
                    Some(late) => d = late,
                    None => continue,
                }
            }
            self.schedule(
                now + d,
                Kind::Deliver {
                    to,
                    from,
                    payload: t.payload,
                    reliable: t.reliable,
                    slow_checked: false,
                },
            );
        }
        self.outgoing = outgoing;
        let n = &mut self.nodes[i as usize];
        if deadline != n.timer_at {
            n.timer_at = deadline;
            n.generation = n.generation.wrapping_add(1);
            let generation = n.generation;
            if deadline != Time::MAX {
                self.schedule(
                    deadline.max(now),
                    Kind::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        }
    }

    fn schedule(&mut self, at: Time, kind: Kind) {
        self.next_seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.next_seq,
            kind,
        });
    }

    /// Runs every event up to and including time `until`.
    pub fn run_until(&mut self, until: Time, obs: &mut impl Observer) {
        while let Some(top) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.at;
            self.events_processed += 1;
            match ev.kind {
                Kind::Timer { node, generation } => {
                    let n = &mut self.nodes[node as usize];
                    if n.generation != generation {
                        continue;
                    }
                    n.timer_at = Time::MAX;
                    let now = self.now;
                    if let Some(c) = n.core.as_mut() {
                        c.handle_timeout(now);
                        self.poke(node, obs);
                    }
                }
                Kind::Deliver {
                    to,
                    from,
                    payload,
                    reliable,
                    slow_checked,
                } => {
                    let n = &self.nodes[to as usize];
                    if n.core.is_none() {
                        continue;
                    }
                    if let (Some(s), false) = (n.slow, slow_checked) {
                        let span = s.max.saturating_sub(s.min);
                        let d = s.min + span.mul_f64(self.rng.gen::<f64>());
                        let at = self.now + d;
                        self.schedule(
                            at,
                            Kind::Deliver {
                                to,
                                from,
                                payload,
                                reliable,
                                slow_checked: true,
                            },
                        );
                        continue;
                    }
                    let now = self.now;
                    if let Some(c) = self.nodes[to as usize].core.as_mut() {
                        if reliable {
                            c.handle_frame(now, from, &payload);
                        } else {
                            c.handle_datagram(now, from, &payload);
                        }
                        self.poke(to, obs);
                    }
                }
            }
        }
        if until > self.now {
            self.now = until;
        }
        self.sockets.tidy(self.now);
    }
}
