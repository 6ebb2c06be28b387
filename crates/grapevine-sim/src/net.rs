//! The simulated network: per-link latency, random loss, partitions, one-way cuts.

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::BTreeSet;
use std::time::Duration;

/// How the simulated network behaves.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Lower bound of a link's base one-way latency.
    pub latency_min: Duration,
    /// Upper bound of a link's base one-way latency (each link draws its own, uniformly).
    pub latency_max: Duration,
    /// Per-message jitter added to the link latency, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a datagram is lost. Reliable frames are never lost (TCP retransmits),
    /// only blocked by partitions and cuts.
    pub loss: f64,
    /// A reliable frame takes this many one-way latencies (connection set-up, then data).
    pub frame_latency_factor: u32,
}

impl NetConfig {
    /// A datacenter LAN: 0.2–2 ms links, 0.5 ms jitter, no loss.
    pub fn lan() -> Self {
        NetConfig {
            latency_min: Duration::from_micros(200),
            latency_max: Duration::from_millis(2),
            jitter: Duration::from_micros(500),
            loss: 0.0,
            frame_latency_factor: 3,
        }
    }

    /// The network a configuration profile is made for: `wan` links for the `wan` profile,
    /// LAN links otherwise (`local` too: loopback is faster still, but the LAN's delays are
    /// the conservative choice).
    pub fn for_profile(profile: &str) -> Self {
        if profile == "wan" {
            NetConfig::wan()
        } else {
            NetConfig::lan()
        }
    }

    /// A wide-area network: 10–150 ms links, 10 ms jitter.
    pub fn wan() -> Self {
        NetConfig {
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(150),
            jitter: Duration::from_millis(10),
            loss: 0.0,
            frame_latency_factor: 3,
        }
    }
}

/// Who can reach whom right now.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// Group of each node while partitioned; nodes in different groups cannot talk.
    groups: Option<Vec<u16>>,
    /// One-way cuts: (from, to) pairs that drop everything.
    cuts: BTreeSet<(u32, u32)>,
    /// Nodes cut off from everyone in both directions.
    isolated: BTreeSet<u32>,
}

impl Topology {
    /// Splits the nodes into groups (`groups[i]` is node i's group).
    pub fn partition(&mut self, groups: Vec<u16>) {
        self.groups = Some(groups);
    }

    /// Ends any partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Whether a partition is in force.
    pub fn is_partitioned(&self) -> bool {
        self.groups.is_some()
    }

    /// Drops everything `from` sends to `to` (not the other way).
    pub fn cut(&mut self, from: u32, to: u32) {
        self.cuts.insert((from, to));
    }

    /// Removes a one-way cut.
    pub fn uncut(&mut self, from: u32, to: u32) {
        self.cuts.remove(&(from, to));
    }

    /// Cuts `node` off from everyone, or reconnects it.
    pub fn isolate(&mut self, node: u32, isolated: bool) {
        if isolated {
            self.isolated.insert(node);
        } else {
            self.isolated.remove(&node);
        }
    }

    /// Whether a message from `from` to `to` gets through.
    pub fn can_reach(&self, from: u32, to: u32) -> bool {
        if let Some(g) = &self.groups {
            if g.get(from as usize) != g.get(to as usize) {
                return false;
            }
        }
        if !self.isolated.is_empty()
            && (self.isolated.contains(&from) || self.isolated.contains(&to))
        {
            return false;
        }
        self.cuts.is_empty() || !self.cuts.contains(&(from, to))
    }
}

/// The base latency of the link between `a` and `b` (symmetric), derived from the seed.
pub fn link_latency(cfg: &NetConfig, seed: u64, a: u32, b: u32) -> Duration {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&lo.to_le_bytes());
    key[12..].copy_from_slice(&hi.to_le_bytes());
    let h = xxhash_rust::xxh3::xxh3_64(&key);
    let frac = (h >> 11) as f64 / (1u64 << 53) as f64;
    let span = cfg.latency_max.saturating_sub(cfg.latency_min);
    cfg.latency_min + span.mul_f64(frac)
}

/// One message's one-way delay: the link's latency plus jitter.
pub fn delay(cfg: &NetConfig, seed: u64, a: u32, b: u32, rng: &mut Xoshiro256PlusPlus) -> Duration {
    let j = if cfg.jitter.is_zero() {
        Duration::ZERO
    } else {
        cfg.jitter.mul_f64(rng.gen::<f64>())
    };
    link_latency(cfg, seed, a, b) + j
}
