//! A convergence calculator: what an operator plans a cluster with, measured by running the
//! real protocol in the simulator at the cluster's size and loss, over several seeds.
//!
//! * Convergence of an update: one write to a node's own state, timed until half, 99 % and
//!   every node holds it (the `state` scenario, timed to a twentieth of a round).
//! * Failure detection and false positives: 1 % of the nodes crash after a warm-up (the
//!   `swim` scenario), at the same loss.
//! * Bandwidth per node: state exchanges while an update spreads and in steady state, plus
//!   the membership protocol's steady traffic.
//! * With a target time: for each fanout from 1 to 6, the rounds its p99 needs; the longest
//!   interval that fits the target in those rounds; then, cheapest predicted first, each pair
//!   is run at full seeds (its interval shortened while it misses) until no remaining pair is
//!   predicted cheaper than the cheapest that met the target.

use crate::parallel::par_map;
use crate::scenario::state::{self, StateParams, StateReport};
use crate::scenario::swim::{self, SwimParams, SwimReport};
use grapevine_core::Config;
use serde::Serialize;
use std::time::Duration;

/// What to plan for.
#[derive(Clone, Debug)]
pub struct TuneParams {
    /// Cluster size.
    pub nodes: u32,
    /// Datagram loss probability.
    pub loss: f64,
    /// Configuration profile.
    pub profile: String,
    /// State fanout (the profile's if none).
    pub fanout: Option<usize>,
    /// State interval (the profile's if none).
    pub interval: Option<Duration>,
    /// The convergence time to meet (p99 over seeds of the time until every node holds an
    /// update), if a suggestion is wanted.
    pub target: Option<Duration>,
    /// Seeds for the convergence and detection figures.
    pub seeds: u64,
    /// The first seed.
    pub seed: u64,
    /// Simultaneous runs.
    pub jobs: usize,
}

/// Median and p99 (nearest rank) over seeds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// 99th percentile by nearest rank (with fewer than 100 seeds, the largest).
    pub p99: f64,
}

/// Time for an update to reach a share of the nodes.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Reach {
    /// In seconds.
    pub seconds: Spread,
    /// In rounds (exchanges per node).
    pub rounds: Spread,
}

/// How long an update takes to spread, at one setting.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Convergence {
    /// Members each node exchanges with per round.
    pub fanout: usize,
    /// Seconds per round.
    pub interval_seconds: f64,
    /// To half the nodes.
    pub half: Reach,
    /// To 99 % of the nodes.
    pub p99_nodes: Reach,
    /// To every node.
    pub all: Reach,
    /// Runs in which some node never got the update within the run (counted, not timed).
    pub unconverged_runs: u64,
    /// State bytes sent per node per second while the update spreads (median).
    pub spreading_bytes_per_second: f64,
    /// State bytes sent per node per second in steady state (median).
    pub steady_bytes_per_second: f64,
}

/// Failure detection at the cluster's size and loss.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Detection {
    /// Nodes crashed per run.
    pub crashed: u32,
    /// Crash to the first suspicion, seconds (median over seeds of each run's mean).
    pub first_suspicion_seconds: Spread,
    /// Crash to every live node marking it dead, seconds (median of means; p99 of maxima).
    pub dead_everywhere_seconds: Spread,
    /// Live nodes marked dead by anyone, over all runs.
    pub false_positives: u64,
    /// Suspicions of live nodes, over all runs.
    pub false_suspicions: u64,
    /// Node-hours simulated, over all runs.
    pub node_hours: f64,
    /// False positives per node-hour.
    pub false_positives_per_node_hour: f64,
    /// Membership protocol bytes per node per second in steady state (median).
    pub membership_bytes_per_second: f64,
}

/// One candidate of the search for a target.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Candidate {
    /// Fanout.
    pub fanout: usize,
    /// p99 rounds to every node, measured at the base interval.
    pub rounds_p99: f64,
    /// The longest interval that fits the target in those rounds, seconds.
    pub interval_seconds: f64,
    /// Steady state bytes per node per second at that interval.
    pub steady_bytes_per_second: f64,
}

/// One setting run at full seeds while confirming.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Trial {
    /// Fanout.
    pub fanout: usize,
    /// Interval, seconds.
    pub interval_seconds: f64,
    /// p99 over seeds of the time to every node, seconds.
    pub p99_seconds: f64,
    /// Steady state bytes per node per second.
    pub steady_bytes_per_second: f64,
    /// Whether every run reached every node within the target.
    pub meets_target: bool,
}

/// The suggested setting and its confirmation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Suggestion {
    /// The target, seconds.
    pub target_seconds: f64,
    /// Every fanout tried.
    pub candidates: Vec<Candidate>,
    /// The settings run to confirm, in order.
    pub trials: Vec<Trial>,
    /// The setting, run at full seeds: it meets the target if `meets_target`.
    pub confirmed: Convergence,
    /// Whether its p99 time to every node is within the target.
    pub meets_target: bool,
}

