//! `grapevine agent`: a member of the cluster with an HTTP API, until SIGTERM or SIGINT,
//! which leave gracefully; and the CLI commands that talk to it.

mod acl;
mod api;
mod apps;
mod client;
mod config;
mod consul;
mod dns;
mod drills;
mod event_filters;
mod handlers;
mod http;
mod listen;
mod log;
mod serf_mode;
pub(crate) mod services;
mod ui;
mod views;

pub use client::{
    aggregate_command, kv_command, members_command, monitor_command, query_command,
    services_command, simple_command, Api, KvOp, QueryOpts, TlsFiles,
};
pub use config::{AgentArgs, Settings, DEFAULT_HTTP};
pub use services::go_duration;

use anyhow::{Context, Result};
use base64::Engine;
use grapevine::{Keyring, Node};
use std::path::Path;

/// Reads a base64 key file.
fn read_key(path: &Path) -> Result<grapevine::crypto::Key> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("the key file {} is not base64", path.display()))?;
    Ok(Keyring::key(&bytes)?)
}

/// Installs the Prometheus recorder behind the `metrics` facade, for `/metrics`.
fn prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Round trips from 50 µs (loopback) to 2.5 s (past any probe timeout).
    let rtt_buckets = [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(grapevine::metrics::PROBE_RTT.into()),
            &rtt_buckets,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    grapevine::metrics::describe();
    Ok(handle)
}

/// Raises the soft limit on open files to the hard limit, as Consul's packages advise: the
/// agent's own caps (gossip, HTTP, DNS) then bound what peers can hold, not the default
/// 1,024.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Warns about settings that expose the cluster, once, at start.
fn warn_exposure(s: &Settings, acl: &acl::Acl) {
    let gossip_open = !s.bind.ip().is_loopback();
    if gossip_open && s.encrypt_key_file.is_none() {
        tracing::warn!(
            bind = %s.bind,
            "GOSSIP IS NOT ENCRYPTED on an address others can reach: anyone who can send to \
             it can join the cluster, read its data and rewrite it. Set encrypt_key_file (a \
             key from `grapevine keygen` or `serf keygen`) and allowed_networks."
        );
    }
    if !s.http.ip().is_loopback() && !acl.enabled() {
        tracing::warn!(
            http = %s.http,
            "the HTTP API is reachable from other hosts and has no ACL tokens: anyone who \
             reaches it can read and write everything. Configure [acl] tokens."
        );
    }
    if s.scripts.api && !acl.enabled() {
        tracing::warn!(
            "enable_script_checks is on without ACL tokens: anyone who reaches the HTTP API \
             can run commands as this agent's user"
        );
    }
}

/// Runs the agent until a signal.
pub async fn run(s: Settings) -> Result<()> {
    raise_fd_limit();
    let prom = prometheus()?;
    let acl = std::sync::Arc::new(acl::Acl::from_config(&s.acl)?);
    if s.protocol == config::Protocol::Serf {
        return serf_mode::run(s, prom, acl).await;
    }
    let tls = s.tls.as_ref().map(|t| t.server_config()).transpose()?;
    warn_exposure(&s, &acl);
    let mut builder = Node::builder()
        .name(s.name.clone())
        .bind(s.bind)
        .seeds(s.join.clone())
        .config(s.config.clone())
        .limits(s.gossip_limits.clone())
        .allowed_networks(s.allowed_networks.clone());
    if let Some(adv) = s.advertise {
        builder = builder.advertise(adv);
    }
    if let Some(dir) = &s.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(path) = &s.encrypt_key_file {
        builder = builder.keyring(Keyring::new(read_key(path)?));
    }
    let node = builder.start().await?;
    if !s.tags.is_empty() {
        let text: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let bytes = text.join(",").into_bytes();
        node.with_core(move |c, now| c.set_tags(now, bytes))
            .await?
            .map_err(|e| anyhow::anyhow!("tags: {e}"))?;
    }
    tracing::info!(
        name = %node.name().as_str(),
        addr = %node.addr(),
        http = %s.http,
        https = tls.is_some(),
        acl = acl.enabled(),
        encrypted = s.encrypt_key_file.is_some(),
        profile = s.config.profile,
        "agent started"
    );
    let listener = tokio::net::TcpListener::bind(s.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", s.http))?;
    let registry = services::Registry::new(node.clone(), s.scripts);
    let handlers = handlers::parse_all(&s.event_handlers);
    if !handlers.is_empty() {
        tokio::spawn(handlers::run(
            node.clone(),
            handlers,
            s.event_handlers_max,
            registry.clone(),
        ));
    }
    let log = log::EventLog::spawn(node.clone(), registry.clone());
    // Every agent publishes what it holds of the keyspace, so any can tell when all agree.
    node.track(grapevine::Target::Keyspace).await?;
    registry.forget_restored(&s.services).await;
    for def in s.services.clone() {
        let id = def.id().to_string();
        registry
            .register(def, services::Origin::Config)
            .await
            .with_context(|| format!("registering the service {id:?} from the config file"))?;
    }
    for c in s.checks.clone() {
        let name = c.name.clone().unwrap_or_default();
        registry
            .register_check(c, services::Origin::Config)
            .await
            .with_context(|| format!("registering the check {name:?} from the config file"))?;
    }
    let catalog = services::spawn_catalog(node.clone());
    if let Some(addr) = s.dns {
        tokio::spawn(dns::serve(
            addr,
            catalog.clone(),
            s.domains.clone(),
            s.dns_max_tcp_conns,
        ));
    }
    {
        let prom = prom.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                prom.run_upkeep();
            }
        });
    }
    let hosts = api::Hosts {
        allowed: s.http_allowed_hosts.clone(),
        loopback: s.http.ip().is_loopback() || s.http.ip().is_unspecified(),
    };
    views::spawn_publisher(node.clone());
    let app = http::router(api::App {
        node: node.clone(),
        log,
        prom,
        registry,
        catalog,
        acl,
        hosts: std::sync::Arc::new(hosts),
        drills: drills::Drills::new(s.drills),
        profile: s.profile.clone(),
    });
    let counters = std::sync::Arc::new(listen::Counters::default());
    let server = tokio::spawn(listen::serve(
        listener,
        app,
        tls,
        s.http_limits.clone(),
        counters,
    ));
    wait_for_signal().await;
    tracing::info!("leaving the cluster");
    node.leave().await?;
    server.abort();
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
