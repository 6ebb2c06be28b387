//! `grapevine`: the agent, its command line, and the simulator.

#![forbid(unsafe_code)]

mod agent;
mod demo;
mod sim;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

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
    /// (`host:port`, or `https://host:port` for an agent serving TLS) [default:
    /// 127.0.0.1:8500, or the agent's config file's `http`].
    #[arg(long, global = true, env = "GRAPEVINE_HTTP_ADDR")]
    http: Option<String>,
    /// The ACL token the commands present to the agent (never printed or logged).
    #[arg(
        long,
        global = true,
        env = "GRAPEVINE_HTTP_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// CA certificates (PEM) to verify an HTTPS agent by.
    #[arg(long, global = true, env = "GRAPEVINE_CACERT")]
    ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for an agent that requires one.
    #[arg(long, global = true, env = "GRAPEVINE_CLIENT_CERT")]
    client_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "GRAPEVINE_CLIENT_KEY")]
    client_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// A drill to start, or the drills to list or end.
#[derive(Subcommand)]
enum DrillAction {
    /// The drills in force.
    List,
    /// Cut this agent off from these members (every datagram and frame to and from them).
    Cut {
        /// Their names.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Drop this share (0 to 1) of this agent's datagrams, both ways.
    Drop {
        /// The share.
        share: f64,
    },
    /// Hold each datagram this agent sends this long (Go's syntax, at most 5s).
    Delay {
        /// The delay.
        delay: String,
    },
    /// End a drill (all of them without an id).
    End {
        /// Its id.
        id: Option<u64>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run a member of a cluster, with its HTTP API, until SIGTERM or SIGINT (which leave
    /// gracefully).
    Agent(Box<agent::AgentArgs>),
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
    /// Fault drills on the local agent (started with `--enable-drills`): each ends by
    /// itself after `--for`.
    Drill {
        /// What to do.
        #[command(subcommand)]
        action: DrillAction,
        /// How long it lasts, Go's syntax (`30s`, `5m`; at most 1h).
        #[arg(long = "for", default_value = "60s", global = true)]
        duration: String,
    },
    /// Ask every matching member a question and print the answers as they come (Serf's
    /// queries: answered by `query` event handlers; needs `--protocol serf`).
    Query {
        /// The query's name.
        name: String,
        /// Its payload.
        #[arg(default_value = "")]
        payload: String,
        /// Only this member (repeatable).
        #[arg(long = "node")]
        node: Vec<String>,
        /// Only members whose tag matches, `key=regexp` (repeatable).
        #[arg(long = "tag")]
        tag: Vec<String>,
        /// How long to wait, Go's syntax (`5s`, `1m`) [default: Serf's, from the size].
        #[arg(long)]
        timeout: Option<String>,
        /// Do not ask for acks.
        #[arg(long)]
        no_ack: bool,
        /// Members that relay each response too, for lossy networks (Serf's -relay-factor).
        #[arg(long, default_value_t = 0)]
        relay_factor: u8,
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
    /// The local agent's keyring: list (fingerprints: the API never hands out keys), or
    /// install, use (make primary) and remove a key (base64 of 32 bytes). Rotate a cluster by installing everywhere, then using, then
    /// removing the old key everywhere.
    Keys {
        /// list, install, use or remove.
        op: String,
        /// The key, for install, use and remove.
        key: Option<String>,
    },
    /// Print a new random cluster key (base64 of 32 bytes) for encrypt_key_file.
    Keygen,
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
        command: sim::SimCommand,
    },
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

/// The `--http` address as a socket address, with any scheme left off.
fn bind_addr(http: Option<&str>) -> Result<Option<std::net::SocketAddr>> {
    let Some(h) = http else { return Ok(None) };
    let bare = h
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    bare.parse()
        .map(Some)
        .map_err(|_| anyhow!("--http {h:?}: an address like 127.0.0.1:8500"))
}

fn run(cli: Cli) -> Result<()> {
    let tls = agent::TlsFiles {
        ca: cli.ca_file.clone(),
        cert: cli.client_cert.clone(),
        key: cli.client_key.clone(),
    };
    let addr = cli
        .http
        .clone()
        .unwrap_or_else(|| agent::DEFAULT_HTTP.to_string());
    let api = || agent::Api::new(&addr, cli.token.clone(), &tls);
    match cli.command {
        Command::Agent(a) => {
            let settings = agent::Settings::resolve(&a, bind_addr(cli.http.as_deref())?)?;
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
        Command::Kv { op } => print_out(&agent::kv_command(&api()?, &op)?),
        Command::Event { name, payload } => print_out(&agent::simple_command(
            &api()?,
            "PUT",
            &format!("/v1/event/fire/{name}"),
            Some(payload.as_bytes()),
        )?),
        Command::Drill { action, duration } => {
            let api = api()?;
            let start = |body: serde_json::Value| {
                let mut body = body;
                body["For"] = serde_json::Value::String(duration.clone());
                let text = body.to_string();
                agent::simple_command(&api, "POST", "/v1/grapevine/drills", Some(text.as_bytes()))
            };
            let out = match action {
                DrillAction::List => {
                    agent::simple_command(&api, "GET", "/v1/grapevine/drills", None)?
                }
                DrillAction::Cut { members } => {
                    start(serde_json::json!({"Kind": "cut", "Members": members}))?
                }
                DrillAction::Drop { share } => {
                    start(serde_json::json!({"Kind": "drop", "Share": share}))?
                }
                DrillAction::Delay { delay } => {
                    let d = agent::go_duration(&delay)
                        .ok_or_else(|| anyhow!("{delay:?}: a duration like 200ms"))?;
                    start(serde_json::json!({"Kind": "delay", "Millis": d.as_millis() as u64}))?
                }
                DrillAction::End { id } => {
                    let path = match id {
                        Some(id) => format!("/v1/grapevine/drills/{id}"),
                        None => "/v1/grapevine/drills".into(),
                    };
                    agent::simple_command(&api, "DELETE", &path, None)?
                }
            };
            print_out(&out)
        }
        Command::Query {
            name,
            payload,
            node,
            tag,
            timeout,
            no_ack,
            relay_factor,
        } => {
            if let Some(t) = &timeout {
                agent::go_duration(t)
                    .ok_or_else(|| anyhow!("--timeout {t:?}: a duration like 5s or 1m30s"))?;
            }
            let opts = agent::QueryOpts {
                nodes: node,
                tags: tag,
                timeout,
                ack: !no_ack,
                relay_factor,
            };
            agent::query_command(&api()?, &name, &payload, &opts)
        }
        Command::Join { addr } => print_out(&agent::simple_command(
            &api()?,
            "PUT",
            &format!("/v1/agent/join/{addr}"),
            None,
        )?),
        Command::Leave => print_out(&agent::simple_command(
            &api()?,
            "PUT",
            "/v1/agent/leave",
            None,
        )?),
        Command::ForceLeave { name } => print_out(&agent::simple_command(
            &api()?,
            "PUT",
            &format!("/v1/agent/force-leave/{name}"),
            None,
        )?),
        Command::Monitor { format } => match format.as_str() {
            "text" => agent::monitor_command(&api()?, false),
            "json" => agent::monitor_command(&api()?, true),
            other => Err(anyhow!("unknown format {other:?}: text or json")),
        },
        Command::Keys { op, key } => {
            let out = match (op.as_str(), key) {
                ("list", _) => {
                    agent::simple_command(&api()?, "GET", "/v1/grapevine/keyring", None)?
                }
                ("install" | "use" | "remove", Some(k)) => agent::simple_command(
                    &api()?,
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
        Command::Keygen => {
            use base64::Engine;
            let key: [u8; 32] = rand::random();
            print_out(&(base64::engine::general_purpose::STANDARD.encode(key) + "\n"))
        }
        Command::Info => print_out(&agent::simple_command(
            &api()?,
            "GET",
            "/v1/agent/self",
            None,
        )?),
        Command::Services => print_out(&agent::services_command(&api()?)?),
        Command::Aggregate {
            name,
            value,
            withdraw,
        } => print_out(&agent::aggregate_command(&api()?, &name, value, withdraw)?),
        Command::Members { format } => {
            let json = match format.as_str() {
                "json" => true,
                "table" => false,
                other => return Err(anyhow!("unknown format {other:?}: table or json")),
            };
            print_out(&agent::members_command(&api()?, json)?)
        }
        Command::Sim { command } => sim::run(command),
    }
}
