//! Aggregation with no coordinator: push-sum (Kempe, Dobra and Gehrke, 2003) for the sum,
//! average and count of named metrics, and gossip of extremes for their minimum and
//! maximum, restarted in epochs (Jelasity, Montresor and Babaoglu, 2005) so that the
//! contributions of members that left or failed drop out.
//!
//! Each node holds, per metric, a mass `(s, w, c)`: `s` starts at its own value, `w` at 1 if
//! it contributes, and `c` at 1 on exactly one node of the cluster (the *anchor*: the live
//! member with the lowest name). Every round a node keeps half of every mass and sends the
//! other half to one random live member. Mass is conserved, so every node's ratios converge
//! to the cluster's: `s/w` to the average, `s/c` to the sum and `w/c` to the count of
//! contributions. A changed contribution moves its node's `s` by the difference, which keeps
//! the totals right without a restart.
//!
//! Mass in a datagram that is lost, or at a member that fails, is gone for the rest of the
//! epoch; so is a departed member's contribution. Every `epoch_rounds` rounds (or as soon as
//! a message of a higher epoch arrives) a node settles its estimates and starts again from
//! its own contribution; what it reports is the last settled estimate once it has one.

pub(crate) mod messages;
pub(crate) mod rounds;

use crate::aggregate::messages::{Aggregate, AggregateMass};
use crate::name::Name;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

/// The most metrics a node aggregates: more are refused (locally) or ignored (received).
pub const MAX_METRICS: usize = 256;

/// One metric's mass in the running epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Mass {
    s: f64,
    w: f64,
    c: f64,
    min: f64,
    max: f64,
}

impl Mass {
    const EMPTY: Mass = Mass {
        s: 0.0,
        w: 0.0,
        c: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    fn estimate(&self, epoch: u64, rounds: u32) -> Estimate {
        // Below this weight a ratio is noise, not an estimate.
        const TINY: f64 = 1e-12;
        let avg = (self.w > TINY).then(|| self.s / self.w);
        let sum = (self.c > TINY).then(|| self.s / self.c);
        let count = (self.c > TINY).then(|| self.w / self.c);
        Estimate {
            average: avg,
            sum,
            count,
            min: self.min.is_finite().then_some(self.min),
            max: self.max.is_finite().then_some(self.max),
            epoch,
            rounds,
            settled: false,
        }
    }
}

/// A node's estimate of a metric's cluster-wide aggregates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The average of the contributions.
    pub average: Option<f64>,
    /// Their sum.
    pub sum: Option<f64>,
    /// How many members contribute.
    pub count: Option<f64>,
    /// The smallest contribution.
    pub min: Option<f64>,
    /// The largest contribution.
    pub max: Option<f64>,
    /// The epoch it comes from.
    pub epoch: u64,
    /// Rounds of that epoch behind it.
    pub rounds: u32,
    /// Whether it is a finished epoch's estimate (else the running epoch's, still moving).
    pub settled: bool,
}

/// Why a contribution was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// Too many metrics.
    #[error("this node already aggregates {MAX_METRICS} metrics, the limit")]
    TooMany,
    /// A value that is not a finite number.
    #[error("the value {0} is not a finite number")]
    NotFinite(f64),
    /// A name too long or empty.
    #[error(
        "a metric name must be 1 to {} bytes",
        crate::aggregate::messages::MAX_METRIC_NAME_LEN
    )]
    BadName,
}

/// This node's aggregation state.
#[derive(Debug)]
pub struct Aggregates {
    epoch_rounds: u32,
    epoch: u64,
    round: u32,
    /// The round at which this node entered the running epoch: its estimate is ripe only
    /// after half an epoch of its own rounds, whatever round it joined the epoch at.
    entered: u32,
    /// The round the running epoch ends at, if a departure brought it forward.
    end_at: Option<u32>,
    /// A member left or failed during the running epoch: its mass, and whatever it was
    /// sent, is gone, so the epoch's estimate is not reported.
    tainted: bool,
    /// Who sent this node mass in the running epoch: a departure matters to the epoch only
    /// if the departed member took part in it. News of older departures, which can arrive
    /// long after (anti-entropy), then does not restart epochs that never held their mass.
    heard_from: HashSet<SocketAddr>,
    anchor: bool,
    own: BTreeMap<String, f64>,
    mass: BTreeMap<String, Mass>,
    settled: BTreeMap<String, Estimate>,
    /// Messages of an older epoch, ignored.
    pub stale: u64,
}

