//! `grapevine sim spread`: the random phone-call model of epidemic dissemination, apart
//! from the protocol code, fast enough for a million nodes.
//!
//! Synchronous rounds. In each round every node calls `fanout` partners chosen uniformly
//! at random among the others; what it knew at the start of the round decides what flows:
//!
//! * push: an informed caller sends the rumour to each partner;
//! * pull: an uninformed caller asks each partner, and an informed partner answers with it;
//! * push-pull: both, on every call.
//!
//! Each message (a push, a pull request, a pull answer) is lost independently with
//! probability `loss`. Nodes informed during a round act on it from the next. A run ends in
//! the first round after which every node is informed.
//!
//! Costs: `msgs_per_node` counts every message sent until full coverage (calls that carry
//! nothing in push mode are not sent; pull requests are), divided by the number of nodes.
//!
//! Theory, for one partner per round and no loss: push takes log2 N + ln N + O(1) rounds
//! (Pittel, 1987); push-pull log3 N + O(log log N) (Karp, Schindelhauer, Shenker and
//! Vöcking, 2000). The report gives these beside the measurement.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use std::time::Instant;

/// Which way the rumour flows on a call.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Informed callers send.
    Push,
    /// Uninformed callers ask.
    Pull,
    /// Both.
    PushPull,
}

impl Mode {
    /// The mode named `s` (`push`, `pull`, `push-pull`).
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "push" => Ok(Mode::Push),
            "pull" => Ok(Mode::Pull),
            "push-pull" => Ok(Mode::PushPull),
            other => Err(format!("unknown mode {other:?}: push, pull or push-pull")),
        }
    }
}

/// Parameters of a `spread` run.
#[derive(Clone, Debug)]
pub struct SpreadParams {
    /// Number of nodes.
    pub nodes: u32,
    /// Push, pull or push-pull.
    pub mode: Mode,
    /// Partners called per node per round.
    pub fanout: u32,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Independent runs, averaged.
    pub runs: u32,
    /// RNG seed: the same seed gives the same report.
    pub seed: u64,
    /// Leave `wall_seconds` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for SpreadParams {
    fn default() -> Self {
        SpreadParams {
            nodes: 1000,
            mode: Mode::PushPull,
            fanout: 1,
            loss: 0.0,
            runs: 20,
            seed: 1,
            no_wall_clock: false,
        }
    }
}

/// What a `spread` run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpreadReport {
    /// Number of nodes.
    pub nodes: u32,
    /// The mode.
    pub mode: Mode,
    /// Partners per node per round.
    pub fanout: u32,
    /// Message loss probability.
    pub loss: f64,
    /// Runs averaged.
    pub runs: u32,
    /// The seed.
    pub seed: u64,
    /// Rounds until every node is informed: mean over runs.
    pub rounds_mean: f64,
    /// The 99th percentile over runs (nearest rank).
    pub rounds_p99: u32,
    /// The longest run.
    pub rounds_max: u32,
    /// The shortest run.
    pub rounds_min: u32,
    /// Messages sent per node until full coverage, mean over runs.
    pub msgs_per_node: f64,
    /// The leading terms of the known result, for fanout 1 and no loss: log2 N + ln N for
    /// push, log3 N + ln ln N for push-pull (the O(·) terms left out); none otherwise.
    pub theory_rounds: Option<f64>,
    /// Fraction of nodes informed after each round, mean over runs (round 0 is the start):
    /// the epidemic's S-curve.
    pub informed_by_round: Vec<f64>,
    /// Wall-clock seconds (left out with `no_wall_clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
}

/// A run that has not covered every node after this many rounds is reported as such.
const MAX_ROUNDS: u32 = 100_000;

