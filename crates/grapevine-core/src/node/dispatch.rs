//! Where a packet goes: opened and checked against the channel's limits, decoded whole
//! (one bad message drops the packet), then each message routed to its protocol by the one
//! table below, which also says which channel each message may come by.

use super::Node;
use crate::detection::Detection;
use crate::membership::Origin;
use crate::message::Message;
use crate::stats::{DropReason, Stats};
use crate::time::Time;
use crate::wire::{self, PROTOCOL_VERSION};
use std::net::SocketAddr;

impl Node {
    /// A datagram arrived from `from` at `now`.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.handle_input(now, from, bytes, false);
    }

    /// A frame arrived on the reliable channel from `from` at `now`.
    pub fn handle_frame(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.handle_input(now, from, bytes, true);
    }

    fn handle_input(&mut self, now: Time, from: SocketAddr, bytes: &[u8], reliable: bool) {
        let ctx = &mut self.ctx;
        ctx.stats.packets_in += 1;
        ctx.stats.bytes_in += bytes.len() as u64;
        let max = if reliable {
            ctx.config.wire.max_frame
        } else {
            ctx.config.wire.max_datagram
        };
        // A frame within the channel's limit must also be within its type's.
        let max = match (reliable, wire::peek_first_type(bytes, bytes.len())) {
            (true, Ok(Some(Some(code)))) => max.min(wire::frame_limit(code)),
            _ => max,
        };
        let packet = match wire::open_packet(bytes, &ctx.config.label, max) {
            Ok(p) => {
                Stats::packet_bytes(&mut ctx.stats.bytes_in_by_type, bytes);
                p
            }
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped packet");
                ctx.stats.drop(DropReason::of(&e));
                return;
            }
        };
        // Decode everything first: a packet with one bad message is dropped whole.
        let mut msgs = Vec::new();
        for raw in packet.messages() {
            match raw.and_then(|raw| raw.decode()) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => ctx.stats.drop(DropReason::UnknownType),
                Err(e) => {
                    tracing::debug!(%from, error = %e, "dropped malformed packet");
                    ctx.stats.drop(DropReason::of(&e));
                    return;
                }
            }
        }
        ctx.rx_version = packet.version;
        for m in msgs {
            self.ctx.stats.messages_in[m.kind() as usize & 31] += 1;
            self.dispatch(now, from, m, reliable);
            self.route_departures();
        }
        self.ctx.rx_version = PROTOCOL_VERSION;
    }

    /// The routing table: each message to its protocol's handler. Exchanges (membership
    /// push-pull and state trees) come only on the reliable channel, whose connection
    /// proved the sender's address.
    fn dispatch(&mut self, now: Time, from: SocketAddr, msg: Message, reliable: bool) {
        let ctx = &mut self.ctx;
        match msg {
            Message::Ping(m) => {
                if Detection::is_for_me(ctx, &m) {
                    self.compare_roots(now, from, &m);
                    Detection::answer_ping(&mut self.ctx, from, &m, reliable);
                }
            }
            Message::IndirectPing(m) => {
                let roots = self.roots();
                self.detection
                    .on_indirect_ping(&mut self.ctx, now, from, m, &roots);
            }
            Message::Ack(m) => {
                let suspicions = &mut self.membership.suspicions;
                let unmatched = self
                    .detection
                    .on_ack(ctx, suspicions, now, from, m, reliable)
                    .and_then(|m| self.membership.on_candidate_ack(ctx, now, from, m));
                if unmatched.is_some() {
                    ctx.stats.drop(DropReason::Unexpected);
                }
            }
            Message::Nack(m) => self.detection.on_nack(ctx, m),
            Message::Alive(m) => self.membership.on_alive(ctx, now, m, Origin::Gossip(from)),
            Message::Suspect(m) => {
                let about_me = m.name == ctx.me.name;
                self.membership
                    .on_suspect(ctx, now, m, Origin::Gossip(from));
                if about_me && reliable {
                    self.membership.deny_to(ctx, from);
                }
            }
            Message::Dead(m) => {
                let about_me = m.name == ctx.me.name;
                self.membership.on_dead(ctx, now, m, Origin::Gossip(from));
                if about_me && reliable {
                    self.membership.deny_to(ctx, from);
                }
            }
            Message::Leave(m) => self.membership.on_leave(ctx, now, m),
            Message::SyncRequest(_)
            | Message::SyncBuckets(_)
            | Message::SyncPush(_)
            | Message::SyncPull(_)
            | Message::TreeHashes(_)
            | Message::TreeItems(_)
            | Message::TreeEntries(_)
            | Message::StateDeltas(_)
                if !reliable =>
            {
                ctx.stats.drop(DropReason::WrongChannel)
            }
            Message::SyncRequest(m) => self.membership.on_sync_request(ctx, now, from, m),
            Message::SyncBuckets(m) => self.membership.on_sync_buckets(ctx, now, from, m),
            Message::SyncPush(m) => self.membership.on_sync_push(ctx, now, from, m),
            Message::SyncPull(m) => self.membership.on_sync_pull(ctx, now, from, m),
            m @ (Message::TreeHashes(_)
            | Message::TreeItems(_)
            | Message::TreeEntries(_)
            | Message::StateDeltas(_)) => {
                let beats = self.replication.on_state_message(ctx, now, from, &m);
                self.detection.heartbeats(&ctx.config, now, beats);
            }
            Message::UserEvent(m) => self.rumors.on_user_event(ctx, now, from, m),
            Message::Aggregate(m) => self.aggregation.on_message(ctx, from, &m),
            Message::RumorAck(m) => self.rumors.on_rumor_ack(ctx, m),
        }
    }

    /// A member's roots, carried by its ping, say whether anti-entropy with it would find
    /// anything: equal membership roots count toward skipping push-pull, differing state
    /// roots open an exchange of that store.
    fn compare_roots(&mut self, now: Time, from: SocketAddr, m: &crate::detection::messages::Ping) {
        let Some(prints) = &m.roots else { return };
        if !self.ctx.is_member_at(&m.source.name, from) {
            return;
        }
        let c = self.roots().compare(m.seq, prints);
        self.membership.coverage.record(now, c.membership);
        self.replication.on_compared(&mut self.ctx, now, from, &c);
    }
}
