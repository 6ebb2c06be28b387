//! The agent's settings: a TOML file and flags, the flags winning.

use anyhow::{anyhow, Context, Result};
use grapevine::Config;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Where gossip listens when neither flag nor file says (Serf's and memberlist's port).
const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7946);
/// Where the HTTP API listens when neither flag nor file says (Consul's port).
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8500);

/// `grapevine agent` flags. Each may also be set in the `--config` file; a flag wins over
/// the file, and `--join` and `--event-handler` add to the file's lists.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AgentArgs {
    /// A TOML file of settings (the keys are the flags' names with `_` for `-`, and
    /// `event_handlers` and `join` as lists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This member's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Gossip address, UDP and TCP on one port [default: 0.0.0.0:7946]. On any address other
    /// than loopback, set --encrypt-key-file (and --allowed-network): without a key, anyone
    /// who can reach the port can join, read the cluster's data and rewrite it, and the
    /// agent warns at start.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// The address other members reach this one at.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// A member to join through, `host:port` (repeatable; names are resolved again at every
    /// retry, and retried every second until joined).
    #[arg(long = "join")]
    pub join: Vec<String>,
    /// Protocol profile: lan, wan or local [default: lan].
    #[arg(long)]
    pub profile: Option<String>,
    /// The cluster label: packets with another label are dropped before anything else.
    #[arg(long)]
    pub label: Option<String>,
    /// Where the agent remembers members and its keys across restarts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A file holding the cluster key, base64 of 32 bytes (as `serf keygen` prints). Every
    /// datagram and frame is then encrypted and authenticated, and replays refused: only
    /// key holders can join or write. Needed on any network others can reach.
    #[arg(long)]
    pub encrypt_key_file: Option<PathBuf>,
    /// A network gossip is taken from, like 10.0.0.0/8 (repeatable; none: any).
    #[arg(long = "allowed-network")]
    pub allowed_network: Vec<ipnet::IpNet>,
    /// Allow script checks (`Args`) registered over the HTTP API and in the config file.
    /// Off by default, as in Consul since 0.9: whoever may register a script check runs
    /// commands as the agent's user.
    #[arg(long)]
    pub enable_script_checks: bool,
    /// Allow script checks from the config file only.
    #[arg(long)]
    pub enable_local_script_checks: bool,
    /// Allow fault drills (drop, delay or cut this agent's traffic for a while) from the
    /// dashboard, `grapevine drill` and `/v1/grapevine/drills`. Off by default: a drill
    /// degrades the cluster on purpose.
    #[arg(long)]
    pub enable_drills: bool,
    /// Serve the HTTP API over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Verify HTTPS clients' certificates against these CAs (PEM).
    #[arg(long)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse HTTPS clients without a certificate signed by --tls-client-ca-file.
    #[arg(long)]
    pub tls_verify_incoming: bool,
    /// A host name the HTTP API answers to besides IP addresses (and `localhost` on
    /// loopback); repeatable, `*` for any. Other names are refused, so that a web page
    /// cannot reach the API by DNS rebinding.
    #[arg(long = "http-allowed-host")]
    pub http_allowed_host: Vec<String>,
    /// `[FILTER=]SCRIPT`, as Serf's: run SCRIPT (with `sh -c`) on events matching FILTER
    /// (`member-join`, `member-leave`, `member-failed`, `member-update`, `user`, `user:NAME`,
    /// `key`, `key:PREFIX`, comma-separated; none: all). Repeatable.
    #[arg(long = "event-handler")]
    pub event_handler: Vec<String>,
    /// The DNS interface's address (default 127.0.0.1:8600), or `off`.
    #[arg(long)]
    pub dns: Option<String>,
    /// The DNS domain answered (default `grapevine`; Consul's is `consul`).
    #[arg(long)]
    pub domain: Option<String>,
    /// A second DNS domain answered the same, as Consul's `alt_domain` (say `consul`, for
    /// clients and resolvers configured for Consul).
    #[arg(long = "alt-domain")]
    pub alt_domain: Option<String>,
    /// The protocol spoken: `grapevine` (the default) or `serf`, to be a member of a Serf
    /// (HashiCorp memberlist) cluster, for a migration one machine at a time.
    #[arg(long)]
    pub protocol: Option<String>,
    /// A tag, `key=value`, shown with this member everywhere (repeatable; Serf's `-tag`).
    #[arg(long = "tag")]
    pub tag: Vec<String>,
}

