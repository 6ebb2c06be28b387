//! memberlist's state.go: alive, suspect and dead claims, refutation, suspicion timers
//! with Lifeguard's confirmations, and push-pull merges.

use super::cluster::{Member, NodeState};
use super::wire::{self, Accuse, Alive, PushNode};
use super::{ip_bytes, ip_from, SerfEvent, SerfNode};
use crate::Time;
use std::collections::HashSet;
use std::time::Duration;

/// A suspicion in progress (suspicion.go): it starts at `max` and shrinks towards `min` as
/// independent confirmations arrive, `k` of them reaching `min`.
#[derive(Debug, Clone)]
pub struct Suspicion {
    start: Time,
    min: Duration,
    max: Duration,
    k: u32,
    n: u32,
    confirmations: HashSet<String>,
    /// When it expires into a dead claim.
    pub deadline: Time,
    /// The state change it belongs to: a refutation and a new suspicion start another.
    state_change: Time,
}

impl Suspicion {
    /// Counts an independent accuser; true if it was new and counted.
    fn confirm(&mut self, from: &str) -> bool {
        if self.n >= self.k || self.confirmations.contains(from) {
            return false;
        }
        self.confirmations.insert(from.to_string());
        self.n += 1;
        let frac = f64::from(self.n + 1).ln() / f64::from(self.k + 1).ln();
        let raw = self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
        let timeout = Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64).max(self.min);
        self.deadline = self.start + timeout;
        true
    }
}

/// memberlist's suspicion timeout: `mult × max(1, log10(n)) × interval`.
pub fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    // Go keeps three decimals of the scale.
    let scaled = (scale * 1000.0) as u64;
    interval * mult * scaled as u32 / 1000
}

impl SerfNode {
    /// Puts this member in its own table, alive at incarnation 1, and announces it.
    pub(super) fn start(&mut self, now: Time) {
        let me = Member::new(
            &self.cfg.name,
            self.cfg.addr.ip(),
            self.cfg.addr.port(),
            super::messages::encode_tags(&self.cfg.tags),
            1,
            self.cfg.vsn,
            now,
        );
        self.members.insert(self.cfg.name.clone(), me);
        self.probe_order.clear();
        self.broadcast_join();
    }

    /// This member's alive claim at its incarnation.
    pub(super) fn my_alive(&self) -> Alive {
        let me = self.me();
        Alive {
            incarnation: me.incarnation,
            node: me.name.clone(),
            addr: ip_bytes(me.ip),
            port: me.port,
            meta: me.meta.clone(),
            vsn: me.vsn.to_vec(),
        }
    }

    /// Raises the incarnation past `accused` and broadcasts that this member is alive.
    pub(super) fn refute(&mut self, accused: u32) {
        let Some(me) = self.members.get_mut(&self.cfg.name) else {
            return;
        };
        me.incarnation = me.incarnation.max(accused).saturating_add(1);
        let inc = me.incarnation;
        self.apply_awareness(1);
        self.stats.refutations += 1;
        let a = self.my_alive();
        self.ml_queue
            .push(Some(self.cfg.name.clone()), wire::Msg::Alive(a).encode());
        self.events
            .push_back(SerfEvent::Refuted { incarnation: inc });
    }

    /// Changes this member's tags: a new incarnation carries them.
    pub fn set_tags(
        &mut self,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<(), &'static str> {
        let meta = super::messages::encode_tags(&tags);
        if meta.len() > 512 {
            return Err("tags exceed memberlist's 512-byte meta limit");
        }
        self.cfg.tags = tags.clone();
        if let Some(me) = self.members.get_mut(&self.cfg.name) {
            me.meta = meta;
            me.tags = tags;
            me.incarnation += 1;
        }
        let a = self.my_alive();
        self.ml_queue
            .push(Some(self.cfg.name.clone()), wire::Msg::Alive(a).encode());
        Ok(())
    }

