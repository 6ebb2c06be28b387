//! A node's counters, exported through the `metrics` facade: whatever recorder the
//! application installs sees them (the agent's renders Prometheus text at `/metrics`).
//!
//! The protocol core keeps plain monotonic counters; once a second the driver hands them
//! here and the differences since the last export are added to the facade's counters.

use grapevine_core::wire::MessageType;
use grapevine_core::{DropReason, ReplicationStats, State, Stats};
use std::collections::HashMap;
use std::time::Duration;

/// Members by state.
pub const MEMBERS: &str = "grapevine_members";
/// Messages received, by type.
pub const MESSAGES_IN: &str = "grapevine_messages_in_total";
/// Messages sent, by type (rumours piggybacked on packets are counted in `RUMORS_OUT`).
pub const MESSAGES_OUT: &str = "grapevine_messages_out_total";
/// Bytes received, by the type of each packet's first message.
pub const BYTES_IN: &str = "grapevine_bytes_in_total";
/// Bytes sent, by the type of each packet's first message.
pub const BYTES_OUT: &str = "grapevine_bytes_out_total";
/// Rumours (membership broadcasts) sent, piggybacked or in gossip ticks.
pub const RUMORS_OUT: &str = "grapevine_rumors_out_total";
/// Probes started.
pub const PROBES: &str = "grapevine_probes_total";
/// Probes that ended with no ack at all.
pub const PROBES_FAILED: &str = "grapevine_probes_failed_total";
/// Probes answered only through another member (indirect).
pub const PROBES_INDIRECT: &str = "grapevine_probes_indirect_acks_total";
/// Probes answered only over TCP (the fallback).
pub const PROBES_FALLBACK: &str = "grapevine_probes_fallback_acks_total";
/// Direct probe round trips.
pub const PROBE_RTT: &str = "grapevine_probe_rtt_seconds";
/// Suspicions this node raised from its own failed probes.
pub const SUSPICIONS: &str = "grapevine_suspicions_total";
/// Accusations of this node that it refuted.
pub const REFUTATIONS: &str = "grapevine_refutations_total";
/// Members this node declared failed itself.
pub const DECLARED_FAILED: &str = "grapevine_declared_failed_total";
/// Inputs dropped, by layer (`envelope`: the encryption and label check; `protocol`: the
/// decoder and state machine) and reason.
pub const DROPPED: &str = "grapevine_dropped_total";
/// Anti-entropy exchanges of the member list completed.
pub const SYNCS: &str = "grapevine_syncs_total";
/// Anti-entropy exchanges of the member list skipped: pings showed equal tables.
pub const SYNCS_SKIPPED: &str = "grapevine_syncs_skipped_total";
/// Rounds of replicated-state exchanges, by outcome (`run`, or `quiet`: skipped because
/// pings showed equal roots).
pub const STATE_ROUNDS: &str = "grapevine_state_rounds_total";
/// Bytes of replicated-state exchanges sent.
pub const STATE_BYTES_OUT: &str = "grapevine_state_bytes_out_total";
/// Reliable-channel (TCP) connections open now.
pub const CONNECTIONS: &str = "grapevine_connections";
/// Datagrams the kernel dropped on this node's socket (its receive buffer was full).
pub const KERNEL_DROPS: &str = "grapevine_udp_kernel_drops_total";

