//! Service discovery: services registered with this agent (config file or Consul's
//! `/v1/agent/service/register`), their health checks run here (HTTP, TCP, script, TTL),
//! and each service with its checks' status published in this member's own state under
//! `svc/ID`, so every member holds the catalog. The catalog is read back from every
//! member's state together with membership: an instance on a member that is not alive is
//! critical, as Consul's `serfHealth` makes it.

mod catalog;
mod checks;
mod defs;
mod records;

pub use catalog::spawn_catalog;
pub use defs::*;
pub use records::*;

use checks::{http_check, script_check, tcp_check};
use grapevine::Node;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The per-node state key prefix services are published under.
pub const KEY_PREFIX: &str = "svc/";

/// The per-node state key a member's node-level checks are published under. Service ids
/// cannot contain '/', so it never names a service.
pub const NODE_KEY: &str = "svc//node";

/// The registry slot of a node-level check: '/' first, which no service id has.
fn node_slot(check_id: &str) -> String {
    format!("/{check_id}")
}

/// Consul's id and name for node maintenance mode.
const NODE_MAINTENANCE: &str = "_node_maintenance";

/// A registered service (or, in a '/' slot, a node-level check) with its checks' current
/// results.
struct Registered {
    def: ServiceDef,
    checks: Vec<CheckRecord>,
    tasks: Vec<JoinHandle<()>>,
    /// TTL checks: their TTL and when they were last updated.
    ttl: Vec<Option<(Duration, Instant)>>,
    /// Per check: deregister the service once the check has been critical this long.
    reap_after: Vec<Option<Duration>>,
    /// Per check: since when it has been critical.
    critical_since: Vec<Option<Instant>>,
    /// Maintenance mode's reason, while it is on.
    maintenance: Option<String>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What can go wrong registering a service or a check.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A check with none or several of HTTP, TCP, Args and TTL.
    #[error("check {0:?} must have exactly one of HTTP, TCP, Args or TTL")]
    CheckKind(String),
    /// A duration that does not parse.
    #[error("{what} {value:?} is not a duration (like 10s, 500ms, 1m30s)")]
    Duration {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// No such check.
    #[error("no TTL check {0:?} is registered here")]
    NoCheck(String),
    /// No such service.
    #[error("Unknown service ID {0:?}")]
    NoService(String),
    /// A bad name or id.
    #[error("a service needs a name, and its id may not contain '/'")]
    BadName,
    /// A check registered without a name (Consul's words).
    #[error("Missing check name")]
    NoCheckName,
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

/// A check registered here, as `/v1/agent/checks` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalCheck {
    /// Its result.
    pub record: CheckRecord,
    /// Its service's id and name (empty for a node-level check).
    pub service: (String, String),
    /// Its service's tags.
    pub service_tags: Vec<String>,
}

/// The services and checks registered with this agent.
#[derive(Clone)]
pub struct Registry {
    node: Node,
    inner: Arc<Mutex<BTreeMap<String, Registered>>>,
    scripts: ScriptChecks,
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

/// Checks ready to run: their first records and how to run them.
struct Prepared {
    checks: Vec<CheckRecord>,
    ttl: Vec<Option<(Duration, Instant)>>,
    reap_after: Vec<Option<Duration>>,
    runs: Vec<(CheckDef, Duration, Duration)>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registered>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of the service registered here as `id`.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.lock()
            .get(id)
            .filter(|_| !id.starts_with('/'))
            .map(|r| r.def.name.clone())
    }

    /// The name of the service whose check is `check_id` (`None` for node-level checks).
    pub fn service_of_check(&self, check_id: &str) -> Option<String> {
        self.lock()
            .iter()
            .filter(|(slot, _)| !slot.starts_with('/'))
            .find(|(_, r)| r.checks.iter().any(|c| c.check_id == check_id))
            .map(|(_, r)| r.def.name.clone())
    }

