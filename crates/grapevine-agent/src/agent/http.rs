//! The HTTP API: Consul's paths and shapes where they overlap, grapevine's own under
//! `/v1/grapevine/`, and Prometheus metrics.

use super::acl;
use super::api::{status, ApiError, App};
use super::log::EventLog;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use base64::Engine;
use grapevine::{Keyring, Node};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Checks every request before its handler: the `Host` header, then the token's permission
/// for what the request does (see [`acl::need`]). The token's rights go along for handlers
/// that check more.
pub async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    if let Err(e) = app.hosts.check(req.headers()) {
        refused("host");
        return (StatusCode::FORBIDDEN, e).into_response();
    }
    let token = acl::token_of(req.headers(), req.uri().query());
    let authz = app.acl.authorize(token.as_deref());
    let need = acl::need(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
        app.node.name().as_str(),
    );
    if let Some(need) = need {
        if let Err(denied) = authz.check(&need) {
            refused("acl");
            return (StatusCode::FORBIDDEN, denied.to_string()).into_response();
        }
    }
    req.extensions_mut().insert(authz);
    let response = next.run(req).await;
    match response.status() {
        StatusCode::FORBIDDEN => refused("acl"),
        StatusCode::TOO_MANY_REQUESTS => refused("rate_limited"),
        _ => {}
    }
    response
}

/// Counts a request the API refused (`grapevine_dropped_total{layer="http"}`); the
/// reason is logged by the caller's answer, not here: a token must never reach a log.
fn refused(reason: &'static str) {
    metrics::counter!(grapevine::metrics::DROPPED, "layer" => "http", "reason" => reason)
        .increment(1);
}

impl FromRef<App> for Node {
    fn from_ref(app: &App) -> Node {
        app.node.clone()
    }
}

impl FromRef<App> for Arc<EventLog> {
    fn from_ref(app: &App) -> Arc<EventLog> {
        app.log.clone()
    }
}

/// The HTTP API.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/agent/members", get(consul_members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/join/{addr}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/force-leave/{name}", put(force_leave))
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
        .route("/v1/grapevine/members", get(members))
        .route("/v1/grapevine/state", get(node_states))
        .route("/v1/grapevine/state/{name}", get(node_state))
        .route(
            "/v1/grapevine/state/{name}/{key}",
            put(state_put).delete(state_delete),
        )
        .route("/v1/grapevine/events", get(event_stream))
        .route("/v1/grapevine/keyring", get(keyring_list))
        .route("/v1/grapevine/keyring/{op}", put(keyring_op))
        .route("/metrics", get(metrics))
        .merge(super::apps::router())
        .merge(super::consul::router())
        .merge(super::ui::router())
        .merge(drill_routes())
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        // Outermost, so that refusals by the guard carry Consul's headers too.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::consul::layer,
        ))
        .with_state(app)
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
    /// When it entered its present state (seconds since the UNIX epoch), if this agent saw
    /// it happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
}