impl Aggregates {
    /// Aggregation state with epochs of `epoch_rounds` rounds (at least 2).
    pub fn new(epoch_rounds: u32) -> Self {
        Aggregates {
            epoch_rounds: epoch_rounds.max(2),
            epoch: 0,
            round: 0,
            entered: 0,
            end_at: None,
            tainted: false,
            heard_from: HashSet::new(),
            anchor: false,
            own: BTreeMap::new(),
            mass: BTreeMap::new(),
            settled: BTreeMap::new(),
            stale: 0,
        }
    }

    /// Whether there is anything to aggregate (else the node does not gossip for it).
    pub fn is_active(&self) -> bool {
        !self.mass.is_empty()
    }

    /// The running epoch.
    #[cfg(test)]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Rounds into the running epoch.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Rounds after which an epoch's estimate has converged: half the epoch, by design
    /// (the profiles' epochs are twice the rounds the simulator needs for 10⁻³).
    fn ripe(&self) -> u32 {
        self.epoch_rounds / 2
    }

    /// Whether the running epoch's estimate is converged and untouched by departures.
    fn is_ripe(&self) -> bool {
        !self.tainted && self.round.saturating_sub(self.entered) >= self.ripe()
    }

    /// Sets (or, with `None`, withdraws) this node's contribution to `name`. `anchor`
    /// says whether this node is the anchor, should it start aggregating now.
    pub fn contribute(
        &mut self,
        name: &str,
        value: Option<f64>,
        anchor: impl FnOnce() -> bool,
    ) -> Result<(), AggregateError> {
        if name.is_empty() || name.len() > crate::aggregate::messages::MAX_METRIC_NAME_LEN {
            return Err(AggregateError::BadName);
        }
        if let Some(v) = value {
            if !v.is_finite() {
                return Err(AggregateError::NotFinite(v));
            }
            if !self.mass.contains_key(name) && self.mass.len() >= MAX_METRICS {
                return Err(AggregateError::TooMany);
            }
        }
        if !self.is_active() && value.is_some() {
            self.anchor = anchor();
            self.entered = self.round;
        }
        let old = match value {
            Some(v) => self.own.insert(name.to_string(), v),
            None => self.own.remove(name),
        };
        let anchor = self.anchor;
        let Some(m) = self.entry(name, anchor) else {
            return Ok(());
        };
        // Move this node's mass by the change: the totals stay the cluster's.
        match (old, value) {
            (None, Some(v)) => {
                m.s += v;
                m.w += 1.0;
            }
            (Some(o), Some(v)) => m.s += v - o,
            (Some(o), None) => {
                m.s -= o;
                m.w -= 1.0;
            }
            (None, None) => {}
        }
        if let Some(v) = value {
            m.min = m.min.min(v);
            m.max = m.max.max(v);
        }
        Ok(())
    }

    /// The running mass of `name`, created empty (plus the anchor's unit) if new.
    fn entry(&mut self, name: &str, anchor: bool) -> Option<&mut Mass> {
        if !self.mass.contains_key(name) {
            if self.mass.len() >= MAX_METRICS {
                return None;
            }
            let mut m = Mass::EMPTY;
            if anchor {
                m.c = 1.0;
            }
            self.mass.insert(name.to_string(), m);
        }
        self.mass.get_mut(name)
    }

    /// This node's own contribution to `name`.
    pub fn contribution(&self, name: &str) -> Option<f64> {
        self.own.get(name).copied()
    }

