//! `grapevine sim aggregate`: the real protocol aggregating one metric by push-sum. A
//! cluster joins through one seed; then every node contributes a value (seeded, uniform in
//! [0, 100)) and the run measures, round by round, the worst relative error of any live
//! node's average, sum and count against the truth. With `--leave-at R`, a share of the
//! nodes leave gracefully at round R, and the run measures the rounds until every
//! remaining node reports (settled or not) the remaining members' aggregates again.

use crate::sim::{NoObserver, Sim};
use grapevine_core::{Config, Estimate};
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// Parameters of an `aggregate` run.
#[derive(Clone, Debug)]
pub struct AggregateParams {
    /// Cluster size.
    pub nodes: u32,
    /// Rounds to run (from the contributions).
    pub rounds: u32,
    /// Round at which `leave_fraction` of the nodes leave.
    pub leave_at: Option<u32>,
    /// Share of nodes that leave.
    pub leave_fraction: f64,
    /// Rounds per aggregation epoch.
    pub epoch_rounds: u32,
    /// Datagram loss probability.
    pub loss: f64,
    /// The error the run counts rounds to.
    pub epsilon: f64,
    /// RNG seed.
    pub seed: u64,
    /// Leave `wall_seconds` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for AggregateParams {
    fn default() -> Self {
        AggregateParams {
            nodes: 1000,
            rounds: 60,
            leave_at: None,
            leave_fraction: 0.1,
            epoch_rounds: Config::lan().aggregate.aggregate_epoch_rounds,
            loss: 0.0,
            epsilon: 1e-3,
            seed: 1,
            no_wall_clock: false,
        }
    }
}

/// One round's worst errors over the live nodes.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RoundError {
    /// Round, counted from the contributions.
    pub round: u32,
    /// Largest relative error of a running (current epoch) average.
    pub average: f64,
    /// Of a running sum.
    pub sum: f64,
    /// Of a running count.
    pub count: f64,
    /// Largest relative error of the reported estimate (the last settled epoch's, once
    /// there is one) of the average, sum and count together.
    pub reported: f64,
}

/// What an `aggregate` run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AggregateReport {
    /// Cluster size.
    pub nodes: u32,
    /// Loss probability.
    pub loss: f64,
    /// Rounds per epoch.
    pub epoch_rounds: u32,
    /// The error threshold.
    pub epsilon: f64,
    /// The first round after which every node's running average, sum and count were all
    /// within `epsilon`.
    pub rounds_to_epsilon: Option<u32>,
    /// log2 N + log2 1/ε, the scale Kempe et al. prove the rounds grow with.
    pub log2_n_plus_log2_inv_eps: f64,
    /// Nodes that left.
    pub left: u32,
    /// Rounds after the leave until every remaining node reported the remaining members'
    /// aggregates within `epsilon`.
    pub rounds_to_recover: Option<u32>,
    /// Per round.
    pub errors: Vec<RoundError>,
    /// Aggregation datagrams per node per round.
    pub messages_per_node_per_round: f64,
    /// Wall-clock seconds (left out with `no_wall_clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
}

fn rel(estimate: Option<f64>, truth: f64) -> f64 {
    match estimate {
        Some(e) if truth != 0.0 => ((e - truth) / truth).abs(),
        Some(e) => e.abs(),
        None => f64::INFINITY,
    }
}

/// The worst of an estimate's three relative errors.
fn worst(e: &Estimate, avg: f64, sum: f64, count: f64) -> [f64; 3] {
    [rel(e.average, avg), rel(e.sum, sum), rel(e.count, count)]
}

