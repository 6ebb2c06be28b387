//! Test support: `grapevine agent` processes on loopback, the CLI, and polling.
#![allow(dead_code)]

pub mod netns;
pub mod siege;
pub mod stranger;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_grapevine");

/// A port free on `ip` for both UDP and TCP, below Linux's ephemeral range (32768 and up) so
/// that no outgoing connection can take it before the agent binds it, and never handed out
/// twice by one test process.
pub fn free_port_on(ip: IpAddr) -> u16 {
    use rand::Rng;
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(20_000..32_768);
        let addr = SocketAddr::new(ip, port);
        if !handed.contains(&port)
            && UdpSocket::bind(addr).is_ok()
            && std::net::TcpListener::bind(addr).is_ok()
        {
            handed.push(port);
            return port;
        }
    }
}

pub mod serf;

/// A port free on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on([127, 0, 0, 1].into())
}

/// A running agent; killed when dropped.
pub struct Agent {
    /// The process.
    pub child: Child,
    /// Its name.
    pub name: String,
    /// Its HTTP API.
    pub http: SocketAddr,
    /// Its gossip address.
    pub gossip: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Guards a process started some other way (killed when dropped).
    pub fn guard(child: Child, name: &str, http: SocketAddr, gossip: SocketAddr) -> Agent {
        Agent {
            child,
            name: name.into(),
            http,
            gossip,
        }
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{sig}");
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli(self.http, args)
    }

    /// This agent's view: member name → status.
    pub fn members(&self) -> HashMap<String, String> {
        members(self.http)
    }

    /// Waits until the HTTP API answers.
    pub fn wait_up(&self) {
        eventually(Duration::from_secs(15), || {
            get(&format!("http://{}/v1/agent/self", self.http)).is_some()
        });
    }
}

/// How to start an agent.
#[derive(Clone)]
pub struct Spec {
    name: String,
    ip: IpAddr,
    port: Option<u16>,
    join: Vec<SocketAddr>,
    args: Vec<String>,
    log: Option<PathBuf>,
}

impl Spec {
    /// An agent named `name` on 127.0.0.1 with the `local` profile.
    pub fn new(name: &str) -> Spec {
        Spec {
            name: name.into(),
            ip: [127, 0, 0, 1].into(),
            port: None,
            join: Vec::new(),
            args: Vec::new(),
            log: None,
        }
    }

    /// Binds gossip to `ip` (and the API too).
    pub fn ip(mut self, ip: IpAddr) -> Spec {
        self.ip = ip;
        self
    }

    /// Binds gossip to this port (to restart on the same address).
    pub fn port(mut self, port: u16) -> Spec {
        self.port = Some(port);
        self
    }

    /// Joins through `addr`.
    pub fn join(mut self, addr: SocketAddr) -> Spec {
        self.join.push(addr);
        self
    }

    /// Adds agent flags.
    pub fn args(mut self, args: &[&str]) -> Spec {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Sends the agent's log to a file.
    pub fn log(mut self, path: PathBuf) -> Spec {
        self.log = Some(path);
        self
    }

    /// Starts the agent (its HTTP API on a free port of the same address).
    pub fn start(self) -> Agent {
        let gossip = SocketAddr::new(self.ip, self.port.unwrap_or_else(|| free_port_on(self.ip)));
        let http = SocketAddr::new(self.ip, free_port_on(self.ip));
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "--name", &self.name, "--profile", "local"])
            .args(["--bind", &gossip.to_string()])
            .args(["--http", &http.to_string()])
            .args(&self.args)
            .stdout(Stdio::null());
        // Agents on one host cannot share DNS's port: off unless a test asks for it.
        if !self.args.iter().any(|a| a == "--dns") {
            cmd.args(["--dns", "off"]);
        }
        match &self.log {
            Some(path) => {
                let f = std::fs::File::create(path).expect("log file");
                cmd.stderr(f).env("RUST_LOG", "info");
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        for j in &self.join {
            cmd.args(["--join", &j.to_string()]);
        }
        Agent {
            child: cmd.spawn().expect("agent starts"),
            name: self.name,
            http,
            gossip,
        }
    }
}

/// A PUT with a body; the status code (0 if nothing answered).
pub fn put(url: &str, body: &str) -> u16 {
    match ureq::put(url)
        .timeout(Duration::from_secs(5))
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(_) => 0,
    }
}

/// A GET's body, if it answered 2xx.
pub fn get(url: &str) -> Option<String> {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// Polls `f` every 50 ms until it holds; fails after `limit`. Returns the time it took.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// Runs the CLI with `--http`: success, stdout, stderr.
pub fn cli(http: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--http", &http.to_string()])
        .output()
        .expect("the CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `grapevine members --format json` as parsed JSON, if the agent answered.
pub fn members_json(http: SocketAddr) -> Option<serde_json::Value> {
    let (ok, out, _) = cli(http, &["members", "--format", "json"]);
    if !ok {
        return None;
    }
    serde_json::from_str(&out).ok()
}

/// An agent's view, member name → status (empty if it did not answer).
pub fn members(http: SocketAddr) -> HashMap<String, String> {
    get(&format!("http://{http}/v1/grapevine/members"))
        .map(|body| parse_members(&body))
        .unwrap_or_default()
}

/// A `/v1/grapevine/members` answer as member name → status (empty if it is not one).
pub fn parse_members(body: &str) -> HashMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or_default().to_string(),
                        m["status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every agent lists every name in `names` as alive.
pub fn all_alive(agents: &[&Agent], names: &[&str]) -> bool {
    agents.iter().all(|a| {
        let m = a.members();
        names
            .iter()
            .all(|n| m.get(*n).map(String::as_str) == Some("alive"))
    })
}

/// The value of a Prometheus sample (`name{labels}`), summed over the lines that start
/// with `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix(series) {
            if let Some(v) = rest
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<f64>().ok())
            {
                if rest.starts_with(' ') || rest.starts_with('{') {
                    *found.get_or_insert(0.0) += v;
                }
            }
        }
    }
    found
}

/// Whether python-consul is importable; where CI requires it (`GRAPEVINE_REQUIRE_CONSUL`), a
/// panic instead of false.
pub fn python_consul() -> bool {
    let have = Command::new("python3")
        .args(["-c", "import consul"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_CONSUL").is_none(),
            "python-consul is required here (pip install python-consul)"
        );
        eprintln!("skipped: python-consul is not installed (pip install python-consul)");
    }
    have
}

/// Where a test's installed tools live: `$VAR` if set, else `target/SUBDIR` (where the
/// setup scripts under `scripts/` put them).
pub fn tools_dir(var: &str, subdir: &str) -> std::path::PathBuf {
    std::env::var_os(var).map_or_else(
        || {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target"))
                .join(subdir)
        },
        std::path::PathBuf::from,
    )
}
