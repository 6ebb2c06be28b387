//! `grapevine sim swim`: a cluster joins through one seed, then crashes, partitions,
//! loss and slow nodes are applied, and membership is measured against the truth.

use crate::net::NetConfig;
use crate::sim::{Observer, Sim, Slowness};
use grapevine_core::{Config, Detector, Event, ProbeSelection, State, Time};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Parameters of a `swim` run.
#[derive(Clone, Debug)]
pub struct SwimParams {
    /// Cluster size.
    pub nodes: u32,
    /// RNG seed: the same seed gives the same run.
    pub seed: u64,
    /// Datagram loss probability (0..1).
    pub loss: f64,
    /// Length of the run in protocol periods.
    pub periods: u32,
    /// Nodes to crash once the cluster has converged.
    pub crash: u32,
    /// Period at which the cluster splits into two halves.
    pub partition_at: Option<u32>,
    /// Period at which the halves can talk again.
    pub heal_at: Option<u32>,
    /// Fraction of slow nodes.
    pub slow: f64,
    /// Override for k, the number of indirect probes.
    pub indirect: Option<usize>,
    /// Disable suspicion: a failed probe declares death at once.
    pub no_suspicion: bool,
    /// Disable the Lifeguard extensions.
    pub no_lifeguard: bool,
    /// Disable the reliable-channel fallback probe.
    pub no_fallback: bool,
    /// Probe-target selection.
    pub probe_selection: ProbeSelection,
    /// The failure detector: SWIM probing, phi-accrual on heartbeats, or both.
    pub detector: Detector,
    /// Members each gossip round sends to (the profile's if none).
    pub fanout: Option<usize>,
    /// The probe interval (the profile's if none); the probe timeout keeps its share of it.
    pub interval: Option<Duration>,
    /// Profile name (`lan`, `wan`, `local`).
    pub profile: String,
    /// Leave `wall_seconds` and `peak_rss_mib` out, so the output is byte-identical across runs.
    pub no_wall_clock: bool,
}

impl Default for SwimParams {
    fn default() -> Self {
        SwimParams {
            nodes: 100,
            seed: 1,
            loss: 0.0,
            periods: 100,
            crash: 0,
            partition_at: None,
            heal_at: None,
            slow: 0.0,
            indirect: None,
            no_suspicion: false,
            no_lifeguard: false,
            no_fallback: false,
            probe_selection: ProbeSelection::RoundRobin,
            detector: Detector::Swim,
            fanout: None,
            interval: None,
            profile: "lan".into(),
            no_wall_clock: false,
        }
    }
}

/// Crashes wait this long after the start: phi-accrual then holds about 20 heartbeat
/// intervals per member, as in a cluster that has run for a while.
const CRASH_WARM_UP: Duration = Duration::from_secs(20);

