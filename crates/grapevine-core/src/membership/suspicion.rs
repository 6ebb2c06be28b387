//! A suspicion timer whose timeout shrinks with independent confirmations (Lifeguard).
//!
//! timeout(c) = max(min, max − (max − min) · ln(c + 1) / ln(k + 1)) for c confirmations
//! out of k expected. A fresh suspicion waits `max`, giving a slow or partitioned
//! accuser's word little weight; once k others agree it waits only `min`.

use crate::name::Name;
use crate::time::Time;
use std::time::Duration;

/// The suspicions a node holds, by member.
pub(crate) type Suspicions = hashbrown::HashMap<Name, Suspicion>;

/// One suspicion of one member.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    pub incarnation: u32,
    start: Time,
    min: Duration,
    max: Duration,
    k: u32,
    confirmations: Vec<Name>,
    deadline: Time,
    /// Whether the deadline waits for a last-chance probe.
    postponed: bool,
}

impl Suspicion {
    pub fn new(
        incarnation: u32,
        accuser: Name,
        start: Time,
        min: Duration,
        max: Duration,
        k: u32,
    ) -> Self {
        let mut s = Suspicion {
            incarnation,
            start,
            min,
            max: max.max(min),
            k,
            confirmations: vec![accuser],
            deadline: start,
            postponed: false,
        };
        s.deadline = start + s.timeout();
        s
    }

    /// How it stands at `now`, for people.
    pub fn view(&self, member: &Name, now: Time) -> crate::inspect::SuspicionView {
        crate::inspect::SuspicionView {
            member: member.clone(),
            incarnation: self.incarnation,
            age: now.saturating_since(self.start),
            remaining: (self.deadline != Time::MAX).then(|| self.deadline.saturating_since(now)),
            confirmations: self.confirmations(),
            expected: self.k,
        }
    }

    /// Confirmations beyond the first accuser.
    fn confirmations(&self) -> u32 {
        (self.confirmations.len() as u32).saturating_sub(1)
    }

    fn timeout(&self) -> Duration {
        if self.k == 0 {
            return self.min;
        }
        let c = f64::from(self.confirmations().min(self.k));
        let frac = (c + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let t = self.max.as_secs_f64() - span * frac;
        Duration::from_secs_f64(t.max(self.min.as_secs_f64()))
    }

    /// Records a confirmation from `from`; true if it was new and counted (then it is worth
    /// re-gossiping, so others shorten their timers too).
    pub fn confirm(&mut self, from: &Name) -> bool {
        if self.confirmations() >= self.k || self.confirmations.iter().any(|n| n == from) {
            return false;
        }
        self.confirmations.push(from.clone());
        // Once a last-chance probe is owed or running, its outcome decides: a confirmation
        // arriving meanwhile must not cut it short.
        if !self.postponed {
            self.deadline = self.start + self.timeout();
        }
        true
    }

    /// Whether, at its deadline, the suspicion deserves one more probe before it becomes a
    /// death: fewer than k others confirmed it, and no such probe is owed or running yet.
    /// An earlier failed probe of this node's does not settle it: under heavy loss that is
    /// weak evidence, and the suspect's denial may have missed only this node.
    pub fn wants_last_chance(&self) -> bool {
        !self.postponed && self.confirmations() < self.k
    }

    /// Holds the verdict until the last-chance probe has run.
    pub fn await_last_chance(&mut self) {
        self.postponed = true;
        self.deadline = Time::MAX;
    }

    /// The deadline came while a probe of the suspect runs until `end`: its outcome decides.
    pub fn await_probe(&mut self, end: Time) {
        self.postponed = true;
        self.deadline = end;
    }

    /// A probe of the suspect starts, ending at `end`.
    pub fn probing(&mut self, end: Time) {
        if self.postponed && self.deadline == Time::MAX {
            // The awaited last-chance probe: should its end go unnoticed, the verdict still
            // comes. (A verdict already due, after a failed probe, is not put off by the next
            // probe: with one other member, every probe is of the suspect.)
            self.deadline = end;
        }
    }

    /// The last-chance probe failed: the suspicion is due now.
    pub fn last_chance_failed(&mut self, now: Time) {
        if self.postponed {
            self.deadline = now;
        }
    }

    /// The suspect answered a probe: it is alive, and its refutation is on its way (the
    /// probe told it it was suspected). Wait another minimum timeout for it, and probe again
    /// before declaring anything.
    pub fn answered(&mut self, now: Time) {
        let wait = now + self.min;
        self.deadline = if self.postponed {
            wait
        } else {
            self.deadline.max(wait)
        };
        self.postponed = false;
    }

    pub fn deadline(&self) -> Time {
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn timeout_shrinks_from_max_to_min_with_confirmations() {
        let min = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        let mut s = Suspicion::new(1, n("a"), Time::ZERO, min, max, 3);
        assert_eq!(s.deadline(), Time::ZERO + max);
        assert!(s.confirm(&n("b")));
        assert!(!s.confirm(&n("b")), "the same confirmer counts once");
        assert!(!s.confirm(&n("a")), "the accuser does not confirm itself");
        let after_one = s.deadline();
        assert!(after_one < Time::ZERO + max && after_one > Time::ZERO + min);
        assert!(s.confirm(&n("c")));
        assert!(s.confirm(&n("d")));
        assert_eq!(s.deadline(), Time::ZERO + min);
        assert!(!s.confirm(&n("e")), "past k confirmations nothing changes");
    }

    #[test]
    fn a_confirmation_does_not_cut_a_last_chance_probe_short() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(6));
        let mut s = Suspicion::new(1, n("a"), Time::ZERO, min, max, 3);
        assert!(s.wants_last_chance());
        s.await_last_chance();
        let end = Time::ZERO + Duration::from_secs(7);
        s.probing(end);
        assert!(s.confirm(&n("b")));
        assert_eq!(s.deadline(), end, "the probe's end still decides");
        s.last_chance_failed(Time::ZERO + Duration::from_millis(6500));
        assert_eq!(s.deadline(), Time::ZERO + Duration::from_millis(6500));
    }

    #[test]
    fn a_probe_running_at_the_deadline_decides() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(6));
        let mut s = Suspicion::new(1, n("a"), Time::ZERO, min, max, 3);
        // Probed once already, and again when the deadline comes.
        s.probing(Time::ZERO + Duration::from_secs(2));
        let end = Time::ZERO + Duration::from_millis(6300);
        s.await_probe(end);
        assert_eq!(s.deadline(), end);
        s.answered(Time::ZERO + Duration::from_millis(6100));
        assert_eq!(s.deadline(), Time::ZERO + Duration::from_millis(7100));
        // Probed again at that deadline, and this probe fails: the verdict is due, and the
        // next probe, begun at once, does not put it off.
        let end = Time::ZERO + Duration::from_millis(7600);
        s.await_probe(end);
        s.last_chance_failed(end);
        s.probing(end + Duration::from_millis(500));
        assert_eq!(s.deadline(), end);
    }

    #[test]
    fn zero_k_means_fixed_timeout() {
        let s = Suspicion::new(
            1,
            n("a"),
            Time::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(30),
            0,
        );
        assert_eq!(s.deadline(), Time::ZERO + Duration::from_secs(5));
    }
}