    /// memberlist's `aliveNode`.
    pub(super) fn alive_node(&mut self, a: Alive, now: Time, _bootstrap: bool) {
        let local = a.node == self.cfg.name;
        if local && self.leaving.dead_claimed() {
            return;
        }
        if a.vsn.len() >= 3 && (a.vsn[0] == 0 || a.vsn[1] == 0 || a.vsn[0] > a.vsn[1]) {
            return self.drop_reason("bad_version");
        }
        let Some(ip) = ip_from(&a.addr) else {
            return self.drop_reason("bad_address");
        };
        if a.node.is_empty() || a.node.len() > 512 || a.meta.len() > 512 {
            return self.drop_reason("bad_alive");
        }
        let mut vsn = [0u8; 6];
        if a.vsn.len() >= 6 {
            vsn.copy_from_slice(&a.vsn[..6]);
        }
        let mut updates_node = false;
        let mut is_new = false;
        match self.members.get(&a.node) {
            None => {
                let mut m = Member::new(&a.node, ip, a.port, a.meta.clone(), 0, vsn, now);
                m.state = NodeState::Dead;
                m.status = super::Status::None;
                self.members.insert(a.node.clone(), m);
                // A new member goes in the probe order at a random place.
                let n = self.probe_order.len();
                let at = if n == 0 {
                    0
                } else {
                    rand::Rng::gen_range(&mut self.rng, 0..=n)
                };
                self.probe_order.insert(at, a.node.clone());
                self.est_nodes += 1;
                is_new = true;
            }
            Some(m) if m.ip != ip || m.port != a.port => {
                // Another address under a known name: only a member that left (or died
                // long ago) may be reclaimed; otherwise it is a name conflict.
                if m.state == NodeState::Left
                    || (m.state == NodeState::Dead
                        && now.saturating_since(m.state_change) > self.cfg.gossip_to_the_dead)
                {
                    updates_node = true;
                } else {
                    return self.drop_reason("name_conflict");
                }
            }
            Some(_) => {}
        }
        let Some(m) = self.members.get(&a.node) else {
            return;
        };
        if !local && !updates_node && !is_new && a.incarnation <= m.incarnation {
            return;
        }
        if local && a.incarnation < m.incarnation {
            return;
        }
        self.suspicions.remove(&a.node);
        let old_state = m.state;
        let old_meta = m.meta.clone();
        if local {
            if a.incarnation == m.incarnation && a.meta == m.meta && a.vsn == m.vsn.to_vec() {
                return;
            }
            self.refute(a.incarnation);
            return;
        }
        self.ml_queue
            .push(Some(a.node.clone()), wire::Msg::Alive(a.clone()).encode());
        let Some(m) = self.members.get_mut(&a.node) else {
            return;
        };
        if a.vsn.len() >= 6 {
            m.vsn = vsn;
        }
        m.incarnation = a.incarnation;
        m.meta = a.meta;
        m.ip = ip;
        m.port = a.port;
        if m.state != NodeState::Alive {
            m.state = NodeState::Alive;
            m.state_change = now;
        }
        let name = a.node;
        if old_state.dead_or_left() {
            // Back from the dead (or a new life after a leave): probed again, from a random
            // place in the round, as memberlist places a newcomer.
            if !self.probe_order.contains(&name) {
                let n = self.probe_order.len();
                let at = rand::Rng::gen_range(&mut self.rng, 0..=n);
                self.probe_order.insert(at, name.clone());
            }
            self.on_join(&name, now);
        } else if old_meta != self.members[&name].meta {
            self.on_update(&name);
        }
    }

    /// memberlist's `suspectNode`.
    pub(super) fn suspect_node(&mut self, s: Accuse, now: Time) {
        let Some(m) = self.members.get(&s.node) else {
            return;
        };
        if s.incarnation < m.incarnation {
            return;
        }
        if let Some(t) = self.suspicions.get_mut(&s.node) {
            if t.confirm(&s.from) {
                self.ml_queue
                    .push(Some(s.node.clone()), wire::Msg::Suspect(s).encode());
            }
            return;
        }
        if m.state != NodeState::Alive {
            return;
        }
        if s.node == self.cfg.name {
            return self.refute(s.incarnation);
        }
        self.ml_queue
            .push(Some(s.node.clone()), wire::Msg::Suspect(s.clone()).encode());
        let n = self.est_nodes;
        if let Some(m) = self.members.get_mut(&s.node) {
            m.incarnation = s.incarnation;
            m.state = NodeState::Suspect;
            m.state_change = now;
        }
        let mut k = self.cfg.suspicion_mult.saturating_sub(2);
        if (n as u32).saturating_sub(2) < k {
            k = 0;
        }
        let min = suspicion_timeout(self.cfg.suspicion_mult, n, self.cfg.probe_interval);
        let max = min * self.cfg.suspicion_max_timeout_mult;
        let mut confirmations = HashSet::new();
        confirmations.insert(s.from.clone());
        self.suspicions.insert(
            s.node.clone(),
            Suspicion {
                start: now,
                min,
                max,
                k,
                n: 0,
                confirmations,
                deadline: now + if k < 1 { min } else { max },
                state_change: now,
            },
        );
    }

