//! Access control on the HTTP API, in Consul's terms: tokens (`X-Consul-Token`,
//! `Authorization: Bearer`, `?token=`) that carry rules granting `read` or `write` (or
//! `deny`) on resources by exact name or longest prefix: `key`, `service`, `event`, `node`,
//! `agent` (each with a `_prefix` form), `keyring` and `operator`. A request needs one
//! permission, worked out from its method and path ([`need`]); a handler that learns more
//! from the body (a service registration's name) checks again.
//!
//! With no token configured, everything is allowed, as before ACLs existed. With tokens, a
//! request without one, or with one not known here, gets the `anonymous` rules if any, else
//! the default policy (`deny` unless set to `allow`). Refusals answer 403 with Consul's
//! message (clients such as python-consul raise their permission error on it). Secrets are
//! compared in constant time and never logged.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Consul's AccessorID of the anonymous token.
pub const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000002";

/// What a rule grants.
#[derive(Deserialize, Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing, whatever a shorter prefix grants.
    Deny,
    /// Reads (`list` is Consul's read of key listings).
    #[serde(alias = "list")]
    Read,
    /// Reads and writes.
    Write,
}

/// Rules of a token (Consul's policy rules, as TOML tables of name or prefix → access).
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Shared keys by exact name.
    #[serde(default)]
    pub key: BTreeMap<String, Access>,
    /// Shared keys by prefix.
    #[serde(default)]
    pub key_prefix: BTreeMap<String, Access>,
    /// Services by exact name.
    #[serde(default)]
    pub service: BTreeMap<String, Access>,
    /// Services by prefix.
    #[serde(default)]
    pub service_prefix: BTreeMap<String, Access>,
    /// User events by exact name.
    #[serde(default)]
    pub event: BTreeMap<String, Access>,
    /// User events by prefix.
    #[serde(default)]
    pub event_prefix: BTreeMap<String, Access>,
    /// Members (and their per-node state) by exact name.
    #[serde(default)]
    pub node: BTreeMap<String, Access>,
    /// Members by prefix.
    #[serde(default)]
    pub node_prefix: BTreeMap<String, Access>,
    /// Agent operations (join, leave, metrics, self) by agent name.
    #[serde(default)]
    pub agent: BTreeMap<String, Access>,
    /// Agent operations by agent-name prefix.
    #[serde(default)]
    pub agent_prefix: BTreeMap<String, Access>,
    /// The gossip keyring.
    #[serde(default)]
    pub keyring: Option<Access>,
    /// Cluster operations (force-leave).
    #[serde(default)]
    pub operator: Option<Access>,
}

/// A resource kind, Consul's names.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Shared keys.
    Key,
    /// Services.
    Service,
    /// User events.
    Event,
    /// Members.
    Node,
    /// Agent operations.
    Agent,
    /// The keyring.
    Keyring,
    /// Cluster operations.
    Operator,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Service => "service",
            Resource::Event => "event",
            Resource::Node => "node",
            Resource::Agent => "agent",
            Resource::Keyring => "keyring",
            Resource::Operator => "operator",
        }
    }
}

/// The permission a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// On what kind.
    pub resource: Resource,
    /// Its name (or prefix, for a recursive request).
    pub name: String,
    /// Whether it writes.
    pub write: bool,
}

impl Need {
    /// Reading `name` of `resource`.
    pub fn read(resource: Resource, name: impl Into<String>) -> Need {
        Need {
            resource,
            name: name.into(),
            write: false,
        }
    }

    /// Writing `name` of `resource`.
    pub fn write(resource: Resource, name: impl Into<String>) -> Need {
        Need {
            resource,
            name: name.into(),
            write: true,
        }
    }
}

/// The access `exact` and `prefixes` give `name`: an exact rule, else the longest prefix.
fn lookup(
    exact: &BTreeMap<String, Access>,
    prefixes: &BTreeMap<String, Access>,
    name: &str,
) -> Option<Access> {
    exact.get(name).copied().or_else(|| {
        prefixes
            .iter()
            .filter(|(p, _)| name.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, a)| *a)
    })
}

impl Rules {
    /// The access these rules give for `need`, if any rule speaks of it.
    fn access(&self, need: &Need) -> Option<Access> {
        let n = need.name.as_str();
        match need.resource {
            Resource::Key => lookup(&self.key, &self.key_prefix, n),
            Resource::Service => lookup(&self.service, &self.service_prefix, n),
            Resource::Event => lookup(&self.event, &self.event_prefix, n),
            Resource::Node => lookup(&self.node, &self.node_prefix, n),
            Resource::Agent => lookup(&self.agent, &self.agent_prefix, n),
            Resource::Keyring => self.keyring,
            Resource::Operator => self.operator,
        }
    }

