//! Hostile and malformed input is dropped, counted by reason, and never panics.

use grapevine_core::wire::{self, Ack, Message, NodeAddr, Ping, PROTOCOL_VERSION};
use grapevine_core::{Config, DropReason, Name, Node, Time};
use std::net::SocketAddr;

fn node(label: &[u8]) -> Node {
    let mut c = Config::lan();
    c.label = label.to_vec();
    Node::new(
        c,
        Name::new("a").unwrap(),
        "127.0.0.1:7946".parse().unwrap(),
        1,
        Time::ZERO,
    )
    .unwrap()
}

fn from() -> SocketAddr {
    "127.0.0.2:7946".parse().unwrap()
}

fn ping(label: &[u8]) -> Vec<u8> {
    let m = Message::Ping(Ping {
        seq: 1,
        target: Name::new("a").unwrap(),
        source: NodeAddr {
            name: Name::new("b").unwrap(),
            addr: from(),
        },
        roots: None,
    });
    wire::encode_packet(PROTOCOL_VERSION, label, &[m]).to_vec()
}

#[test]
fn a_valid_ping_is_answered() {
    let mut n = node(b"prod");
    n.handle_datagram(Time::ZERO, from(), &ping(b"prod"));
    let t = n.poll_transmit().expect("an ack");
    let msgs = wire::decode_packet(&t.payload, b"prod", 65535).unwrap();
    assert_eq!(msgs[0], Message::Ack(Ack { seq: 1 }));
}

#[test]
fn each_bad_packet_is_dropped_and_counted_by_reason() {
    let mut n = node(b"prod");
    let good = ping(b"prod");

    n.handle_datagram(Time::ZERO, from(), &ping(b"staging"));
    assert_eq!(n.stats().dropped(DropReason::WrongLabel), 1);

    let mut v = good.clone();
    v[0] = 200;
    n.handle_datagram(Time::ZERO, from(), &v);
    assert_eq!(n.stats().dropped(DropReason::UnknownVersion), 1);

    let mut c = good.clone();
    let mid = c.len() / 2;
    c[mid] ^= 0x40;
    n.handle_datagram(Time::ZERO, from(), &c);
    assert_eq!(n.stats().dropped(DropReason::BadChecksum), 1);

    n.handle_datagram(Time::ZERO, from(), &good[..3]);
    assert_eq!(n.stats().dropped(DropReason::Truncated), 1);

    let big = vec![1u8; 70_000];
    n.handle_datagram(Time::ZERO, from(), &big);
    assert_eq!(n.stats().dropped(DropReason::Oversized), 1);

    // A well-sealed packet whose message claims more bytes than it has.
    let mut body = vec![PROTOCOL_VERSION, 4];
    body.extend_from_slice(b"prod");
    body.extend_from_slice(&[1, 0xff, 0xff, 0x03, 1, 2]);
    let crc = crc32(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    n.handle_datagram(Time::ZERO, from(), &body);
    assert_eq!(n.stats().dropped(DropReason::Truncated), 2);

    assert!(n.poll_transmit().is_none(), "nothing is answered");
}

#[test]
fn sync_messages_over_udp_are_refused() {
    let mut n = node(b"");
    let m = Message::SyncRequest(wire::SyncRequest {
        id: 1,
        sender: NodeAddr {
            name: Name::new("b").unwrap(),
            addr: from(),
        },
        root: 0,
        members: 1,
        join: true,
    });
    n.handle_datagram(
        Time::ZERO,
        from(),
        &wire::encode_packet(PROTOCOL_VERSION, b"", &[m]),
    );
    assert_eq!(n.stats().dropped(DropReason::WrongChannel), 1);
}

#[test]
fn random_bytes_never_panic() {
    let mut n = node(b"");
    let mut x: u64 = 0x1234_5678;
    for len in 0..2000usize {
        let mut buf = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(x as u8);
        }
        if len >= 6 {
            buf[0] = PROTOCOL_VERSION;
            buf[1] = 0;
            let l = buf.len();
            let crc = crc32(&buf[..l - 4]);
            buf[l - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        n.handle_datagram(Time::ZERO, from(), &buf);
        n.handle_frame(Time::ZERO, from(), &buf);
    }
}

fn crc32(b: &[u8]) -> u32 {
    // The same CRC-32 (IEEE) the wire format uses, bit by bit, as an independent check.
    let mut crc = 0xffff_ffffu32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn oversized_keys_values_and_events_are_refused_with_what_was_wrong() {
    use grapevine_core::CommandError;
    let mut n = node(b"");
    let long_key = "k".repeat(300);
    assert_eq!(
        n.set_state(Time::ZERO, &long_key, vec![], None),
        Err(CommandError::TooLong {
            what: "state key",
            len: 300,
            max: 256
        })
    );
    let big = vec![0u8; wire::MAX_VALUE_LEN + 1];
    assert!(matches!(
        n.put_shared(Time::ZERO, b"k", Some(big), None),
        Err(CommandError::TooLong {
            what: "shared value",
            ..
        })
    ));
    assert!(matches!(
        n.broadcast(Time::ZERO, "e", vec![0; 2000]),
        Err(CommandError::TooLong {
            what: "event payload",
            len: 2000,
            max: 1024
        })
    ));
    // Nothing was stored or sent.
    assert!(n.node_state(n.name()).is_none());
    assert!(n.shared().is_empty());
    assert!(n.poll_transmit().is_none());
}
