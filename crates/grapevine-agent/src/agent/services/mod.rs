//! Service discovery: services registered with this agent (config file or Consul's
//! `/v1/agent/service/register`), their health checks run here (HTTP, TCP, script, TTL),
//! and each service with its checks' status published in this member's own state under
//! `svc/ID`, so every member holds the catalog. The catalog is read back from every
//! member's state together with membership: an instance on a member that is not alive is
//! critical, as Consul's `serfHealth` makes it.

mod catalog;
mod checks;

pub use catalog::spawn_catalog;

use checks::{http_check, script_check, tcp_check};
use grapevine::Node;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The per-node state key prefix services are published under.
pub const KEY_PREFIX: &str = "svc/";

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

/// A health check definition, Consul's fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CheckDef {
    /// Its id (default `service:SERVICE_ID`, numbered when there are several).
    #[serde(rename = "CheckID", alias = "ID", default)]
    pub check_id: Option<String>,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// GET this URL: 2xx passing, 429 warning, else critical.
    #[serde(rename = "HTTP", default)]
    pub http: Option<String>,
    /// Connect to this `host:port`: passing if it accepts.
    #[serde(rename = "TCP", default)]
    pub tcp: Option<String>,
    /// Run this: exit 0 passing, 1 warning, else critical.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Critical unless passed (`/v1/agent/check/pass/ID`) within this long.
    #[serde(rename = "TTL", default)]
    pub ttl: Option<String>,
    /// How often to run an HTTP, TCP or script check (default 10 s).
    #[serde(default)]
    pub interval: Option<String>,
    /// How long one run may take (default 10 s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The status before the first run (default critical).
    #[serde(default)]
    pub status: Option<Status>,
    /// Notes, ignored.
    #[serde(default)]
    pub notes: Option<String>,
    /// Consul's field, accepted and ignored (checks are never deregistered by time).
    #[serde(default)]
    pub deregister_critical_service_after: Option<String>,
}

/// A service registration, Consul's fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceDef {
    /// Unique on this agent (default: the name).
    #[serde(rename = "ID", default)]
    pub id: Option<String>,
    /// The service's name.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its address (default: this member's).
    #[serde(default)]
    pub address: Option<String>,
    /// Its port.
    #[serde(default)]
    pub port: u16,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// One check.
    #[serde(default)]
    pub check: Option<CheckDef>,
    /// More checks.
    #[serde(default)]
    pub checks: Vec<CheckDef>,
    /// Consul's field, accepted and ignored.
    #[serde(default)]
    pub enable_tag_override: Option<bool>,
}

impl ServiceDef {
    /// Its id.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }
}

/// Field names as Consul spells them. Consul (Go's JSON decoding) accepts any case, and
/// clients rely on it (python-consul sends `name`, `ttl`): keys are mapped to these before
/// parsing.
const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "EnableTagOverride",
];
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "HTTP",
    "TCP",
    "Args",
    "TTL",
    "Interval",
    "Timeout",
    "Status",
    "Notes",
    "DeregisterCriticalServiceAfter",
];

fn canonical_keys(v: &mut serde_json::Value, names: &[&str]) {
    if let serde_json::Value::Object(map) = v {
        let old = std::mem::take(map);
        for (k, val) in old {
            let key = names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&k))
                .map_or(k, |n| n.to_string());
            map.insert(key, val);
        }
    }
}

impl ServiceDef {
    /// Parses a registration as Consul does: field names in any case.
    pub fn from_json(body: &[u8]) -> Result<ServiceDef, serde_json::Error> {
        let mut v: serde_json::Value = serde_json::from_slice(body)?;
        canonical_keys(&mut v, SERVICE_FIELDS);
        if let Some(c) = v.get_mut("Check") {
            canonical_keys(c, CHECK_FIELDS);
        }
        if let Some(serde_json::Value::Array(cs)) = v.get_mut("Checks") {
            for c in cs {
                canonical_keys(c, CHECK_FIELDS);
            }
        }
        serde_json::from_value(v)
    }
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
}

