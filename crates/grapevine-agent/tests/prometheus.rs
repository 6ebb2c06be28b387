//! A real Prometheus (Debian's `prometheus` package) discovers the instances registered
//! with a grapevine agent and drops a deregistered one.
//!
//! Debian builds Prometheus without Consul service discovery (its config parser refuses
//! `consul_sd_configs`: "field consul_sd_configs not found in type config.ScrapeConfig"),
//! so Prometheus discovers through grapevine's DNS interface instead, with `dns_sd_configs`
//! (SRV), in a network namespace whose resolver is the agent. Consul's HTTP catalog and
//! health endpoints that `consul_sd_configs` reads are exercised by a Consul client in
//! `tests/agent.rs`.

mod common;

use common::netns::{may_run, Lab};
use common::{eventually, BIN};
use std::process::Stdio;
use std::time::Duration;

/// A process killed and reaped when dropped (the lab's drop would kill it too).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `instance` labels of the targets Prometheus discovered for the job.
fn discovered(lab: &Lab) -> Vec<String> {
    let Some(body) = lab.http_get(0, "http://127.0.0.1:9090/api/v1/targets?state=active") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out: Vec<String> = v["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["labels"]["job"] == "grapevine-sd")
        .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[test]
fn prometheus_discovers_registered_instances_and_drops_a_deregistered_one() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_PROMETHEUS").is_none(),
            "prometheus is required here (apt-get install prometheus)"
        );
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    if !may_run("prometheus") {
        return;
    }
    let mut lab = Lab::loopback();
    lab.resolver(0, "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let _agent = Killed(
        lab.command(0, BIN)
            .args(["agent", "--name", "prom-sd", "--profile", "local"])
            .args(["--bind", "127.0.0.1:7946", "--http", "127.0.0.1:8500"])
            .args(["--dns", "127.0.0.1:53"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .expect("agent starts"),
    );
    eventually(Duration::from_secs(15), || {
        lab.http_get(0, "http://127.0.0.1:8500/v1/agent/self")
            .is_some()
    });
    for (i, port) in [(1, 9101), (2, 9102), (3, 9103)] {
        let body = format!(
            r#"{{"ID":"api-{i}","Name":"api","Tags":["metrics"],"Address":"127.0.0.1","Port":{port},
                "Check":{{"TTL":"10m","Status":"passing"}}}}"#
        );
        assert!(lab.http_put(0, "http://127.0.0.1:8500/v1/agent/service/register", &body));
    }
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: grapevine-sd\n    \
         dns_sd_configs:\n      - names: ['api.service.grapevine']\n        type: SRV\n        \
         refresh_interval: 1s\n",
    )
    .unwrap();
    let _prom = Killed(
        lab.command(0, "prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts"),
    );
    let all = [
        "prom-sd.node.grapevine:9101",
        "prom-sd.node.grapevine:9102",
        "prom-sd.node.grapevine:9103",
    ];
    let took = eventually(Duration::from_secs(60), || discovered(&lab) == all);
    println!("Prometheus discovered the 3 instances {took:?} after it started");
    assert!(lab.http_put(
        0,
        "http://127.0.0.1:8500/v1/agent/service/deregister/api-2",
        ""
    ));
    let took = eventually(Duration::from_secs(60), || {
        discovered(&lab) == [all[0], all[2]]
    });
    println!("Prometheus dropped the deregistered instance {took:?} after the deregistration");
    // A failing check drops an instance too: DNS answers passing instances only.
    assert!(lab.http_put(
        0,
        "http://127.0.0.1:8500/v1/agent/check/fail/service:api-3",
        ""
    ));
    let took = eventually(Duration::from_secs(60), || discovered(&lab) == [all[0]]);
    println!("Prometheus dropped the failing instance {took:?} after the check failed");
    // The lab's drop kills the agent and Prometheus with the namespace.
}