/// The config file: the same settings as the flags.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--name`.
    pub name: Option<String>,
    /// See `--bind`.
    pub bind: Option<SocketAddr>,
    /// See `--advertise`.
    pub advertise: Option<SocketAddr>,
    /// See `--join`.
    #[serde(default)]
    pub join: Vec<String>,
    /// See `--profile`.
    pub profile: Option<String>,
    /// See `--label`.
    pub label: Option<String>,
    /// See `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// See `--encrypt-key-file`.
    pub encrypt_key_file: Option<PathBuf>,
    /// See `--http`.
    pub http: Option<SocketAddr>,
    /// See `--event-handler`.
    #[serde(default)]
    pub event_handlers: Vec<String>,
    /// The DNS interface's address, or `off`.
    pub dns: Option<String>,
    /// See `--domain`.
    pub domain: Option<String>,
    /// See `--alt-domain`.
    pub alt_domain: Option<String>,
    /// Services to register at start (`[[services]]` tables with Consul's fields).
    #[serde(default)]
    pub services: Vec<super::services::ServiceDef>,
    /// Node-level checks to run from the start (`[[checks]]` tables with Consul's fields).
    #[serde(default)]
    pub checks: Vec<super::services::CheckDef>,
    /// See `--allowed-network`.
    #[serde(default)]
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// See `--enable-script-checks`.
    #[serde(default)]
    pub enable_script_checks: bool,
    /// See `--enable-local-script-checks`.
    #[serde(default)]
    pub enable_local_script_checks: bool,
    /// See `--enable-drills`.
    #[serde(default)]
    pub enable_drills: bool,
    /// See `--tls-cert-file`.
    pub tls_cert_file: Option<PathBuf>,
    /// See `--tls-key-file`.
    pub tls_key_file: Option<PathBuf>,
    /// See `--tls-client-ca-file`.
    pub tls_client_ca_file: Option<PathBuf>,
    /// See `--tls-verify-incoming`.
    #[serde(default)]
    pub tls_verify_incoming: bool,
    /// See `--http-allowed-host`.
    #[serde(default)]
    pub http_allowed_hosts: Vec<String>,
    /// Tokens and their rules for the HTTP API.
    #[serde(default)]
    pub acl: super::acl::AclConfig,
    /// Bounds on connections and concurrent work.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// See `--protocol`.
    pub protocol: Option<String>,
    /// See `--tag`: a table of tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The `[limits]` section: every field optional, the defaults justified where they are set
/// (`grapevine::Limits`, `listen::Limits`).
#[derive(Deserialize, Debug, Default, PartialEq, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// HTTP connections open at once.
    pub http_max_conns: Option<usize>,
    /// HTTP connections open at once from one client address.
    pub http_max_conns_per_client: Option<usize>,
    /// Gossip (TCP) connections open at once.
    pub gossip_max_conns: Option<usize>,
    /// Gossip connections from one address past their hello.
    pub gossip_max_conns_per_source: Option<usize>,
    /// DNS-over-TCP connections open at once.
    pub dns_max_tcp_conns: Option<usize>,
    /// Event handler scripts running at once (more wait, up to a queue of 256).
    pub event_handlers_max: Option<usize>,
}

impl FileConfig {
    /// Reads and parses a config file; the error names the file and what is wrong.
    pub fn load(path: &std::path::Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
    }
}