/// A service as published in its member's state.
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

    /// Its worst status, its member's health included.
    pub fn status(&self) -> Status {
        let node = if self.node_alive {
            Status::Passing
        } else {
            Status::Critical
        };
        self.service
            .checks
            .iter()
            .map(|c| c.status)
            .fold(node, Ord::max)
    }

    /// Whether it has `tag` (any tag if `None`).
    pub fn has_tag(&self, tag: Option<&str>) -> bool {
        tag.is_none_or(|t| self.service.tags.iter().any(|x| x == t))
    }
}

/// Every instance of every service, as known here, in a stable order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// The instances, by service name then node then id.
    pub instances: Vec<Instance>,
}

impl Catalog {
    /// The instances of `name` with `tag`, passing ones only if asked.
    pub fn service(&self, name: &str, tag: Option<&str>, passing: bool) -> Vec<&Instance> {
        self.instances
            .iter()
            .filter(|i| i.service.name == name && i.has_tag(tag))
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
}

/// A registered service with its checks' current results.
struct Registered {
    def: ServiceDef,
    checks: Vec<CheckRecord>,
    tasks: Vec<JoinHandle<()>>,
    /// TTL checks: their TTL and when they were last updated.
    ttl: Vec<Option<(Duration, tokio::time::Instant)>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What can go wrong registering a service.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A check with none or several of HTTP, TCP, Args and TTL.
    #[error("check {0:?} must have exactly one of HTTP, TCP, Args or TTL")]
    CheckKind(String),
    /// A duration that does not parse.
    #[error("{what} {value:?} is not a duration (like 10s, 500ms, 1m)")]
    Duration {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// No such check.
    #[error("no TTL check {0:?} is registered here")]
    NoCheck(String),
    /// A bad name or id.
    #[error("a service needs a name, and its id may not contain '/'")]
    BadName,
    /// A script check where scripts are not allowed (Consul's words).
    #[error(
        "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or \
         'enable_local_script_checks' to true"
    )]
    ScriptsDisabled,
}

/// Where script checks may come from. Both off by default, as Consul has shipped since 0.9:
/// a script check runs a command as the agent's user, so whoever may register one over the
/// API may run anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptChecks {
    /// From the HTTP API and the config file (`enable_script_checks`).
    pub api: bool,
    /// From the config file only (`enable_local_script_checks`).
    pub local: bool,
}

/// Where a registration comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The HTTP API.
    Api,
    /// The agent's config file.
    Config,
}

/// The services registered with this agent.
#[derive(Clone)]
pub struct Registry {
    node: Node,
    inner: Arc<Mutex<BTreeMap<String, Registered>>>,
    scripts: ScriptChecks,
}

/// Parses Consul's durations: `10s`, `500ms`, `1m`, `1h`, or bare seconds.
pub fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return None,
    })
}

fn parse_duration(
    what: &'static str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, RegisterError> {
    match v {
        None => Ok(default),
        Some(s) => duration(s).ok_or(RegisterError::Duration {
            what,
            value: s.clone(),
        }),
    }
}

impl Registry {
    /// An empty registry publishing through `node`, taking script checks as `scripts` says.
    pub fn new(node: Node, scripts: ScriptChecks) -> Self {
        Registry {
            node,
            inner: Arc::new(Mutex::new(BTreeMap::new())),
            scripts,
        }
    }

    /// The name of the service registered here as `id`.
    pub fn name_of(&self, id: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.get(id).map(|r| r.def.name.clone())
    }

    /// The name of the service whose check is `check_id`.
    pub fn service_of_check(&self, check_id: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .values()
            .find(|r| r.checks.iter().any(|c| c.check_id == check_id))
            .map(|r| r.def.name.clone())
    }

