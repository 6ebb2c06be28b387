//! Scenarios: each sets up a cluster, applies faults and measures against the truth.

pub mod aggregate;
pub mod idle;
pub mod merkle;
pub mod rumor;
pub mod spread;
pub mod state;
pub mod swim;

use crate::net::NetConfig;
use crate::sim::{NoObserver, Sim};
use grapevine_core::{Config, Time};
use rand::Rng;

/// The named profile's configuration, with the fanout and interval a run overrides checked
/// (at least one partner, at least 10 ms).
pub(crate) fn profile_config(
    profile: &str,
    fanout: Option<usize>,
    interval: Option<std::time::Duration>,
) -> Result<Config, String> {
    if fanout == Some(0) {
        return Err("--fanout must be at least 1".into());
    }
    if interval.is_some_and(|i| i < std::time::Duration::from_millis(10)) {
        return Err("--interval must be at least 10 ms".into());
    }
    Config::profile(profile).ok_or_else(|| format!("unknown profile {profile:?}"))
}

/// `n` nodes on the network `config`'s profile is made for, with datagram loss `loss`, joined through node 0 (each starting at a
/// random moment of the first probe interval), run until every node lists all `n` as live
/// (or `max_periods` probe periods have passed): the starting point of the scenarios that
/// measure something other than the join.
pub(crate) fn joined_cluster(
    seed: u64,
    n: u32,
    config: &Config,
    loss: f64,
    max_periods: u32,
) -> Sim {
    let mut net = NetConfig::for_profile(config.profile);
    net.loss = loss;
    let mut sim = Sim::new(seed, net);
    for _ in 0..n {
        sim.add_node();
    }
    let obs = &mut NoObserver;
    sim.start(0, config.clone(), &[], obs);
    for i in 1..n {
        let at = Time::ZERO
            + config
                .detection
                .probe_interval
                .mul_f64(sim.rng().gen::<f64>());
        sim.run_until(at.max(sim.now()), obs);
        sim.start(i, config.clone(), &[0], obs);
    }
    let mut t = sim.now();
    for _ in 0..max_periods {
        t = t + config.detection.probe_interval;
        sim.run_until(t, obs);
        if (0..n).all(|i| sim.node(i).is_some_and(|x| x.num_live() == n as usize)) {
            break;
        }
    }
    sim
}
