//! The applications on the library, over real sockets on loopback: concurrent
//! check-and-set, ownership claims across a partition, schema agreement, keyspace
//! convergence detection and aggregation.

mod common;

use common::{start, until};
use grapevine::{Node, State, Target};
use std::time::Duration;

/// `n` members named `prefix0..`, joined through the first, all alive everywhere.
async fn cluster(prefix: &str, n: usize) -> Vec<Node> {
    let first = start(&format!("{prefix}0"), vec![]).await;
    let seed = vec![first.addr().to_string()];
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start(&format!("{prefix}{i}"), seed.clone()).await);
    }
    until(Duration::from_secs(15), || async {
        for x in &nodes {
            let m = x.members().await.unwrap();
            if m.len() != n || m.iter().any(|m| m.state != State::Alive) {
                return false;
            }
        }
        true
    })
    .await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_check_and_set_ends_with_one_value_and_each_writer_knows_who_won() {
    let nodes = cluster("cas", 4).await;
    let (a, b) = (&nodes[1], &nodes[2]);
    // Both see no value and both write with cas=0 at the same moment.
    let (ra, rb) = tokio::join!(
        a.put_cas(b"leader", Some(b"from-a".to_vec()), 0),
        b.put_cas(b"leader", Some(b"from-b".to_vec()), 0)
    );
    assert!(
        ra.unwrap() && rb.unwrap(),
        "both succeed against their own replica"
    );
    // A stale index is refused locally.
    assert!(!a
        .put_cas(b"leader", Some(b"again".to_vec()), 12345)
        .await
        .unwrap());
    until(Duration::from_secs(10), || async {
        let mut values = Vec::new();
        for x in &nodes {
            values.push(x.get(b"leader").await.unwrap());
        }
        values.iter().all(|v| v.is_some() && *v == values[0])
    })
    .await;
    let winner = nodes[0].entries(b"leader", false).await.unwrap()[0].clone();
    for x in &nodes {
        let e = x.entries(b"leader", false).await.unwrap();
        assert_eq!(e.len(), 1, "one value, no siblings");
        assert_eq!((&e[0].value, &e[0].writer), (&winner.value, &winner.writer));
        assert_eq!(e[0].written_at, winner.written_at);
    }
    // Each writer finds out: the winner's name is its own or the other's.
    let a_won = a.entries(b"leader", false).await.unwrap()[0].writer == a.name().as_str();
    let b_won = b.entries(b"leader", false).await.unwrap()[0].writer == b.name().as_str();
    assert!(a_won ^ b_won, "exactly one of the two writes won");
    let expected: &[u8] = if a_won { b"from-a" } else { b"from-b" };
    assert_eq!(winner.value, expected);
    println!("winner: {} at {:?}", winner.writer, winner.written_at);
    for x in nodes {
        x.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_every_node_agrees_on_the_higher_epochs_owner() {
    let nodes = cluster("own", 4).await;
    // Cut {0,1} from {2,3}.
    let side = |i: usize| usize::from(i >= 2);
    for (i, x) in nodes.iter().enumerate() {
        let other: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| side(*j) != side(i))
            .map(|(_, y)| y.addr())
            .collect();
        x.block(other).await.unwrap();
    }
    until(Duration::from_secs(20), || async {
        grapevine_lists_failed(&nodes[0], "own2").await
            && grapevine_lists_failed(&nodes[2], "own0").await
    })
    .await;
    // Each side claims slots 0..100 of the map, at different epochs.
    assert_eq!(nodes[0].claim("shards", 0..100, Some(5)).await.unwrap(), 5);
    assert_eq!(nodes[2].claim("shards", 0..100, Some(7)).await.unwrap(), 7);
    // And the same epoch for slot 200: the tie breaks by owner name.
    nodes[1].claim("shards", 200..201, Some(9)).await.unwrap();
    nodes[3].claim("shards", 200..201, Some(9)).await.unwrap();
    until(Duration::from_secs(5), || async {
        nodes[1].slots("shards").await.unwrap().owners.len() == 101
    })
    .await;
    assert_eq!(
        nodes[1].slots("shards").await.unwrap().owners[&0].owner,
        "own0"
    );
    for x in &nodes {
        x.block(Vec::new()).await.unwrap();
    }
    let healed = until(Duration::from_secs(30), || async {
        for x in &nodes {
            let m = x.slots("shards").await.unwrap();
            let ok = m.owners.len() == 101
                && (0..100).all(|s| m.owners[&s].owner == "own2" && m.owners[&s].epoch == 7)
                && m.owners[&200].owner == "own3";
            if !ok {
                return false;
            }
        }
        true
    })
    .await;
    println!("every node agrees on the owners {healed:?} after the heal");
    // The losers learn it.
    let lost = nodes[0].slots("shards").await.unwrap().lost;
    assert_eq!(lost.len(), 100);
    assert!(lost
        .iter()
        .all(|l| l.epoch == 5 && l.winner.owner == "own2" && l.winner.epoch == 7));
    let lost = nodes[1].slots("shards").await.unwrap().lost;
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].slot, lost[0].winner.owner.as_str()), (200, "own3"));
    assert!(nodes[2].slots("shards").await.unwrap().lost.is_empty());
    // Without an epoch, a claim goes one above the map's highest, and wins.
    assert_eq!(nodes[0].claim("shards", 0..1, None).await.unwrap(), 10);
    for x in nodes {
        x.stop().await.unwrap();
    }
}

