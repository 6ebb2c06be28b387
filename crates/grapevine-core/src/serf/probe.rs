//! memberlist's probing: round-robin over a shuffled list, a direct ping, then indirect
//! pings (with nacks) and a TCP ping, and Lifeguard's awareness scaling the interval.

use super::cluster::NodeState;
use super::wire::{self, Accuse, IndirectPing, Msg, Ping};
use super::{Dial, SerfNode};
use crate::Time;
use std::net::SocketAddr;

/// The probe in flight.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    target: String,
    seq: u32,
    /// When the direct ping went out.
    pub sent: Time,
    /// When indirect pings go out if no ack came.
    indirect_at: Option<Time>,
    /// When the probe is judged.
    deadline: Time,
    expected_nacks: u32,
    nacks: u32,
}

impl Probe {
    /// Its next timer.
    pub fn next_deadline(&self) -> Time {
        self.indirect_at.unwrap_or(self.deadline).min(self.deadline)
    }

    /// The member probed.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// When a relay nacks, as a share of the probe timeout.
const NACK_AT: f64 = 0.8;

/// An indirect ping we relay: its ack goes back to `to` under the requester's sequence.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    orig_seq: u32,
    to: SocketAddr,
    nack_at: Option<Time>,
    /// When we forget it.
    pub expires: Time,
}

impl Relay {
    /// Its next timer.
    pub fn next_deadline(&self) -> Time {
        self.nack_at.unwrap_or(self.expires).min(self.expires)
    }
}

impl SerfNode {
    /// Lifeguard: changes the health score within [0, max - 1].
    pub(super) fn apply_awareness(&mut self, delta: i32) {
        let max = self.cfg.awareness_max.max(1) as i32 - 1;
        self.awareness = (self.awareness as i32 + delta).clamp(0, max) as u32;
    }

