//! Metrics aggregation with no coordinator: every member contributes its load, and every
//! member reads the cluster's average, sum, count, minimum and maximum locally (push-sum
//! gossip). A member that leaves takes its contribution with it.
//!
//! `cargo run --example aggregator`: six members; each prints its estimate; one leaves and
//! the others' estimates follow.

use grapevine::Node;
use std::time::{Duration, Instant};

async fn member(name: &str, seeds: Vec<String>) -> Result<Node, grapevine::Error> {
    Node::builder()
        .name(name)
        .bind("127.0.0.1:0".parse().expect("an address"))
        .seeds(seeds)
        .profile("local")
        .start()
        .await
}

/// Waits until every node's estimate of the average is within 10⁻³ of `want`.
async fn converge(nodes: &[Node], want: f64, count: f64) -> Result<Duration, grapevine::Error> {
    let t0 = Instant::now();
    loop {
        let mut ok = true;
        for n in nodes {
            let e = n.aggregate("load").await?;
            ok &= e.is_some_and(|e| {
                e.average.is_some_and(|a| ((a - want) / want).abs() < 1e-3)
                    && e.count.is_some_and(|c| (c - count).abs() < 1e-3 * count)
            });
        }
        if ok {
            return Ok(t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no convergence on {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print(nodes: &[Node]) -> Result<(), grapevine::Error> {
    for n in nodes {
        if let Some(e) = n.aggregate("load").await? {
            println!(
                "  {:<6} average {:>8.4}  sum {:>8.3}  count {:>6.3}  min {:>5.1}  max {:>5.1}",
                n.name().as_str(),
                e.average.unwrap_or(f64::NAN),
                e.sum.unwrap_or(f64::NAN),
                e.count.unwrap_or(f64::NAN),
                e.min.unwrap_or(f64::NAN),
                e.max.unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), grapevine::Error> {
    let first = member("n0", vec![]).await?;
    let seed = vec![first.addr().to_string()];
    let mut nodes = vec![first];
    for i in 1..6 {
        nodes.push(member(&format!("n{i}"), seed.clone()).await?);
    }
    let loads = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
    for (n, l) in nodes.iter().zip(loads) {
        n.contribute("load", l).await?;
    }
    let avg = loads.iter().sum::<f64>() / 6.0;
    let took = converge(&nodes, avg, 6.0).await?;
    println!("every member's estimate within 1e-3 of {avg:.4} after {took:?}:");
    print(&nodes).await?;

    // n5 (load 16) leaves: its contribution goes with it.
    let gone = nodes.pop().expect("six members");
    gone.leave().await?;
    let avg = loads[..5].iter().sum::<f64>() / 5.0;
    let took = converge(&nodes, avg, 5.0).await?;
    println!("n5 left; every estimate within 1e-3 of {avg:.4} after {took:?}:");
    print(&nodes).await?;
    for n in nodes {
        n.leave().await?;
    }
    Ok(())
}
