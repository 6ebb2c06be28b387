//! `grapevine agent`: a member of the cluster with an HTTP API, until SIGTERM or SIGINT,
//! which leave gracefully.

use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine;
use grapevine::{Config, Keyring, Node};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `grapevine agent` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// This member's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Gossip address, UDP and TCP on one port.
    #[arg(long, default_value = "0.0.0.0:7946")]
    pub bind: SocketAddr,
    /// The address other members reach this one at.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// A member to join through, `host:port` (repeatable; retried until joined).
    #[arg(long = "join")]
    pub join: Vec<String>,
    /// Protocol profile: lan, wan or local.
    #[arg(long, default_value = "lan")]
    pub profile: String,
    /// Where the agent remembers members and its keys across restarts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A file holding the cluster key, base64 of 32 bytes (as `serf keygen` prints).
    #[arg(long)]
    pub encrypt_key_file: Option<PathBuf>,
    /// `[FILTER=]SCRIPT`, as Serf's: run SCRIPT (with `sh -c`) on events matching FILTER
    /// (`member-join`, `member-leave`, `member-failed`, `member-update`, `user`, `user:NAME`,
    /// comma-separated; none: all). Repeatable.
    #[arg(long = "event-handler")]
    pub event_handler: Vec<String>,
}

/// An event handler: which events, and the script.
#[derive(Clone, Debug)]
struct Handler {
    filters: Vec<String>,
    script: String,
}

impl Handler {
    fn parse(spec: &str) -> Handler {
        match spec.split_once('=') {
            Some((f, script)) if !f.contains(' ') => Handler {
                filters: f.split(',').map(str::to_string).collect(),
                script: script.to_string(),
            },
            _ => Handler {
                filters: Vec::new(),
                script: spec.to_string(),
            },
        }
    }

    fn matches(&self, kind: &str, user: Option<&str>) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                f == kind || (kind == "user" && user.is_some_and(|u| *f == format!("user:{u}")))
            })
    }
}

/// An event as handlers see it: its kind, the user event's name, and the lines for stdin.
fn describe(e: &grapevine::Event) -> Option<(&'static str, Option<String>, Vec<u8>)> {
    use grapevine::Event as E;
    let member_line = |m: &grapevine::Member| {
        format!(
            "{}\t{}\t{}\n",
            m.name.as_str(),
            m.addr.ip(),
            String::from_utf8_lossy(&m.tags)
        )
        .into_bytes()
    };
    Some(match e {
        E::Joined { member } => ("member-join", None, member_line(member)),
        E::Left { member } => ("member-leave", None, member_line(member)),
        E::Failed { member, .. } => ("member-failed", None, member_line(member)),
        E::Updated { member } => ("member-update", None, member_line(member)),
        E::User { name, payload, .. } => ("user", Some(name.clone()), payload.clone()),
        _ => return None,
    })
}

/// Runs the matching handlers for each event, as Serf does: `SERF_EVENT`-style variables in
/// the environment (`GRAPEVINE_EVENT`, `GRAPEVINE_USER_EVENT`, `GRAPEVINE_SELF_NAME`), the
/// details on stdin.
async fn run_handlers(node: Node, handlers: Vec<Handler>) {
    let mut events = node.events();
    let me = node.name().as_str().to_string();
    while let Some(e) = events.next().await {
        let Some((kind, user, input)) = describe(&e) else {
            continue;
        };
        for h in handlers.iter().filter(|h| h.matches(kind, user.as_deref())) {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.arg("-c")
                .arg(&h.script)
                .env("GRAPEVINE_EVENT", kind)
                .env("GRAPEVINE_SELF_NAME", &me)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null());
            if let Some(u) = &user {
                cmd.env("GRAPEVINE_USER_EVENT", u);
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let input = input.clone();
                    tokio::spawn(async move {
                        if let Some(mut stdin) = child.stdin.take() {
                            use tokio::io::AsyncWriteExt;
                            let _ = stdin.write_all(&input).await;
                        }
                        if let Ok(status) = child.wait().await {
                            if !status.success() {
                                tracing::warn!(%status, "event handler failed");
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, script = %h.script, "cannot run event handler")
                }
            }
        }
    }
}

/// Reads a base64 key file.
fn read_key(path: &PathBuf) -> Result<grapevine::crypto::Key> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("the key file {} is not base64", path.display()))?;
    Ok(Keyring::key(&bytes)?)
}

