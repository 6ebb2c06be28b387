//! Two `grapevine agent` processes on loopback: they join, a key written through one HTTP
//! API is read through the other, `grapevine members` lists both, and SIGTERM leaves.

mod common;

use common::{eventually, free_port, get, members_json, Agent, Spec, BIN};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn two_agents_join_share_a_key_and_one_leaves_on_sigterm() {
    let a = Spec::new("alpha").start();
    let mut b = Spec::new("beta").join(a.gossip).start();
    eventually(Duration::from_secs(15), || {
        members_json(a.http).and_then(|v| v.as_array().map(|m| m.len())) == Some(2)
    });
    ureq::put(&format!("http://{}/v1/kv/app/colour", a.http))
        .send_string("blue")
        .expect("put");
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/kv/app/colour", b.http))
            .is_some_and(|body| body.contains("\"Value\":\"Ymx1ZQ==\""))
    });
    let v = members_json(b.http).expect("members");
    let alpha = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "alpha")
        .expect("alpha listed");
    assert_eq!(alpha["status"], "alive");
    assert!(alpha["incarnation"].is_u64() && alpha["tags"].is_string());
    // SIGTERM: beta leaves; alpha lists it as left, not failed.
    b.signal("TERM");
    let status = b.child.wait().expect("exits");
    assert!(status.success(), "a graceful exit");
    eventually(Duration::from_secs(10), || {
        members_json(a.http).is_some_and(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "beta" && m["status"] == "left")
        })
    });
    // No agent: a clear error.
    let out = Command::new(BIN)
        .args(["members", "--http", &b.http.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent answers"));
}

#[test]
fn the_demo_runs_a_small_cluster_through_every_step() {
    let out = Command::new(BIN)
        .args(["demo", "--nodes", "5", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let steps = steps.as_array().expect("array");
    assert_eq!(steps.len(), 5, "{steps:?}");
    for s in steps {
        // A key can reach all five in-process members before the first read (the demo
        // rounds to the millisecond): zero is a time too.
        assert!(
            s["seconds"]
                .as_f64()
                .is_some_and(|t| (0.0..60.0).contains(&t)),
            "{s}"
        );
    }
}

/// python-consul, from PyPI, against a real agent: put, get, list, check-and-set, a watch
/// (blocking query), delete, members (scripts/consul-client-check.py).
#[test]
fn python_consul_works_against_the_agent() {
    if !common::python_consul() {
        return;
    }
    let a = Spec::new("consul-compat").start();
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/agent/self", a.http)).is_some()
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/consul-client-check.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(a.http.to_string())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

/// `grapevine kv`, `event` and `info` against a real agent.
#[test]
fn the_cli_reads_writes_and_lists_keys_and_fires_events() {
    let a = Spec::new("cli").start();
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/agent/self", a.http)).is_some()
    });
    let cli = |args: &[&str]| {
        let mut full: Vec<&str> = args.to_vec();
        let http = a.http.to_string();
        full.extend(["--http", &http]);
        let out = Command::new(BIN).args(&full).output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(cli(&["kv", "put", "cfg/a", "1"]).0);
    assert!(cli(&["kv", "put", "cfg/b", "2"]).0);
    assert_eq!(cli(&["kv", "get", "cfg/a"]).1, "1\n");
    assert_eq!(cli(&["kv", "list", "cfg/"]).1, "cfg/a\t1\ncfg/b\t2\n");
    assert!(cli(&["kv", "delete", "cfg/a"]).0);
    let (ok, _, err) = cli(&["kv", "get", "cfg/a"]);
    assert!(!ok && err.contains("no such key"), "{err}");
    let (ok, out, _) = cli(&["event", "deploy", "v2"]);
    assert!(ok && out.contains("\"Name\":\"deploy\""), "{out}");
    let (ok, out, _) = cli(&["info"]);
    assert!(ok && out.contains("\"NodeName\":\"cli\""), "{out}");
}

/// `grapevine keys`: an encrypted agent's keyring listed, extended, switched and trimmed;
/// the API shows keys' fingerprints only (the first 8 bytes of their SHA-256), never keys.
#[test]
fn the_keyring_can_be_rotated_through_the_cli() {
    let old = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01
    let new = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="; // 32 × 0x02
    let file = std::env::temp_dir().join(format!("grapevine-key-{}", std::process::id()));
    std::fs::write(&file, old).unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gossip = free_port();
    let child = Command::new(BIN)
        .args(["agent", "--name", "keyed", "--profile", "local"])
        .args([
            "--bind",
            &format!("127.0.0.1:{gossip}"),
            "--http",
            &http.to_string(),
        ])
        .args(["--encrypt-key-file", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let _a = Agent::guard(
        child,
        "keyed",
        http,
        format!("127.0.0.1:{gossip}").parse().unwrap(),
    );
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{http}/v1/agent/self")).is_some()
    });
    let keys = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("keys")
            .args(args)
            .args(["--http", &http.to_string()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let listed = |s: &str| -> Vec<String> { serde_json::from_str(s.trim()).unwrap() };
    let (old_fp, new_fp) = ("72cd6e8422c407fb", "75877bb41d393b5f");
    assert_eq!(listed(&keys(&["list"]).1), vec![old_fp]);
    assert_eq!(listed(&keys(&["install", new]).1), vec![old_fp, new_fp]);
    assert_eq!(listed(&keys(&["use", new]).1), vec![new_fp, old_fp]);
    assert_eq!(listed(&keys(&["remove", old]).1), vec![new_fp]);
    let body = get(&format!("http://{http}/v1/grapevine/keyring")).unwrap();
    assert!(!body.contains(new) && !body.contains(&new[..20]), "{body}");
    assert!(!keys(&["remove", new]).0, "the primary cannot be removed");
    assert!(!keys(&["install", "not-base64!"]).0);
    let _ = std::fs::remove_file(file);
}

/// Handler scripts get every member event with its reason, the time and the accuser.
#[test]
fn handlers_hear_each_member_event_with_its_reason_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events");
    let handler = format!(
        "member-join,member-suspect,member-failed,member-leave=echo \"$GRAPEVINE_EVENT $GRAPEVINE_REASON $GRAPEVINE_TIME $GRAPEVINE_MEMBER $GRAPEVINE_ACCUSER\" >> {}",
        log.display()
    );
    let a = Spec::new("watcher")
        .args(&["--event-handler", &handler])
        .start();
    let mut b = Spec::new("leaver").join(a.gossip).start();
    let c = Spec::new("crasher").join(a.gossip).start();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(Duration::from_secs(15), || {
        let l = lines();
        l.contains("member-join joined") && l.contains(" leaver") && l.contains(" crasher")
    });
    c.signal("KILL");
    eventually(Duration::from_secs(15), || {
        lines().contains("member-failed failed")
    });
    b.signal("TERM");
    let _ = b.child.wait();
    eventually(Duration::from_secs(10), || {
        lines().contains("member-leave left")
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let text = lines();
    println!("{text}");
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let t: f64 = f[2].parse().expect("GRAPEVINE_TIME is seconds");
        assert!(now - t < 60.0 && t <= now, "{line}");
    }
    // A suspicion names its accuser: whichever survivor's probe failed first.
    let suspect = text
        .lines()
        .find(|l| l.starts_with("member-suspect suspected"))
        .expect("the crash was suspected first");
    assert!(
        suspect.ends_with(" crasher watcher") || suspect.ends_with(" crasher leaver"),
        "{suspect}"
    );
    assert!(text.contains("member-failed failed") && text.contains(" crasher"));
}
