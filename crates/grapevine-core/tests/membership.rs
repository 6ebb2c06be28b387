//! Membership rules exercised by injecting gossip into one node.

use grapevine_core::wire::{self, Alive, Dead, Message, PROTOCOL_VERSION};
use grapevine_core::{CommandError, Config, Event, Name, Node, State, Time};
use std::net::SocketAddr;
use std::time::Duration;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A node whose admission limits and hearsay pings do not get in the way of tests that
/// script membership by gossip from one address (tests/edges.rs tests those).
fn config() -> Config {
    let mut c = Config::lan();
    c.membership.new_members_per_source = grapevine_core::Rate::new(1 << 20, 1e6);
    c.membership.new_members_total = grapevine_core::Rate::new(1 << 20, 1e6);
    c.membership.verify_hearsay = false;
    c
}

fn node() -> Node {
    Node::new(
        config(),
        Name::new("a").unwrap(),
        addr("10.0.0.1:7946"),
        1,
        Time::ZERO,
    )
    .unwrap()
}

fn gossip(n: &mut Node, now: Time, m: Message) {
    n.handle_datagram(
        now,
        addr("10.0.0.9:7946"),
        &wire::encode_packet(PROTOCOL_VERSION, b"", &[m]),
    );
}

fn alive(name: &str, at: &str, incarnation: u32) -> Message {
    Message::Alive(Alive {
        name: Name::new(name).unwrap(),
        addr: addr(at),
        incarnation,
        tags: vec![],
        protocol: 1,
    })
}

fn dead(name: &str, incarnation: u32) -> Message {
    Message::Dead(Dead {
        name: Name::new(name).unwrap(),
        incarnation,
        accuser: Name::new("b").unwrap(),
    })
}

fn events(n: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| n.poll_event()).collect()
}

#[test]
fn a_name_is_reclaimed_at_a_new_address_only_after_the_reclaim_time() {
    let mut n = node();
    let t0 = Time::ZERO;
    gossip(&mut n, t0, alive("x", "10.0.0.2:7946", 3));
    assert!(matches!(events(&mut n).as_slice(), [Event::Joined { .. }]));

    // While x is alive, another address claiming its name is a conflict, not an update.
    gossip(&mut n, t0, alive("x", "10.0.0.3:7946", 9));
    assert!(matches!(
        events(&mut n).as_slice(),
        [Event::Conflict { .. }]
    ));
    assert_eq!(
        n.member(&Name::new("x").unwrap()).unwrap().addr,
        addr("10.0.0.2:7946")
    );

    gossip(&mut n, t0, dead("x", 3));
    assert_eq!(n.state_of(&Name::new("x").unwrap()), Some(State::Dead));
    events(&mut n);

    // Dead for less than the reclaim time (60 s in `lan`): still refused.
    let t1 = t0 + Duration::from_secs(30);
    gossip(&mut n, t1, alive("x", "10.0.0.3:7946", 0));
    assert!(matches!(
        events(&mut n).as_slice(),
        [Event::Conflict { .. }]
    ));

    // Past it: the new owner takes the name, whatever its incarnation.
    let t2 = t0 + Duration::from_secs(61);
    gossip(&mut n, t2, alive("x", "10.0.0.3:7946", 0));
    assert!(matches!(events(&mut n).as_slice(), [Event::Joined { .. }]));
    let x = n.member(&Name::new("x").unwrap()).unwrap();
    assert_eq!(
        (x.addr, x.state, x.incarnation),
        (addr("10.0.0.3:7946"), State::Alive, 0)
    );
}

#[test]
fn an_accusation_is_refuted_with_a_higher_incarnation() {
    let mut n = node();
    gossip(&mut n, Time::ZERO, dead("a", 0));
    assert_eq!(n.incarnation(), 1);
    assert!(matches!(
        events(&mut n).as_slice(),
        [Event::Refuted {
            accusation: State::Dead,
            incarnation: 1
        }]
    ));
    assert_eq!(n.stats().refutations, 1);
    // An accusation of an older incarnation is already answered.
    gossip(&mut n, Time::ZERO, dead("a", 0));
    assert_eq!(n.incarnation(), 1);
}

#[test]
fn tags_are_bounded() {
    let mut n = node();
    assert_eq!(
        n.set_tags(Time::ZERO, vec![0; 513]),
        Err(CommandError::TagsTooLong { len: 513 })
    );
    n.set_tags(Time::ZERO, vec![7; 512]).unwrap();
    assert_eq!(n.member(n.name()).unwrap().tags.len(), 512);
    assert_eq!(
        n.incarnation(),
        1,
        "a tag change is announced with a new incarnation"
    );
}

