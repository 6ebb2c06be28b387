//! Failure detection: SWIM's probe (direct, then indirect through `indirect_checks`
//! members, with a reliable-channel fallback), Lifeguard's buddy system and awareness, and
//! phi-accrual on heartbeats as the alternative detector.
//!
//! Detection finds; it does not judge. A failed probe or a conviction returns an
//! [`Accusation`], which the node hands to membership, where suspicion and precedence live.

pub(crate) mod awareness;
pub(crate) mod messages;
pub(crate) mod phi;
pub(crate) mod probe;

use crate::config::{Config, Detector};
use crate::detection::messages::{Ack, IndirectPing, Nack, Ping};
use crate::member::State;
use crate::membership::messages::Suspect;
use crate::membership::suspicion::{Suspicion, Suspicions};
use crate::message::Message;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::roots::Roots;
use crate::stats::DropReason;
use crate::time::Time;
use crate::wire::NodeAddr;
use hashbrown::HashMap;
use phi::PhiDetector;
use probe::{Phase, Probe, Relay};
use rand::Rng;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

/// This node's finding that a member at an incarnation is unreachable.
pub(crate) struct Accusation {
    pub name: Name,
    pub incarnation: u32,
}

/// The probe in flight, the probes run for others, and the heartbeats watched.
pub(crate) struct Detection {
    probe: Option<Probe>,
    /// When the next probe starts.
    next_probe: Time,
    relays: HashMap<u32, Relay>,
    /// Suspects owed a last-chance probe before they are declared dead.
    final_probes: Vec<Name>,
    /// When a probe answered only over TCP was last logged, and how many since.
    fallback_logged: Option<Time>,
    fallbacks_unlogged: u64,
    /// Round trips of direct probes not yet taken by `take_rtt_samples`, if recorded.
    rtt_samples: Option<VecDeque<Duration>>,
    /// Heartbeat arrivals, for phi-accrual detection.
    pub phi: PhiDetector,
    /// The next heartbeat and phi check (phi-accrual detection only).
    next_heartbeat: Time,
}

impl Detection {
    /// Detection with its first probe at `first_probe`.
    pub fn new(config: &Config, now: Time, first_probe: Time) -> Detection {
        Detection {
            probe: None,
            next_probe: first_probe,
            relays: HashMap::new(),
            final_probes: Vec::new(),
            fallback_logged: None,
            fallbacks_unlogged: 0,
            rtt_samples: None,
            phi: PhiDetector::new(config.detection.heartbeat_interval),
            next_heartbeat: if config.detection.detector == Detector::Swim {
                Time::MAX
            } else {
                now + config.detection.heartbeat_interval
            },
        }
    }

    /// When detection next needs the clock.
    pub fn deadline(&self) -> Time {
        let mut next = self.next_probe.min(self.next_heartbeat);
        if let Some(p) = &self.probe {
            next = next.min(if p.phase == Phase::Direct {
                p.direct_deadline
            } else {
                p.end
            });
        }
        for r in self.relays.values() {
            next = next.min(r.deadline);
        }
        next
    }

    /// Stops probing (the node is leaving).
    pub fn stop(&mut self) {
        self.probe = None;
    }

    /// The probe in flight (its target, start and end), and the suspects owed a
    /// last-chance probe, for membership's suspicion timers.
    pub fn for_suspicions(&mut self) -> (Option<(&Name, Time, Time)>, &mut Vec<Name>) {
        let running = self.probe.as_ref().map(|p| (&p.target, p.started, p.end));
        (running, &mut self.final_probes)
    }

    /// The probe in flight at `now`, for people.
    pub fn probe_view(&self, now: Time) -> Option<crate::inspect::ProbeView> {
        self.probe.as_ref().map(|p| crate::inspect::ProbeView {
            target: p.target.clone(),
            age: now.saturating_since(p.started),
            indirect: p.phase == probe::Phase::Indirect,
        })
    }

    /// Starts keeping each direct probe's round trip.
    pub fn record_rtt_samples(&mut self) {
        self.rtt_samples.get_or_insert_with(VecDeque::new);
    }

    /// The round trips recorded since the last call, oldest first.
    pub fn take_rtt_samples(&mut self) -> Vec<Duration> {
        self.rtt_samples
            .as_mut()
            .map(|s| s.drain(..).collect())
            .unwrap_or_default()
    }

    /// Moves the probe in flight on: indirect once the direct timeout passed, failed once
    /// its interval ended (an accusation, if the target is still live at the probed
    /// incarnation).
    pub fn progress(
        &mut self,
        ctx: &mut Ctx,
        suspicions: &mut Suspicions,
        now: Time,
        roots: &Roots,
    ) -> Option<Accusation> {
        let p = self.probe.as_ref()?;
        if p.phase == Phase::Direct && now >= p.direct_deadline {
            self.go_indirect(ctx, roots);
        }
        if self.probe.as_ref().is_some_and(|p| now >= p.end) {
            return self.probe_failed(ctx, suspicions, now);
        }
        None
    }

