//! The node's side of push-sum: a round every `aggregate_interval` sends half of every mass
//! to one random live member, in as many datagrams as it takes.

use super::{AggregateError, Aggregates, Estimate};
use crate::aggregate::messages::Aggregate;
use crate::config::Config;
use crate::message::Message;
use crate::node::context::Ctx;
use crate::time::Time;
use std::net::SocketAddr;

/// This node's aggregation and its round timer.
pub(crate) struct Aggregation {
    pub aggregates: Aggregates,
    next_round: Time,
}

impl Aggregation {
    /// Nothing aggregated yet; the first round at `first_round`.
    pub fn new(config: &Config, first_round: Time) -> Self {
        Aggregation {
            aggregates: Aggregates::new(config.aggregate.aggregate_epoch_rounds),
            next_round: first_round,
        }
    }

    /// Rounds run only while anything is aggregated.
    pub fn deadline(&self) -> Time {
        if self.aggregates.is_active() {
            self.next_round
        } else {
            Time::MAX
        }
    }

    /// Sets (or withdraws) this node's contribution to `name`.
    pub fn contribute(
        &mut self,
        ctx: &Ctx,
        name: &str,
        value: Option<f64>,
    ) -> Result<(), AggregateError> {
        self.aggregates.contribute(name, value, || ctx.is_anchor())
    }

    /// This node's estimate of `name`.
    pub fn estimate(&self, name: &str) -> Option<Estimate> {
        self.aggregates.estimate(name)
    }

    /// Mass pushed by `from`.
    pub fn on_message(&mut self, ctx: &Ctx, from: SocketAddr, m: &Aggregate) {
        self.aggregates.on_message(from, m, || ctx.is_anchor());
    }

    /// A member that took part left the live set: the running epoch ends early.
    pub fn departed(&mut self, config: &Config, addr: SocketAddr) {
        self.aggregates
            .departed(addr, (config.aggregate.aggregate_epoch_rounds / 6).max(1));
    }

    /// Runs a push-sum round if due: half of every mass to one random live member.
    pub fn tick(&mut self, ctx: &mut Ctx, now: Time) {
        if now < self.next_round {
            return;
        }
        self.next_round = now + ctx.config.aggregate.aggregate_interval;
        if !self.aggregates.is_active() {
            return;
        }
        // Membership grows after a node starts aggregating: every 16 rounds it checks it is
        // still the anchor (an O(N) look, so not every round).
        if self.aggregates.round() % 16 == 15 {
            self.aggregates.set_anchor(ctx.is_anchor());
        }
        let Some(msg) = self.aggregates.tick(|| ctx.is_anchor()) else {
            return;
        };
        let peer = ctx.random_members(1, None, |_, r| r.state.is_live());
        let Some(&p) = peer.first() else {
            // Alone: the half stays here.
            self.aggregates.undo(&msg);
            return;
        };
        let (dst, version) = ctx.dst_of(p);
        // Mass that does not fit one datagram goes in several; each is one message.
        let mut batch = Aggregate {
            epoch: msg.epoch,
            round: msg.round,
            entries: Vec::new(),
        };
        let mut size = 0;
        for e in msg.entries {
            let len = e.name.len() + 42;
            if !batch.entries.is_empty() && size + len > ctx.config.wire.packet_budget - 64 {
                let full = std::mem::take(&mut batch.entries);
                ctx.send_packet(
                    dst,
                    version,
                    &[Message::Aggregate(Aggregate {
                        entries: full,
                        ..batch.clone()
                    })],
                );
                size = 0;
            }
            size += len;
            batch.entries.push(e);
        }
        if !batch.entries.is_empty() {
            ctx.send_packet(dst, version, &[Message::Aggregate(batch)]);
        }
    }
}
