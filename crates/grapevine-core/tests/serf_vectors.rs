//! Golden vectors captured from the real `serf` (Debian's 0.9.4 sources, memberlist 0.2) on
//! loopback, and decoded by our engine: what Go writes, we read.

use base64::Engine;
use grapevine_core::serf::messages::{decode_tags, PushPull};
use grapevine_core::serf::wire::{read_stream, StreamMsg};
use grapevine_core::serf::Keyring;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/serf/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The keyring of the encrypted captures (the key the Serf agent was started with).
fn captured_ring() -> Keyring {
    let text = String::from_utf8(fixture("serf-pushpull-join-encrypted.key")).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap();
    Keyring::new(key).unwrap()
}

fn check_join(msg: StreamMsg, node: &str, tags: &[(&str, &str)]) {
    let StreamMsg::PushPull { join, nodes, user } = msg else {
        panic!("not a push-pull: {msg:?}")
    };
    assert!(join);
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.name, node);
    assert_eq!(n.addr, vec![127, 0, 0, 1]);
    assert_eq!(n.state, 0);
    assert_eq!(n.vsn, vec![1, 5, 2, 2, 5, 5]);
    let t = decode_tags(&n.meta);
    for (k, v) in tags {
        assert_eq!(t.get(*k).map(String::as_str), Some(*v), "{t:?}");
    }
    assert_eq!(user[0], 2, "Serf's push-pull type");
    let pp = PushPull::decode(&user[1..]).unwrap();
    assert!(pp.status_ltimes.iter().any(|(n, _)| n == node), "{pp:?}");
}

#[test]
fn a_compressed_join_push_pull_from_serf_decodes() {
    let buf = fixture("serf-pushpull-join.bin");
    // Every strict prefix is incomplete, never an error: a stream reader waits for more.
    for cut in 0..buf.len() {
        assert_eq!(
            read_stream(&buf[..cut], None, 1 << 20).unwrap(),
            None,
            "cut {cut}"
        );
    }
    let (msg, used) = read_stream(&buf, None, 1 << 20).unwrap().unwrap();
    assert_eq!(used, buf.len());
    check_join(msg, "s1", &[("role", "web"), ("dc", "one")]);
}

#[test]
fn an_encrypted_join_push_pull_from_serf_decodes_with_its_key_only() {
    let buf = fixture("serf-pushpull-join-encrypted.bin");
    let ring = captured_ring();
    let (msg, used) = read_stream(&buf, Some(&ring), 1 << 20).unwrap().unwrap();
    assert_eq!(used, buf.len());
    check_join(msg, "s2", &[("role", "db")]);
    let wrong = Keyring::new(vec![9; 32]).unwrap();
    assert_eq!(
        read_stream(&buf, Some(&wrong), 1 << 20)
            .unwrap_err()
            .reason(),
        "wrong_key"
    );
    assert_eq!(
        read_stream(&buf, None, 1 << 20).unwrap_err().reason(),
        "unexpected_encryption"
    );
}

mod malformed {
    use grapevine_core::serf::msgpack::Enc;
    use grapevine_core::serf::wire::{self, code, Alive, Msg, PushNode};
    use grapevine_core::serf::{security, Keyring, SerfConfig, SerfNode};
    use grapevine_core::Time;
    use std::net::SocketAddr;

    fn node(ring: Option<Keyring>) -> SerfNode {
        let mut cfg = SerfConfig::lan("me", "127.0.0.1:7946".parse().unwrap());
        cfg.keyring = ring;
        cfg.max_stream_bytes = 1 << 20;
        SerfNode::new(cfg, [3; 32], Time::ZERO)
    }

