//! Property test: every message survives encode → decode unchanged, alone or compounded.

use grapevine_core::filter::Filter;
use grapevine_core::state::crdt::{
    AwSet, EpochRegister, Lww, MaxRegister, MvRegister, PnCounter, VersionVector,
};
use grapevine_core::state::endpoint::{Delta, Held, Versioned};
use grapevine_core::state::keyspace::Value;
use grapevine_core::state::Timestamp;
use grapevine_core::wire::*;
use grapevine_core::{Name, State};
use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};

fn name() -> impl Strategy<Value = Name> {
    "[a-zA-Z0-9._-]{1,40}".prop_map(|s| Name::new(&s).unwrap())
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn node() -> impl Strategy<Value = NodeAddr> {
    (name(), addr()).prop_map(|(name, addr)| NodeAddr { name, addr })
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Alive),
        Just(State::Suspect),
        Just(State::Dead),
        Just(State::Left)
    ]
}

fn tags() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=MAX_TAGS_LEN)
}

fn filter() -> impl Strategy<Value = Option<Filter>> {
    proptest::option::of(
        (1u8..=10, proptest::collection::vec(any::<u64>(), 0..8)).prop_map(|(hashes, words)| {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            Filter::from_parts(hashes, &bytes)
        }),
    )
}

fn entry() -> impl Strategy<Value = Entry> {
    (name(), addr(), any::<u32>(), state(), tags(), any::<u8>()).prop_map(
        |(name, addr, incarnation, state, tags, protocol)| Entry {
            name,
            addr,
            incarnation,
            state,
            tags,
            protocol,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), name(), node(), any::<Option<[u8; 3]>>()).prop_map(
            |(seq, target, source, roots)| Message::Ping(Ping {
                seq,
                target,
                source,
                roots: roots.map(Fingerprints),
            })
        ),
        (any::<u32>(), node(), any::<bool>(), node()).prop_map(|(seq, target, nack, requester)| {
            Message::IndirectPing(IndirectPing {
                seq,
                target,
                nack,
                requester,
            })
        }),
        any::<u32>().prop_map(|seq| Message::Ack(Ack { seq })),
        any::<u32>().prop_map(|seq| Message::Nack(Nack { seq })),
        (name(), addr(), any::<u32>(), tags(), any::<u8>()).prop_map(
            |(name, addr, incarnation, tags, protocol)| Message::Alive(Alive {
                name,
                addr,
                incarnation,
                tags,
                protocol
            })
        ),
        (name(), any::<u32>(), name()).prop_map(|(name, incarnation, accuser)| Message::Suspect(
            Suspect {
                name,
                incarnation,
                accuser
            }
        )),
        (name(), any::<u32>(), name()).prop_map(|(name, incarnation, accuser)| Message::Dead(
            Dead {
                name,
                incarnation,
                accuser
            }
        )),
        (name(), any::<u32>())
            .prop_map(|(name, incarnation)| Message::Leave(Leave { name, incarnation })),
        (
            any::<u32>(),
            node(),
            any::<u64>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(id, sender, root, members, join)| Message::SyncRequest(
                SyncRequest {
                    id,
                    sender,
                    root,
                    members,
                    join
                }
            )),
        (
            any::<u32>(),
            node(),
            proptest::option::of(proptest::collection::vec(any::<u64>(), DIGEST_BUCKETS)),
            filter()
        )
            .prop_map(|(id, sender, buckets, filter)| {
                // The filter rides only with the buckets.
                let filter = if buckets.is_some() { filter } else { None };
                Message::SyncBuckets(SyncBuckets {
                    id,
                    sender,
                    buckets,
                    filter,
                })
            }),
        (
            any::<u32>(),
            node(),
            proptest::collection::vec(any::<u8>(), DIGEST_BUCKETS / 8).prop_map(|v| {
                let mut a = [0u8; DIGEST_BUCKETS / 8];
                a.copy_from_slice(&v);
                a
            }),
            proptest::collection::vec(entry(), 0..8),
            any::<bool>(),
            filter()
        )
            .prop_map(|(id, sender, mask, entries, push, filter)| {
                let m = SyncEntries {
                    id,
                    sender,
                    mask,
                    entries,
                    filter,
                };
                if push {
                    Message::SyncPush(m)
                } else {
                    Message::SyncPull(m)
                }
            }),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec((any::<u32>(), any::<u64>()), 0..20),
            proptest::option::of(name()),
        )
            .prop_map(
                |(id, tree, depth, level, ranges, sender)| Message::TreeHashes(TreeHashes {
                    id,
                    tree,
                    depth,
                    level,
                    ranges,
                    sender,
                })
            ),
        (
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(any::<u32>(), 0..20),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20),
            proptest::collection::vec(held(), 0..5)
        )
            .prop_map(|(id, tree, level, ranges, items, held)| {
                Message::TreeItems(TreeItems {
                    id,
                    tree,
                    level,
                    ranges,
                    items,
                    held,
                })
            }),
        (
            any::<u32>(),
            proptest::collection::vec(delta(), 0..4),
            proptest::collection::vec((any::<u64>(), held()), 0..5)
        )
            .prop_map(|(id, deltas, want)| Message::StateDeltas(StateDeltas {
                id,
                deltas,
                want
            })),
        (
            any::<u64>(),
            name(),
            "[a-z-]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(id, origin, name, payload, hops, feedback)| {
                Message::UserEvent(UserEvent {
                    id,
                    origin,
                    name,
                    payload,
                    hops,
                    feedback,
                })
            }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(id, knew)| Message::RumorAck(RumorAck { id, knew })),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(
                ("[a-z.]{1,20}", proptest::array::uniform5(-1e12f64..1e12)),
                0..5
            )
        )
            .prop_map(|(epoch, round, entries)| Message::Aggregate(Aggregate {
                epoch,
                round,
                entries: entries
                    .into_iter()
                    .map(|(name, [s, w, c, min, max])| AggregateMass {
                        name,
                        s,
                        w,
                        c,
                        min,
                        max
                    })
                    .collect()
            })),
        (
            any::<u32>(),
            any::<u8>(),
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20), value()),
                0..6
            ),
            proptest::collection::vec(any::<u64>(), 0..10)
        )
            .prop_map(
                |(id, tree, entries, want)| Message::TreeEntries(TreeEntries {
                    id,
                    tree,
                    entries,
                    want
                })
            ),
    ]
}