    /// Validates check definitions and makes their first records; `default_id` names the
    /// i-th check when it has no id, `default_name` when it has no name.
    fn prepare(
        &self,
        defs: &[CheckDef],
        origin: Origin,
        default_id: impl Fn(usize) -> String,
        default_name: &str,
    ) -> Result<Prepared, RegisterError> {
        let scripts_allowed = self.scripts.api || (origin == Origin::Config && self.scripts.local);
        if !scripts_allowed && defs.iter().any(|c| c.args.is_some()) {
            return Err(RegisterError::ScriptsDisabled);
        }
        let mut p = Prepared {
            checks: Vec::new(),
            ttl: Vec::new(),
            reap_after: Vec::new(),
            runs: Vec::new(),
        };
        for (i, c) in defs.iter().enumerate() {
            let check_id = c.check_id.clone().unwrap_or_else(|| default_id(i));
            let kinds = [
                c.http.is_some(),
                c.tcp.is_some(),
                c.args.is_some(),
                c.ttl.is_some(),
            ];
            if kinds.iter().filter(|x| **x).count() != 1 {
                return Err(RegisterError::CheckKind(check_id));
            }
            let interval = parse_duration("Interval", &c.interval, Duration::from_secs(10))?;
            let timeout = parse_duration("Timeout", &c.timeout, Duration::from_secs(10))?;
            p.ttl.push(match &c.ttl {
                Some(_) => Some((
                    parse_duration("TTL", &c.ttl, Duration::from_secs(30))?,
                    Instant::now(),
                )),
                None => None,
            });
            p.reap_after
                .push(match &c.deregister_critical_service_after {
                    Some(_) => Some(parse_duration(
                        "DeregisterCriticalServiceAfter",
                        &c.deregister_critical_service_after,
                        Duration::ZERO,
                    )?),
                    None => None,
                });
            p.runs
                .push((c.clone(), interval.max(Duration::from_millis(100)), timeout));
            p.checks.push(CheckRecord {
                name: c.name.clone().unwrap_or_else(|| default_name.to_string()),
                check_id,
                status: c.status.unwrap_or(Status::Critical),
                output: String::new(),
                notes: c.notes.clone().unwrap_or_default(),
            });
        }
        Ok(p)
    }

    /// Puts `def` in `slot` with its prepared checks running, and publishes it.
    async fn install(
        &self,
        slot: String,
        def: ServiceDef,
        p: Prepared,
        maintenance: Option<String>,
    ) {
        let critical_since = p
            .checks
            .iter()
            .map(|c| (c.status == Status::Critical).then(Instant::now))
            .collect();
        let mut tasks = Vec::new();
        for (i, (c, interval, timeout)) in p.runs.into_iter().enumerate() {
            let me = self.clone();
            let slot = slot.clone();
            tasks.push(tokio::spawn(async move {
                me.run_check(slot, i, c, interval, timeout).await;
            }));
        }
        self.lock().insert(
            slot.clone(),
            Registered {
                def,
                checks: p.checks,
                tasks,
                ttl: p.ttl,
                reap_after: p.reap_after,
                critical_since,
                maintenance,
            },
        );
        self.publish(&slot).await;
    }

    /// Registers (or replaces) a service and starts its checks.
    pub async fn register(&self, def: ServiceDef, origin: Origin) -> Result<(), RegisterError> {
        let id = def.id().to_string();
        if def.name.is_empty() || id.is_empty() || id.contains('/') {
            return Err(RegisterError::BadName);
        }
        let defs: Vec<CheckDef> = def.check.iter().chain(&def.checks).cloned().collect();
        let many = defs.len() > 1;
        let p = self.prepare(
            &defs,
            origin,
            |i| {
                if many {
                    format!("service:{id}:{}", i + 1)
                } else {
                    format!("service:{id}")
                }
            },
            &format!("Service '{}' check", def.name),
        )?;
        // Re-registering keeps maintenance mode on, as Consul's agent does.
        let maintenance = self.lock().get(&id).and_then(|r| r.maintenance.clone());
        self.install(id.clone(), def, p, maintenance).await;
        tracing::info!(service = %id, "service registered");
        Ok(())
    }

    /// Registers a check (`/v1/agent/check/register`, `[[checks]]`): on the service
    /// `ServiceID` names, else on this node.
    pub async fn register_check(&self, c: CheckDef, origin: Origin) -> Result<(), RegisterError> {
        if let Some(sid) = c.service_id.clone().filter(|s| !s.is_empty()) {
            let mut def = self
                .lock()
                .get(&sid)
                .filter(|_| !sid.starts_with('/'))
                .map(|r| r.def.clone())
                .ok_or(RegisterError::NoService(sid))?;
            let id = c.check_id.clone().or_else(|| c.name.clone());
            let mut c = c;
            c.check_id = id;
            // The same id replaces the check, as Consul's does.
            def.checks
                .retain(|x| x.check_id.is_none() || x.check_id != c.check_id);
            if def.check.as_ref().is_some_and(|x| x.check_id == c.check_id) {
                def.check = None;
            }
            def.checks.push(c);
            return self.register(def, origin).await;
        }
        let name = c
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(RegisterError::NoCheckName)?;
        let id = c.check_id.clone().unwrap_or_else(|| name.clone());
        let p = self.prepare(std::slice::from_ref(&c), origin, |_| id.clone(), &name)?;
        let def = ServiceDef {
            name: id.clone(),
            ..ServiceDef::default()
        };
        self.install(node_slot(&id), def, p, None).await;
        tracing::info!(check = %id, "node check registered");
        Ok(())
    }

