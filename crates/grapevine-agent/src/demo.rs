//! `grapevine demo`: a real cluster of members on loopback (each with its own UDP and TCP
//! sockets, in this process), put through the paces with live progress: the join, a key
//! spreading, a member killed and detected, a partition and its healing. Each step prints
//! its measured time; a summary table ends it.

use anyhow::{anyhow, Result};
use grapevine::{Config, Node, State};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One step's outcome.
#[derive(Serialize, Debug)]
pub struct Step {
    /// What was done.
    pub step: String,
    /// How long until it held everywhere, seconds.
    pub seconds: f64,
}

/// Counts, over every member's view, how many satisfy `ok`, until all do or `limit` passes.
async fn wait_all(
    nodes: &[Node],
    bar: &ProgressBar,
    limit: Duration,
    ok: impl Fn(&Node, &[grapevine::Member]) -> bool,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let mut done = 0;
        for n in nodes {
            let m = n.members().await?;
            if ok(n, &m) {
                done += 1;
            }
        }
        bar.set_position(done as u64);
        if done == nodes.len() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(anyhow!("{done} of {} after {limit:?}", nodes.len()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
    let b = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg:<44} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

fn alive(m: &[grapevine::Member], name: &str) -> bool {
    m.iter()
        .any(|x| x.name.as_str() == name && x.state == State::Alive)
}

/// Runs the demo with `n` members; prints progress unless `quiet`.
pub async fn run(n: usize, quiet: bool) -> Result<Vec<Step>> {
    if !(3..=500).contains(&n) {
        return Err(anyhow!("--nodes must be between 3 and 500"));
    }
    let mut steps = Vec::new();
    let mut record = |step: &str, d: Duration, bar: &ProgressBar| {
        bar.finish_with_message(format!("{step}: {:.2} s", d.as_secs_f64()));
        steps.push(Step {
            step: step.to_string(),
            seconds: (d.as_secs_f64() * 1000.0).round() / 1000.0,
        });
    };
    let config = Config::local();
    let start = |name: String, seeds: Vec<String>| {
        let config = config.clone();
        async move {
            Node::builder()
                .name(name)
                .bind("127.0.0.1:0".parse::<SocketAddr>()?)
                .seeds(seeds)
                .config(config)
                .start()
                .await
                .map_err(anyhow::Error::from)
        }
    };
    // 1. Join through one seed.
    let b = bar(n, "members listing all others alive", quiet);
    let first = start("node-0".into(), vec![]).await?;
    let seed = vec![first.addr().to_string()];
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start(format!("node-{i}"), seed.clone()).await?);
    }
    let d = wait_all(&nodes, &b, Duration::from_secs(60), |_, m| {
        m.iter().filter(|x| x.state == State::Alive).count() == n
    })
    .await?;
    record(&format!("join: {n} members through one seed"), d, &b);

    // 2. A key written on one member reaches every member.
    let b = bar(n, "members holding the key", quiet);
    nodes[1]
        .put(b"demo/greeting", Some(b"hello".to_vec()))
        .await?;
    let t0 = Instant::now();
    loop {
        let mut done = 0;
        for x in &nodes {
            if x.get(b"demo/greeting").await?.is_some() {
                done += 1;
            }
        }
        b.set_position(done);
        if done as usize == n {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(anyhow!("the key reached {done} of {n}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    record("key written on one member, held by all", t0.elapsed(), &b);

    // 3. A member killed (no goodbye) and detected.
    let victim = nodes.pop().ok_or_else(|| anyhow!("no members"))?;
    let name = victim.name().as_str().to_string();
    victim.stop().await?;
    let b = bar(
        nodes.len(),
        "survivors listing the killed member failed",
        quiet,
    );
    let d = wait_all(&nodes, &b, Duration::from_secs(60), |_, m| {
        m.iter()
            .any(|x| x.name.as_str() == name && x.state == State::Dead)
    })
    .await?;
    record("member killed, failed everywhere", d, &b);

    // 4. A partition into halves, then its healing.
    let half = nodes.len() / 2;
    let (left, right): (Vec<SocketAddr>, Vec<SocketAddr>) = (
        nodes[..half].iter().map(Node::addr).collect(),
        nodes[half..].iter().map(Node::addr).collect(),
    );
    for (i, x) in nodes.iter().enumerate() {
        x.block(if i < half {
            right.clone()
        } else {
            left.clone()
        })
        .await?;
    }
    let names: Vec<String> = nodes
        .iter()
        .map(|x| x.name().as_str().to_string())
        .collect();
    let b = bar(nodes.len(), "members listing the other side failed", quiet);
    let d = wait_all(&nodes, &b, Duration::from_secs(60), |me, m| {
        let mine = names
            .iter()
            .position(|x| x == me.name().as_str())
            .unwrap_or(0)
            < half;
        names
            .iter()
            .enumerate()
            .filter(|(j, _)| (*j < half) != mine)
            .all(|(_, other)| !alive(m, other))
    })
    .await?;
    record("partitioned: each side lists the other failed", d, &b);
    for x in &nodes {
        x.block(Vec::new()).await?;
    }
    let b = bar(nodes.len(), "members listing every survivor alive", quiet);
    let d = wait_all(&nodes, &b, Duration::from_secs(120), |_, m| {
        names.iter().all(|x| alive(m, x))
    })
    .await?;
    record("healed: all alive again, no operator action", d, &b);
    for x in &nodes {
        let _ = x.stop().await;
    }
    Ok(steps)
}

/// The summary table.
pub fn table(steps: &[Step]) -> String {
    let mut out = format!("\n{:<48} {:>9}\n", "step", "seconds");
    for s in steps {
        out += &format!("{:<48} {:>9.2}\n", s.step, s.seconds);
    }
    out
}