    /// Suspicions that expired become dead claims.
    pub(super) fn suspicion_timers(&mut self, now: Time) {
        let due: Vec<(String, Time)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(n, s)| (n.clone(), s.state_change))
            .collect();
        for (name, change) in due {
            self.suspicions.remove(&name);
            let Some(m) = self.members.get(&name) else {
                continue;
            };
            if m.state == NodeState::Suspect && m.state_change == change {
                let d = Accuse {
                    incarnation: m.incarnation,
                    node: name,
                    from: self.cfg.name.clone(),
                };
                self.dead_node(d, now);
            }
        }
    }

    /// memberlist's `deadNode`.
    pub(super) fn dead_node(&mut self, d: Accuse, now: Time) {
        let Some(m) = self.members.get(&d.node) else {
            return;
        };
        if d.incarnation < m.incarnation {
            return;
        }
        self.suspicions.remove(&d.node);
        if m.state.dead_or_left() {
            return;
        }
        if d.node == self.cfg.name && !self.leaving.dead_claimed() {
            return self.refute(d.incarnation);
        }
        let left = d.node == d.from;
        let node = d.node.clone();
        self.ml_queue
            .push(Some(node.clone()), wire::Msg::Dead(d.clone()).encode());
        if let Some(m) = self.members.get_mut(&node) {
            m.incarnation = d.incarnation;
            m.state = if left {
                NodeState::Left
            } else {
                NodeState::Dead
            };
            m.state_change = now;
        }
        self.on_leave(&node, now);
    }

    /// The push-pull state to send: memberlist's members, then Serf's state.
    pub(super) fn local_state(&mut self, join: bool) -> Vec<u8> {
        let nodes: Vec<PushNode> = self
            .members
            .values()
            .filter(|m| m.status != super::Status::None || !m.state.dead_or_left())
            .map(|m| PushNode {
                name: m.name.clone(),
                addr: ip_bytes(m.ip),
                port: m.port,
                meta: m.meta.clone(),
                incarnation: m.incarnation,
                state: m.state.code(),
                vsn: m.vsn.to_vec(),
            })
            .collect();
        let user = self.serf_state().encode();
        wire::push_pull(join, &nodes, &user)
    }

    /// Merges a peer's push-pull state (memberlist's `mergeRemoteState`).
    pub(super) fn merge_remote(
        &mut self,
        join: bool,
        nodes: Vec<PushNode>,
        user: &[u8],
        now: Time,
    ) {
        if let Err(reason) = self.verify_protocol(&nodes) {
            return self.drop_reason(reason);
        }
        for r in nodes {
            match r.state {
                0 => self.alive_node(
                    Alive {
                        incarnation: r.incarnation,
                        node: r.name,
                        addr: r.addr,
                        port: r.port,
                        meta: r.meta,
                        vsn: r.vsn,
                    },
                    now,
                    false,
                ),
                3 => self.dead_node(
                    Accuse {
                        incarnation: r.incarnation,
                        from: r.name.clone(),
                        node: r.name,
                    },
                    now,
                ),
                1 | 2 => {
                    let from = self.cfg.name.clone();
                    self.suspect_node(
                        Accuse {
                            incarnation: r.incarnation,
                            node: r.name,
                            from,
                        },
                        now,
                    )
                }
                _ => self.drop_reason("bad_state"),
            }
        }
        self.merge_serf_state(user, join);
    }

    /// memberlist's `verifyProtocol`: every live member's current versions within every
    /// live member's range.
    fn verify_protocol(&self, remote: &[PushNode]) -> Result<(), &'static str> {
        let ranges = remote
            .iter()
            .filter(|r| r.state == 0 && r.vsn.len() >= 6)
            .map(|r| (r.vsn[0], r.vsn[1], r.vsn[3], r.vsn[4]))
            .chain(
                self.members
                    .values()
                    .filter(|m| m.state == NodeState::Alive)
                    .map(|m| (m.vsn[0], m.vsn[1], m.vsn[3], m.vsn[4])),
            );
        let (mut pmin, mut pmax, mut dmin, mut dmax) = (0u8, u8::MAX, 0u8, u8::MAX);
        for (a, b, c, d) in ranges {
            pmin = pmin.max(a);
            pmax = pmax.min(b);
            dmin = dmin.max(c);
            dmax = dmax.min(d);
        }
        let currents = remote
            .iter()
            .map(|r| {
                if r.vsn.len() >= 6 {
                    (r.vsn[2], r.vsn[5])
                } else {
                    (0, 0)
                }
            })
            .chain(
                self.members
                    .values()
                    .filter(|m| m.state == NodeState::Alive)
                    .map(|m| (m.vsn[2], m.vsn[5])),
            );
        for (p, d) in currents {
            if p < pmin || p > pmax || d < dmin || d > dmax {
                return Err("incompatible_version");
            }
        }
        Ok(())
    }
}
