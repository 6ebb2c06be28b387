//! `grapevine sim`: the scenarios' command line, and the instruments built on them (sweep,
//! tune, report).

mod plot;
pub mod report;
pub mod sweep;
pub mod tune;

use anyhow::{anyhow, Result};
use clap::{Subcommand, ValueEnum};
use grapevine_core::state::reconcile::Mode as FlowMode;
use grapevine_core::{Detector, ProbeSelection};
use grapevine_sim::scenario::aggregate;
use grapevine_sim::scenario::idle::{self, IdleParams};
use grapevine_sim::scenario::merkle::{self, MerkleParams};
use grapevine_sim::scenario::rumor::{self, RumorParams, Variant};
use grapevine_sim::scenario::spread::{self, SpreadParams};
use grapevine_sim::scenario::state::{self, StateParams};
use grapevine_sim::scenario::swim::{self, SwimParams};

/// Runs `grapevine sim ...` and prints its report.
pub fn run(command: SimCommand) -> Result<()> {
    match command {
        SimCommand::Scenario(s) => {
            let json = s.opts().json;
            crate::print_report(&s.report()?, json)
        }
        SimCommand::Sweep(a) => sweep::run(&a),
        SimCommand::Tune(a) => tune::run(&a),
        SimCommand::Report(a) => report::run(&a),
    }
}

/// Simultaneous runs: the given number, or one per core.
pub fn jobs(given: Option<usize>) -> usize {
    given
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// A progress bar on standard error for `len` runs (hidden when that is not a terminal).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} runs, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Parses a duration as the agent's configuration writes them: `250ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::agent::services::duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration such as 250ms, 2s or 1m"))
}

impl Scenario {
    /// The options every scenario shares.
    pub fn opts(&self) -> &RunOpts {
        match self {
            Scenario::Swim(a) => &a.run,
            Scenario::Spread(a) => &a.run,
            Scenario::Rumor(a) => &a.run,
            Scenario::Merkle(a) => &a.run,
            Scenario::State(a) => &a.run,
            Scenario::Aggregate(a) => &a.run,
            Scenario::Idle(a) => &a.run,
        }
    }

    /// Runs the scenario and returns its report as JSON.
    pub fn report(self) -> Result<serde_json::Value> {
        self.run()?.to_json()
    }

