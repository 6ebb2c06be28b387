//! Protocol configuration and the named profiles `lan`, `wan` and `local`.
//!
//! Every default below is justified where it is set. The figures start from the
//! ones HashiCorp memberlist has run in production for a decade (its LAN and WAN
//! configurations, themselves derived from the SWIM and Lifeguard papers), and say
//! where and why grapevine departs from them.

use crate::admission::Rate;
use std::time::Duration;

/// Which failure detector convicts members.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Detector {
    /// SWIM probing with suspicion (the default).
    Swim,
    /// Phi-accrual on heartbeats spread with per-node state (Cassandra's way); no probing.
    Phi,
    /// Both: either may raise a suspicion.
    Both,
}

/// How the next probe target is chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeSelection {
    /// Round-robin over a shuffled list, newcomers placed at random points of the pass
    /// (SWIM §4.3): every member is probed within one pass, so detection time is bounded.
    RoundRobin,
    /// A uniformly random member each period (the original SWIM analysis).
    Random,
}

/// Everything a node needs to know to run the protocol, one section per protocol.
#[derive(Clone, Debug)]
pub struct Config {
    /// The profile this configuration started from, for logs and reports.
    pub profile: &'static str,
    /// The cluster label carried by every packet; packets with another label are dropped,
    /// so two clusters sharing a network never merge by accident. Empty by default.
    pub label: Vec<u8>,
    /// Packets and frames: the sizes a node writes and accepts.
    pub wire: WireConfig,
    /// Failure detection: SWIM probing with Lifeguard, or phi-accrual.
    pub detection: DetectionConfig,
    /// Membership: suspicion, gossip, push-pull anti-entropy, reaping and admission of new members.
    pub membership: MembershipConfig,
    /// Replicated state: rounds, their sizes and budget, tombstones and clocks.
    pub state: StateConfig,
    /// User events: rumour mongering and the budgets events are taken under.
    pub rumor: RumorConfig,
    /// Push-sum aggregation.
    pub aggregate: AggregateConfig,
}

/// Packets and frames: the sizes a node writes and accepts.
#[derive(Clone, Debug)]
pub struct WireConfig {
    /// Byte budget of a datagram, headers included (fits a 1500-byte MTU with room for
    /// IP, UDP and the encryption added by the networked driver).
    pub packet_budget: usize,
    /// The largest datagram accepted.
    pub max_datagram: usize,
    /// The largest reliable-channel frame accepted (each message type has a lower limit of
    /// its own, [`crate::wire::frame_limit`]).
    pub max_frame: usize,
}

/// Failure detection: SWIM probing with Lifeguard, or phi-accrual.
#[derive(Clone, Debug)]
pub struct DetectionConfig {
    /// Time between probes of successive members (the SWIM protocol period).
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_timeout: Duration,
    /// How many members are asked to probe a silent target indirectly (SWIM's k).
    pub indirect_checks: usize,
    /// Also probe over the reliable channel when the direct probe fails: TCP survives
    /// UDP loss and UDP-only firewalls.
    pub fallback_probe: bool,
    /// How targets are chosen.
    pub probe_selection: ProbeSelection,
    /// Lifeguard: local health awareness, confirmation-shortened suspicion, and the buddy system.
    pub lifeguard: bool,
    /// Lifeguard's cap on the local health multiplier of probe interval and timeout.
    pub awareness_max_multiplier: u32,
    /// Which failure detector convicts members.
    pub detector: Detector,
    /// φ above which the phi-accrual detector suspects a member.
    pub phi_threshold: f64,
    /// How often a node bumps its heartbeat when the phi-accrual detector is on.
    pub heartbeat_interval: Duration,
}

