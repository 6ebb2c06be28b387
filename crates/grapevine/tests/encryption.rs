//! Encryption on real sockets: outsiders are refused and counted; a key rotation across a
//! running cluster costs no member its standing.

use grapevine::{Config, Event, Keyring, Node, State};
use std::time::Duration;
use tokio::time::{sleep, Instant};

async fn start(name: &str, seeds: Vec<String>, keyring: Keyring, label: &[u8]) -> Node {
    let mut config = Config::local();
    config.label = label.to_vec();
    Node::builder()
        .name(name)
        .bind("127.0.0.1:0".parse().unwrap())
        .seeds(seeds)
        .config(config)
        .keyring(keyring)
        .start()
        .await
        .expect("starts")
}

async fn alive(n: &Node) -> usize {
    n.members()
        .await
        .unwrap()
        .iter()
        .filter(|m| m.state == State::Alive)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_no_key_and_wrong_label_cannot_join() {
    let key = [11u8; 32];
    let a = start("a", vec![], Keyring::new(key), b"prod").await;
    let seed = vec![a.addr().to_string()];
    let b = start("b", seed.clone(), Keyring::new(key), b"prod").await;
    let wrong = start("wrong", seed.clone(), Keyring::new([12u8; 32]), b"prod").await;
    let plain = start("plain", seed.clone(), Keyring::default(), b"prod").await;
    let other = start("other", seed, Keyring::new(key), b"staging").await;
    let t0 = Instant::now();
    while alive(&a).await < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        sleep(Duration::from_millis(20)).await;
    }
    // Give the outsiders every chance: several join retries.
    sleep(Duration::from_secs(3)).await;
    assert_eq!(alive(&a).await, 2, "only a and b");
    assert_eq!(alive(&b).await, 2);
    for n in [&wrong, &plain, &other] {
        assert_eq!(alive(n).await, 1, "{} stays alone", n.name().as_str());
    }
    let refused = a.refused().await.unwrap();
    for reason in ["bad_key", "unencrypted", "wrong_label"] {
        assert!(
            refused.get(reason).copied().unwrap_or(0) > 0,
            "{reason}: {refused:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_on_a_running_cluster_marks_no_one_failed() {
    let (old, new) = ([21u8; 32], [22u8; 32]);
    let first = start("n0", vec![], Keyring::new(old), b"").await;
    let seed = vec![first.addr().to_string()];
    let mut nodes = vec![first];
    for i in 1..5 {
        nodes.push(start(&format!("n{i}"), seed.clone(), Keyring::new(old), b"").await);
    }
    let t0 = Instant::now();
    for n in &nodes {
        while alive(n).await < 5 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            sleep(Duration::from_millis(20)).await;
        }
    }
    let mut watchers: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    for n in &nodes {
        n.keyring_install(new).await.unwrap();
    }
    for n in &nodes {
        n.keyring_use(new).await.unwrap();
        sleep(Duration::from_millis(300)).await;
    }
    for n in &nodes {
        assert_eq!(n.keyring_remove(old).await.unwrap(), vec![new]);
    }
    // The cluster keeps working on the new key alone.
    nodes[2]
        .put(b"after", Some(b"rotation".to_vec()))
        .await
        .unwrap();
    let t1 = Instant::now();
    for n in &nodes {
        while n.get(b"after").await.unwrap().is_none() {
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "key spread after rotation"
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
    sleep(Duration::from_secs(2)).await;
    for (i, w) in watchers.iter_mut().enumerate() {
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), w.next()).await {
            assert!(
                !matches!(e, Event::Suspected { .. } | Event::Failed { .. }),
                "node {i} saw {e:?} during the rotation"
            );
        }
    }
    for n in &nodes {
        assert_eq!(alive(n).await, 5);
    }
}
