//! The Serf engine's settings: memberlist's and Serf's, with their profiles.

use super::security::Keyring;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Settings of a member that speaks Serf. The defaults are memberlist's `DefaultLANConfig`
/// and Serf's `DefaultConfig`: a Go peer computes its timeouts from the same numbers, so a
/// member that used others would be judged by a clock it does not keep.
#[derive(Debug, Clone)]
pub struct SerfConfig {
    /// This member's name, unique in the cluster.
    pub name: String,
    /// The address others reach it at (UDP and TCP).
    pub addr: SocketAddr,
    /// Tags, carried in the member's meta (at most 512 bytes encoded, memberlist's limit).
    pub tags: BTreeMap<String, String>,
    /// The keyring; `None` for plaintext gossip.
    pub keyring: Option<Keyring>,
    /// Encryption version written: 1 (memberlist protocol ≥ 2, what Serf speaks); 0 pads.
    pub encryption_version: u8,
    /// LZW-compress what is sent, as memberlist does by default.
    pub compression: bool,
    /// Between probes (memberlist: 1 s).
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking others (memberlist: 500 ms).
    pub probe_timeout: Duration,
    /// Members asked to probe on our behalf (memberlist: 3).
    pub indirect_checks: usize,
    /// Between gossip rounds (memberlist: 200 ms).
    pub gossip_interval: Duration,
    /// Members per gossip round (memberlist: 3).
    pub gossip_nodes: usize,
    /// How long the dead still get gossip (memberlist: 30 s).
    pub gossip_to_the_dead: Duration,
    /// Suspicion timeout multiplier (memberlist: 4).
    pub suspicion_mult: u32,
    /// The longest suspicion, as a multiple of the shortest (memberlist: 6).
    pub suspicion_max_timeout_mult: u32,
    /// Retransmissions, times log10(n + 1) (memberlist: 4).
    pub retransmit_mult: u32,
    /// Between push-pull exchanges, before scaling with size (memberlist: 30 s).
    pub push_pull_interval: Duration,
    /// Lifeguard's awareness ceiling (memberlist: 8).
    pub awareness_max: u32,
    /// Bytes per datagram (memberlist: 1,400, under a typical MTU).
    pub udp_buffer: usize,
    /// The most a push-pull stream may carry (memberlist refuses above 20 MB; a member
    /// costs under 200 bytes, so 8 MiB is 40,000 members).
    pub max_stream_bytes: usize,
    /// Serf's event dedup window, in Lamport ticks (512).
    pub event_buffer: usize,
    /// Serf's query dedup window (512).
    pub query_buffer: usize,
    /// Default query timeout: gossip interval × this × ceil(log10(n + 1)) (Serf: 16).
    pub query_timeout_mult: u32,
    /// Largest query response payload (Serf: 1,024 bytes).
    pub query_response_size_limit: usize,
    /// Largest query (Serf: 1,024 bytes).
    pub query_size_limit: usize,
    /// Largest user event, name and payload (Serf's agent: 512 bytes).
    pub user_event_size_limit: usize,
    /// Between attempts to reach a failed member again (Serf: 30 s).
    pub reconnect_interval: Duration,
    /// Failed members are forgotten after this (Serf: 24 h).
    pub reconnect_timeout: Duration,
    /// Left members are forgotten after this (Serf: 24 h).
    pub tombstone_timeout: Duration,
    /// The longest a graceful leave waits for each of its two broadcasts to go out (Serf:
    /// 5 s); a member that cannot finish in time leaves anyway.
    pub broadcast_timeout: Duration,
    /// How long a leaving member still answers probes after its dead claim is out, so that
    /// a peer that has not heard yet does not start suspecting it (Serf: 1 s).
    pub leave_propagate_delay: Duration,
    /// Live members sent a graceful leave directly, besides gossip (not in memberlist: 32).
    /// Gossip alone picks targets at random among the recently dead too, and a few copies
    /// can miss every live peer; a lost leave intent leaves the member `failed` everywhere
    /// for a day. 32 small datagrams, once, reach every peer of a cluster up to 33 and seed
    /// the epidemic in a larger one.
    pub leave_fanout: usize,
    /// Protocol versions advertised: pmin, pmax, pcur, dmin, dmax, dcur (Serf 0.9 on
    /// memberlist 0.2: memberlist 1..5 speaking 2, Serf 2..5 speaking 5).
    pub vsn: [u8; 6],
}

impl SerfConfig {
    /// memberlist's LAN profile (the default).
    pub fn lan(name: impl Into<String>, addr: SocketAddr) -> Self {
        SerfConfig {
            name: name.into(),
            addr,
            tags: BTreeMap::new(),
            keyring: None,
            encryption_version: 1,
            compression: true,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            awareness_max: 8,
            udp_buffer: 1400,
            max_stream_bytes: 8 << 20,
            event_buffer: 512,
            query_buffer: 512,
            query_timeout_mult: 16,
            query_response_size_limit: 1024,
            query_size_limit: 1024,
            user_event_size_limit: 512,
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            broadcast_timeout: Duration::from_secs(5),
            leave_propagate_delay: Duration::from_secs(1),
            leave_fanout: 32,
            vsn: [1, 5, 2, 2, 5, 5],
        }
    }

    /// memberlist's WAN profile: slower probes and longer suspicion for high latency.
    pub fn wan(name: impl Into<String>, addr: SocketAddr) -> Self {
        SerfConfig {
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(5),
            gossip_nodes: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_to_the_dead: Duration::from_secs(60),
            ..SerfConfig::lan(name, addr)
        }
    }

    /// memberlist's local profile: one host or a fast, reliable network.
    pub fn local(name: impl Into<String>, addr: SocketAddr) -> Self {
        SerfConfig {
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(15),
            probe_timeout: Duration::from_millis(200),
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead: Duration::from_secs(15),
            ..SerfConfig::lan(name, addr)
        }
    }

    /// A named profile: `lan`, `wan` or `local`.
    pub fn profile(profile: &str, name: impl Into<String>, addr: SocketAddr) -> Option<Self> {
        match profile {
            "lan" => Some(SerfConfig::lan(name, addr)),
            "wan" => Some(SerfConfig::wan(name, addr)),
            "local" => Some(SerfConfig::local(name, addr)),
            _ => None,
        }
    }
}
