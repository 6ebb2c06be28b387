//! Serf's layer (serf.go, delegate.go): member status with Lamport-timed join and leave
//! intents, user events deduplicated by time and content, Serf's push-pull state, the
//! reconnect and reap timers, and graceful leave.

use super::messages::{self, Intent, PushPull, SerfMsg, UserEvent};
use super::{Leaving, SerfEvent, SerfNode};
use crate::Time;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// memberlist's view of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Answering probes.
    Alive,
    /// Missed a probe; dead unless it refutes in time.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left gracefully (a dead claim from itself).
    Left,
}

impl NodeState {
    /// Dead or left.
    pub fn dead_or_left(self) -> bool {
        matches!(self, NodeState::Dead | NodeState::Left)
    }

    /// memberlist's number for it.
    pub fn code(self) -> u8 {
        match self {
            NodeState::Alive => 0,
            NodeState::Suspect => 1,
            NodeState::Dead => 2,
            NodeState::Left => 3,
        }
    }
}

/// A member's status as Serf reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Known to memberlist but not yet to Serf.
    None,
    /// Alive.
    Alive,
    /// Announced its leave; not yet gone.
    Leaving,
    /// Left gracefully.
    Left,
    /// Failed.
    Failed,
}

impl Status {
    /// Serf's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// A member in the table: memberlist's fields and Serf's.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
    pub meta: Vec<u8>,
    pub tags: BTreeMap<String, String>,
    pub incarnation: u32,
    pub state: NodeState,
    pub state_change: Time,
    pub vsn: [u8; 6],
    pub status: Status,
    pub status_ltime: u64,
    pub leave_time: Time,
}

impl Member {
    pub fn new(
        name: &str,
        ip: IpAddr,
        port: u16,
        meta: Vec<u8>,
        incarnation: u32,
        vsn: [u8; 6],
        now: Time,
    ) -> Self {
        Member {
            name: name.to_string(),
            ip,
            port,
            tags: messages::decode_tags(&meta),
            meta,
            incarnation,
            state: NodeState::Alive,
            state_change: now,
            vsn,
            status: Status::Alive,
            status_ltime: 0,
            leave_time: now,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    fn info(&self) -> MemberInfo {
        MemberInfo {
            name: self.name.clone(),
            addr: self.addr(),
            tags: self.tags.clone(),
            status: self.status,
            incarnation: self.incarnation,
            suspect: self.state == NodeState::Suspect,
            vsn: self.vsn,
            since: if matches!(self.status, Status::Left | Status::Failed) {
                self.leave_time
            } else {
                self.state_change
            },
        }
    }
}

/// A member as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    /// Name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Serf's status.
    pub status: Status,
    /// memberlist's incarnation.
    pub incarnation: u32,
    /// Alive to Serf but suspected by memberlist.
    pub suspect: bool,
    /// Protocol versions: pmin, pmax, pcur, dmin, dmax, dcur.
    pub vsn: [u8; 6],
    /// Since when it has been in this state.
    pub since: Time,
}

/// Serf's three Lamport clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    member: u64,
    event: u64,
    query: u64,
    event_min: u64,
}

impl Clocks {
    /// Serf starts its clocks at 1.
    pub fn start() -> Self {
        Clocks {
            member: 1,
            event: 1,
            query: 1,
            event_min: 0,
        }
    }
}

fn witness(clock: &mut u64, t: u64) {
    if t >= *clock {
        *clock = t.saturating_add(1);
    }
}

/// How many unknown members' intents are remembered until they appear (Serf keeps them for
/// its RecentIntentTimeout; a count bounds them here).
const MAX_RECENT_INTENTS: usize = 4096;