/// Membership: suspicion, gossip, push-pull anti-entropy, reaping and admission of new members.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Whether a failed probe makes the target suspect (SWIM §4.2) or dead at once.
    pub suspicion: bool,
    /// Minimum suspicion timeout = `suspicion_mult × max(1, log10(N)) × probe_interval`.
    pub suspicion_mult: u32,
    /// Maximum suspicion timeout as a multiple of the minimum (Lifeguard: a fresh
    /// suspicion waits this long unless others confirm it).
    pub suspicion_max_timeout_mult: u32,
    /// Independent confirmations after which the suspicion timeout reaches its minimum.
    pub suspicion_confirmations: u32,
    /// Each broadcast is sent `retransmit_mult × ceil(log10(N+1))` times.
    pub retransmit_mult: u32,
    /// Time between gossip ticks, each of which sends queued broadcasts to `fanout` members.
    pub gossip_interval: Duration,
    /// Random members each gossip tick sends to.
    pub fanout: usize,
    /// Members dead for less than this still receive gossip, so they learn of their own death
    /// and refute it quickly after a short outage.
    pub gossip_to_dead_time: Duration,
    /// Base interval of anti-entropy push-pull with one random member; scaled up with
    /// cluster size (`× (ceil(log2 N − log2 32) + 1)` above 32 members).
    pub push_pull_interval: Duration,
    /// Interval used instead while the last exchange found the views divergent, so a joining
    /// or healing node catches up in O(log N) exchanges rather than waiting for the long timer.
    pub push_pull_catchup_interval: Duration,
    /// Interval at which a node tries to reach a random dead member or a seed, so the sides of
    /// a healed partition find each other without an operator.
    pub reconnect_interval: Duration,
    /// Dead members are forgotten after this long; until then they are retried.
    pub dead_reap_timeout: Duration,
    /// Members that left are forgotten after this long.
    pub left_reap_timeout: Duration,
    /// A name dead or left for at least this long may be claimed from a new address.
    /// `None`: a name keeps its address until reaped.
    pub dead_reclaim_time: Option<Duration>,
    /// The most members a node will track; gossip about more is dropped (bounded memory).
    pub max_members: usize,
    /// The most broadcasts queued for dissemination; the most-sent are dropped first.
    /// Rumours are for speed, anti-entropy for completeness: when many members change at
    /// once (a whole cluster starting), a deeper queue would only repeat, packet after
    /// packet, what the catch-up exchanges deliver anyway.
    pub max_broadcasts: usize,
    /// How long an unanswered anti-entropy exchange or relay is remembered.
    pub sync_timeout: Duration,
    /// New members a node considers per source address when it hears of them by gossip (a
    /// datagram's source can be forged; exchanges run over connections that proved theirs
    /// and are not counted); past it they are refused and the node catches up with a member
    /// instead.
    pub new_members_per_source: Rate,
    /// New members a node considers by gossip, all sources together.
    pub new_members_total: Rate,
    /// Whether a member heard of by gossip, or from a stranger about others, must answer a
    /// ping from this node before it joins the table (and the probe order). On in every
    /// profile: fabricated members then cost a ping each instead of a place in every probe
    /// pass. Off only where every sender is trusted (tests that script membership by hand).
    pub verify_hearsay: bool,
}

/// Replicated state: rounds, their sizes and budget, tombstones and clocks.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// The shortest time between two rounds of state exchanges (per-node state and the
    /// shared keyspace) with `state_fanout` members: rounds run this often while a node's
    /// data changes or pings show members whose data differs.
    pub state_interval: Duration,
    /// The longest time between rounds while nothing changes and no ping compares roots
    /// (the interval doubles from `state_interval` up to this); rounds are skipped while
    /// pings show agreement.
    pub state_backoff_max: Duration,
    /// Members a node exchanges state with each round.
    pub state_fanout: usize,
    /// Which way state flows in an exchange: push, pull or push-pull.
    pub state_mode: crate::state::reconcile::Mode,
    /// About the most bytes of state one exchange message carries; more waits for the next
    /// exchange (the most-behind nodes first).
    pub state_budget: usize,
    /// About the most bytes of shared-keyspace entries one exchange message carries (at
    /// least one entry always goes); a larger difference moves a chunk per exchange.
    pub state_chunk: usize,
    /// The most bytes one member's own per-node state may hold (keys and values): a delta
    /// that resets a copy goes whole, so this bounds the largest state frame.
    pub max_node_state: usize,
    /// A node's outgoing state traffic, in bytes per second, if capped: rounds are skipped
    /// while the budget is spent, trading convergence time for bandwidth.
    pub state_bandwidth: Option<u64>,
    /// Share of exchange partners (0..1) chosen as the member exchanged with least recently
    /// (among a few sampled) rather than uniformly: those are the likeliest to diverge.
    pub state_divergence_bias: f64,
    /// Tombstones (deletes, expiries) are collected this long after they were written.
    pub tombstone_grace: Duration,
    /// Remote hybrid timestamps further ahead of local time than this are refused.
    pub max_clock_drift: Duration,
}