/// Runs the model.
pub fn run(p: &SpreadParams) -> Result<SpreadReport, String> {
    let started = Instant::now();
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if p.fanout == 0 {
        return Err("--fanout must be at least 1".into());
    }
    if !(0.0..1.0).contains(&p.loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    if p.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let mut rounds = Vec::with_capacity(p.runs as usize);
    let mut msgs = 0u64;
    let mut curve: Vec<f64> = Vec::new();
    for r in 0..p.runs {
        let seed = p.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(r);
        let (n, m, informed) = one_run(p, seed)?;
        rounds.push(n);
        msgs += m;
        if curve.len() < informed.len() {
            // Runs that ended earlier stay at full coverage.
            curve.resize(informed.len(), f64::from(r));
        }
        for (i, c) in curve.iter_mut().enumerate() {
            *c += informed.get(i).copied().unwrap_or(1.0);
        }
    }
    let runs = f64::from(p.runs);
    for c in curve.iter_mut() {
        *c /= runs;
    }
    let mut sorted = rounds.clone();
    sorted.sort_unstable();
    let rank = ((0.99 * runs).ceil() as usize).clamp(1, sorted.len()) - 1;
    let n = f64::from(p.nodes);
    let theory_rounds = match (p.mode, p.fanout, p.loss == 0.0) {
        (Mode::Push, 1, true) => Some(n.log2() + n.ln()),
        (Mode::PushPull, 1, true) => Some(n.ln() / 3f64.ln() + n.ln().ln()),
        _ => None,
    };
    Ok(SpreadReport {
        nodes: p.nodes,
        mode: p.mode,
        fanout: p.fanout,
        loss: p.loss,
        runs: p.runs,
        seed: p.seed,
        rounds_mean: round3(rounds.iter().map(|&r| f64::from(r)).sum::<f64>() / runs),
        rounds_p99: sorted[rank],
        rounds_max: sorted[sorted.len() - 1],
        rounds_min: sorted[0],
        msgs_per_node: round3(msgs as f64 / runs / n),
        theory_rounds: theory_rounds.map(round3),
        informed_by_round: curve.into_iter().map(round6).collect(),
        wall_seconds: (!p.no_wall_clock).then(|| round3(started.elapsed().as_secs_f64())),
    })
}

/// One run: rounds to full coverage, messages sent, and the informed fraction per round.
fn one_run(p: &SpreadParams, seed: u64) -> Result<(u32, u64, Vec<f64>), String> {
    let n = p.nodes as usize;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // The round in which each node was informed; NEVER if not yet.
    const NEVER: u32 = u32::MAX;
    let mut at = vec![NEVER; n];
    at[rng.gen_range(0..n)] = 0;
    let mut informed = 1usize;
    let mut msgs = 0u64;
    let mut curve = vec![1.0 / n as f64];
    let lost = |rng: &mut Xoshiro256PlusPlus| p.loss > 0.0 && rng.gen::<f64>() < p.loss;
    // A partner other than `u`, uniformly.
    let partner = |rng: &mut Xoshiro256PlusPlus, u: usize| {
        let v = rng.gen_range(0..n - 1);
        if v >= u {
            v + 1
        } else {
            v
        }
    };
    let mut round = 0u32;
    while informed < n {
        round += 1;
        if round > MAX_ROUNDS {
            return Err(format!(
                "not every node was informed after {MAX_ROUNDS} rounds"
            ));
        }
        for u in 0..n {
            // What u knew at the start of this round.
            let knows = at[u] < round;
            let (push, pull) = match p.mode {
                Mode::Push => (knows, false),
                Mode::Pull => (false, !knows),
                Mode::PushPull => (knows, !knows),
            };
            if !push && !pull {
                continue;
            }
            for _ in 0..p.fanout {
                let v = partner(&mut rng, u);
                msgs += 1;
                if push {
                    if at[v] == NEVER && !lost(&mut rng) {
                        at[v] = round;
                        informed += 1;
                    }
                } else if at[v] < round {
                    // The request went out; an informed partner answers.
                    if lost(&mut rng) {
                        continue;
                    }
                    msgs += 1;
                    if at[u] == NEVER && !lost(&mut rng) {
                        at[u] = round;
                        informed += 1;
                    }
                }
            }
        }
        curve.push(informed as f64 / n as f64);
    }
    Ok((round, msgs, curve))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(nodes: u32, mode: Mode) -> SpreadParams {
        SpreadParams {
            nodes,
            mode,
            runs: 50,
            no_wall_clock: true,
            ..SpreadParams::default()
        }
    }

    #[test]
    fn same_seed_same_report() {
        let p = params(2000, Mode::PushPull);
        assert_eq!(run(&p).unwrap(), run(&p).unwrap());
    }

    #[test]
    fn push_pull_beats_push_and_both_follow_theory() {
        let push = run(&params(10_000, Mode::Push)).unwrap();
        let pp = run(&params(10_000, Mode::PushPull)).unwrap();
        // Pittel: log2 N + ln N + O(1) = 22.5 + O(1) at 10^4.
        let t = push.theory_rounds.unwrap();
        assert!((push.rounds_mean - t).abs() < 2.0, "{push:?}");
        // Karp et al.: log3 N + O(log log N); 8.4 + ln ln N = 10.6 at 10^4.
        let t = pp.theory_rounds.unwrap();
        assert!((pp.rounds_mean - t).abs() < 2.0, "{pp:?}");
        assert!(pp.rounds_max < push.rounds_min);
        // The S-curve starts at one node and ends at all.
        assert_eq!(pp.informed_by_round[0], 1e-4);
        assert_eq!(*pp.informed_by_round.last().unwrap(), 1.0);
    }

    #[test]
    fn loss_slows_but_does_not_stop_the_spread() {
        let clean = run(&params(1000, Mode::PushPull)).unwrap();
        let lossy = run(&SpreadParams {
            loss: 0.2,
            ..params(1000, Mode::PushPull)
        })
        .unwrap();
        assert!(lossy.rounds_mean > clean.rounds_mean);
        assert!(lossy.theory_rounds.is_none());
    }
}