/// The plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TuneReport {
    /// Cluster size.
    pub nodes: u32,
    /// Loss.
    pub loss: f64,
    /// Profile.
    pub profile: String,
    /// Seeds per figure.
    pub seeds: u64,
    /// At the given (or profile's) fanout and interval.
    pub convergence: Convergence,
    /// Failure detection.
    pub detection: Detection,
    /// Steady bytes per node per second, state and membership together.
    pub steady_total_bytes_per_second: f64,
    /// With `--target`: the cheapest fanout and interval that meet it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<Suggestion>,
}

/// Median and nearest-rank p99 of some numbers (zeros if none).
pub fn spread(v: &[f64]) -> Spread {
    if v.is_empty() {
        return Spread {
            median: 0.0,
            p99: 0.0,
        };
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    let rank = ((0.99 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Spread {
        median: round3(median),
        p99: round3(s[rank - 1]),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How many runs a tune makes, for a progress bar.
pub fn runs(p: &TuneParams) -> u64 {
    let detection_seeds = p.seeds.div_ceil(2);
    p.seeds
        + detection_seeds
        + if p.target.is_some() {
            6 * 3 + p.seeds
        } else {
            0
        }
}

fn state_params(
    p: &TuneParams,
    fanout: Option<usize>,
    interval: Option<Duration>,
    seed: u64,
) -> StateParams {
    StateParams {
        nodes: p.nodes,
        profile: p.profile.clone(),
        fanout,
        interval,
        loss: p.loss,
        seed,
        no_wall_clock: true,
        ..StateParams::default()
    }
}

/// Runs the state scenario over `seeds` seeds and sums it up.
fn convergence(
    p: &TuneParams,
    fanout: Option<usize>,
    interval: Option<Duration>,
    seeds: u64,
    tick: &(dyn Fn() + Sync),
) -> Result<Convergence, String> {
    let list: Vec<StateParams> = (p.seed..p.seed + seeds)
        .map(|s| state_params(p, fanout, interval, s))
        .collect();
    let reports: Vec<StateReport> = par_map(&list, p.jobs, state::run, tick)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let first = reports.first().ok_or("no seeds")?;
    let round = first.round_seconds;
    let reach = |f: fn(&StateReport) -> Option<f64>| {
        let secs: Vec<f64> = reports.iter().filter_map(f).collect();
        let rounds: Vec<f64> = secs.iter().map(|s| s / round).collect();
        Reach {
            seconds: spread(&secs),
            rounds: spread(&rounds),
        }
    };
    let per_sec = |f: fn(&StateReport) -> f64| {
        round3(spread(&reports.iter().map(f).collect::<Vec<_>>()).median / round)
    };
    Ok(Convergence {
        fanout: first.fanout,
        interval_seconds: round,
        half: reach(|r| r.seconds_to_half),
        p99_nodes: reach(|r| r.seconds_to_99),
        all: reach(|r| r.seconds_to_all),
        unconverged_runs: reports
            .iter()
            .filter(|r| r.seconds_to_all.is_none())
            .count() as u64,
        spreading_bytes_per_second: per_sec(|r| r.bytes_per_node_per_round),
        steady_bytes_per_second: per_sec(|r| r.steady_bytes_per_node_per_round),
    })
}

fn detection(p: &TuneParams, tick: &(dyn Fn() + Sync)) -> Result<Detection, String> {
    let config =
        Config::profile(&p.profile).ok_or_else(|| format!("unknown profile {:?}", p.profile))?;
    let period = config.detection.probe_interval.as_secs_f64();
    // Long enough for the 20 s warm-up, the longest suspicion timeout and ten periods more.
    let log_n = f64::from(p.nodes.max(10)).log10();
    let max_timeout =
        f64::from(config.membership.suspicion_mult * config.membership.suspicion_max_timeout_mult)
            * log_n;
    let periods = (20.0 / period).ceil() as u32 + max_timeout.ceil() as u32 + 10;
    let crashed = (p.nodes / 100).max(1);
    let seeds = p.seeds.div_ceil(2);
    let list: Vec<SwimParams> = (p.seed..p.seed + seeds)
        .map(|seed| SwimParams {
            nodes: p.nodes,
            seed,
            loss: p.loss,
            periods,
            crash: crashed,
            profile: p.profile.clone(),
            no_wall_clock: true,
            ..SwimParams::default()
        })
        .collect();
    let reports: Vec<SwimReport> = par_map(&list, p.jobs, swim::run, tick)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let secs = |v: Vec<f64>| v.into_iter().map(|x| x * period).collect::<Vec<_>>();
    let first = secs(
        reports
            .iter()
            .filter_map(|r| r.detect_first_mean_periods)
            .collect(),
    );
    let all_mean = secs(
        reports
            .iter()
            .filter_map(|r| r.detect_all_mean_periods)
            .collect(),
    );
    let all_max = secs(
        reports
            .iter()
            .filter_map(|r| r.detect_all_max_periods)
            .collect(),
    );
    let false_positives = reports.iter().map(|r| r.false_positives).sum::<u64>();
    let node_hours =
        reports.len() as f64 * f64::from(p.nodes - crashed) * f64::from(periods) * period / 3600.0;
    Ok(Detection {
        crashed,
        first_suspicion_seconds: spread(&first),
        dead_everywhere_seconds: Spread {
            median: spread(&all_mean).median,
            p99: spread(&all_max).p99,
        },
        false_positives,
        false_suspicions: reports.iter().map(|r| r.false_suspicions).sum(),
        node_hours: round3(node_hours),
        false_positives_per_node_hour: false_positives as f64 / node_hours,
        membership_bytes_per_second: round3(
            spread(
                &reports
                    .iter()
                    .map(|r| r.bytes_per_node_per_period)
                    .collect::<Vec<_>>(),
            )
            .median
                / period,
        ),
    })
}

/// Plans the cluster.
pub fn run(p: &TuneParams, tick: &(dyn Fn() + Sync)) -> Result<TuneReport, String> {
    if p.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let conv = convergence(p, p.fanout, p.interval, p.seeds, tick)?;
    let det = detection(p, tick)?;
    let suggestion = match p.target {
        None => None,
        Some(target) => Some(suggest(p, target, &conv, tick)?),
    };
    Ok(TuneReport {
        nodes: p.nodes,
        loss: p.loss,
        profile: p.profile.clone(),
        seeds: p.seeds,
        steady_total_bytes_per_second: round3(
            conv.steady_bytes_per_second + det.membership_bytes_per_second,
        ),
        convergence: conv,
        detection: det,
        suggestion,
    })
}

/// The fanouts searched.
const FANOUTS: std::ops::RangeInclusive<usize> = 1..=6;

fn suggest(
    p: &TuneParams,
    target: Duration,
    base: &Convergence,
    tick: &(dyn Fn() + Sync),
) -> Result<Suggestion, String> {
    let t = target.as_secs_f64();
    let base_interval = Duration::from_secs_f64(base.interval_seconds);
    let mut candidates = Vec::new();
    for f in FANOUTS {
        let c = convergence(p, Some(f), Some(base_interval), 3, tick)?;
        if c.unconverged_runs > 0 || c.all.rounds.p99 <= 0.0 {
            continue;
        }
        // Rounds stay about the same when the interval changes (links are much faster than
        // a round), so the time scales with the interval; the run below checks it.
        let interval = ((t / c.all.rounds.p99) * 100.0).floor() / 100.0;
        if interval < 0.01 {
            continue;
        }
        candidates.push(Candidate {
            fanout: f,
            rounds_p99: c.all.rounds.p99,
            interval_seconds: interval,
            steady_bytes_per_second: round3(
                c.steady_bytes_per_second * base.interval_seconds / interval,
            ),
        });
    }
    if candidates.is_empty() {
        return Err("no fanout from 1 to 6 converged in every run".into());
    }
    // Confirm candidates, cheapest predicted first, at full seeds, shortening a candidate's
    // interval by a tenth while it misses (three tries). Shortening raises its cost, so go
    // on to the next candidate while its predicted cost is below the best confirmed one.
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        a.steady_bytes_per_second
            .total_cmp(&b.steady_bytes_per_second)
    });
    let mut best: Option<Convergence> = None;
    let mut last = None;
    let mut trials = Vec::new();
    for (i, cand) in order.iter().enumerate() {
        if best
            .as_ref()
            .is_some_and(|b| b.steady_bytes_per_second <= cand.steady_bytes_per_second)
        {
            break;
        }
        let mut interval = cand.interval_seconds;
        for attempt in 0..4 {
            let c = convergence(
                p,
                Some(cand.fanout),
                Some(Duration::from_secs_f64(interval)),
                p.seeds,
                if i == 0 && attempt == 0 { tick } else { &|| {} },
            )?;
            let meets = c.unconverged_runs == 0 && c.all.seconds.p99 <= t;
            trials.push(Trial {
                fanout: c.fanout,
                interval_seconds: c.interval_seconds,
                p99_seconds: c.all.seconds.p99,
                steady_bytes_per_second: c.steady_bytes_per_second,
                meets_target: meets,
            });
            if meets {
                if best
                    .as_ref()
                    .is_none_or(|b| c.steady_bytes_per_second < b.steady_bytes_per_second)
                {
                    best = Some(c);
                }
                break;
            }
            last = Some(c);
            interval = (interval * 0.9 * 100.0).floor() / 100.0;
            if interval < 0.01 {
                break;
            }
        }
    }
    let meets_target = best.is_some();
    let confirmed = best.or(last).ok_or("no candidate could be run")?;
    Ok(Suggestion {
        target_seconds: t,
        candidates,
        trials,
        confirmed,
        meets_target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_nearest_rank() {
        let s = spread(&[5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.p99), (3.0, 5.0));
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = spread(&v);
        assert_eq!((s.median, s.p99), (100.5, 198.0));
    }
}
