//! `grapevine sim idle`: what a cluster that holds state, as agents do, costs while nothing
//! happens. Every node holds the shared keyspace (one key, as an agent holds the catalog's
//! keys) and, with `own_state`, its own per-node state: the keyspace root it tracks (as every
//! agent publishes it) and a service record. Once every node holds the same state and a
//! settling time has passed, the run counts per node per probe period what the nodes send:
//! messages by type, and what real sockets pay for them (datagrams, frames, connections,
//! packets and bytes with headers and acknowledgements, see [`crate::sockets`]).

use crate::sim::{NoObserver, Sim};
use crate::sockets::SocketCost;
use grapevine_core::wire::MessageType;
use grapevine_core::Target;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Parameters of an `idle` run.
#[derive(Clone, Debug)]
pub struct IdleParams {
    /// Cluster size.
    pub nodes: u32,
    /// The configuration profile the nodes run (`lan`, `wan`, `local`).
    pub profile: String,
    /// Whether every node also holds per-node state (everyone's copy of everyone's: memory
    /// grows with the square of the cluster size, about 10 GB at 10,000 nodes).
    pub own_state: bool,
    /// Probe periods between the state's convergence and the measurement.
    pub settle: u32,
    /// Probe periods measured.
    pub periods: u32,
    /// RNG seed.
    pub seed: u64,
    /// Leave `wall_seconds` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for IdleParams {
    fn default() -> Self {
        IdleParams {
            nodes: 100,
            profile: "lan".into(),
            own_state: true,
            settle: 120,
            periods: 100,
            seed: 1,
            no_wall_clock: false,
        }
    }
}

/// What an idle cluster sent, per node per probe period.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IdleReport {
    /// Cluster size.
    pub nodes: u32,
    /// The configuration profile.
    pub profile: String,
    /// Seconds in a probe period.
    pub period_seconds: f64,
    /// Whether nodes held per-node state too.
    pub own_state: bool,
    /// Probe periods from the first write until every node held the same state.
    pub converged_period: Option<u32>,
    /// Probe periods measured.
    pub periods: u32,
    /// Messages sent (piggybacked rumours apart), per node per period.
    pub messages: f64,
    /// Of those, by type.
    pub messages_by_type: BTreeMap<String, f64>,
    /// Datagrams sent, per node per period.
    pub datagrams: f64,
    /// Reliable frames sent, per node per period.
    pub frames: f64,
    /// Connections opened, per node per period.
    pub connections: f64,
    /// Protocol bytes (datagram and frame payloads), per node per period.
    pub payload_bytes: f64,
    /// Packets on the wire (acknowledgements and handshakes included), per node per period.
    pub packets: f64,
    /// Bytes on the wire, headers included, per node per period.
    pub wire_bytes: f64,
    /// Bytes on the wire per node per second.
    pub wire_bytes_per_second: f64,
    /// Rounds of state exchanges run (not skipped), per node per period.
    pub state_rounds: f64,
    /// Membership push-pull exchanges completed, per node per period.
    pub syncs: f64,
    /// Wall-clock seconds (left out with `no_wall_clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
}

/// Periods the state may take to converge at most.
const CONVERGE_PERIODS: u32 = 400;

/// What the nodes sent so far: socket costs, messages by type, state rounds, syncs.
struct Sent {
    sockets: SocketCost,
    messages: [u64; 32],
    rounds: u64,
    syncs: u64,
}

fn sent(sim: &Sim, n: u32) -> Sent {
    let mut s = Sent {
        sockets: sim.sockets().total(),
        messages: [0; 32],
        rounds: 0,
        syncs: 0,
    };
    for x in (0..n).filter_map(|i| sim.node(i)) {
        for (t, m) in s.messages.iter_mut().zip(x.stats().messages_out.iter()) {
            *t += m;
        }
        s.rounds += x.replication_stats().rounds;
        s.syncs += x.stats().syncs;
    }
    s
}

/// Runs the scenario.
pub fn run(p: &IdleParams) -> Result<IdleReport, String> {
    let started = Instant::now();
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if p.periods == 0 {
        return Err("--periods must be at least 1".into());
    }
    let config = super::profile_config(&p.profile, None, None)?;
    let n = p.nodes;
    let period = config.detection.probe_interval;
    let mut sim = super::joined_cluster(p.seed, n, &config, 0.0, 400);
    let obs = &mut NoObserver;

    let now = sim.now();
    for i in 0..n {
        if let Some(node) = sim.node_mut(i) {
            // The same key everywhere (last write wins), as agents hold the catalog's keys.
            let _ = node.put_shared(now, b"config/cluster", Some(b"idle".to_vec()), None);
            if p.own_state {
                node.track(now, Target::Keyspace);
                let record = format!("{{\"service\":\"web\",\"port\":80,\"node\":{i}}}");
                let _ = node.set_state(now, "service/web", record.into_bytes(), None);
            }
        }
        sim.poke(i, obs);
    }
    let roots = |sim: &Sim, i: u32| {
        sim.node(i)
            .map(|x| (x.shared().tree().root(), x.node_states_root()))
    };
    let converged = |sim: &Sim| {
        let first = roots(sim, 0);
        (1..n).all(|i| roots(sim, i) == first)
    };
    let t0 = sim.now();
    let mut t = t0;
    let mut converged_period = None;
    for k in 1..=CONVERGE_PERIODS {
        t = t + period;
        sim.run_until(t, obs);
        if converged(&sim) {
            converged_period = Some(k);
            break;
        }
    }
    t = t + period * p.settle;
    sim.run_until(t, obs);

    let before = sent(&sim, n);
    t = t + period * p.periods;
    sim.run_until(t, obs);
    let after = sent(&sim, n);

    let per = f64::from(n) * f64::from(p.periods);
    let rate = |x: u64| round3(x as f64 / per);
    let cost = after.sockets.since(&before.sockets);
    let mut by_type = BTreeMap::new();
    let mut messages = 0;
    for code in 0..32u8 {
        let d = after.messages[code as usize] - before.messages[code as usize];
        messages += d;
        if let (Some(kind), true) = (MessageType::from_code(code), d > 0) {
            by_type.insert(kind.as_str().to_string(), rate(d));
        }
    }
    Ok(IdleReport {
        nodes: n,
        profile: p.profile.clone(),
        period_seconds: period.as_secs_f64(),
        own_state: p.own_state,
        converged_period,
        periods: p.periods,
        messages: rate(messages),
        messages_by_type: by_type,
        datagrams: rate(cost.datagrams),
        frames: rate(cost.frames),
        connections: rate(cost.connections),
        payload_bytes: rate(cost.payload_bytes),
        packets: rate(cost.packets),
        wire_bytes: rate(cost.wire_bytes),
        wire_bytes_per_second: round3(cost.wire_bytes as f64 / per / period.as_secs_f64()),
        state_rounds: rate(after.rounds - before.rounds),
        syncs: rate(after.syncs - before.syncs),
        wall_seconds: (!p.no_wall_clock).then(|| round3(started.elapsed().as_secs_f64())),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}
