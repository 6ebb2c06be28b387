//! The hostile suite, part two: floods. Fabricated members, dribbling connections, event
//! floods, replays, amplification, DNS and the metrics of refusals, each under the siege
//! harness (`common::siege`) as in `hostile.rs`: every agent stays up, no live member is
//! marked failed, the keys written before stay intact, memory and descriptors stay bounded.

mod common;

use common::siege::{self, connect_and_send, frame, hello, packet, udp, Siege};
use common::{eventually, free_port, get, Spec};
use grapevine_core::wire::{Alive, Message, NodeAddr, Ping, SyncRequest, UserEvent};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::stranger::*;

// ----- 6. failure detection blinded by fabricated members -------------------------------

/// Seconds from stopping agent `i` until every other agent lists it failed.
fn detection(s: &Siege, i: usize) -> f64 {
    let t0 = Instant::now();
    s.agents[i].signal("STOP");
    let others: Vec<&common::Agent> = s
        .agents
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, a)| a)
        .collect();
    let victim = s.agents[i].name.clone();
    eventually(Duration::from_secs(60), || {
        others
            .iter()
            .all(|a| a.members().get(&victim).map(String::as_str) == Some("failed"))
    });
    let took = t0.elapsed().as_secs_f64();
    s.agents[i].signal("CONT");
    took
}

#[test]
fn ten_thousand_fabricated_members_neither_blind_detection_nor_burn_cpu() {
    let s = Siege::start(4, &[]);
    let usual = detection(&s, 3);
    let names: Vec<&str> = ["s0", "s1", "s2", "s3"].to_vec();
    let refs: Vec<&common::Agent> = s.agents.iter().collect();
    eventually(Duration::from_secs(30), || common::all_alive(&refs, &names));
    let sock = stranger_udp();
    s.run(Duration::from_secs(3), || {
        // 10,000 alive messages (about 243 KB) in 200 datagrams to every agent, at once.
        for a in &s.agents {
            for chunk in 0..200u32 {
                let msgs: Vec<Message> = (0..50u32)
                    .map(|k| {
                        let i = chunk * 50 + k;
                        Message::Alive(Alive {
                            name: name(&format!("fabricated-{i}")),
                            addr: SocketAddr::from(([10, 77, (i >> 8) as u8, i as u8], 7946)),
                            incarnation: 0,
                            tags: vec![],
                            protocol: 1,
                        })
                    })
                    .collect();
                sock.send_to(&packet(&msgs), a.gossip).unwrap();
            }
        }
    });
    for a in &s.agents {
        // Fabricated members never answer the ping that would make them members.
        let n = a.members().len();
        assert_eq!(n, 4, "{}: {n} members", a.name);
    }
    let cpu0: Vec<f64> = s
        .agents
        .iter()
        .map(|a| siege::cpu_seconds(a.child.id()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    for (a, c0) in s.agents.iter().zip(cpu0) {
        let share = (siege::cpu_seconds(a.child.id()).unwrap() - c0) / 3.0;
        assert!(share < 0.2, "{}: {:.0} % of a core", a.name, share * 100.0);
    }
    let after = detection(&s, 3);
    eprintln!("detection: {usual:.2} s before the flood, {after:.2} s after");
    assert!(after < usual * 2.0 + 1.0, "{usual:.2} s, then {after:.2} s");
}

// ----- 7. unbounded connections, events, handlers and replays ---------------------------

#[test]
fn dribbling_connections_and_slowloris_are_capped_and_timed_out() {
    let s = Siege::start(3, &[]);
    let mut held = Vec::new();
    s.run(Duration::from_secs(12), || {
        // 1,100 gossip connections that greet and dribble junk, 2,000 HTTP connections that
        // send half a request line, then a byte a second.
        for i in 0..3100 {
            let dst = if i < 1100 {
                s.agents[0].gossip
            } else {
                s.agents[0].http
            };
            if let Some(mut c) = stranger_tcp(dst) {
                let first = if i < 1100 {
                    hello(c.local_addr().unwrap())
                } else {
                    b"GET /v1/agent/self HTTP/1.1\r\nHost: 127".to_vec()
                };
                let _ = c.write_all(&first);
                held.push(c);
            }
        }
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1));
            for c in &mut held {
                let _ = c.write_all(b"\x00");
            }
        }
    });
    drop(held);
    let transport = |reason: &str| {
        s.metric(
            0,
            &format!("grapevine_dropped_total{{layer=\"transport\",reason=\"{reason}\"}}"),
        )
    };
    assert!(transport("too_many_from_source") > 500.0);
    assert!(
        transport("read_timeout") > 0.0,
        "the dribblers were timed out"
    );
    assert!(s.metric_sum(0, "grapevine_dropped_total{layer=\"http\"") > 1000.0);
}

