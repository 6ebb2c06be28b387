//! Scuttlebutt on per-node state: whatever the interleaving of the owner's writes, deletes,
//! tombstone collection and partial syncs between holders, every holder ends with the
//! owner's live keys, and no deleted key comes back.

use grapevine_core::state::endpoint::NodeState;
use grapevine_core::Name;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Set(u8, u8),
    Delete(u8),
    Beat,
    /// Advance time and collect tombstones everywhere older than the grace period.
    Collect,
    /// Sync from holder a to holder b (0 = owner), at most n entries.
    Sync(u8, u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
        (0u8..5).prop_map(Op::Delete),
        Just(Op::Beat),
        Just(Op::Collect),
        (0u8..3, 0u8..3, 1u8..4).prop_map(|(a, b, n)| Op::Sync(a, b, n)),
    ]
}

fn sync(h: &mut [NodeState; 3], a: usize, b: usize, n: usize) {
    if a == b {
        return;
    }
    let node = Name::new("owner").unwrap();
    if let Some(d) = h[a].delta_for(&node, h[b].held(), n) {
        h[b].apply(&d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn holders_converge_on_the_owners_live_keys(ops in proptest::collection::vec(op(), 0..60)) {
        // h[0] is the owner's own state; h[1] and h[2] are copies elsewhere.
        let mut h: [NodeState; 3] = Default::default();
        let mut now = 0u64;
        const GRACE: u64 = 10;
        for op in ops {
            now += 1;
            match op {
                Op::Set(k, v) => { h[0].set(&format!("k{k}"), vec![v], None, now); }
                Op::Delete(k) => { h[0].delete(&format!("k{k}"), now); }
                Op::Beat => h[0].beat(),
                Op::Collect => {
                    now += GRACE;
                    for s in h.iter_mut() {
                        s.collect(now - GRACE);
                    }
                }
                Op::Sync(a, b, n) => sync(&mut h, usize::from(a), usize::from(b), usize::from(n)),
            }
        }
        // Then the network heals: holders sync until nothing changes.
        for _ in 0..100 {
            sync(&mut h, 0, 1, 2);
            sync(&mut h, 1, 2, 2);
        }
        for copy in &h[1..] {
            for k in 0..5 {
                let key = format!("k{k}");
                prop_assert_eq!(copy.get(&key, now), h[0].get(&key, now), "key {}", key);
            }
            prop_assert_eq!(copy.heartbeat, h[0].heartbeat);
            prop_assert_eq!(copy.max_version, h[0].max_version);
        }
    }
}