async fn grapevine_lists_failed(node: &Node, name: &str) -> bool {
    common::lists(node, name, State::Dead).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_agreement_and_keyspace_convergence_are_detected() {
    let nodes = cluster("sch", 4).await;
    for x in &nodes {
        x.set_state("schema", b"v1".to_vec()).await.unwrap();
    }
    let v = nodes[0]
        .await_versions("schema", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(v.versions.len(), 1);
    assert_eq!(v.versions[b"v1".as_slice()].len(), 4);
    // One node moves on: no agreement, and who differs is named.
    nodes[3].set_state("schema", b"v2".to_vec()).await.unwrap();
    until(Duration::from_secs(10), || async {
        let v = nodes[0].versions("schema").await.unwrap();
        !v.agreed && v.versions.get(b"v2".as_slice()) == Some(&vec!["sch3".to_string()])
    })
    .await;
    assert!(matches!(
        nodes[0]
            .await_versions("schema", Duration::from_millis(300))
            .await,
        Err(grapevine::Error::Timeout(_))
    ));
    for x in &nodes[..3] {
        x.set_state("schema", b"v2".to_vec()).await.unwrap();
    }
    let took = until(Duration::from_secs(10), || async {
        nodes[1].versions("schema").await.unwrap().agreed
    })
    .await;
    println!("schema agreement {took:?} after the last change");

    // Keyspace convergence: every member tracks the keyspace; a write is awaited.
    for x in &nodes {
        x.track(Target::Keyspace).await.unwrap();
    }
    nodes[0]
        .put(b"config/a", Some(b"1".to_vec()))
        .await
        .unwrap();
    nodes[0]
        .put(b"config/b", Some(b"2".to_vec()))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let a = nodes[0]
        .await_agreement(Target::Keyspace, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(a.agreed);
    println!("keyspace converged {:?} after the writes", t0.elapsed());
    // When it returns, every member holds the writes.
    for x in &nodes {
        assert_eq!(
            x.get(b"config/b").await.unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }
    for x in nodes {
        x.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_the_cluster_average_locally() {
    let nodes = cluster("agg", 5).await;
    let values = [10.0, 20.0, 30.0, 45.5, 0.25];
    for (x, v) in nodes.iter().zip(values) {
        x.contribute("load", v).await.unwrap();
    }
    let avg = values.iter().sum::<f64>() / 5.0;
    let took = until(Duration::from_secs(30), || async {
        for x in &nodes {
            let Some(e) = x.aggregate("load").await.unwrap() else {
                return false;
            };
            let close =
                |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() <= 1e-3 * want);
            if !(close(e.average, avg) && close(e.sum, avg * 5.0) && close(e.count, 5.0)) {
                return false;
            }
            if (e.min, e.max) != (Some(0.25), Some(45.5)) {
                return false;
            }
        }
        true
    })
    .await;
    println!("every node within 1e-3 of the average after {took:?}");
    assert!(nodes[0].contribute("bad", f64::NAN).await.is_err());
    for x in nodes {
        x.stop().await.unwrap();
    }
}
