//! The hostile suite: every attack that once took an agent down or changed its data, run
//! against real agents on loopback, each bounded in count and time. Under each, the siege
//! harness (`common::siege`) checks that every agent stays up, no live member is marked
//! failed, the 100 keys written before are intact everywhere, memory stays within idle +
//! 64 MB and descriptors under the caps, and the API answers within 100 ms at the median.
//! Attackers come from 127.0.0.2 where the caps are per source, as a stranger would: the
//! agents themselves talk from 127.0.0.1.

mod common;

use common::siege::{self, connect_and_send, frame, hello, packet, udp, Siege};
use common::{eventually, free_port, get, put, Spec};
use grapevine_core::state::hlc::Timestamp;
use grapevine_core::state::keyspace::lww;
use grapevine_core::wire::{
    Alive, Dead, Message, NodeAddr, Ping, SyncRequest, TreeEntries, TreeHashes, UserEvent,
    TREE_KEYSPACE,
};
use grapevine_core::Name;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// A TCP connection from the stranger's address, 127.0.0.2.
fn stranger_tcp(dst: SocketAddr) -> Option<TcpStream> {
    // std cannot bind before connecting: tokio's socket can, in a small runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind("127.0.0.2:0".parse().ok()?).ok()?;
        let s = tokio::time::timeout(Duration::from_secs(2), sock.connect(dst))
            .await
            .ok()?
            .ok()?;
        s.into_std().ok()
    })
    .and_then(|s| {
        s.set_nonblocking(false).ok()?;
        Some(s)
    })
}

/// A UDP socket on the stranger's address.
fn stranger_udp() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 is loopback")
}

/// An HTTP request written by hand; the status code (0 if none came).
fn raw_http(addr: SocketAddr, request: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A PUT's status and body.
fn put_status(url: &str, body: &str) -> (u16, String) {
    match ureq::put(url)
        .timeout(Duration::from_secs(5))
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ----- 1. remote command execution, keys handed out, DNS rebinding ---------------------

#[test]
fn a_script_check_over_http_runs_nothing_unless_script_checks_are_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let body = format!(
        r#"{{"Name":"x","Check":{{"Args":["/bin/sh","-c","touch {}"],"Interval":"1s"}}}}"#,
        marker.display()
    );
    let a = Spec::new("scripts-off").start();
    a.wait_up();
    let (code, text) = put_status(
        &format!("http://{}/v1/agent/service/register", a.http),
        &body,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("Scripts are disabled"), "{text}");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!marker.exists(), "the script ran");
    // Enabled on purpose, the same registration runs: the gate, not a broken check.
    let b = Spec::new("scripts-on")
        .args(&["--enable-script-checks"])
        .start();
    b.wait_up();
    let (code, text) = put_status(
        &format!("http://{}/v1/agent/service/register", b.http),
        &body,
    );
    assert_eq!(code, 200, "{text}");
    eventually(Duration::from_secs(10), || marker.exists());
}