    fn allows(&self, need: &Need) -> bool {
        match self.access(need) {
            Some(Access::Write) => true,
            Some(Access::Read) => !need.write,
            Some(Access::Deny) | None => false,
        }
    }
}

/// A token as configured.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Its name, shown where Consul shows the AccessorID (never the secret).
    pub name: String,
    /// The secret, inline.
    #[serde(default)]
    pub secret: Option<String>,
    /// Or a file holding it (trimmed).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Everything allowed (Consul's global-management policy).
    #[serde(default)]
    pub management: bool,
    /// Its rules.
    #[serde(default)]
    pub rules: Rules,
}

/// The `[acl]` section of the config file.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// For requests without a token known here, when no `anonymous` rule decides: `deny`
    /// (the default) or `allow`.
    #[serde(default)]
    pub default_policy: Option<String>,
    /// Rules for requests without a token known here (Consul's anonymous token).
    #[serde(default)]
    pub anonymous: Option<Rules>,
    /// The tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A token that is not known here.
    UnknownToken,
    /// The token lacks the permission.
    Lacks {
        /// The token's accessor (its name, or the anonymous id).
        accessor: String,
        /// What was needed.
        need: Need,
    },
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Consul's words, which clients match on.
            Denied::UnknownToken => write!(f, "ACL not found"),
            Denied::Lacks { accessor, need } => write!(
                f,
                "Permission denied: token with AccessorID '{accessor}' lacks permission '{}:{}' on {:?}",
                need.resource.as_str(),
                if need.write { "write" } else { "read" },
                need.name
            ),
        }
    }
}

/// What a request may do.
#[derive(Clone, Debug, Default)]
pub enum Authz {
    /// Everything (no ACLs configured, or a management token).
    #[default]
    All,
    /// What a token's rules allow.
    Rules {
        /// Its accessor, for messages.
        accessor: String,
        /// Its rules.
        rules: Arc<Rules>,
    },
    /// An unknown token: nothing.
    Unknown,
}

impl Authz {
    /// `Ok` if allowed.
    pub fn check(&self, need: &Need) -> Result<(), Denied> {
        match self {
            Authz::All => Ok(()),
            Authz::Unknown => Err(Denied::UnknownToken),
            Authz::Rules { accessor, rules } => {
                if rules.allows(need) {
                    Ok(())
                } else {
                    Err(Denied::Lacks {
                        accessor: accessor.clone(),
                        need: need.clone(),
                    })
                }
            }
        }
    }

    /// Whether allowed (for filtering lists).
    pub fn allows(&self, need: &Need) -> bool {
        self.check(need).is_ok()
    }
}

/// The tokens known to this agent.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    /// Secret → (accessor, rules or `None` for management).
    tokens: HashMap<String, (String, Option<Arc<Rules>>)>,
    anonymous: Authz,
}

impl Acl {
    /// ACLs from the config file's section; secrets from files are read now.
    pub fn from_config(c: &AclConfig) -> anyhow::Result<Acl> {
        use anyhow::{anyhow, Context};
        let mut tokens = HashMap::new();
        for t in &c.tokens {
            let secret = match (&t.secret, &t.secret_file) {
                (Some(s), None) => s.trim().to_string(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading the secret of token {:?}", t.name))?
                    .trim()
                    .to_string(),
                _ => {
                    return Err(anyhow!(
                        "token {:?} needs exactly one of secret and secret_file",
                        t.name
                    ))
                }
            };
            if secret.len() < 16 {
                return Err(anyhow!(
                    "token {:?}: a secret needs at least 16 characters",
                    t.name
                ));
            }
            let rules = (!t.management).then(|| Arc::new(t.rules.clone()));
            if tokens.insert(secret, (t.name.clone(), rules)).is_some() {
                return Err(anyhow!("two tokens share the secret of {:?}", t.name));
            }
        }
        let default_allow = match c.default_policy.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => return Err(anyhow!("acl default_policy {other:?}: allow or deny")),
        };
        let anonymous = match (&c.anonymous, default_allow) {
            (Some(r), _) => Authz::Rules {
                accessor: ANONYMOUS.into(),
                rules: Arc::new(r.clone()),
            },
            (None, true) => Authz::All,
            (None, false) => Authz::Rules {
                accessor: ANONYMOUS.into(),
                rules: Arc::new(Rules::default()),
            },
        };
        Ok(Acl { tokens, anonymous })
    }