    /// Deregisters a check, of this node or of a service; `false` if none has that id.
    pub async fn deregister_check(&self, check_id: &str) -> Result<bool, RegisterError> {
        let slot = node_slot(check_id);
        if self.lock().remove(&slot).is_some() {
            self.publish(&slot).await;
            return Ok(true);
        }
        let service = self
            .lock()
            .iter()
            .filter(|(s, _)| !s.starts_with('/'))
            .find(|(_, r)| r.checks.iter().any(|c| c.check_id == check_id))
            .map(|(_, r)| {
                (
                    r.def.clone(),
                    r.checks.iter().position(|c| c.check_id == check_id),
                )
            });
        let Some((mut def, Some(i))) = service else {
            return Ok(false);
        };
        let mut defs: Vec<CheckDef> = def.check.take().into_iter().chain(def.checks).collect();
        defs.remove(i);
        def.checks = defs;
        self.register(def, Origin::Config).await?;
        Ok(true)
    }

    /// Turns node maintenance mode on (with a reason) or off: a critical check on this node
    /// that every member sees.
    pub async fn node_maintenance(&self, reason: Option<&str>) {
        let slot = node_slot(NODE_MAINTENANCE);
        match reason {
            Some(reason) => {
                let record = CheckRecord {
                    check_id: NODE_MAINTENANCE.into(),
                    name: "Node Maintenance Mode".into(),
                    status: Status::Critical,
                    output: String::new(),
                    notes: reason.to_string(),
                };
                let p = Prepared {
                    checks: vec![record],
                    ttl: vec![None],
                    reap_after: vec![None],
                    runs: Vec::new(),
                };
                let def = ServiceDef {
                    name: NODE_MAINTENANCE.into(),
                    ..ServiceDef::default()
                };
                self.install(slot, def, p, None).await;
                tracing::warn!(reason, "node maintenance mode on");
            }
            None => {
                if self.lock().remove(&slot).is_some() {
                    self.publish(&slot).await;
                    tracing::info!("node maintenance mode off");
                }
            }
        }
    }

    /// Turns a service's maintenance mode on (with a reason) or off.
    pub async fn service_maintenance(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<(), RegisterError> {
        {
            let mut inner = self.lock();
            let r = inner
                .get_mut(id)
                .filter(|_| !id.starts_with('/'))
                .ok_or_else(|| RegisterError::NoService(id.to_string()))?;
            r.maintenance = reason.map(str::to_string);
        }
        tracing::info!(
            service = id,
            on = reason.is_some(),
            "service maintenance mode"
        );
        self.publish(id).await;
        Ok(())
    }

    /// Deregisters a service; `false` if none has that id.
    pub async fn deregister(&self, id: &str) -> bool {
        if id.starts_with('/') {
            return false;
        }
        let found = self.lock().remove(id).is_some();
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
        self.lock()
            .iter()
            .filter(|(slot, _)| !slot.starts_with('/'))
            .map(|(_, r)| record(r))
            .collect()
    }

    /// Every check registered here, node-level ones first.
    pub fn local_checks(&self) -> Vec<LocalCheck> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (slot, r) in inner.iter().filter(|(s, _)| s.starts_with('/')) {
            let _ = slot;
            for c in &r.checks {
                out.push(LocalCheck {
                    record: c.clone(),
                    service: (String::new(), String::new()),
                    service_tags: Vec::new(),
                });
            }
        }
        for r in inner
            .iter()
            .filter(|(s, _)| !s.starts_with('/'))
            .map(|(_, r)| r)
        {
            let rec = record(r);
            for c in rec.checks {
                out.push(LocalCheck {
                    record: c,
                    service: (rec.id.clone(), rec.name.clone()),
                    service_tags: rec.tags.clone(),
                });
            }
        }
        out
    }

    /// Updates a TTL check (`/v1/agent/check/pass|warn|fail/ID`).
    pub async fn update_ttl(
        &self,
        check_id: &str,
        status: Status,
        note: &str,
    ) -> Result<(), RegisterError> {
        let slot = {
            let mut inner = self.lock();
            let mut found = None;
            for (slot, r) in inner.iter_mut() {
                if let Some(i) = r.checks.iter().position(|c| c.check_id == check_id) {
                    if let Some((ttl, _)) = r.ttl[i] {
                        r.ttl[i] = Some((ttl, Instant::now()));
                        r.checks[i].status = status;
                        r.checks[i].output = note.to_string();
                        r.critical_since[i] = match (status, r.critical_since[i]) {
                            (Status::Critical, Some(t)) => Some(t),
                            (Status::Critical, None) => Some(Instant::now()),
                            _ => None,
                        };
                        found = Some(slot.clone());
                    }
                    break;
                }
            }
            found.ok_or_else(|| RegisterError::NoCheck(check_id.to_string()))?
        };
        self.publish(&slot).await;
        Ok(())
    }

