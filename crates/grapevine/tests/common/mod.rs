//! Helpers shared by the loopback tests.
#![allow(dead_code)]

use grapevine::{Node, State};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Polls `check` until it holds, failing the test after `limit`; returns how long it took.
pub async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "not within {limit:?}");
        sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

/// Whether `node` lists the member `name` in `state`.
pub async fn lists(node: &Node, name: &str, state: State) -> bool {
    node.members().await.is_ok_and(|m| {
        m.iter()
            .any(|m| m.name.as_str() == name && m.state == state)
    })
}

/// A node named `name` on 127.0.0.1 (a free port), `local` profile, joining through `seeds`.
pub async fn start(name: &str, seeds: Vec<String>) -> Node {
    Node::builder()
        .name(name)
        .bind("127.0.0.1:0".parse().unwrap())
        .seeds(seeds)
        .profile("local")
        .start()
        .await
        .expect("starts")
}
