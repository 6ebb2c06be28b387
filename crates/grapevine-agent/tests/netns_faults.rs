//! The fault-injection suite: hosts as network namespaces on a bridge, one `grapevine agent`
//! (the `lan` profile) per host with its own data directory, and faults made with nftables
//! inside the namespaces: partitions, one-way cuts, loss, a blocked protocol, SIGKILL and
//! restarts, SIGSTOP and SIGCONT. Each scenario asserts its outcome and prints its times.
//!
//! Needs root, iproute2 and nftables; skipped with a message without them, unless
//! `GRAPEVINE_REQUIRE_NETNS` is set (as `.ci/run` does), which makes that a failure.

mod common;

use common::netns::{may_run, Lab};
use common::{metric, BIN};
use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const GOSSIP_PORT: u16 = 7946;
const HTTP_PORT: u16 = 8500;

/// A cluster of agents, one per host of a lab. Dropping it kills them and tears the lab down.
struct Cluster {
    agents: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    // Declared last: dropped after the agents are killed.
    lab: Lab,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.agents.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    /// `n` hosts, each running an agent that joins through host 0.
    fn start(n: usize) -> Cluster {
        let mut c = Cluster {
            lab: Lab::bridged(n),
            agents: Vec::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        for i in 0..n {
            let child = c.spawn(i);
            c.agents.push(Some(child));
        }
        c
    }

    /// `n` hosts joined (all alive everywhere within 60 s), or `None` (with a message) if
    /// this machine cannot run the `scenario`; also the time the join took.
    fn ready(n: usize, scenario: &str) -> Option<(Cluster, Duration)> {
        if !may_run(scenario) {
            return None;
        }
        let c = Cluster::start(n);
        let joined = c.converge(secs(60));
        Some((c, joined))
    }

    fn n(&self) -> usize {
        self.lab.hosts.len()
    }

    fn name(i: usize) -> String {
        format!("h{i}")
    }

    fn api(&self, i: usize) -> String {
        format!("http://{}:{HTTP_PORT}", self.lab.hosts[i].ip)
    }

    fn spawn(&self, i: usize) -> Child {
        let ip = self.lab.hosts[i].ip;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("h{i}.log")))
            .expect("log file");
        self.lab
            .command(i, BIN)
            .args(["agent", "--name", &Cluster::name(i), "--profile", "lan"])
            .args(["--bind", &format!("{ip}:{GOSSIP_PORT}")])
            .args(["--http", &format!("{ip}:{HTTP_PORT}")])
            .args(["--join", &format!("{}:{GOSSIP_PORT}", self.lab.hosts[0].ip)])
            .args([
                "--data-dir",
                &self.dir.path().join(format!("data-{i}")).to_string_lossy(),
            ])
            .args([
                "--event-handler",
                &format!(
                    "member-failed=(printf '%s\\t' $(date +%s.%N); cat) >> {}",
                    self.dir.path().join(format!("failed-{i}")).display()
                ),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts")
    }

    /// Host `i`'s view: member name → status (empty if its API did not answer).
    fn view(&self, i: usize) -> HashMap<String, String> {
        self.lab
            .http_get(i, &format!("{}/v1/grapevine/members", self.api(i)))
            .map(|body| common::parse_members(&body))
            .unwrap_or_default()
    }

    /// Whether every host in `observers` lists every host in `targets` with `status`.
    fn all_see(&self, observers: &[usize], targets: &[usize], status: &str) -> bool {
        observers.iter().all(|&o| {
            let v = self.view(o);
            targets
                .iter()
                .all(|&t| v.get(&Cluster::name(t)).map(String::as_str) == Some(status))
        })
    }

    fn everyone(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// Polls until `f` holds; fails after `limit` saying `what`. Returns the time it took.
    fn until(&self, what: &str, limit: Duration, mut f: impl FnMut(&Cluster) -> bool) -> Duration {
        let t0 = Instant::now();
        while !f(self) {
            if t0.elapsed() > limit {
                let views: Vec<String> = (0..self.n())
                    .map(|i| format!("h{i}: {:?}", sorted(self.view(i))))
                    .collect();
                panic!("{what}: not within {limit:?}\n{}", views.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        t0.elapsed()
    }

    /// Waits until all hosts list all hosts alive.
    fn converge(&self, limit: Duration) -> Duration {
        let all = self.everyone();
        self.until("all alive everywhere", limit, |c| {
            c.all_see(&all, &all, "alive")
        })
    }

    fn put(&self, i: usize, key: &str, value: &str) {
        let out = self
            .lab
            .command(i, "python3")
            .args([
                "-c",
                "import sys, urllib.request\n\
                 r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='PUT')\n\
                 sys.stdout.write(urllib.request.urlopen(r, timeout=5).read().decode())",
                &format!("{}/v1/kv/{key}", self.api(i)),
                value,
            ])
            .output()
            .expect("python runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "true",
            "PUT {key} on h{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keys under `prefix` that host `i` holds.
    fn keys(&self, i: usize, prefix: &str) -> Vec<String> {
        self.lab
            .http_get(i, &format!("{}/v1/kv/{prefix}?keys", self.api(i)))
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default()
    }

    /// Every host holds every key in `keys` (under `prefix`).
    fn all_hold(&self, prefix: &str, keys: &[String]) -> bool {
        (0..self.n()).all(|i| {
            let held = self.keys(i, prefix);
            keys.iter().all(|k| held.contains(k))
        })
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.agents[i].as_ref().expect("running").id().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} h{i}");
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a graceful leave) and wait for the exit.
    fn stop(&mut self, i: usize) {
        self.signal(i, "TERM");
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        let child = self.spawn(i);
        self.agents[i] = Some(child);
    }

    /// The `member-failed` events any handler recorded.
    fn failures(&self) -> String {
        (0..self.n())
            .filter_map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("failed-{i}"))).ok()
            })
            .collect()
    }

    /// When (UNIX seconds) each host's handler first recorded `name` failed, for the hosts
    /// that did.
    fn failed_at(&self, name: &str) -> Vec<f64> {
        (0..self.n())
            .filter_map(|i| {
                let text =
                    std::fs::read_to_string(self.dir.path().join(format!("failed-{i}"))).ok()?;
                text.lines().find_map(|l| {
                    let mut f = l.split('\t');
                    let t = f.next()?.parse::<f64>().ok()?;
                    (f.next()? == name).then_some(t)
                })
            })
            .collect()
    }

    /// One counter summed over the hosts that answer.
    fn total(&self, series: &str) -> f64 {
        (0..self.n())
            .filter_map(|i| self.lab.http_get(i, &format!("{}/metrics", self.api(i))))
            .filter_map(|t| metric(&t, series))
            .sum()
    }

    /// Every host's logged member events, and its warnings, in one text for a post-mortem.
    fn events(&self) -> String {
        (0..self.n())
            .flat_map(|i| {
                self.log(i)
                    .lines()
                    .filter(|l| l.contains("member event") || l.contains("WARN"))
                    .map(|l| format!("h{i}: {l}\n"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("h{i}.log"))).unwrap_or_default()
    }
}

fn sorted(v: HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<_> = v.into_iter().collect();
    v.sort();
    v
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// 9 hosts split 4/5 for longer than the dead timeout: each side marks the other failed and
/// keeps taking writes; after the heal all are alive everywhere within 30 s, with no
/// operator action, and every write of both sides is on every host.
#[test]
fn a_4_5_partition_heals_by_itself_and_loses_no_write() {
    let Some((c, joined)) = Cluster::ready(9, "partition") else {
        return;
    };
    let (left, right): (Vec<usize>, Vec<usize>) = ((0..4).collect(), (4..9).collect());
    c.lab.partition(&[&left, &right]);
    let t0 = Instant::now();
    let split = c.until("each side sees the other failed", secs(60), |c| {
        c.all_see(&left, &right, "failed") && c.all_see(&right, &left, "failed")
    });
    let mut written = Vec::new();
    for (i, host) in [0, 2, 5, 8].into_iter().enumerate() {
        let key = format!("k{i}-from-h{host}");
        c.put(host, &format!("p/{key}"), "v");
        written.push(format!("p/{key}"));
    }
    // Stay split well past the dead timeout.
    std::thread::sleep(secs(20).saturating_sub(t0.elapsed()));
    c.lab.heal();
    let healed = c.converge(secs(30));
    let merged = c.until("every write on every host", secs(30), |c| {
        c.all_hold("p/", &written)
    });
    println!(
        "partition 4/5: joined {joined:.2?}; each side saw the other failed after {split:.2?}; \
         after the heal all alive everywhere in {healed:.2?}, every write everywhere {merged:.2?} \
         later"
    );
}

/// Host 8 stops hearing host 0 (one way): host 0's probes of it go indirect and succeed, so
/// nobody marks it failed; if it is suspected it refutes, and the longest suspicion is
/// measured.
#[test]
fn a_one_way_cut_is_bridged_by_indirect_probes() {
    let Some((c, _)) = Cluster::ready(9, "one-way cut") else {
        return;
    };
    c.lab.deaf(8, 0);
    let t0 = Instant::now();
    let mut suspect_since: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    while t0.elapsed() < secs(60) {
        let suspected = (0..8).any(|i| c.view(i).get("h8").map(String::as_str) == Some("suspect"));
        match (suspected, suspect_since) {
            (true, None) => suspect_since = Some(Instant::now()),
            (false, Some(s)) => {
                longest = longest.max(s.elapsed());
                suspect_since = None;
            }
            _ => {}
        }
        assert!(
            c.failures().is_empty(),
            "h8 marked failed:\n{}",
            c.failures()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(suspect_since.is_none_or(|s| s.elapsed() < secs(10)));
    let indirect = c.total("grapevine_probes_indirect_acks_total");
    assert!(indirect > 0.0, "h0's probes of h8 went indirect");
    println!(
        "one-way cut of h0 → h8 for 60 s: never failed; {indirect} probes answered indirectly; \
         longest suspicion of h8 seen {longest:.2?}; {} suspicions, {} refutations in all",
        c.total("grapevine_suspicions_total"),
        c.total("grapevine_refutations_total")
    );
}

/// 20 % loss on every host for 5 minutes: no false failure, and writes still reach everyone.
#[test]
fn twenty_percent_loss_everywhere_makes_no_false_failure() {
    let Some((c, _)) = Cluster::ready(9, "20% loss") else {
        return;
    };
    for i in 0..9 {
        c.lab.loss(i, 20);
    }
    let t0 = Instant::now();
    let mut written = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut round = 0;
    while t0.elapsed() < secs(300) {
        let key = format!("l/{round}");
        c.put(round % 9, &key, "v");
        written.push(key);
        let spread = c.until("a write reaches every host under 20% loss", secs(60), |c| {
            c.all_hold("l/", &written)
        });
        slowest = slowest.max(spread);
        round += 1;
        assert!(
            c.failures().is_empty(),
            "false failures:\n{}\n{}",
            c.failures(),
            c.events()
        );
        std::thread::sleep(secs(20).saturating_sub(spread));
    }
    let dropped: u64 = (0..9).map(|i| c.lab.dropped(i)).sum();
    println!(
        "20% loss on 9 hosts for 300 s: {dropped} packets dropped, 0 false failures ({} \
         suspicions raised, {} refutations); {round} writes each reached every host, the \
         slowest in {slowest:.2?}",
        c.total("grapevine_suspicions_total"),
        c.total("grapevine_refutations_total")
    );
    assert_eq!(c.total("grapevine_declared_failed_total"), 0.0);
}

/// UDP blocked for one host, TCP open: the TCP fallback probe keeps it alive, and its logs and
/// metrics say so.
#[test]
fn a_host_without_udp_stays_alive_through_the_tcp_fallback() {
    let Some((c, _)) = Cluster::ready(5, "udp blocked") else {
        return;
    };
    c.lab.block_protocol(4, "udp");
    std::thread::sleep(secs(30));
    assert!(c.failures().is_empty(), "failed:\n{}", c.failures());
    assert!(
        c.all_see(&[0, 1, 2, 3], &[4], "alive"),
        "h4 alive on the others"
    );
    let fallback = c.total("grapevine_probes_fallback_acks_total");
    assert!(fallback > 0.0, "probes answered over TCP");
    let warned = (0..4).any(|i| c.log(i).contains("probe answered only over TCP"));
    assert!(warned, "the logs say UDP may be blocked");
    println!("UDP blocked for h4 for 30 s: never failed; {fallback} probes answered by the TCP fallback, and logged");
}

/// A rolling restart of all 9 (SIGTERM, then start again with the data directory), a write
/// between each: no write lost, no host failed at the end.
#[test]
fn a_rolling_restart_loses_no_write() {
    let Some((mut c, _)) = Cluster::ready(9, "rolling restart") else {
        return;
    };
    let t0 = Instant::now();
    let mut written = Vec::new();
    for i in 0..9 {
        c.stop(i);
        let writer = (i + 1) % 9;
        let key = format!("r/while-h{i}-down");
        c.put(writer, &key, "v");
        written.push(key);
        c.restart(i);
        c.converge(secs(30));
    }
    let all = c.until("every write on every host", secs(30), |c| {
        c.all_hold("r/", &written)
    });
    assert!(c.failures().is_empty(), "failures:\n{}", c.failures());
    println!(
        "rolling restart of 9 hosts in {:.2?}; every write on every host {all:.2?} after the last",
        t0.elapsed()
    );
}

/// SIGSTOP of one host past the suspicion timeout (it looks dead), then SIGCONT: it refutes
/// and is alive everywhere again.
#[test]
fn a_stopped_host_that_resumes_refutes_its_death() {
    let Some((c, _)) = Cluster::ready(9, "sigstop") else {
        return;
    };
    let stopped = unix_now();
    c.signal(8, "STOP");
    c.until("h8 failed everywhere", secs(60), |c| {
        c.all_see(&(0..8).collect::<Vec<_>>(), &[8], "failed")
    });
    // The handlers' timestamps: when the last of the 8 recorded the failure.
    let seen = c.failed_at("h8");
    assert_eq!(
        seen.len(),
        8,
        "every other host ran its member-failed handler"
    );
    let failed = seen.iter().cloned().fold(0.0, f64::max) - stopped;
    c.signal(8, "CONT");
    let back = c.converge(secs(60));
    println!(
        "SIGSTOP h8: failed everywhere {failed:.2} s later (handler timestamps); after SIGCONT \
         alive everywhere in {back:.2?} (polled)"
    );
}

/// 30 hosts joining through one seed, then one killed: join and detection times.
#[test]
fn thirty_hosts_join_through_one_seed_and_detect_a_kill() {
    if !may_run("30 hosts") {
        return;
    }
    let t0 = Instant::now();
    let mut c = Cluster::start(30);
    c.converge(secs(90));
    let started = t0.elapsed();
    let t1 = Instant::now();
    let everyone = c.everyone();
    assert!(c.all_see(&everyone, &everyone, "alive"));
    let poll = t1.elapsed();
    let killed = unix_now();
    c.kill(29);
    let survivors: Vec<usize> = (0..29).collect();
    c.until("the kill is seen everywhere", secs(60), |c| {
        c.all_see(&survivors, &[29], "failed")
    });
    let seen = c.failed_at("h29");
    assert_eq!(
        seen.len(),
        29,
        "every survivor ran its member-failed handler"
    );
    let first = seen.iter().cloned().fold(f64::MAX, f64::min) - killed;
    let last = seen.iter().cloned().fold(0.0, f64::max) - killed;
    println!(
        "30 hosts: all alive everywhere {started:.2?} after starting (polled: one poll of the \
         30 views takes {poll:.2?}); a SIGKILLed host declared failed {first:.2} s \
         after the kill and failed everywhere {last:.2} s after it (handler timestamps)"
    );
}

/// The remaining faults of the harness on 5 hosts: TCP blocked for one host (UDP open), one
/// host isolated and brought back, one SIGKILLed and restarted with its data directory.
#[test]
fn tcp_blocked_isolation_and_a_kill_with_restart() {
    let Some((mut c, _)) = Cluster::ready(5, "isolation") else {
        return;
    };
    let others = |h: usize| (0..5).filter(|&i| i != h).collect::<Vec<_>>();

    // TCP blocked for h4: probes and gossip ride UDP, so it stays alive.
    c.lab.block_protocol(4, "tcp");
    std::thread::sleep(secs(15));
    assert!(c.all_see(&others(4), &[4], "alive"), "h4 alive without TCP");
    c.lab.clear(4);

    // h3 isolated: failed everywhere else; back, and alive everywhere, once reconnected.
    c.lab.isolate(3);
    let cut = c.until("h3 failed on the others", secs(60), |c| {
        c.all_see(&others(3), &[3], "failed")
    });
    c.lab.clear(3);
    let back = c.converge(secs(60));

    // h2 SIGKILLed, then restarted with its data directory: back with its key.
    c.put(2, "mine/h2", "kept");
    c.until("h2's write everywhere", secs(30), |c| {
        c.all_hold("mine/", &["mine/h2".to_string()])
    });
    c.kill(2);
    let killed = c.until("h2 failed on the others", secs(60), |c| {
        c.all_see(&others(2), &[2], "failed")
    });
    c.restart(2);
    let restarted = c.converge(secs(60));
    assert!(c.keys(2, "mine/").contains(&"mine/h2".to_string()));
    assert!(
        c.failures().lines().all(|l| !l.contains("h4")),
        "h4 never failed"
    );
    println!(
        "TCP blocked for h4 15 s: stayed alive; h3 isolated: failed elsewhere after {cut:.2?}, \
         alive everywhere {back:.2?} after the cut was lifted; h2 SIGKILLed: failed elsewhere \
         after {killed:.2?}, restarted with its data directory and alive everywhere in \
         {restarted:.2?} (polled)"
    );
}
