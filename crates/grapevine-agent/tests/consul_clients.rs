//! Consul's real clients against a 3-agent cluster: python-consul, python-consul2 and
//! py-consul (PyPI) and the npm `consul` package, each through the calls its users make
//! (`scripts/consul-clients/check.py` and `check.cjs`): KV, agent, catalog, health, events,
//! status, coordinates, and the documented refusals (sessions, locks, transactions, another
//! datacenter). Each client gets a fresh cluster; any call that fails fails the test.
//!
//! The clients are installed by `scripts/consul-clients/setup.sh` (into
//! `target/consul-clients`, or `$GRAPEVINE_CONSUL_CLIENTS`); `.ci/run` installs them and sets
//! `GRAPEVINE_REQUIRE_CONSUL_CLIENTS`, so that in CI a missing client fails instead of
//! skipping.

mod common;

use common::{eventually, get, Agent, Spec};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn clients_dir() -> PathBuf {
    common::tools_dir("GRAPEVINE_CONSUL_CLIENTS", "consul-clients")
}

fn script(name: &str) -> String {
    format!(
        "{}/../../scripts/consul-clients/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Three agents, all alive in every view.
fn cluster(tag: &str) -> Vec<Agent> {
    let a = Spec::new(&format!("{tag}-a")).start();
    let b = Spec::new(&format!("{tag}-b")).join(a.gossip).start();
    let c = Spec::new(&format!("{tag}-c")).join(a.gossip).start();
    let agents = vec![a, b, c];
    let refs: Vec<&Agent> = agents.iter().collect();
    let names: Vec<String> = agents.iter().map(|x| x.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eventually(Duration::from_secs(30), || common::all_alive(&refs, &names));
    for x in &agents {
        eventually(Duration::from_secs(10), || {
            get(&format!("http://{}/v1/agent/self", x.http)).is_some()
        });
    }
    agents
}

/// Runs one client's check against a fresh cluster; `None` if the client is not installed.
fn run(client: &str, mut cmd: Command) -> Option<String> {
    let agents = cluster(client);
    let out = cmd
        .args(agents.iter().map(|a| a.http.to_string()))
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{client}:\n{text}");
    Some(text)
}

fn missing(what: &str) {
    assert!(
        std::env::var_os("GRAPEVINE_REQUIRE_CONSUL_CLIENTS").is_none(),
        "{what} is required here (scripts/consul-clients/setup.sh)"
    );
    eprintln!("skipped: {what} is not installed (scripts/consul-clients/setup.sh)");
}

#[test]
fn python_clients_run_their_common_calls() {
    for client in ["python-consul", "python-consul2", "py-consul"] {
        let python = clients_dir().join(client).join("bin/python");
        if !python.exists() {
            missing(client);
            continue;
        }
        let mut cmd = Command::new(python);
        cmd.arg(script("check.py"));
        if let Some(out) = run(client, cmd) {
            println!("{out}");
        }
    }
}

#[test]
fn the_npm_client_runs_its_common_calls() {
    let modules = clients_dir().join("npm/node_modules");
    if !modules.join("consul").exists() {
        missing("the npm consul package");
        return;
    }
    let mut cmd = Command::new("node");
    cmd.arg(script("check.cjs")).env("NODE_PATH", &modules);
    if let Some(out) = run("npm", cmd) {
        println!("{out}");
    }
}