/// Runs the agent until a signal.
pub async fn run(a: AgentArgs, http: SocketAddr) -> Result<()> {
    let config = Config::profile(&a.profile)
        .ok_or_else(|| anyhow!("unknown profile {:?}: lan, wan or local", a.profile))?;
    let name = match a.name.clone() {
        Some(n) => n,
        None => std::env::var("HOSTNAME").unwrap_or_else(|_| "grapevine".into()),
    };
    let mut builder = Node::builder()
        .name(name)
        .bind(a.bind)
        .seeds(a.join.clone())
        .config(config);
    if let Some(adv) = a.advertise {
        builder = builder.advertise(adv);
    }
    if let Some(dir) = &a.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(path) = &a.encrypt_key_file {
        builder = builder.keyring(Keyring::new(read_key(path)?));
    }
    let node = builder.start().await?;
    tracing::info!(name = %node.name().as_str(), addr = %node.addr(), %http, "agent started");
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .with_context(|| format!("binding the HTTP API to {http}"))?;
    let handlers: Vec<Handler> = a.event_handler.iter().map(|s| Handler::parse(s)).collect();
    if !handlers.is_empty() {
        tokio::spawn(run_handlers(node.clone(), handlers));
    }
    let app = router(node.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    wait_for_signal().await;
    tracing::info!("leaving the cluster");
    node.leave().await?;
    server.abort();
    Ok(())
}

async fn wait_for_signal() {
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

/// The HTTP API.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/v1/agent/members", get(consul_members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/event/fire/{name}", put(fire))
        .route("/v1/status/leader", get(leader))
        .route("/v1/grapevine/members", get(members))
        .route("/v1/grapevine/keyring", get(keyring_list))
        .route("/v1/grapevine/keyring/{op}", put(keyring_op))
        .route("/metrics", get(metrics))
        .with_state(node)
}

/// An API error: the status and a plain-text reason.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<grapevine::Error> for ApiError {
    fn from(e: grapevine::Error) -> Self {
        let code = match e {
            grapevine::Error::Command(_) | grapevine::Error::Keyring(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

/// A member in grapevine's own shape (the CLI's `--format json`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// alive, suspect, failed or left.
    pub status: String,
    /// Its tags, as text when UTF-8.
    pub tags: String,
    /// Its incarnation.
    pub incarnation: u32,
}

fn status(s: grapevine::State) -> &'static str {
    match s {
        grapevine::State::Alive => "alive",
        grapevine::State::Suspect => "suspect",
        grapevine::State::Dead => "failed",
        grapevine::State::Left => "left",
    }
}

async fn members(State(node): State<Node>) -> Result<Json<Vec<MemberView>>, ApiError> {
    let mut out: Vec<MemberView> = node
        .members()
        .await?
        .into_iter()
        .map(|m| MemberView {
            name: m.name.as_str().to_string(),
            addr: m.addr.to_string(),
            status: status(m.state).to_string(),
            tags: String::from_utf8_lossy(&m.tags).into_owned(),
            incarnation: m.incarnation,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out))
}

/// Consul's (Serf's) member status codes: 1 alive, 3 left, 4 failed.
fn consul_status(s: grapevine::State) -> u8 {
    match s {
        grapevine::State::Alive | grapevine::State::Suspect => 1,
        grapevine::State::Left => 3,
        grapevine::State::Dead => 4,
    }
}

fn consul_member(m: &grapevine::Member) -> serde_json::Value {
    serde_json::json!({
        "Name": m.name.as_str(),
        "Addr": m.addr.ip().to_string(),
        "Port": m.addr.port(),
        "Tags": {},
        "Status": consul_status(m.state),
        "ProtocolMin": 1, "ProtocolMax": m.protocol, "ProtocolCur": m.protocol,
        "DelegateMin": 0, "DelegateMax": 0, "DelegateCur": 0,
    })
}

async fn consul_members(State(node): State<Node>) -> Result<Json<serde_json::Value>, ApiError> {
    let m = node.members().await?;
    Ok(Json(serde_json::Value::Array(
        m.iter().map(consul_member).collect(),
    )))
}

async fn agent_self(State(node): State<Node>) -> Result<Json<serde_json::Value>, ApiError> {
    let me = node
        .members()
        .await?
        .into_iter()
        .find(|m| &m.name == node.name())
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "no self".into()))?;
    Ok(Json(serde_json::json!({
        "Config": { "NodeName": node.name().as_str(), "Datacenter": "grapevine" },
        "Member": consul_member(&me),
    })))
}

