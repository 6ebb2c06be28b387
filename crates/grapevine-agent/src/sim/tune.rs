//! `grapevine sim tune`: the convergence calculator's command line and its printout.

use super::parse_duration;
use anyhow::{anyhow, Result};
use grapevine_sim::tune::{self, Convergence, Reach, TuneParams, TuneReport};
use std::time::Duration;

/// Options of `grapevine sim tune`.
#[derive(clap::Args, Clone)]
pub struct TuneArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Datagram loss probability, 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    pub profile: String,
    /// Members each node exchanges state with per round [default: the profile's].
    #[arg(long)]
    pub fanout: Option<usize>,
    /// Time between a node's state exchanges, e.g. 500ms [default: the profile's].
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Suggest the fanout and interval that spread an update to every node within this time
    /// (p99 over seeds) at the least steady bandwidth, e.g. 2s.
    #[arg(long, value_parser = parse_duration)]
    pub target: Option<Duration>,
    /// Seeds per figure (detection uses half as many).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// The first seed; the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simultaneous runs [default: the machine's cores]; the output does not depend on it.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the calculator and prints the plan.
pub fn run(a: &TuneArgs) -> Result<()> {
    let params = TuneParams {
        nodes: a.nodes,
        loss: a.loss,
        profile: a.profile.clone(),
        fanout: a.fanout,
        interval: a.interval,
        target: a.target,
        seeds: a.seeds,
        seed: a.seed,
        jobs: super::jobs(a.jobs),
    };
    let bar = super::progress_bar(tune::runs(&params), "tune");
    let report = tune::run(&params, &|| bar.inc(1)).map_err(|e| anyhow!(e));
    bar.finish_and_clear();
    let report = report?;
    if a.json {
        crate::print_out(&(serde_json::to_string_pretty(&report)? + "\n"))
    } else {
        crate::print_out(&text(&report))
    }
}

fn reach_line(what: &str, r: &Reach) -> String {
    format!(
        "  {what:<24} {:>7.2} s {:>7.2} s   {:>5.1} {:>5.1}\n",
        r.seconds.median, r.seconds.p99, r.rounds.median, r.rounds.p99
    )
}

fn convergence_text(c: &Convergence) -> String {
    let mut s = format!(
        "  fanout {}, a round every {} s\n  {:<24} {:>9} {:>9}   {:>5} {:>5}   (over seeds)\n",
        c.fanout, c.interval_seconds, "an update reaches", "median", "p99", "rounds", "p99"
    );
    s += &reach_line("half the nodes", &c.half);
    s += &reach_line("99 % of the nodes", &c.p99_nodes);
    s += &reach_line("every node", &c.all);
    if c.unconverged_runs > 0 {
        s += &format!(
            "  {} runs did not reach every node in 60 rounds\n",
            c.unconverged_runs
        );
    }
    s += &format!(
        "  state traffic per node: {:.0} B/s while spreading, {:.0} B/s steady\n",
        c.spreading_bytes_per_second, c.steady_bytes_per_second
    );
    s
}

/// The plan as an operator reads it.
pub fn text(r: &TuneReport) -> String {
    let mut s = format!(
        "{} nodes, {} % loss, profile {}, {} seeds\n\nConvergence of one write\n",
        r.nodes,
        r.loss * 100.0,
        r.profile,
        r.seeds
    );
    s += &convergence_text(&r.convergence);
    let d = &r.detection;
    s += &format!(
        "\nFailure detection ({} crashed nodes a run)\n  first suspicion          {:>7.2} s median, {:.2} s p99\n  dead on every node       {:>7.2} s median, {:.2} s p99 (slowest node)\n  false positives          {} in {:.1} node-hours ({:.3} per node-hour); {} suspicions of live nodes\n  membership traffic       {:.0} B/s per node\n",
        d.crashed,
        d.first_suspicion_seconds.median,
        d.first_suspicion_seconds.p99,
        d.dead_everywhere_seconds.median,
        d.dead_everywhere_seconds.p99,
        d.false_positives,
        d.node_hours,
        d.false_positives_per_node_hour,
        d.false_suspicions,
        d.membership_bytes_per_second
    );
    s += &format!(
        "\nSteady bandwidth per node: {:.0} B/s (state and membership)\n",
        r.steady_total_bytes_per_second
    );
    if let Some(g) = &r.suggestion {
        s += &format!(
            "\nTo reach every node within {} s (p99), at the least steady bandwidth:\n  {:>6} {:>12} {:>10} {:>14}\n",
            g.target_seconds, "fanout", "p99 rounds", "interval", "steady B/s"
        );
        for c in &g.candidates {
            s += &format!(
                "  {:>6} {:>12.1} {:>8.2} s {:>14.0}\n",
                c.fanout, c.rounds_p99, c.interval_seconds, c.steady_bytes_per_second
            );
        }
        s += "Run at full seeds, cheapest first:\n";
        for t in &g.trials {
            s += &format!(
                "  fanout {} every {:.2} s: p99 {:.2} s, {:.0} B/s steady{}\n",
                t.fanout,
                t.interval_seconds,
                t.p99_seconds,
                t.steady_bytes_per_second,
                if t.meets_target {
                    ", meets"
                } else {
                    ", misses"
                }
            );
        }
        s += &format!(
            "Suggested: --fanout {} --interval {}ms. Run at that setting:\n",
            g.confirmed.fanout,
            (g.confirmed.interval_seconds * 1000.0).round()
        );
        s += &convergence_text(&g.confirmed);
        s += if g.meets_target {
            "  meets the target.\n"
        } else {
            "  MISSES the target even at the shortest interval tried.\n"
        };
    }
    s
}
