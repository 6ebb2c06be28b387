//! Merkle anti-entropy costs what differs, not what is stored.

use grapevine_sim::scenario::merkle::{run, MerkleParams};

#[test]
fn a_million_keys_with_ten_differing_reconcile_under_one_percent_of_a_full_exchange() {
    let r = run(&MerkleParams {
        keys: 1_000_000,
        diff: 10,
        no_wall_clock: true,
        ..MerkleParams::default()
    })
    .unwrap();
    assert!(r.converged, "{r:?}");
    assert!(r.fraction_of_full < 0.01, "{r:?}");
    println!(
        "1,000,000 keys, 10 differing: {} bytes in {} round trips, {:.4} % of a full exchange ({} bytes)",
        r.bytes,
        r.round_trips,
        100.0 * r.fraction_of_full,
        r.full_exchange_bytes
    );
}

#[test]
fn bytes_grow_with_the_divergence_not_the_keyspace() {
    let cost = |keys, diff| {
        let r = run(&MerkleParams {
            keys,
            diff,
            no_wall_clock: true,
            ..MerkleParams::default()
        })
        .unwrap();
        assert!(r.converged);
        r.bytes
    };
    // Ten times the keys, same divergence: the bytes grow by about one tree level, not 10×.
    let (small, large) = (cost(20_000, 20), cost(200_000, 20));
    assert!(large < small * 2, "{small} → {large}");
    // Ten times the divergence: roughly ten times the bytes.
    let more = cost(200_000, 200);
    assert!(more > large * 5 && more < large * 15, "{large} → {more}");
}
