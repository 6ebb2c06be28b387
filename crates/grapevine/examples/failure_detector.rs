//! Failure detection as a service: a monitor logs every membership event with its reason
//! and a timestamp, as an alerting hook would receive them.
//!
//! `cargo run --example failure_detector`: four members join; one leaves gracefully, one
//! crashes; the monitor logs joined, (suspected,) failed and left, then exits.

use grapevine::{Event, Node};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn member(name: &str, seeds: Vec<String>) -> Result<Node, grapevine::Error> {
    Node::builder()
        .name(name)
        .bind("127.0.0.1:0".parse().expect("an address"))
        .seeds(seeds)
        .profile("local")
        .start()
        .await
}

/// The event's reason and member, as a log line would carry them.
fn describe(e: &Event) -> Option<(&'static str, String)> {
    Some(match e {
        Event::Joined { member } => ("joined", member.name.as_str().into()),
        Event::Suspected {
            member, accuser, ..
        } => (
            "suspected",
            format!("{} (by {})", member.name.as_str(), accuser.as_str()),
        ),
        Event::Alive { member } => ("refuted", member.name.as_str().into()),
        Event::Failed { member, .. } => ("failed", member.name.as_str().into()),
        Event::Left { member } => ("left", member.name.as_str().into()),
        Event::Reaped { name, .. } => ("reaped", name.as_str().into()),
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> Result<(), grapevine::Error> {
    let monitor = member("monitor", vec![]).await?;
    let mut events = monitor.events();
    let seed = vec![monitor.addr().to_string()];
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(member(&format!("node-{i}"), seed.clone()).await?);
    }
    let t0 = Instant::now();
    let mut joined = 0;
    let (mut left, mut failed) = (false, false);
    let deadline = Duration::from_secs(20);
    while !(left && failed) {
        let Ok(Some(e)) =
            tokio::time::timeout(deadline.saturating_sub(t0.elapsed()), events.next()).await
        else {
            panic!("the expected events did not all come within {deadline:?}");
        };
        let Some((reason, who)) = describe(&e) else {
            continue;
        };
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        println!(
            "{unix:.3} +{:>7.3}s {reason:<9} {who}",
            t0.elapsed().as_secs_f64()
        );
        match reason {
            "joined" => {
                joined += 1;
                if joined == 3 {
                    // Everyone is in: node-0 leaves, node-1 crashes.
                    nodes[0].leave().await?;
                    nodes[1].stop().await?;
                }
            }
            "left" => left = true,
            "failed" => failed = true,
            _ => {}
        }
    }
    println!("monitor saw 3 joins, a graceful leave and a crash");
    nodes[2].leave().await?;
    monitor.leave().await?;
    Ok(())
}