/// User events: rumour mongering and the budgets events are taken under.
#[derive(Clone, Debug)]
pub struct RumorConfig {
    /// User events: whether a recipient's "I knew it" is what counts towards losing
    /// interest (feedback), or every push does (blind).
    pub rumor_feedback: bool,
    /// User events: lose interest after `rumor_k` counted contacts in a row, or with a
    /// 1/`rumor_k` coin at each.
    pub rumor_stop: crate::rumor::RumorStop,
    /// User events: the stop rule's k.
    pub rumor_k: u32,
    /// User events: members pushed to per rumour tick (the gossip interval).
    pub rumor_fanout: usize,
    /// User events: deduplicated, and spread, for this long.
    pub rumor_ttl: Duration,
    /// User events: forwarded at most this many times.
    pub rumor_max_hops: u8,
    /// New user events a node accepts (delivers and spreads) from one origin member; its own
    /// included (`broadcast` is refused past it).
    pub events_per_origin: Rate,
    /// New user events a node accepts, all origins together.
    pub events_total: Rate,
}

/// Push-sum aggregation.
#[derive(Clone, Debug)]
pub struct AggregateConfig {
    /// Aggregation: how often a node sends half its push-sum mass to a random member.
    pub aggregate_interval: Duration,
    /// Aggregation: rounds per epoch, after which estimates settle and restart from the
    /// live members' contributions.
    pub aggregate_epoch_rounds: u32,
}