/// The most runs of a handler script (a `sh` whose command line holds `marker`) that one
/// process had as children at once while `during` ran.
fn peak_processes(marker: &str, during: impl FnOnce()) -> usize {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (stop, marker) = (stop.clone(), marker.to_string());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut by_parent: std::collections::HashMap<String, usize> = Default::default();
                for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
                    let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd);
                    if !cmd.starts_with("sh\0") || !cmd.contains(&marker) {
                        continue;
                    }
                    let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                    let ppid = stat
                        .rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().nth(1))
                        .unwrap_or_default()
                        .to_string();
                    *by_parent.entry(ppid).or_default() += 1;
                }
                peak = peak.max(by_parent.values().copied().max().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    during();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().unwrap()
}

#[test]
fn an_event_flood_is_rate_limited_and_handlers_run_a_few_at_a_time() {
    let marker = format!("handler-marker-{}", std::process::id());
    let handler = format!("user=sleep 2; : {marker}");
    let s = Siege::start(3, &["--event-handler", &handler]);
    let sent_before: f64 = (0..3)
        .map(|i| s.metric(i, "grapevine_bytes_out_total"))
        .sum();
    let mut refused = 0;
    let peak = peak_processes(&marker, || {
        s.run(Duration::from_secs(2), || {
            // 1,000 events raised over HTTP in about a second…
            for i in 0..1000 {
                let (code, _) = put_status(
                    &format!("http://{}/v1/event/fire/flood-{i}", s.agents[0].http),
                    "",
                );
                refused += usize::from(code == 429);
            }
            // …and 1,000 spoofed ones from a stranger, each from another made-up origin.
            let sock = stranger_udp();
            for i in 0..1000u64 {
                let ev = packet(&[Message::UserEvent(UserEvent {
                    id: 1 << 40 | i,
                    origin: name(&format!("spoof-{}", i % 50)),
                    name: "spoofed".into(),
                    payload: vec![],
                    hops: 0,
                    feedback: false,
                })]);
                let _ = sock.send_to(&ev, s.agents[1].gossip);
            }
        });
    });
    let sent_after: f64 = (0..3)
        .map(|i| s.metric(i, "grapevine_bytes_out_total"))
        .sum();
    eprintln!(
        "{refused} of 1,000 events refused (429); {:.1} MB of gossip; {peak} handlers at once",
        (sent_after - sent_before) / 1e6
    );
    assert!(refused >= 900, "{refused}");
    assert!(peak <= 16, "{peak} handlers at once");
    assert!(
        sent_after - sent_before < 20e6,
        "{} bytes",
        sent_after - sent_before
    );
}

#[test]
fn a_replayed_or_stale_encrypted_event_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    let key = [5u8; 32];
    use base64::Engine;
    std::fs::write(&file, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    let a = Spec::new("replay")
        .args(&["--encrypt-key-file", file.to_str().unwrap()])
        .start();
    a.wait_up();
    let keys = grapevine::Keyring::new(key);
    let ev = packet(&[Message::UserEvent(UserEvent {
        id: 77,
        origin: name("someone"),
        name: "deploy".into(),
        payload: b"v2".to_vec(),
        hops: 0,
        feedback: false,
    })]);
    let now_ms = unix_micros() / 1000;
    let sealed = keys.seal(b"", &ev, now_ms);
    let sock = udp();
    sock.send_to(&sealed, a.gossip).unwrap();
    let events = || {
        get(&format!("http://{}/v1/event/list?name=deploy", a.http))
            .and_then(|b| serde_json::from_str::<Vec<serde_json::Value>>(&b).ok())
            .map_or(0, |v| v.len())
    };
    eventually(Duration::from_secs(5), || events() == 1);
    // The same bytes again (a replay), and a copy sealed 61 s ago (past the window).
    sock.send_to(&sealed, a.gossip).unwrap();
    sock.send_to(&keys.seal(b"", &ev, now_ms - 61_000), a.gossip)
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(events(), 1, "delivered once");
    let text = get(&format!("http://{}/metrics", a.http)).unwrap();
    for reason in ["replayed", "stale"] {
        let series = format!("grapevine_dropped_total{{layer=\"envelope\",reason=\"{reason}\"}}");
        assert_eq!(common::metric(&text, &series), Some(1.0), "{reason}");
    }
}

// ----- 8. amplification -----------------------------------------------------------------

