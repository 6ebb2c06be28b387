//! Push-sum aggregation on the real protocol: convergence in O(log N + log 1/ε) rounds, and
//! recovery after a tenth of the cluster leaves.

use grapevine_sim::scenario::aggregate::{run, AggregateParams};

#[test]
fn every_node_is_within_a_thousandth_in_logarithmic_rounds() {
    for (nodes, rounds) in [(1000, 45), (10_000, 45)] {
        let r = run(&AggregateParams {
            nodes,
            rounds,
            no_wall_clock: true,
            ..AggregateParams::default()
        })
        .expect("run");
        let at = r.rounds_to_epsilon.expect("converged within the run");
        // Kempe et al.: O(log N + log 1/ε) rounds; the constant measured is under 2.
        assert!(
            f64::from(at) < 2.0 * r.log2_n_plus_log2_inv_eps,
            "{nodes} nodes: {at} rounds against log2 N + log2 1/ε = {}",
            r.log2_n_plus_log2_inv_eps
        );
        // And the error keeps falling: mass is conserved.
        let last = r.errors.last().expect("rounds");
        assert!(
            last.average < 1e-4 && last.sum < 1e-3 && last.count < 1e-3,
            "{last:?}"
        );
        // Half an epoch is enough: a reported estimate is a converged one.
        assert!(
            at <= r.epoch_rounds / 2,
            "{at} rounds, half an epoch is {}",
            r.epoch_rounds / 2
        );
        println!(
            "{nodes} nodes: 1e-3 after {at} rounds (log2 N + log2 1/ε = {})",
            r.log2_n_plus_log2_inv_eps
        );
    }
}

#[test]
fn the_estimate_recovers_after_a_tenth_of_the_nodes_leave() {
    let r = run(&AggregateParams {
        nodes: 1000,
        rounds: 200,
        leave_at: Some(100),
        no_wall_clock: true,
        ..AggregateParams::default()
    })
    .expect("run");
    assert_eq!(r.left, 100);
    // Just after the leave, the reported estimate still counts the departed...
    let after = &r.errors[100];
    assert!(after.reported > 0.05, "{after:?}");
    // ...and once the tainted epoch is over, only the remaining members.
    let rec = r.rounds_to_recover.expect("recovered");
    assert!(rec <= r.epoch_rounds, "recovered after {rec} rounds");
    let last = r.errors.last().expect("rounds");
    assert!(last.reported < 1e-3, "{last:?}");
    println!("recovered {rec} rounds after the leave");
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let p = AggregateParams {
        nodes: 200,
        rounds: 30,
        loss: 0.01,
        no_wall_clock: true,
        ..AggregateParams::default()
    };
    let a = serde_json::to_string(&run(&p).expect("run")).expect("json");
    let b = serde_json::to_string(&run(&p).expect("run")).expect("json");
    assert_eq!(a, b);
}
