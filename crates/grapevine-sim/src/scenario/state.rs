//! `grapevine sim state`: the real protocol spreading state. A cluster joins through one
//! seed; then writes are made, each both to the writer's own per-node state and to a shared
//! key (the same few shared keys, so writes contend and the policy settles them), and the
//! run measures the rounds until every live node holds identical state, the state bytes per
//! node per round, and the writes lost.
//!
//! With `--partition-at R --heal-at R2` (rounds counted from the first write), the cluster
//! splits into halves at round R, half of the writes are made on each side during the
//! split, and convergence is counted from the heal.

use crate::sim::{NoObserver, Sim};
use grapevine_core::state::keyspace::Value;
use grapevine_core::state::reconcile::Mode;
use grapevine_core::Detector;
use rand::Rng;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Parameters of a `state` run.
#[derive(Clone, Debug)]
pub struct StateParams {
    /// Cluster size.
    pub nodes: u32,
    /// The configuration profile the nodes run (`lan`, `wan`, `local`).
    pub profile: String,
    /// Members each node exchanges with per round (the profile's if none).
    pub fanout: Option<usize>,
    /// The time between a node's exchanges (the profile's if none).
    pub interval: Option<Duration>,
    /// Push, pull or push-pull.
    pub mode: Mode,
    /// Writes made (each to a per-node key and a shared key).
    pub writes: u32,
    /// Distinct shared keys the writes go to.
    pub shared_keys: u32,
    /// Datagram loss probability.
    pub loss: f64,
    /// Round (from the first write) at which the cluster splits in halves.
    pub partition_at: Option<u32>,
    /// Round at which it heals.
    pub heal_at: Option<u32>,
    /// Rounds to run at most after the writes (or the heal).
    pub rounds: u32,
    /// Each node's cap on state traffic, bytes per second.
    pub bandwidth: Option<u64>,
    /// The failure detector (phi-accrual adds heartbeats to every node's state).
    pub detector: Detector,
    /// Start from a cluster where no node holds state (the first write spreads by push alone,
    /// as empty nodes open no exchanges); by default every node holds state first.
    pub cold: bool,
    /// RNG seed.
    pub seed: u64,
    /// Leave `wall_seconds` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for StateParams {
    fn default() -> Self {
        StateParams {
            nodes: 1000,
            profile: "lan".into(),
            fanout: None,
            interval: None,
            mode: Mode::PushPull,
            writes: 1,
            shared_keys: 4,
            loss: 0.0,
            partition_at: None,
            heal_at: None,
            rounds: 60,
            bandwidth: None,
            detector: Detector::Swim,
            cold: false,
            seed: 1,
            no_wall_clock: false,
        }
    }
}

/// What a `state` run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StateReport {
    /// Cluster size.
    pub nodes: u32,
    /// The configuration profile.
    pub profile: String,
    /// Partners per round.
    pub fanout: usize,
    /// Seconds between a node's exchanges: one round.
    pub round_seconds: f64,
    /// The mode.
    pub mode: String,
    /// Writes made.
    pub writes: u32,
    /// Loss probability.
    pub loss: f64,
    /// The per-node bandwidth cap, bytes per second, if any.
    pub bandwidth: Option<u64>,
    /// The failure detector.
    pub detector: String,
    /// Whether the cluster held no state before the writes.
    pub cold: bool,
    /// Rounds from the last write (or the heal) until every live node held identical state;
    /// none if that never happened within the run.
    pub rounds_to_converge: Option<u32>,
    /// Fraction of nodes holding the first write, after each round from it.
    pub reached_by_round: Vec<f64>,
    /// Seconds from the first write (or the heal) until half the nodes held it (measured
    /// every twentieth of a round).
    pub seconds_to_half: Option<f64>,
    /// Seconds until 99 % of the nodes held it.
    pub seconds_to_99: Option<f64>,
    /// Seconds until every node held it.
    pub seconds_to_all: Option<f64>,
    /// State bytes sent per node per round while the writes spread.
    pub bytes_per_node_per_round: f64,
    /// State bytes sent per node per round once converged and settled (ten rounds measured,
    /// ten rounds after convergence): none while pings show every member's roots equal.
    pub steady_bytes_per_node_per_round: f64,
    /// Writes whose effect is missing on some node at the end: a per-node value absent, or a
    /// shared key not holding the value its policy (last write wins) picks.
    pub lost_writes: u32,
    /// Wall-clock seconds (left out with `no_wall_clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
}