/// What a `swim` run measured. Times are in protocol periods.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SwimReport {
    /// Cluster size.
    pub nodes: u32,
    /// RNG seed.
    pub seed: u64,
    /// Profile used.
    pub profile: String,
    /// Periods simulated.
    pub periods: u32,
    /// Datagram loss probability.
    pub loss: f64,
    /// First period at which every node lists every node alive.
    pub join_converged_period: Option<u32>,
    /// Crash to the first suspicion of it by anyone, mean over crashed nodes.
    pub detect_first_mean_periods: Option<f64>,
    /// Crash to the moment every live node marks it dead, max over crashed nodes.
    pub detect_all_max_periods: Option<f64>,
    /// Crash to every live node marking it dead, mean over crashed nodes.
    pub detect_all_mean_periods: Option<f64>,
    /// The minimum suspicion timeout at this size, for comparison.
    pub suspicion_min_timeout_periods: f64,
    /// Times any node marked a live node dead (each observer counts).
    pub false_positives: u64,
    /// Times a node itself declared a live node dead (timer expiry or failed probe).
    pub false_declarations: u64,
    /// Suspicions of live nodes raised by a node's own failed probe.
    pub false_suspicions: u64,
    /// Of those, suspicions of nodes that are not slow.
    pub false_suspicions_of_healthy: u64,
    /// Probes started by all nodes.
    pub probes: u64,
    /// Probes of live targets that ended with no ack at all.
    pub probes_failed: u64,
    /// Probes saved by the reliable-channel fallback.
    pub fallback_acks: u64,
    /// Probes saved by an indirect probe.
    pub indirect_acks: u64,
    /// Refutations by all nodes.
    pub refutations: u64,
    /// At the heal: the fraction of (observer, target) pairs on opposite sides in which the
    /// observer lists the target as failed.
    pub partition_cross_failed_fraction: Option<f64>,
    /// After a heal: first period, counted from the heal, at which every node lists every
    /// live node alive.
    pub healed_converged_period: Option<u32>,
    /// Datagrams and frames sent per node per period, in steady state.
    pub msgs_per_node_per_period: f64,
    /// Bytes sent per node per period, in steady state.
    pub bytes_per_node_per_period: f64,
    /// Periods counted as steady state.
    pub steady_periods: u32,
    /// First period, at or after join convergence, in which no node had a rumour queued: the
    /// join's broadcasts have all died out.
    pub drained_from_period: Option<u32>,
    /// Like `msgs_per_node_per_period`, counted from `drained_from_period`.
    pub drained_msgs_per_node_per_period: f64,
    /// Like `bytes_per_node_per_period`, counted from `drained_from_period`.
    pub drained_bytes_per_node_per_period: f64,
    /// Simulator events handled.
    pub events: u64,
    /// Wall-clock seconds the run took (absent with `--no-wall-clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Peak resident memory of the process in MiB (absent with `--no-wall-clock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// Builds the protocol configuration a run uses.
pub fn config_for(p: &SwimParams) -> Result<Config, String> {
    let mut c = super::profile_config(&p.profile, p.fanout, p.interval)?;
    if let Some(k) = p.indirect {
        c.detection.indirect_checks = k;
    }
    if let Some(f) = p.fanout {
        c.membership.fanout = f;
    }
    if let Some(i) = p.interval {
        c.detection.probe_timeout = c
            .detection
            .probe_timeout
            .mul_f64(i.as_secs_f64() / c.detection.probe_interval.as_secs_f64());
        c.detection.probe_interval = i;
    }
    c.membership.suspicion = !p.no_suspicion;
    c.detection.lifeguard = !p.no_lifeguard;
    c.detection.fallback_probe = !p.no_fallback;
    c.detection.probe_selection = p.probe_selection;
    c.detection.detector = p.detector;
    Ok(c)
}

struct Crash {
    node: u32,
    at: Time,
    first_suspect: Option<Time>,
    dead_seen: Vec<bool>,
    dead_count: u32,
    all_dead: Option<Time>,
}

/// Tracks every node's view against the truth.
struct Truth {
    n: usize,
    /// view[o * n + t]: observer o lists target t as alive.
    view: Vec<u64>,
    /// dead[o * n + t]: observer o lists target t as failed.
    dead: Vec<u64>,
    /// Per observer: live targets it lists alive (self excluded).
    alive_live: Vec<u32>,
    live: Vec<bool>,
    live_count: u32,
    slow: Vec<bool>,
    /// Observers whose view is complete.
    complete: u32,
    converged_at: Option<Time>,
    join_converged: Option<Time>,
    /// Convergence is only checked once every node has started.
    armed: bool,
    period: Duration,
    crashes: Vec<Crash>,
    partition_window: bool,
    false_positives: u64,
    false_declarations: u64,
    false_suspicions: u64,
    false_suspicions_of_healthy: u64,
    msgs: Vec<u64>,
    bytes: Vec<u64>,
}