impl Config {
    /// A datacenter LAN: sub-millisecond to few-millisecond round trips, rare loss.
    ///
    /// Probe interval 500 ms and timeout 250 ms, half of memberlist's LAN values: 250 ms is
    /// still two orders of magnitude above a LAN round trip (and Lifeguard stretches both
    /// when the node itself is slow), a probe is two datagrams of about 60 and 40 bytes with
    /// their headers (the ping carries the prober's roots, so that anti-entropy of every kind
    /// runs only where it finds something: an idle agent sends these and nothing else), and a failure is
    /// first suspected within about a second. k = 3 indirect probes: past three, the
    /// false-positive rate under independent loss is already below 10⁻³ per probe at 5 % loss.
    /// Suspicion multiplier 3 (memberlist: 4 at twice the interval) and maximum ×6: a minimum
    /// of 2.5 s at 50 nodes and 4.5 s at 1,000, reached only once 3 members independently
    /// failed to reach the suspect; a lone accuser waits six times as long. The minimum is
    /// what a refutation needs: the suspect hears the rumour and its denial spreads back, each
    /// in about log₄ N gossip ticks of 200 ms (under a second at 1,000 nodes). Together these
    /// detect a crash in under half of Serf's time on the same machine (docs/measurements.md) with
    /// no more idle traffic. Gossip every 200 ms to 3 members: the epidemic reaches 1,000
    /// nodes in about 2 s. Push-pull every 30 s (scaled with N), skipped while the last pings showed
    /// members holding this very table, and a 250 ms catch-up interval while views differ
    /// lets a joining node pull the members it lacks in O(log N) quick exchanges (nodes that
    /// are catching up do not relay join rumours). Reconnect every 10 s: a healed
    /// partition is found again within seconds, at one small exchange per 10 s per node
    /// while a member is dead (seeds are tried every minute, unless they are live members
    /// here and so probed anyway).
    /// Dead members are kept 24 h (Serf's reconnect timeout) so they can be found again.
    ///
    /// State: rounds with 3 members, push-pull, at most one a second (chitchat's and
    /// Cassandra's one-second gossip), and only while there is something to find: a node
    /// runs one as soon as its own data changed, and every second while pings show members
    /// whose roots differ; the update reaches 1,000 simulated nodes in about 1.5 s. While
    /// nothing changes the interval doubles up to 64 s, and a round is skipped whenever the
    /// last pings showed equal roots, so an idle cluster sends no exchange at all (the 64 s
    /// bound holds only where pings carry no roots). 64 KiB of per-node deltas per message keeps a catch-up bounded in time;
    /// shared-keyspace entries move 1 MiB per message (a 200 MiB keyspace reaches a new
    /// member in about 70 exchanges, each frame far under the 8 MiB a receiver accepts);
    /// one member's own state is capped at 4 MiB, room for thousands of service records. No bandwidth cap by default. Half the partners are the
    /// member least recently exchanged with among 8 sampled: a node that missed updates is
    /// found sooner without losing the randomness gossip's guarantees rest on. Tombstones are
    /// kept 24 h, as dead members are: a node cut off for longer is forgotten anyway. Clock
    /// drift up to 60 s is tolerated: NTP keeps real clocks far closer.
    ///
    /// Failure detection by SWIM probing. With phi-accrual, the threshold is Cassandra's 8
    /// (a silence of about 18 heartbeat intervals) and the heartbeat beats every second, as
    /// Cassandra's gossiper does.
    ///
    /// User events: feedback with a counter, the variant Demers et al. found best, with
    /// k = 8: the residue (members never reached) is about e^(−traffic per member), 0.4 % at
    /// k = 4 (their Table 1) and about 0.005 % at k = 8, for some ten pushes per member.
    /// Events are best effort, as Serf's are: no anti-entropy backs them. Pushed to 2 members
    /// per gossip tick, so they spread in half the ticks; deduplicated for 60 s, at most 32
    /// hops (far above the log N rounds a rumour needs).
    ///
    /// Admission: gossip from a live member's address is taken as its exchanges are. A
    /// member named by anyone else (gossip from an address no live member holds) must answer
    /// a ping before it joins the table, so fabricated members never dilute probing; one that
    /// introduces itself is taken at its word. Gossip from non-members may bring 64 new
    /// members a source at once and 16 a second after, 4,096 and 1,024 a second from all
    /// sources together: a whole cluster forming at once (10,000 nodes in the simulator)
    /// hears of members mostly from nodes it does not know yet, and the total must not slow
    /// its join; a forged flood from many sources costs at most 4,096 held candidates and
    /// two pings each (at the sustained rate, about 2,000 bare pings a second), and those refused arrive by
    /// anti-entropy with a member within a catch-up interval if real. User
    /// events: 64 at once and 16 a second per origin, 256 and 64 a second in all: far above
    /// operational events, far below the 841 a second that once made 275 MB of gossip.
    ///
    /// Aggregation: a push-sum round every 250 ms, 80 rounds (20 s) per epoch. Every node's
    /// relative error (average, sum and count) falls under 10⁻³ in 31 rounds at 1,000 nodes
    /// and 37 at 10,000 (`grapevine sim aggregate`); an estimate is reported once a node has
    /// run half an epoch (40 rounds, 10 s), so it is converged when shown. A departure ends
    /// the running epoch early, so the departed member's contribution is gone from every
    /// estimate within about one epoch. A round is one datagram of about 50 bytes per metric,
    /// sent only while some metric is aggregated.
    pub fn lan() -> Self {
        Config {
            profile: "lan",
            label: Vec::new(),
            wire: WireConfig {
                packet_budget: 1400,
                max_datagram: 65_507,
                max_frame: crate::wire::MAX_FRAME,
            },
            detection: DetectionConfig {
                probe_interval: Duration::from_millis(500),
                probe_timeout: Duration::from_millis(250),
                indirect_checks: 3,
                fallback_probe: true,
                probe_selection: ProbeSelection::RoundRobin,
                lifeguard: true,
                awareness_max_multiplier: 8,
                detector: Detector::Swim,
                phi_threshold: 8.0,
                heartbeat_interval: Duration::from_secs(1),
            },
            membership: MembershipConfig {
                suspicion: true,
                suspicion_mult: 3,
                suspicion_max_timeout_mult: 6,
                suspicion_confirmations: 3,
                retransmit_mult: 4,
                gossip_interval: Duration::from_millis(200),
                fanout: 3,
                gossip_to_dead_time: Duration::from_secs(30),
                push_pull_interval: Duration::from_secs(30),
                push_pull_catchup_interval: Duration::from_millis(250),
                reconnect_interval: Duration::from_secs(10),
                dead_reap_timeout: Duration::from_secs(24 * 3600),
                left_reap_timeout: Duration::from_secs(24 * 3600),
                dead_reclaim_time: Some(Duration::from_secs(60)),
                max_members: 200_000,
                max_broadcasts: 256,
                sync_timeout: Duration::from_secs(10),
                new_members_per_source: Rate::new(64, 16.0),
                new_members_total: Rate::new(4096, 1024.0),
                verify_hearsay: true,
            },
            state: StateConfig {
                state_interval: Duration::from_secs(1),
                state_backoff_max: Duration::from_secs(64),
                state_fanout: 3,
                state_mode: crate::state::reconcile::Mode::PushPull,
                state_budget: 64 * 1024,
                state_chunk: 1 << 20,
                max_node_state: 4 << 20,
                state_bandwidth: None,
                state_divergence_bias: 0.5,
                tombstone_grace: Duration::from_secs(24 * 3600),
                max_clock_drift: Duration::from_secs(60),
            },
            rumor: RumorConfig {
                rumor_feedback: true,
                rumor_stop: crate::rumor::RumorStop::Counter,
                rumor_k: 8,
                rumor_fanout: 2,
                rumor_ttl: Duration::from_secs(60),
                rumor_max_hops: 32,
                events_per_origin: Rate::new(64, 16.0),
                events_total: Rate::new(256, 64.0),
            },
            aggregate: AggregateConfig {
                aggregate_interval: Duration::from_millis(250),
                aggregate_epoch_rounds: 80,
            },
        }
    }

