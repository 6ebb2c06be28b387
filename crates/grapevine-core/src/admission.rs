//! Rate limits on what strangers and single sources can add: token buckets per source and
//! in all, bounded in number, on protocol time.
//!
//! Gossip is unauthenticated in an unencrypted cluster: a datagram's source is whoever
//! sent it, and a relayed `alive` names a member the relayer merely heard of. What one
//! source can make a node take in per second is therefore capped: new members (10,000
//! fabricated ones would otherwise bury the real members in the probe order and blind
//! failure detection), and user events (a flood would otherwise spread cluster-wide and run
//! every handler). Legitimate bursts beyond the caps still converge: a refused addition
//! makes the node catch up by anti-entropy with a member, which brings it the real ones.

use crate::time::Time;
use hashbrown::HashMap;
use std::hash::Hash;

/// A rate: a burst and a sustained rate per second.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Rate {
    /// Tokens a source starts with and can save up.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Rate {
    /// A rate of `burst` at once and `per_second` after.
    pub const fn new(burst: u32, per_second: f64) -> Self {
        Rate { burst, per_second }
    }
}

/// One token bucket.
#[derive(Copy, Clone, Debug)]
struct Bucket {
    tokens: f64,
    at: Time,
}

impl Bucket {
    fn full(rate: Rate, now: Time) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn take(&mut self, rate: Rate, now: Time) -> bool {
        let dt = now.saturating_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * rate.per_second).min(f64::from(rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether it has refilled completely by `now` (and can be forgotten).
    fn is_full(&self, rate: Rate, now: Time) -> bool {
        let dt = now.saturating_since(self.at).as_secs_f64();
        self.tokens + dt * rate.per_second >= f64::from(rate.burst)
    }
}

/// The most sources tracked at once; past it, full buckets are forgotten, and if none is,
/// unknown sources share the total budget only.
const MAX_SOURCES: usize = 4096;

/// A token budget per source and one in all.
#[derive(Clone, Debug)]
pub struct Limiter<K> {
    per_source: Rate,
    total_rate: Rate,
    sources: HashMap<K, Bucket>,
    total: Bucket,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// Budgets of `per_source` for each source and `total` for all, full at `now`.
    pub fn new(per_source: Rate, total: Rate, now: Time) -> Self {
        Limiter {
            per_source,
            total_rate: total,
            sources: HashMap::new(),
            total: Bucket::full(total, now),
        }
    }

    /// Takes one token from `source`'s budget and the total; false if either is spent.
    pub fn allow(&mut self, source: &K, now: Time) -> bool {
        if !self.sources.contains_key(source) && self.sources.len() >= MAX_SOURCES {
            let rate = self.per_source;
            self.sources.retain(|_, b| !b.is_full(rate, now));
        }
        let per_source = self.per_source;
        let room = self.sources.len() < MAX_SOURCES;
        let ok = match self.sources.get_mut(source) {
            Some(b) => b.take(per_source, now),
            None if room => {
                let mut b = Bucket::full(per_source, now);
                let ok = b.take(per_source, now);
                self.sources.insert(source.clone(), b);
                ok
            }
            // Every slot holds a source still spending: a newcomer gets nothing of its own.
            None => false,
        };
        if !ok {
            return false;
        }
        if self.total.take(self.total_rate, now) {
            return true;
        }
        // Refused by the total: the source keeps its token.
        if let Some(b) = self.sources.get_mut(source) {
            b.tokens += 1.0;
        }
        false
    }

    /// Forgets sources whose budget has refilled (call now and then).
    pub fn tidy(&mut self, now: Time) {
        let rate = self.per_source;
        self.sources.retain(|_, b| !b.is_full(rate, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_the_total_caps_all() {
        let t0 = Time::ZERO;
        let mut l: Limiter<u32> = Limiter::new(Rate::new(4, 1.0), Rate::new(6, 2.0), t0);
        assert_eq!((0..10).filter(|_| l.allow(&1, t0)).count(), 4);
        // Another source has its own budget, but the total has only 2 tokens left.
        assert_eq!((0..10).filter(|_| l.allow(&2, t0)).count(), 2);
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.allow(&1, t1), "a token per second");
        assert!(!l.allow(&1, t1));
        l.tidy(t0 + Duration::from_secs(60));
        assert!(l.sources.is_empty());
    }
}
