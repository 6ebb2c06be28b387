//! `grapevine`: the agent and its command line. For now it offers the simulator.

#![forbid(unsafe_code)]

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand, ValueEnum};
use grapevine_core::ProbeSelection;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// RNG seed; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    profile: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Omit wall-clock time and memory from the report, so two runs print identical output.
    #[arg(long)]
    no_wall_clock: bool,
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim {
            scenario: SimScenario::Swim(a),
        } => {
            let params = SwimParams {
                nodes: a.nodes,
                seed: a.seed,
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
                profile: a.profile,
                no_wall_clock: a.no_wall_clock,
            };
            let report = swim::run(&params).map_err(|e| anyhow!(e))?;
            let mut text = String::new();
            if a.json {
                text = serde_json::to_string_pretty(&report)? + "\n";
            } else {
                let v = serde_json::to_value(&report)?;
                if let Some(obj) = v.as_object() {
                    for (k, v) in obj {
                        text += &format!("{k:>36}  {v}\n");
                    }
                }
            }
            print_out(&text)?;
        }
    }
    Ok(())
}