    /// Runs the scenario and returns its typed report.
    pub fn run(self) -> Result<Report> {
        match self {
            Scenario::Swim(a) => {
                let params = SwimParams {
                    nodes: a.nodes,
                    seed: a.run.seed,
                    loss: a.loss,
                    periods: a.periods,
                    crash: a.crash,
                    partition_at: a.partition_at,
                    heal_at: a.heal_at,
                    slow: a.slow,
                    indirect: a.indirect,
                    no_suspicion: a.no_suspicion,
                    no_lifeguard: a.no_lifeguard,
                    no_fallback: a.no_fallback,
                    probe_selection: match a.probe_selection {
                        Selection::RoundRobin => ProbeSelection::RoundRobin,
                        Selection::Random => ProbeSelection::Random,
                    },
                    detector: detector(a.detector),
                    fanout: a.fanout,
                    interval: a.interval,
                    profile: a.profile,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = swim::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Swim(report))
            }
            Scenario::Spread(a) => {
                let params = SpreadParams {
                    nodes: a.nodes,
                    mode: spread::Mode::parse(&a.mode).map_err(|e| anyhow!(e))?,
                    fanout: a.fanout,
                    loss: a.loss,
                    runs: a.runs,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = spread::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Spread(report))
            }
            Scenario::Rumor(a) => {
                let params = RumorParams {
                    nodes: a.nodes,
                    variant: Variant::parse(&a.variant).map_err(|e| anyhow!(e))?,
                    k: a.k,
                    runs: a.runs,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = rumor::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Rumor(report))
            }
            Scenario::Merkle(a) => {
                let params = MerkleParams {
                    keys: a.keys,
                    diff: a.diff,
                    mode: match a.mode.as_str() {
                        "push" => FlowMode::Push,
                        "pull" => FlowMode::Pull,
                        "push-pull" => FlowMode::PushPull,
                        other => {
                            return Err(anyhow!("unknown mode {other:?}: push, pull or push-pull"))
                        }
                    },
                    value_len: a.value_len,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = merkle::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Merkle(report))
            }
            Scenario::State(a) => {
                let params = StateParams {
                    nodes: a.nodes,
                    profile: a.profile,
                    fanout: a.fanout,
                    interval: a.interval,
                    mode: flow_mode(&a.mode)?,
                    writes: a.writes,
                    shared_keys: a.shared_keys,
                    loss: a.loss,
                    partition_at: a.partition_at,
                    heal_at: a.heal_at,
                    rounds: a.rounds,
                    bandwidth: a.bandwidth,
                    detector: detector(a.detector),
                    cold: a.cold,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = state::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::State(report))
            }
            Scenario::Aggregate(a) => {
                let params = aggregate::AggregateParams {
                    nodes: a.nodes,
                    rounds: a.rounds,
                    leave_at: a.leave_at,
                    leave_fraction: a.leave_fraction,
                    epoch_rounds: a.epoch_rounds,
                    loss: a.loss,
                    epsilon: a.epsilon,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = aggregate::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Aggregate(report))
            }
            Scenario::Idle(a) => {
                let params = IdleParams {
                    nodes: a.nodes,
                    profile: a.profile,
                    own_state: !a.no_own_state,
                    settle: a.settle,
                    periods: a.periods,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = idle::run(&params).map_err(|e| anyhow!(e))?;
                Ok(Report::Idle(report))
            }
        }
    }
}

/// What `grapevine sim` runs: one scenario, or an instrument built on them.
#[derive(Subcommand)]
pub enum SimCommand {
    #[command(flatten)]
    Scenario(Scenario),
    /// Run a scenario over a range of one parameter, several seeds per point: CSV and an SVG plot.
    Sweep(sweep::SweepArgs),
    /// Plan a cluster: convergence, detection, false positives and bandwidth for N nodes at a
    /// loss, and the fanout and interval that meet a target at the least bandwidth.
    Tune(tune::TuneArgs),
    /// Regenerate docs/results.md and its plots from the simulator.
    Report(report::ReportArgs),
}

/// One simulator scenario with its options.
#[derive(Subcommand, Clone)]
pub enum Scenario {
    /// SWIM membership: join through one seed, crashes, partitions, loss, slow nodes.
    Swim(SwimArgs),
    /// The random phone-call model of dissemination (push, pull, push-pull), up to 10^6 nodes.
    Spread(SpreadArgs),
    /// Rumour mongering in the model of Demers et al. (1987): residue, traffic, delays.
    Rumor(RumorArgs),
    /// Merkle-tree anti-entropy between two replicas of a shared keyspace: bytes and round trips.
    Merkle(MerkleArgs),
    /// The real protocol spreading per-node state and shared keys: rounds, bytes, lost writes.
    State(StateArgs),
    /// The real protocol aggregating a metric by push-sum: relative error per round.
    Aggregate(AggregateArgs),
    /// An idle cluster holding state as agents do: messages, frames, connections and wire
    /// bytes per node per period.
    Idle(IdleArgs),
}

/// A scenario's report, typed: a section of `sim report` that reads a field a scenario no
/// longer has fails to build.
#[derive(Clone, Debug)]
pub enum Report {
    /// See [`swim::SwimReport`].
    Swim(swim::SwimReport),
    /// See [`spread::SpreadReport`].
    Spread(spread::SpreadReport),
    /// See [`rumor::RumorReport`].
    Rumor(rumor::RumorReport),
    /// See [`merkle::MerkleReport`].
    Merkle(merkle::MerkleReport),
    /// See [`state::StateReport`].
    State(state::StateReport),
    /// See [`aggregate::AggregateReport`].
    Aggregate(aggregate::AggregateReport),
    /// See [`idle::IdleReport`].
    Idle(idle::IdleReport),
}

impl Report {
    /// The report as the scenario prints it with `--json`.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        Ok(match self {
            Report::Swim(r) => serde_json::to_value(r)?,
            Report::Spread(r) => serde_json::to_value(r)?,
            Report::Rumor(r) => serde_json::to_value(r)?,
            Report::Merkle(r) => serde_json::to_value(r)?,
            Report::State(r) => serde_json::to_value(r)?,
            Report::Aggregate(r) => serde_json::to_value(r)?,
            Report::Idle(r) => serde_json::to_value(r)?,
        })
    }
}