/// Describes every metric to the installed recorder (help texts, units).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(MEMBERS, "Members known, by state.");
    describe_counter!(MESSAGES_IN, "Messages received, by type.");
    describe_counter!(
        MESSAGES_OUT,
        "Messages sent, by type (piggybacked rumours apart)."
    );
    describe_counter!(
        BYTES_IN,
        Unit::Bytes,
        "Bytes received, by the type of each packet's first message."
    );
    describe_counter!(
        BYTES_OUT,
        Unit::Bytes,
        "Bytes sent, by the type of each packet's first message."
    );
    describe_counter!(RUMORS_OUT, "Membership rumours sent.");
    describe_counter!(PROBES, "Probes started.");
    describe_counter!(PROBES_FAILED, "Probes that got no ack at all.");
    describe_counter!(PROBES_INDIRECT, "Probes answered only indirectly.");
    describe_counter!(PROBES_FALLBACK, "Probes answered only over TCP.");
    describe_histogram!(PROBE_RTT, Unit::Seconds, "Direct probe round trips.");
    describe_counter!(SUSPICIONS, "Suspicions raised by this node's own probes.");
    describe_counter!(REFUTATIONS, "Accusations of this node that it refuted.");
    describe_counter!(DECLARED_FAILED, "Members this node declared failed.");
    describe_counter!(
        DROPPED,
        "Inputs dropped, by layer (transport, datagram, envelope, protocol) and reason."
    );
    describe_gauge!(CONNECTIONS, "Reliable-channel connections open.");
    describe_counter!(
        KERNEL_DROPS,
        "Datagrams the kernel dropped on the gossip socket (receive buffer full)."
    );
    describe_counter!(SYNCS, "Member-list anti-entropy exchanges completed.");
    describe_counter!(
        SYNCS_SKIPPED,
        "Member-list anti-entropy exchanges skipped: pings showed equal tables."
    );
    describe_counter!(
        STATE_ROUNDS,
        "Rounds of replicated-state exchanges, by outcome (run, or quiet: pings showed equal roots)."
    );
    describe_counter!(
        STATE_BYTES_OUT,
        Unit::Bytes,
        "Bytes of replicated-state exchanges sent."
    );
}

/// The last values exported, to add only what changed.
#[derive(Default)]
pub(crate) struct Exporter {
    last: Stats,
    last_replication: ReplicationStats,
    refused: HashMap<&'static str, u64>,
    transport: HashMap<&'static str, u64>,
    kernel_drops: u64,
    started: bool,
}

/// The envelope and datagram layers' refusal reasons, so every series exists from the
/// first export.
const ENVELOPE_REASONS: [&str; 6] = [
    "unencrypted",
    "truncated",
    "wrong_label",
    "bad_key",
    "stale",
    "replayed",
];
/// Datagrams refused before they are opened.
pub(crate) const DATAGRAM_REASONS: [&str; 3] = ["rate_limited", "not_allowed", "drill"];

/// What the transport layer adds to an export: refusals, connections, kernel drops.
pub(crate) struct Transport<'a> {
    pub refused: &'a [(crate::transport::refusal::Refusal, u64)],
    pub connections: usize,
    pub kernel_drops: Option<u64>,
}

/// Logs a refusal: the first of each reason at warn, then at most one line a minute per
/// reason, at warn, with how many there were since (a flood cannot flood the log).
pub(crate) fn log_refusal(reason: &'static str, peer: &dyn std::fmt::Display) {
    use std::sync::Mutex;
    use std::time::Instant;
    static SEEN: Mutex<Vec<(&str, Instant, u64)>> = Mutex::new(Vec::new());
    const EVERY: Duration = Duration::from_secs(60);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    match seen.iter_mut().find(|(r, _, _)| *r == reason) {
        None => {
            seen.push((reason, Instant::now(), 0));
            tracing::warn!(%peer, reason, "refused (further refusals for this reason are summed once a minute)");
        }
        Some((_, last, n)) => {
            *n += 1;
            if last.elapsed() >= EVERY {
                tracing::warn!(%peer, reason, since_last = *n, "refused");
                *last = Instant::now();
                *n = 0;
            } else {
                tracing::debug!(%peer, reason, "refused");
            }
        }
    }
}

fn add(name: &'static str, before: u64, now: u64) {
    metrics::counter!(name).increment(now.saturating_sub(before));
}

