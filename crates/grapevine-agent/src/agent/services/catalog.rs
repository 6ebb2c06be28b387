//! The catalog, kept current from per-node state and membership.

use super::{
    node_meta, Catalog, Instance, NodeEntry, NodeRecord, ServiceRecord, KEY_PREFIX, NODE_KEY,
};
use grapevine::{Node, State};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What one member publishes: the (generation, version) it was read at, its services, and
/// its node-level checks.
type Published = ((u64, u64), Vec<ServiceRecord>, NodeRecord);

/// The catalog kept current from what changes: the per-node states whose version moved
/// (their `svc/` keys re-read), and membership after member events. Nothing is re-read while
/// nothing changes, and a change costs a look at each state's version, not a copy of every
/// state joined against every member (which once burned half a core at 10,000 members).
struct CatalogReader {
    node: Node,
    /// Per member: the (generation, version) its services were read at, those services, and
    /// its node-level checks.
    services: std::collections::HashMap<String, Published>,
    /// Per member: its IP, whether it is alive or suspect, and its tags.
    members: std::collections::HashMap<String, (IpAddr, bool, Vec<u8>)>,
    root: Option<u64>,
}

impl CatalogReader {
    async fn refresh_members(&mut self) -> Option<()> {
        let members = self.node.members().await.ok()?;
        self.members = members
            .into_iter()
            .map(|m| {
                let alive = matches!(m.state, State::Alive | State::Suspect);
                (
                    m.name.as_str().to_string(),
                    (m.addr.ip(), alive, m.tags.to_vec()),
                )
            })
            .collect();
        Some(())
    }

    /// Re-reads the services of the states that changed, if any did; whether any did.
    async fn refresh_services(&mut self) -> Option<bool> {
        let root = self.node.node_states_root();
        if self.root == Some(root) {
            return Some(false);
        }
        let versions = self.node.node_state_versions().await.ok()?;
        let held: std::collections::HashSet<&String> = versions.iter().map(|(n, _, _)| n).collect();
        self.services.retain(|n, _| held.contains(n));
        let changed: Vec<String> = versions
            .iter()
            .filter(|(n, g, v)| {
                self.services
                    .get(n)
                    .is_none_or(|(at, _, _)| *at != (*g, *v))
            })
            .map(|(n, _, _)| n.clone())
            .collect();
        for chunk in changed.chunks(256) {
            let states = self
                .node
                .node_states_with_prefix(chunk, KEY_PREFIX)
                .await
                .ok()?;
            for s in states {
                let mut node = NodeRecord::default();
                let mut records = Vec::new();
                for (k, v, _) in &s.keys {
                    if k == NODE_KEY {
                        node = serde_json::from_slice(v).unwrap_or_default();
                    } else if let Ok(r) = serde_json::from_slice::<ServiceRecord>(v) {
                        records.push(r);
                    }
                }
                self.services
                    .insert(s.name.clone(), ((s.generation, s.version), records, node));
            }
        }
        self.root = Some(root);
        Some(true)
    }

    /// The catalog from what is held: members known here and their instances.
    fn catalog(&self) -> Catalog {
        let empty = NodeRecord::default();
        let mut nodes: Vec<NodeEntry> = self
            .members
            .iter()
            .map(|(name, (ip, alive, tags))| NodeEntry {
                name: name.clone(),
                addr: *ip,
                alive: *alive,
                meta: node_meta(tags),
                checks: self
                    .services
                    .get(name)
                    .map_or(&empty, |(_, _, n)| n)
                    .checks
                    .clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut instances = Vec::new();
        for (node, (_, records, node_record)) in &self.services {
            // A member that left or failed long ago, or was reaped, drops out of the catalog
            // when it is forgotten; until then it is listed critical.
            let Some((ip, alive, _)) = self.members.get(node) else {
                continue;
            };
            for service in records {
                instances.push(Instance {
                    node: node.clone(),
                    node_addr: *ip,
                    node_alive: *alive,
                    node_checks: node_record.checks.clone(),
                    service: service.clone(),
                });
            }
        }
        instances.sort_by(|a, b| {
            (&a.service.name, &a.node, &a.service.id).cmp(&(
                &b.service.name,
                &b.node,
                &b.service.id,
            ))
        });
        Catalog { nodes, instances }
    }
}

/// Keeps a catalog current, with an index that moves when it changes (what blocking queries
/// and the DNS server wait on and read): re-read only in part, and only when per-node state
/// or membership changed, at most every 200 ms (a burst of changes is read once). An idle
/// agent's catalog costs nothing.
pub fn spawn_catalog(node: Node) -> watch::Receiver<(u64, Arc<Catalog>)> {
    let (tx, rx) = watch::channel((1u64, Arc::new(Catalog::default())));
    tokio::spawn(async move {
        let mut events = node.events();
        let mut roots = node.node_states_watch();
        let mut reader = CatalogReader {
            node,
            services: Default::default(),
            members: Default::default(),
            root: None,
        };
        let mut members_changed = true;
        // Membership is re-read on member events, and every 10 s anyway: a subscriber that
        // falls behind a burst of events loses some.
        let mut reread = tokio::time::interval(Duration::from_secs(10));
        reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = reread.tick() => members_changed = true,
                    r = roots.changed() => {
                        if r.is_err() {
                            return;
                        }
                    }
                    e = events.next() => {
                        match e {
                            None => return,
                            Some(grapevine::Event::User { .. } | grapevine::Event::Agreement { .. }) => continue,
                            Some(_) => members_changed = true,
                        }
                    }
                }
                // Let a burst settle: what it brings meanwhile is read at once below.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            first = false;
            if tx.is_closed() {
                return;
            }
            roots.borrow_and_update();
            let Some(services_changed) = reader.refresh_services().await else {
                continue;
            };
            if members_changed {
                if reader.refresh_members().await.is_none() {
                    continue;
                }
                members_changed = false;
            } else if !services_changed {
                continue;
            }
            let c = reader.catalog();
            tx.send_if_modified(|(index, cur)| {
                if **cur == c {
                    return false;
                }
                *index += 1;
                *cur = Arc::new(c);
                true
            });
        }
    });
    rx
}