/// Rounds the warm-up may take at most.
const WARM_ROUNDS: u32 = 60;

/// Steps per round at which the spread of the first write is timed.
const STEPS_PER_ROUND: u32 = 20;

/// Runs the scenario.
pub fn run(p: &StateParams) -> Result<StateReport, String> {
    let started = Instant::now();
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if p.writes == 0 || p.shared_keys == 0 {
        return Err("--writes and --shared-keys must be at least 1".into());
    }
    let mut config = super::profile_config(&p.profile, p.fanout, p.interval)?;
    if let Some(f) = p.fanout {
        config.state.state_fanout = f;
    }
    if let Some(i) = p.interval {
        config.state.state_interval = i;
    }
    if !(0.0..1.0).contains(&p.loss) {
        return Err("--loss must be at least 0 and below 1".into());
    }
    config.state.state_mode = p.mode;
    config.state.state_bandwidth = p.bandwidth;
    config.detection.detector = p.detector;
    let round = config.state.state_interval;
    let n = p.nodes;
    // Membership first: every node must know every other to pick partners.
    let mut sim = super::joined_cluster(p.seed, n, &config, p.loss, 200);

    let partitioned = p.partition_at.is_some();
    // Writers: random; under a partition, alternately in the first and the second half.
    let writers: Vec<u32> = (0..p.writes)
        .map(|j| {
            let w = sim.rng().gen_range(0..n);
            match (partitioned, j % 2) {
                (false, _) => w,
                (true, 0) => w % (n / 2).max(1),
                (true, _) => n / 2 + w % (n - n / 2),
            }
        })
        .collect();
    let mut expected: Vec<(u32, String, Vec<u8>)> = Vec::new();
    let do_write = |sim: &mut Sim, j: u32, w: u32, expected: &mut Vec<(u32, String, Vec<u8>)>| {
        let now = sim.now();
        let value = format!("write-{j}").into_bytes();
        let key = format!("w{j}");
        let shared = format!("shared/{}", j % p.shared_keys).into_bytes();
        if let Some(node) = sim.node_mut(w) {
            let _ = node.set_state(now, &key, value.clone(), None);
            let _ = node.put_shared(now, &shared, Some(value.clone()), None);
        }
        sim.poke(w, &mut NoObserver);
        expected.push((w, key, value));
    };
    let bytes_now = |sim: &Sim| -> u64 {
        (0..n)
            .filter_map(|i| sim.node(i))
            .map(|x| x.stats().state_bytes_out)
            .sum()
    };
    let live: Vec<u32> = (0..n).collect();
    let converged = |sim: &Sim| -> bool {
        let roots = |i: u32| {
            sim.node(i)
                .map(|x| (x.shared().tree().root(), x.node_states_root()))
        };
        let first = roots(live[0]);
        live.iter().all(|&i| roots(i) == first)
    };

    // Warm: every node writes the same shared key, so every node holds state (as agents
    // do) and takes part in rounds; the last write wins everywhere within a few rounds.
    // A node holding no state opens no exchange, so in a cold cluster the first write
    // spreads by push alone.
    if !p.cold {
        let now = sim.now();
        for i in 0..n {
            if let Some(node) = sim.node_mut(i) {
                let _ = node.put_shared(now, b"warm", Some(b"1".to_vec()), None);
            }
            sim.poke(i, &mut NoObserver);
        }
        let mut t = sim.now();
        for _ in 0..WARM_ROUNDS {
            t = t + round;
            sim.run_until(t, &mut NoObserver);
            if converged(&sim) {
                break;
            }
        }
        // Start the measured write at a random moment of a round, as a client would.
        let at = sim.now() + round.mul_f64(sim.rng().gen::<f64>());
        sim.run_until(at, &mut NoObserver);
    }
    let t0 = sim.now();
    let mut reached = Vec::new();
    let first_writer = writers[0];
    let first_key = "w0".to_string();
    let holds_first = |sim: &Sim| -> f64 {
        let name = crate::sim_name(first_writer);
        let now = sim.now();
        let c = live
            .iter()
            .filter(|&&i| {
                sim.node(i)
                    .is_some_and(|x| x.state_value(now, &name, &first_key).is_some())
            })
            .count();
        c as f64 / n as f64
    };

    let (mut spread_bytes, mut spread_rounds) = (0u64, 0u32);
    let mut rounds_to_converge = None;
    let mut t = t0;
    let bytes_start = bytes_now(&sim);
    if !partitioned {
        for (j, &w) in writers.iter().enumerate() {
            do_write(&mut sim, j as u32, w, &mut expected);
        }
    }
    let mut from = t0;
    let (mut to_half, mut to_99, mut to_all) = (None, None, None);
    for r in 0..p.rounds + p.heal_at.unwrap_or(0) {
        if p.partition_at == Some(r) {
            let groups = (0..n).map(|i| u16::from(i >= n / 2)).collect();
            sim.topology.partition(groups);
            // Half the writes on each side, during the split.
            for (j, &w) in writers.iter().enumerate() {
                do_write(&mut sim, j as u32, w, &mut expected);
            }
        }
        if p.heal_at == Some(r) {
            sim.topology.heal();
            from = sim.now();
        }
        let counting = !partitioned || p.heal_at.is_some_and(|h| r >= h);
        if counting {
            // Twenty steps a round, to time the spread finer than whole rounds.
            let step = round / STEPS_PER_ROUND;
            for _ in 0..STEPS_PER_ROUND {
                let at = sim.now() + step;
                sim.run_until(at, &mut NoObserver);
                let f = holds_first(&sim);
                let since = sim.now().saturating_since(from).as_secs_f64();
                for (threshold, slot) in
                    [(0.5, &mut to_half), (0.99, &mut to_99), (1.0, &mut to_all)]
                {
                    if f >= threshold && slot.is_none() {
                        *slot = Some((since * 1e3).round() / 1e3);
                    }
                }
            }
        }
        t = t + round;
        sim.run_until(t, &mut NoObserver);
        if counting {
            reached.push((holds_first(&sim) * 1e4).round() / 1e4);
            if converged(&sim) {
                rounds_to_converge = Some(
                    (sim.now().saturating_since(from).as_secs_f64() / round.as_secs_f64()).round()
                        as u32,
                );
                spread_rounds = r + 1;
                spread_bytes = bytes_now(&sim) - bytes_start;
                break;
            }
        }
    }
    // Steady state: ten rounds, after ten for the last exchanges of the spread to end.
    t = t + round * 10;
    sim.run_until(t, &mut NoObserver);
    let b0 = bytes_now(&sim);
    for _ in 0..10 {
        t = t + round;
        sim.run_until(t, &mut NoObserver);
    }
    let steady = (bytes_now(&sim) - b0) as f64 / f64::from(n) / 10.0;

    // Lost writes: per-node values missing anywhere, shared keys not at the winner.
    let now = sim.now();
    let mut lost = 0u32;
    for (w, key, value) in &expected {
        let name = crate::sim_name(*w);
        if !live.iter().all(|&i| {
            sim.node(i)
                .is_some_and(|x| x.state_value(now, &name, key) == Some(value.as_slice()))
        }) {
            lost += 1;
        }
    }
    for k in 0..p.shared_keys.min(p.writes) {
        let key = format!("shared/{k}").into_bytes();
        let values: Vec<Option<Value>> = live
            .iter()
            .map(|&i| {
                sim.node(i)
                    .and_then(|x| x.shared().get(&key, x.physical_time(now)).cloned())
            })
            .collect();
        // Every node holds the same value, and it is one of the writes to the key.
        let same = values.iter().all(|v| *v == values[0]);
        let known = matches!(&values[0], Some(Value::Lww(l)) if l.value.as_ref().is_some_and(|v| expected.iter().any(|(_, _, e)| e == v)));
        if !same || !known {
            lost += 1;
        }
    }
    let per_round = if spread_rounds > 0 {
        spread_bytes as f64 / f64::from(n) / f64::from(spread_rounds)
    } else {
        0.0
    };
    Ok(StateReport {
        nodes: n,
        profile: p.profile.clone(),
        fanout: config.state.state_fanout,
        round_seconds: round.as_secs_f64(),
        mode: format!("{:?}", p.mode),
        writes: p.writes,
        loss: p.loss,
        bandwidth: p.bandwidth,
        detector: format!("{:?}", p.detector).to_lowercase(),
        cold: p.cold,
        rounds_to_converge,
        reached_by_round: reached,
        seconds_to_half: to_half,
        seconds_to_99: to_99,
        seconds_to_all: to_all,
        bytes_per_node_per_round: (per_round * 10.0).round() / 10.0,
        steady_bytes_per_node_per_round: (steady * 10.0).round() / 10.0,
        lost_writes: lost,
        wall_seconds: (!p.no_wall_clock)
            .then(|| (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    })
}