async fn join(State(node): State<Node>, Path(addr): Path<String>) -> Result<Json<bool>, ApiError> {
    let n = node.join([addr.clone()]).await?;
    if n == 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("cannot resolve {addr}"),
        ));
    }
    Ok(Json(true))
}

async fn leave(State(node): State<Node>) -> Result<Json<bool>, ApiError> {
    node.leave().await?;
    Ok(Json(true))
}

/// A base64 key from a request body.
fn body_key(body: &[u8]) -> Result<grapevine::crypto::Key, ApiError> {
    let text = String::from_utf8_lossy(body);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the key is not base64: {e}"),
            )
        })?;
    Keyring::key(&bytes).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

fn keys_json(keys: &[grapevine::crypto::Key]) -> Json<Vec<String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    Json(keys.iter().map(|k| b64.encode(k)).collect())
}

/// The keyring, primary first, base64 (this agent's: rotate a cluster by calling every agent).
async fn keyring_list(State(node): State<Node>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(keys_json(&node.keyring_list().await?))
}

/// `install`, `use` or `remove` the key in the body (base64).
async fn keyring_op(
    State(node): State<Node>,
    Path(op): Path<String>,
    body: Bytes,
) -> Result<Json<Vec<String>>, ApiError> {
    let key = body_key(&body)?;
    let keys = match op.as_str() {
        "install" => node.keyring_install(key).await?,
        "use" => node.keyring_use(key).await?,
        "remove" => node.keyring_remove(key).await?,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown keyring operation {other:?}: install, use or remove"),
            ))
        }
    };
    Ok(keys_json(&keys))
}

async fn leader(State(node): State<Node>) -> Json<String> {
    // There is no leader: every agent answers for itself.
    Json(node.addr().to_string())
}

/// A Consul duration (`10s`, `5m`, `250ms`, or seconds): the blocking query's wait.
fn consul_duration(s: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.trim().len()),
    );
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

async fn kv_get(
    State(node): State<Node>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let recurse = q.contains_key("recurse");
    let keys_only = q.contains_key("keys");
    // A blocking query: wait (default 5 min, at most 10) until the index passes the one
    // given, as Consul does.
    if let Some(index) = q.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = q
            .get("wait")
            .and_then(|w| consul_duration(w))
            .unwrap_or(std::time::Duration::from_secs(300))
            .min(std::time::Duration::from_secs(600));
        node.kv_wait(index, wait).await;
    }
    let entries = node.entries(key.as_bytes(), recurse || keys_only).await?;
    let mut headers = HeaderMap::new();
    let index = node.kv_index().max(1);
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        headers.insert("X-Consul-Index", v);
    }
    if entries.is_empty() {
        return Ok((StatusCode::NOT_FOUND, headers).into_response());
    }
    if keys_only {
        let keys: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            .collect();
        return Ok((headers, Json(keys)).into_response());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let out: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "Key": String::from_utf8_lossy(&e.key),
                "Value": b64.encode(&e.value),
                "Flags": 0, "LockIndex": 0,
                "CreateIndex": e.modify_index, "ModifyIndex": e.modify_index,
            })
        })
        .collect();
    Ok((headers, Json(out)).into_response())
}