    /// Records a check's result; publishes if it changed.
    async fn set_status(&self, slot: &str, i: usize, status: Status, output: String) {
        let changed = {
            let mut inner = self.lock();
            let Some(r) = inner.get_mut(slot) else {
                return;
            };
            let Some(c) = r.checks.get_mut(i) else {
                return;
            };
            let changed = c.status != status;
            if changed {
                tracing::info!(slot, check = %c.check_id, ?status, output = %output, "check changed");
            }
            c.status = status;
            c.output = output;
            if let Some(since) = r.critical_since.get_mut(i) {
                *since = match (status, *since) {
                    (Status::Critical, Some(t)) => Some(t),
                    (Status::Critical, None) => Some(Instant::now()),
                    _ => None,
                };
            }
            changed
        };
        if changed {
            self.publish(slot).await;
        }
    }

    /// Deregisters the service in `slot` if its check `i` has been critical longer than
    /// its `DeregisterCriticalServiceAfter`, as Consul's agent does. Runs the removal on a
    /// task of its own: removing the service aborts the check task that calls this.
    fn reap_if_due(&self, slot: &str, i: usize) {
        if slot.starts_with('/') {
            return;
        }
        let due = {
            let inner = self.lock();
            inner.get(slot).is_some_and(|r| {
                match (
                    r.reap_after.get(i).copied().flatten(),
                    r.critical_since.get(i).copied().flatten(),
                ) {
                    (Some(after), Some(since)) => since.elapsed() >= after,
                    _ => false,
                }
            })
        };
        if due {
            let me = self.clone();
            let id = slot.to_string();
            tracing::warn!(service = %id, "deregistering a service critical past DeregisterCriticalServiceAfter");
            tokio::spawn(async move {
                me.deregister(&id).await;
            });
        }
    }

    async fn publish(&self, slot: &str) {
        if slot.starts_with('/') {
            let checks: Vec<CheckRecord> = {
                let inner = self.lock();
                inner
                    .iter()
                    .filter(|(s, _)| s.starts_with('/'))
                    .flat_map(|(_, r)| r.checks.clone())
                    .collect()
            };
            let r = if checks.is_empty() {
                self.node.delete_state(NODE_KEY).await.map(|_| ())
            } else {
                match serde_json::to_vec(&NodeRecord { checks }) {
                    Ok(json) => self.node.set_state(NODE_KEY, json).await.map(|_| ()),
                    Err(_) => Ok(()),
                }
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot publish the node's checks");
            }
            return;
        }
        let rec = self.lock().get(slot).map(record);
        if let Some(rec) = rec {
            if let Ok(json) = serde_json::to_vec(&rec) {
                if let Err(e) = self
                    .node
                    .set_state(&format!("{KEY_PREFIX}{slot}"), json)
                    .await
                {
                    tracing::warn!(service = %slot, error = %e, "cannot publish the service");
                }
            }
        }
    }

    async fn run_check(
        &self,
        slot: String,
        i: usize,
        c: CheckDef,
        interval: Duration,
        timeout: Duration,
    ) {
        if c.ttl.is_some() {
            // A TTL check turns critical when not updated in time.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let expired = {
                    let inner = self.lock();
                    inner
                        .get(&slot)
                        .and_then(|r| r.ttl.get(i).copied().flatten())
                        .is_some_and(|(ttl, at)| at.elapsed() > ttl)
                };
                if expired {
                    self.set_status(&slot, i, Status::Critical, "TTL expired".into())
                        .await;
                }
                self.reap_if_due(&slot, i);
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (status, output) = if let Some(url) = &c.http {
                http_check(checks::HttpCheck::of(url, &c), timeout).await
            } else if let Some(addr) = &c.tcp {
                tcp_check(addr, timeout).await
            } else if let Some(args) = &c.args {
                script_check(args, timeout).await
            } else {
                return;
            };
            self.set_status(&slot, i, status, output).await;
            self.reap_if_due(&slot, i);
        }
    }
}

fn record(r: &Registered) -> ServiceRecord {
    let id = r.def.id().to_string();
    let mut checks = r.checks.clone();
    if let Some(reason) = &r.maintenance {
        checks.push(CheckRecord {
            check_id: format!("_service_maintenance:{id}"),
            name: "Service Maintenance Mode".into(),
            status: Status::Critical,
            output: String::new(),
            notes: reason.clone(),
        });
    }
    ServiceRecord {
        id,
        name: r.def.name.clone(),
        tags: r.def.tags.clone(),
        address: r.def.address.clone().unwrap_or_default(),
        port: r.def.port,
        meta: r.def.meta.clone(),
        checks,
        weights: r.def.weights.unwrap_or_default(),
        tagged_addresses: r.def.tagged_addresses.clone(),
        enable_tag_override: r.def.enable_tag_override.unwrap_or(false),
    }
}