async fn members(State(app): State<App>) -> Result<Json<Vec<MemberView>>, ApiError> {
    let mut out: Vec<MemberView> = app
        .node
        .members()
        .await?
        .into_iter()
        .map(|m| MemberView {
            name: m.name.as_str().to_string(),
            addr: m.addr.to_string(),
            status: status(m.state).to_string(),
            tags: String::from_utf8_lossy(&m.tags).into_owned(),
            incarnation: m.incarnation,
            since: app.log.since(m.name.as_str()),
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
        "Config": { "NodeName": node.name().as_str(), "Datacenter": super::consul::DATACENTER },
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

/// Keys as the API shows them: fingerprints (the first 8 bytes of their SHA-256, in hex),
/// never the keys, which would let whoever reads the API read and write the gossip.
fn keys_json(keys: &[grapevine::crypto::Key]) -> Json<Vec<String>> {
    Json(keys.iter().map(grapevine::crypto::fingerprint).collect())
}

/// The keyring's fingerprints, primary first (this agent's: rotate a cluster by calling
/// every agent).
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
    // There is no leader: every agent answers for itself, so a client that checks for "a
    // leader" before writing finds one, and writes go to the agent it asked.
    Json(node.addr().to_string())
}

/// Consul's raft peers; here, every live member's gossip address (all are equal).
async fn peers(State(node): State<Node>) -> Result<Json<Vec<String>>, ApiError> {
    let mut out: Vec<String> = node
        .members()
        .await?
        .into_iter()
        .filter(|m| m.state.is_live())
        .map(|m| m.addr.to_string())
        .collect();
    out.sort();
    Ok(Json(out))
}

async fn force_leave(
    State(node): State<Node>,
    Path(name): Path<String>,
) -> Result<Json<bool>, ApiError> {
    node.force_leave(&name).await?;
    Ok(Json(true))
}

/// One member's per-node state in the API's shape: keys with base64 values and versions.
fn state_json(s: &grapevine::NodeStateView) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys: serde_json::Map<String, serde_json::Value> = s
        .keys
        .iter()
        .map(|(k, v, version)| {
            (
                k.clone(),
                serde_json::json!({ "Value": b64.encode(v), "Version": version }),
            )
        })
        .collect();
    serde_json::json!({
        "Name": s.name,
        "Generation": s.generation,
        "Version": s.version,
        "Keys": keys,
    })
}

/// Every member's per-node state as known here.
async fn node_states(State(node): State<Node>) -> Result<Json<serde_json::Value>, ApiError> {
    let states = node.node_states(None).await?;
    Ok(Json(serde_json::Value::Array(
        states.iter().map(state_json).collect(),
    )))
}

/// One member's per-node state as known here.
async fn node_state(
    State(node): State<Node>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let states = node.node_states(Some(&name)).await?;
    let s = states.first().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no state known for {name:?}"),
        )
    })?;
    Ok(Json(state_json(s)))
}

/// Only this agent's own per-node state can be written: each member owns its state.
fn own_state(node: &Node, name: &str) -> Result<(), ApiError> {
    if name == node.name().as_str() {
        return Ok(());
    }
    Err(ApiError(
        StatusCode::FORBIDDEN,
        format!(
            "{name:?} is another member: an agent writes only its own state ({:?})",
            node.name().as_str()
        ),
    ))
}

/// Sets a key of this agent's own per-node state; answers its version.
async fn state_put(
    State(node): State<Node>,
    Path((name, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<u64>, ApiError> {
    own_state(&node, &name)?;
    Ok(Json(node.set_state(&key, body.to_vec()).await?))
}

/// Deletes a key of this agent's own per-node state.
async fn state_delete(
    State(node): State<Node>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<bool>, ApiError> {
    own_state(&node, &name)?;
    Ok(Json(node.delete_state(&key).await?.is_some()))
}

/// Member events (and user events and refutations) as server-sent events, from now on:
/// each an `event:` line with the kind and a JSON `data:` line.
async fn event_stream(
    State(log): State<Arc<EventLog>>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let rx = log.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    let ev = SseEvent::default().event(e.event).data(data);
                    return Some((Ok(ev), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "an event stream subscriber fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.prom.render(),
    )
}

impl From<super::drills::DrillError> for ApiError {
    fn from(e: super::drills::DrillError) -> Self {
        use super::drills::DrillError as D;
        let code = match e {
            D::Disabled => StatusCode::FORBIDDEN,
            D::Bad(_) => StatusCode::BAD_REQUEST,
            D::TooMany => StatusCode::TOO_MANY_REQUESTS,
            D::Node(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

/// The drills' routes.
fn drill_routes() -> Router<App> {
    Router::new()
        .route(
            "/v1/grapevine/drills",
            get(drills_list).post(drill_start).delete(drills_end_all),
        )
        .route("/v1/grapevine/drills/{id}", delete(drill_end))
}

async fn drills_list(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"Enabled": app.drills.enabled(), "Drills": app.drills.list()}))
}

async fn drill_start(
    State(app): State<App>,
    body: axum::body::Bytes,
) -> Result<Json<super::drills::Drill>, ApiError> {
    app.drills.refuse_unless_enabled()?;
    let req: super::drills::DrillRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("a drill is {{\"Kind\": \"drop\"|\"delay\"|\"cut\", \"Share\"|\"Millis\"|\"Members\", \"For\"}}: {e}"),
        )
    })?;
    Ok(Json(app.drills.start(&app.node, req).await?))
}

async fn drill_end(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<bool>, ApiError> {
    Ok(Json(app.drills.end(&app.node, Some(id)).await?))
}

async fn drills_end_all(State(app): State<App>) -> Result<Json<bool>, ApiError> {
    Ok(Json(app.drills.end(&app.node, None).await?))
}