    /// The names of the metrics known here.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.mass
            .keys()
            .chain(self.settled.keys())
            .map(String::as_str)
    }

    /// The estimate to report for `name`: the running epoch's once it has converged and no
    /// member departed during it, else the last such epoch's, else the running one.
    pub fn estimate(&self, name: &str) -> Option<Estimate> {
        if self.is_ripe() {
            if let Some(mut e) = self.current(name) {
                e.settled = true;
                return Some(e);
            }
        }
        self.settled
            .get(name)
            .copied()
            .or_else(|| self.current(name))
    }

    /// The running epoch's estimate for `name`.
    pub fn current(&self, name: &str) -> Option<Estimate> {
        self.mass
            .get(name)
            .map(|m| m.estimate(self.epoch, self.round))
    }

    /// The member at `addr` left or failed. If it sent this node mass in the running epoch,
    /// its contribution and the mass it held are gone: the epoch is not reported, and ends
    /// early, `grace` rounds from now (so that every member hears of the departure before
    /// the next epoch starts) but not before half its rounds.
    pub fn departed(&mut self, addr: SocketAddr, grace: u32) {
        if !self.is_active() || !self.heard_from.contains(&addr) {
            return;
        }
        self.tainted = true;
        let end = self.round.saturating_add(grace).max(self.ripe());
        self.end_at = Some(self.end_at.map_or(end, |e| e.min(end)));
    }

    /// Starts epoch `epoch` at round `round`: settles the running epoch if it converged
    /// untouched, then every mass starts again from this node's own contribution.
    fn restart(&mut self, epoch: u64, round: u32, anchor: bool) {
        if self.is_ripe() {
            for (name, m) in &self.mass {
                let mut e = m.estimate(self.epoch, self.round);
                e.settled = true;
                self.settled.insert(name.clone(), e);
            }
            // A metric nobody holds any more is dropped with its epoch.
            let running: Vec<&String> = self.mass.keys().collect();
            self.settled.retain(|k, _| running.contains(&k));
        }
        self.epoch = epoch;
        self.round = round;
        self.entered = round;
        self.end_at = None;
        self.tainted = false;
        self.heard_from.clear();
        self.anchor = anchor;
        let names: Vec<String> = self.mass.keys().cloned().collect();
        let had_weight: Vec<String> = self
            .mass
            .iter()
            .filter(|(_, m)| m.w > 1e-9)
            .map(|(k, _)| k.clone())
            .collect();
        self.mass.clear();
        for name in names {
            let own = self.own.get(&name).copied();
            let mut m = Mass::EMPTY;
            if let Some(v) = own {
                m = Mass {
                    s: v,
                    w: 1.0,
                    c: 0.0,
                    min: v,
                    max: v,
                };
            }
            if anchor {
                m.c = 1.0;
            }
            // A metric with no contribution here comes back when mass does; the anchor keeps
            // those that still had contributors, and lets the others die with the epoch.
            if own.is_some() || (anchor && had_weight.contains(&name)) {
                self.mass.insert(name, m);
            }
        }
    }

    /// A round: ends the epoch if it is over, then halves every mass and returns the half to
    /// send to one random live member (`None`: nothing to send). `anchor`: whether this node
    /// is the anchor should an epoch start now.
    pub fn tick(&mut self, anchor: impl FnOnce() -> bool) -> Option<Aggregate> {
        self.round = self.round.saturating_add(1);
        if self.round >= self.end_at.unwrap_or(self.epoch_rounds) {
            self.restart(self.epoch.saturating_add(1), 0, anchor());
        }
        if self.mass.is_empty() {
            return None;
        }
        let entries = self
            .mass
            .iter_mut()
            .map(|(name, m)| {
                m.s /= 2.0;
                m.w /= 2.0;
                m.c /= 2.0;
                AggregateMass {
                    name: name.clone(),
                    s: m.s,
                    w: m.w,
                    c: m.c,
                    min: m.min,
                    max: m.max,
                }
            })
            .collect();
        Some(Aggregate {
            epoch: self.epoch,
            round: self.round,
            entries,
        })
    }

    /// Corrects this node's anchor role in the running epoch: a node that took the anchor's
    /// unit of `c` mass while it knew too few members (alone at start, say) gives it back as
    /// negative mass once it learns of a lower-named member, and the rightful anchor adds its
    /// unit. Totals stay exact: push-sum is linear, and negative mass mixes like any other.
    pub fn set_anchor(&mut self, anchor: bool) {
        if anchor == self.anchor || !self.is_active() {
            return;
        }
        let delta = if anchor { 1.0 } else { -1.0 };
        for m in self.mass.values_mut() {
            m.c += delta;
        }
        self.anchor = anchor;
    }

    /// Mass sent that could not go anywhere (no live member): taken back.
    pub fn undo(&mut self, msg: &Aggregate) {
        self.merge_masses(msg);
    }

    /// Takes in a half received from `from`.
    pub fn on_message(&mut self, from: SocketAddr, msg: &Aggregate, anchor: impl FnOnce() -> bool) {
        if msg.epoch < self.epoch {
            self.stale += 1;
            return;
        }
        if msg.epoch > self.epoch || !self.is_active() {
            let round = msg.round.min(self.epoch_rounds.saturating_sub(1));
            self.restart(msg.epoch, round, anchor());
        }
        // Bounded: one entry per member heard from, cleared every epoch.
        if self.heard_from.len() < 1 << 16 {
            self.heard_from.insert(from);
        }
        // Rounds are not aligned within an epoch: taking the furthest round seen would let
        // chains of messages within one interval run the count ahead of time. Whoever ends
        // the epoch first starts the next, and the others follow within O(log N) rounds.
        self.merge_masses(msg);
    }

    fn merge_masses(&mut self, msg: &Aggregate) {
        let anchor = self.anchor;
        for e in &msg.entries {
            let valid =
                [e.s, e.w, e.c].iter().all(|x| x.is_finite()) && !e.min.is_nan() && !e.max.is_nan();
            if !valid {
                continue;
            }
            if let Some(m) = self.entry(&e.name, anchor) {
                m.s += e.s;
                m.w += e.w;
                m.c += e.c;
                m.min = m.min.min(e.min);
                m.max = m.max.max(e.max);
            }
        }
    }
}