#[test]
fn every_profile_is_valid_and_scales_as_documented() {
    for name in ["lan", "wan", "local"] {
        let c = Config::profile(name).unwrap();
        c.validate().unwrap();
        assert_eq!(c.profile, name);
    }
    assert!(Config::profile("moon").is_none());
    let c = Config::lan();
    // 4 × ceil(log10(N + 1)) transmissions.
    assert_eq!(c.retransmit_limit(9), 4);
    assert_eq!(c.retransmit_limit(1000), 16);
    assert_eq!(c.retransmit_limit(10_000), 20);
    // Push-pull every 30 s up to 32 members, then × (ceil(log2 N − 5) + 1).
    assert_eq!(c.push_pull_interval_for(32), Duration::from_secs(30));
    assert_eq!(c.push_pull_interval_for(1000), Duration::from_secs(180));
    // Suspicion: 3 × max(1, log10 N) periods of 500 ms.
    assert_eq!(c.suspicion_min_timeout(1000), Duration::from_millis(4500));
    assert_eq!(c.suspicion_min_timeout(10), Duration::from_millis(1500));
}

#[test]
fn force_leave_turns_a_failed_member_into_a_left_one_and_refuses_a_live_one() {
    let mut n = node();
    let t0 = Time::ZERO;
    gossip(&mut n, t0, alive("x", "10.0.0.2:7946", 3));
    let x = Name::new("x").unwrap();
    assert_eq!(
        n.force_leave(t0, &x),
        Err(CommandError::NotFailed {
            name: "x".into(),
            state: State::Alive
        })
    );
    assert_eq!(
        n.force_leave(t0, &Name::new("nobody").unwrap()),
        Err(CommandError::UnknownMember("nobody".into()))
    );
    gossip(&mut n, t0, dead("x", 3));
    events(&mut n);
    assert_eq!(n.force_leave(t0, &x), Ok(()));
    assert_eq!(n.state_of(&x), Some(State::Left));
    assert!(matches!(events(&mut n).as_slice(), [Event::Left { .. }]));
    // The news is queued for gossip, so the others record it too.
    assert!(n.pending_broadcasts() > 0);
}

/// Runs `n`'s timers from `from` to `until`, answering nothing; returns the pings it sent,
/// by destination: (sequence number, whether the packet accused the target).
fn run_silent(n: &mut Node, from: Time, until: Time) -> Vec<(SocketAddr, u32, bool)> {
    let mut pings = Vec::new();
    for (dst, reliable, msgs) in run_packets(n, from, until) {
        if reliable {
            continue;
        }
        let accused = msgs.iter().any(|m| matches!(m, Message::Suspect(_)));
        for m in msgs {
            if let Message::Ping(p) = m {
                pings.push((dst, p.seq, accused));
            }
        }
    }
    pings
}

/// Every packet and frame `n` sends until `until`, stepping its timers every 10 ms and
/// answering nothing: (destination, reliable, messages).
fn run_packets(n: &mut Node, from: Time, until: Time) -> Vec<(SocketAddr, bool, Vec<Message>)> {
    let mut sent = Vec::new();
    let mut now = from;
    while now < until {
        n.handle_timeout(now);
        while let Some(t) = n.poll_transmit() {
            let msgs = wire::decode_packet(&t.payload, b"", 1 << 20).unwrap();
            sent.push((t.dst, t.reliable, msgs));
        }
        now = now + Duration::from_millis(10);
    }
    sent
}