#[test]
fn nothing_is_sent_to_a_third_party_and_answers_are_no_larger_than_asked() {
    let s = Siege::start(3, &[]);
    let victim = TcpListener::bind("127.0.0.1:0").unwrap();
    victim.set_nonblocking(true).unwrap();
    let victim_addr = victim.local_addr().unwrap();
    let sock = stranger_udp();
    let mut replies = Vec::new();
    s.run(Duration::from_secs(3), || {
        for a in &s.agents {
            // A sync request naming the victim as its sender, from the stranger's own
            // connection: the answer goes back on it, never to the victim.
            let mut c = stranger_tcp(a.gossip).unwrap();
            let me = c.local_addr().unwrap();
            c.write_all(&hello(me)).unwrap();
            c.write_all(&frame(&packet(&[Message::SyncRequest(SyncRequest {
                id: 1,
                sender: NodeAddr {
                    name: name("victim"),
                    addr: victim_addr,
                },
                root: 1,
                members: 1,
                join: true,
            })])))
            .unwrap();
            // A hello claiming the victim's address from elsewhere is refused outright.
            let _ = connect_and_send(a.gossip, victim_addr, b"");
            // A ping from a stranger: the ack is no larger than the ping.
            let ping = packet(&[Message::Ping(Ping {
                seq: 1,
                target: name(&a.name),
                source: NodeAddr {
                    name: name("victim"),
                    addr: victim_addr,
                },
                roots: None,
            })]);
            sock.send_to(&ping, a.gossip).unwrap();
            let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                replies.push((n, ping.len()));
            }
        }
    });
    assert!(victim.accept().is_err(), "the victim was contacted");
    assert_eq!(replies.len(), 3);
    for (got, sent) in replies {
        assert!(got <= sent, "{got} bytes answered {sent}");
    }
}

/// A DNS query for `name`'s SRV records.
fn dns_query(id: u16, qname: &str) -> Vec<u8> {
    use hickory_proto::op::{Message as Dns, Query};
    use hickory_proto::rr::{Name as DnsName, RecordType};
    use std::str::FromStr;
    let mut m = Dns::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(
        DnsName::from_str(qname).unwrap(),
        RecordType::SRV,
    ));
    m.to_vec().unwrap()
}

#[test]
fn dns_answers_over_udp_fit_512_bytes_and_queries_are_not_logged() {
    use hickory_proto::op::Message as Dns;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let dns = free_port();
    let a = Spec::new("dns-amp")
        .args(&["--dns", &format!("127.0.0.1:{dns}")])
        .log(log.clone())
        .start();
    a.wait_up();
    for i in 0..40 {
        let body = format!(
            r#"{{"ID":"big-{i}","Name":"big","Port":{},"Address":"10.0.{}.{}"}}"#,
            8000 + i,
            i / 200,
            i % 200 + 1
        );
        assert_eq!(
            put_status(
                &format!("http://{}/v1/agent/service/register", a.http),
                &body
            )
            .0,
            200
        );
    }
    let server: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let sock = udp();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = dns_query(7, "big.service.grapevine.");
    let mut answered = None;
    for _ in 0..100 {
        sock.send_to(&q, server).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = Dns::from_vec(&buf[..n]).unwrap();
            if !m.answers().is_empty() {
                answered = Some((n, m));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (n, m) = answered.expect("an answer");
    assert!(n <= 512, "{n} bytes over UDP");
    assert!(m.truncated(), "truncated, so the client asks over TCP");
    // Over TCP, all 40.
    let mut c = TcpStream::connect(server).unwrap();
    c.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    c.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut body).unwrap();
    let full = Dns::from_vec(&body).unwrap();
    assert_eq!(full.answers().len(), 40);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("big.service"), "queries logged at info");
}

// ----- 9. refusals visible to monitoring ------------------------------------------------

#[test]
fn transport_refusals_and_kernel_drops_are_in_the_metrics() {
    let a = Spec::new("visible").start();
    a.wait_up();
    // A bad greeting, a hello from the wrong address, an oversized frame.
    let _ = stranger_tcp(a.gossip).map(|mut c| c.write_all(b"HTTP/1.1 junk"));
    let _ = connect_and_send(a.gossip, "10.1.1.1:7946".parse().unwrap(), b"");
    let _ = stranger_tcp(a.gossip).map(|mut c| {
        let me = c.local_addr().unwrap();
        let _ = c.write_all(&hello(me));
        let _ = c.write_all(&(1u32 << 30).to_be_bytes());
        c
    });
    std::thread::sleep(Duration::from_secs(2));
    let text = get(&format!("http://{}/metrics", a.http)).unwrap();
    for reason in ["bad_hello", "hello_mismatch", "oversized"] {
        let series = format!("grapevine_dropped_total{{layer=\"transport\",reason=\"{reason}\"}}");
        assert!(
            common::metric(&text, &series).unwrap_or(0.0) >= 1.0,
            "{series} in\n{text}"
        );
    }
    for series in [
        "grapevine_udp_kernel_drops_total",
        "grapevine_connections",
        "grapevine_dropped_total{layer=\"datagram\",reason=\"rate_limited\"}",
        "grapevine_dropped_total{layer=\"protocol\",reason=\"not_member\"}",
    ] {
        assert!(common::metric(&text, series).is_some(), "{series} missing");
    }
}

