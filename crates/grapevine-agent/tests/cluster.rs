//! Clusters of real agents on loopback: a key rotation on ten encrypted agents, a SIGKILL
//! and a restart from the data directory, and IPv6 end to end.

mod common;

use common::{eventually, get, metric, Agent, Spec};
use std::time::{Duration, Instant};

const OLD_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01
const NEW_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 × 0x02

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// The sum of one counter over every agent's `/metrics`.
fn total(agents: &[Agent], series: &str) -> f64 {
    agents
        .iter()
        .map(|a| {
            get(&format!("http://{}/metrics", a.http))
                .and_then(|t| metric(&t, series))
                .unwrap_or(0.0)
        })
        .sum()
}

#[test]
fn rotating_the_key_of_ten_running_agents_marks_no_one_failed() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, OLD_KEY).unwrap();
    let key_arg = key_file.to_str().unwrap();
    let first = Spec::new("n0")
        .args(&["--encrypt-key-file", key_arg])
        .start();
    let seed = first.gossip;
    let mut agents = vec![first];
    for name in names(10).iter().skip(1) {
        agents.push(
            Spec::new(name)
                .join(seed)
                .args(&["--encrypt-key-file", key_arg])
                .start(),
        );
    }
    let all: Vec<String> = names(10);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    let joined = eventually(Duration::from_secs(30), || common::all_alive(&refs, &all));
    println!("10 encrypted agents joined in {joined:?}");

    // Install everywhere, then switch everyone to the new key, then remove the old one.
    let t0 = Instant::now();
    for (op, key) in [("install", NEW_KEY), ("use", NEW_KEY), ("remove", OLD_KEY)] {
        for a in &agents {
            let (ok, _, err) = a.cli(&["keys", op, key]);
            assert!(ok, "keys {op} on {}: {err}", a.name);
        }
    }
    println!("rotated in {:?}", t0.elapsed());
    for a in &agents {
        let (_, out, _) = a.cli(&["keys", "list"]);
        let keys: Vec<String> = serde_json::from_str(out.trim()).unwrap();
        // Listed by fingerprint (SHA-256 of 32 × 0x02, first 8 bytes).
        assert_eq!(keys, ["75877bb41d393b5f"], "{}", a.name);
    }
    // Several probe periods on the new key alone: everyone still reaches everyone.
    std::thread::sleep(Duration::from_secs(4));
    assert!(common::all_alive(&refs, &all));
    let b = agents[9].http;
    ureq::put(&format!("http://{b}/v1/kv/after/rotation"))
        .send_string("ok")
        .unwrap();
    eventually(Duration::from_secs(10), || {
        agents.iter().all(|a| {
            get(&format!("http://{}/v1/kv/after/rotation", a.http))
                .is_some_and(|s| s.contains("b2s="))
        })
    });
    // Counters are exported once a second.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(total(&agents, "grapevine_declared_failed_total"), 0.0);
    assert_eq!(total(&agents, "grapevine_suspicions_total"), 0.0);
    assert_eq!(
        total(
            &agents,
            "grapevine_dropped_total{layer=\"envelope\",reason=\"bad_key\"}"
        ),
        0.0
    );
    assert_eq!(total(&agents, "grapevine_members{state=\"failed\"}"), 0.0);
}

#[test]
fn an_agent_killed_and_restarted_from_its_data_directory_is_back_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let data_arg = data.to_str().unwrap().to_string();
    let a = Spec::new("a").start();
    let b = Spec::new("b").join(a.gossip).start();
    let c = Spec::new("c")
        .join(a.gossip)
        .args(&["--data-dir", &data_arg])
        .start();
    let c_port = c.gossip.port();
    eventually(Duration::from_secs(15), || {
        common::all_alive(&[&a, &b, &c], &["a", "b", "c"])
    });
    ureq::put(&format!("http://{}/v1/grapevine/state/c/version", c.http))
        .send_string("1.2.3")
        .unwrap();
    let incarnation = |agent: &Agent| -> u64 {
        common::members_json(agent.http)
            .and_then(|v| v.as_array()?.iter().find(|m| m["name"] == "c")?["incarnation"].as_u64())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/grapevine/state/c", a.http))
            .is_some_and(|s| s.contains("MS4yLjM="))
    });
    // Let a snapshot be written (every 2 s), then SIGKILL: no leave, so c is failed.
    std::thread::sleep(Duration::from_millis(2500));
    let before = incarnation(&a);
    c.signal("KILL");
    drop(c);
    let detected = eventually(Duration::from_secs(20), || {
        a.members().get("c").map(String::as_str) == Some("failed")
            && b.members().get("c").map(String::as_str) == Some("failed")
    });
    println!("SIGKILL detected by both survivors in {detected:?}");

    // Restart on the same address with the same data directory and no --join: it rejoins the
    // members it remembers, with a higher incarnation, its state intact.
    let t0 = Instant::now();
    let c = Spec::new("c")
        .port(c_port)
        .args(&["--data-dir", &data_arg])
        .start();
    eventually(Duration::from_secs(20), || {
        common::all_alive(&[&a, &b, &c], &["a", "b", "c"])
    });
    println!("restarted and alive everywhere in {:?}", t0.elapsed());
    assert!(incarnation(&a) > before, "a higher incarnation");
    let state = get(&format!("http://{}/v1/grapevine/state/c", b.http)).unwrap();
    assert!(state.contains("\"Value\":\"MS4yLjM=\""), "{state}");
}

