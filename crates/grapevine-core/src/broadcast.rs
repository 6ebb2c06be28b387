//! The transmit-limited dissemination queue that gossip piggybacks on every packet.
//!
//! Each broadcast is keyed by the member it is about, so a newer update invalidates
//! the older one; packets take the least-sent broadcasts first (newest first among
//! equals), and a broadcast is dropped once sent `limit` times.

use crate::name::Name;
use crate::wire::PacketBuilder;
use hashbrown::HashMap;
use std::cmp::Reverse;
use std::collections::BTreeMap;

type Key = (u32, Reverse<u64>);

pub(crate) struct BroadcastQueue {
    order: BTreeMap<Key, (Name, Box<[u8]>)>,
    by_name: HashMap<Name, Key>,
    next_id: u64,
    max: usize,
}

impl BroadcastQueue {
    pub fn new(max: usize) -> Self {
        BroadcastQueue { order: BTreeMap::new(), by_name: HashMap::new(), next_id: 0, max: max.max(1) }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Queues a framed message about `about`, replacing any older one about it.
    pub fn push(&mut self, about: Name, framed: Vec<u8>) {
        if let Some(old) = self.by_name.remove(&about) {
            self.order.remove(&old);
        }
        self.next_id += 1;
        let key = (0, Reverse(self.next_id));
        self.by_name.insert(about.clone(), key);
        self.order.insert(key, (about, framed.into_boxed_slice()));
        while self.order.len() > self.max {
            // The most-sent, oldest broadcast has done the most of its work already.
            if let Some((_, (name, _))) = self.order.pop_last() {
                self.by_name.remove(&name);
            }
        }
    }

    /// Moves as many broadcasts as fit into `packet`, counting a transmission for each.
    pub fn fill(&mut self, packet: &mut PacketBuilder, limit: u32) -> usize {
        let mut sent: Vec<Key> = Vec::new();
        for (key, (_, framed)) in self.order.iter() {
            if packet.remaining() < 3 {
                break;
            }
            if packet.push_framed(framed) {
                sent.push(*key);
            }
        }
        let n = sent.len();
        for key in sent {
            if let Some((name, framed)) = self.order.remove(&key) {
                let transmits = key.0 + 1;
                if transmits >= limit {
                    self.by_name.remove(&name);
                } else {
                    let new_key = (transmits, key.1);
                    self.by_name.insert(name.clone(), new_key);
                    self.order.insert(new_key, (name, framed));
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Leave, Message};

    fn msg(name: &str, inc: u32) -> Vec<u8> {
        Message::Leave(Leave { name: Name::new(name).unwrap(), incarnation: inc }).encode()
    }

    #[test]
    fn newer_update_replaces_older_and_limit_drops() {
        let mut q = BroadcastQueue::new(10);
        q.push(Name::new("a").unwrap(), msg("a", 1));
        q.push(Name::new("a").unwrap(), msg("a", 2));
        assert_eq!(q.len(), 1);
        for _ in 0..3 {
            let mut p = PacketBuilder::new(1, b"", 1400);
            assert_eq!(q.fill(&mut p, 3), 1);
        }
        assert!(q.is_empty());
    }

    #[test]
    fn least_sent_go_first_and_budget_is_respected() {
        let mut q = BroadcastQueue::new(100);
        for i in 0..50 {
            q.push(Name::new(&format!("member-{i:03}")).unwrap(), msg(&format!("member-{i:03}"), i));
        }
        let mut p = PacketBuilder::new(1, b"", 200);
        let n = q.fill(&mut p, 10);
        assert!(n > 0 && n < 50);
        assert!(p.finish().len() <= 200);
        // The ones just sent now have 1 transmit; the next packet takes unsent ones.
        let mut p2 = PacketBuilder::new(1, b"", 200);
        q.fill(&mut p2, 10);
        let first = crate::wire::decode_packet(&p2.finish(), b"", 65535).unwrap();
        assert!(matches!(&first[0], Message::Leave(l) if l.incarnation < 50 - n as u32));
    }

    #[test]
    fn queue_is_bounded() {
        let mut q = BroadcastQueue::new(5);
        for i in 0..20 {
            q.push(Name::new(&format!("m{i}")).unwrap(), msg("x", i));
        }
        assert_eq!(q.len(), 5);
    }
}