/// Everything the agent runs with, file and flags merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Member name.
    pub name: String,
    /// Gossip address.
    pub bind: SocketAddr,
    /// Advertised address.
    pub advertise: Option<SocketAddr>,
    /// Seeds.
    pub join: Vec<String>,
    /// The protocol configuration (profile and label applied).
    pub config: Config,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Key file.
    pub encrypt_key_file: Option<PathBuf>,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Event handler specs.
    pub event_handlers: Vec<String>,
    /// Where DNS is served, unless off.
    pub dns: Option<SocketAddr>,
    /// The DNS domains answered, lowercase, each ending in a dot: the domain first.
    pub domains: Vec<String>,
    /// Services registered at start.
    pub services: Vec<super::services::ServiceDef>,
    /// Node-level checks registered at start.
    pub checks: Vec<super::services::CheckDef>,
    /// Networks gossip is taken from (empty: any).
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Where script checks may come from.
    pub scripts: super::services::ScriptChecks,
    /// Whether fault drills are allowed.
    pub drills: bool,
    /// TLS for the HTTP API, if on.
    pub tls: Option<super::listen::Tls>,
    /// Host names the HTTP API answers to besides addresses.
    pub http_allowed_hosts: Vec<String>,
    /// The HTTP API's tokens.
    pub acl: super::acl::AclConfig,
    /// Bounds on the HTTP API's connections.
    pub http_limits: super::listen::Limits,
    /// Bounds on the gossip channel.
    pub gossip_limits: grapevine::Limits,
    /// DNS-over-TCP connections at once.
    pub dns_max_tcp_conns: usize,
    /// Event handler scripts at once.
    pub event_handlers_max: usize,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// This member's tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// The profile's name (lan, wan or local), for the Serf engine's settings.
    pub profile: String,
}

/// Which protocol an agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// grapevine's own.
    Grapevine,
    /// Serf's, on memberlist's wire format.
    Serf,
}

/// The DNS interface's default address (Consul's port).
pub const DEFAULT_DNS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8600);

impl Settings {
    /// Merges the file named by `--config` (if any) with the flags; `http` is the global
    /// `--http` flag, if given.
    pub fn resolve(a: &AgentArgs, http: Option<SocketAddr>) -> Result<Settings> {
        let file = match &a.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(a, file, http)
    }

