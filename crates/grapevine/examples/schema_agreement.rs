//! Database membership with schema agreement, as Cassandra does it: every replica
//! publishes the schema version it runs in its own gossiped state; a migration is finished
//! when every live member reports the same version.
//!
//! `cargo run --example schema_agreement`: three replicas on loopback; replica 0 migrates
//! to v2, the others follow one by one, and replica 0 waits for agreement.

use grapevine::{Node, State};
use std::time::Duration;

async fn replica(name: &str, seeds: Vec<String>) -> Result<Node, grapevine::Error> {
    Node::builder()
        .name(name)
        .bind("127.0.0.1:0".parse().expect("an address"))
        .seeds(seeds)
        .profile("local")
        .start()
        .await
}

/// One line per schema version, with the replicas that run it.
async fn report(node: &Node) -> Result<(), grapevine::Error> {
    let v = node.versions("schema").await?;
    for (version, who) in &v.versions {
        println!(
            "  {:<4} {}",
            String::from_utf8_lossy(version),
            who.join(", ")
        );
    }
    if !v.unknown.is_empty() {
        println!("  (no version yet: {})", v.unknown.join(", "));
    }
    println!("  agreed: {}", v.agreed);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), grapevine::Error> {
    let first = replica("db-0", vec![]).await?;
    let seed = vec![first.addr().to_string()];
    let replicas = vec![
        first,
        replica("db-1", seed.clone()).await?,
        replica("db-2", seed).await?,
    ];
    // Membership: wait until every replica sees three live members.
    for _ in 0..200 {
        let mut ok = true;
        for r in &replicas {
            let live = r
                .members()
                .await?
                .iter()
                .filter(|m| m.state == State::Alive)
                .count();
            ok &= live == 3;
        }
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("3 replicas joined");

    for r in &replicas {
        r.set_state("schema", b"v1".to_vec()).await?;
    }
    replicas[0]
        .await_versions("schema", Duration::from_secs(10))
        .await?;
    println!("schema v1 agreed:");
    report(&replicas[0]).await?;

    // A migration: db-0 first, then the others.
    replicas[0].set_state("schema", b"v2".to_vec()).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    println!("db-0 migrated to v2:");
    report(&replicas[0]).await?;
    for r in &replicas[1..] {
        r.set_state("schema", b"v2".to_vec()).await?;
    }
    let t0 = std::time::Instant::now();
    let v = replicas[0]
        .await_versions("schema", Duration::from_secs(10))
        .await?;
    println!(
        "every live replica runs v2 ({} of them), agreed {:?} after the last migration",
        v.versions.values().map(Vec::len).sum::<usize>(),
        t0.elapsed()
    );
    report(&replicas[0]).await?;
    for r in replicas {
        r.leave().await?;
    }
    Ok(())
}