    /// When the next probe is due.
    pub fn probe_due(&self) -> Time {
        self.next_probe
    }

    /// Starts the next probe: of a suspect owed a last chance, else of the next member in
    /// the probe order.
    pub fn start_probe(
        &mut self,
        ctx: &mut Ctx,
        suspicions: &mut Suspicions,
        now: Time,
        roots: &Roots,
    ) {
        self.next_probe = now + ctx.awareness.scale(ctx.config.detection.probe_interval);
        if ctx.leaving || self.probe.is_some() || ctx.config.detection.detector == Detector::Phi {
            return;
        }
        let Some(idx) = self.next_probe_target(ctx, suspicions) else {
            return;
        };
        let rec = ctx.members.get(idx);
        let (target, addr, incarnation) =
            (rec.name.clone(), ctx.members.addr_of(rec), rec.incarnation);
        let version = Ctx::version_for(rec.protocol());
        let seq = ctx.next_seq();
        self.probe = Some(Probe {
            seq,
            target: target.clone(),
            addr,
            incarnation,
            started: now,
            direct_deadline: now + ctx.awareness.scale(ctx.config.detection.probe_timeout),
            end: self.next_probe,
            phase: Phase::Direct,
            expected_nacks: 0,
            nacks: 0,
        });
        ctx.stats.probes += 1;
        let ping = ping(ctx, seq, target.clone(), roots);
        let end = self.next_probe;
        if let Some(s) = suspicion_mut(suspicions, &target) {
            s.probing(end);
        }
        // Buddy system: tell the suspect it is suspected, so it refutes at once. The
        // accusation goes first: the suspect's refutation is then queued before it answers
        // the ping, and its ack carries the refutation back.
        match buddy_accusation(ctx, &target) {
            Some(buddy) => ctx.send_packet(addr, version, &[buddy, ping]),
            None => ctx.send_packet(addr, version, &[ping]),
        }
    }

    /// The member to probe next: a suspect owed a last-chance probe (see
    /// `expire_suspicions`), picked at random so that nodes holding several share the work,
    /// else the next in the probe order.
    fn next_probe_target(&mut self, ctx: &mut Ctx, suspicions: &Suspicions) -> Option<u32> {
        while !self.final_probes.is_empty() {
            let i = ctx.rng.gen_range(0..self.final_probes.len());
            let name = self.final_probes.swap_remove(i);
            if suspicions.contains_key(&name) {
                if let Some(idx) = ctx.members.find(&name) {
                    return Some(idx);
                }
            }
        }
        ctx.order.next(
            &ctx.members,
            ctx.me_idx,
            ctx.config.detection.probe_selection,
            &mut ctx.rng,
        )
    }

    fn go_indirect(&mut self, ctx: &mut Ctx, roots: &Roots) {
        let Some(p) = &self.probe else { return };
        let (seq, target, addr) = (p.seq, p.target.clone(), p.addr);
        let target_idx = ctx.members.find(&target);
        let relays =
            ctx.random_members(ctx.config.detection.indirect_checks, target_idx, |_, r| {
                r.state == State::Alive
            });
        let req = Message::IndirectPing(IndirectPing {
            seq,
            target: NodeAddr {
                name: target.clone(),
                addr,
            },
            nack: true,
            requester: ctx.me.clone(),
        });
        for &r in &relays {
            let (dst, version) = ctx.dst_of(r);
            ctx.send_packet(dst, version, std::slice::from_ref(&req));
        }
        if ctx.config.detection.fallback_probe {
            let version = ctx.version_to(Some(&target));
            // The buddy system holds on this path too: a suspect that lost the direct ping
            // learns of the accusation here and answers with its denial (see `dispatch`).
            let buddy = buddy_accusation(ctx, &target);
            let ping = ping(ctx, seq, target, roots);
            match buddy {
                Some(accusation) => ctx.send_frame_of(addr, version, &[accusation, ping]),
                None => ctx.send_frame(addr, version, &ping),
            }
        }
        if let Some(p) = &mut self.probe {
            p.phase = Phase::Indirect;
            p.expected_nacks = relays.len() as u32;
        }
    }