    fn scaled(&self, d: std::time::Duration) -> std::time::Duration {
        d * (self.awareness + 1)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The probe in flight, if any: its target and when it was sent.
    pub fn probe_in_flight(&self) -> Option<(&str, Time)> {
        self.probe.as_ref().map(|p| (p.target(), p.sent))
    }

    /// Starts the next probe in round-robin order.
    pub(super) fn probe_next(&mut self, now: Time) {
        let interval = self.scaled(self.cfg.probe_interval);
        self.next_probe = now + interval;
        if self.probe.is_some() || self.leaving == super::Leaving::Done {
            return;
        }
        let mut checked = 0;
        let target = loop {
            if checked >= self.probe_order.len() {
                return;
            }
            if self.probe_idx >= self.probe_order.len() {
                self.reset_probe_order(now);
                self.probe_idx = 0;
                if self.probe_order.is_empty() {
                    return;
                }
            }
            let name = self.probe_order[self.probe_idx].clone();
            self.probe_idx += 1;
            checked += 1;
            match self.members.get(&name) {
                Some(m) if name != self.cfg.name && !m.state.dead_or_left() => break name,
                _ => continue,
            }
        };
        let m = &self.members[&target];
        let (to, state, inc) = (m.addr(), m.state, m.incarnation);
        let seq = self.next_seq();
        let (source_addr, source_port) = self.my_addr();
        let ping = Ping {
            seq,
            node: target.clone(),
            source_addr,
            source_port,
            source_node: self.cfg.name.clone(),
        };
        if state == NodeState::Alive {
            self.send_msg(to, Msg::Ping(ping).encode());
        } else {
            // A suspect is told it is suspected, so it can refute at once.
            let s = Accuse {
                incarnation: inc,
                node: target.clone(),
                from: self.cfg.name.clone(),
            };
            let c = wire::compound(&[Msg::Ping(ping).encode(), Msg::Suspect(s).encode()]);
            self.send_packet(to, c);
        }
        self.probe = Some(Probe {
            target,
            seq,
            sent: now,
            indirect_at: Some(now + self.cfg.probe_timeout),
            deadline: now + interval,
            expected_nacks: 0,
            nacks: 0,
        });
    }

    /// memberlist's `resetNodes`: a new shuffled round over the members still probed, and
    /// the size estimate recounted without those dead for longer than gossip-to-the-dead.
    fn reset_probe_order(&mut self, now: Time) {
        let grace = self.cfg.gossip_to_the_dead;
        self.est_nodes = self
            .members
            .values()
            .filter(|m| m.state != NodeState::Dead || now.saturating_since(m.state_change) <= grace)
            .count();
        let members = &self.members;
        self.probe_order
            .retain(|n| members.get(n).is_some_and(|m| !m.state.dead_or_left()));
        for i in (1..self.probe_order.len()).rev() {
            let j = rand::Rng::gen_range(&mut self.rng, 0..=i);
            self.probe_order.swap(i, j);
        }
    }

    /// Indirect pings when the direct one timed out; the verdict at the deadline.
    pub(super) fn probe_timers(&mut self, now: Time) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        if p.indirect_at.is_some_and(|t| t <= now) {
            p.indirect_at = None;
            let (seq, target) = (p.seq, p.target.clone());
            self.send_indirect(seq, &target);
        }
        if self.probe.as_ref().is_none_or(|p| p.deadline > now) {
            return;
        }
        let Some(p) = self.probe.take() else {
            return;
        };
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks) as i32
        } else {
            1
        };
        self.apply_awareness(delta);
        if let Some(m) = self.members.get(&p.target) {
            if !m.state.dead_or_left() {
                let s = Accuse {
                    incarnation: m.incarnation,
                    node: p.target.clone(),
                    from: self.cfg.name.clone(),
                };
                self.suspect_node(s, now);
            }
        }
    }

    fn send_indirect(&mut self, seq: u32, target: &str) {
        let Some(m) = self.members.get(target) else {
            return;
        };
        let (taddr, pmax) = (m.addr(), m.vsn[1]);
        let me = self.cfg.name.clone();
        let target_name = target.to_string();
        let peers: Vec<(SocketAddr, u8)> = {
            let addrs = self.random_members(self.cfg.indirect_checks, |m| {
                m.name != me && m.name != target_name && m.state == NodeState::Alive
            });
            addrs
                .into_iter()
                .map(|a| {
                    let pm = self
                        .members
                        .values()
                        .find(|m| m.addr() == a)
                        .map_or(0, |m| m.vsn[1]);
                    (a, pm)
                })
                .collect()
        };
        let (source_addr, source_port) = self.my_addr();
        let mut expected = 0;
        for (to, peer_pmax) in peers {
            let nack = peer_pmax >= 4;
            expected += u32::from(nack);
            let ind = IndirectPing {
                seq,
                target: super::ip_bytes(taddr.ip()),
                port: taddr.port(),
                node: target.to_string(),
                nack,
                source_addr: source_addr.clone(),
                source_port,
                source_node: me.clone(),
            };
            self.send_msg(to, Msg::IndirectPing(ind).encode());
        }
        if let Some(p) = self.probe.as_mut() {
            p.expected_nacks = expected;
        }
        // The TCP ping, for members that speak protocol 3 and up: it gets through where
        // UDP is filtered.
        if pmax >= 3 {
            let ping = Ping {
                seq,
                node: target.to_string(),
                source_addr,
                source_port,
                source_node: me,
            };
            self.dial(taddr, Msg::Ping(ping).encode(), Dial::TcpPing { seq });
        }
    }

    /// Answers a ping.
    pub(super) fn handle_ping(&mut self, from: SocketAddr, p: Ping) {
        if !p.node.is_empty() && p.node != self.cfg.name {
            return self.drop_reason("wrong_node");
        }
        let to = match (super::ip_from(&p.source_addr), p.source_port) {
            (Some(ip), port) if port > 0 => SocketAddr::new(ip, port),
            _ => from,
        };
        let ack = Msg::Ack {
            seq: p.seq,
            payload: Vec::new(),
        };
        self.send_msg(to, ack.encode());
    }

    /// Pings a target on another member's behalf.
    pub(super) fn handle_indirect(&mut self, from: SocketAddr, ind: IndirectPing, now: Time) {
        let Some(ip) = super::ip_from(&ind.target) else {
            return self.drop_reason("bad_address");
        };
        if self.relays.len() >= 1024 {
            return self.drop_reason("relay_full");
        }
        let seq = self.next_seq();
        let (source_addr, source_port) = self.my_addr();
        let back = match (super::ip_from(&ind.source_addr), ind.source_port) {
            (Some(ip), port) if port > 0 => SocketAddr::new(ip, port),
            _ => from,
        };
        self.relays.insert(
            seq,
            Relay {
                orig_seq: ind.seq,
                to: back,
                // The nack goes out a little before the probe timeout: the prober judges
                // at its own deadline, one probe timeout after it asked, and a nack sent
                // exactly then (as memberlist's relays do) often arrives too late to count,
                // which raises the prober's Lifeguard score and slows its probing.
                nack_at: ind
                    .nack
                    .then_some(now + self.cfg.probe_timeout.mul_f64(NACK_AT)),
                expires: now + self.cfg.probe_timeout,
            },
        );
        let ping = Ping {
            seq,
            node: ind.node,
            source_addr,
            source_port,
            source_node: self.cfg.name.clone(),
        };
        let port = if ind.port == 0 {
            self.cfg.addr.port()
        } else {
            ind.port
        };
        self.send_msg(SocketAddr::new(ip, port), Msg::Ping(ping).encode());
    }

    /// Nacks for relays that heard nothing; expired relays forgotten.
    pub(super) fn relay_timers(&mut self, now: Time) {
        let mut nacks = Vec::new();
        for r in self.relays.values_mut() {
            if r.nack_at.is_some_and(|t| t <= now) {
                r.nack_at = None;
                nacks.push((r.to, r.orig_seq));
            }
        }
        for (to, seq) in nacks {
            self.send_msg(to, Msg::Nack { seq }.encode());
        }
        self.relays.retain(|_, r| r.expires > now);
    }

    /// An ack: our probe's, or one to relay.
    pub(super) fn handle_ack(&mut self, seq: u32, now: Time) {
        if let Some(r) = self.relays.remove(&seq) {
            let ack = Msg::Ack {
                seq: r.orig_seq,
                payload: Vec::new(),
            };
            return self.send_msg(r.to, ack.encode());
        }
        self.tcp_ack(seq, now);
    }

    /// Our probe's ack, by UDP or TCP.
    pub(super) fn tcp_ack(&mut self, seq: u32, _now: Time) {
        if self.probe.as_ref().is_some_and(|p| p.seq == seq) {
            self.probe = None;
            self.apply_awareness(-1);
        }
    }

    /// A nack for our probe's indirect pings.
    pub(super) fn handle_nack(&mut self, seq: u32) {
        if let Some(p) = self.probe.as_mut() {
            if p.seq == seq {
                p.nacks += 1;
            }
        }
    }
}
