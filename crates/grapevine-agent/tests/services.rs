//! Service discovery on five agents: services with HTTP checks registered on three, a
//! backend stopped, and real DNS queries (`dig`) against every agent; TTL checks, tags,
//! health filters, blocking queries, deregistration, services from the config file and
//! `grapevine services`.

mod common;

use common::{eventually, free_port, get, put, Agent, Spec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A backend answering `200 OK` to every request until stopped (its listener closed).
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(ip: &str) -> Backend {
        let listener = TcpListener::bind(format!("{ip}:0")).expect("backend binds");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // The listener drops here: connections are refused from now on.
        });
        Backend { addr, stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `dig @127.0.0.1 -p PORT NAME TYPE +short`, one line per record.
fn dig(port: u16, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, rtype])
        .args(["+short", "+tries=1", "+time=1"])
        .output()
        .expect("dig runs (apt-get install bind9-dnsutils)");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

fn register(agent: &Agent, body: &str) {
    let code = put(
        &format!("http://{}/v1/agent/service/register", agent.http),
        body,
    );
    assert_eq!(code, 200, "register on {}: {body}", agent.name);
}

#[test]
fn a_stopped_backend_leaves_dns_on_every_agent_within_five_seconds() {
    let names: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    let dns: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let dns_arg = |i: usize| format!("127.0.0.1:{}", dns[i]);
    // One agent takes a service from its config file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        r#"
        [[services]]
        Name = "db"
        ID = "db-1"
        Port = 5432
        Tags = ["primary"]
        Check = { TTL = "30s", Status = "passing" }
        "#,
    )
    .unwrap();
    let first = Spec::new(&names[0])
        .args(&["--dns", &dns_arg(0), "--config", cfg.to_str().unwrap()])
        .start();
    let seed = first.gossip;
    let mut agents = vec![first];
    for (i, name) in names.iter().enumerate().skip(1) {
        agents.push(
            Spec::new(name)
                .join(seed)
                .args(&["--dns", &dns_arg(i)])
                .start(),
        );
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    eventually(Duration::from_secs(30), || common::all_alive(&refs, &all));

    // Three backends on three loopback addresses, each registered on its own agent with an
    // HTTP check every 500 ms.
    let backends: Vec<Backend> = (0..3)
        .map(|i| Backend::start(&format!("127.0.0.{}", 11 + i)))
        .collect();
    for (i, b) in backends.iter().enumerate() {
        let body = format!(
            r#"{{"ID":"web-{i}","Name":"web","Tags":["v1","{role}"],"Address":"{ip}","Port":{port},
                "Meta":{{"zone":"z{i}"}},
                "Check":{{"HTTP":"http://{addr}/health","Interval":"500ms","Timeout":"1s"}}}}"#,
            role = if i == 0 { "primary" } else { "replica" },
            ip = b.addr.ip(),
            port = b.addr.port(),
            addr = b.addr,
        );
        register(&agents[i], &body);
    }
    let srv_of = |b: &Backend, i: usize| format!("1 1 {} s{i}.node.grapevine.", b.addr.port());
    let all_srv: Vec<String> = {
        let mut v: Vec<String> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| srv_of(b, i))
            .collect();
        v.sort();
        v
    };
    let took = eventually(Duration::from_secs(20), || {
        dns.iter()
            .all(|&p| dig(p, "web.service.grapevine", "SRV") == all_srv)
    });
    println!("3 instances in DNS on all 5 agents {took:?} after registration");
    assert_eq!(
        dig(dns[4], "web.service.grapevine", "A"),
        ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    );
    assert_eq!(
        dig(dns[3], "primary.web.service.grapevine", "A"),
        ["127.0.0.11"]
    );
    assert_eq!(dig(dns[2], "s1.node.grapevine", "A"), ["127.0.0.1"]);
    assert!(dig(dns[2], "nothing.service.grapevine", "A").is_empty());

    // Consul's HTTP shapes, on an agent that registered nothing.
    let h = agents[4].http;
    let services: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{h}/v1/catalog/services")).unwrap()).unwrap();
    assert_eq!(
        services["web"],
        serde_json::json!(["primary", "replica", "v1"])
    );
    assert_eq!(services["db"], serde_json::json!(["primary"]));
    let health: serde_json::Value = serde_json::from_str(
        &get(&format!(
            "http://{h}/v1/health/service/web?passing&tag=replica"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(health.as_array().unwrap().len(), 2);
    assert_eq!(health[0]["Service"]["Meta"]["zone"], "z1");
    assert_eq!(health[0]["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(health[0]["Checks"][1]["Status"], "passing");

    // A blocking query on the catalog returns when the backend stops.
    let index: u64 = ureq::get(&format!("http://{h}/v1/health/service/web"))
        .call()
        .unwrap()
        .header("X-Consul-Index")
        .unwrap()
        .parse()
        .unwrap();
    let blocked = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = ureq::get(&format!(
            "http://{h}/v1/health/service/web?passing&index={index}&wait=30s"
        ))
        .call()
        .unwrap();
        let n = serde_json::from_str::<serde_json::Value>(&r.into_string().unwrap())
            .unwrap()
            .as_array()
            .map_or(0, Vec::len);
        (t0.elapsed(), n)
    });

    // Stop backend 1: every agent's DNS drops it within 5 s.
    let stopped = Instant::now();
    backends[1].stop();
    let mut expected = all_srv.clone();
    expected.retain(|r| *r != srv_of(&backends[1], 1));
    let mut gone_at = vec![None; 5];
    while gone_at.iter().any(Option::is_none) {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "not gone everywhere within 5 s: {gone_at:?}"
        );
        for (i, &p) in dns.iter().enumerate() {
            if gone_at[i].is_none() && dig(p, "web.service.grapevine", "SRV") == expected {
                gone_at[i] = Some(stopped.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let worst = gone_at.iter().flatten().max().copied().unwrap_or_default();
    println!("stopped backend gone from DNS on every agent: {gone_at:?}, worst {worst:?}");
    let (waited, n) = blocked.join().unwrap();
    println!("blocking health query returned after {waited:?} with {n} passing");
    assert!(n <= 3 && waited < Duration::from_secs(30));
    // Critical, not gone, over HTTP.
    let all: serde_json::Value =
        serde_json::from_str(&get(&format!("http://{h}/v1/health/service/web")).unwrap()).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
    // The backend comes back: so does its record.
    drop(backends);

    // TTL checks: fail and pass through the API.
    let db_check = format!("http://{}/v1/agent/check/fail/service:db-1", agents[0].http);
    assert_eq!(put(&db_check, ""), 200);
    eventually(Duration::from_secs(5), || {
        dig(dns[3], "db.service.grapevine", "A").is_empty()
    });
    assert_eq!(put(&db_check.replace("/fail/", "/pass/"), ""), 200);
    eventually(Duration::from_secs(5), || {
        dig(dns[3], "db.service.grapevine", "A") == ["127.0.0.1"]
    });
    assert_eq!(
        put(
            &format!("http://{}/v1/agent/check/pass/nope", agents[0].http),
            ""
        ),
        404
    );

    // `grapevine services` lists them.
    let (ok, out, err) = agents[2].cli(&["services"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("db ") && out.contains("s0") && out.contains("critical"),
        "{out}"
    );

    // Deregistration removes the instance everywhere.
    assert_eq!(
        put(
            &format!(
                "http://{}/v1/agent/service/deregister/web-0",
                agents[0].http
            ),
            ""
        ),
        200
    );
    eventually(Duration::from_secs(5), || {
        dns.iter()
            .all(|&p| !dig(p, "web.service.grapevine", "A").contains(&"127.0.0.11".to_string()))
    });
    // Bad registrations are refused with a reason.
    assert_eq!(
        put(
            &format!("http://{}/v1/agent/service/register", agents[0].http),
            r#"{"Name":"x","Check":{"HTTP":"http://a","TTL":"1s"}}"#
        ),
        400
    );
}

/// A restart from the data directory does not bring back, frozen, a service registered over
/// HTTP (its checks no longer run); one from the config file comes back live.
#[test]
fn a_restart_drops_http_registrations_and_keeps_the_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[[services]]\nName = \"cfg-svc\"\nPort = 1\nCheck = { TTL = \"1m\", Status = \"passing\" }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let start = || {
        Spec::new("restarted")
            .port(port)
            .args(&[
                "--config",
                cfg.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .start()
    };
    let services = |a: &Agent| -> Vec<String> {
        let v: serde_json::Value = get(&format!("http://{}/v1/catalog/services", a.http))
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default();
        let mut names: Vec<String> = v
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut a = start();
    a.wait_up();
    register(
        &a,
        r#"{"Name":"http-svc","Port":2,"Check":{"TTL":"1m","Status":"passing"}}"#,
    );
    eventually(Duration::from_secs(5), || {
        services(&a) == ["cfg-svc", "http-svc"]
    });
    // Long enough for the snapshot (every 2 s), then a graceful stop.
    std::thread::sleep(Duration::from_millis(2500));
    a.signal("TERM");
    let _ = a.child.wait();
    drop(a);
    let b = start();
    b.wait_up();
    eventually(Duration::from_secs(5), || services(&b) == ["cfg-svc"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        services(&b),
        ["cfg-svc"],
        "the HTTP registration stays gone"
    );
}