impl Truth {
    fn new(n: usize, periods: u32, period: Duration) -> Self {
        let words = (n * n).div_ceil(64);
        Truth {
            n,
            view: vec![0; words],
            dead: vec![0; words],
            alive_live: vec![0; n],
            live: vec![false; n],
            live_count: 0,
            slow: vec![false; n],
            complete: 0,
            converged_at: None,
            join_converged: None,
            armed: false,
            period,
            crashes: Vec::new(),
            partition_window: false,
            false_positives: 0,
            false_declarations: 0,
            false_suspicions: 0,
            false_suspicions_of_healthy: 0,
            msgs: vec![0; periods as usize + 1],
            bytes: vec![0; periods as usize + 1],
        }
    }

    fn bit(&self, o: usize, t: usize) -> bool {
        let i = o * self.n + t;
        self.view[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_complete(&self, o: usize) -> bool {
        self.live[o] && self.alive_live[o] + 1 == self.live_count
    }

    fn set(&mut self, now: Time, o: usize, t: usize, alive: bool) {
        if o == t || self.bit(o, t) == alive {
            return;
        }
        let i = o * self.n + t;
        let was = self.is_complete(o);
        if alive {
            self.view[i / 64] |= 1 << (i % 64);
        } else {
            self.view[i / 64] &= !(1 << (i % 64));
        }
        if self.live[t] {
            if alive {
                self.alive_live[o] += 1;
            } else {
                self.alive_live[o] -= 1;
            }
        }
        self.after_change(now, o, was);
    }

    fn after_change(&mut self, now: Time, o: usize, was: bool) {
        let is = self.is_complete(o);
        if is && !was {
            self.complete += 1;
        } else if was && !is {
            self.complete -= 1;
        }
        if self.armed
            && self.complete == self.live_count
            && self.live_count > 0
            && self.converged_at.is_none()
        {
            self.converged_at = Some(now);
            if self.join_converged.is_none() {
                self.join_converged = Some(now);
            }
        }
    }

    fn set_live(&mut self, now: Time, t: usize, live: bool) {
        if self.live[t] == live {
            return;
        }
        // Observers that list t alive gain or lose a live target: O(N) per crash or start.
        for o in 0..self.n {
            if o != t && self.bit(o, t) {
                if live {
                    self.alive_live[o] += 1;
                } else {
                    self.alive_live[o] -= 1;
                }
            }
        }
        self.live[t] = live;
        if live {
            self.live_count += 1;
        } else {
            self.live_count -= 1;
        }
        self.recount();
        self.after_change(now, t, self.is_complete(t));
    }

    /// Counts the observers whose view is complete, from scratch.
    fn recount(&mut self) {
        self.complete = (0..self.n).filter(|&o| self.is_complete(o)).count() as u32;
    }

    fn period_of(&self, now: Time) -> usize {
        (now.as_micros() / self.period.as_micros().max(1) as u64) as usize
    }
}

struct SwimObserver<'a> {
    truth: &'a mut Truth,
}

impl Observer for SwimObserver<'_> {
    fn on_event(&mut self, now: Time, node: u32, event: &Event) {
        let Some(m) = event.member() else { return };
        let Some(t) = node_index(&m.name) else {
            return;
        };
        let (o, t) = (node as usize, t as usize);
        self.truth.set(now, o, t, m.state == State::Alive);
        let i = o * self.truth.n + t;
        if m.state == State::Dead {
            self.truth.dead[i / 64] |= 1 << (i % 64);
        } else {
            self.truth.dead[i / 64] &= !(1 << (i % 64));
        }
        let live_target = self.truth.live[t];
        let counting = !self.truth.partition_window;
        match event {
            Event::Suspected { local: true, .. } => {
                if live_target && counting {
                    self.truth.false_suspicions += 1;
                    if !self.truth.slow[t] {
                        self.truth.false_suspicions_of_healthy += 1;
                    }
                }
                for c in self.truth.crashes.iter_mut() {
                    if c.node as usize == t && c.first_suspect.is_none() {
                        c.first_suspect = Some(now);
                    }
                }
            }
            Event::Failed { local, .. } => {
                if live_target && counting {
                    self.truth.false_positives += 1;
                    if *local {
                        self.truth.false_declarations += 1;
                    }
                }
                let n_live = self.truth.live_count;
                for c in self.truth.crashes.iter_mut() {
                    if c.node as usize == t {
                        if *local && c.first_suspect.is_none() {
                            c.first_suspect = Some(now);
                        }
                        if !c.dead_seen[o] && self.truth.live[o] {
                            c.dead_seen[o] = true;
                            c.dead_count += 1;
                            if c.dead_count >= n_live && c.all_dead.is_none() {
                                c.all_dead = Some(now);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn on_send(&mut self, now: Time, _node: u32, bytes: usize, _reliable: bool) {
        let p = self.truth.period_of(now);
        if p < self.truth.msgs.len() {
            self.truth.msgs[p] += 1;
            self.truth.bytes[p] += bytes as u64;
        }
    }
}

/// The index of a simulated node from its name (`node-NNNNNN`, see [`crate::sim_name`]),
/// without a table lookup.
fn node_index(name: &grapevine_core::Name) -> Option<u32> {
    let digits = name.as_bytes().strip_prefix(b"node-")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// The peak resident set size of this process, in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs a `swim` scenario.
pub fn run(p: &SwimParams) -> Result<SwimReport, String> {
    let started = Instant::now();
    let config = config_for(p)?;
    if p.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if !(0.0..=1.0).contains(&p.loss) || !(0.0..=1.0).contains(&p.slow) {
        return Err("--loss and --slow must be between 0 and 1".into());
    }
    if p.crash >= p.nodes {
        return Err("--crash must be smaller than --nodes".into());
    }
    let period = config.detection.probe_interval;
    let mut net = NetConfig::for_profile(&p.profile);
    net.loss = p.loss;
    let mut sim = Sim::new(p.seed, net);
    let n = p.nodes as usize;
    let mut truth = Truth::new(n, p.periods, period);
    for _ in 0..n {
        sim.add_node();
    }
    // Slow nodes: every message they receive waits 0.5 to 2 probe intervals.
    let slow_count = (p.slow * n as f64).round() as usize;
    let mut order: Vec<u32> = (1..p.nodes).collect();
    order.shuffle(sim.rng());
    for &i in order.iter().take(slow_count) {
        sim.set_slow(
            i,
            Some(Slowness {
                min: period / 2,
                max: period * 2,
            }),
        );
        truth.slow[i as usize] = true;
    }
    // Node 0 is the seed; the others start at random moments of the first period and join it.
    let mut starts: Vec<(Time, u32)> = Vec::with_capacity(n);
    for i in 1..p.nodes {
        let at = Time::ZERO + period.mul_f64(sim.rng().gen::<f64>());
        starts.push((at, i));
    }
    starts.sort();
    {
        let mut obs = SwimObserver { truth: &mut truth };
        sim.start(0, config.clone(), &[], &mut obs);
        obs.truth.set_live(Time::ZERO, 0, true);
        for (at, i) in starts {
            sim.run_until(at, &mut obs);
            sim.start(i, config.clone(), &[0], &mut obs);
            obs.truth.set_live(at, i as usize, true);
        }
        obs.truth.armed = true;
        let now = sim.now();
        obs.truth.after_change(now, 0, obs.truth.is_complete(0));
    }
    let mut partition_window: Option<(usize, Option<usize>)> = None;
    let mut heal_time: Option<Time> = None;
    let mut healed_at: Option<Time> = None;
    let mut pending_crashes: Vec<(Time, u32)> = Vec::new();
    let mut drained_from: Option<usize> = None;
    let mut cross_failed: Option<f64> = None;
    let mut crashes_scheduled = false;
    for period_no in 0..p.periods {
        if p.partition_at == Some(period_no) {
            let groups = (0..n).map(|i| u16::from(i >= n / 2)).collect();
            sim.topology.partition(groups);
            truth.partition_window = true;
            partition_window = Some((period_no as usize, None));
        }
        if p.heal_at == Some(period_no) && sim.topology.is_partitioned() {
            let half = n / 2;
            let mut cross = 0u64;
            let mut failed = 0u64;
            for o in 0..n {
                for t in 0..n {
                    if (o < half) != (t < half) && truth.live[o] && truth.live[t] {
                        cross += 1;
                        let i = o * n + t;
                        if truth.dead[i / 64] & (1 << (i % 64)) != 0 {
                            failed += 1;
                        }
                    }
                }
            }
            cross_failed = Some(round3(failed as f64 / cross.max(1) as f64));
            sim.topology.heal();
            heal_time = Some(sim.now());
            truth.converged_at = None;
            truth.recount();
        }
        let end = Time::ZERO + period * (period_no + 1);
        // Crash C random non-seed nodes once the join has converged and the detectors have
        // some history (phi-accrual judges silences against the intervals it has seen), at
        // random moments of one period.
        if !crashes_scheduled
            && p.crash > 0
            && truth.converged_at.is_some()
            && heal_time.is_none()
            && sim.now() >= Time::ZERO + CRASH_WARM_UP
        {
            crashes_scheduled = true;
            let mut victims: Vec<u32> = (1..p.nodes).filter(|&i| !truth.slow[i as usize]).collect();
            victims.shuffle(sim.rng());
            for &v in victims.iter().take(p.crash as usize) {
                let at = sim.now() + period.mul_f64(sim.rng().gen::<f64>());
                pending_crashes.push((at, v));
            }
            pending_crashes.sort();
        }
        let mut obs = SwimObserver { truth: &mut truth };
        while let Some(&(at, v)) = pending_crashes.first() {
            if at > end {
                break;
            }
            pending_crashes.remove(0);
            sim.run_until(at, &mut obs);
            sim.crash(v);
            obs.truth.set_live(at, v as usize, false);
            obs.truth.crashes.push(Crash {
                node: v,
                at,
                first_suspect: None,
                dead_seen: vec![false; n],
                dead_count: 0,
                all_dead: None,
            });
        }
        sim.run_until(end, &mut obs);
        if drained_from.is_none()
            && obs.truth.join_converged.is_some()
            && (0..p.nodes).all(|i| sim.node(i).is_none_or(|c| c.pending_broadcasts() == 0))
        {
            drained_from = Some(period_no as usize + 1);
        }
        if let (Some(_), None) = (heal_time, healed_at) {
            if let Some(t) = truth.converged_at {
                healed_at = Some(t);
                if let Some((s, _)) = partition_window {
                    partition_window = Some((s, Some(truth.period_of(t) + 1)));
                }
                truth.partition_window = false;
            }
        }
    }
    // Join convergence is the first convergence before any crash or partition.
    let join_converged = truth.join_converged;
    let periods_f = |d: Duration| d.as_secs_f64() / period.as_secs_f64();
    let crash_stats: Vec<&Crash> = truth.crashes.iter().collect();
    let mean = |v: Vec<f64>| {
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let first: Vec<f64> = crash_stats
        .iter()
        .filter_map(|c| c.first_suspect.map(|t| periods_f(t.saturating_since(c.at))))
        .collect();
    let all: Vec<f64> = crash_stats
        .iter()
        .filter_map(|c| c.all_dead.map(|t| periods_f(t.saturating_since(c.at))))
        .collect();
    let all_complete = all.len() == crash_stats.len();
    // Steady state: from join convergence to the end, outside crash detection and partitions.
    let start = join_converged.map_or(p.periods as usize, |t| truth.period_of(t) + 1);
    let crash_end = truth
        .crashes
        .iter()
        .map(|c| {
            c.all_dead
                .map_or(p.periods as usize, |t| truth.period_of(t) + 1)
        })
        .max();
    let crash_start = truth.crashes.iter().map(|c| truth.period_of(c.at)).min();
    let window = |start: usize| {
        let (mut msgs, mut bytes, mut node_periods, mut count) = (0u64, 0u64, 0u64, 0u32);
        for per in start..p.periods as usize {
            if let (Some(s), Some(e)) = (crash_start, crash_end) {
                if per >= s && per < e {
                    continue;
                }
            }
            if let Some((s, e)) = partition_window {
                if per >= s && per < e.unwrap_or(p.periods as usize) {
                    continue;
                }
            }
            msgs += truth.msgs[per];
            bytes += truth.bytes[per];
            node_periods += u64::from(p.nodes - truth.crashes.len() as u32);
            count += 1;
        }
        let per_node = |x: u64| {
            if node_periods == 0 {
                0.0
            } else {
                round3(x as f64 / node_periods as f64)
            }
        };
        (per_node(msgs), per_node(bytes), count)
    };
    let (msgs_pn, bytes_pn, steady) = window(start);
    let (dmsgs_pn, dbytes_pn, _) = window(drained_from.unwrap_or(p.periods as usize).max(start));
    let mut report = SwimReport {
        nodes: p.nodes,
        seed: p.seed,
        profile: p.profile.clone(),
        periods: p.periods,
        loss: p.loss,
        join_converged_period: join_converged.map(|t| (truth.period_of(t) + 1) as u32),
        detect_first_mean_periods: mean(first).map(round3),
        detect_all_max_periods: if all_complete {
            all.iter().cloned().reduce(f64::max).map(round3)
        } else {
            None
        },
        detect_all_mean_periods: if all_complete {
            mean(all.clone()).map(round3)
        } else {
            None
        },
        suspicion_min_timeout_periods: round3(periods_f(config.suspicion_min_timeout(n))),
        false_positives: truth.false_positives,
        false_declarations: truth.false_declarations,
        false_suspicions: truth.false_suspicions,
        false_suspicions_of_healthy: truth.false_suspicions_of_healthy,
        probes: 0,
        probes_failed: 0,
        fallback_acks: 0,
        indirect_acks: 0,
        refutations: 0,
        partition_cross_failed_fraction: cross_failed,
        healed_converged_period: match (heal_time, healed_at) {
            (Some(h), Some(t)) => Some(periods_f(t.saturating_since(h)).ceil() as u32),
            _ => None,
        },
        msgs_per_node_per_period: msgs_pn,
        bytes_per_node_per_period: bytes_pn,
        steady_periods: steady,
        drained_from_period: drained_from.map(|p| p as u32),
        drained_msgs_per_node_per_period: dmsgs_pn,
        drained_bytes_per_node_per_period: dbytes_pn,
        events: sim.events_processed(),
        wall_seconds: None,
        peak_rss_mib: None,
    };
    for i in 0..p.nodes {
        if let Some(node) = sim.node(i) {
            let s = node.stats();
            report.probes += s.probes;
            report.probes_failed += s.probes_failed;
            report.fallback_acks += s.fallback_acks;
            report.indirect_acks += s.indirect_acks;
            report.refutations += s.refutations;
        }
    }
    if !p.no_wall_clock {
        report.wall_seconds = Some(round3(started.elapsed().as_secs_f64()));
        report.peak_rss_mib = peak_rss_mib().map(round3);
    }
    Ok(report)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_index_inverts_sim_name() {
        for i in [0u32, 7, 999_999, 1_000_000, 4_000_000_000] {
            assert_eq!(super::node_index(&crate::sim_name(i)), Some(i));
        }
        assert_eq!(
            super::node_index(&grapevine_core::Name::new("node-x").unwrap()),
            None
        );
        assert_eq!(
            super::node_index(&grapevine_core::Name::new("web-1").unwrap()),
            None
        );
    }
}