fn held() -> impl Strategy<Value = Held> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(generation, max_version, heartbeat)| {
        Held {
            generation,
            max_version,
            heartbeat,
        }
    })
}

fn delta() -> impl Strategy<Value = Delta> {
    (
        name(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(
            (
                "[a-z/]{0,12}",
                proptest::collection::vec(any::<u8>(), 0..12),
                any::<u64>(),
                any::<bool>(),
                proptest::option::of(any::<u64>()),
                any::<u64>(),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(node, generation, heartbeat, reset, gc_version, max_version, entries)| Delta {
                node,
                generation,
                heartbeat,
                reset,
                gc_version,
                max_version,
                entries: entries
                    .into_iter()
                    .map(|(k, value, version, tombstone, expires_at, since)| {
                        (
                            k,
                            Versioned {
                                value,
                                version,
                                tombstone,
                                expires_at,
                                since,
                            },
                        )
                    })
                    .collect(),
            },
        )
}

/// Shared-keyspace values in the canonical form merges leave them in.
fn value() -> impl Strategy<Value = Value> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..12);
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            name(),
            proptest::option::of(bytes()),
            proptest::option::of(any::<u64>()),
            prop_oneof![Just(0u64), any::<u64>()]
        )
            .prop_map(|(p, l, writer, value, expires_at, flags)| Value::Lww(Lww {
                at: Timestamp::new(p, l),
                writer,
                value,
                expires_at,
                flags,
            })),
        proptest::collection::vec((name(), proptest::option::of(bytes())), 0..4).prop_map(
            |writes| {
                let mut r = MvRegister::default();
                for (w, v) in writes {
                    r.write(&w, &VersionVector::default(), v);
                }
                Value::Mv(r)
            }
        ),
        bytes().prop_map(Value::Custom),
        proptest::collection::vec((name(), any::<i32>()), 0..5).prop_map(|adds| {
            let mut c = PnCounter::default();
            for (w, d) in adds {
                c.add(&w, i64::from(d));
            }
            Value::Counter(c)
        }),
        any::<i64>().prop_map(|v| Value::Max(MaxRegister(v))),
        (any::<u64>(), name(), bytes()).prop_map(|(epoch, owner, value)| Value::Epoch(
            EpochRegister {
                epoch,
                owner,
                value
            }
        )),
        proptest::collection::vec((name(), bytes(), any::<bool>()), 0..6).prop_map(|ops| {
            let mut s = AwSet::default();
            for (w, e, remove) in ops {
                if remove {
                    s.remove(&e);
                } else {
                    s.add(&w, e);
                }
            }
            Value::Set(s)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn packets_round_trip(msgs in proptest::collection::vec(message(), 1..6), label in "[a-z]{0,20}") {
        let bytes = encode_packet(PROTOCOL_VERSION, label.as_bytes(), &msgs);
        let back = decode_packet(&bytes, label.as_bytes(), usize::MAX).unwrap();
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn any_truncation_is_an_error_not_a_panic(msg in message(), cut in 0usize..2000) {
        let bytes = encode_packet(PROTOCOL_VERSION, b"", std::slice::from_ref(&msg));
        let cut = cut % bytes.len();
        prop_assert!(decode_packet(&bytes[..cut], b"", usize::MAX).is_err());
    }
}
