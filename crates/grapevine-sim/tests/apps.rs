//! The application logic that used to live in the networked driver, now in the core where
//! a seeded simulation reaches it: check-and-set, ownership maps, versions.

use grapevine_core::{Config, Time};
use grapevine_sim::net::NetConfig;
use grapevine_sim::{NoObserver, Sim};
use std::time::Duration;

/// `n` nodes started together through node 0, run until `secs` seconds.
fn cluster(n: u32, seed: u64) -> Sim {
    let mut sim = Sim::new(seed, NetConfig::lan());
    for _ in 0..n {
        sim.add_node();
    }
    for i in 0..n {
        let seeds: &[u32] = if i == 0 { &[] } else { &[0] };
        sim.start(i, Config::lan(), seeds, &mut NoObserver);
    }
    run_for(&mut sim, 10);
    sim
}

fn run_for(sim: &mut Sim, secs: u64) {
    let until = sim.now() + Duration::from_secs(secs);
    sim.run_until(until, &mut NoObserver);
}

/// Runs `f` on node `i`'s core at the simulation's time and collects its outputs.
fn on<T>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut grapevine_core::Node, Time) -> T) -> T {
    let now = sim.now();
    let out = f(sim.node_mut(i).expect("node is up"), now);
    sim.poke(i, &mut NoObserver);
    out
}

#[test]
fn check_and_set_writes_only_at_the_index_held_and_the_write_reaches_everyone() {
    let mut sim = cluster(5, 7);
    assert_eq!(
        on(&mut sim, 1, |c, t| c.put_cas(
            t,
            b"k",
            Some(b"a".to_vec()),
            0
        )),
        Ok(true)
    );
    // The key holds a value now: "only if absent" fails, as does a stale index.
    assert_eq!(
        on(&mut sim, 1, |c, t| c.put_cas(
            t,
            b"k",
            Some(b"b".to_vec()),
            0
        )),
        Ok(false)
    );
    let index = on(&mut sim, 1, |c, t| {
        c.kv_entries(t, b"k", false)[0].modify_index
    });
    assert_eq!(
        on(&mut sim, 1, |c, t| c.put_cas(
            t,
            b"k",
            Some(b"b".to_vec()),
            index + 1
        )),
        Ok(false)
    );
    assert_eq!(
        on(&mut sim, 1, |c, t| c.put_cas(
            t,
            b"k",
            Some(b"b".to_vec()),
            index
        )),
        Ok(true)
    );
    run_for(&mut sim, 10);
    for i in 0..5 {
        let e = on(&mut sim, i, |c, t| c.kv_entries(t, b"k", false));
        assert_eq!(e.len(), 1, "node {i}");
        assert_eq!(e[0].value, b"b", "node {i}");
        assert_eq!(e[0].writer, sim.name(1).as_str(), "node {i}");
    }
    // Every node saw the key change: its change log says so, in order.
    let changes = on(&mut sim, 3, |c, t| c.kv_changes(t, b"", 0));
    assert_eq!(
        changes.last().and_then(|c| c.value.clone()),
        Some(b"b".to_vec())
    );
}

#[test]
fn two_claims_of_one_slot_resolve_alike_everywhere_and_the_loser_knows() {
    let mut sim = cluster(4, 11);
    assert_eq!(
        on(&mut sim, 1, |c, t| c.claim(t, "shards", 0..4, Some(5))),
        Ok(5)
    );
    assert_eq!(
        on(&mut sim, 2, |c, t| c.claim(t, "shards", 2..6, Some(6))),
        Ok(6)
    );
    run_for(&mut sim, 10);
    let maps: Vec<_> = (0..4)
        .map(|i| on(&mut sim, i, |c, t| c.slot_map(t, "shards").owners))
        .collect();
    assert!(maps.windows(2).all(|w| w[0] == w[1]), "{maps:?}");
    let owners = &maps[0];
    let (one, two) = (sim.name(1).as_str(), sim.name(2).as_str());
    assert_eq!(owners.len(), 6);
    assert!((0..2).all(|s| owners[&s].owner == one), "{owners:?}");
    assert!((2..6).all(|s| owners[&s].owner == two), "{owners:?}");
    let lost = on(&mut sim, 1, |c, t| c.slot_map(t, "shards").lost);
    assert_eq!(lost.iter().map(|l| l.slot).collect::<Vec<_>>(), vec![2, 3]);
    assert!(lost.iter().all(|l| l.epoch == 5 && l.winner.epoch == 6));
    // The next claim without an epoch goes above every epoch in the map.
    assert_eq!(
        on(&mut sim, 3, |c, t| c.claim(t, "shards", 0..1, None)),
        Ok(7)
    );
    // Bad names and ranges are refused before anything is written.
    assert!(on(&mut sim, 3, |c, t| c.claim(t, "a/b", 0..1, None)).is_err());
    assert!(on(&mut sim, 3, |c, t| c.claim(t, "m", 5..5, None)).is_err());
    assert!(on(&mut sim, 3, |c, t| c.claim(t, "m", 0..16_385, None)).is_err());
}

#[test]
fn versions_group_the_live_members_by_what_they_publish() {
    let mut sim = cluster(3, 13);
    for i in 0..3 {
        let v = if i == 2 {
            b"v2".to_vec()
        } else {
            b"v1".to_vec()
        };
        on(&mut sim, i, |c, t| c.set_state(t, "schema", v, None)).unwrap();
    }
    run_for(&mut sim, 10);
    let v = on(&mut sim, 0, |c, t| c.versions(t, "schema"));
    assert!(!v.agreed);
    assert_eq!(v.versions[&b"v1".to_vec()].len(), 2);
    assert_eq!(
        v.versions[&b"v2".to_vec()],
        vec![sim.name(2).as_str().to_string()]
    );
    on(&mut sim, 2, |c, t| {
        c.set_state(t, "schema", b"v1".to_vec(), None)
    })
    .unwrap();
    run_for(&mut sim, 10);
    assert!(on(&mut sim, 1, |c, t| c.versions(t, "schema")).agreed);
}
