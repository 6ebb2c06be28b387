//! The real protocol spreading state: O(log N) rounds, nothing sent once converged, nothing
//! lost across a partition.

use grapevine_core::state::reconcile::Mode;
use grapevine_sim::scenario::state::{run, StateParams};

fn params(nodes: u32) -> StateParams {
    StateParams {
        nodes,
        no_wall_clock: true,
        ..StateParams::default()
    }
}

#[test]
fn one_write_reaches_everyone_in_logarithmic_rounds_at_flat_cost() {
    let small = run(&params(100)).unwrap();
    let large = run(&params(1000)).unwrap();
    for r in [&small, &large] {
        assert_eq!(r.lost_writes, 0, "{r:?}");
    }
    let (rs, rl) = (
        small.rounds_to_converge.unwrap(),
        large.rounds_to_converge.unwrap(),
    );
    // Tenfold nodes: a round or two more, not ten times more.
    assert!(rs <= 6 && rl <= rs + 3, "{rs} → {rl}");
    // Steady state: pings show every root equal, so no exchange runs, whatever N.
    assert_eq!(small.steady_bytes_per_node_per_round, 0.0, "{small:?}");
    assert_eq!(large.steady_bytes_per_node_per_round, 0.0, "{large:?}");
    assert_eq!(run(&params(100)).unwrap(), small, "same seed, same run");
}

#[test]
fn both_sides_of_a_partition_write_and_every_write_survives_the_heal() {
    let r = run(&StateParams {
        nodes: 200,
        writes: 20,
        shared_keys: 4,
        partition_at: Some(2),
        heal_at: Some(40),
        ..params(200)
    })
    .unwrap();
    assert_eq!(r.lost_writes, 0, "{r:?}");
    assert!(r.rounds_to_converge.is_some_and(|x| x <= 10), "{r:?}");
}

#[test]
fn push_alone_and_pull_alone_also_converge() {
    for mode in [Mode::Push, Mode::Pull] {
        let r = run(&StateParams {
            mode,
            ..params(200)
        })
        .unwrap();
        assert_eq!(r.lost_writes, 0, "{mode:?}: {r:?}");
        assert!(r.rounds_to_converge.is_some(), "{mode:?}: {r:?}");
    }
}

/// Expired and deleted keys disappear everywhere and stay gone once their tombstones are
/// collected, even on a node that was cut off during the delete and comes back after the
/// collection.
#[test]
fn expired_and_deleted_keys_never_come_back() {
    use grapevine_core::{Config, Time};
    use grapevine_sim::{sim_name, NetConfig, NoObserver, Sim};
    use std::time::Duration;

    let mut config = Config::lan();
    config.state.tombstone_grace = Duration::from_secs(20);
    let n = 12u32;
    let mut sim = Sim::new(5, NetConfig::lan());
    let obs = &mut NoObserver;
    for _ in 0..n {
        sim.add_node();
    }
    sim.start(0, config.clone(), &[], obs);
    for i in 1..n {
        sim.start(i, config.clone(), &[0], obs);
    }
    let mut t = Time::ZERO;
    let mut advance = |sim: &mut Sim, secs: u64| {
        t = t + Duration::from_secs(secs);
        sim.run_until(t, &mut NoObserver);
    };
    advance(&mut sim, 10);
    let (owner, cut_off) = (1u32, 7u32);
    let now = sim.now();
    let node = sim.node_mut(owner).unwrap();
    node.set_state(now, "tmp", b"ttl".to_vec(), Some(Duration::from_secs(5)))
        .unwrap();
    node.set_state(now, "del", b"doomed".to_vec(), None)
        .unwrap();
    node.put_shared(
        now,
        b"s/tmp",
        Some(b"ttl".to_vec()),
        Some(Duration::from_secs(5)),
    )
    .unwrap();
    node.put_shared(now, b"s/del", Some(b"doomed".to_vec()), None)
        .unwrap();
    sim.poke(owner, obs);
    advance(&mut sim, 8);
    let owner_name = sim_name(owner);
    let holds = |sim: &Sim, i: u32, key: &str, shared: &[u8]| {
        let now = sim.now();
        let x = sim.node(i).unwrap();
        (
            x.state_value(now, &owner_name, key).is_some(),
            x.shared().get(shared, x.physical_time(now)).is_some(),
        )
    };
    for i in 0..n {
        assert_eq!(holds(&sim, i, "del", b"s/del"), (true, true), "node {i}");
        assert_eq!(
            holds(&sim, i, "tmp", b"s/tmp"),
            (false, false),
            "expired on node {i}"
        );
    }
    // Cut a node off, delete, and wait past the grace period: tombstones are collected.
    sim.topology.isolate(cut_off, true);
    let now = sim.now();
    let node = sim.node_mut(owner).unwrap();
    node.delete_state(now, "del").unwrap();
    node.put_shared(now, b"s/del", None, None).unwrap();
    sim.poke(owner, obs);
    advance(&mut sim, 40);
    for i in (0..n).filter(|&i| i != cut_off) {
        let x = sim.node(i).unwrap();
        assert!(
            x.shared().raw(b"s/del").is_none(),
            "tombstone collected on {i}"
        );
        assert!(
            !x.node_state(&owner_name)
                .unwrap()
                .entries
                .contains_key("del"),
            "per-node tombstone collected on {i}"
        );
    }
    assert_eq!(
        holds(&sim, cut_off, "del", b"s/del"),
        (true, true),
        "the cut-off node still holds them"
    );
    // Heal: the cut-off node's old values must not come back; it loses them instead.
    sim.topology.isolate(cut_off, false);
    advance(&mut sim, 30);
    for i in 0..n {
        assert_eq!(holds(&sim, i, "del", b"s/del"), (false, false), "node {i}");
        assert_eq!(holds(&sim, i, "tmp", b"s/tmp"), (false, false), "node {i}");
    }
}

