//! The simulated network: per-link latency, random loss, partitions, one-way cuts.

use grapevine_core::Config;
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
    /// Probability that a packet is lost. A datagram is then gone; a reliable frame's lost
    /// TCP segments are retransmitted (see [`frame_delay`]), late or, when the connection
    /// cannot be set up within `connect_timeout`, not at all.
    pub loss: f64,
    /// A reliable frame takes this many one-way latencies (connection set-up, then data).
    pub frame_latency_factor: u32,
    /// How long the driver waits for a TCP connection before it drops the frame: the
    /// profile's `sync_timeout`, as `grapevine`'s driver does.
    pub connect_timeout: Duration,
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
            connect_timeout: Config::lan().membership.sync_timeout,
        }
    }

    /// The network a configuration profile is made for: `wan` links for the `wan` profile,
    /// LAN links otherwise (`local` too: loopback is faster still, but the LAN's delays are
    /// the conservative choice).
    pub fn for_profile(profile: &str) -> Self {
        let net = if profile == "wan" {
            NetConfig::wan()
        } else {
            NetConfig::lan()
        };
        match Config::profile(profile) {
            Some(c) => NetConfig {
                connect_timeout: c.membership.sync_timeout,
                ..net
            },
            None => net,
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
            connect_timeout: Config::wan().membership.sync_timeout,
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

/// Linux's first retransmission timeout for a SYN or SYN-ACK (RFC 6298's 1 s).
const SYN_RTO: Duration = Duration::from_secs(1);
/// Linux's least retransmission timeout for data (`TCP_RTO_MIN`), which a LAN's
/// sub-millisecond round trips always fall under.
const DATA_RTO: Duration = Duration::from_millis(200);
/// Retransmissions of one data segment before Linux gives the connection up (`tcp_retries2`).
const DATA_RETRIES: u32 = 15;

/// A reliable frame's one-way delay over TCP: `one_way` times the frame factor, plus a
/// retransmission timeout (doubling each time) for every lost handshake or data segment; or
/// `None` when the handshake outlasts `connect_timeout` and the driver gives up. Each frame is
/// taken to open its own connection, the worst case: the driver keeps a connection for a
/// while, and then only the data segment can be lost.
pub fn frame_delay(
    cfg: &NetConfig,
    one_way: Duration,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<Duration> {
    let base = one_way * cfg.frame_latency_factor.max(1);
    if cfg.loss <= 0.0 {
        return Some(base);
    }
    if cfg.loss >= 1.0 {
        return None;
    }
    let mut extra = Duration::ZERO;
    let mut rto = SYN_RTO;
    // The SYN, then the SYN-ACK.
    for _ in 0..2 {
        while rng.gen::<f64>() < cfg.loss {
            extra += rto;
            rto *= 2;
            if extra >= cfg.connect_timeout {
                return None;
            }
        }
    }
    let mut rto = DATA_RTO;
    let mut tries = 0;
    while rng.gen::<f64>() < cfg.loss {
        tries += 1;
        if tries > DATA_RETRIES {
            return None;
        }
        extra += rto;
        rto *= 2;
    }
    Some(base + extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_frame_without_loss_takes_its_latency_factor() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let cfg = NetConfig::lan();
        let d = frame_delay(&cfg, Duration::from_millis(1), &mut rng);
        assert_eq!(d, Some(Duration::from_millis(3)));
    }

    #[test]
    fn lost_segments_delay_or_drop_a_frame_as_tcp_would() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let cfg = NetConfig {
            loss: 0.2,
            ..NetConfig::lan()
        };
        let (mut dropped, mut late, mut on_time) = (0, 0, 0);
        let n = 100_000;
        for _ in 0..n {
            match frame_delay(&cfg, Duration::from_millis(1), &mut rng) {
                None => dropped += 1,
                Some(d) if d > Duration::from_millis(3) => {
                    // Retransmission timeouts: multiples of 200 ms past the base.
                    assert_eq!((d - Duration::from_millis(3)).as_millis() % 200, 0);
                    late += 1
                }
                Some(_) => on_time += 1,
            }
        }
        // Handshake retransmissions after 1, 3, 7 s fit the 10 s connect timeout, a fourth
        // (15 s) does not: dropped when the SYN and SYN-ACK are lost four times between them,
        // 1 − 0.64 · (1 + 2 · 0.2 + 3 · 0.04 + 4 · 0.008) = 0.67 %. On time: no segment
        // lost, 0.8³ = 51.2 %.
        let share = |k: i32| f64::from(k) / f64::from(n);
        assert!((share(dropped) - 0.0067).abs() < 0.002, "{dropped}");
        assert!((share(on_time) - 0.512).abs() < 0.01, "{on_time}");
        assert_eq!(dropped + late + on_time, n);
        assert_eq!(
            frame_delay(&NetConfig { loss: 1.0, ..cfg }, Duration::ZERO, &mut rng),
            None
        );
    }
}