    /// Whether any token is configured (otherwise everything is allowed).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// What a request presenting `token` (if any) may do.
    pub fn authorize(&self, token: Option<&str>) -> Authz {
        if !self.enabled() {
            return Authz::All;
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return self.anonymous.clone();
        };
        // Compare every secret in constant time: no timing tells how much of one matched.
        let mut found = None;
        for (secret, t) in &self.tokens {
            if constant_time_eq(secret.as_bytes(), token.as_bytes()) {
                found = Some(t);
            }
        }
        match found {
            Some((_, None)) => Authz::All,
            Some((accessor, Some(rules))) => Authz::Rules {
                accessor: accessor.clone(),
                rules: rules.clone(),
            },
            None => Authz::Unknown,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request presents: `X-Consul-Token`, `Authorization: Bearer`, or `?token=`.
pub fn token_of(headers: &axum::http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(t) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim().to_string());
    }
    if let Some(t) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_string());
    }
    query.and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == "token").then(|| percent_decode(v))
        })
    })
}

/// Decodes `%XX` escapes (and, in a query, `+` as a space); anything malformed is kept.
fn decode(s: &str, query: bool) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if query => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode(s: &str) -> String {
    decode(s, true)
}

/// The permission a request needs, from its method, path and query; `None` when it needs
/// none (status) or its handler checks (service registration and deregistration, check
/// updates). `me` is this agent's member name.
pub fn need(method: &axum::http::Method, path: &str, query: &str, me: &str) -> Option<Need> {
    use Resource::*;
    let write = !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
    let rw = |r: Resource, name: &str| {
        if write {
            Need::write(r, name)
        } else {
            Need::read(r, name)
        }
    };
    let param = |k: &str| {
        query.split('&').find_map(|kv| {
            let (a, b) = kv.split_once('=')?;
            (a == k).then(|| percent_decode(b))
        })
    };
    let rest = |p: &str| path.strip_prefix(p).map(|r| decode(r, false));
    if let Some(key) = rest("/v1/kv/") {
        return Some(rw(Key, &key));
    }
    if path == "/v1/kv" {
        return Some(rw(Key, ""));
    }
    if let Some(name) = rest("/v1/event/fire/") {
        return Some(Need::write(Event, name));
    }
    if path == "/v1/event/list" {
        return Some(Need::read(Event, param("name").unwrap_or_default()));
    }
    if path.starts_with("/v1/status/") {
        return None;
    }
    // The dashboard's page itself is public; what it reads asks for a token like any call.
    if path == "/" || path == "/ui" || path.starts_with("/ui/") {
        return None;
    }
    if path.starts_with("/v1/grapevine/drills") {
        return Some(rw(Agent, me));
    }
    if path == "/v1/grapevine/keys" {
        return Some(Need::read(Key, param("prefix").unwrap_or_default()));
    }
    if matches!(
        path,
        "/v1/grapevine/internals" | "/v1/grapevine/views" | "/v1/grapevine/convergence"
    ) {
        return Some(Need::read(Node, ""));
    }
    if path.starts_with("/v1/agent/service/") || path.starts_with("/v1/agent/check/") {
        return None;
    }
    match path {
        "/v1/agent/members" | "/v1/grapevine/members" | "/v1/grapevine/events" => {
            return Some(Need::read(Node, ""))
        }
        "/v1/agent/self" | "/metrics" => return Some(Need::read(Agent, me)),
        "/v1/agent/leave" => return Some(Need::write(Agent, me)),
        "/v1/agent/services" | "/v1/catalog/services" => return Some(Need::read(Service, "")),
        "/v1/grapevine/state" => return Some(Need::read(Node, "")),
        "/v1/grapevine/keyring" => return Some(rw(Keyring, "")),
        "/v1/grapevine/converged" => return Some(Need::read(Key, "")),
        "/v1/grapevine/aggregate" => return Some(Need::read(Agent, me)),
        "/v1/agent/checks" => return Some(Need::read(Node, me)),
        "/v1/agent/maintenance" => return Some(Need::write(Node, me)),
        "/v1/catalog/nodes" | "/v1/health/state/any" => return Some(Need::read(Node, "")),
        "/v1/catalog/datacenters" => return None,
        _ => {}
    }
    if path.starts_with("/v1/coordinate/") || path.starts_with("/v1/health/state/") {
        return Some(Need::read(Node, ""));
    }
    for p in ["/v1/catalog/node/", "/v1/health/node/"] {
        if let Some(name) = rest(p) {
            return Some(Need::read(Node, name));
        }
    }
    if let Some(name) = rest("/v1/health/checks/") {
        return Some(Need::read(Service, name));
    }
    if path.starts_with("/v1/agent/join/") {
        return Some(Need::write(Agent, me));
    }
    if path.starts_with("/v1/agent/force-leave/") {
        return Some(Need::write(Operator, ""));
    }
    if path.starts_with("/v1/grapevine/keyring/") {
        return Some(Need::write(Keyring, ""));
    }
    for p in ["/v1/catalog/service/", "/v1/health/service/"] {
        if let Some(name) = rest(p) {
            return Some(Need::read(Service, name));
        }
    }
    if let Some(r) = rest("/v1/grapevine/state/") {
        let name = r.split('/').next().unwrap_or_default().to_string();
        return Some(rw(Node, &name));
    }
    if path.starts_with("/v1/grapevine/aggregate/") {
        return Some(rw(Agent, me));
    }
    if let Some(map) = rest("/v1/grapevine/ownership/") {
        return Some(rw(Key, &format!("__own/{map}/")));
    }
    if path.starts_with("/v1/grapevine/versions/") {
        return Some(Need::read(Node, ""));
    }
    // Anything else (unknown paths answer 404): an agent read.
    Some(Need::read(Agent, me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn acl() -> Acl {
        let c: AclConfig = toml::from_str(
            r#"
            [[tokens]]
            name = "ops"
            secret = "0123456789abcdef-ops"
            management = true
            [[tokens]]
            name = "app"
            secret = "0123456789abcdef-app"
            [tokens.rules]
            key_prefix = { "" = "read", "app/" = "write", "app/secret/" = "deny" }
            service_prefix = { "web" = "write" }
            event = { "deploy" = "write" }
            "#,
        )
        .unwrap();
        Acl::from_config(&c).unwrap()
    }

    #[test]
    fn rules_by_exact_name_and_longest_prefix() {
        let a = acl();
        let app = a.authorize(Some("0123456789abcdef-app"));
        assert!(app.allows(&Need::write(Resource::Key, "app/x")));
        assert!(app.allows(&Need::read(Resource::Key, "other")));
        assert!(!app.allows(&Need::write(Resource::Key, "other")));
        assert!(!app.allows(&Need::read(Resource::Key, "app/secret/pw")));
        assert!(app.allows(&Need::write(Resource::Service, "web-frontend")));
        assert!(!app.allows(&Need::read(Resource::Keyring, "")));
        assert!(app.allows(&Need::write(Resource::Event, "deploy")));
        assert!(!app.allows(&Need::write(Resource::Event, "deploy2")));
        let msg = app
            .check(&Need::write(Resource::Key, "other"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "Permission denied: token with AccessorID 'app' lacks permission 'key:write' on \"other\""
        );
        assert!(matches!(
            a.authorize(Some("0123456789abcdef-ops")),
            Authz::All
        ));
        assert!(matches!(a.authorize(Some("nope")), Authz::Unknown));
        // No token: the anonymous rules, none here, so denied.
        assert!(!a.authorize(None).allows(&Need::read(Resource::Key, "x")));
        // Without tokens configured, everything goes.
        assert!(matches!(Acl::default().authorize(None), Authz::All));
    }

    #[test]
    fn each_request_needs_the_permission_consul_would_ask() {
        let n = |m: Method, p: &str, q: &str| need(&m, p, q, "me");
        assert_eq!(
            n(Method::GET, "/v1/kv/a/b", ""),
            Some(Need::read(Resource::Key, "a/b"))
        );
        assert_eq!(
            n(Method::PUT, "/v1/kv/a%2Fb", ""),
            Some(Need::write(Resource::Key, "a/b"))
        );
        assert_eq!(
            n(Method::DELETE, "/v1/kv/a", "recurse"),
            Some(Need::write(Resource::Key, "a"))
        );
        assert_eq!(
            n(Method::GET, "/v1/grapevine/keyring", ""),
            Some(Need::read(Resource::Keyring, ""))
        );
        assert_eq!(
            n(Method::PUT, "/v1/event/fire/x", ""),
            Some(Need::write(Resource::Event, "x"))
        );
        assert_eq!(n(Method::GET, "/v1/status/leader", ""), None);
        assert_eq!(n(Method::PUT, "/v1/agent/service/register", ""), None);
        assert_eq!(
            n(Method::PUT, "/v1/agent/force-leave/x", ""),
            Some(Need::write(Resource::Operator, ""))
        );
        assert_eq!(
            n(Method::GET, "/v1/health/service/web", "passing"),
            Some(Need::read(Resource::Service, "web"))
        );
        assert_eq!(
            n(Method::PUT, "/v1/grapevine/state/me/k", ""),
            Some(Need::write(Resource::Node, "me"))
        );
    }

    #[test]
    fn the_token_comes_from_the_header_the_bearer_or_the_query() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(token_of(&h, Some("a=1&token=s%2Bx")), Some("s+x".into()));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(token_of(&h, None), Some("abc".into()));
        h.insert("x-consul-token", "def".parse().unwrap());
        assert_eq!(token_of(&h, None), Some("def".into()));
    }
}