    fn from() -> SocketAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    /// Feeds one input and returns the single reason it was dropped for.
    fn dropped_for(n: &mut SerfNode, packet: bool, input: &[u8]) -> &'static str {
        let before = n.stats().dropped.clone();
        if packet {
            n.handle_packet(from(), input, Time::from_micros(1));
        } else {
            assert_eq!(n.handle_stream(from(), input, Time::from_micros(1)), None);
        }
        let after = n.stats().dropped.clone();
        let grew: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k).copied().unwrap_or(0) < **v)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(grew.len(), 1, "{grew:?} for {input:?}");
        grew[0]
    }

    pub(super) fn alive(addr: Vec<u8>, vsn: Vec<u8>) -> Vec<u8> {
        Msg::Alive(Alive {
            incarnation: 1,
            node: "x".into(),
            addr,
            port: 1,
            meta: vec![],
            vsn,
        })
        .encode()
    }

    #[test]
    fn every_malformed_packet_is_dropped_and_counted_by_reason() {
        let mut n = node(None);
        let ping = Msg::Ping(wire::Ping {
            seq: 1,
            node: "me".into(),
            ..Default::default()
        })
        .encode();
        let mut bad_crc = vec![code::HAS_CRC, 0, 0, 0, 0];
        bad_crc.extend_from_slice(&ping);
        let mut nested = ping.clone();
        for _ in 0..10 {
            nested = wire::compound(&[nested]);
        }
        let mut bad_algo = Enc::new(vec![code::COMPRESS]);
        bad_algo.map(2).key("Algo").uint(1).key("Buf").raw(b"x");
        let mut garbage_lzw = Enc::new(vec![code::COMPRESS]);
        garbage_lzw
            .map(2)
            .key("Algo")
            .uint(0)
            .key("Buf")
            .raw(&[0xff; 64]);
        let bomb = wire::compress(&vec![0u8; 1 << 20]);
        let mut wrong_type = Enc::new(vec![code::PING]);
        wrong_type.map(1).key("SeqNo").str("one");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "empty"),
            ("unknown type", vec![99, 0x80], "unknown_type"),
            ("bad checksum", bad_crc, "crc"),
            (
                "compound past its end",
                vec![code::COMPOUND, 2, 0, 5],
                "compound",
            ),
            ("nested ten deep", nested, "nesting"),
            ("unknown compression", bad_algo.buf, "compression"),
            ("invalid LZW", garbage_lzw.buf, "compression"),
            ("LZW bomb past the cap", bomb, "compression"),
            (
                "truncated body",
                ping[..ping.len() - 2].to_vec(),
                "malformed",
            ),
            ("a string for a number", wrong_type.buf, "malformed"),
            (
                "a count of four billion",
                vec![code::PING, 0xdf, 0xff, 0xff, 0xff, 0xff],
                "malformed",
            ),
            (
                "a three-byte address",
                alive(vec![1, 2, 3], vec![1, 5, 2, 2, 5, 5]),
                "bad_address",
            ),
            (
                "pmin above pmax",
                alive(vec![1, 2, 3, 4], vec![5, 1, 2, 2, 5, 5]),
                "bad_version",
            ),
            (
                "a Serf message that is not one",
                vec![code::USER, 3, 0xc1],
                "bad_serf_message",
            ),
        ];
        for (what, input, reason) in cases {
            assert_eq!(dropped_for(&mut n, true, &input), reason, "{what}");
        }
        // Nothing reached the member table.
        assert_eq!(n.members().len(), 1);
    }

    #[test]
    fn keys_are_required_checked_and_counted() {
        let ring = Keyring::new(vec![1; 32]).unwrap();
        let mut n = node(Some(ring));
        let ping = Msg::Ping(wire::Ping::default()).encode();
        // A plaintext message whose type byte cannot be an encryption version; a ping's (0)
        // or an indirect ping's (1) can, and reads as a message no key opens, as in Go.
        let plain = alive(vec![1, 2, 3, 4], vec![1, 5, 2, 2, 5, 5]);
        assert_eq!(dropped_for(&mut n, true, &plain), "plaintext");
        assert_eq!(dropped_for(&mut n, true, &ping), "wrong_key");
        let wrong = security::encrypt(1, &[2; 32], [0; 12], &ping, &[]);
        assert_eq!(dropped_for(&mut n, true, &wrong), "wrong_key");
        let mut v2 = wrong.clone();
        v2[0] = 2;
        // Version 2 does not exist: a first byte of 2 reads as plaintext (an ack).
        assert_eq!(dropped_for(&mut n, true, &v2), "plaintext");
        let stream = wire::seal_stream(ping.clone(), false, None, 1, [0; 12]);
        assert_eq!(dropped_for(&mut n, false, &stream), "plaintext");
        let huge = [code::ENCRYPT, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(dropped_for(&mut n, false, &huge), "too_large");
    }

    #[test]
    fn hostile_streams_are_refused_before_allocating() {
        let mut n = node(None);
        let mut header = Enc::new(vec![code::PUSH_PULL]);
        header
            .map(3)
            .key("Nodes")
            .uint(1 << 31)
            .key("UserStateLen")
            .uint(0)
            .key("Join")
            .boolean(false);
        assert_eq!(dropped_for(&mut n, false, &header.buf), "too_large");
        let mut user = Enc::new(vec![code::USER]);
        user.map(1).key("UserMsgLen").uint(1 << 40);
        assert_eq!(dropped_for(&mut n, false, &user.buf), "too_large");
        // A framing that waits for bytes that never come is incomplete, not an error.
        assert_eq!(wire::frame_len(&[code::PUSH_PULL, 0x83], 1 << 20), Ok(None));
        // Versions no member can speak.
        let odd = PushNode {
            name: "odd".into(),
            addr: vec![127, 0, 0, 2],
            port: 1,
            incarnation: 1,
            vsn: vec![1, 1, 1, 9, 9, 9],
            ..Default::default()
        };
        let pp = wire::push_pull(false, &[odd], &[]);
        let reply = n.handle_stream(from(), &pp, Time::from_micros(1));
        assert!(
            reply.is_some(),
            "a push-pull is answered before it is merged"
        );
        assert_eq!(n.stats().dropped.get("incompatible_version"), Some(&1));
        assert_eq!(n.members().len(), 1);
    }
}