async fn kv_put(
    State(node): State<Node>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    if let Some(cas) = q.get("cas") {
        let cas: u64 = cas
            .parse()
            .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("bad cas index {cas:?}")))?;
        return Ok(Json(
            node.put_cas(key.as_bytes(), Some(body.to_vec()), cas)
                .await?,
        ));
    }
    node.put(key.as_bytes(), Some(body.to_vec())).await?;
    Ok(Json(true))
}

async fn kv_delete(
    State(node): State<Node>,
    Path(key): Path<String>,
) -> Result<Json<bool>, ApiError> {
    node.put(key.as_bytes(), None).await?;
    Ok(Json(true))
}

async fn fire(
    State(node): State<Node>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = node.broadcast(&name, body.to_vec()).await?;
    Ok(Json(
        serde_json::json!({ "ID": format!("{id:016x}"), "Name": name }),
    ))
}

async fn metrics(State(node): State<Node>) -> Result<String, ApiError> {
    let members = node.members().await?;
    let stats = node.stats().await?;
    let mut out = String::new();
    out.push_str(
        "# HELP grapevine_members Members known, by state.\n# TYPE grapevine_members gauge\n",
    );
    for s in [
        grapevine::State::Alive,
        grapevine::State::Suspect,
        grapevine::State::Dead,
        grapevine::State::Left,
    ] {
        let n = members.iter().filter(|m| m.state == s).count();
        out.push_str(&format!(
            "grapevine_members{{state=\"{}\"}} {n}\n",
            status(s)
        ));
    }
    let counters = [
        (
            "grapevine_packets_in_total",
            "Datagrams and frames received.",
            stats.packets_in,
        ),
        (
            "grapevine_bytes_in_total",
            "Bytes received.",
            stats.bytes_in,
        ),
        (
            "grapevine_packets_out_total",
            "Datagrams and frames sent.",
            stats.packets_out,
        ),
        ("grapevine_bytes_out_total", "Bytes sent.", stats.bytes_out),
        ("grapevine_probes_total", "Probes started.", stats.probes),
        (
            "grapevine_probes_failed_total",
            "Probes that got no ack.",
            stats.probes_failed,
        ),
        (
            "grapevine_suspicions_raised_total",
            "Suspicions raised by own probes.",
            stats.suspicions_raised,
        ),
        (
            "grapevine_refutations_total",
            "Accusations of this node it refuted.",
            stats.refutations,
        ),
    ];
    for (name, help, v) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    out.push_str("# HELP grapevine_dropped_total Inputs dropped, by reason.\n# TYPE grapevine_dropped_total counter\n");
    for r in grapevine::core::DropReason::ALL {
        out.push_str(&format!(
            "grapevine_dropped_total{{reason=\"{}\"}} {}\n",
            r.as_str(),
            stats.dropped(r)
        ));
    }
    if stats.rtt_count > 0 {
        out.push_str(&format!(
            "# HELP grapevine_probe_rtt_seconds_avg Mean probe round trip.\n# TYPE grapevine_probe_rtt_seconds_avg gauge\ngrapevine_probe_rtt_seconds_avg {}\n",
            stats.rtt_micros_sum as f64 / stats.rtt_count as f64 / 1e6
        ));
    }
    Ok(out)
}

/// `grapevine members`: the local agent's view, as a table or JSON.
pub fn members_command(http: SocketAddr, json: bool) -> Result<String> {
    let url = format!("http://{http}/v1/grapevine/members");
    let body = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(5))
        .call()
        .map_err(|e| anyhow!("no agent answers at {http}: {e}"))?
        .into_string()?;
    let members: Vec<MemberView> = serde_json::from_str(&body)?;
    if json {
        return Ok(serde_json::to_string_pretty(&members)? + "\n");
    }
    let mut out = format!(
        "{:<24} {:<24} {:<8} {:>11}  {}\n",
        "NAME", "ADDR", "STATUS", "INCARNATION", "TAGS"
    );
    for m in members {
        out += &format!(
            "{:<24} {:<24} {:<8} {:>11}  {}\n",
            m.name, m.addr, m.status, m.incarnation, m.tags
        );
    }
    Ok(out)
}

