//! The transmit-limited dissemination queue that gossip piggybacks on every packet.
//!
//! Each broadcast is keyed by the member it is about, so a newer update invalidates
//! the older one; packets take the least-sent broadcasts first (newest first among
//! equals), and a broadcast is dropped once sent `limit` times.
//!
//! Broadcasts sit in one list per transmit count. Sending one moves it to the next
//! list; replacing one leaves a stale copy behind that is skipped and dropped when
//! reached. Every operation is O(1) amortised, which matters when a whole cluster
//! starts at once and every packet carries dozens of broadcasts.

use crate::name::Name;
use crate::wire::PacketBuilder;
use hashbrown::HashMap;
use std::collections::VecDeque;

struct Item {
    id: u64,
    about: Name,
    framed: Box<[u8]>,
    /// How many times the usual limit this broadcast is sent.
    factor: u32,
}

pub(crate) struct BroadcastQueue {
    /// `by_sends[t]`: broadcasts sent `t` times, oldest at the front.
    by_sends: Vec<VecDeque<Item>>,
    /// The id of the current broadcast about each member.
    current: HashMap<Name, u64>,
    next_id: u64,
    max: usize,
}

impl BroadcastQueue {
    pub fn new(max: usize) -> Self {
        BroadcastQueue {
            by_sends: Vec::new(),
            current: HashMap::new(),
            next_id: 0,
            max: max.max(1),
        }
    }

    /// Live broadcasts (stale copies excluded).
    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn is_current(&self, item: &Item) -> bool {
        self.current.get(&item.about) == Some(&item.id)
    }

    /// Queues a framed message about `about`, replacing any older one about it.
    pub fn push(&mut self, about: Name, framed: Vec<u8>) {
        self.push_repeated(about, framed, 1);
    }

    /// Queues like [`push`](Self::push), to be sent `factor` times the usual limit.
    pub fn push_repeated(&mut self, about: Name, framed: Vec<u8>, factor: u32) {
        self.next_id += 1;
        let id = self.next_id;
        self.current.insert(about.clone(), id);
        if self.by_sends.is_empty() {
            self.by_sends.push(VecDeque::new());
        }
        self.by_sends[0].push_back(Item {
            id,
            about,
            framed: framed.into_boxed_slice(),
            factor: factor.max(1),
        });
        while self.current.len() > self.max {
            // The most-sent, oldest broadcast has done the most of its work already.
            self.evict_one();
        }
    }

    fn evict_one(&mut self) {
        for t in (0..self.by_sends.len()).rev() {
            while let Some(item) = self.by_sends[t].pop_front() {
                if self.is_current(&item) {
                    self.current.remove(&item.about);
                    return;
                }
            }
        }
    }