    fn merge(a: &AgentArgs, f: FileConfig, http: Option<SocketAddr>) -> Result<Settings> {
        let profile = a
            .profile
            .clone()
            .or(f.profile)
            .unwrap_or_else(|| "lan".into());
        let protocol = match a.protocol.clone().or(f.protocol).as_deref() {
            None | Some("grapevine") => Protocol::Grapevine,
            Some("serf") => Protocol::Serf,
            Some(other) => return Err(anyhow!("unknown protocol {other:?}: grapevine or serf")),
        };
        let mut tags = f.tags;
        for t in &a.tag {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| anyhow!("--tag {t:?}: key=value"))?;
            tags.insert(k.to_string(), v.to_string());
        }
        let mut config = Config::profile(&profile)
            .ok_or_else(|| anyhow!("unknown profile {profile:?}: lan, wan or local"))?;
        if let Some(label) = a.label.clone().or(f.label) {
            config.label = label.into_bytes();
        }
        config.validate()?;
        let name = match a.name.clone().or(f.name) {
            Some(n) => n,
            None => std::env::var("HOSTNAME").unwrap_or_else(|_| "grapevine".into()),
        };
        let mut join = f.join;
        join.extend(a.join.iter().cloned());
        let mut event_handlers = f.event_handlers;
        event_handlers.extend(a.event_handler.iter().cloned());
        let dns =
            match a.dns.clone().or(f.dns).as_deref() {
                None => Some(DEFAULT_DNS),
                Some("off") => None,
                Some(addr) => Some(addr.parse().map_err(|_| {
                    anyhow!("--dns {addr:?}: an address like 127.0.0.1:8600, or off")
                })?),
            };
        let tls = match (
            a.tls_cert_file.clone().or(f.tls_cert_file),
            a.tls_key_file.clone().or(f.tls_key_file),
        ) {
            (Some(cert), Some(key)) => Some(super::listen::Tls {
                cert,
                key,
                client_ca: a.tls_client_ca_file.clone().or(f.tls_client_ca_file),
                require_client_cert: a.tls_verify_incoming || f.tls_verify_incoming,
            }),
            (None, None) => None,
            _ => return Err(anyhow!("TLS needs both tls_cert_file and tls_key_file")),
        };
        let l = &f.limits;
        let mut http_limits = super::listen::Limits::default();
        if let Some(n) = l.http_max_conns {
            http_limits.max_conns = n;
        }
        if let Some(n) = l.http_max_conns_per_client {
            http_limits.max_conns_per_client = n;
        }
        let mut gossip_limits = grapevine::Limits::default();
        if let Some(n) = l.gossip_max_conns {
            gossip_limits.max_connections = n;
        }
        if let Some(n) = l.gossip_max_conns_per_source {
            gossip_limits.max_per_source = n;
        }
        for d in &f.services {
            if let Some(k) = d.unknown_field() {
                return Err(anyhow!("service {:?}: unknown field {k:?}", d.name));
            }
        }
        for c in &f.checks {
            if let Some(k) = c.unknown_field() {
                return Err(anyhow!("check {:?}: unknown field {k:?}", c.name));
            }
        }
        let mut allowed_networks = f.allowed_networks;
        allowed_networks.extend(a.allowed_network.iter().copied());
        let mut http_allowed_hosts = f.http_allowed_hosts;
        http_allowed_hosts.extend(a.http_allowed_host.iter().cloned());
        Ok(Settings {
            allowed_networks,
            drills: a.enable_drills || f.enable_drills,
            scripts: super::services::ScriptChecks {
                api: a.enable_script_checks || f.enable_script_checks,
                local: a.enable_local_script_checks || f.enable_local_script_checks,
            },
            tls,
            http_allowed_hosts: http_allowed_hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            acl: f.acl,
            http_limits,
            gossip_limits,
            // DNS over TCP is for the rare truncated answer: a few connections suffice.
            dns_max_tcp_conns: l.dns_max_tcp_conns.unwrap_or(32),
            // Handlers are the operator's scripts: 16 at once keeps a burst of events from
            // forking hundreds of shells, and a queue keeps the rest in order.
            event_handlers_max: l.event_handlers_max.unwrap_or(16).max(1),
            name,
            bind: a.bind.or(f.bind).unwrap_or(DEFAULT_BIND),
            advertise: a.advertise.or(f.advertise),
            join,
            config,
            data_dir: a.data_dir.clone().or(f.data_dir),
            encrypt_key_file: a.encrypt_key_file.clone().or(f.encrypt_key_file),
            http: http.or(f.http).unwrap_or(DEFAULT_HTTP),
            event_handlers,
            dns,
            domains: {
                let fqdn = |d: &str| format!("{}.", d.trim_matches('.').to_ascii_lowercase());
                let mut v = vec![fqdn(
                    a.domain
                        .as_deref()
                        .or(f.domain.as_deref())
                        .unwrap_or("grapevine"),
                )];
                if let Some(alt) = a.alt_domain.as_deref().or(f.alt_domain.as_deref()) {
                    v.push(fqdn(alt));
                }
                if v.iter().any(|d| d == ".") {
                    return Err(anyhow!("--domain and --alt-domain must not be empty"));
                }
                v
            },
            services: f.services,
            checks: f.checks,
            protocol,
            tags,
            profile,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_lists_add_up() {
        let file: FileConfig = toml::from_str(
            r#"
            name = "from-file"
            bind = "127.0.0.1:7001"
            join = ["10.0.0.1:7946"]
            profile = "wan"
            label = "prod"
            http = "127.0.0.1:9500"
            event_handlers = ["member-failed=page"]
            "#,
        )
        .unwrap();
        let args = AgentArgs {
            name: Some("from-flag".into()),
            join: vec!["10.0.0.2:7946".into()],
            event_handler: vec!["user=log".into()],
            ..AgentArgs::default()
        };
        let s = Settings::merge(&args, file, None).unwrap();
        assert_eq!(s.name, "from-flag");
        assert_eq!(s.bind, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(s.join, ["10.0.0.1:7946", "10.0.0.2:7946"]);
        assert_eq!(s.config.profile, "wan");
        assert_eq!(s.config.label, b"prod");
        assert_eq!(s.http, "127.0.0.1:9500".parse().unwrap());
        assert_eq!(s.event_handlers, ["member-failed=page", "user=log"]);
        let s = Settings::merge(
            &args,
            FileConfig::default(),
            Some("127.0.0.1:1".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(s.bind, DEFAULT_BIND);
        assert_eq!(s.config.profile, "lan");
        assert_eq!(s.http, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        let unknown = toml::from_str::<FileConfig>("nmae = \"x\"").unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `nmae`"),
            "{unknown}"
        );
        let bad_addr = toml::from_str::<FileConfig>("bind = \"nowhere\"").unwrap_err();
        assert!(bad_addr.to_string().contains("bind"), "{bad_addr}");
        let args = AgentArgs {
            profile: Some("moon".into()),
            ..AgentArgs::default()
        };
        let e = Settings::merge(&args, FileConfig::default(), None).unwrap_err();
        assert!(e.to_string().contains("unknown profile \"moon\""), "{e}");
    }
}