    /// Registers (or replaces) a service and starts its checks.
    pub async fn register(&self, def: ServiceDef, origin: Origin) -> Result<(), RegisterError> {
        let id = def.id().to_string();
        if def.name.is_empty() || id.is_empty() || id.contains('/') {
            return Err(RegisterError::BadName);
        }
        let defs: Vec<CheckDef> = def.check.iter().chain(&def.checks).cloned().collect();
        let scripts_allowed = self.scripts.api || (origin == Origin::Config && self.scripts.local);
        if !scripts_allowed && defs.iter().any(|c| c.args.is_some()) {
            return Err(RegisterError::ScriptsDisabled);
        }
        let many = defs.len() > 1;
        let mut checks = Vec::new();
        let mut ttl = Vec::new();
        let mut kinds = Vec::new();
        for (i, c) in defs.iter().enumerate() {
            let check_id = c.check_id.clone().unwrap_or_else(|| {
                if many {
                    format!("service:{id}:{}", i + 1)
                } else {
                    format!("service:{id}")
                }
            });
            let n = [
                c.http.is_some(),
                c.tcp.is_some(),
                c.args.is_some(),
                c.ttl.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                return Err(RegisterError::CheckKind(check_id));
            }
            let interval = parse_duration("Interval", &c.interval, Duration::from_secs(10))?;
            let timeout = parse_duration("Timeout", &c.timeout, Duration::from_secs(10))?;
            let t = match &c.ttl {
                Some(_) => Some((
                    parse_duration("TTL", &c.ttl, Duration::from_secs(30))?,
                    tokio::time::Instant::now(),
                )),
                None => None,
            };
            ttl.push(t);
            kinds.push((c.clone(), interval.max(Duration::from_millis(100)), timeout));
            checks.push(CheckRecord {
                name: c
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("Service '{}' check", def.name)),
                check_id,
                status: c.status.unwrap_or(Status::Critical),
                output: String::new(),
            });
        }
        let mut tasks = Vec::new();
        for (i, (c, interval, timeout)) in kinds.into_iter().enumerate() {
            let me = self.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                me.run_check(id, i, c, interval, timeout).await;
            }));
        }
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.insert(
                id.clone(),
                Registered {
                    def,
                    checks,
                    tasks,
                    ttl,
                },
            );
        }
        tracing::info!(service = %id, "service registered");
        self.publish(&id).await;
        Ok(())
    }

    /// Deregisters a service; `false` if none has that id.
    pub async fn deregister(&self, id: &str) -> bool {
        let found = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.remove(id).is_some()
        };
        // A record published without a registration behind it (restored from the data
        // directory) goes too.
        let deleted = self
            .node
            .delete_state(&format!("{KEY_PREFIX}{id}"))
            .await
            .ok()
            .flatten()
            .is_some();
        if found || deleted {
            tracing::info!(service = %id, "service deregistered");
        }
        found || deleted
    }

    /// Removes the service records a restart restored from the data directory: their checks
    /// are not running any more, so their status would never change. Services from the
    /// config file are registered again right after; those registered over HTTP must be
    /// registered again (as with a Consul agent without persistence).
    pub async fn forget_restored(&self, keep: &[ServiceDef]) {
        let Ok(states) = self.node.node_states(Some(self.node.name().as_str())).await else {
            return;
        };
        for s in states {
            for (k, _, _) in &s.keys {
                let Some(id) = k.strip_prefix(KEY_PREFIX) else {
                    continue;
                };
                if !keep.iter().any(|d| d.id() == id) {
                    let _ = self.node.delete_state(k).await;
                    tracing::info!(service = %id, "dropped a service restored without its checks");
                }
            }
        }
    }

    /// The services registered here.
    pub fn local(&self) -> Vec<ServiceRecord> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.values().map(record).collect()
    }

    /// Updates a TTL check (`/v1/agent/check/pass|warn|fail/ID`).
    pub async fn update_ttl(
        &self,
        check_id: &str,
        status: Status,
        note: &str,
    ) -> Result<(), RegisterError> {
        let service = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            for (sid, r) in inner.iter_mut() {
                if let Some(i) = r.checks.iter().position(|c| c.check_id == check_id) {
                    if let Some((ttl, _)) = r.ttl[i] {
                        r.ttl[i] = Some((ttl, tokio::time::Instant::now()));
                        r.checks[i].status = status;
                        r.checks[i].output = note.to_string();
                        found = Some(sid.clone());
                    }
                    break;
                }
            }
            found.ok_or_else(|| RegisterError::NoCheck(check_id.to_string()))?
        };
        self.publish(&service).await;
        Ok(())
    }

    /// Records a check's result; publishes if it changed.
    async fn set_status(&self, service: &str, i: usize, status: Status, output: String) {
        let changed = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let Some(c) = inner.get_mut(service).and_then(|r| r.checks.get_mut(i)) else {
                return;
            };
            let changed = c.status != status;
            if changed {
                tracing::info!(service, check = %c.check_id, ?status, output = %output, "check changed");
            }
            c.status = status;
            c.output = output;
            changed
        };
        if changed {
            self.publish(service).await;
        }
    }

    async fn publish(&self, id: &str) {
        let rec = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.get(id).map(record)
        };
        if let Some(rec) = rec {
            if let Ok(json) = serde_json::to_vec(&rec) {
                if let Err(e) = self
                    .node
                    .set_state(&format!("{KEY_PREFIX}{id}"), json)
                    .await
                {
                    tracing::warn!(service = %id, error = %e, "cannot publish the service");
                }
            }
        }
    }

    async fn run_check(
        &self,
        service: String,
        i: usize,
        c: CheckDef,
        interval: Duration,
        timeout: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if c.ttl.is_some() {
            // A TTL check turns critical when not updated in time.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let expired = {
                    let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                    inner
                        .get(&service)
                        .and_then(|r| r.ttl.get(i).copied().flatten())
                        .is_some_and(|(ttl, at)| at.elapsed() > ttl)
                };
                if expired {
                    self.set_status(&service, i, Status::Critical, "TTL expired".into())
                        .await;
                }
            }
        }
        loop {
            tick.tick().await;
            let (status, output) = if let Some(url) = &c.http {
                http_check(url.clone(), timeout).await
            } else if let Some(addr) = &c.tcp {
                tcp_check(addr, timeout).await
            } else if let Some(args) = &c.args {
                script_check(args, timeout).await
            } else {
                return;
            };
            self.set_status(&service, i, status, output).await;
        }
    }
}