/// Lifeguard's last chance: a suspicion nobody confirmed is not a death at its deadline; the
/// node probes the suspect first (telling it it is suspected). A suspect that answers stays (it will refute); one that does not dies.
#[test]
fn a_lone_suspicion_gets_a_last_chance_probe_before_it_becomes_a_death() {
    use grapevine_core::wire::{Ack, Suspect};
    let mut n = node();
    let t0 = Time::ZERO;
    // 60 members, each suspected by one other member (no confirmation): each waits the
    // maximum timeout, 6 × 3 × log10(61) × 500 ms ≈ 16 s, while a round-robin pass of 60
    // members takes 30 s, so about half are never probed before their deadline.
    let addr_of = |i: usize| addr(&format!("10.0.1.{i}:7946"));
    for i in 0..60 {
        gossip(
            &mut n,
            t0,
            alive(&format!("m{i}"), &format!("10.0.1.{i}:7946"), 0),
        );
    }
    for i in 0..60 {
        gossip(
            &mut n,
            t0,
            Message::Suspect(Suspect {
                name: Name::new(&format!("m{i}")).unwrap(),
                incarnation: 0,
                accuser: Name::new("z").unwrap(),
            }),
        );
    }
    let deadline = t0 + Config::lan().suspicion_min_timeout(61) * 6;
    let before = run_silent(&mut n, t0, deadline + Duration::from_millis(50));
    let unprobed: Vec<usize> = (0..60)
        .filter(|&i| !before.iter().any(|p| p.0 == addr_of(i)))
        .collect();
    assert!(unprobed.len() > 10, "{} unprobed", unprobed.len());
    for &i in &unprobed {
        let m = Name::new(&format!("m{i}")).unwrap();
        assert_eq!(
            n.state_of(&m),
            Some(State::Suspect),
            "m{i} not dead at its deadline"
        );
    }
    // Last-chance probes, one a probe period, each carrying the accusation. Answer those of the
    // even-numbered members.
    let mut now = deadline + Duration::from_millis(50);
    let mut last_chance = std::collections::BTreeSet::new();
    while last_chance.len() < unprobed.len() {
        let step = now + Duration::from_millis(500);
        for (dst, seq, accused) in run_silent(&mut n, now, step) {
            let Some(i) = unprobed.iter().copied().find(|&i| addr_of(i) == dst) else {
                continue;
            };
            assert!(
                accused,
                "the last-chance probe of m{i} tells it it is suspected"
            );
            last_chance.insert(i);
            if i % 2 == 0 {
                gossip(&mut n, step, Message::Ack(Ack { seq }));
            }
        }
        now = step;
        // This node's own probes all fail without nacks, so Lifeguard slows its probing up
        // to eightfold: a probe every 4 s.
        assert!(
            now < deadline + Duration::from_secs(400),
            "every unprobed suspect probed"
        );
    }
    // The last probe ends (its period is stretched to 4 s too); the answering suspects keep
    // answering (each answer earns another wait, then another probe).
    let end = now + Duration::from_secs(10);
    while now < end {
        let step = now + Duration::from_millis(500);
        for (dst, seq, _) in run_silent(&mut n, now, step) {
            if unprobed.iter().any(|&i| i % 2 == 0 && addr_of(i) == dst) {
                gossip(&mut n, step, Message::Ack(Ack { seq }));
            }
        }
        now = step;
    }
    for &i in &unprobed {
        let m = Name::new(&format!("m{i}")).unwrap();
        let expected = if i % 2 == 0 {
            State::Suspect
        } else {
            State::Dead
        };
        assert_eq!(n.state_of(&m), Some(expected), "m{i}");
    }
}

/// Every message `n` sends until `until`, answering nothing: (destination, reliable, message).
fn run_all(n: &mut Node, from: Time, until: Time) -> Vec<(SocketAddr, bool, Message)> {
    run_packets(n, from, until)
        .into_iter()
        .flat_map(|(dst, reliable, msgs)| msgs.into_iter().map(move |m| (dst, reliable, m)))
        .collect()
}

/// An accusation that reaches a node over TCP (its accuser's fallback probe) is answered on
/// TCP with the node's `Alive`, whether it needs a new incarnation or was already denied:
/// datagrams between the two are being lost, so a gossiped denial may not get back in time.
#[test]
fn an_accusation_over_tcp_is_denied_over_tcp() {
    use grapevine_core::wire::Suspect;
    let mut n = node();
    let accuser = addr("10.0.0.7:7946");
    let accuse = |n: &mut Node, incarnation| {
        let frame = wire::encode_packet(
            PROTOCOL_VERSION,
            b"",
            &[Message::Suspect(Suspect {
                name: Name::new("a").unwrap(),
                incarnation,
                accuser: Name::new("b").unwrap(),
            })],
        );
        n.handle_frame(Time::ZERO, accuser, &frame);
        let denials: Vec<u32> = std::iter::from_fn(|| n.poll_transmit())
            .filter(|t| t.reliable && t.dst == accuser)
            .flat_map(|t| wire::decode_packet(&t.payload, b"", 1 << 20).unwrap())
            .filter_map(|m| match m {
                Message::Alive(a) if a.name.as_str() == "a" => Some(a.incarnation),
                _ => None,
            })
            .collect();
        denials
    };
    assert_eq!(accuse(&mut n, 0), [1], "refuted, and told over TCP");
    assert_eq!(accuse(&mut n, 0), [1], "already refuted: told again");
    // Over UDP the denial rides on gossip (and on the ack of a buddy probe) instead.
    gossip(
        &mut n,
        Time::ZERO,
        Message::Suspect(Suspect {
            name: Name::new("a").unwrap(),
            incarnation: 1,
            accuser: Name::new("b").unwrap(),
        }),
    );
    assert!(std::iter::from_fn(|| n.poll_transmit()).all(|t| !t.reliable));
}

