//! The catalog, kept current from per-node state and membership.

use super::{Catalog, Instance, ServiceRecord, KEY_PREFIX};
use grapevine::{Node, State};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The catalog kept current from what changes: the per-node states whose version moved
/// (their `svc/` keys re-read), and membership after member events. Nothing is re-read while
/// nothing changes, and a change costs a look at each state's version, not a copy of every
/// state joined against every member (which once burned half a core at 10,000 members).
struct CatalogReader {
    node: Node,
    /// Per member: the (generation, version) its services were read at, and those services.
    services: std::collections::HashMap<String, ((u64, u64), Vec<ServiceRecord>)>,
    /// Per member: its IP and whether it is alive or suspect.
    members: std::collections::HashMap<String, (IpAddr, bool)>,
    root: Option<u64>,
}

impl CatalogReader {
    async fn refresh_members(&mut self) -> Option<()> {
        let members = self.node.members().await.ok()?;
        self.members = members
            .into_iter()
            .map(|m| {
                let alive = matches!(m.state, State::Alive | State::Suspect);
                (m.name.as_str().to_string(), (m.addr.ip(), alive))
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
            .filter(|(n, g, v)| self.services.get(n).is_none_or(|(at, _)| *at != (*g, *v)))
            .map(|(n, _, _)| n.clone())
            .collect();
        for chunk in changed.chunks(256) {
            let states = self
                .node
                .node_states_with_prefix(chunk, KEY_PREFIX)
                .await
                .ok()?;
            for s in states {
                let records = s
                    .keys
                    .iter()
                    .filter_map(|(_, v, _)| serde_json::from_slice::<ServiceRecord>(v).ok())
                    .collect();
                self.services
                    .insert(s.name.clone(), ((s.generation, s.version), records));
            }
        }
        self.root = Some(root);
        Some(true)
    }

    /// The catalog from what is held: instances of members known here.
    fn catalog(&self) -> Catalog {
        let mut instances = Vec::new();
        for (node, (_, records)) in &self.services {
            // A member that left or failed long ago, or was reaped, drops out of the catalog
            // when it is forgotten; until then it is listed critical.
            let Some(&(ip, alive)) = self.members.get(node) else {
                continue;
            };
            for service in records {
                instances.push(Instance {
                    node: node.clone(),
                    node_addr: ip,
                    node_alive: alive,
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
        Catalog { instances }
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
