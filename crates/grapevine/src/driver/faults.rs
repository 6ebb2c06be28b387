//! Faults injected on purpose, for operators' drills and tests: a share of datagrams
//! dropped, a delay added to datagrams sent, and members cut off (every datagram and frame
//! to or from their addresses dropped). Each ends by itself at its expiry, checked here on
//! every packet, so a fault cannot outlive it even if whoever set it forgets.

use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The longest delay a drill may add: longer ones would only hold memory.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Datagrams held for a delay at once, at most; past it they are dropped (and counted).
pub const MAX_DELAYED: usize = 4096;

/// The faults in force, each with its expiry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Drop this share (0 to 1) of datagrams, both ways, until the instant.
    pub drop: Option<(f64, Instant)>,
    /// Hold each datagram sent this long before sending it, until the instant.
    pub delay: Option<(Duration, Instant)>,
    /// Drop every datagram and frame to or from these addresses, each until its instant.
    pub cut: Vec<(SocketAddr, Instant)>,
}

impl Faults {
    /// Forgets what has expired; whether anything is left.
    pub fn prune(&mut self, now: Instant) -> bool {
        if self.drop.is_some_and(|(_, until)| until <= now) {
            self.drop = None;
        }
        if self.delay.is_some_and(|(_, until)| until <= now) {
            self.delay = None;
        }
        self.cut.retain(|(_, until)| *until > now);
        self.drop.is_some() || self.delay.is_some() || !self.cut.is_empty()
    }

    /// Whether traffic with `peer` is cut off at `now`.
    pub fn is_cut(&self, peer: SocketAddr, now: Instant) -> bool {
        self.cut.iter().any(|(a, until)| *a == peer && *until > now)
    }

    /// Whether to drop this datagram (to or from `peer`) at `now`.
    pub fn drops(&self, peer: SocketAddr, now: Instant, rng: &mut impl Rng) -> bool {
        self.is_cut(peer, now)
            || self
                .drop
                .is_some_and(|(share, until)| until > now && rng.gen_bool(share.clamp(0.0, 1.0)))
    }

    /// The delay to add to a datagram sent at `now`.
    pub fn delay(&self, now: Instant) -> Option<Duration> {
        self.delay
            .filter(|(_, until)| *until > now)
            .map(|(d, _)| d.min(MAX_DELAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_end_at_their_expiry() {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut f = Faults {
            drop: Some((1.0, now + Duration::from_secs(1))),
            delay: Some((Duration::from_secs(60), now + Duration::from_secs(1))),
            cut: vec![(peer, now + Duration::from_secs(2))],
        };
        let mut rng = rand::thread_rng();
        assert!(f.drops("127.0.0.1:2".parse().unwrap(), now, &mut rng));
        assert_eq!(f.delay(now), Some(MAX_DELAY), "capped");
        let later = now + Duration::from_millis(1500);
        assert!(!f.drops("127.0.0.1:2".parse().unwrap(), later, &mut rng));
        assert!(f.is_cut(peer, later));
        assert!(f.prune(later));
        assert!(!f.prune(now + Duration::from_secs(3)));
        assert_eq!(f, Faults::default());
    }
}