impl SerfNode {
    /// Every member Serf knows, this one included.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members
            .values()
            .filter(|m| m.status != Status::None)
            .map(Member::info)
            .collect()
    }

    /// The member clock, event clock and query clock.
    pub fn clocks(&self) -> (u64, u64, u64) {
        (self.clocks.member, self.clocks.event, self.clocks.query)
    }

    /// Broadcasts this member's join intent at the current member clock.
    pub(super) fn broadcast_join(&mut self) {
        let ltime = self.clocks.member;
        let me = self.cfg.name.clone();
        if let Some(m) = self.members.get_mut(&me) {
            m.status_ltime = m.status_ltime.max(ltime);
        }
        let msg = SerfMsg::Join(Intent {
            ltime,
            node: me.clone(),
            prune: false,
        });
        self.serf_queue
            .push(Some(format!("intent:{me}")), msg.encode());
    }

    /// memberlist saw a member join: Serf's `handleNodeJoin`.
    pub(super) fn on_join(&mut self, name: &str, now: Time) {
        let intents = self.recent_intents.remove(name);
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        if m.status == Status::None {
            m.status = Status::Alive;
            if let Some((kind, ltime)) = intents {
                m.status_ltime = ltime;
                if kind == messages::kind::LEAVE {
                    m.status = Status::Leaving;
                }
            }
        } else {
            m.status = Status::Alive;
        }
        m.tags = messages::decode_tags(&m.meta);
        m.leave_time = now;
        let info = m.info();
        self.events.push_back(SerfEvent::MemberJoin(info));
    }

    /// memberlist saw a member's meta change: Serf's `handleNodeUpdate`.
    pub(super) fn on_update(&mut self, name: &str) {
        if let Some(m) = self.members.get_mut(name) {
            m.tags = messages::decode_tags(&m.meta);
            let info = m.info();
            self.events.push_back(SerfEvent::MemberUpdate(info));
        }
    }

    /// memberlist saw a member die or leave: Serf's `handleNodeLeave`. Serf calls it left
    /// only if it announced its leave first.
    pub(super) fn on_leave(&mut self, name: &str, now: Time) {
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        let event = match m.status {
            Status::Leaving => {
                m.status = Status::Left;
                SerfEvent::MemberLeave as fn(MemberInfo) -> SerfEvent
            }
            Status::Alive => {
                m.status = Status::Failed;
                SerfEvent::MemberFailed
            }
            _ => return,
        };
        m.leave_time = now;
        let info = m.info();
        self.events.push_back(event(info));
    }

    fn remember_intent(&mut self, node: &str, kind: u8, ltime: u64) -> bool {
        match self.recent_intents.get(node) {
            Some((_, t)) if *t >= ltime => false,
            _ => {
                if self.recent_intents.len() >= MAX_RECENT_INTENTS
                    && !self.recent_intents.contains_key(node)
                {
                    return false;
                }
                self.recent_intents.insert(node.to_string(), (kind, ltime));
                true
            }
        }
    }

    /// Serf's `handleNodeJoinIntent`; true if it should be re-gossiped.
    fn join_intent(&mut self, i: &Intent) -> bool {
        witness(&mut self.clocks.member, i.ltime);
        let Some(m) = self.members.get_mut(&i.node) else {
            return self.remember_intent(&i.node, messages::kind::JOIN, i.ltime);
        };
        if m.status == Status::None {
            return self.remember_intent(&i.node, messages::kind::JOIN, i.ltime);
        }
        if i.ltime <= m.status_ltime {
            return false;
        }
        m.status_ltime = i.ltime;
        if m.status == Status::Leaving {
            m.status = Status::Alive;
        }
        true
    }

    /// Serf's `handleNodeLeaveIntent`; true if it should be re-gossiped.
    fn leave_intent(&mut self, i: &Intent, now: Time) -> bool {
        witness(&mut self.clocks.member, i.ltime);
        let alive_self = i.node == self.cfg.name && self.leaving == Leaving::No;
        let Some(m) = self.members.get_mut(&i.node) else {
            return self.remember_intent(&i.node, messages::kind::LEAVE, i.ltime);
        };
        if m.status == Status::None {
            return self.remember_intent(&i.node, messages::kind::LEAVE, i.ltime);
        }
        if i.ltime <= m.status_ltime {
            return false;
        }
        if alive_self {
            // Someone says we left and we did not: announce we are here, later in time.
            self.clocks.member += 1;
            self.broadcast_join();
            return false;
        }
        m.status_ltime = i.ltime;
        match m.status {
            Status::Alive => {
                m.status = Status::Leaving;
                true
            }
            Status::Failed => {
                m.status = Status::Left;
                m.leave_time = now;
                let info = m.info();
                self.events.push_back(SerfEvent::MemberLeave(info));
                true
            }
            Status::Leaving | Status::Left => true,
            Status::None => false,
        }
    }

    /// Raises a user event for the cluster (Serf's `UserEvent`).
    pub fn user_event(
        &mut self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), &'static str> {
        if name.len() + payload.len() > self.cfg.user_event_size_limit {
            return Err("user event exceeds the size limit");
        }
        let ev = UserEvent {
            ltime: self.clocks.event,
            name: name.to_string(),
            payload: payload.to_vec(),
            cc: coalesce,
        };
        self.clocks.event += 1;
        self.handle_user_event(&ev);
        self.event_queue.push(None, SerfMsg::UserEvent(ev).encode());
        Ok(())
    }

    /// Serf's `handleUserEvent`: once per (time, name, payload); true if new.
    fn handle_user_event(&mut self, ev: &UserEvent) -> bool {
        witness(&mut self.clocks.event, ev.ltime);
        if ev.ltime < self.clocks.event_min {
            return false;
        }
        let len = self.event_log.len() as u64;
        let cur = self.clocks.event;
        if cur > len && ev.ltime < cur - len {
            self.drop_reason("old_event");
            return false;
        }
        let idx = (ev.ltime % len) as usize;
        let entry = (ev.name.clone(), ev.payload.clone());
        match &mut self.event_log[idx] {
            Some((t, seen)) if *t == ev.ltime => {
                if seen.contains(&entry) {
                    return false;
                }
                seen.push(entry);
            }
            slot => *slot = Some((ev.ltime, vec![entry])),
        }
        self.events.push_back(SerfEvent::User {
            ltime: ev.ltime,
            name: ev.name.clone(),
            payload: ev.payload.clone(),
            coalesce: ev.cc,
        });
        true
    }

    /// Serf's push-pull state.
    pub(super) fn serf_state(&self) -> PushPull {
        PushPull {
            ltime: self.clocks.member,
            status_ltimes: self
                .members
                .values()
                .filter(|m| m.status != Status::None)
                .map(|m| (m.name.clone(), m.status_ltime))
                .collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.status == Status::Left)
                .map(|m| m.name.clone())
                .collect(),
            event_ltime: self.clocks.event,
            events: self.event_log.iter().flatten().cloned().collect(),
            query_ltime: self.clocks.query,
        }
    }

    /// Merges a peer's Serf state (delegate.go's `MergeRemoteState`).
    pub(super) fn merge_serf_state(&mut self, user: &[u8], _join: bool) {
        let Some((&messages::kind::PUSH_PULL, body)) = user.split_first() else {
            return;
        };
        let pp = match PushPull::decode(body) {
            Ok(pp) => pp,
            Err(_) => return self.drop_reason("bad_serf_state"),
        };
        if pp.ltime > 0 {
            witness(&mut self.clocks.member, pp.ltime - 1);
        }
        if pp.event_ltime > 0 {
            witness(&mut self.clocks.event, pp.event_ltime - 1);
        }
        if pp.query_ltime > 0 {
            witness(&mut self.clocks.query, pp.query_ltime - 1);
        }
        let times: BTreeMap<&str, u64> = pp
            .status_ltimes
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect();
        let now = self.me().state_change;
        for name in &pp.left_members {
            let i = Intent {
                ltime: times.get(name.as_str()).copied().unwrap_or(0) + 1,
                node: name.clone(),
                prune: false,
            };
            self.leave_intent(&i, now);
        }
        for (name, t) in &pp.status_ltimes {
            if pp.left_members.contains(name) {
                continue;
            }
            self.join_intent(&Intent {
                ltime: *t,
                node: name.clone(),
                prune: false,
            });
        }
        for (ltime, list) in pp.events {
            for (name, payload) in list {
                self.handle_user_event(&UserEvent {
                    ltime,
                    name,
                    payload,
                    cc: false,
                });
            }
        }
    }

    /// A Serf message, from a datagram or a stream.
    pub(super) fn handle_serf(&mut self, buf: &[u8], now: Time) {
        let msg = match SerfMsg::decode(buf) {
            Ok(m) => m,
            Err(_) => return self.drop_reason("bad_serf_message"),
        };
        let (rebroadcast, queue) = match &msg {
            SerfMsg::Leave(i) => (self.leave_intent(i, now), 0),
            SerfMsg::Join(i) => (self.join_intent(i), 0),
            SerfMsg::UserEvent(e) => (self.handle_user_event(e), 2),
            SerfMsg::Query(q) => (self.handle_query(q.clone(), now), 1),
            SerfMsg::QueryResponse(r) => {
                self.handle_query_response(r);
                (false, 0)
            }
            SerfMsg::Relay {
                addr, port, msg, ..
            } => {
                match super::ip_from(addr) {
                    Some(ip) if msg.len() <= self.cfg.udp_buffer => {
                        let mut m = vec![super::wire::code::USER];
                        m.extend_from_slice(msg);
                        self.send_msg(SocketAddr::new(ip, *port), m);
                    }
                    _ => self.drop_reason("bad_relay"),
                }
                (false, 0)
            }
            SerfMsg::Other(_) => {
                self.drop_reason("unknown_serf_type");
                (false, 0)
            }
        };
        if rebroadcast {
            let q = match queue {
                0 => &mut self.serf_queue,
                1 => &mut self.query_queue,
                _ => &mut self.event_queue,
            };
            q.push(None, buf.to_vec());
        }
    }

    /// Serf's reconnect: a push-pull join with one random failed member.
    pub(super) fn reconnect(&mut self) {
        let failed = self.random_members(1, |m| m.status == Status::Failed);
        if let Some(to) = failed.into_iter().next() {
            let msg = self.local_state(true);
            self.dial(to, msg, super::Dial::PushPull { join: true });
        }
    }

    /// Serf's reaper: failed and left members forgotten after their timeouts.
    pub(super) fn reap(&mut self, now: Time) {
        let (rt, tt) = (self.cfg.reconnect_timeout, self.cfg.tombstone_timeout);
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                let age = now.saturating_since(m.leave_time);
                (m.status == Status::Failed && age > rt) || (m.status == Status::Left && age > tt)
            })
            .map(|m| m.name.clone())
            .collect();
        for name in gone {
            if let Some(m) = self.members.remove(&name) {
                self.probe_order.retain(|n| *n != name);
                self.events.push_back(SerfEvent::MemberReap(m.info()));
            }
        }
    }

    /// Starts a graceful leave, as Serf's `Leave`: the leave intent first, then memberlist's
    /// dead claim from itself, each until it has gone out (or `broadcast_timeout`), then
    /// `leave_propagate_delay` still answering probes; [`SerfNode::has_left`] turns true
    /// at the end. Each of the two also goes straight to up to `leave_fanout` live members.
    pub fn leave(&mut self, now: Time) {
        if self.leaving != Leaving::No {
            return;
        }
        let i = Intent {
            ltime: self.clocks.member,
            node: self.cfg.name.clone(),
            prune: false,
        };
        self.clocks.member += 1;
        if let Some(m) = self.members.get_mut(&self.cfg.name) {
            m.status = Status::Leaving;
            m.status_ltime = i.ltime;
        }
        let intent = SerfMsg::Leave(i).encode();
        let id = self.serf_queue.push(None, intent.clone());
        self.leave_intent = intent;
        self.leaving = Leaving::Intent {
            id,
            until: now + self.leave_wait(self.cfg.broadcast_timeout),
        };
        self.leave_direct(false);
        self.leave_progress(now);
    }

    /// How long a leave step waits: not at all with no one alive to tell.
    fn leave_wait(&self, d: Duration) -> Duration {
        if self.live_count() <= 1 {
            Duration::ZERO
        } else {
            d
        }
    }

    /// memberlist's leave: this member's dead claim about itself.
    fn own_dead_claim(&self) -> Vec<u8> {
        let me = self.me();
        super::wire::Msg::Dead(super::wire::Accuse {
            incarnation: me.incarnation,
            node: me.name.clone(),
            from: me.name.clone(),
        })
        .encode()
    }

    /// Sends the leave intent, and with `dead` the dead claim after it, to up to
    /// `leave_fanout` random live members.
    fn leave_direct(&mut self, dead: bool) {
        let user = super::wire::Msg::User(self.leave_intent.clone()).encode();
        let msg = if dead {
            super::wire::compound(&[user, self.own_dead_claim()])
        } else {
            user
        };
        let me = self.cfg.name.clone();
        let to = self.random_members(self.cfg.leave_fanout, |m| {
            m.name != me && !m.state.dead_or_left()
        });
        for addr in to {
            self.send_packet(addr, msg.clone());
        }
    }

    pub(super) fn leave_progress(&mut self, now: Time) {
        match self.leaving {
            Leaving::Intent { id, until } if !self.serf_queue.holds(id) || now >= until => {
                let dead = self.own_dead_claim();
                let id = self.ml_queue.push(Some(self.cfg.name.clone()), dead);
                self.leaving = Leaving::Dead {
                    id,
                    until: now + self.leave_wait(self.cfg.broadcast_timeout),
                };
                self.leave_direct(true);
                if let Some(m) = self.members.get_mut(&self.cfg.name) {
                    m.state = NodeState::Left;
                    m.status = Status::Left;
                    m.state_change = now;
                }
                self.leave_progress(now);
            }
            Leaving::Dead { id, until } if !self.ml_queue.holds(id) || now >= until => {
                self.leaving = Leaving::Propagate {
                    until: now + self.leave_wait(self.cfg.leave_propagate_delay),
                };
                self.leave_progress(now);
            }
            Leaving::Propagate { until } if now >= until => {
                self.leaving = Leaving::Done;
            }
            _ => {}
        }
    }

    /// Whether a graceful leave has finished.
    pub fn has_left(&self) -> bool {
        self.leaving == Leaving::Done
    }
}

impl Clocks {
    /// Witnesses a query's time.
    pub fn witness_query(&mut self, t: u64) {
        witness(&mut self.query, t);
    }

    /// Ticks the query clock after sending one.
    pub fn bump_query(&mut self) {
        self.query += 1;
    }
}
