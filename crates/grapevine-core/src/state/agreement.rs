//! Agreement checks, as Cassandra's schema versions: each node publishes, in its own state,
//! a hash of the value it holds of each tracked target, and reads every live member's.

use super::replication::Replication;
use super::target::{Agreement, Target, Versions};
use crate::event::Event;
use crate::name::Name;
use crate::node::context::Ctx;
use crate::time::Time;

impl Replication {
    /// The value of `key` in `name`'s state, unless deleted or expired.
    pub fn state_value(&self, now: Time, name: &Name, key: &str) -> Option<&[u8]> {
        let phys = self.physical(now);
        self.nodes.get(name)?.get(key, phys)
    }

    /// Starts publishing which value of `target` this node holds.
    pub fn track(&mut self, ctx: &mut Ctx, now: Time, target: Target) {
        if !self.tracking.tracked.contains(&target) {
            self.tracking.tracked.push(target);
        }
        self.publish_seen(ctx, now);
    }

    /// Whether every live member (this one included) publishes the value of `target` this
    /// node holds; if not, who publishes another or none.
    pub fn agreement(&self, ctx: &Ctx, now: Time, target: &Target) -> Agreement {
        let mine = self.seen_hash(now, target);
        let key = target.seen_key();
        let mut agreement = Agreement {
            agreed: true,
            differ: Vec::new(),
            unknown: Vec::new(),
        };
        for r in ctx.members.records() {
            if !r.state.is_live() {
                continue;
            }
            let published = self
                .state_value(now, &r.name, &key)
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_le_bytes);
            match published {
                Some(h) if h == mine => {}
                Some(_) => agreement.differ.push(r.name.clone()),
                None => agreement.unknown.push(r.name.clone()),
            }
        }
        agreement.agreed = agreement.differ.is_empty() && agreement.unknown.is_empty();
        agreement
    }

    /// The hash of the value of `target` held here (zero when absent).
    fn seen_hash(&self, now: Time, target: &Target) -> u64 {
        match target {
            Target::Shared(key) => self
                .keyspace
                .get(key, self.physical(now))
                .map_or(0, |v| crate::state::keyspace::item_hash(key, v)),
            Target::Keyspace => self.keyspace.tree().root(),
            Target::NodeKey(node, key) => self
                .state_value(now, node, key)
                .map_or(0, xxhash_rust::xxh3::xxh3_64),
        }
    }

    /// Publishes the hashes of the tracked targets that changed, and reports agreements
    /// reached or lost.
    pub fn publish_seen(&mut self, ctx: &mut Ctx, now: Time) {
        for i in 0..self.tracking.tracked.len() {
            let target = self.tracking.tracked[i].clone();
            let h = self.seen_hash(now, &target);
            let key = target.seen_key();
            let current = self
                .state_value(now, &ctx.me.name, &key)
                .map(|v| v.to_vec());
            if current.as_deref() != Some(&h.to_le_bytes()[..]) {
                self.set_own(&key, h.to_le_bytes().to_vec(), None, now);
            }
            let agreed = self.agreement(ctx, now, &target).agreed;
            let was = self.tracking.agreed.contains(&target);
            if agreed != was {
                if agreed {
                    self.tracking.agreed.push(target.clone());
                } else {
                    self.tracking.agreed.retain(|t| *t != target);
                }
                ctx.events.push_back(Event::Agreement {
                    target: target.clone(),
                    agreed,
                });
            }
        }
    }

    /// What each live member publishes under `key` of its own state, grouped by value
    /// (Cassandra's schema versions).
    pub fn versions(&self, ctx: &Ctx, now: Time, key: &str) -> Versions {
        let mut out = Versions::default();
        for r in ctx.members.records().filter(|r| r.state.is_live()) {
            let name = r.name.as_str().to_string();
            match self.state_value(now, &r.name, key) {
                Some(v) => out.versions.entry(v.to_vec()).or_default().push(name),
                None => out.unknown.push(name),
            }
        }
        for names in out.versions.values_mut() {
            names.sort();
        }
        out.unknown.sort();
        out.agreed = out.unknown.is_empty() && out.versions.len() == 1;
        out
    }
}
