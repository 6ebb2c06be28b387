//! `grapevine`: the agent, its command line, and the simulator.

#![forbid(unsafe_code)]

mod agent;
mod demo;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand, ValueEnum};
use grapevine_core::state::reconcile::Mode as FlowMode;
use grapevine_core::{Detector, ProbeSelection};
use grapevine_sim::scenario::aggregate;
use grapevine_sim::scenario::merkle::{self, MerkleParams};
use grapevine_sim::scenario::rumor::{self, RumorParams, Variant};
use grapevine_sim::scenario::spread::{self, SpreadParams};
use grapevine_sim::scenario::state::{self, StateParams};
use grapevine_sim::scenario::swim::{self, SwimParams};

// The simulator grows tens of millions of records and churns large, growing buffers (sync
// frames, decoded entries). glibc returns such memory to the kernel and faults it back in
// zeroed, which cost about 10% of a 10,000-node run; jemalloc keeps freed pages for reuse.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// grapevine: gossip membership, failure detection and replicated state.
#[derive(Parser)]
#[command(name = "grapevine", version, about)]
struct Cli {
    /// The agent's HTTP API: where `agent` serves it, where the other commands find it
    /// [default: 127.0.0.1:8500, or the agent's config file's `http`].
    #[arg(long, global = true)]
    http: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member of a cluster, with its HTTP API, until SIGTERM or SIGINT (which leave
    /// gracefully).
    Agent(agent::AgentArgs),
    /// A real cluster on loopback, put through the paces: join, a key spreading, a member
    /// killed and detected, a partition and its healing, each step timed.
    Demo {
        /// Members (3 to 500).
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Print the summary as JSON, without progress bars.
        #[arg(long)]
        json: bool,
    },
    /// List the members the local agent knows.
    Members {
        /// `table` or `json` (an array of objects: name, addr, status, tags, incarnation).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Read, write, list and watch shared keys through the local agent.
    Kv {
        #[command(subcommand)]
        op: agent::KvOp,
    },
    /// Raise a user event for every member.
    Event {
        /// The event's name.
        name: String,
        /// Its payload.
        #[arg(default_value = "")]
        payload: String,
    },
    /// Ask the local agent to join through another member.
    Join {
        /// `host:port` of a member.
        addr: String,
    },
    /// Ask the local agent to leave the cluster gracefully.
    Leave,
    /// Record a failed member as left, so it is no longer retried (as Serf's force-leave).
    ForceLeave {
        /// The failed member's name.
        name: String,
    },
    /// Print member events (joins, suspicions, refutations, failures, departures), user
    /// events and this agent's refutations as they happen.
    Monitor {
        /// `text` (one line per event) or `json` (one JSON object per line).
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// The local agent's keyring: list, or install, use (make primary) and remove a key
    /// (base64 of 32 bytes). Rotate a cluster by installing everywhere, then using, then
    /// removing the old key everywhere.
    Keys {
        /// list, install, use or remove.
        op: String,
        /// The key, for install, use and remove.
        key: Option<String>,
    },
    /// The local agent's name and address.
    Info,
    /// Every service in the catalog: instances, addresses, health.
    Services,
    /// A cluster-wide aggregate (push-sum): contribute this agent's value and print the
    /// estimate every member computes locally (average, sum, count, min, max).
    Aggregate {
        /// The metric.
        name: String,
        /// This agent's contribution.
        value: Option<f64>,
        /// Withdraw this agent's contribution.
        #[arg(long, conflicts_with = "value")]
        withdraw: bool,
    },
    /// Run the deterministic simulator.
    Sim {
        #[command(subcommand)]
        scenario: SimScenario,
    },
}

#[derive(Subcommand)]
enum SimScenario {
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
}

/// The options the simulator's scenarios share.
#[derive(clap::Args)]
struct RunOpts {
    /// RNG seed; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Omit wall-clock time (and memory) from the report, so two runs print identical output.
    #[arg(long)]
    no_wall_clock: bool,
}

#[derive(clap::Args)]
struct AggregateArgs {
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
    #[arg(long, default_value_t = grapevine_core::Config::lan().aggregate_epoch_rounds)]
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

#[derive(clap::Args)]
struct StateArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 1000)]
    nodes: u32,
    /// Members each node exchanges state with per round.
    #[arg(long, default_value_t = 3)]
    fanout: usize,
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

#[derive(clap::Args)]
struct MerkleArgs {
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

#[derive(clap::Args)]
struct SpreadArgs {
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

#[derive(clap::Args)]
struct RumorArgs {
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
enum DetectorArg {
    Swim,
    Phi,
    Both,
}

#[derive(Copy, Clone, ValueEnum)]
enum Selection {
    RoundRobin,
    Random,
}

#[derive(clap::Args)]
struct SwimArgs {
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
    #[arg(long)]
    indirect: Option<usize>,
    /// A failed probe declares the target dead at once.
    #[arg(long)]
    no_suspicion: bool,
    /// Turn the Lifeguard extensions off.
    #[arg(long)]
    no_lifeguard: bool,
    /// Turn the reliable-channel fallback probe off.
    #[arg(long)]
    no_fallback: bool,
    /// How probe targets are chosen.
    #[arg(long, value_enum, default_value = "round-robin")]
    probe_selection: Selection,
    /// The failure detector: SWIM probing, phi-accrual on heartbeats, or both.
    #[arg(long, value_enum, default_value = "swim")]
    detector: DetectorArg,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    profile: String,
    #[command(flatten)]
    run: RunOpts,
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Prints a report as pretty JSON or as aligned `key  value` lines.
fn print_report(report: &impl serde::Serialize, json: bool) -> Result<()> {
    let mut text = String::new();
    if json {
        text = serde_json::to_string_pretty(report)? + "\n";
    } else {
        let v = serde_json::to_value(report)?;
        if let Some(obj) = v.as_object() {
            for (k, v) in obj {
                text += &format!("{k:>36}  {v}\n");
            }
        }
    }
    print_out(&text)
}

fn main() -> std::process::ExitCode {
    // Errors reach the user as one line (with their causes), never as a backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let http = cli.http.unwrap_or(agent::DEFAULT_HTTP);
    match cli.command {
        Command::Agent(a) => {
            let settings = agent::Settings::resolve(&a, cli.http)?;
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(agent::run(settings))
        }
        Command::Demo { nodes, json } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let steps = rt.block_on(demo::run(nodes, json))?;
            if json {
                print_out(&(serde_json::to_string_pretty(&steps)? + "\n"))
            } else {
                print_out(&demo::table(&steps))
            }
        }
        Command::Kv { op } => print_out(&agent::kv_command(http, &op)?),
        Command::Event { name, payload } => print_out(&agent::simple_command(
            http,
            "PUT",
            &format!("/v1/event/fire/{name}"),
            Some(payload.as_bytes()),
        )?),
        Command::Join { addr } => print_out(&agent::simple_command(
            http,
            "PUT",
            &format!("/v1/agent/join/{addr}"),
            None,
        )?),
        Command::Leave => print_out(&agent::simple_command(
            http,
            "PUT",
            "/v1/agent/leave",
            None,
        )?),
        Command::ForceLeave { name } => print_out(&agent::simple_command(
            http,
            "PUT",
            &format!("/v1/agent/force-leave/{name}"),
            None,
        )?),
        Command::Monitor { format } => match format.as_str() {
            "text" => agent::monitor_command(http, false),
            "json" => agent::monitor_command(http, true),
            other => Err(anyhow!("unknown format {other:?}: text or json")),
        },
        Command::Keys { op, key } => {
            let out = match (op.as_str(), key) {
                ("list", _) => agent::simple_command(http, "GET", "/v1/grapevine/keyring", None)?,
                ("install" | "use" | "remove", Some(k)) => agent::simple_command(
                    http,
                    "PUT",
                    &format!("/v1/grapevine/keyring/{op}"),
                    Some(k.as_bytes()),
                )?,
                ("install" | "use" | "remove", None) => {
                    return Err(anyhow!("keys {op} needs a key (base64 of 32 bytes)"))
                }
                (other, _) => {
                    return Err(anyhow!(
                        "unknown keys operation {other:?}: list, install, use, remove"
                    ))
                }
            };
            print_out(&out)
        }
        Command::Info => print_out(&agent::simple_command(http, "GET", "/v1/agent/self", None)?),
        Command::Services => print_out(&agent::services_command(http)?),
        Command::Aggregate {
            name,
            value,
            withdraw,
        } => print_out(&agent::aggregate_command(http, &name, value, withdraw)?),
        Command::Members { format } => {
            let json = match format.as_str() {
                "json" => true,
                "table" => false,
                other => return Err(anyhow!("unknown format {other:?}: table or json")),
            };
            print_out(&agent::members_command(http, json)?)
        }
        Command::Sim { scenario } => match scenario {
            SimScenario::Swim(a) => {
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
                    profile: a.profile,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = swim::run(&params).map_err(|e| anyhow!(e))?;
                print_report(&report, a.run.json)
            }
            SimScenario::Spread(a) => {
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
                print_report(&report, a.run.json)
            }
            SimScenario::Rumor(a) => {
                let params = RumorParams {
                    nodes: a.nodes,
                    variant: Variant::parse(&a.variant).map_err(|e| anyhow!(e))?,
                    k: a.k,
                    runs: a.runs,
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = rumor::run(&params).map_err(|e| anyhow!(e))?;
                print_report(&report, a.run.json)
            }
            SimScenario::Merkle(a) => {
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
                print_report(&report, a.run.json)
            }
            SimScenario::State(a) => {
                let params = StateParams {
                    nodes: a.nodes,
                    fanout: a.fanout,
                    mode: flow_mode(&a.mode)?,
                    writes: a.writes,
                    shared_keys: a.shared_keys,
                    loss: a.loss,
                    partition_at: a.partition_at,
                    heal_at: a.heal_at,
                    rounds: a.rounds,
                    bandwidth: a.bandwidth,
                    detector: detector(a.detector),
                    seed: a.run.seed,
                    no_wall_clock: a.run.no_wall_clock,
                };
                let report = state::run(&params).map_err(|e| anyhow!(e))?;
                print_report(&report, a.run.json)
            }
            SimScenario::Aggregate(a) => {
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
                print_report(&report, a.run.json)
            }
        },
    }
}