    /// Moves as many broadcasts as fit into `packet`, counting a transmission for each.
    pub fn fill(&mut self, packet: &mut PacketBuilder, limit: u32) -> usize {
        let mut sent = 0;
        let mut moved: Vec<(usize, Item)> = Vec::new();
        'outer: for t in 0..self.by_sends.len() {
            // Newest first among equally-sent broadcasts.
            while let Some(item) = self.by_sends[t].pop_back() {
                if !self.is_current(&item) {
                    continue;
                }
                if packet.push_framed(&item.framed) {
                    sent += 1;
                    moved.push((t + 1, item));
                } else {
                    self.by_sends[t].push_back(item);
                    if packet.remaining() < 32 {
                        break 'outer;
                    }
                    // This one is large; older ones of the same count may still fit, but
                    // not worth a scan: the next packet will take them.
                    break;
                }
            }
        }
        // Re-queue in reverse so that, within a count, the newest stays at the back.
        for (t, item) in moved.into_iter().rev() {
            if t as u32 >= limit.saturating_mul(item.factor) {
                self.current.remove(&item.about);
                continue;
            }
            while self.by_sends.len() <= t {
                self.by_sends.push(VecDeque::new());
            }
            self.by_sends[t].push_front(item);
        }
        if self.current.is_empty() {
            self.by_sends.clear();
            if self.current.capacity() > 64 {
                self.current.shrink_to(64);
            }
        } else {
            // Lists empty out as broadcasts move up; give their memory back (a node of a
            // large cluster keeps this queue for every member it simulates alongside).
            for list in &mut self.by_sends {
                if list.capacity() > 32 && list.len() < list.capacity() / 4 {
                    list.shrink_to(list.len() * 2);
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::messages::Leave;
    use crate::message::Message;

    fn msg(name: &str, inc: u32) -> Vec<u8> {
        Message::Leave(Leave {
            name: Name::new(name).unwrap(),
            incarnation: inc,
        })
        .encode()
    }

    #[test]
    fn newer_update_replaces_older_and_limit_drops() {
        let mut q = BroadcastQueue::new(10);
        q.push(Name::new("a").unwrap(), msg("a", 1));
        q.push(Name::new("a").unwrap(), msg("a", 2));
        assert_eq!(q.len(), 1);
        let mut p = PacketBuilder::new(1, b"", 1400);
        assert_eq!(q.fill(&mut p, 3), 1, "the stale copy is not sent");
        let got = crate::message::decode_packet(&p.finish(), b"", 65535).unwrap();
        assert!(matches!(&got[0], Message::Leave(l) if l.incarnation == 2));
        for _ in 0..2 {
            let mut p = PacketBuilder::new(1, b"", 1400);
            assert_eq!(q.fill(&mut p, 3), 1);
        }
        assert!(q.is_empty());
        let mut p = PacketBuilder::new(1, b"", 1400);
        assert_eq!(q.fill(&mut p, 3), 0);
    }

    #[test]
    fn a_repeated_broadcast_is_sent_its_factor_times_the_limit() {
        let mut q = BroadcastQueue::new(10);
        q.push_repeated(Name::new("a").unwrap(), msg("a", 1), 3);
        q.push(Name::new("b").unwrap(), msg("b", 1));
        let sent: Vec<usize> = (0..8)
            .map(|_| q.fill(&mut PacketBuilder::new(1, b"", 1400), 2))
            .collect();
        assert_eq!(sent, [2, 2, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn least_sent_go_first_and_budget_is_respected() {
        let mut q = BroadcastQueue::new(100);
        for i in 0..50 {
            q.push(
                Name::new(&format!("member-{i:03}")).unwrap(),
                msg(&format!("member-{i:03}"), i),
            );
        }
        let mut p = PacketBuilder::new(1, b"", 200);
        let n = q.fill(&mut p, 10);
        assert!(n > 0 && n < 50);
        let first = crate::message::decode_packet(&p.finish(), b"", 65535).unwrap();
        assert!(
            matches!(&first[0], Message::Leave(l) if l.incarnation == 49),
            "newest first"
        );
        // The ones just sent now have 1 transmit; the next packet takes unsent ones.
        let mut p2 = PacketBuilder::new(1, b"", 200);
        q.fill(&mut p2, 10);
        let second = crate::message::decode_packet(&p2.finish(), b"", 65535).unwrap();
        assert!(matches!(&second[0], Message::Leave(l) if l.incarnation == 49 - n as u32));
    }

    #[test]
    fn queue_is_bounded_and_evicts_the_most_sent() {
        let mut q = BroadcastQueue::new(5);
        for i in 0..5 {
            q.push(Name::new(&format!("m{i}")).unwrap(), msg("x", i));
        }
        let mut p = PacketBuilder::new(1, b"", 1400);
        q.fill(&mut p, 10);
        for i in 5..8 {
            q.push(Name::new(&format!("m{i}")).unwrap(), msg("x", i));
        }
        assert_eq!(q.len(), 5);
        let mut p = PacketBuilder::new(1, b"", 1400);
        assert_eq!(q.fill(&mut p, 10), 5);
        let got = crate::message::decode_packet(&p.finish(), b"", 65535).unwrap();
        assert!(matches!(&got[0], Message::Leave(l) if l.incarnation == 7));
    }
}