    fn probe_failed(
        &mut self,
        ctx: &mut Ctx,
        suspicions: &mut Suspicions,
        now: Time,
    ) -> Option<Accusation> {
        let p = self.probe.take()?;
        ctx.stats.probes_failed += 1;
        if let Some(s) = suspicion_mut(suspicions, &p.target) {
            s.last_chance_failed(now);
        }
        // Lifeguard: missing nacks mean our own network or process is the problem.
        let delta = if p.expected_nacks > 0 {
            (p.expected_nacks - p.nacks.min(p.expected_nacks)) as i32
        } else {
            1
        };
        ctx.awareness.apply(delta);
        let idx = ctx.members.find(&p.target)?;
        let rec = ctx.members.get(idx);
        if !rec.state.is_live() || rec.incarnation != p.incarnation {
            return None;
        }
        Some(Accusation {
            name: p.target,
            incarnation: p.incarnation,
        })
    }

    /// Whether a ping is addressed to this node (counted as a drop if not).
    pub fn is_for_me(ctx: &mut Ctx, m: &Ping) -> bool {
        if m.target != ctx.me.name {
            ctx.stats.drop(DropReason::WrongTarget);
            return false;
        }
        true
    }

    /// Acks a ping: on the connection it came by, else piggybacking broadcasts to a member,
    /// else bare.
    pub fn answer_ping(ctx: &mut Ctx, from: SocketAddr, m: &Ping, reliable: bool) {
        let ack = Message::Ack(Ack { seq: m.seq });
        let version = ctx.rx_version;
        if reliable {
            // On the connection it came by (`from` is the address that connection proved).
            ctx.send_frame(from, version, &ack);
        } else if ctx.is_member_at(&m.source.name, from) {
            ctx.send_packet(from, version, &[ack]);
        } else {
            ctx.send_bare(from, version, &[ack]);
        }
    }

    /// Probes a member for another (SWIM's indirect probe).
    pub fn on_indirect_ping(
        &mut self,
        ctx: &mut Ctx,
        now: Time,
        from: SocketAddr,
        m: IndirectPing,
        roots: &Roots,
    ) {
        // Only for members, and only of members: otherwise anyone could make this node send
        // probes to any address.
        let target_known = ctx
            .members
            .find(&m.target.name)
            .is_some_and(|i| ctx.members.addr_of(ctx.members.get(i)) == m.target.addr);
        if !target_known || !ctx.is_member_at(&m.requester.name, from) {
            ctx.stats.drop(DropReason::NotMember);
            return;
        }
        if self.relays.len() >= MAX_RELAYS {
            ctx.stats.drop(DropReason::RateLimited);
            return;
        }
        let seq = ctx.next_seq();
        self.relays.insert(
            seq,
            Relay {
                requester: m.requester.addr,
                seq: m.seq,
                nack: m.nack,
                deadline: now + relay_timeout(&ctx.config),
                version: ctx.rx_version,
            },
        );
        let version = ctx.version_to(Some(&m.target.name));
        let ping = ping(ctx, seq, m.target.name, roots);
        ctx.send_packet(m.target.addr, version, &[ping]);
    }

    /// Takes an ack for the probe in flight or for a relay; returns it if neither's.
    pub fn on_ack(
        &mut self,
        ctx: &mut Ctx,
        suspicions: &mut Suspicions,
        now: Time,
        from: SocketAddr,
        m: Ack,
        reliable: bool,
    ) -> Option<Ack> {
        if let Some(p) = &self.probe {
            if p.seq == m.seq {
                let direct = p.phase == Phase::Direct;
                if direct {
                    ctx.awareness.apply(-1);
                    let rtt = now.saturating_since(p.started);
                    ctx.stats.rtt_micros_sum += rtt.as_micros() as u64;
                    ctx.stats.rtt_count += 1;
                    if let Some(samples) = &mut self.rtt_samples {
                        if samples.len() >= RTT_SAMPLES_MAX {
                            samples.pop_front();
                        }
                        samples.push_back(rtt);
                    }
                } else if reliable {
                    ctx.stats.fallback_acks += 1;
                    // Worth an operator's attention (memberlist warns each time), but under
                    // heavy loss it happens every few probes: at most one line per 10 s, with
                    // the count since the last.
                    self.fallbacks_unlogged += 1;
                    if self
                        .fallback_logged
                        .is_none_or(|t| now.saturating_since(t) >= FALLBACK_LOG_EVERY)
                    {
                        tracing::warn!(
                            member = %p.target.as_str(),
                            addr = %p.addr,
                            probes = self.fallbacks_unlogged,
                            "probe answered only over TCP: UDP to or from this member may be \
                             blocked"
                        );
                        self.fallback_logged = Some(now);
                        self.fallbacks_unlogged = 0;
                    }
                } else if from != p.addr {
                    ctx.stats.indirect_acks += 1;
                }
                if let Some(p) = self.probe.take() {
                    if let Some(s) = suspicion_mut(suspicions, &p.target) {
                        s.answered(now);
                    }
                }
                return None;
            }
        }
        if let Some(r) = self.relays.remove(&m.seq) {
            ctx.send_packet(r.requester, r.version, &[Message::Ack(Ack { seq: r.seq })]);
            return None;
        }
        Some(m)
    }