#[test]
fn the_api_refuses_foreign_host_names_and_shows_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
    let file = dir.path().join("key");
    std::fs::write(&file, key).unwrap();
    let a = Spec::new("hosts")
        .args(&["--encrypt-key-file", file.to_str().unwrap()])
        .args(&["--http-allowed-host", "agent.internal"])
        .start();
    a.wait_up();
    let req = |host: &str| {
        raw_http(
            a.http,
            &format!("GET /v1/agent/self HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // A page on evil.example that resolves its own name to 127.0.0.1 sends its own name.
    assert_eq!(req("evil.example"), 403);
    assert_eq!(req(&format!("evil.example:{}", a.http.port())), 403);
    assert_eq!(req(&a.http.to_string()), 200);
    assert_eq!(req(&format!("localhost:{}", a.http.port())), 200);
    assert_eq!(req("agent.internal"), 200, "an allowed name");
    let body = get(&format!("http://{}/v1/grapevine/keyring", a.http)).unwrap();
    assert!(!body.contains(key) && !body.contains(&key[..16]), "{body}");
}

// ----- 2. anyone on the network rewriting the data --------------------------------------

#[test]
fn a_strangers_frames_neither_overwrite_nor_delete_keys() {
    let s = Siege::start(3, &[]);
    let ahead = unix_micros() + 30_000_000;
    let writer = name("s0");
    let forged = |i: usize, value: Option<&[u8]>| {
        (
            format!("siege/key-{i:03}").into_bytes(),
            lww(
                Timestamp::new(ahead, 0),
                &writer,
                value.map(<[u8]>::to_vec),
                None,
            ),
        )
    };
    let seen = s.run(Duration::from_secs(3), || {
        for a in &s.agents {
            let mut attack = Vec::new();
            // One 70-byte frame overwriting a key with a value stamped 30 s ahead, and one of
            // tombstones for ten keys; as a responder's step and as an initiator's.
            for id in [5u32, 5 | 1 << 31] {
                attack.extend(frame(&packet(&[Message::TreeEntries(TreeEntries {
                    id,
                    tree: TREE_KEYSPACE,
                    entries: vec![forged(0, Some(b"evil"))],
                    want: vec![],
                })])));
                attack.extend(frame(&packet(&[Message::TreeEntries(TreeEntries {
                    id,
                    tree: TREE_KEYSPACE,
                    entries: (1..11).map(|i| forged(i, None)).collect(),
                    want: vec![],
                })])));
            }
            // And an exchange opened in a member's name from another address.
            attack.extend(frame(&packet(&[Message::TreeHashes(TreeHashes {
                id: 9,
                tree: TREE_KEYSPACE,
                depth: 1,
                level: 0,
                ranges: vec![(0, 1)],
                sender: Some(writer.clone()),
            })])));
            let mut c = stranger_tcp(a.gossip).expect("connects");
            let me = c.local_addr().unwrap();
            c.write_all(&hello(me)).unwrap();
            c.write_all(&attack).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    drop(seen);
    for i in 0..3 {
        let unsolicited = s.metric(
            i,
            "grapevine_dropped_total{layer=\"protocol\",reason=\"unsolicited\"}",
        );
        let not_member = s.metric(
            i,
            "grapevine_dropped_total{layer=\"protocol\",reason=\"not_member\"}",
        );
        assert!(
            unsolicited >= 4.0 && not_member >= 1.0,
            "{unsolicited} {not_member}"
        );
    }
}

// ----- 3. permanent removal by one datagram ---------------------------------------------

#[test]
fn a_forged_death_at_the_largest_incarnation_does_not_stick() {
    let s = Siege::start(3, &[]);
    let victim = s.agents[2].name.clone();
    let sock = udp();
    s.run(Duration::from_secs(6), || {
        for inc in [u32::MAX, (1 << 31) - 1, u32::MAX - 1] {
            let dead = packet(&[Message::Dead(Dead {
                name: name(&victim),
                incarnation: inc,
                accuser: name("s0"),
            })]);
            for a in &s.agents[..2] {
                sock.send_to(&dead, a.gossip).unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    // Restarted with no memory of its incarnation, it comes back alive, not failed or left.
    let port = s.agents[2].gossip.port();
    let mut agents = s.agents;
    let old = agents.pop().unwrap();
    drop(old);
    let back = Spec::new(&victim).port(port).join(agents[0].gossip).start();
    back.wait_up();
    let refs: Vec<&common::Agent> = agents.iter().chain([&back]).collect();
    let names = ["s0", "s1", victim.as_str()];
    eventually(Duration::from_secs(20), || common::all_alive(&refs, &names));
}

// ----- 4. memory exhaustion before authentication ---------------------------------------

/// Opens `n` connections from 127.0.0.2 to `dst`, each announcing a frame of the largest
/// size its type allows (a membership table, 16 MiB) and sending all of it but the last
/// byte, as fast as the agent reads; returns them open.
fn largest_frames(dst: SocketAddr, n: usize) -> Vec<TcpStream> {
    let big = grapevine_core::wire::MAX_FRAME;
    let mut head = vec![1u8, 0, 11];
    head.extend_from_slice(&[0x80, 0x80, 0x80, 0x08]);
    let chunk = vec![0u8; 1 << 16];
    let mut open = Vec::new();
    for _ in 0..n {
        let Some(mut c) = stranger_tcp(dst) else {
            continue;
        };
        let me = c.local_addr().unwrap();
        let _ = c.write_all(&hello(me));
        let _ = c.write_all(&(big as u32).to_be_bytes());
        let _ = c.write_all(&head);
        let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
        let mut sent = head.len();
        while sent + chunk.len() < big {
            match c.write(&chunk) {
                Ok(k) => sent += k,
                Err(_) => break,
            }
        }
        open.push(c);
    }
    open
}

#[test]
fn the_largest_frames_from_strangers_cost_bounded_memory() {
    let s = Siege::start(3, &[]);
    let mut held = Vec::new();
    s.run(Duration::from_secs(12), || {
        held = largest_frames(s.agents[0].gossip, 8);
    });
    drop(held);
    let refused = s.metric_sum(0, "grapevine_dropped_total{layer=\"transport\"");
    assert!(refused > 0.0, "the stalled frames were dropped and counted");
}

#[test]
fn strangers_without_the_key_cannot_make_an_encrypted_agent_buffer_anything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=").unwrap();
    let key = file.to_str().unwrap().to_string();
    let s = Siege::start(3, &["--encrypt-key-file", &key]);
    let mut held = Vec::new();
    s.run(Duration::from_secs(3), || {
        // 32 strangers each announcing a 64 MiB frame and sending most of it, as once took an
        // encrypted agent to 2.1 GB: without the key, refused at the greeting.
        let big = 64usize << 20;
        let chunk = vec![0u8; 1 << 16];
        for _ in 0..32 {
            let Some(mut c) = stranger_tcp(s.agents[0].gossip) else {
                continue;
            };
            let me = c.local_addr().unwrap();
            let _ = c.write_all(&hello(me));
            let _ = c.write_all(&((big - 1) as u32).to_be_bytes());
            let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
            let mut sent = 0;
            while sent + chunk.len() < big {
                match c.write(&chunk) {
                    Ok(k) => sent += k,
                    Err(_) => break,
                }
            }
            held.push(c);
        }
    });
    let refused = s.metric(
        0,
        "grapevine_dropped_total{layer=\"transport\",reason=\"unencrypted\"}",
    );
    assert!(refused >= 32.0, "{refused}");
}

// ----- 5. replication livelock ----------------------------------------------------------

#[test]
fn a_new_member_receives_200_mib_of_shared_state() {
    let a = Spec::new("big-0").start();
    a.wait_up();
    let b = Spec::new("big-1").join(a.gossip).start();
    b.wait_up();
    // 3,200 values of 64 KiB: 200 MiB, written through the API from four threads.
    let value: String = "x".repeat(64 * 1024);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..4 {
            let (value, http) = (&value, a.http);
            sc.spawn(move || {
                for i in (t..3200).step_by(4) {
                    assert_eq!(put(&format!("http://{http}/v1/kv/blob/{i:04}"), value), 200);
                }
            });
        }
    });
    eprintln!("200 MiB written in {:.1} s", t0.elapsed().as_secs_f64());
    let count = |http: SocketAddr| {
        get(&format!("http://{http}/v1/kv/blob/?keys"))
            .and_then(|b| serde_json::from_str::<Vec<String>>(&b).ok())
            .map_or(0, |v| v.len())
    };
    eventually(Duration::from_secs(180), || count(b.http) == 3200);
    let t1 = Instant::now();
    let c = Spec::new("big-2").join(a.gossip).start();
    c.wait_up();
    let took = eventually(Duration::from_secs(300), || count(c.http) == 3200);
    eprintln!(
        "a new member received 200 MiB of shared state in {:.1} s ({:.1} s after it started)",
        took.as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    // And all of it, byte for byte: one value checked in full.
    let body = get(&format!("http://{}/v1/kv/blob/3199", c.http)).unwrap();
    assert!(body.contains(&base64_of(&value)[..1000]));
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_burst_of_large_writes_fails_no_member() {
    let s = Siege::start(3, &[]);
    let value: String = "y".repeat(64 * 1024);
    // 2,000 writes of 64 KiB as fast as eight clients can: 125 MiB of legitimate data, so
    // the memory bound is not this test's; members staying alive and answering is.
    let t0 = Instant::now();
    let seen = s.run_without_memory_bound(Duration::from_secs(8), || {
        std::thread::scope(|sc| {
            for t in 0..8 {
                let (value, http) = (&value, s.agents[0].http);
                sc.spawn(move || {
                    for i in (t..2000).step_by(8) {
                        let _ = put(&format!("http://{http}/v1/kv/burst/{i:04}"), value);
                    }
                });
            }
        });
    });
    eprintln!(
        "2,000 writes of 64 KiB took {:.1} s; peak RSS {:?} MB",
        t0.elapsed().as_secs_f64(),
        seen.peak_rss.iter().map(|r| r >> 20).collect::<Vec<_>>()
    );
}

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
