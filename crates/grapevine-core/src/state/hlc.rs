//! Hybrid logical clocks (Kulkarni, Demirbas et al., 2014): timestamps that follow
//! physical time, never go backwards, and exceed every timestamp a node has seen, so
//! last-write-wins orders a write after every write its writer had observed, even when
//! physical clocks are skewed.

use std::fmt;
use std::time::Duration;

/// A hybrid timestamp: physical microseconds (since the UNIX epoch in a real cluster) and a
/// logical counter that orders events within one microsecond. Ordered by both, in turn.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Physical time, in microseconds.
    pub physical: u64,
    /// Events at the same physical time, in order.
    pub logical: u32,
}

impl Timestamp {
    /// A timestamp at `physical` microseconds with logical count `logical`.
    pub const fn new(physical: u64, logical: u32) -> Self {
        Timestamp { physical, logical }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical, self.logical)
    }
}

/// Why a remote timestamp was not taken into the clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote clock is further ahead of ours than the tolerated drift: taking it would
    /// drag every later local timestamp into the future.
    #[error("remote timestamp {remote} is {ahead_micros} µs ahead of local physical time, over the {max_drift_micros} µs tolerated")]
    TooFarAhead {
        /// The timestamp received.
        remote: Timestamp,
        /// How far ahead of our physical clock it is.
        ahead_micros: u64,
        /// The tolerance.
        max_drift_micros: u64,
    },
}

/// A node's hybrid logical clock.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_drift_micros: u64,
}

impl Hlc {
    /// A clock that refuses remote timestamps more than `max_drift` ahead of local time.
    pub fn new(max_drift: Duration) -> Self {
        Hlc {
            last: Timestamp::default(),
            max_drift_micros: u64::try_from(max_drift.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A timestamp for a local event at physical time `physical`: later than every
    /// timestamp issued or observed before.
    pub fn now(&mut self, physical: u64) -> Timestamp {
        self.last = if physical > self.last.physical {
            Timestamp::new(physical, 0)
        } else {
            Self::bump(self.last)
        };
        self.last
    }

    /// Takes in a timestamp received at physical time `physical`, so later local timestamps
    /// exceed it; returns the clock's new reading.
    pub fn observe(&mut self, remote: Timestamp, physical: u64) -> Result<Timestamp, ClockError> {
        let ahead = remote.physical.saturating_sub(physical);
        if ahead > self.max_drift_micros {
            return Err(ClockError::TooFarAhead {
                remote,
                ahead_micros: ahead,
                max_drift_micros: self.max_drift_micros,
            });
        }
        let top = physical.max(self.last.physical).max(remote.physical);
        self.last = if top == physical && top > self.last.physical && top > remote.physical {
            Timestamp::new(top, 0)
        } else {
            let logical = match (top == self.last.physical, top == remote.physical) {
                (true, true) => self.last.logical.max(remote.logical),
                (true, false) => self.last.logical,
                (false, true) => remote.logical,
                (false, false) => 0,
            };
            Self::bump(Timestamp::new(top, logical))
        };
        Ok(self.last)
    }

    /// The next timestamp after `t` at the same physical time, or the next microsecond if
    /// the logical counter is exhausted.
    fn bump(t: Timestamp) -> Timestamp {
        match t.logical.checked_add(1) {
            Some(l) => Timestamp::new(t.physical, l),
            None => Timestamp::new(t.physical.saturating_add(1), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_timestamps_increase_even_when_the_clock_stalls_or_steps_back() {
        let mut c = Hlc::new(Duration::from_secs(60));
        let a = c.now(1_000);
        let b = c.now(1_000);
        let d = c.now(900);
        let e = c.now(2_000);
        assert!(a < b && b < d && d < e);
        assert_eq!(e, Timestamp::new(2_000, 0));
    }

    #[test]
    fn observed_timestamps_are_exceeded() {
        let mut c = Hlc::new(Duration::from_secs(60));
        c.now(1_000);
        // A peer 500 µs ahead: our next timestamps come after its.
        let remote = Timestamp::new(1_500, 7);
        let seen = c.observe(remote, 1_010).unwrap();
        assert!(seen > remote);
        assert!(c.now(1_020) > remote);
        // Once physical time passes it, the logical part resets.
        assert_eq!(c.now(1_600), Timestamp::new(1_600, 0));
    }

    #[test]
    fn a_clock_too_far_ahead_is_refused_and_leaves_ours_alone() {
        let mut c = Hlc::new(Duration::from_millis(1));
        let before = c.now(10_000);
        let far = Timestamp::new(10_000 + 5_000, 0);
        assert_eq!(
            c.observe(far, 10_000),
            Err(ClockError::TooFarAhead {
                remote: far,
                ahead_micros: 5_000,
                max_drift_micros: 1_000
            })
        );
        assert_eq!(c.last(), before);
    }

    #[test]
    fn the_logical_counter_rolls_into_the_next_microsecond() {
        let mut c = Hlc::new(Duration::from_secs(1));
        c.observe(Timestamp::new(5, u32::MAX), 5).unwrap();
        assert_eq!(c.last(), Timestamp::new(6, 0));
    }
}