    /// Counts a relay's nack for the probe in flight.
    pub fn on_nack(&mut self, ctx: &mut Ctx, m: Nack) {
        match &mut self.probe {
            Some(p) if p.seq == m.seq => p.nacks += 1,
            _ => ctx.stats.drop(DropReason::Unexpected),
        }
    }

    /// Nacks the requesters of relays whose target never answered.
    pub fn expire_relays(&mut self, ctx: &mut Ctx, now: Time) {
        if self.relays.is_empty() {
            return;
        }
        let mut expired: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(s, _)| *s)
            .collect();
        expired.sort_unstable();
        for seq in expired {
            if let Some(r) = self.relays.remove(&seq) {
                if r.nack {
                    ctx.send_packet(
                        r.requester,
                        r.version,
                        &[Message::Nack(Nack { seq: r.seq })],
                    );
                }
            }
        }
    }

    /// When the next heartbeat is due (phi-accrual only).
    pub fn heartbeat_due(&self) -> Time {
        self.next_heartbeat
    }

    /// Phi-accrual's tick: schedules the next heartbeat and convicts the live members whose
    /// heartbeats have been silent past the threshold.
    pub fn convict(&mut self, ctx: &Ctx, now: Time) -> Vec<Accusation> {
        self.next_heartbeat = now + ctx.config.detection.heartbeat_interval;
        let mut out = Vec::new();
        for name in self.phi.over(ctx.config.detection.phi_threshold, now) {
            self.phi.forget(&name);
            let Some(idx) = ctx.members.find(&name) else {
                continue;
            };
            let rec = ctx.members.get(idx);
            if !rec.state.is_live() || idx == ctx.me_idx {
                continue;
            }
            let incarnation = rec.incarnation;
            out.push(Accusation { name, incarnation });
        }
        out
    }

    /// Heartbeats seen in per-node state (phi-accrual only).
    pub fn heartbeats(&mut self, config: &Config, now: Time, beats: Vec<Name>) {
        if config.detection.detector != Detector::Swim {
            for name in beats {
                self.phi.report(&name, now);
            }
        }
    }
}

/// A ping of `target`, carrying this node's roots fingerprinted with `seq`.
pub(crate) fn ping(ctx: &Ctx, seq: u32, target: Name, roots: &Roots) -> Message {
    Message::Ping(Ping {
        seq,
        target,
        source: ctx.me.clone(),
        roots: Some(roots.fingerprints(seq)),
    })
}

/// The accusation a probe of `target` carries (Lifeguard's buddy system): this node's
/// view that it is suspect, if it is and Lifeguard is on.
fn buddy_accusation(ctx: &Ctx, target: &Name) -> Option<Message> {
    if !ctx.config.detection.lifeguard {
        return None;
    }
    let rec = ctx.members.get(ctx.members.find(target)?);
    (rec.state == State::Suspect).then(|| {
        Message::Suspect(Suspect {
            name: target.clone(),
            incarnation: rec.incarnation,
            accuser: ctx.me.name.clone(),
        })
    })
}

/// This node's suspicion of `name`, if any. (Most probes and acks concern unsuspected
/// members: an empty table is answered without hashing the name.)
fn suspicion_mut<'a>(suspicions: &'a mut Suspicions, name: &Name) -> Option<&'a mut Suspicion> {
    if suspicions.is_empty() {
        return None;
    }
    suspicions.get_mut(name)
}

/// How long a relay waits for the target before it nacks: the nack must reach the
/// requester before its probe ends, a probe interval after it began and one probe
/// timeout after it went indirect, or Lifeguard would read every probe of a dead member
/// as missing nacks (this node's own fault) and slow the prober down. Four fifths of the
/// indirect phase leave room for the nack's trip.
fn relay_timeout(c: &Config) -> Duration {
    c.detection
        .probe_timeout
        .min(
            c.detection
                .probe_interval
                .saturating_sub(c.detection.probe_timeout),
        )
        .mul_f64(0.8)
}

/// At most one log line per this long about probes answered only over TCP.
const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(10);

/// The most indirect probes this node runs for others at once: each lives a fraction of a
/// probe interval, and members ask a few per interval.
const MAX_RELAYS: usize = 1024;

/// The most probe round trips kept for `take_rtt_samples` between two calls.
const RTT_SAMPLES_MAX: usize = 1024;