/// Rounds to 4 significant digits, so reports stay readable.
fn sig(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let d = 3 - x.abs().log10().floor() as i32;
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// Runs the scenario.
pub fn run(p: &AggregateParams) -> Result<AggregateReport, String> {
    let started = Instant::now();
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if !(0.0..1.0).contains(&p.leave_fraction) {
        return Err("--leave-fraction must be in [0, 1)".into());
    }
    let mut config = Config::lan();
    config.aggregate.aggregate_epoch_rounds = p.epoch_rounds;
    config.validate().map_err(|e| e.to_string())?;
    let round = config.aggregate.aggregate_interval;
    let n = p.nodes;
    // Membership first: every node must know every other to pick partners.
    let mut sim = super::joined_cluster(p.seed, n, &config, p.loss, 400);
    let obs = &mut NoObserver;
    let mut t = sim.now();

    let values: Vec<f64> = (0..n).map(|_| sim.rng().gen_range(0.0..100.0)).collect();
    for i in 0..n {
        if let Some(node) = sim.node_mut(i) {
            node.contribute("load", Some(values[i as usize]))
                .map_err(|e| e.to_string())?;
        }
    }
    let sent = |sim: &Sim| -> u64 {
        (0..n)
            .filter_map(|i| sim.node(i))
            .map(|x| x.stats().messages_out[grapevine_core::wire::MessageType::Aggregate as usize])
            .sum()
    };
    let sent0 = sent(&sim);
    let mut live: Vec<u32> = (0..n).collect();
    let truth = |live: &[u32]| {
        let sum: f64 = live.iter().map(|&i| values[i as usize]).sum();
        let count = live.len() as f64;
        (sum / count, sum, count)
    };
    let mut errors = Vec::new();
    let mut rounds_to_epsilon = None;
    let mut rounds_to_recover = None;
    let mut left = 0;
    for r in 1..=p.rounds {
        if p.leave_at == Some(r - 1) {
            let k = ((f64::from(n) * p.leave_fraction).round() as usize).min(live.len() - 1);
            let now = sim.now();
            // Any k nodes but the anchor's role is taken by whoever is lowest afterwards.
            let leaving: Vec<u32> = live.iter().rev().take(k).copied().collect();
            for &i in &leaving {
                if let Some(node) = sim.node_mut(i) {
                    node.leave(now);
                }
                sim.poke(i, obs);
            }
            live.retain(|i| !leaving.contains(i));
            left = leaving.len() as u32;
            // A left node goes quiet a moment later, as the library's does.
            sim.run_until(now + config.membership.gossip_interval * 2, obs);
            for &i in &leaving {
                sim.crash(i);
            }
        }
        t = t + round;
        sim.run_until(t.max(sim.now()), obs);
        let (avg, sum, count) = truth(&live);
        let mut e = [0f64; 3];
        let mut reported = 0f64;
        for &i in &live {
            let node = sim.node(i).ok_or("a live node is missing")?;
            let cur = node.aggregate_current("load");
            let w = cur.map_or([f64::INFINITY; 3], |c| worst(&c, avg, sum, count));
            for k in 0..3 {
                e[k] = e[k].max(w[k]);
            }
            let rep = node.aggregate("load");
            let w = rep.map_or([f64::INFINITY; 3], |c| worst(&c, avg, sum, count));
            reported = reported.max(w.into_iter().fold(0.0, f64::max));
        }
        errors.push(RoundError {
            round: r,
            average: sig(e[0]),
            sum: sig(e[1]),
            count: sig(e[2]),
            reported: sig(reported),
        });
        let all = e.into_iter().fold(0.0, f64::max);
        if rounds_to_epsilon.is_none() && p.leave_at.is_none_or(|l| r <= l) && all < p.epsilon {
            rounds_to_epsilon = Some(r);
        }
        if let Some(l) = p.leave_at {
            if r > l && rounds_to_recover.is_none() && reported < p.epsilon {
                rounds_to_recover = Some(r - l);
            }
        }
    }
    let msgs = (sent(&sim) - sent0) as f64 / f64::from(n) / f64::from(p.rounds.max(1));
    Ok(AggregateReport {
        nodes: n,
        loss: p.loss,
        epoch_rounds: p.epoch_rounds,
        epsilon: p.epsilon,
        rounds_to_epsilon,
        log2_n_plus_log2_inv_eps: sig(f64::from(n).log2() + (1.0 / p.epsilon).log2()),
        left,
        rounds_to_recover,
        errors,
        messages_per_node_per_round: sig(msgs),
        wall_seconds: (!p.no_wall_clock)
            .then(|| (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    })
}
