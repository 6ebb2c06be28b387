//! Rumour mongering for user events: broadcasts that are not state (Demers et al., 1987).
//!
//! A node that hears a new event becomes infective: it pushes the event at once, then at
//! each rumour tick (the gossip interval), to `rumor_fanout` random members, until it loses interest by the configured rule:
//! feedback or blind (whether a recipient's "I knew it" counts), counter or coin (after `k`
//! counted contacts in a row, or with probability 1/k at each). Events are deduplicated by
//! id for their time to live, and stop spreading once older than it or after `max_hops`
//! forwards.

pub(crate) mod messages;
pub(crate) mod mongering;

use crate::name::Name;
use crate::rumor::messages::UserEvent;
use crate::time::Time;
use rand::Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// When an infective node loses interest.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RumorStop {
    /// After `k` counted contacts in a row.
    Counter,
    /// With probability 1/k at each counted contact.
    Coin,
}

/// The most event ids remembered for deduplication: the oldest are forgotten first.
const MAX_SEEN: usize = 100_000;

/// An event this node is spreading, and its count of counted contacts.
#[derive(Clone, Debug)]
struct Infective {
    event: UserEvent,
    count: u32,
}

/// The rumours of one node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rumors {
    infective: BTreeMap<u64, Infective>,
    seen: HashMap<u64, Time>,
    seen_order: VecDeque<(Time, u64)>,
    seq: u32,
}

/// The rumour rules, from the configuration.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Rules {
    pub feedback: bool,
    pub stop: RumorStop,
    pub k: u32,
    pub ttl: std::time::Duration,
    pub max_hops: u8,
}

impl Rumors {
    /// A new event's id: the origin's name hash and a sequence number.
    pub fn next_id(&mut self, origin: &Name) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        origin.hash64().rotate_left(32) ^ u64::from(self.seq)
    }

    /// Whether an event is still infective.
    #[cfg(test)]
    pub fn is_spreading(&self, id: u64) -> bool {
        self.infective.contains_key(&id)
    }

    /// Whether an event was seen (and is still remembered).
    pub fn knows(&self, id: u64) -> bool {
        self.seen.contains_key(&id)
    }

    /// Events being spread.
    pub fn spreading(&self) -> usize {
        self.infective.len()
    }

    /// Takes in an event, local or received at `now`; returns whether it was new.
    pub fn receive(&mut self, event: &UserEvent, now: Time, rules: &Rules) -> bool {
        if self.seen.contains_key(&event.id) {
            return false;
        }
        self.seen.insert(event.id, now);
        self.seen_order.push_back((now, event.id));
        while self.seen_order.len() > MAX_SEEN {
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
        if event.hops < rules.max_hops {
            self.infective.insert(
                event.id,
                Infective {
                    event: event.clone(),
                    count: 0,
                },
            );
        }
        true
    }

    /// The events to push this tick, each to one partner (called once per partner), hops
    /// counted. Blind rules count every push.
    pub fn next_push<R: Rng>(&mut self, rules: &Rules, rng: &mut R) -> Vec<UserEvent> {
        let out: Vec<UserEvent> = self
            .infective
            .values()
            .map(|i| UserEvent {
                hops: i.event.hops.saturating_add(1),
                ..i.event.clone()
            })
            .collect();
        if !rules.feedback {
            let ids: Vec<u64> = self.infective.keys().copied().collect();
            for id in ids {
                self.count(id, true, rules, rng);
            }
        }
        out
    }

    /// A recipient's answer to a push: whether it already knew the event.
    pub fn feedback<R: Rng>(&mut self, id: u64, knew: bool, rules: &Rules, rng: &mut R) {
        if rules.feedback {
            self.count(id, knew, rules, rng);
        }
    }

    fn count<R: Rng>(&mut self, id: u64, counted: bool, rules: &Rules, rng: &mut R) {
        let Some(i) = self.infective.get_mut(&id) else {
            return;
        };
        if !counted {
            i.count = 0;
            return;
        }
        i.count += 1;
        let lose = match rules.stop {
            RumorStop::Counter => i.count >= rules.k,
            RumorStop::Coin => rng.gen_range(0..rules.k.max(1)) == 0,
        };
        if lose {
            self.infective.remove(&id);
        }
    }

    /// Stops spreading events older than the time to live, and forgets their ids.
    pub fn expire(&mut self, now: Time, rules: &Rules) {
        while let Some(&(at, id)) = self.seen_order.front() {
            if now.saturating_since(at) < rules.ttl {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
            self.infective.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;
    use std::time::Duration;

    fn rules(feedback: bool, stop: RumorStop, k: u32) -> Rules {
        Rules {
            feedback,
            stop,
            k,
            ttl: Duration::from_secs(60),
            max_hops: 10,
        }
    }

    fn event(id: u64, hops: u8) -> UserEvent {
        UserEvent {
            id,
            origin: Name::new("o").unwrap(),
            name: "deploy".into(),
            payload: vec![1],
            hops,
            feedback: true,
        }
    }

    #[test]
    fn duplicates_are_dropped_and_counters_stop_after_k_unnecessary_contacts() {
        let mut r = Rumors::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let rl = rules(true, RumorStop::Counter, 2);
        assert!(r.receive(&event(7, 0), Time::ZERO, &rl));
        assert!(!r.receive(&event(7, 3), Time::ZERO, &rl));
        r.feedback(7, true, &rl, &mut rng);
        r.feedback(7, false, &rl, &mut rng); // a necessary contact restarts the count
        r.feedback(7, true, &rl, &mut rng);
        assert!(r.is_spreading(7));
        r.feedback(7, true, &rl, &mut rng);
        assert!(!r.is_spreading(7));
    }

    #[test]
    fn blind_counters_count_pushes_and_hops_and_time_bound_the_spread() {
        let mut r = Rumors::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let rl = rules(false, RumorStop::Counter, 3);
        r.receive(&event(1, 0), Time::ZERO, &rl);
        for _ in 0..3 {
            assert_eq!(r.next_push(&rl, &mut rng).len(), 1);
        }
        assert!(r.next_push(&rl, &mut rng).is_empty());
        // At the hop limit an event is delivered but not forwarded.
        assert!(r.receive(&event(2, 10), Time::ZERO, &rl));
        assert!(!r.is_spreading(2));
        // Past the time to live it is forgotten, and would be taken as new again.
        r.receive(&event(3, 0), Time::ZERO, &rl);
        r.expire(Time::ZERO + Duration::from_secs(61), &rl);
        assert!(!r.is_spreading(3));
        assert!(r.receive(&event(3, 0), Time::ZERO + Duration::from_secs(61), &rl));
    }
}
