//! The dashboard in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`scripts/dashboard/check.cjs`), against agents on loopback. Five agents: the members page
//! lists all five alive; a SIGKILLed agent turns suspect then failed on the open page, within
//! a second of the agent's own detection; a key edited in the page is read on another agent
//! by the CLI; a drill started in the page cuts an agent off, the others' page shows it
//! suspected, and it ends by itself. A hundred agents: every render stays under 100 ms. The
//! console stays free of errors throughout. Screenshots go to `target/dashboard-screenshots`.
//!
//! Needs chromium (apt), node and playwright-core (`scripts/dashboard/setup.sh`); `.ci/run`
//! installs them and sets `GRAPEVINE_REQUIRE_BROWSER`, so that in CI they run, never skip.

mod common;

use common::{eventually, get, Agent, Spec};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn test_dir() -> PathBuf {
    common::tools_dir("GRAPEVINE_DASHBOARD_TEST", "dashboard-test")
}

fn browser_ready() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have = std::path::Path::new(&chromium).exists()
        && test_dir().join("node_modules/playwright-core").exists();
    if !have {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_BROWSER").is_none(),
            "chromium and playwright-core are required here (scripts/dashboard/setup.sh)"
        );
        eprintln!("skipped: chromium or playwright-core is missing (scripts/dashboard/setup.sh)");
    }
    have
}

/// `n` agents, drills enabled, all alive in every one's view: the page's timings are taken on
/// a settled cluster, not beside a hundred agents still exchanging their state.
fn cluster(tag: &str, n: usize) -> Vec<Agent> {
    let first = Spec::new(&format!("{tag}-1"))
        .args(&["--enable-drills"])
        .start();
    let seed = first.gossip;
    let mut agents = vec![first];
    for i in 2..=n {
        agents.push(
            Spec::new(&format!("{tag}-{i}"))
                .join(seed)
                .args(&["--enable-drills"])
                .start(),
        );
    }
    eventually(Duration::from_secs(120), || {
        agents.iter().all(|a| {
            common::members(a.http)
                .values()
                .filter(|s| *s == "alive")
                .count()
                == n
        })
    });
    agents
}

/// Held by each browser test for its whole run. Both measure time (a failure's lag behind
/// the agent, a render's cost); on two cores, a hundred agents and a second Chromium
/// starting beside the five-agent walk delayed its page by seconds (CI, stop 25).
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_browser() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(mode: &str, agents: &[Agent]) -> String {
    let shots = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/dashboard-screenshots"
    ));
    std::fs::create_dir_all(&shots).unwrap();
    let list: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| serde_json::json!({"name": a.name, "http": a.http.to_string(), "pid": a.child.id()}))
        .collect();
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/dashboard/check.cjs"
        ))
        .env("NODE_PATH", test_dir().join("node_modules"))
        .env("AGENTS", serde_json::Value::Array(list).to_string())
        .env("BIN", common::BIN)
        .env("SHOTS", &shots)
        .env("MODE", mode)
        .output()
        .expect("node runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    println!("{text}screenshots in {}", shots.display());
    text
}

#[test]
fn the_dashboard_shows_five_agents_live_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let _alone = one_browser();
    let agents = cluster("dash", 5);
    run("five", &agents);
}

#[test]
fn the_dashboard_stays_fast_at_a_hundred_members() {
    if !browser_ready() {
        return;
    }
    let _alone = one_browser();
    let agents = cluster("many", 100);
    run("many", &agents);
}

/// Drills are refused with 403 and the reason unless the agent allows them; a healthy
/// cluster publishes no views (what the matrix reads), so an idle agent pays nothing for the
/// dashboard; a failure is published by those who see it, and withdrawn once it heals.
#[test]
fn drills_need_enabling_and_an_idle_cluster_publishes_nothing_for_the_dashboard() {
    let a = Spec::new("plain-a").start();
    let b = Spec::new("plain-b").join(a.gossip).start();
    eventually(Duration::from_secs(30), || {
        common::all_alive(&[&a, &b], &["plain-a", "plain-b"])
    });
    let url = format!("http://{}/v1/grapevine/drills", a.http);
    let r = ureq::post(&url).send_string(r#"{"Kind":"drop","Share":0.5,"For":"10s"}"#);
    match r {
        Err(ureq::Error::Status(403, resp)) => {
            let body = resp.into_string().unwrap();
            assert!(body.contains("--enable-drills"), "{body}");
        }
        other => panic!("a drill on an agent without --enable-drills: {other:?}"),
    }
    let listed = get(&url).unwrap();
    assert!(listed.contains(r#""Enabled":false"#), "{listed}");
    let (ok, _, err) = common::cli(a.http, &["drill", "drop", "0.5"]);
    assert!(!ok && err.contains("--enable-drills"), "{err}");
    // The CLI on an agent that allows drills: start, list, end.
    let d = Spec::new("plain-drills").args(&["--enable-drills"]).start();
    eventually(Duration::from_secs(10), || {
        get(&format!("http://{}/v1/agent/self", d.http)).is_some()
    });
    let (ok, out, err) = common::cli(d.http, &["drill", "delay", "200ms", "--for", "30s"]);
    assert!(
        ok && out.contains(r#""Kind":"delay""#) && out.contains(r#""Millis":200"#),
        "{out}{err}"
    );
    let (_, out, _) = common::cli(d.http, &["drill", "list"]);
    assert!(out.contains(r#""Kind":"delay""#), "{out}");
    let (ok, _, _) = common::cli(d.http, &["drill", "end"]);
    assert!(ok);
    let (_, out, _) = common::cli(d.http, &["drill", "list"]);
    assert!(out.contains(r#""Drills":[]"#), "{out}");
    let (ok, _, err) = common::cli(d.http, &["drill", "drop", "1.5"]);
    assert!(!ok && err.contains("between 0 and 1"), "{err}");
    // Idle and healthy: no view published, on either agent.
    std::thread::sleep(Duration::from_secs(2));
    for x in [&a, &b] {
        let st =
            get(&format!("http://{}/v1/grapevine/state/{}", a.http, x.name)).unwrap_or_default();
        assert!(!st.contains("ui/view"), "{st}");
    }
    let v = get(&format!("http://{}/v1/grapevine/views", a.http)).unwrap();
    assert!(v.contains(r#""Rows":{}"#), "{v}");
    // b dies: a publishes that it sees b failed; the matrix shows it.
    let c = Spec::new("plain-c").join(a.gossip).start();
    eventually(Duration::from_secs(30), || {
        common::all_alive(&[&a, &c], &["plain-a", "plain-b", "plain-c"])
    });
    drop(b);
    eventually(Duration::from_secs(30), || {
        get(&format!("http://{}/v1/grapevine/views", c.http)).is_some_and(|v| {
            let v: serde_json::Value = serde_json::from_str(&v).unwrap();
            v["Rows"]["plain-a"]["plain-b"] == "failed"
                && v["Rows"]["plain-c"]["plain-b"] == "failed"
        })
    });
    let v: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{}/v1/grapevine/views", c.http)).unwrap())
            .unwrap();
    assert_eq!(v["LastChange"]["Member"], "plain-b");
    assert_eq!(v["LastChange"]["Reached"], 2, "{v}");
}
