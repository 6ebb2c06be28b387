//! `grapevine agent --protocol serf`: the agent as a member of a Serf cluster. The same
//! commands work where the concept exists (members, events, handlers, monitor, keys,
//! queries, metrics); what has no meaning on a Serf cluster answers a clear error.

use super::acl;
use super::api::Hosts;
use super::config::Settings;
use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use grapevine::serf::SerfAgent;
use grapevine_core::serf::{Keyring, MemberInfo, QueryParams, SerfConfig, SerfEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// User events kept for `/v1/event/list` (Consul keeps 256).
const KEPT_EVENTS: usize = 256;

#[derive(Clone)]
struct SerfApp {
    agent: SerfAgent,
    stream: tokio::sync::broadcast::Sender<serde_json::Value>,
    recent: Arc<Mutex<VecDeque<serde_json::Value>>>,
    prom: metrics_exporter_prometheus::PrometheusHandle,
    hosts: Arc<Hosts>,
    acl: Arc<acl::Acl>,
    encrypted: bool,
}

/// Reads a Serf key file: base64 of 16, 24 or 32 bytes.
fn read_serf_key(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the key file {}", path.display()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("the key file {} is not base64", path.display()))?;
    Keyring::new(key.clone()).with_context(|| format!("the key in {}", path.display()))?;
    Ok(key)
}

/// The Serf engine's settings from the agent's.
fn serf_config(s: &Settings) -> Result<SerfConfig> {
    let addr = s.advertise.unwrap_or(s.bind);
    if addr.ip().is_unspecified() {
        anyhow::bail!(
            "--protocol serf needs an address other members can reach: set --advertise \
             (or --bind to a specific address)"
        );
    }
    let mut cfg = SerfConfig::profile(&s.profile, s.name.clone(), addr)
        .with_context(|| format!("unknown profile {:?}", s.profile))?;
    cfg.tags = s.tags.clone();
    if grapevine_core::serf::messages::encode_tags(&cfg.tags).len() > 512 {
        anyhow::bail!("the tags exceed memberlist's 512-byte limit for a member's meta");
    }
    if let Some(path) = &s.encrypt_key_file {
        cfg.keyring = Some(Keyring::new(read_serf_key(path)?)?);
    }
    Ok(cfg)
}

/// Runs the agent on the Serf protocol until a signal.
pub async fn run(
    s: Settings,
    prom: metrics_exporter_prometheus::PrometheusHandle,
    acl: Arc<acl::Acl>,
) -> Result<()> {
    let cfg = serf_config(&s)?;
    let encrypted = cfg.keyring.is_some();
    if !s.config.label.is_empty() {
        anyhow::bail!(
            "--label has no meaning on --protocol serf: Serf 0.9's memberlist has no cluster \
             labels (use an encryption key to keep clusters apart)"
        );
    }
    if !s.bind.ip().is_loopback() && s.encrypt_key_file.is_none() {
        tracing::warn!(
            bind = %s.bind,
            "GOSSIP IS NOT ENCRYPTED on an address others can reach: anyone who can send to \
             it can join the Serf cluster and read its events. Set encrypt_key_file (the \
             cluster's `serf keygen` key) and allowed_networks."
        );
    }
    if s.data_dir.is_some() {
        tracing::warn!("--data-dir is not used on --protocol serf: members are not snapshotted");
    }
    let agent = SerfAgent::start(cfg, s.bind, s.join.clone(), s.allowed_networks.clone()).await?;
    tracing::info!(
        name = agent.name(),
        addr = %agent.addr(),
        http = %s.http,
        encrypted,
        protocol = "serf",
        "agent started"
    );
    let listener = tokio::net::TcpListener::bind(s.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", s.http))?;
    let (stream, _) = tokio::sync::broadcast::channel(1024);
    let app = SerfApp {
        agent: agent.clone(),
        stream,
        recent: Arc::new(Mutex::new(VecDeque::new())),
        prom: prom.clone(),
        hosts: Arc::new(Hosts {
            allowed: s.http_allowed_hosts.clone(),
            loopback: s.http.ip().is_loopback() || s.http.ip().is_unspecified(),
        }),
        acl,
        encrypted,
    };
    tokio::spawn(log_events(app.clone()));
    let handlers = super::handlers::parse_all(&s.event_handlers);
    if !handlers.is_empty() {
        tokio::spawn(super::handlers::run_serf(
            agent.clone(),
            handlers,
            s.event_handlers_max,
        ));
    }
    {
        let prom = prom.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                prom.run_upkeep();
            }
        });
    }
    let tls = s.tls.as_ref().map(|t| t.server_config()).transpose()?;
    let counters = Arc::new(super::listen::Counters::default());
    let server = tokio::spawn(super::listen::serve(
        listener,
        router(app),
        tls,
        s.http_limits.clone(),
        counters,
    ));
    super::wait_for_signal().await;
    tracing::info!("leaving the cluster");
    agent.leave().await?;
    server.abort();
    Ok(())
}