/// The options the simulator's scenarios share.
#[derive(clap::Args, Clone)]
pub struct RunOpts {
    /// RNG seed; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub json: bool,
    /// Omit wall-clock time (and memory) from the report, so two runs print identical output.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub no_wall_clock: bool,
}

#[derive(clap::Args, Clone)]
pub struct AggregateArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Rounds to run, from the contributions.
    #[arg(long, default_value_t = 60)]
    rounds: u32,
    /// Round at which a share of the nodes leave.
    #[arg(long)]
    leave_at: Option<u32>,
    /// The share that leaves.
    #[arg(long, default_value_t = 0.1)]
    leave_fraction: f64,
    /// Rounds per aggregation epoch.
    #[arg(long, default_value_t = grapevine_core::Config::lan().aggregate.aggregate_epoch_rounds)]
    epoch_rounds: u32,
    /// Datagram loss probability, 0..1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// The relative error to count rounds to.
    #[arg(long, default_value_t = 1e-3)]
    epsilon: f64,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(clap::Args, Clone)]
pub struct IdleArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    profile: String,
    /// Hold the shared keyspace only, no per-node state (whose copies grow with the square
    /// of the cluster size: about 10 GB of memory at 10,000 nodes).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    no_own_state: bool,
    /// Probe periods between the state's convergence and the measurement.
    #[arg(long, default_value_t = 120)]
    settle: u32,
    /// Probe periods measured.
    #[arg(long, default_value_t = 100)]
    periods: u32,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(clap::Args, Clone)]
pub struct StateArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    profile: String,
    /// Members each node exchanges state with per round [default: the profile's].
    #[arg(long)]
    fanout: Option<usize>,
    /// Time between a node's state exchanges, e.g. 500ms [default: the profile's].
    #[arg(long, value_parser = parse_duration)]
    interval: Option<std::time::Duration>,
    /// Which way state flows: push, pull or push-pull.
    #[arg(long, default_value = "push-pull")]
    mode: String,
    /// Writes made, each to the writer's own state and to a shared key.
    #[arg(long, default_value_t = 1)]
    writes: u32,
    /// Distinct shared keys the writes contend for.
    #[arg(long, default_value_t = 4)]
    shared_keys: u32,
    /// Datagram loss probability, 0..1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Round (from the writes) at which the cluster splits into halves.
    #[arg(long)]
    partition_at: Option<u32>,
    /// Round at which the halves can talk again.
    #[arg(long, requires = "partition_at")]
    heal_at: Option<u32>,
    /// Rounds to run at most.
    #[arg(long, default_value_t = 60)]
    rounds: u32,
    /// Each node's cap on state traffic, bytes per second.
    #[arg(long)]
    bandwidth: Option<u64>,
    /// The failure detector: swim, or phi (heartbeats in every node's state).
    #[arg(long, value_enum, default_value = "swim")]
    detector: DetectorArg,
    /// Start from a cluster where no node holds state yet: empty nodes open no exchanges, so
    /// the first write spreads by push alone.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    cold: bool,
    #[command(flatten)]
    run: RunOpts,
}

