//! Real sockets on loopback: three members join, share keys, hear an event, and one leaves.

mod common;

use common::{lists, start, until};
use grapevine::{Event, Node, State};
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_join_share_keys_and_one_leaves() {
    let a = start("a", vec![]).await;
    let seed = vec![a.addr().to_string()];
    let b = start("b", seed.clone()).await;
    let c = start("c", seed).await;
    let nodes = [a.clone(), b.clone(), c.clone()];

    let all_alive = |n: &Node| {
        let n = n.clone();
        async move {
            let m = n.members().await.unwrap();
            m.len() == 3 && m.iter().all(|m| m.state == State::Alive)
        }
    };
    let join = until(Duration::from_secs(10), || async {
        for n in &nodes {
            if !all_alive(n).await {
                return false;
            }
        }
        true
    })
    .await;
    println!("joined in {join:?}");

    // Per-node state and a shared key reach the others.
    b.set_state("role", b"cache".to_vec()).await.unwrap();
    c.put(b"config/x", Some(b"1".to_vec())).await.unwrap();
    let spread = until(Duration::from_secs(10), || async {
        a.state(b.name(), "role").await.unwrap().as_deref() == Some(&b"cache"[..])
            && a.get(b"config/x").await.unwrap().as_deref() == Some(&b"1"[..])
            && b.get(b"config/x").await.unwrap().as_deref() == Some(&b"1"[..])
    })
    .await;
    println!("keys spread in {spread:?}");

    // A user event reaches the others.
    let mut events = b.events();
    a.broadcast("deploy", b"v2".to_vec()).await.unwrap();
    let got = timeout(Duration::from_secs(5), async {
        while let Some(e) = events.next().await {
            if let Event::User { name, payload, .. } = e {
                return (name, payload);
            }
        }
        panic!("events ended");
    })
    .await
    .expect("event within 5 s");
    assert_eq!(got, ("deploy".to_string(), b"v2".to_vec()));

    // A graceful leave is recorded as left, not failed.
    c.leave().await.unwrap();
    let left = until(Duration::from_secs(10), async || {
        lists(&a, "c", State::Left).await
    })
    .await;
    println!("leave seen in {left:?}");
    assert!(c.members().await.is_err(), "a node that left has stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_writes_and_deletes_from_another_member() {
    let a = start("wa", vec![]).await;
    let b = start("wb", vec![a.addr().to_string()]).await;
    let mut watch = b.watch(b"app/");
    a.put(b"other/key", Some(b"x".to_vec())).await.unwrap();
    a.put(b"app/colour", Some(b"blue".to_vec())).await.unwrap();
    let changes = timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .unwrap();
    assert_eq!(changes.len(), 1, "only keys under the prefix: {changes:?}");
    assert_eq!(changes[0].key, b"app/colour");
    assert_eq!(changes[0].value.as_deref(), Some(&b"blue"[..]));
    a.put(b"app/colour", None).await.unwrap();
    let changes = timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the delete within 10 s")
        .unwrap();
    assert_eq!(changes[0].key, b"app/colour");
    assert_eq!(changes[0].value, None, "a delete");
}

#[tokio::test]
async fn an_unknown_profile_is_refused_by_name() {
    let e = Node::builder()
        .name("p")
        .bind("127.0.0.1:0".parse().unwrap())
        .profile("moon")
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "unknown profile \"moon\": lan, wan or local");
}
