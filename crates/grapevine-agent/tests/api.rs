//! The agent's API beyond keys: a TOML config file, per-node state, the user event list,
//! the member event stream (`grapevine monitor`), force-leave, key-change handlers and
//! Prometheus metrics, on two real agents.

mod common;

use common::{cli, eventually, get, metric, Spec, BIN};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn an_agent_configured_by_file_serves_state_events_monitor_force_leave_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let keys_seen = dir.path().join("keys");
    let http = format!("127.0.0.1:{}", common::free_port());
    let gossip = format!("127.0.0.1:{}", common::free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"filed\"\nbind = \"{gossip}\"\nhttp = \"{http}\"\nprofile = \"local\"\n\
             event_handlers = [\"key:app/=cat >> {}\"]\n",
            keys_seen.display()
        ),
    )
    .unwrap();
    // The file alone configures the agent (no --http: the file's is used).
    let http: std::net::SocketAddr = http.parse().unwrap();
    let agent = Command::new(BIN)
        .args(["agent", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _filed = common::Agent::guard(agent, "filed", http, gossip.parse().unwrap());
    eventually(Duration::from_secs(15), || {
        get(&format!("http://{http}/v1/agent/self")).is_some_and(|b| b.contains("\"filed\""))
    });
    let b = Spec::new("other").join(gossip.parse().unwrap()).start();

    // The member event stream, through `grapevine monitor --format json`.
    // (Wrapped in an `Agent` so that it is killed even when an assertion fails.)
    let monitor = Command::new(BIN)
        .args(["monitor", "--format", "json", "--http", &http.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut monitor = common::Agent::guard(monitor, "monitor", http, http);
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    let out = monitor.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    eventually(Duration::from_secs(15), || {
        common::all_alive(&[&b], &["filed", "other"])
            && common::members(http).get("other").map(String::as_str) == Some("alive")
    });

    // Per-node state: written by its owner, read anywhere; another member's is refused.
    // (status, body) of a PUT.
    let put = |agent: std::net::SocketAddr, path: &str, body: &str| -> (u16, String) {
        match ureq::put(&format!("http://{agent}{path}")).send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("PUT {path}: {e}"),
        }
    };
    assert_eq!(
        put(b.http, "/v1/grapevine/state/other/role", "cache").0,
        200
    );
    let (code, body) = put(b.http, "/v1/grapevine/state/filed/role", "x");
    assert_eq!(code, 403);
    assert!(body.contains("only its own state"), "{body}");
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{http}/v1/grapevine/state/other"))
            .is_some_and(|s| s.contains("\"role\":{\"Value\":\"Y2FjaGU=\""))
    });
    let all = get(&format!("http://{http}/v1/grapevine/state")).unwrap();
    assert!(all.contains("\"Name\":\"filed\"") && all.contains("\"Name\":\"other\""));

    // A key change under app/ runs the handler with the key and its value (base64) on stdin;
    // one outside the filter does not.
    assert_eq!(put(b.http, "/v1/kv/db/size", "3").0, 200);
    assert_eq!(put(b.http, "/v1/kv/app/colour", "blue").0, 200);
    eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&keys_seen).is_ok_and(|s| s.contains("set\tapp/colour\tYmx1ZQ=="))
    });
    assert!(!std::fs::read_to_string(&keys_seen)
        .unwrap()
        .contains("db/size"));

    // User events: listed with their payload, filtered by name, and a blocking query wakes
    // on the next one.
    let (ok, _, _) = cli(b.http, &["event", "deploy", "v2"]);
    assert!(ok);
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{http}/v1/event/list?name=deploy"))
            .is_some_and(|s| s.contains("\"Payload\":\"djI=\""))
    });
    let r = ureq::get(&format!("http://{http}/v1/event/list"))
        .call()
        .unwrap();
    let index: u64 = r.header("X-Consul-Index").unwrap().parse().unwrap();
    let waiter = std::thread::spawn(move || {
        ureq::get(&format!(
            "http://{http}/v1/event/list?index={index}&wait=20s"
        ))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the blocking query waits for news");
    assert!(cli(b.http, &["event", "restart"]).0);
    let listed = waiter.join().unwrap();
    assert!(listed.contains("\"Name\":\"restart\""), "{listed}");

    // Kill the other agent: the stream reports it suspected, then failed; force-leave then
    // records it as left.
    drop(b);
    let mut kinds = Vec::new();
    while !kinds.contains(&"member-failed".to_string()) {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("an event within 30 s");
        if v["name"] == "other" {
            assert!(v["time"].as_f64().is_some_and(|t| t > 1.7e9), "{v}");
            kinds.push(v["event"].as_str().unwrap().to_string());
        }
    }
    assert!(kinds.contains(&"member-suspect".to_string()), "{kinds:?}");
    let (ok, _, err) = cli(http, &["force-leave", "nobody"]);
    assert!(!ok && err.contains("no member named"), "{err}");
    let (ok, _, err) = cli(http, &["force-leave", "other"]);
    assert!(ok, "{err}");
    assert_eq!(
        common::members(http).get("other").map(String::as_str),
        Some("left")
    );
    let (ok, _, err) = cli(http, &["force-leave", "filed"]);
    assert!(!ok && err.contains("not failed"), "{err}");

    // Prometheus text: members by state, messages and bytes by type, probe round trips,
    // suspicions, drops by reason. (Counters are exported once a second.)
    std::thread::sleep(Duration::from_millis(1200));
    let text = get(&format!("http://{http}/metrics")).unwrap();
    assert_eq!(
        metric(&text, "grapevine_members{state=\"left\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "grapevine_members{state=\"alive\"}"),
        Some(1.0)
    );
    for series in [
        "grapevine_messages_out_total{type=\"ping\"}",
        "grapevine_messages_in_total{type=\"ack\"}",
        "grapevine_bytes_out_total{type=\"ping\"}",
        "grapevine_bytes_in_total{type=\"ack\"}",
        "grapevine_probes_total",
        "grapevine_probe_rtt_seconds_count",
        "grapevine_suspicions_total",
        "grapevine_declared_failed_total",
    ] {
        assert!(
            metric(&text, series).is_some_and(|v| v > 0.0),
            "{series} in\n{text}"
        );
    }
    assert!(text.contains("grapevine_probe_rtt_seconds_bucket{le=\"0.001\"}"));
    assert!(text.contains("grapevine_dropped_total{layer=\"envelope\",reason=\"bad_key\"} 0"));
    assert!(text.contains("grapevine_dropped_total{layer=\"protocol\",reason=\"malformed\"} 0"));
}