    /// A wide-area network: 10–300 ms round trips, more loss and jitter.
    ///
    /// Probe interval 5 s and timeout 3 s (memberlist's WAN values): an intercontinental round
    /// trip with retransmission fits in 3 s. Suspicion multiplier 6: refutations cross slower
    /// links. Gossip every 500 ms to 4 members: fewer, fuller packets, one more path against
    /// loss. Push-pull every 60 s, catch-up every 5 s; reconnect every 30 s. State rounds
    /// every 2 s with 4 members: slower links, one more path. Aggregation rounds every
    /// second, four times fewer datagrams on dearer links (an 80-s epoch).
    pub fn wan() -> Self {
        let mut c = Config::lan();
        c.profile = "wan";
        c.detection.probe_interval = Duration::from_secs(5);
        c.detection.probe_timeout = Duration::from_secs(3);
        c.membership.suspicion_mult = 6;
        c.membership.gossip_interval = Duration::from_millis(500);
        c.membership.fanout = 4;
        c.membership.gossip_to_dead_time = Duration::from_secs(60);
        c.membership.push_pull_interval = Duration::from_secs(60);
        c.membership.push_pull_catchup_interval = Duration::from_secs(5);
        c.membership.reconnect_interval = Duration::from_secs(30);
        c.membership.sync_timeout = Duration::from_secs(30);
        c.state.state_interval = Duration::from_secs(2);
        c.state.state_fanout = 4;
        c.aggregate.aggregate_interval = Duration::from_secs(1);
        c
    }

    /// One machine (loopback, tests, the demo): microsecond round trips, no loss.
    ///
    /// Probe interval 500 ms (as `lan`) but timeout 200 ms: loopback answers in microseconds,
    /// so a missed 200 ms deadline means a stopped process. Gossip every 100 ms,
    /// retransmit multiplier 3, push-pull 15 s, reconnect 3 s: fast feedback for development,
    /// at a cost that does not matter on one host. Dead names are reclaimable after 5 s so a
    /// restarted local process may take a new port. State rounds every 500 ms; aggregation
    /// rounds every 100 ms (an 8-s epoch), so estimates settle within seconds.
    pub fn local() -> Self {
        let mut c = Config::lan();
        c.profile = "local";
        c.detection.probe_timeout = Duration::from_millis(200);
        c.membership.retransmit_mult = 3;
        c.membership.gossip_interval = Duration::from_millis(100);
        c.membership.gossip_to_dead_time = Duration::from_secs(15);
        c.membership.push_pull_interval = Duration::from_secs(15);
        c.membership.reconnect_interval = Duration::from_secs(3);
        c.membership.dead_reclaim_time = Some(Duration::from_secs(5));
        c.membership.sync_timeout = Duration::from_secs(5);
        c.state.state_interval = Duration::from_millis(500);
        c.aggregate.aggregate_interval = Duration::from_millis(100);
        c
    }

