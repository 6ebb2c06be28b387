//! A configuration watcher: a prefix of the shared keyspace is the configuration; a
//! service watches it and reloads on every change; the operator's tool writes and waits
//! until every member holds the new configuration (convergence detection).
//!
//! `cargo run --example config_watcher`: an operator and two services; two changes, each
//! seen by the watchers and awaited by the operator.

use grapevine::{Node, Target};
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

#[tokio::main]
async fn main() -> Result<(), grapevine::Error> {
    let operator = member("operator", vec![]).await?;
    let seed = vec![operator.addr().to_string()];
    let services = [
        member("svc-a", seed.clone()).await?,
        member("svc-b", seed).await?,
    ];
    // Membership first: agreement is among the live members this node knows.
    let t0 = Instant::now();
    while operator.members().await?.len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the services did not join"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every member publishes what it holds of the keyspace, so convergence can be told.
    operator.track(Target::Keyspace).await?;
    let mut watchers = Vec::new();
    for s in &services {
        s.track(Target::Keyspace).await?;
        let mut watch = s.watch(b"config/");
        let name = s.name().as_str().to_string();
        // A watch returns each key's latest value: changes that come faster than the watcher
        // reads them coalesce, as Consul's blocking queries do. It ends on the deletion.
        watchers.push(tokio::spawn(async move {
            let mut config = std::collections::BTreeMap::new();
            loop {
                let Ok(changes) = watch.next().await else {
                    break;
                };
                for c in changes {
                    match &c.value {
                        Some(v) => config.insert(c.key.clone(), v.clone()),
                        None => config.remove(&c.key),
                    };
                    println!(
                        "  {name} reloads: {} = {}",
                        String::from_utf8_lossy(&c.key),
                        c.value
                            .as_ref()
                            .map_or("(deleted)".into(), |v| String::from_utf8_lossy(v)
                                .into_owned())
                    );
                    if c.key == b"config/log-level" && c.value.is_none() {
                        return config;
                    }
                }
            }
            config
        }));
    }
    for (i, (key, value)) in [("config/log-level", "debug"), ("config/pool-size", "32")]
        .iter()
        .enumerate()
    {
        println!("change {}: {key} = {value}", i + 1);
        operator
            .put(key.as_bytes(), Some(value.as_bytes().to_vec()))
            .await?;
        let t0 = Instant::now();
        let a = operator
            .await_agreement(Target::Keyspace, Duration::from_secs(20))
            .await?;
        println!(
            "  every live member holds it ({:?}, agreed: {})",
            t0.elapsed(),
            a.agreed
        );
    }
    println!("change 3: config/log-level deleted");
    operator.put(b"config/log-level", None).await?;
    operator
        .await_agreement(Target::Keyspace, Duration::from_secs(20))
        .await?;
    for w in watchers {
        let config = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let want: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            [(b"config/pool-size".to_vec(), b"32".to_vec())].into();
        assert_eq!(config, want, "a watcher ended with another configuration");
    }
    println!("both services reloaded into the final configuration");
    for n in services.iter().chain([&operator]) {
        n.leave().await?;
    }
    Ok(())
}