// ----- the acceptance's cgroup run ------------------------------------------------------

/// A memory cgroup limited to `bytes` holding process `pid` (v1 or v2), removed when
/// dropped; `None` where this machine has none to give.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn new(bytes: u64, pid: u32) -> Option<Cgroup> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let tag = format!("grapevine-test-{}", std::process::id());
        // cgroup v1: the memory hierarchy.
        if let Some(path) = own.lines().find_map(|l| {
            l.split(':')
                .nth(1)
                .filter(|c| *c == "memory")
                .and(l.split(':').nth(2))
        }) {
            let dir = std::path::Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join(&tag);
            if std::fs::create_dir_all(&dir).is_ok()
                && std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string()).is_ok()
                && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok()
            {
                return Some(Cgroup(dir));
            }
        }
        // cgroup v2: the unified hierarchy.
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let dir = std::path::Path::new(root).join(&tag);
            if std::fs::read_to_string(std::path::Path::new(root).join("cgroup.controllers"))
                .is_ok_and(|c| c.contains("memory"))
                && std::fs::create_dir_all(&dir).is_ok()
                && std::fs::write(dir.join("memory.max"), bytes.to_string()).is_ok()
                && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok()
            {
                return Some(Cgroup(dir));
            }
        }
        None
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Hand any process still inside back to the parent, so the group can go.
        if let (Ok(procs), Some(parent)) = (
            std::fs::read_to_string(self.0.join("cgroup.procs")),
            self.0.parent(),
        ) {
            for pid in procs.lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn an_agent_in_256_mb_survives_a_thousand_largest_frames() {
    let a = Spec::new("cgroup").start();
    a.wait_up();
    let Some(_cg) = Cgroup::new(256 << 20, a.child.id()) else {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_CGROUP").is_none(),
            "no memory cgroup could be made"
        );
        eprintln!("skipped: no memory cgroup could be made here");
        return;
    };
    let mut peak = 0;
    let t0 = Instant::now();
    // 1,000 connections, each sending the largest frame its type allows but its last byte:
    // in four waves from one stranger address at a time.
    let mut held = Vec::new();
    for wave in 0..4 {
        let conns = largest_frames_from(a.gossip, 250, wave);
        held.extend(conns);
        peak = peak.max(siege::rss(a.child.id()).unwrap_or(0));
    }
    std::thread::sleep(Duration::from_secs(12));
    peak = peak.max(siege::rss(a.child.id()).unwrap_or(0));
    drop(held);
    assert!(siege::running(a.child.id()), "the agent survived");
    assert!(get(&format!("http://{}/v1/agent/self", a.http)).is_some());
    eprintln!(
        "1,000 largest frames in {:.1} s: peak RSS {} MB within a 256 MB cgroup",
        t0.elapsed().as_secs_f64(),
        peak >> 20
    );
}

/// Like `largest_frames`, `n` connections from 127.0.0.(3 + `wave`).
fn largest_frames_from(dst: SocketAddr, n: usize, wave: u8) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = grapevine_core::wire::MAX_FRAME;
    rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let mut tasks = Vec::new();
        for _ in 0..n {
            tasks.push(tokio::spawn(async move {
                let sock = tokio::net::TcpSocket::new_v4().ok()?;
                sock.bind(SocketAddr::from(([127, 0, 0, 3 + wave], 0)))
                    .ok()?;
                let mut c = tokio::time::timeout(Duration::from_secs(2), sock.connect(dst))
                    .await
                    .ok()?
                    .ok()?;
                let me = c.local_addr().ok()?;
                let mut start = hello(me);
                start.extend_from_slice(&(big as u32).to_be_bytes());
                start.extend_from_slice(&[1u8, 0, 11, 0x80, 0x80, 0x80, 0x08]);
                c.write_all(&start).await.ok()?;
                let chunk = vec![0u8; 1 << 16];
                let mut sent = 7;
                let until = tokio::time::Instant::now() + Duration::from_secs(3);
                while sent + chunk.len() < big {
                    match tokio::time::timeout_at(until, c.write(&chunk)).await {
                        Ok(Ok(k)) if k > 0 => sent += k,
                        _ => break,
                    }
                }
                c.into_std().ok()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                out.push(c);
            }
        }
        out
    })
}
