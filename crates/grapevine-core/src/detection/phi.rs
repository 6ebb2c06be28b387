//! Phi-accrual failure detection (Hayashibara et al., 2004) on heartbeat arrivals, the way
//! Cassandra does it: each member's heartbeat counter, spread with its per-node state, is
//! watched for growth; the intervals between growths are kept in a sliding window, and the
//! suspicion level of a silence of `t` is φ = t / (mean interval · ln 10): the minus log10 of
//! the probability that an exponentially distributed interval lasts that long. A member is
//! convicted when φ passes the threshold (8 in Cassandra: a silence of about 18 mean
//! intervals).

use crate::name::Name;
use crate::time::Time;
use std::collections::{HashMap, VecDeque};

/// Intervals kept per member.
const WINDOW: usize = 100;

/// Arrival intervals of one member's heartbeats.
#[derive(Clone, Debug)]
struct Window {
    intervals: VecDeque<u64>,
    sum: u64,
    last: Time,
}

/// The detector: per member, the recent intervals between heartbeat arrivals.
#[derive(Clone, Debug)]
pub(crate) struct PhiDetector {
    windows: HashMap<Name, Window>,
    /// The mean interval assumed until two intervals are known (Cassandra's initial value,
    /// twice the heartbeat interval): a member that dies right after its first heartbeat is
    /// still convicted, if more slowly.
    prior_micros: f64,
}

impl PhiDetector {
    /// A detector for heartbeats sent every `heartbeat_interval`.
    pub fn new(heartbeat_interval: std::time::Duration) -> Self {
        PhiDetector {
            windows: HashMap::new(),
            prior_micros: 2.0 * heartbeat_interval.as_micros() as f64,
        }
    }

    /// A heartbeat of `name` that is new to us arrived at `now`.
    pub fn report(&mut self, name: &Name, now: Time) {
        match self.windows.get_mut(name) {
            Some(w) => {
                let interval = now.saturating_since(w.last).as_micros() as u64;
                w.last = now;
                if interval == 0 {
                    return;
                }
                w.intervals.push_back(interval);
                w.sum += interval;
                if w.intervals.len() > WINDOW {
                    if let Some(old) = w.intervals.pop_front() {
                        w.sum -= old;
                    }
                }
            }
            None => {
                self.windows.insert(
                    name.clone(),
                    Window {
                        intervals: VecDeque::new(),
                        sum: 0,
                        last: now,
                    },
                );
            }
        }
    }

    /// φ for `name` at `now` (zero for a member never heard; the prior mean until two
    /// intervals are known).
    pub fn phi(&self, name: &Name, now: Time) -> f64 {
        let Some(w) = self.windows.get(name) else {
            return 0.0;
        };
        let mean = if w.intervals.len() < 2 {
            self.prior_micros
        } else {
            w.sum as f64 / w.intervals.len() as f64
        };
        let t = now.saturating_since(w.last).as_micros() as f64;
        t / (mean * std::f64::consts::LN_10)
    }

    /// Members whose φ at `now` exceeds `threshold`, sorted.
    pub fn over(&self, threshold: f64, now: Time) -> Vec<Name> {
        let mut out: Vec<Name> = self
            .windows
            .keys()
            .filter(|n| self.phi(n, now) > threshold)
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Forgets `name` (it left, died or was convicted: its next heartbeat starts afresh).
    pub fn forget(&mut self, name: &Name) {
        self.windows.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phi_grows_with_silence_in_units_of_the_mean_interval() {
        let mut d = PhiDetector::new(Duration::from_secs(1));
        let n = Name::new("a").unwrap();
        let mut t = Time::ZERO;
        for _ in 0..10 {
            d.report(&n, t);
            t = t + Duration::from_secs(1);
        }
        let last = t - Duration::from_secs(1);
        // One mean interval of silence: φ = 1 / ln 10.
        let phi = d.phi(&n, last + Duration::from_secs(1));
        assert!((phi - 1.0 / std::f64::consts::LN_10).abs() < 1e-9);
        // Cassandra's threshold 8 is crossed after 8 · ln 10 ≈ 18.4 intervals.
        assert!(d.over(8.0, last + Duration::from_secs(18)).is_empty());
        assert_eq!(d.over(8.0, last + Duration::from_secs(19)), vec![n.clone()]);
        d.forget(&n);
        assert_eq!(d.phi(&n, last + Duration::from_secs(100)), 0.0);
    }

    #[test]
    fn a_member_heard_once_is_judged_by_the_prior_interval() {
        let mut d = PhiDetector::new(Duration::from_secs(1));
        let n = Name::new("a").unwrap();
        d.report(&n, Time::ZERO);
        // Prior mean 2 s: φ = t / (2 s · ln 10) passes 8 after about 36.8 s.
        assert!(d.over(8.0, Time::ZERO + Duration::from_secs(36)).is_empty());
        assert_eq!(d.over(8.0, Time::ZERO + Duration::from_secs(37)), vec![n]);
    }
}
