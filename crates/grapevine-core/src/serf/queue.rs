//! memberlist's transmit-limited queue: each broadcast is piggybacked on gossip and probes
//! until it has gone out `retransmit_mult × ceil(log10(n + 1))` times, fewest sends first;
//! a newer broadcast about the same subject replaces the older.

/// Queued broadcasts.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    items: Vec<Item>,
    next_id: u64,
}

#[derive(Debug)]
struct Item {
    id: u64,
    subject: Option<String>,
    msg: Vec<u8>,
    sent: u32,
}

/// The most broadcasts held; past it the most-sent go first (Serf's MaxQueueDepth).
const MAX_DEPTH: usize = 4096;

/// memberlist's retransmit limit.
pub(crate) fn retransmit_limit(mult: u32, n: usize) -> u32 {
    mult * ((n as f64 + 1.0).log10().ceil() as u32)
}

impl Queue {
    /// Queues `msg`, replacing a queued one about the same subject.
    pub fn push(&mut self, subject: Option<String>, msg: Vec<u8>) -> u64 {
        if let Some(s) = &subject {
            self.items.retain(|i| i.subject.as_ref() != Some(s));
        }
        if self.items.len() >= MAX_DEPTH {
            // Drop the most-transmitted (the oldest among equals).
            if let Some(pos) = self
                .items
                .iter()
                .enumerate()
                .max_by_key(|(_, i)| (i.sent, std::cmp::Reverse(i.id)))
                .map(|(p, _)| p)
            {
                self.items.remove(pos);
            }
        }
        self.next_id += 1;
        self.items.push(Item {
            id: self.next_id,
            subject,
            msg,
            sent: 0,
        });
        self.next_id
    }

    /// Broadcasts that fit in `limit` bytes with `overhead` each, fewest-sent and newest
    /// first; each taken counts as sent and leaves once sent `max` times.
    pub fn take(&mut self, overhead: usize, limit: usize, max: u32) -> Vec<Vec<u8>> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| (self.items[i].sent, std::cmp::Reverse(self.items[i].id)));
        let mut used = 0;
        let mut out = Vec::new();
        for i in order {
            let item = &mut self.items[i];
            if used + overhead + item.msg.len() > limit {
                continue;
            }
            used += overhead + item.msg.len();
            item.sent += 1;
            out.push(item.msg.clone());
        }
        self.items.retain(|i| i.sent < max.max(1));
        out
    }

    /// Whether the broadcast `id` is still queued.
    pub fn holds(&self, id: u64) -> bool {
        self.items.iter().any(|i| i.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_sent_first_within_the_limit_and_replaced_by_subject() {
        let mut q = Queue::default();
        q.push(Some("a".into()), vec![1; 10]);
        q.push(Some("b".into()), vec![2; 10]);
        q.push(Some("a".into()), vec![3; 10]);
        assert_eq!(q.items.len(), 2);
        assert_eq!(q.take(2, 12, 2), vec![vec![3; 10]]);
        assert_eq!(q.take(2, 12, 2), vec![vec![2; 10]]);
        assert_eq!(q.take(2, 100, 2).len(), 2);
        assert_eq!(q.items.len(), 0);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 9), 4);
    }
}