    /// The profile called `name` (`lan`, `wan` or `local`).
    pub fn profile(name: &str) -> Option<Self> {
        match name {
            "lan" => Some(Config::lan()),
            "wan" => Some(Config::wan()),
            "local" => Some(Config::local()),
            _ => None,
        }
    }

    /// Checks the values are usable together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.detection.probe_interval.is_zero()
            || self.membership.gossip_interval.is_zero()
            || self.state.state_interval.is_zero()
            || self.aggregate.aggregate_interval.is_zero()
        {
            return Err(ConfigError::ZeroInterval);
        }
        if self.detection.probe_timeout >= self.detection.probe_interval {
            return Err(ConfigError::ProbeTimeoutTooLong);
        }
        if self.label.len() > crate::wire::MAX_LABEL_LEN {
            return Err(ConfigError::LabelTooLong(self.label.len()));
        }
        if self.wire.packet_budget < 256 || self.wire.packet_budget > self.wire.max_datagram {
            return Err(ConfigError::PacketBudget(self.wire.packet_budget));
        }
        if self.aggregate.aggregate_epoch_rounds < 2 {
            return Err(ConfigError::AggregateEpoch(
                self.aggregate.aggregate_epoch_rounds,
            ));
        }
        // Frames must stay within what receivers take of their types (`wire::frame_limit`).
        if self.state.state_chunk > 4 << 20
            || self.state.state_chunk == 0
            || self.state.max_node_state > 4 << 20
            || self.state.state_budget > 2 << 20
        {
            return Err(ConfigError::StateSizes);
        }
        Ok(())
    }

    /// The retransmit limit for a cluster of `n` members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let logn = ((n as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.membership.retransmit_mult.max(1) * logn
    }

    /// The push-pull interval scaled for a cluster of `n` members (memberlist's rule).
    pub fn push_pull_interval_for(&self, n: usize) -> Duration {
        const THRESHOLD: f64 = 32.0;
        if (n as f64) <= THRESHOLD {
            return self.membership.push_pull_interval;
        }
        let mult = ((n as f64).log2() - THRESHOLD.log2()).ceil() + 1.0;
        crate::time::scale(self.membership.push_pull_interval, mult)
    }

    /// Minimum suspicion timeout for `n` members.
    pub fn suspicion_min_timeout(&self, n: usize) -> Duration {
        let f = (n.max(1) as f64).log10().max(1.0);
        crate::time::scale(
            self.detection.probe_interval,
            f64::from(self.membership.suspicion_mult) * f,
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::lan()
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An interval of zero would spin.
    #[error("probe, gossip, state and aggregate intervals must be greater than zero")]
    ZeroInterval,
    /// The probe timeout must leave room for indirect probes within the interval.
    #[error("probe_timeout must be shorter than probe_interval")]
    ProbeTimeoutTooLong,
    /// The cluster label is over 255 bytes.
    #[error("cluster label is {0} bytes, the limit is 255")]
    LabelTooLong(usize),
    /// The packet budget cannot hold a probe, or exceeds a datagram.
    #[error("packet_budget {0} must be between 256 and max_datagram")]
    PacketBudget(usize),
    /// State chunks or caps over what a receiver takes in one frame.
    #[error("state_chunk must be 1 byte to 4 MiB, max_node_state at most 4 MiB, state_budget at most 2 MiB")]
    StateSizes,
    /// An aggregation epoch too short to settle anything.
    #[error("aggregate_epoch_rounds {0} must be at least 2")]
    AggregateEpoch(u32),
}
