//! A service discovery client: instances announce themselves in their own gossiped state
//! (`svc/web` = `host:port`), and a client lists the instances of a service on live members
//! only, so a crashed instance drops out once the cluster detects the crash.
//!
//! `cargo run --example discovery_client`: three `web` instances and a client; one instance
//! crashes, and the client's list shrinks.

use grapevine::{Event, Node, State};
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

/// The addresses of `service` on live members, as `node` knows them.
async fn instances(node: &Node, service: &str) -> Result<Vec<String>, grapevine::Error> {
    let key = format!("svc/{service}");
    let live: Vec<String> = node
        .members()
        .await?
        .into_iter()
        .filter(|m| m.state.is_live())
        .map(|m| m.name.as_str().to_string())
        .collect();
    let mut out = Vec::new();
    for s in node.node_states(None).await? {
        if !live.contains(&s.name) {
            continue;
        }
        for (k, v, _) in &s.keys {
            if *k == key {
                out.push(format!("{} at {}", s.name, String::from_utf8_lossy(v)));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), grapevine::Error> {
    let client = member("client", vec![]).await?;
    let seed = vec![client.addr().to_string()];
    let mut web = Vec::new();
    for i in 0..3 {
        let n = member(&format!("web-{i}"), seed.clone()).await?;
        n.set_state("svc/web", format!("10.0.0.{}:8080", 10 + i).into_bytes())
            .await?;
        web.push(n);
    }
    let mut events = client.events();
    let t0 = Instant::now();
    while instances(&client, "web").await?.len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "instances not found"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("web instances after {:?}:", t0.elapsed());
    for i in instances(&client, "web").await? {
        println!("  {i}");
    }

    // web-1 crashes (stops without leaving).
    web[1].stop().await?;
    let t0 = Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(e) = events.next().await {
            if let Event::Failed { member, .. } = e {
                if member.name.as_str() == "web-1" {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(failed, "the crash was not detected");
    println!(
        "web-1 crashed; detected after {:?}; web instances now:",
        t0.elapsed()
    );
    let now = instances(&client, "web").await?;
    for i in &now {
        println!("  {i}");
    }
    assert_eq!(now.len(), 2);
    let states: Vec<State> = client.members().await?.iter().map(|m| m.state).collect();
    println!("members: {states:?}");
    for n in [&web[0], &web[2], &client] {
        n.leave().await?;
    }
    Ok(())
}
