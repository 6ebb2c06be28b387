//! An idle cluster that holds state, as agents do, costs the same per node whatever its size:
//! a ping and an ack a probe period, no exchange, no frame, no connection.

use grapevine_sim::scenario::idle::{run, IdleParams, IdleReport};

fn idle(nodes: u32, own_state: bool) -> IdleReport {
    run(&IdleParams {
        nodes,
        own_state,
        no_wall_clock: true,
        ..IdleParams::default()
    })
    .unwrap()
}

/// Per node per probe period: the node's own ping and its ack of the ping it received, in
/// two datagrams of at most 120 bytes together with their headers (about 240 bytes a second
/// in `lan`), and nothing on the reliable channel.
fn assert_within_budget(r: &IdleReport) {
    assert!(r.converged_period.is_some(), "{r:?}");
    assert_eq!(r.messages, 2.0, "{r:?}");
    assert_eq!(r.datagrams, 2.0, "{r:?}");
    assert_eq!(r.packets, 2.0, "{r:?}");
    assert_eq!((r.frames, r.connections), (0.0, 0.0), "{r:?}");
    assert_eq!((r.state_rounds, r.syncs), (0.0, 0.0), "{r:?}");
    assert!(r.wire_bytes <= 120.0, "{r:?}");
}

#[test]
fn idle_cost_is_flat_from_100_to_1000_nodes_holding_per_node_state() {
    let small = idle(100, true);
    let large = idle(1000, true);
    for r in [&small, &large] {
        assert_within_budget(r);
    }
    let ratio = large.wire_bytes / small.wire_bytes;
    assert!((0.85..=1.15).contains(&ratio), "{small:?} {large:?}");
    assert_eq!(idle(100, true), small, "same seed, same run");
}

/// 10,000 nodes hold the shared keyspace only: everyone's copy of everyone's per-node state
/// would take about 10 GB here. What an idle node sends does not depend on what it holds
/// (only its roots travel), as the 100- and 1,000-node runs of both kinds show.
#[test]
fn idle_cost_is_flat_from_100_to_10000_nodes_holding_the_keyspace() {
    let small = idle(100, false);
    let mid = idle(1000, false);
    let large = idle(10_000, false);
    for r in [&small, &mid, &large] {
        assert_within_budget(r);
    }
    for r in [&mid, &large] {
        let ratio = r.wire_bytes / small.wire_bytes;
        assert!((0.85..=1.15).contains(&ratio), "{small:?} {r:?}");
    }
    let own = idle(100, true);
    assert!(
        (small.wire_bytes - own.wire_bytes).abs() <= 1.0,
        "{small:?} {own:?}"
    );
}
