//! Mixed clusters of real Serf agents (Debian's `serf`) and grapevine agents speaking Serf.

#![allow(dead_code)]

use super::BIN;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether `serf` is installed; without it a test is skipped with a message, unless
/// `GRAPEVINE_REQUIRE_SERF` is set (as `.ci/run` does), which makes that a failure.
pub fn serf_available(test: &str) -> bool {
    let ok = Command::new("serf")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_SERF").is_none(),
            "{test}: GRAPEVINE_REQUIRE_SERF is set but `serf` is not installed"
        );
        eprintln!("skipped {test}: `serf` is not installed (apt-get install serf)");
    }
    ok
}

/// Which implementation a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HashiCorp's Serf.
    Serf,
    /// grapevine with `--protocol serf`.
    Grapevine,
}

/// A member of the mixed cluster; killed when dropped.
pub struct Member {
    /// Which kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its gossip address.
    pub gossip: SocketAddr,
    /// Its control address: Serf's RPC, grapevine's HTTP.
    pub control: SocketAddr,
    /// The process.
    pub child: Child,
    /// How commands reach its network (a namespace's `ip netns exec`, or none).
    pub prefix: Vec<String>,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(prefix: &[String], program: &str) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

/// What to start a member with.
#[derive(Default, Clone)]
pub struct Opts {
    /// A member to join through.
    pub join: Option<SocketAddr>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// The base64 key.
    pub key: Option<String>,
    /// Event handler specs.
    pub handlers: Vec<String>,
    /// Where its log goes.
    pub log: Option<std::path::PathBuf>,
    /// Command prefix (namespace).
    pub prefix: Vec<String>,
}

/// Starts a member of `kind`.
pub fn spawn(kind: Kind, name: &str, gossip: SocketAddr, control: SocketAddr, o: &Opts) -> Member {
    let log = |o: &Opts| match &o.log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let child = match kind {
        Kind::Serf => {
            let mut c = command(&o.prefix, "serf");
            c.arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("-bind={gossip}"))
                .arg(format!("-rpc-addr={control}"))
                .arg("-log-level=debug");
            for (k, v) in &o.tags {
                c.arg(format!("-tag={k}={v}"));
            }
            if let Some(k) = &o.key {
                c.arg(format!("-encrypt={k}"));
            }
            if let Some(j) = o.join {
                // Retried: the member joined through may still be starting.
                c.arg(format!("-retry-join={j}")).arg("-retry-interval=1s");
            }
            for h in &o.handlers {
                c.arg(format!("-event-handler={h}"));
            }
            c.stdout(log(o)).stderr(Stdio::null()).spawn().unwrap()
        }
        Kind::Grapevine => {
            let mut c = command(&o.prefix, BIN);
            c.args([
                "agent",
                "--protocol",
                "serf",
                "--name",
                name,
                "--dns",
                "off",
            ])
            .args([
                "--bind",
                &gossip.to_string(),
                "--http",
                &control.to_string(),
            ])
            .env("RUST_LOG", "info");
            for (k, v) in &o.tags {
                c.args(["--tag", &format!("{k}={v}")]);
            }
            if let Some(k) = &o.key {
                let path =
                    std::env::temp_dir().join(format!("gv-serf-key-{name}-{}", std::process::id()));
                std::fs::write(&path, k).unwrap();
                c.arg("--encrypt-key-file").arg(path);
            }
            if let Some(j) = o.join {
                c.args(["--join", &j.to_string()]);
            }
            for h in &o.handlers {
                c.args(["--event-handler", h]);
            }
            c.stdout(Stdio::null()).stderr(log(o)).spawn().unwrap()
        }
    };
    Member {
        kind,
        name: name.to_string(),
        gossip,
        control,
        child,
        prefix: o.prefix.clone(),
    }
}

/// One member as another sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// alive, suspect, leaving, left or failed.
    pub status: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

impl Member {
    /// Runs a command against this member (`serf ... -rpc-addr`, `grapevine ... --http`).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = match self.kind {
            // Serf's flags go before its positional arguments.
            Kind::Serf => command(&self.prefix, "serf")
                .arg(args[0])
                .arg(format!("-rpc-addr={}", self.control))
                .args(&args[1..])
                .output(),
            Kind::Grapevine => command(&self.prefix, BIN)
                .args(args)
                .args(["--http", &self.control.to_string()])
                .output(),
        };
        match out {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    /// Its members and their status and tags, through its own CLI (empty if it did not
    /// answer).
    pub fn view(&self) -> HashMap<String, Seen> {
        let mut out = HashMap::new();
        match self.kind {
            Kind::Serf => {
                let (ok, text) = self.cli(&["members", "-format=json"]);
                if !ok {
                    return out;
                }
                let Some(start) = text.find('{') else {
                    return out;
                };
                let v: serde_json::Value = serde_json::from_str(&text[start..]).unwrap_or_default();
                for m in v["members"].as_array().into_iter().flatten() {
                    let tags = m["tags"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    out.insert(
                        m["name"].as_str().unwrap_or("").to_string(),
                        Seen {
                            status: m["status"].as_str().unwrap_or("").to_string(),
                            tags,
                        },
                    );
                }
            }
            Kind::Grapevine => {
                let (ok, text) = self.cli(&["members", "--format", "json"]);
                if !ok {
                    return out;
                }
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                for m in v.as_array().into_iter().flatten() {
                    let tags = m["tags"]
                        .as_str()
                        .unwrap_or("")
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    out.insert(
                        m["name"].as_str().unwrap_or("").to_string(),
                        Seen {
                            status: m["status"].as_str().unwrap_or("").to_string(),
                            tags,
                        },
                    );
                }
            }
        }
        out
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (grapevine leaves on it) or `serf leave`, and waits for the exit.
    pub fn leave(&mut self) {
        match self.kind {
            Kind::Serf => {
                let _ = self.cli(&["leave"]);
            }
            Kind::Grapevine => {
                let _ = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status();
            }
        }
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

/// Whether every member in `views` lists every name in `names` with `status`.
pub fn all_see(members: &[&Member], names: &[&str], status: &str) -> bool {
    members.iter().all(|m| {
        let v = m.view();
        names
            .iter()
            .all(|n| v.get(*n).is_some_and(|s| s.status == status))
    })
}
