//! The node's side of rumour mongering: raising events, taking them in under each origin's
//! budget, answering with feedback, and pushing the infective ones on the rumour tick.

use super::{Rules, Rumors};
use crate::admission::Limiter;
use crate::config::Config;
use crate::error::{check_len, CommandError};
use crate::event::Event;
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::rumor::messages::{RumorAck, UserEvent};
use crate::stats::DropReason;
use crate::time::Time;
use std::net::SocketAddr;

/// User events being spread by this node, and the budgets new ones are taken under.
pub(crate) struct RumorMongering {
    rumors: Rumors,
    /// New user events accepted, by origin.
    budget: Limiter<Name>,
    next_push: Time,
}

impl RumorMongering {
    /// No events yet; the first push goes at `now`.
    pub fn new(config: &Config, now: Time) -> Self {
        RumorMongering {
            rumors: Rumors::default(),
            budget: Limiter::new(
                config.rumor.events_per_origin,
                config.rumor.events_total,
                now,
            ),
            next_push: now,
        }
    }

    /// User events this node is still spreading.
    pub fn spreading(&self) -> usize {
        self.rumors.spreading()
    }

    /// The push tick runs only while an event is spreading.
    pub fn deadline(&self) -> Time {
        if self.rumors.spreading() > 0 {
            self.next_push
        } else {
            Time::MAX
        }
    }

    /// Forgets idle budgets (on the reconnect tick).
    pub fn tidy(&mut self, now: Time) {
        self.budget.tidy(now);
    }

    fn rules(config: &Config) -> Rules {
        Rules {
            feedback: config.rumor.rumor_feedback,
            stop: config.rumor.rumor_stop,
            k: config.rumor.rumor_k,
            ttl: config.rumor.rumor_ttl,
            max_hops: config.rumor.rumor_max_hops,
        }
    }

    /// Raises a user event: delivered here, then spread to every member.
    pub fn raise(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        name: &str,
        payload: Vec<u8>,
    ) -> Result<u64, CommandError> {
        check_len(
            "event name",
            name.len(),
            crate::rumor::messages::MAX_EVENT_NAME_LEN,
        )?;
        check_len(
            "event payload",
            payload.len(),
            crate::rumor::messages::MAX_EVENT_PAYLOAD,
        )?;
        if !self.budget.allow(&ctx.me.name, now) {
            let r = ctx.config.rumor.events_per_origin;
            return Err(CommandError::RateLimited {
                burst: r.burst,
                per_second: r.per_second.round() as u32,
            });
        }
        let id = self.rumors.next_id(&ctx.me.name);
        let event = UserEvent {
            id,
            origin: ctx.me.name.clone(),
            name: name.to_string(),
            payload,
            hops: 0,
            feedback: ctx.config.rumor.rumor_feedback,
        };
        self.take(ctx, now, &event);
        Ok(id)
    }

    /// Takes in an event (ours or received); returns whether it was new.
    fn take(&mut self, ctx: &mut Ctx, now: Time, event: &UserEvent) -> bool {
        let rules = Self::rules(&ctx.config);
        let new = self.rumors.receive(event, now, &rules);
        if new {
            ctx.events.push_back(Event::User {
                id: event.id,
                origin: event.origin.clone(),
                name: event.name.clone(),
                payload: event.payload.clone(),
            });
            if self.next_push > now + ctx.config.membership.gossip_interval {
                self.next_push = now;
            }
        }
        new
    }

    /// An event pushed by `from`.
    pub fn on_user_event(&mut self, ctx: &mut Ctx, now: Time, from: SocketAddr, event: UserEvent) {
        if !self.rumors.knows(event.id) && !self.budget.allow(&event.origin, now) {
            // Not taken, so not known: a later copy is taken once the budget allows.
            ctx.stats.drop(DropReason::RateLimited);
            return;
        }
        let new = self.take(ctx, now, &event);
        if event.feedback {
            let version = ctx.rx_version;
            ctx.send_bare(
                from,
                version,
                &[Message::RumorAck(RumorAck {
                    id: event.id,
                    knew: !new,
                })],
            );
        }
    }

    /// A recipient's feedback: whether it knew the event already.
    pub fn on_rumor_ack(&mut self, ctx: &mut Ctx, m: RumorAck) {
        let rules = Self::rules(&ctx.config);
        self.rumors.feedback(m.id, m.knew, &rules, &mut ctx.rng);
    }

    /// Runs the push tick if due: the events being spread to `rumor_fanout` random live
    /// members.
    pub fn tick(&mut self, ctx: &mut Ctx, now: Time) {
        if now < self.deadline() {
            return;
        }
        self.next_push = now + ctx.config.membership.gossip_interval;
        let rules = Self::rules(&ctx.config);
        self.rumors.expire(now, &rules);
        let peers = ctx.random_members(ctx.config.rumor.rumor_fanout, None, |_, r| {
            r.state.is_live()
        });
        for p in peers {
            let events = self.rumors.next_push(&rules, &mut ctx.rng);
            if events.is_empty() {
                break;
            }
            let (dst, version) = ctx.dst_of(p);
            let msgs: Vec<Message> = events.into_iter().map(Message::UserEvent).collect();
            // One packet per budget's worth of events.
            let mut batch: Vec<Message> = Vec::new();
            let mut size = 0;
            for m in msgs {
                let len = m.encode().len();
                if !batch.is_empty() && size + len > ctx.config.wire.packet_budget - 64 {
                    ctx.send_packet(dst, version, &batch);
                    batch.clear();
                    size = 0;
                }
                size += len;
                batch.push(m);
            }
            if !batch.is_empty() {
                ctx.send_packet(dst, version, &batch);
            }
        }
    }
}
