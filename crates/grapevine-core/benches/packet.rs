//! How fast one core handles typical packets: a ping with rumours piggybacked, a bare ping.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use grapevine_core::wire::{self, Alive, Message, NodeAddr, Ping, PROTOCOL_VERSION};
use grapevine_core::{Config, Name, Node, Time};
use std::net::SocketAddr;

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}

fn name(i: u32) -> Name {
    Name::new(&format!("node-{i:06}")).unwrap()
}

/// A node of a 1,000-member cluster that already knows everyone.
fn warm_node() -> Node {
    let mut n = Node::new(Config::lan(), name(0), addr(0), 1, Time::ZERO).unwrap();
    for chunk in (1..1000u32).collect::<Vec<_>>().chunks(40) {
        let msgs: Vec<Message> = chunk
            .iter()
            .map(|&i| {
                Message::Alive(Alive {
                    name: name(i),
                    addr: addr(i),
                    incarnation: 1,
                    tags: vec![],
                    protocol: 1,
                })
            })
            .collect();
        n.handle_datagram(
            Time::ZERO,
            addr(1),
            &wire::encode_packet(PROTOCOL_VERSION, b"", &msgs),
        );
    }
    // Let the rumours of all those joins die out, as in a settled cluster.
    while n.pending_broadcasts() > 0 {
        let now = n.poll_timeout();
        n.handle_timeout(now);
        while n.poll_transmit().is_some() {}
    }
    while n.poll_event().is_some() {}
    n
}

fn gossip_packet() -> Vec<u8> {
    // What a busy cluster sends: a ping plus as many rumours as fit in 1,400 bytes.
    let mut b = wire::PacketBuilder::new(PROTOCOL_VERSION, b"", 1400);
    b.push_forced(&Message::Ping(Ping {
        seq: 7,
        target: name(0),
        source: NodeAddr {
            name: name(5),
            addr: addr(5),
        },
        roots: None,
    }));
    let mut i = 1;
    loop {
        let m = Message::Alive(Alive {
            name: name(i),
            addr: addr(i),
            incarnation: 1,
            tags: vec![],
            protocol: 1,
        });
        if !b.push_framed(&m.encode()) {
            break;
        }
        i += 1;
    }
    b.finish().to_vec()
}

fn bench(c: &mut Criterion) {
    let packet = gossip_packet();
    let ping = wire::encode_packet(
        PROTOCOL_VERSION,
        b"",
        &[Message::Ping(Ping {
            seq: 7,
            target: name(0),
            source: NodeAddr {
                name: name(5),
                addr: addr(5),
            },
            roots: None,
        })],
    )
    .to_vec();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("gossip_packet_1400B", |b| {
        b.iter_batched_ref(
            warm_node,
            |n| {
                for _ in 0..1000 {
                    n.handle_datagram(Time::ZERO, addr(5), &packet);
                    while n.poll_transmit().is_some() {}
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("ping", |b| {
        let mut n = warm_node();
        b.iter(|| {
            n.handle_datagram(Time::ZERO, addr(5), &ping);
            n.poll_transmit()
        })
    });
    g.bench_function("decode_gossip_packet", |b| {
        b.iter(|| wire::decode_packet(&packet, b"", 65_507))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