/// A node whose probe fails tells the suspect straight away, besides gossiping it; and its
/// later probes tell it again on every path, the TCP fallback included.
#[test]
fn the_accuser_tells_the_suspect_directly_and_on_the_fallback_probe() {
    let mut n = node();
    let x = addr("10.0.0.2:7946");
    gossip(&mut n, Time::ZERO, alive("x", "10.0.0.2:7946", 0));
    // x is the only member: every probe is of x. The first fails (nothing is answered).
    let period = Config::lan().detection.probe_interval;
    let first = run_all(&mut n, Time::ZERO, Time::ZERO + period * 2);
    let accused_x = |m: &Message| matches!(m, Message::Suspect(s) if s.name.as_str() == "x");
    let fallback = first
        .iter()
        .position(|(d, rel, m)| *d == x && *rel && matches!(m, Message::Ping(_)))
        .expect("a fallback probe");
    assert!(
        !first[..fallback].iter().any(|(_, _, m)| accused_x(m)),
        "not suspected before its first probe fails"
    );
    let told = first
        .iter()
        .position(|(d, rel, m)| *d == x && !*rel && accused_x(m))
        .expect("x told it is suspected");
    assert!(told > fallback);
    assert_eq!(n.state_of(&Name::new("x").unwrap()), Some(State::Suspect));
    // The next probe of the suspect carries the accusation on UDP and on TCP.
    let later = run_all(&mut n, Time::ZERO + period * 2, Time::ZERO + period * 4);
    let frames: Vec<&Message> = later
        .iter()
        .filter(|(d, rel, _)| *d == x && *rel)
        .map(|(_, _, m)| m)
        .collect();
    assert!(
        frames
            .windows(2)
            .any(|w| accused_x(w[0]) && matches!(w[1], Message::Ping(_))),
        "the fallback frame accuses, then pings: {frames:?}"
    );
}

/// A denial (a member's `Alive` at a higher incarnation) is gossiped three times as often as
/// other news, by the member and by everyone who relays it: a node it misses declares a live
/// member dead.
#[test]
fn a_denial_is_gossiped_three_times_as_often() {
    let mut n = node();
    for i in 0..5 {
        gossip(
            &mut n,
            Time::ZERO,
            alive(&format!("m{i}"), &format!("10.0.2.{i}:7946"), 0),
        );
    }
    // Let the joins' own gossip run out, then m0 denies (incarnation 1) and m9 joins.
    let quiet = Time::ZERO + Duration::from_secs(5);
    run_all(&mut n, Time::ZERO, quiet);
    gossip(&mut n, quiet, alive("m0", "10.0.2.0:7946", 1));
    gossip(&mut n, quiet, alive("m9", "10.0.2.9:7946", 0));
    let sent = run_all(&mut n, quiet, quiet + Duration::from_secs(10));
    let count = |name: &str| {
        sent.iter()
            .filter(|(_, _, m)| matches!(m, Message::Alive(a) if a.name.as_str() == name))
            .count()
    };
    let limit = Config::lan().retransmit_limit(6) as usize;
    assert_eq!(count("m9"), limit);
    assert_eq!(count("m0"), 3 * limit);
}

/// A cluster of two, one of them gone silent: every probe is of the suspect, so a probe of
/// it is always under way when the suspicion's deadline comes. The verdict waits for the
/// probe begun before the deadline, not for every next one: the member is declared dead.
#[test]
fn the_only_other_member_gone_silent_is_declared_dead() {
    let mut n = node();
    gossip(&mut n, Time::ZERO, alive("x", "10.0.0.2:7946", 0));
    let x = Name::new("x").unwrap();
    let mut now = Time::ZERO;
    let mut suspected = None;
    while n.state_of(&x) != Some(State::Dead) {
        run_all(&mut n, now, now + Duration::from_millis(100));
        now = now + Duration::from_millis(100);
        if suspected.is_none() && n.state_of(&x) == Some(State::Suspect) {
            suspected = Some(now);
        }
        assert!(
            now < Time::ZERO + Duration::from_secs(60),
            "x still {:?}",
            n.state_of(&x)
        );
    }
    // With one member, Lifeguard expects no confirmation (k = 0): the minimum timeout, then
    // the end of the probe under way, then one more probe period at most.
    let suspected = suspected.expect("suspected first");
    let waited = now.saturating_since(suspected);
    let min = Config::lan().suspicion_min_timeout(2);
    assert!(
        waited <= min + Config::lan().detection.probe_interval * 4,
        "{waited:?}"
    );
}
