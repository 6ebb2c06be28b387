//! Lifeguard's local health awareness: a node that misses its own deadlines slows down.
//!
//! A score from 0 (healthy) to `max - 1` rises when probes fail without the nacks
//! that would prove the network alive, or when this node must refute an accusation,
//! and falls with every successful probe. Probe interval and timeout are multiplied
//! by `score + 1`, so an overloaded node stops accusing healthy peers.

use std::time::Duration;

/// The local health score.
#[derive(Clone, Debug)]
pub(crate) struct Awareness {
    max: u32,
    score: u32,
}

impl Awareness {
    pub fn new(max: u32) -> Self {
        Awareness {
            max: max.max(1),
            score: 0,
        }
    }

    pub fn apply(&mut self, delta: i32) {
        let s = i64::from(self.score) + i64::from(delta);
        self.score = s.clamp(0, i64::from(self.max - 1)) as u32;
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_clamped_and_scales() {
        let mut a = Awareness::new(8);
        a.apply(-3);
        assert_eq!(a.score(), 0);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(
            a.scale(Duration::from_millis(500)),
            Duration::from_millis(4000)
        );
        a.apply(-1);
        assert_eq!(a.score(), 6);
    }
}