/// Every datagram a real Serf agent sent a grapevine agent during a join, a user event and a
/// query (captured on loopback, plaintext and encrypted).
fn captured(dir: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/serf/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn check_datagrams(packets: Vec<Vec<u8>>, ring: Option<&Keyring>, payload: &[u8]) {
    use grapevine_core::serf::messages::SerfMsg;
    use grapevine_core::serf::wire::{open_packet, Msg};
    let mut kinds = std::collections::HashSet::new();
    let mut event = false;
    let mut query = false;
    for p in packets {
        for m in open_packet(&p, ring).unwrap() {
            let m = m.unwrap();
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m, "round trip");
            kinds.insert(std::mem::discriminant(&m));
            if let Msg::User(u) = &m {
                match SerfMsg::decode(u).unwrap() {
                    SerfMsg::UserEvent(e) if e.name == "golden" => {
                        assert_eq!(e.payload, payload);
                        assert!(e.cc);
                        event = true;
                    }
                    SerfMsg::Query(q) if q.name == "golden-q" => {
                        assert_eq!(q.payload, b"q-payload");
                        query = true;
                    }
                    _ => {}
                }
            }
        }
    }
    for want in [
        Msg::Ping(Default::default()),
        Msg::Ack {
            seq: 0,
            payload: vec![],
        },
        Msg::User(vec![]),
        Msg::Alive(Default::default()),
    ] {
        assert!(kinds.contains(&std::mem::discriminant(&want)), "{want:?}");
    }
    assert!(event, "the user event");
    if ring.is_none() {
        assert!(query, "the query");
    }
}

#[test]
fn every_datagram_serf_sent_decodes_and_re_encodes() {
    check_datagrams(captured("udp"), None, b"payload-1");
}

#[test]
fn every_encrypted_datagram_serf_sent_decodes_with_the_key() {
    let ring = captured_ring();
    check_datagrams(captured("udp-encrypted"), Some(&ring), b"payload-2");
}
