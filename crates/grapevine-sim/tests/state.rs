//! The real protocol spreading state: O(log N) rounds, flat per-node cost, nothing lost
//! across a partition.

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
    // Steady state: a root comparison per partner and store, whatever N.
    let ratio = large.steady_bytes_per_node_per_round / small.steady_bytes_per_node_per_round;
    assert!((0.85..1.15).contains(&ratio), "{small:?} {large:?}");
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
