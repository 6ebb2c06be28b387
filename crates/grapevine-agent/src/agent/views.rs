//! Who sees whom, without a central collector: each agent publishes, in its own per-node
//! state under [`KEY`], the members it does not see alive, with when it first saw each so,
//! and the dashboard of any agent reads every member's from the state it already holds. A
//! healthy cluster publishes nothing (an absent view means "all alive"), so an idle cluster
//! pays nothing for it; a change costs one small state update per member that sees it.

use grapevine::{Event, Node, State};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The per-node state key views are published under.
pub const KEY: &str = "ui/view";

/// Members listed at most in one view (a state value is at most 64 KiB).
const MAX_LISTED: usize = 1000;

/// One member's view: the members it does not see alive, each with its status and when it
/// first saw it so (seconds since the UNIX epoch).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct View {
    /// By member name.
    #[serde(rename = "Seen")]
    pub seen: BTreeMap<String, (String, f64)>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Keeps this agent's view published: re-read on every member event, written only when it
/// changed.
pub fn spawn_publisher(node: Node) {
    tokio::spawn(async move {
        let mut events = node.events();
        let mut view = View::default();
        loop {
            match events.next().await {
                None => return,
                Some(Event::User { .. } | Event::Agreement { .. }) => continue,
                Some(_) => {}
            }
            let Ok(members) = node.members().await else {
                continue;
            };
            let now = unix_now();
            let mut next = View::default();
            for m in members.iter().filter(|m| m.state != State::Alive) {
                if next.seen.len() >= MAX_LISTED {
                    break;
                }
                let name = m.name.as_str().to_string();
                let st = super::api::status(m.state).to_string();
                let at = match view.seen.get(&name) {
                    Some((old, t)) if *old == st => *t,
                    _ => now,
                };
                next.seen.insert(name, (st, at));
            }
            if next == view {
                continue;
            }
            view = next;
            let r = if view.seen.is_empty() {
                node.delete_state(KEY).await.map(|_| ())
            } else {
                match serde_json::to_vec(&view) {
                    Ok(json) => node.set_state(KEY, json).await.map(|_| ()),
                    Err(_) => Ok(()),
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "cannot publish this agent's view");
            }
        }
    });
}

/// Every member's view (rows) of every member (columns): only what is not alive is listed;
/// `LastChange` is the most recent change seen anywhere, with how long it took to reach the
/// members that saw it.
pub async fn matrix(node: &Node) -> Result<Value, grapevine::Error> {
    let members = node.members().await?;
    let names: Vec<String> = {
        let mut v: Vec<String> = members
            .iter()
            .map(|m| m.name.as_str().to_string())
            .collect();
        v.sort();
        v
    };
    let live: Vec<&str> = members
        .iter()
        .filter(|m| m.state.is_live())
        .map(|m| m.name.as_str())
        .collect();
    let states = node.node_states_with_prefix(&names, KEY).await?;
    let mut rows: BTreeMap<String, View> = BTreeMap::new();
    for s in states {
        if let Some((_, v, _)) = s.keys.iter().find(|(k, _, _)| k == KEY) {
            if let Ok(view) = serde_json::from_slice::<View>(v) {
                rows.insert(s.name.clone(), view);
            }
        }
    }
    // The latest change: the (member, status) first seen most recently by anyone.
    let mut last: Option<(String, String, f64)> = None;
    for view in rows.values() {
        for (col, (st, t)) in &view.seen {
            if last.as_ref().is_none_or(|(_, _, lt)| t > lt) {
                last = Some((col.clone(), st.clone(), *t));
            }
        }
    }
    let last_change = last.map(|(col, st, _)| {
        let times: Vec<f64> = rows
            .values()
            .filter_map(|v| v.seen.get(&col).filter(|(s, _)| *s == st).map(|(_, t)| *t))
            .collect();
        let first = times.iter().copied().fold(f64::INFINITY, f64::min);
        let latest = times.iter().copied().fold(0.0, f64::max);
        let watchers = live.iter().filter(|n| **n != col).count();
        json!({"Member": col, "Status": st, "Seconds": latest - first,
               "Reached": times.len(), "Of": watchers})
    });
    let rows: BTreeMap<String, BTreeMap<String, String>> = rows
        .into_iter()
        .map(|(r, v)| (r, v.seen.into_iter().map(|(c, (s, _))| (c, s)).collect()))
        .collect();
    Ok(json!({
        "Members": names,
        "Live": live,
        "Rows": rows,
        "LastChange": last_change,
    }))
}

/// The largest cluster the convergence panel simulates on request: 500 members take about
/// a second per seed here, 2,000 take eight.
pub const MAX_SIMULATED: usize = 500;

/// Seeds per estimate.
const SEEDS: u64 = 3;

/// The simulator's estimate (the real protocol on a simulated network, median of 3 seeds)
/// of the seconds a write takes to reach 50 %, 99 % and 100 % of `n` members of `profile`
/// at datagram `loss` (at most [`MAX_SIMULATED`] members; `Modelled` says how many).
pub fn simulate(n: usize, profile: &str, loss: f64) -> Value {
    use grapevine_sim::scenario::state::{run, StateParams};
    let n = u32::try_from(n.clamp(2, MAX_SIMULATED)).unwrap_or(2);
    let mut half = Vec::new();
    let mut p99 = Vec::new();
    let mut all = Vec::new();
    for seed in 1..=SEEDS {
        let p = StateParams {
            nodes: n,
            profile: profile.to_string(),
            loss,
            seed,
            no_wall_clock: true,
            ..StateParams::default()
        };
        if let Ok(r) = run(&p) {
            half.extend(r.seconds_to_half);
            p99.extend(r.seconds_to_99);
            all.extend(r.seconds_to_all);
        }
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    json!({"Half": median(half), "P99": median(p99), "All": median(all), "Seeds": SEEDS,
           "Modelled": n})
}
