//! What members publish and the catalog shows: services and checks with their results,
//! each member's node-level checks, and the catalog built from them.

use super::defs::Weights;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A check's status, Consul's words.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy.
    Passing,
    /// Degraded, still serving.
    Warning,
    /// Failing.
    Critical,
}

/// A check's result as published.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckRecord {
    /// Its id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// What the last run said.
    pub output: String,
    /// Notes for people (a maintenance reason, say).
    #[serde(default)]
    pub notes: String,
}

/// A service as published in its member's state. Fields after `checks` came later: records
/// from agents without them read as their defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRecord {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address ("" for the member's).
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Its checks.
    pub checks: Vec<CheckRecord>,
    /// Its weights in DNS SRV answers.
    #[serde(default)]
    pub weights: Weights,
    /// More addresses, by name.
    #[serde(default)]
    pub tagged_addresses: BTreeMap<String, serde_json::Value>,
    /// Consul's `EnableTagOverride`, as registered.
    #[serde(default)]
    pub enable_tag_override: bool,
}

/// A member's node-level checks as published (under [`super::NODE_KEY`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRecord {
    /// Its checks (maintenance mode included).
    pub checks: Vec<CheckRecord>,
}

/// A member as the catalog shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeEntry {
    /// Its name.
    pub name: String,
    /// Its IP.
    pub addr: IpAddr,
    /// Whether it is alive or suspect (Consul's `serfHealth` passing).
    pub alive: bool,
    /// Its tags, as Consul's node meta.
    pub meta: BTreeMap<String, String>,
    /// Its node-level checks.
    pub checks: Vec<CheckRecord>,
}

impl NodeEntry {
    /// Its checks as Consul lists them: `serfHealth` first, then its own.
    pub fn all_checks(&self) -> Vec<CheckRecord> {
        let mut out = vec![CheckRecord {
            check_id: "serfHealth".into(),
            name: "Serf Health Status".into(),
            status: if self.alive {
                Status::Passing
            } else {
                Status::Critical
            },
            output: if self.alive {
                "Agent alive and reachable".into()
            } else {
                "Agent not live or unreachable".into()
            },
            notes: String::new(),
        }];
        out.extend(self.checks.iter().cloned());
        out
    }
}

/// Reads member tags (`k=v,k=v`, as the agent's `--tag` writes them) as node meta.
pub fn node_meta(tags: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(tags)
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One instance of a service, as the catalog shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The member it runs on.
    pub node: String,
    /// That member's IP.
    pub node_addr: IpAddr,
    /// Whether that member is alive (Consul's `serfHealth`).
    pub node_alive: bool,
    /// That member's node-level checks (they count for the instance's health, as Consul's
    /// do).
    pub node_checks: Vec<CheckRecord>,
    /// The service.
    pub service: ServiceRecord,
}

impl Instance {
    /// Its address: the service's own, else its member's.
    pub fn address(&self) -> String {
        if self.service.address.is_empty() {
            self.node_addr.to_string()
        } else {
            self.service.address.clone()
        }
    }

    /// Its worst status, its member's health and node checks included.
    pub fn status(&self) -> Status {
        let node = if self.node_alive {
            Status::Passing
        } else {
            Status::Critical
        };
        self.service
            .checks
            .iter()
            .chain(&self.node_checks)
            .map(|c| c.status)
            .fold(node, Ord::max)
    }

    /// Whether it has every one of `tags`.
    pub fn has_tags(&self, tags: &[&str]) -> bool {
        tags.iter()
            .all(|t| self.service.tags.iter().any(|x| x == t))
    }
}

/// Every member and every instance of every service, as known here, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// The members, by name.
    pub nodes: Vec<NodeEntry>,
    /// The instances, by service name then node then id.
    pub instances: Vec<Instance>,
}

impl Catalog {
    /// The instances of `name` with every one of `tags`, passing ones only if asked.
    pub fn service(&self, name: &str, tags: &[&str], passing: bool) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| i.service.name == name && i.has_tags(tags))
            .filter(|i| !passing || i.status() == Status::Passing)
            .collect()
    }

    /// Service names with the union of their tags.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in &self.instances {
            let tags = out.entry(i.service.name.clone()).or_default();
            for t in &i.service.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        for tags in out.values_mut() {
            tags.sort();
        }
        out
    }

    /// The member named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_as_healthy_as_its_worst_check_and_its_member() {
        let check = |status| CheckRecord {
            check_id: "c".into(),
            name: "c".into(),
            status,
            output: String::new(),
            notes: String::new(),
        };
        let mut i = Instance {
            node: "a".into(),
            node_addr: "127.0.0.1".parse().unwrap(),
            node_alive: true,
            node_checks: Vec::new(),
            service: ServiceRecord {
                id: "web".into(),
                name: "web".into(),
                tags: vec!["v1".into()],
                address: String::new(),
                port: 80,
                meta: BTreeMap::new(),
                checks: vec![check(Status::Passing), check(Status::Warning)],
                weights: Weights::default(),
                tagged_addresses: BTreeMap::new(),
                enable_tag_override: false,
            },
        };
        assert_eq!(i.status(), Status::Warning);
        assert_eq!(i.address(), "127.0.0.1");
        assert!(i.has_tags(&["v1"]) && !i.has_tags(&["v1", "v2"]) && i.has_tags(&[]));
        i.service.checks.pop();
        assert_eq!(i.status(), Status::Passing);
        i.node_checks.push(check(Status::Critical));
        assert_eq!(i.status(), Status::Critical, "a node check counts");
        i.node_checks.clear();
        i.node_alive = false;
        assert_eq!(i.status(), Status::Critical);
    }
}
