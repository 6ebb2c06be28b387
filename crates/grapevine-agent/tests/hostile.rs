//! The hostile suite: every attack that once took an agent down or changed its data, run
//! against real agents on loopback, each bounded in count and time. Under each, the siege
//! harness (`common::siege`) checks that every agent stays up, no live member is marked
//! failed, the 100 keys written before are intact everywhere, memory stays within idle +
//! 64 MB and descriptors under the caps, and the API answers within 100 ms at the median.
//! Attackers come from 127.0.0.2 where the caps are per source, as a stranger would: the
//! agents themselves talk from 127.0.0.1.

mod common;

use common::siege::{frame, hello, packet, udp, Siege};
use common::{eventually, get, put, Spec};
use grapevine_core::state::hlc::Timestamp;
use grapevine_core::state::keyspace::lww;
use grapevine_core::wire::{Dead, Message, TreeEntries, TreeHashes, TREE_KEYSPACE};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::stranger::*;

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