/// An HTTP call to the local agent, with a clear error when none answers.
fn call(method: &str, http: SocketAddr, path: &str, body: Option<&[u8]>) -> Result<ureq::Response> {
    let url = format!("http://{http}{path}");
    let req = ureq::request(method, &url).timeout(std::time::Duration::from_secs(600));
    let r = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(code, resp)) => Ok(ureq::Response::new(
            code,
            "error",
            &resp.into_string().unwrap_or_default(),
        )?),
        Err(e) => Err(anyhow!("no agent answers at {http}: {e}")),
    }
}

/// `grapevine kv ...` against the local agent.
pub fn kv_command(http: SocketAddr, op: &KvOp) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |body: &str| -> Result<Vec<(String, Vec<u8>, u64)>> {
        let v: Vec<serde_json::Value> = serde_json::from_str(body)?;
        Ok(v.iter()
            .map(|e| {
                (
                    e["Key"].as_str().unwrap_or_default().to_string(),
                    b64.decode(e["Value"].as_str().unwrap_or_default())
                        .unwrap_or_default(),
                    e["ModifyIndex"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    };
    match op {
        KvOp::Get { key } => {
            let r = call("GET", http, &format!("/v1/kv/{key}"), None)?;
            if r.status() == 404 {
                return Err(anyhow!("no such key: {key}"));
            }
            let entries = decode(&r.into_string()?)?;
            Ok(entries
                .first()
                .map(|e| String::from_utf8_lossy(&e.1).into_owned() + "\n")
                .unwrap_or_default())
        }
        KvOp::Put { key, value } => {
            call(
                "PUT",
                http,
                &format!("/v1/kv/{key}"),
                Some(value.as_bytes()),
            )?;
            Ok(format!("wrote {key}\n"))
        }
        KvOp::Delete { key } => {
            call("DELETE", http, &format!("/v1/kv/{key}"), None)?;
            Ok(format!("deleted {key}\n"))
        }
        KvOp::List { prefix } => {
            let r = call("GET", http, &format!("/v1/kv/{prefix}?recurse"), None)?;
            if r.status() == 404 {
                return Ok(String::new());
            }
            Ok(decode(&r.into_string()?)?
                .iter()
                .map(|(k, v, _)| format!("{k}\t{}\n", String::from_utf8_lossy(v)))
                .collect())
        }
        KvOp::Watch { prefix } => {
            // Blocking queries in a loop: print the prefix each time it changes.
            let mut index = 0u64;
            loop {
                let r = call(
                    "GET",
                    http,
                    &format!("/v1/kv/{prefix}?recurse&index={index}&wait=5m"),
                    None,
                )?;
                let next: u64 = r
                    .header("X-Consul-Index")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(index + 1);
                let body = if r.status() == 404 {
                    "[]".to_string()
                } else {
                    r.into_string()?
                };
                if next != index {
                    let mut out = format!("-- index {next}\n");
                    for (k, v, _) in decode(&body)? {
                        out += &format!("{k}\t{}\n", String::from_utf8_lossy(&v));
                    }
                    print!("{out}");
                    index = next;
                }
            }
        }
    }
}

/// A `grapevine kv` operation.
#[derive(clap::Subcommand, Debug)]
pub enum KvOp {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// List the keys under a prefix, with their values.
    List {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print the keys under a prefix every time they change (blocking queries).
    Watch {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// `grapevine event`, `join`, `leave`, `info`: one call each.
pub fn simple_command(
    http: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<String> {
    let r = call(method, http, path, body)?;
    let status = r.status();
    let text = r.into_string()?;
    if status >= 400 {
        return Err(anyhow!("the agent refused ({status}): {text}"));
    }
    Ok(text + "\n")
}
