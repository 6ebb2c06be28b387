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
    /// Gossip address, UDP and TCP on one port [default: 0.0.0.0:7946].
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
    /// A file holding the cluster key, base64 of 32 bytes (as `serf keygen` prints).
    #[arg(long)]
    pub encrypt_key_file: Option<PathBuf>,
    /// `[FILTER=]SCRIPT`, as Serf's: run SCRIPT (with `sh -c`) on events matching FILTER
    /// (`member-join`, `member-leave`, `member-failed`, `member-update`, `user`, `user:NAME`,
    /// `key`, `key:PREFIX`, comma-separated; none: all). Repeatable.
    #[arg(long = "event-handler")]
    pub event_handler: Vec<String>,
    /// The DNS interface's address (default 127.0.0.1:8600), or `off`.
    #[arg(long)]
    pub dns: Option<String>,
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
    /// Services to register at start (`[[services]]` tables with Consul's fields).
    #[serde(default)]
    pub services: Vec<super::services::ServiceDef>,
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
    /// Services registered at start.
    pub services: Vec<super::services::ServiceDef>,
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
        Ok(Settings {
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
            services: f.services,
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