/// Whether `me` is the anchor among the live `members` (names, `me` included or not).
pub fn is_anchor<'a>(me: &Name, mut live: impl Iterator<Item = &'a Name>) -> bool {
    live.all(|n| n >= me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 7946))
    }

    /// Runs push-sum among `n` nodes with perfect pairing by a simple LCG: returns the masses.
    fn run(n: usize, rounds: u32, epoch_rounds: u32) -> Vec<Aggregates> {
        let mut nodes: Vec<Aggregates> = (0..n).map(|_| Aggregates::new(epoch_rounds)).collect();
        for (i, a) in nodes.iter_mut().enumerate() {
            a.contribute("load", Some(i as f64), || i == 0).unwrap();
        }
        let mut x: u64 = 7;
        for _ in 0..rounds {
            for i in 0..n {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut j = (x >> 33) as usize % (n - 1);
                if j >= i {
                    j += 1;
                }
                if let Some(m) = nodes[i].tick(|| i == 0) {
                    nodes[j].on_message(addr(i), &m, || j == 0);
                }
            }
        }
        nodes
    }

    #[test]
    fn push_sum_converges_on_average_sum_count_and_extremes() {
        let nodes = run(100, 40, 1000);
        for a in &nodes {
            let e = a.current("load").unwrap();
            assert!((e.average.unwrap() - 49.5).abs() < 1e-3 * 49.5, "{e:?}");
            assert!((e.sum.unwrap() - 4950.0).abs() < 1e-3 * 4950.0, "{e:?}");
            assert!((e.count.unwrap() - 100.0).abs() < 1e-3 * 100.0, "{e:?}");
            assert_eq!((e.min, e.max), (Some(0.0), Some(99.0)));
        }
        // Mass is conserved exactly enough: the totals are the contributions'.
        let s: f64 = nodes.iter().map(|a| a.mass["load"].s).sum();
        assert!((s - 4950.0).abs() < 1e-6);
    }

    #[test]
    fn a_changed_contribution_moves_the_estimate_without_a_restart() {
        let mut nodes = run(20, 30, 1000);
        nodes[5].contribute("load", Some(105.0), || false).unwrap();
        nodes[6].contribute("load", None, || false).unwrap();
        let s: f64 = nodes.iter().map(|a| a.mass["load"].s).sum();
        // 0..20 sums to 190; +100 for node 5, -6 for node 6.
        assert!((s - 284.0).abs() < 1e-9);
        let w: f64 = nodes.iter().map(|a| a.mass["load"].w).sum();
        assert!((w - 19.0).abs() < 1e-9);
    }

    #[test]
    fn epochs_settle_and_restart() {
        let nodes = run(50, 45, 40);
        for a in &nodes {
            assert_eq!(a.epoch(), 1);
            // Five rounds into epoch 1: epoch 0's estimate is reported.
            let e = a.estimate("load").unwrap();
            assert!(e.settled, "{e:?}");
            assert_eq!(e.epoch, 0);
            assert!((e.average.unwrap() - 24.5).abs() < 1e-3 * 24.5, "{e:?}");
        }
    }

    #[test]
    fn a_departure_taints_the_epoch_and_brings_its_end_forward() {
        let mut nodes = run(50, 10, 40);
        // A member nobody heard from in this epoch (it left before): no effect.
        let stranger = SocketAddr::from(([192, 0, 2, 1], 1));
        nodes[0].departed(stranger, 5);
        assert_eq!((nodes[0].end_at, nodes[0].tainted), (None, false));
        for a in &mut nodes {
            // One that sent mass in this epoch: the epoch is tainted and ends early.
            a.heard_from.insert(addr(7));
            a.departed(addr(7), 5);
            assert_eq!(a.end_at, Some(20));
            a.departed(addr(7), 5);
            assert_eq!(
                a.end_at,
                Some(20),
                "a second departure does not push it later"
            );
        }
        let e = nodes[0].estimate("load").unwrap();
        assert!(!e.settled, "a tainted epoch is never reported as settled");
        for _ in 0..10 {
            for a in &mut nodes {
                a.tick(|| false);
            }
        }
        assert!(nodes.iter().all(|a| a.epoch() == 1 && !a.tainted));
        assert!(nodes.iter().all(|a| a.settled.is_empty()));
    }

    #[test]
    fn a_wrong_anchor_gives_its_unit_back() {
        // Two nodes both believe they are the anchor (each alone when it started).
        let mut nodes: Vec<Aggregates> = (0..2).map(|_| Aggregates::new(1000)).collect();
        nodes[0].contribute("x", Some(2.0), || true).unwrap();
        nodes[1].contribute("x", Some(4.0), || true).unwrap();
        nodes[1].set_anchor(false);
        for _ in 0..40 {
            for i in 0..2 {
                if let Some(m) = nodes[i].tick(|| i == 0) {
                    nodes[1 - i].on_message(addr(i), &m, || 1 - i == 0);
                }
            }
        }
        for a in &nodes {
            let e = a.current("x").unwrap();
            assert!((e.count.unwrap() - 2.0).abs() < 1e-9, "{e:?}");
            assert!((e.sum.unwrap() - 6.0).abs() < 1e-9, "{e:?}");
        }
    }

    #[test]
    fn stale_and_bad_input_is_ignored() {
        let mut a = Aggregates::new(10);
        a.contribute("x", Some(1.0), || false).unwrap();
        a.restart(3, 0, false);
        let old = Aggregate {
            epoch: 2,
            round: 0,
            entries: vec![AggregateMass {
                name: "x".into(),
                s: 5.0,
                w: 1.0,
                c: 0.0,
                min: 5.0,
                max: 5.0,
            }],
        };
        a.on_message(addr(1), &old, || false);
        assert_eq!(a.stale, 1);
        let mut bad = old.clone();
        bad.epoch = 3;
        bad.entries[0].s = f64::NAN;
        a.on_message(addr(1), &bad, || false);
        assert_eq!(a.current("x").unwrap().average, Some(1.0));
        assert_eq!(
            a.contribute("x", Some(f64::INFINITY), || false),
            Err(AggregateError::NotFinite(f64::INFINITY))
        );
        assert_eq!(
            a.contribute("", Some(1.0), || false),
            Err(AggregateError::BadName)
        );
    }

    #[test]
    fn the_anchor_is_the_lowest_name() {
        let names: Vec<Name> = ["b", "c", "a"]
            .iter()
            .map(|s| Name::new(s).unwrap())
            .collect();
        assert!(is_anchor(&names[2], names.iter()));
        assert!(!is_anchor(&names[0], names.iter()));
    }
}
