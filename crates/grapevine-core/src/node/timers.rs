//! The node's clock: each protocol says when it next needs the clock (`deadline`), the
//! node's is the earliest of theirs, and `handle_timeout` runs every protocol's due ticks
//! in a fixed order (part of a seeded run's determinism).

use super::Node;
use crate::time::Time;

impl Node {
    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Time {
        self.detection
            .deadline()
            .min(self.membership.deadline(&self.ctx))
            .min(self.replication.deadline(&self.ctx.config))
            .min(self.rumors.deadline())
            .min(self.aggregation.deadline())
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        let roots = self.roots();
        let ctx = &mut self.ctx;
        let suspicions = &mut self.membership.suspicions;
        if let Some(a) = self.detection.progress(ctx, suspicions, now, &roots) {
            self.membership.accuse(ctx, now, a.name, a.incarnation);
        }
        if now >= self.detection.probe_due() {
            // A failed probe may have changed the table, and with it the roots pings carry.
            let roots = self.roots();
            let suspicions = &mut self.membership.suspicions;
            self.detection
                .start_probe(&mut self.ctx, suspicions, now, &roots);
        }
        let ctx = &mut self.ctx;
        self.detection.expire_relays(ctx, now);
        let (running, final_probes) = self.detection.for_suspicions();
        self.membership
            .expire_suspicions(ctx, now, running, final_probes);
        let roots = self.roots();
        let ctx = &mut self.ctx;
        self.membership.expire_candidates(ctx, now, &roots);
        self.membership.gossip_tick(ctx, now);
        self.membership.push_pull_tick(ctx, now);
        if self.membership.reconnect_tick(ctx, now) {
            self.rumors.tidy(now);
        }
        self.rumors.tick(ctx, now);
        if now >= self.detection.heartbeat_due() {
            self.replication.beat();
            for a in self.detection.convict(ctx, now) {
                self.membership.accuse(ctx, now, a.name, a.incarnation);
            }
        }
        self.replication.round(ctx, now);
        self.route_departures();
        self.aggregation.tick(&mut self.ctx, now);
    }
}