fn record(r: &Registered) -> ServiceRecord {
    ServiceRecord {
        id: r.def.id().to_string(),
        name: r.def.name.clone(),
        tags: r.def.tags.clone(),
        address: r.def.address.clone().unwrap_or_default(),
        port: r.def.port,
        meta: r.def.meta.clone(),
        checks: r.checks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_registration_json_parses() {
        let def = ServiceDef::from_json(
            br#"{"ID":"web-1","name":"web","Tags":["v1","primary"],"address":"10.0.0.5",
                "Port":8080,"Meta":{"version":"1.2", "name": "kept"},
                "check":{"http":"http://127.0.0.1:8080/health","Interval":"1s","Timeout":"500ms"},
                "Checks":[{"CheckID":"web-ttl","ttl":"15s"}]}"#,
        )
        .unwrap();
        assert_eq!(def.name, "web");
        assert_eq!(def.meta["name"], "kept", "metadata keys are the user's");
        assert!(def.check.as_ref().unwrap().http.is_some());
        assert_eq!(def.id(), "web-1");
        assert_eq!(def.checks[0].ttl.as_deref(), Some("15s"));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert!(serde_json::from_str::<ServiceDef>(r#"{"Name":"x","Bogus":1}"#).is_err());
    }

    #[test]
    fn an_instance_is_as_healthy_as_its_worst_check_and_its_member() {
        let check = |status| CheckRecord {
            check_id: "c".into(),
            name: "c".into(),
            status,
            output: String::new(),
        };
        let mut i = Instance {
            node: "a".into(),
            node_addr: "127.0.0.1".parse().unwrap(),
            node_alive: true,
            service: ServiceRecord {
                id: "web".into(),
                name: "web".into(),
                tags: vec!["v1".into()],
                address: String::new(),
                port: 80,
                meta: BTreeMap::new(),
                checks: vec![check(Status::Passing), check(Status::Warning)],
            },
        };
        assert_eq!(i.status(), Status::Warning);
        assert_eq!(i.address(), "127.0.0.1");
        assert!(i.has_tag(Some("v1")) && !i.has_tag(Some("v2")) && i.has_tag(None));
        i.service.checks.pop();
        assert_eq!(i.status(), Status::Passing);
        i.node_alive = false;
        assert_eq!(i.status(), Status::Critical);
    }
}