fn detector(d: DetectorArg) -> Detector {
    match d {
        DetectorArg::Swim => Detector::Swim,
        DetectorArg::Phi => Detector::Phi,
        DetectorArg::Both => Detector::Both,
    }
}

fn flow_mode(s: &str) -> Result<FlowMode> {
    match s {
        "push" => Ok(FlowMode::Push),
        "pull" => Ok(FlowMode::Pull),
        "push-pull" => Ok(FlowMode::PushPull),
        other => Err(anyhow!("unknown mode {other:?}: push, pull or push-pull")),
    }
}

#[derive(clap::Args, Clone)]
pub struct MerkleArgs {
    /// Keys in each replica.
    #[arg(long, default_value_t = 100_000)]
    keys: u32,
    /// Keys that differ between the replicas.
    #[arg(long, default_value_t = 10)]
    diff: u32,
    /// Which way entries flow: push, pull or push-pull.
    #[arg(long, default_value = "push-pull")]
    mode: String,
    /// Bytes of each value.
    #[arg(long, default_value_t = 16)]
    value_len: usize,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(clap::Args, Clone)]
pub struct SpreadArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Who sends: push, pull or push-pull.
    #[arg(long, default_value = "push-pull")]
    mode: String,
    /// Partners each node calls per round.
    #[arg(long, default_value_t = 1)]
    fanout: u32,
    /// Probability that a message is lost, 0..1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Independent runs to average.
    #[arg(long, default_value_t = 20)]
    runs: u32,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(clap::Args, Clone)]
pub struct RumorArgs {
    /// Number of sites.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// DIRECTION-FEEDBACK-STOP: push|pull|push-pull, feedback|blind, counter|coin.
    #[arg(long, default_value = "push-feedback-counter")]
    variant: String,
    /// The stop rule's parameter: k unnecessary (or any) transmissions, or a 1/k coin.
    #[arg(long, default_value_t = 1)]
    k: u32,
    /// Independent runs to average.
    #[arg(long, default_value_t = 100)]
    runs: u32,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(Copy, Clone, ValueEnum)]
pub enum DetectorArg {
    Swim,
    Phi,
    Both,
}

#[derive(Copy, Clone, ValueEnum)]
pub enum Selection {
    RoundRobin,
    Random,
}

#[derive(clap::Args, Clone)]
pub struct SwimArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Datagram loss probability, 0..1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Length of the run in protocol periods.
    #[arg(long, default_value_t = 100)]
    periods: u32,
    /// Crash this many random nodes once the cluster has converged.
    #[arg(long, default_value_t = 0)]
    crash: u32,
    /// Split the cluster into two halves at this period.
    #[arg(long)]
    partition_at: Option<u32>,
    /// Heal the partition at this period.
    #[arg(long, requires = "partition_at")]
    heal_at: Option<u32>,
    /// Fraction of slow nodes (messages handled 0.5–2 periods late).
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// Number of indirect probes (k).
    #[arg(long, alias = "k")]
    indirect: Option<usize>,
    /// A failed probe declares the target dead at once.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    no_suspicion: bool,
    /// Turn the Lifeguard extensions off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    no_lifeguard: bool,
    /// Turn the reliable-channel fallback probe off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    no_fallback: bool,
    /// How probe targets are chosen.
    #[arg(long, value_enum, default_value = "round-robin")]
    probe_selection: Selection,
    /// The failure detector: SWIM probing, phi-accrual on heartbeats, or both.
    #[arg(long, value_enum, default_value = "swim")]
    detector: DetectorArg,
    /// Members each gossip round sends to [default: the profile's].
    #[arg(long)]
    fanout: Option<usize>,
    /// The probe interval, e.g. 500ms [default: the profile's].
    #[arg(long, value_parser = parse_duration)]
    interval: Option<std::time::Duration>,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    profile: String,
    #[command(flatten)]
    run: RunOpts,
}
