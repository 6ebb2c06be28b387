//! 20 agents (the `lan` profile) in a network namespace whose loopback drops 10 % of all
//! packets at random (nftables), for 10 minutes (`GRAPEVINE_LOSS_SECS` to change): no live
//! agent may ever be marked failed. Every agent runs a `member-failed` handler that records
//! any failure it sees, and at the end every agent's counters are read.
//!
//! Needs root, iproute2 and nftables; skipped with a message without them, unless
//! `GRAPEVINE_REQUIRE_NETNS` is set (as `.ci/run` does), which makes that a failure.

mod common;

use common::netns::{may_run, Lab};
use common::{metric, BIN};
use std::process::Stdio;
use std::time::{Duration, Instant};

const AGENTS: usize = 20;

#[test]
fn twenty_agents_under_ten_percent_loss_never_mark_a_live_agent_failed() {
    if !may_run("the 10% loss test") {
        return;
    }
    let secs: u64 = std::env::var("GRAPEVINE_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let lab = Lab::loopback();
    lab.loss(0, 10);
    let dir = tempfile::tempdir().unwrap();
    let failed_log = |i: usize| dir.path().join(format!("failed-{i}"));
    let agent_log = |i: usize| dir.path().join(format!("agent-{i}.log"));
    let api = |i: usize| format!("127.0.0.1:{}", 8500 + i);
    let mut children = Vec::new();
    for i in 0..AGENTS {
        let mut cmd = lab.command(0, BIN);
        cmd.args(["agent", "--name", &format!("a{i}"), "--profile", "lan"])
            .args(["--bind", &format!("127.0.0.1:{}", 7946 + i)])
            .args(["--http", &api(i)])
            .args(["--join", "127.0.0.1:7946"])
            .args([
                "--event-handler",
                &format!(
                    "member-failed=(date +%T.%N; cat) >> {}",
                    failed_log(i).display()
                ),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(agent_log(i)).expect("log file"));
        children.push(cmd.spawn().expect("agent starts"));
    }
    let t0 = Instant::now();
    // Joined: every agent lists all 20 as live. Under this loss some member is briefly
    // suspect now and then (and refutes), so "live" is alive or suspect here; failures are
    // what the handlers watch for.
    let live_everywhere = || {
        (0..AGENTS).all(|i| {
            lab.http_get(0, &format!("http://{}/v1/grapevine/members", api(i)))
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    v.as_array().map(|a| {
                        a.iter()
                            .filter(|m| m["status"] == "alive" || m["status"] == "suspect")
                            .count()
                    })
                })
                == Some(AGENTS)
        })
    };
    while !live_everywhere() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no join in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{AGENTS} agents joined under 10% loss in {:.2?}",
        t0.elapsed()
    );

    let t1 = Instant::now();
    let failures = || -> String {
        (0..AGENTS)
            .filter_map(|i| std::fs::read_to_string(failed_log(i)).ok())
            .collect()
    };
    while t1.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5).min(Duration::from_secs(secs)));
        let f = failures();
        if !f.is_empty() {
            // The member events of every agent, for the post-mortem.
            let events: String = (0..AGENTS)
                .filter_map(|i| std::fs::read_to_string(agent_log(i)).ok())
                .flat_map(|l| {
                    l.lines()
                        .filter(|l| l.contains("member event") || l.contains("WARN"))
                        .map(|l| format!("{l}\n"))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "after {:.0?} under loss, live agents were marked failed:\n{f}\n{events}",
                t1.elapsed()
            );
        }
    }
    // The counters, once more through the lossy loopback.
    let mut totals = [0.0f64; 6];
    let series = [
        "grapevine_declared_failed_total",
        "grapevine_suspicions_total",
        "grapevine_refutations_total",
        "grapevine_probes_total",
        "grapevine_probes_indirect_acks_total",
        "grapevine_probes_fallback_acks_total",
    ];
    for i in 0..AGENTS {
        let text = (0..5)
            .find_map(|_| lab.http_get(0, &format!("http://{}/metrics", api(i))))
            .expect("metrics");
        for (t, s) in totals.iter_mut().zip(series) {
            *t += metric(&text, s).unwrap_or(0.0);
        }
    }
    println!(
        "{secs} s at 10% loss: {} packets dropped; probes {}, answered indirectly {}, by the TCP \
         fallback {}; suspicions {}, refuted {}, members declared failed {}",
        lab.dropped(0),
        totals[3],
        totals[4],
        totals[5],
        totals[1],
        totals[2],
        totals[0]
    );
    assert_eq!(totals[0], 0.0, "no member declared failed");
    assert!(lab.dropped(0) > 1000, "the loss rule dropped packets");
    assert!(failures().is_empty());
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
