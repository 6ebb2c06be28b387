//! The dashboard: static assets embedded in the binary (plain HTML, CSS and JavaScript,
//! no build step, nothing loaded from elsewhere) served at `/ui/`, and the endpoints only
//! it needs: this agent's gossip internals, every member's view of every other, and the
//! simulator's estimate of how fast a write spreads here. The page polls while it is open;
//! when nobody has it open, none of this runs.

use super::api::{ApiError, App};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use grapevine::core::wire::MessageType;
use grapevine::core::DropReason;
use serde_json::{json, Value};

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::temporary("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/v1/grapevine/internals", get(internals))
        .route("/v1/grapevine/views", get(views))
        .route("/v1/grapevine/convergence", get(convergence))
        .route("/v1/grapevine/keys", get(keys))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Nothing but the agent itself: no scripts, styles or images from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// This agent's internals: probe, health, suspicions, queue, counters by message type and
/// drop reason (the page turns counters into rates), the drills in force.
async fn internals(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let i = app.node.internals().await?;
    let s = app.node.stats().await?;
    let by_type = |counts: &[u64; 32]| -> serde_json::Map<String, Value> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| {
                let name = u8::try_from(code)
                    .ok()
                    .and_then(MessageType::from_code)
                    .map_or_else(|| format!("type_{code}"), |t| t.as_str().to_string());
                (name, json!(n))
            })
            .collect()
    };
    let mut dropped: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .zip(s.dropped.iter())
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (r.as_str().to_string(), json!(n)))
        .collect();
    for (reason, n) in app.node.refused().await? {
        dropped.insert(reason.to_string(), json!(n));
    }
    let secs = |d: std::time::Duration| d.as_secs_f64();
    Ok(Json(json!({
        "Name": app.node.name().as_str(),
        "Incarnation": i.incarnation,
        "HealthScore": i.health_score,
        "Probe": i.probe.map(|p| json!({"Target": p.target.as_str(), "Age": secs(p.age), "Indirect": p.indirect})),
        "Suspicions": i.suspicions.iter().map(|s| json!({
            "Member": s.member.as_str(), "Incarnation": s.incarnation, "Age": secs(s.age),
            "Remaining": s.remaining.map(secs), "Confirmations": s.confirmations,
            "Expected": s.expected,
        })).collect::<Vec<_>>(),
        "QueueDepth": i.queue_depth,
        "Probes": s.probes, "ProbesFailed": s.probes_failed,
        "RttMicros": s.rtt_micros_sum.checked_div(s.rtt_count).unwrap_or(0),
        "PacketsIn": s.packets_in, "PacketsOut": s.packets_out,
        "BytesIn": s.bytes_in, "BytesOut": s.bytes_out,
        "MessagesIn": by_type(&s.messages_in), "MessagesOut": by_type(&s.messages_out),
        "BytesInByType": by_type(&s.bytes_in_by_type), "BytesOutByType": by_type(&s.bytes_out_by_type),
        "Dropped": dropped,
        "Drills": app.drills.list(),
        "DrillsEnabled": app.drills.enabled(),
        "Time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
    })))
}

/// The shared keys under `?prefix=`, in Consul's entry shape: an empty list (not Consul's
/// 404) when there are none, so that browsing an empty prefix is not an error.
async fn keys(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = q.get("prefix").map_or("", String::as_str);
    let entries = app.node.entries(prefix.as_bytes(), true).await?;
    Ok(Json(Value::Array(
        entries.iter().map(super::consul::kv::entry_json).collect(),
    )))
}

/// Every member's view of every other, as each publishes it (see `views`), and how long
/// the last change took to reach every member that saw it.
async fn views(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    Ok(Json(super::views::matrix(&app.node).await?))
}

/// A convergence estimate: for which (size, loss in 1 % steps), when, and what.
type Estimate = ((usize, u32), std::time::Instant, Value);

/// How fast a write spreads in a cluster like this one, by the simulator (the real
/// protocol on a simulated network: the median of 3 seeds), beside the last spread measured.
async fn convergence(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let members = app.node.members().await?;
    let n = members.iter().filter(|m| m.state.is_live()).count().max(2);
    let s = app.node.stats().await?;
    // Loss as this agent measures it: the share of its probes that got no ack at all.
    let loss = if s.probes > 20 {
        (s.probes_failed as f64 / s.probes as f64).min(0.5)
    } else {
        0.0
    };
    // One estimate at a time, kept for five minutes per (size, loss in 1 % steps): a page
    // left open, or many, cost one simulation, not one per poll.
    static CACHE: tokio::sync::Mutex<Option<Estimate>> = tokio::sync::Mutex::const_new(None);
    let key = (
        n.min(super::views::MAX_SIMULATED),
        (loss * 100.0).round() as u32,
    );
    let mut cache = CACHE.lock().await;
    let sim = match &*cache {
        Some((k, at, v)) if *k == key && at.elapsed() < std::time::Duration::from_secs(300) => {
            v.clone()
        }
        _ => {
            let profile = app.profile.clone();
            let v = tokio::task::spawn_blocking(move || super::views::simulate(n, &profile, loss))
                .await
                .map_err(|e| {
                    ApiError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                })?;
            *cache = Some((key, std::time::Instant::now(), v.clone()));
            v
        }
    };
    drop(cache);
    let last = super::views::matrix(&app.node).await?;
    Ok(Json(json!({
        "Members": n, "Profile": app.profile, "Loss": loss,
        "Model": sim,
        "LastSpread": last["LastChange"],
    })))
}
