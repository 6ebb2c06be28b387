//! The node's side of replication: rounds of exchanges with random live members, exchanges
//! opened when a ping's roots differ, the exchange messages, and their frames' budget.

use super::replication::Replication;
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::roots::Comparison;
use crate::time::Time;
use std::net::SocketAddr;

impl Replication {
    /// A round of state exchanges, if due and this node holds any state.
    pub fn round(&mut self, ctx: &mut Ctx, now: Time) {
        if now < self.deadline(&ctx.config) {
            return;
        }
        if !self.tracking.is_empty() && self.round_due(&ctx.config, now) {
            self.publish_seen(ctx, now);
        }
        let want = ctx.config.state.state_fanout + 8;
        let candidates: Vec<SocketAddr> = ctx
            .random_members(want, None, |_, r| r.state.is_live())
            .into_iter()
            .map(|i| ctx.members.addr_of(ctx.members.get(i)))
            .collect();
        let opening = self.tick(&ctx.config, now, &candidates);
        for (dst, msg) in opening {
            self.send(ctx, now, dst, &msg);
        }
    }

    /// A member's ping compared its roots with ours: exchange what differs with it.
    pub fn on_compared(&mut self, ctx: &mut Ctx, now: Time, from: SocketAddr, c: &Comparison) {
        let opening = self.compared(&ctx.config, now, from, c.nodes, c.keyspace);
        for (dst, msg) in opening {
            self.send(ctx, now, dst, &msg);
        }
    }

    /// A step of an exchange; returns the members whose heartbeats it brought.
    pub fn on_state_message(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        msg: &Message,
    ) -> Vec<Name> {
        let members = &ctx.members;
        let is_member = |name: &Name| {
            members.find(name).is_some_and(|i| {
                let r = members.get(i);
                r.state.is_live() && members.addr_of(r) == from
            })
        };
        let (reply, beats) = match self.on_message(&ctx.config, now, from, msg, is_member) {
            Ok(r) => r,
            Err(reason) => {
                tracing::debug!(%from, ?reason, "dropped a state message");
                ctx.stats.drop(reason);
                return Vec::new();
            }
        };
        if let Some(reply) = reply {
            self.send(ctx, now, from, &reply);
        }
        beats
    }

    fn send(&mut self, ctx: &mut Ctx, now: Time, dst: SocketAddr, msg: &Message) {
        ctx.stats.sent(msg.kind());
        let payload = crate::wire::encode_packet(
            ctx.rx_version,
            &ctx.config.label,
            std::slice::from_ref(msg),
        );
        ctx.stats.state_bytes_out += payload.len() as u64;
        self.spent(&ctx.config, payload.len(), now);
        ctx.emit(dst, true, payload);
    }
}