impl Exporter {
    /// Exports what changed since the last call.
    pub(crate) fn export(
        &mut self,
        stats: &Stats,
        replication: &ReplicationStats,
        states: impl Iterator<Item = State>,
        refused: &HashMap<&'static str, u64>,
        transport: &Transport<'_>,
        rtts: &[Duration],
    ) {
        let mut counts = [0u64; 4];
        for s in states {
            counts[match s {
                State::Alive => 0,
                State::Suspect => 1,
                State::Dead => 2,
                State::Left => 3,
            }] += 1;
        }
        for (label, n) in ["alive", "suspect", "failed", "left"].iter().zip(counts) {
            metrics::gauge!(MEMBERS, "state" => *label).set(n as f64);
        }
        let last = &self.last;
        for code in 0..32u8 {
            let Some(kind) = MessageType::from_code(code) else {
                continue;
            };
            let i = code as usize;
            let t = kind.as_str();
            for (name, before, now) in [
                (MESSAGES_IN, last.messages_in[i], stats.messages_in[i]),
                (MESSAGES_OUT, last.messages_out[i], stats.messages_out[i]),
                (
                    BYTES_IN,
                    last.bytes_in_by_type[i],
                    stats.bytes_in_by_type[i],
                ),
                (
                    BYTES_OUT,
                    last.bytes_out_by_type[i],
                    stats.bytes_out_by_type[i],
                ),
            ] {
                // Series of types never seen stay absent rather than a wall of zeros.
                if now > before {
                    metrics::counter!(name, "type" => t).increment(now - before);
                }
            }
        }
        add(RUMORS_OUT, last.broadcasts_out, stats.broadcasts_out);
        add(PROBES, last.probes, stats.probes);
        add(PROBES_FAILED, last.probes_failed, stats.probes_failed);
        add(PROBES_INDIRECT, last.indirect_acks, stats.indirect_acks);
        add(PROBES_FALLBACK, last.fallback_acks, stats.fallback_acks);
        add(SUSPICIONS, last.suspicions_raised, stats.suspicions_raised);
        add(REFUTATIONS, last.refutations, stats.refutations);
        add(DECLARED_FAILED, last.declared_dead, stats.declared_dead);
        add(SYNCS, last.syncs, stats.syncs);
        add(SYNCS_SKIPPED, last.syncs_skipped, stats.syncs_skipped);
        for (outcome, before, now) in [
            ("run", self.last_replication.rounds, replication.rounds),
            (
                "quiet",
                self.last_replication.rounds_quiet,
                replication.rounds_quiet,
            ),
        ] {
            if now > before || !self.started {
                metrics::counter!(STATE_ROUNDS, "outcome" => outcome).increment(now - before);
            }
        }
        add(STATE_BYTES_OUT, last.state_bytes_out, stats.state_bytes_out);
        for r in DropReason::ALL {
            let (before, now) = (last.dropped(r), stats.dropped(r));
            if now > before || !self.started {
                metrics::counter!(DROPPED, "layer" => "protocol", "reason" => r.as_str())
                    .increment(now - before);
            }
        }
        for reason in ENVELOPE_REASONS {
            let now = refused.get(reason).copied().unwrap_or(0);
            let before = self.refused.get(reason).copied().unwrap_or(0);
            if now > before || !self.started {
                metrics::counter!(DROPPED, "layer" => "envelope", "reason" => reason)
                    .increment(now.saturating_sub(before));
            }
        }
        for reason in DATAGRAM_REASONS {
            let now = refused.get(reason).copied().unwrap_or(0);
            let before = self.refused.get(reason).copied().unwrap_or(0);
            if now > before || !self.started {
                metrics::counter!(DROPPED, "layer" => "datagram", "reason" => reason)
                    .increment(now.saturating_sub(before));
            }
        }
        for (r, now) in transport.refused {
            let reason = r.as_str();
            let before = self.transport.get(reason).copied().unwrap_or(0);
            if *now > before || !self.started {
                metrics::counter!(DROPPED, "layer" => "transport", "reason" => reason)
                    .increment(now.saturating_sub(before));
            }
            self.transport.insert(reason, *now);
        }
        metrics::gauge!(CONNECTIONS).set(transport.connections as f64);
        if let Some(k) = transport.kernel_drops {
            if k > self.kernel_drops || !self.started {
                metrics::counter!(KERNEL_DROPS).increment(k.saturating_sub(self.kernel_drops));
            }
            self.kernel_drops = k;
        }
        let rtt = metrics::histogram!(PROBE_RTT);
        for d in rtts {
            rtt.record(d.as_secs_f64());
        }
        self.last = stats.clone();
        self.last_replication = replication.clone();
        self.refused = refused.clone();
        self.started = true;
    }
}

/// Datagrams the kernel dropped on the UDP socket bound to `port` (Linux: the `drops`
/// column of /proc/net/udp and udp6); `None` where that is not readable.
pub(crate) fn kernel_drops(port: u16) -> Option<u64> {
    let mut found = None;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let Some(local) = cols.get(1) else { continue };
            let Some(p) = local.rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            if let Some(d) = cols.last().and_then(|d| d.parse::<u64>().ok()) {
                *found.get_or_insert(0) += d;
            }
        }
    }
    found
}
