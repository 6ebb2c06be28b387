//! A member killed and restarted with its data directory comes back alive everywhere, with
//! a higher incarnation and its keys, and rejoins the members it knew without seeds.

mod common;

use common::{lists, until};
use grapevine::{Config, Node, State};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::time::sleep;

async fn start(name: &str, bind: SocketAddr, seeds: Vec<String>, dir: &Path) -> Node {
    Node::builder()
        .name(name)
        .bind(bind)
        .seeds(seeds)
        .config(Config::local())
        .data_dir(dir)
        .start()
        .await
        .expect("starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_comes_back_with_its_keys() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = start("a", any, vec![], dirs[0].path()).await;
    let seed = vec![a.addr().to_string()];
    let b = start("b", any, seed.clone(), dirs[1].path()).await;
    let c = start("c", any, seed, dirs[2].path()).await;
    until(Duration::from_secs(10), async || {
        a.members().await.unwrap().len() == 3 && c.members().await.unwrap().len() == 3
    })
    .await;
    b.set_state("role", b"cache".to_vec()).await.unwrap();
    let b_addr = b.addr();
    let inc_before = a
        .members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name.as_str() == "b")
        .unwrap()
        .incarnation;
    // Let the snapshot be written (every 2 s), then kill b without a leave.
    sleep(Duration::from_millis(2500)).await;
    b.stop().await.unwrap();
    let failed = until(Duration::from_secs(20), async || {
        lists(&a, "b", State::Dead).await
    })
    .await;
    println!("b marked failed after {failed:?}");
    // Restart b on its address, with its data directory and no seeds.
    let b = start("b", b_addr, vec![], dirs[1].path()).await;
    let back = until(Duration::from_secs(20), async || {
        let m = a.members().await.unwrap();
        m.iter().any(|m| {
            m.name.as_str() == "b" && m.state == State::Alive && m.incarnation > inc_before
        }) && c.state(b.name(), "role").await.unwrap().as_deref() == Some(&b"cache"[..])
    })
    .await;
    println!("b alive again everywhere, keys intact, after {back:?}");
    assert_eq!(
        b.state(b.name(), "role").await.unwrap().as_deref(),
        Some(&b"cache"[..])
    );
    assert_eq!(
        b.members().await.unwrap().len(),
        3,
        "rejoined without seeds"
    );
}