#[test]
fn agents_on_ipv6_loopback_join_and_share_keys() {
    let v6: std::net::IpAddr = "::1".parse().unwrap();
    if std::net::UdpSocket::bind((v6, 0)).is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let a = Spec::new("six-a").ip(v6).start();
    let b = Spec::new("six-b").ip(v6).join(a.gossip).start();
    eventually(Duration::from_secs(15), || {
        common::all_alive(&[&a, &b], &["six-a", "six-b"])
    });
    let listed = common::members_json(a.http).unwrap();
    let addr_b = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "six-b")
        .unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(addr_b, b.gossip.to_string());
    assert!(addr_b.starts_with("[::1]:"));
    ureq::put(&format!("http://{}/v1/kv/v6/key", a.http))
        .send_string("yes")
        .unwrap();
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/kv/v6/key", b.http)).is_some_and(|s| s.contains("eWVz"))
    });
    // Graceful leave over IPv6 too.
    b.signal("TERM");
    eventually(Duration::from_secs(10), || {
        a.members().get("six-b").map(String::as_str) == Some("left")
    });
}

/// Ten agents each contribute a value; every agent then reads the cluster's average, sum
/// and count locally, exact to 10⁻³; a write is awaited with `kv await`.
#[test]
fn ten_agents_agree_on_the_average_and_a_write_is_awaited() {
    let first = Spec::new("g0").start();
    let seed = first.gossip;
    let mut agents = vec![first];
    for i in 1..10 {
        agents.push(Spec::new(&format!("g{i}")).join(seed).start());
    }
    let names: Vec<String> = (0..10).map(|i| format!("g{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    eventually(Duration::from_secs(30), || common::all_alive(&refs, &all));
    let values: Vec<f64> = (0..10).map(|i| 1.5 + f64::from(i) * 7.25).collect();
    let t0 = Instant::now();
    for (a, v) in agents.iter().zip(&values) {
        let (ok, _, err) = a.cli(&["aggregate", "load", &v.to_string()]);
        assert!(ok, "{err}");
    }
    let sum: f64 = values.iter().sum();
    let avg = sum / 10.0;
    let close = |got: &serde_json::Value, want: f64| {
        got.as_f64()
            .is_some_and(|g| ((g - want) / want).abs() <= 1e-3)
    };
    let took = eventually(Duration::from_secs(60), || {
        agents.iter().all(|a| {
            get(&format!("http://{}/v1/grapevine/aggregate/load", a.http))
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|e| {
                    close(&e["Average"], avg) && close(&e["Sum"], sum) && close(&e["Count"], 10.0)
                })
        })
    });
    println!(
        "10 agents read the average within 1e-3 after {took:?} ({:?} since the first contribution)",
        t0.elapsed()
    );
    let (ok, out, _) = agents[3].cli(&["aggregate", "load"]);
    assert!(ok && out.starts_with("load: average "), "{out}");

    // kv await: returns once every agent holds the write.
    let (ok, _, err) = agents[0].cli(&["kv", "put", "cfg/flag", "on"]);
    assert!(ok, "{err}");
    let t0 = Instant::now();
    let (ok, out, err) = agents[0].cli(&["kv", "await", "cfg/", "--timeout", "30s"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("converged") && out.contains("cfg/flag\ton"),
        "{out}"
    );
    println!("kv await returned after {:?}", t0.elapsed());
    for a in &agents {
        let (_, v, _) = a.cli(&["kv", "get", "cfg/flag"]);
        assert_eq!(v, "on\n", "{} holds the write when await returns", a.name);
    }
}