fn router(app: SerfApp) -> Router {
    Router::new()
        .route("/v1/grapevine/members", get(members))
        .route("/v1/agent/members", get(consul_members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/event/fire/{name}", put(fire))
        .route("/v1/event/list", get(event_list))
        .route("/v1/grapevine/events", get(event_stream))
        .route("/v1/grapevine/query", post(query))
        .route("/v1/grapevine/keyring", get(keyring_list))
        .route("/v1/grapevine/keyring/{op}", put(keyring_op))
        .route("/metrics", get(metrics))
        .fallback(not_on_serf)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn guard(State(app): State<SerfApp>, req: Request, next: Next) -> Response {
    if let Err(e) = app.hosts.check(req.headers()) {
        return (StatusCode::FORBIDDEN, e).into_response();
    }
    let token = acl::token_of(req.headers(), req.uri().query());
    let authz = app.acl.authorize(token.as_deref());
    if let Some(need) = acl::need(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
        app.agent.name(),
    ) {
        if let Err(denied) = authz.check(&need) {
            return (StatusCode::FORBIDDEN, denied.to_string()).into_response();
        }
    }
    next.run(req).await
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

async fn not_on_serf(req: Request) -> Response {
    err(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{} is not available on an agent speaking the Serf protocol: the shared keyspace, \
             services, health checks and aggregates are grapevine's own protocol's (run the \
             agent with --protocol grapevine for them)",
            req.uri().path()
        ),
    )
}

fn tags_text(m: &MemberInfo) -> String {
    m.tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn status_word(m: &MemberInfo) -> &'static str {
    if m.suspect && m.status == grapevine_core::serf::Status::Alive {
        "suspect"
    } else {
        m.status.as_str()
    }
}

async fn members(State(app): State<SerfApp>) -> Response {
    match app.agent.with(|n, _| n.members()).await {
        Ok(ms) => Json(
            ms.iter()
                .map(|m| super::http::MemberView {
                    name: m.name.clone(),
                    addr: m.addr.to_string(),
                    status: status_word(m).to_string(),
                    tags: tags_text(m),
                    incarnation: m.incarnation,
                    since: None,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn consul_member(m: &MemberInfo) -> serde_json::Value {
    let status = match m.status {
        grapevine_core::serf::Status::Alive => 1,
        grapevine_core::serf::Status::Leaving => 2,
        grapevine_core::serf::Status::Left => 3,
        grapevine_core::serf::Status::Failed => 4,
        grapevine_core::serf::Status::None => 0,
    };
    serde_json::json!({
        "Name": m.name, "Addr": m.addr.ip().to_string(), "Port": m.addr.port(),
        "Tags": m.tags, "Status": status,
        "ProtocolMin": m.vsn[0], "ProtocolMax": m.vsn[1], "ProtocolCur": m.vsn[2],
        "DelegateMin": m.vsn[3], "DelegateMax": m.vsn[4], "DelegateCur": m.vsn[5],
    })
}

async fn consul_members(State(app): State<SerfApp>) -> Response {
    match app.agent.with(|n, _| n.members()).await {
        Ok(ms) => Json(ms.iter().map(consul_member).collect::<Vec<_>>()).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn agent_self(State(app): State<SerfApp>) -> Response {
    let name = app.agent.name().to_string();
    let me = app
        .agent
        .with(move |n, _| n.members().into_iter().find(|m| m.name == name))
        .await;
    match me {
        Ok(Some(m)) => Json(serde_json::json!({
            "Config": { "NodeName": m.name, "Datacenter": super::consul::DATACENTER, "Protocol": "serf" },
            "Member": consul_member(&m),
        }))
        .into_response(),
        _ => err(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"),
    }
}

async fn join(State(app): State<SerfApp>, Path(addr): Path<String>) -> Response {
    match app.agent.join(vec![addr.clone()]).await {
        Ok(0) => err(StatusCode::BAD_REQUEST, format!("cannot resolve {addr}")),
        Ok(_) => Json(true).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn leave(State(app): State<SerfApp>) -> Response {
    match app.agent.leave().await {
        Ok(()) => Json(true).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn fire(State(app): State<SerfApp>, Path(name): Path<String>, body: Bytes) -> Response {
    let payload = body.to_vec();
    match app
        .agent
        .with(move |n, _| n.user_event(&name, &payload, true))
        .await
    {
        Ok(Ok(())) => Json(true).into_response(),
        Ok(Err(e)) => err(StatusCode::BAD_REQUEST, e),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn event_list(
    State(app): State<SerfApp>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let recent = app.recent.lock().map(|r| r.clone()).unwrap_or_default();
    let out: Vec<_> = recent
        .into_iter()
        .filter(|e| q.get("name").is_none_or(|n| e["Name"] == n.as_str()))
        .collect();
    Json(out).into_response()
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Turns engine events into the monitor's lines and keeps recent user events.
async fn log_events(app: SerfApp) {
    let mut rx = app.agent.events();
    let b64 = base64::engine::general_purpose::STANDARD;
    loop {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let member = |kind: &str, reason: &str, m: &MemberInfo| {
            serde_json::json!({
                "event": kind, "name": m.name, "reason": reason, "time": now_secs(),
                "addr": m.addr.to_string(), "incarnation": m.incarnation, "tags": m.tags,
            })
        };
        let line = match &e {
            SerfEvent::MemberJoin(m) => member("member-join", "joined", m),
            SerfEvent::MemberLeave(m) => member("member-leave", "left", m),
            SerfEvent::MemberFailed(m) => member("member-failed", "failed", m),
            SerfEvent::MemberUpdate(m) => member("member-update", "updated", m),
            SerfEvent::MemberReap(m) => member("member-reap", "reaped", m),
            SerfEvent::Refuted { incarnation } => serde_json::json!({
                "event": "refute", "name": app.agent.name(), "reason": "refuted",
                "time": now_secs(), "incarnation": incarnation, "local": true,
            }),
            SerfEvent::User {
                ltime,
                name,
                payload,
                ..
            } => {
                let v = serde_json::json!({
                    "ID": uuid_like(*ltime, name),
                    "Name": name,
                    "Payload": if payload.is_empty() { None } else { Some(b64.encode(payload)) },
                    "NodeFilter": "", "ServiceFilter": "", "TagFilter": "",
                    "Version": 1, "LTime": ltime, "Time": now_secs(),
                });
                if let Ok(mut r) = app.recent.lock() {
                    if r.len() >= KEPT_EVENTS {
                        r.pop_front();
                    }
                    r.push_back(v);
                }
                serde_json::json!({
                    "event": "user", "name": name, "reason": "user", "time": now_secs(),
                    "ltime": ltime, "payload": String::from_utf8_lossy(payload),
                })
            }
            SerfEvent::Query { name, source, .. } => serde_json::json!({
                "event": "query", "name": name, "reason": "query", "time": now_secs(),
                "from": source,
            }),
            _ => continue,
        };
        let _ = app.stream.send(line);
    }
}

/// An event id in a UUID's shape, from its clock and name.
fn uuid_like(ltime: u64, name: &str) -> String {
    let h = xxhash(name.as_bytes()) ^ ltime.rotate_left(17);
    let l = ltime;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        0x4000 | (h & 0x0fff),
        0x8000 | (l >> 48 & 0x3fff),
        l & 0xffff_ffff_ffff
    )
}

fn xxhash(b: &[u8]) -> u64 {
    // FNV-1a: a stable, dependency-free hash for an id's shape (not for security).
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        (h ^ u64::from(*c)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn event_stream(
    State(app): State<SerfApp>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let rx = app.stream.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let kind = v["event"].as_str().unwrap_or("event").to_string();
                    let ev = SseEvent::default().event(kind).data(v.to_string());
                    return Some((Ok(ev), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `POST /v1/grapevine/query?name=N&node=A&tag=k=re&timeout=5s&ack=true` with the payload
/// as body: one JSON line per ack and response as they arrive, then `{"type":"done"}`.
async fn query(
    State(app): State<SerfApp>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Response {
    let mut p = QueryParams {
        payload: body.to_vec(),
        ..QueryParams::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "name" => p.name = v,
            "node" => p.nodes.push(v),
            "tag" => match v.split_once('=') {
                Some((t, re)) => p.tags.push((t.to_string(), re.to_string())),
                None => return err(StatusCode::BAD_REQUEST, format!("tag {v:?}: key=regexp")),
            },
            "timeout" => match super::services::go_duration(&v) {
                Some(d) => p.timeout = Some(d),
                None => return err(StatusCode::BAD_REQUEST, format!("timeout {v:?}: like 5s")),
            },
            "ack" => p.request_ack = v != "false",
            "relay-factor" => p.relay_factor = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    if p.name.is_empty() {
        return err(StatusCode::BAD_REQUEST, "a query needs ?name=");
    }
    let lines = match run_query(&app.agent, p).await {
        Ok(rx) => rx,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let stream = futures_util::stream::unfold(Some(lines), |rx| async move {
        let mut rx = rx?;
        let line = match rx.recv().await {
            Some(Answer::Ack(from)) => serde_json::json!({"type": "ack", "from": from}),
            Some(Answer::Response(from, payload)) => serde_json::json!({
                "type": "response", "from": from,
                "payload": String::from_utf8_lossy(&payload),
            }),
            None => {
                let done = serde_json::json!({"type": "done"}).to_string() + "\n";
                return Some((Ok::<_, std::convert::Infallible>(done), None));
            }
        };
        Some((Ok(line.to_string() + "\n"), Some(rx)))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| err(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// One answer to a query.
enum Answer {
    /// A member acknowledged it.
    Ack(String),
    /// A member responded.
    Response(String, Vec<u8>),
}

/// Sends a query and yields its acks and responses as they arrive; the channel closes
/// when the query is done.
async fn run_query(
    agent: &SerfAgent,
    p: QueryParams,
) -> Result<tokio::sync::mpsc::Receiver<Answer>, String> {
    // Subscribe before sending, so that no answer is missed.
    let mut events = agent.events();
    let id = agent
        .with(move |n, now| n.query(p, now))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let answer = match events.recv().await {
                Ok(SerfEvent::QueryAck { id: i, from }) if i == id => Answer::Ack(from),
                Ok(SerfEvent::QueryResponse {
                    id: i,
                    from,
                    payload,
                }) if i == id => Answer::Response(from, payload),
                Ok(SerfEvent::QueryDone { id: i }) if i == id => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            if tx.send(answer).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Runs an internal keyring query across the cluster; returns the answers by member.
async fn key_query(
    agent: &SerfAgent,
    op: &str,
    key: Option<Vec<u8>>,
) -> Result<Vec<(String, grapevine_core::serf::messages::KeyResponse)>, String> {
    let p = QueryParams {
        name: format!("_serf_{op}"),
        payload: key
            .map(|k| grapevine_core::serf::messages::key_request(&k))
            .unwrap_or_default(),
        ..QueryParams::default()
    };
    let mut rx = run_query(agent, p).await?;
    let mut out = Vec::new();
    while let Some(answer) = rx.recv().await {
        let Answer::Response(from, payload) = answer else {
            continue;
        };
        match grapevine_core::serf::messages::KeyResponse::decode(&payload) {
            Ok(r) => out.push((from, r)),
            Err(_) => out.push((
                from,
                grapevine_core::serf::messages::KeyResponse {
                    message: "undecodable answer".into(),
                    ..Default::default()
                },
            )),
        }
    }
    Ok(out)
}

/// Members alive now, this one included: how many must answer a keyring query.
async fn live_members(agent: &SerfAgent) -> usize {
    agent
        .with(|n, _| {
            n.members()
                .iter()
                .filter(|m| m.status == grapevine_core::serf::Status::Alive)
                .count()
        })
        .await
        .unwrap_or(0)
}

async fn keyring_list(State(app): State<SerfApp>) -> Response {
    if !app.encrypted {
        return err(
            StatusCode::BAD_REQUEST,
            "gossip is not encrypted: no keyring",
        );
    }
    match key_query(&app.agent, "list-keys", None).await {
        Ok(answers) => {
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for (_, r) in &answers {
                for k in &r.keys {
                    *counts.entry(k.clone()).or_default() += 1;
                }
            }
            let members = live_members(&app.agent).await;
            Json(serde_json::json!({
                "Members": members,
                "Responses": answers.len(),
                // Keys are listed as Serf lists them: installed keys with the number of
                // members holding each.
                "Keys": counts,
            }))
            .into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn keyring_op(State(app): State<SerfApp>, Path(op): Path<String>, body: Bytes) -> Response {
    if !app.encrypted {
        return err(
            StatusCode::BAD_REQUEST,
            "gossip is not encrypted: no keyring",
        );
    }
    let query = match op.as_str() {
        "install" => "install-key",
        "use" => "use-key",
        "remove" => "remove-key",
        _ => {
            return err(
                StatusCode::NOT_FOUND,
                format!("unknown keyring operation {op:?}"),
            )
        }
    };
    let text = String::from_utf8_lossy(&body);
    let key = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(k) if matches!(k.len(), 16 | 24 | 32) => k,
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "the key must be base64 of 16, 24 or 32 bytes",
            )
        }
    };
    let members = live_members(&app.agent).await;
    match key_query(&app.agent, query, Some(key)).await {
        Ok(answers) => {
            let failed: Vec<String> = answers
                .iter()
                .filter(|(_, r)| !r.result)
                .map(|(n, r)| format!("{n}: {}", r.message))
                .collect();
            let ok = failed.is_empty() && answers.len() >= members;
            let body = serde_json::json!({
                "Members": members, "Responses": answers.len(), "Errors": failed,
            });
            if ok {
                Json(body).into_response()
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
            }
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn metrics(State(app): State<SerfApp>) -> Response {
    app.prom.render().into_response()
}