/// Schema agreement, Cassandra's way: every member publishes which value of a key it holds;
/// any member can tell when all live members hold the same one, and is told when they do.
#[test]
fn every_member_can_tell_when_the_cluster_agrees_on_a_key() {
    use grapevine_core::{Config, Event, Target, Time};
    use grapevine_sim::{NetConfig, Observer, Sim};
    use std::time::Duration;

    struct Agreed(Vec<(Time, bool)>);
    impl Observer for Agreed {
        fn on_event(&mut self, now: Time, node: u32, event: &Event) {
            if let (0, Event::Agreement { agreed, .. }) = (node, event) {
                self.0.push((now, *agreed));
            }
        }
    }
    let n = 60u32;
    let config = Config::lan();
    let mut sim = Sim::new(9, NetConfig::lan());
    let mut obs = Agreed(Vec::new());
    for _ in 0..n {
        sim.add_node();
    }
    sim.start(0, config.clone(), &[], &mut obs);
    for i in 1..n {
        sim.start(i, config.clone(), &[0], &mut obs);
    }
    sim.run_until(Time::ZERO + Duration::from_secs(10), &mut obs);
    let schema = Target::Shared(b"schema".to_vec());
    let now = sim.now();
    sim.node_mut(3)
        .unwrap()
        .put_shared(now, b"schema", Some(b"v1".to_vec()), None)
        .unwrap();
    for i in 0..n {
        sim.node_mut(i).unwrap().track(now, schema.clone());
        sim.poke(i, &mut obs);
    }
    assert!(!sim.node(0).unwrap().agreement(now, &schema).agreed);
    sim.run_until(now + Duration::from_secs(15), &mut obs);
    let t = sim.now();
    let a = sim.node(0).unwrap().agreement(t, &schema);
    assert!(a.agreed, "{a:?}");
    assert_eq!(
        obs.0.last().map(|e| e.1),
        Some(true),
        "told of the agreement"
    );
    // A new version: agreement is lost, then found again.
    sim.node_mut(7)
        .unwrap()
        .put_shared(t, b"schema", Some(b"v2".to_vec()), None)
        .unwrap();
    sim.poke(7, &mut obs);
    sim.run_until(t + Duration::from_secs(15), &mut obs);
    let agreed_events: Vec<bool> = obs.0.iter().map(|e| e.1).collect();
    assert_eq!(
        agreed_events,
        vec![true, false, true],
        "agreed, lost, agreed again"
    );
    let t = sim.now();
    assert!(sim.node(0).unwrap().agreement(t, &schema).agreed);
}

/// A bandwidth cap is respected (within the answers a node owes to exchanges others open)
/// and paid for in convergence time, never in lost writes.
#[test]
fn a_bandwidth_cap_trades_time_for_bytes() {
    let free = run(&StateParams {
        nodes: 300,
        writes: 30,
        ..params(300)
    })
    .unwrap();
    let capped = run(&StateParams {
        nodes: 300,
        writes: 30,
        bandwidth: Some(300),
        rounds: 200,
        ..params(300)
    })
    .unwrap();
    assert_eq!(capped.lost_writes, 0, "{capped:?}");
    assert!(
        capped.bytes_per_node_per_round <= 300.0 * 1.15,
        "{capped:?}"
    );
    assert!(free.bytes_per_node_per_round > 1000.0, "{free:?}");
    let (f, c) = (
        free.rounds_to_converge.unwrap(),
        capped.rounds_to_converge.unwrap(),
    );
    assert!(c > 2 * f, "{f} rounds free, {c} capped");
}
