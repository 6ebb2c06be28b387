//! Five Serf agents and five grapevine agents speaking Serf, in a network namespace: ten
//! minutes idle, then ten minutes with 10 % of all packets dropped at random (nftables), and
//! no member of either kind is ever marked failed (`GRAPEVINE_SERF_SOAK_SECS` sets each
//! phase's length). Every member runs a `member-failed` handler that records any failure.
//!
//! Twenty minutes is too long for the suite's critical path: it is `#[ignore]`d there and
//! `.ci/run` runs it alongside the suite. Needs root, iproute2, nftables and `serf`.

mod common;

use common::netns::{may_run, Lab};
use common::serf::{all_see, serf_available, spawn, Kind, Member, Opts};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[test]
#[ignore = "twenty minutes: .ci/run runs it beside the suite"]
fn a_mixed_cluster_idle_then_under_ten_percent_loss_never_marks_a_live_member_failed() {
    if !may_run("the Serf soak") || !serf_available("the Serf soak") {
        return;
    }
    let secs: u64 = std::env::var("GRAPEVINE_SERF_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let lab = Lab::loopback();
    let prefix = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        lab.hosts[0].ns.clone(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("failed.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$SERF_SELF_NAME saw $(cat)\" >> {}/failed\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut ms: Vec<Member> = Vec::new();
    for i in 0..10u16 {
        let kind = if i % 2 == 0 {
            Kind::Serf
        } else {
            Kind::Grapevine
        };
        let name = format!("{}{}", if i % 2 == 0 { "s" } else { "g" }, i / 2);
        let o = Opts {
            join: ms.last().map(|m| m.gossip),
            handlers: vec![format!("member-failed={}", script.display())],
            log: Some(dir.path().join(format!("{name}.log"))),
            prefix: prefix.clone(),
            ..Opts::default()
        };
        ms.push(spawn(kind, &name, at(7946 + i), at(8400 + i), &o));
        std::thread::sleep(Duration::from_millis(300));
    }
    let names: Vec<String> = ms.iter().map(|m| m.name.clone()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let every: Vec<&Member> = ms.iter().collect();
    common::eventually(Duration::from_secs(60), || all_see(&every, &refs, "alive"));
    let failures = || std::fs::read_to_string(dir.path().join("failed")).unwrap_or_default();
    let watch = |phase: &str, secs: u64| {
        let t0 = Instant::now();
        let (mut polls, mut retried) = (0, 0);
        while t0.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(10));
            polls += 1;
            for m in &every {
                // The poll's own TCP crosses the lossy link too, and the CLI stops
                // connecting after 5 s: in CI one poll of a grapevine agent under loss got
                // no answer at all. Up to three tries; an agent that never answers still
                // fails the test.
                let mut v = m.view();
                for _ in 1..3 {
                    if !v.is_empty() {
                        break;
                    }
                    retried += 1;
                    eprintln!("{phase}: {} did not answer its CLI; asking again", m.name);
                    v = m.view();
                }
                // An agent that does not answer must fail the test, not pass it vacuously.
                assert_eq!(v.len(), 10, "{phase}: {} lists {v:?}", m.name);
                for (n, s) in v {
                    assert_ne!(s.status, "failed", "{phase}: {} saw {n} failed", m.name);
                }
            }
            assert_eq!(failures(), "", "{phase}: a member-failed handler ran");
        }
        eprintln!(
            "{phase}: {secs} s, {polls} polls of all ten members ({retried} retried after no \
             answer): no failure"
        );
    };
    watch("idle", secs);
    lab.loss(0, 10);
    watch("10% loss", secs);
    eprintln!("packets dropped by the loss rule: {}", lab.dropped(0));
    if !all_see(&every, &refs, "alive") {
        for m in &every {
            eprintln!("{} lists {:?}", m.name, m.view());
            let log = std::fs::read_to_string(dir.path().join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("{} log tail: {tail:#?}", m.name);
        }
        panic!("not every member lists every member alive at the end");
    }
}
