//! The HTTP API of grapevine's applications: aggregation, ownership maps, version agreement
//! and keyspace convergence. (Consul's service, catalog and health endpoints are in
//! `consul`.)

use super::api::{ApiError, App};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use grapevine::{Estimate, Target};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The routes.
pub fn router() -> axum::Router<App> {
    Router::new()
        .route("/v1/grapevine/aggregate", get(aggregates))
        .route(
            "/v1/grapevine/aggregate/{name}",
            get(aggregate).put(contribute).delete(withdraw),
        )
        .route("/v1/grapevine/ownership/{map}", get(slots).put(claim))
        .route("/v1/grapevine/versions/{key}", get(versions))
        .route("/v1/grapevine/converged", get(converged))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

fn estimate_json(name: &str, e: &Estimate) -> Value {
    json!({
        "Name": name, "Average": e.average, "Sum": e.sum, "Count": e.count,
        "Min": e.min, "Max": e.max, "Epoch": e.epoch, "Rounds": e.rounds, "Settled": e.settled,
    })
}

async fn aggregates(State(app): State<App>) -> Result<Json<Vec<Value>>, ApiError> {
    let all = app.node.aggregates().await?;
    Ok(Json(all.iter().map(|(n, e)| estimate_json(n, e)).collect()))
}

async fn aggregate(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match app.node.aggregate(&name).await? {
        Some(e) => Ok(Json(estimate_json(&name, &e))),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no aggregate {name:?} here"),
        )),
    }
}

async fn contribute(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    let text = std::str::from_utf8(&body).map_err(bad)?;
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| bad(format!("{:?} is not a number", text.trim())))?;
    app.node.contribute(&name, v).await.map_err(bad)?;
    Ok(Json(true))
}

async fn withdraw(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<bool>, ApiError> {
    app.node.withdraw(&name).await.map_err(bad)?;
    Ok(Json(true))
}

async fn slots(State(app): State<App>, Path(map): Path<String>) -> Result<Json<Value>, ApiError> {
    let m = app.node.slots(&map).await?;
    // Runs of consecutive slots with one claim, as Redis's CLUSTER SLOTS shows them.
    let mut runs: Vec<Value> = Vec::new();
    let mut cur: Option<(u32, u32, &grapevine::SlotOwner)> = None;
    for (&slot, o) in &m.owners {
        match &mut cur {
            Some((_, end, owner)) if *end + 1 == slot && *owner == o => *end = slot,
            _ => {
                if let Some((a, b, o)) = cur.take() {
                    runs.push(json!({"From": a, "To": b, "Owner": o.owner, "Epoch": o.epoch, "Addr": o.addr}));
                }
                cur = Some((slot, slot, o));
            }
        }
    }
    if let Some((a, b, o)) = cur {
        runs.push(json!({"From": a, "To": b, "Owner": o.owner, "Epoch": o.epoch, "Addr": o.addr}));
    }
    let lost: Vec<Value> = m
        .lost
        .iter()
        .map(|l| json!({"Slot": l.slot, "Epoch": l.epoch, "Winner": l.winner.owner, "WinnerEpoch": l.winner.epoch}))
        .collect();
    Ok(Json(json!({"Slots": runs, "Lost": lost})))
}

/// `PUT /v1/grapevine/ownership/MAP?slots=FROM-TO[&epoch=N]`.
async fn claim(
    State(app): State<App>,
    Path(map): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let spec = q
        .get("slots")
        .ok_or_else(|| bad("slots=FROM-TO is required"))?;
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let parse = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| bad(format!("bad slot {s:?}")))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    let epoch = match q.get("epoch") {
        Some(e) => Some(
            e.parse::<u64>()
                .map_err(|_| bad(format!("bad epoch {e:?}")))?,
        ),
        None => None,
    };
    let end = b.checked_add(1).ok_or_else(|| bad("slot out of range"))?;
    let epoch = app.node.claim(&map, a..end, epoch).await.map_err(bad)?;
    Ok(Json(json!({"Epoch": epoch})))
}

fn wait_of(q: &HashMap<String, String>) -> Option<Duration> {
    q.get("wait")
        .and_then(|w| super::services::duration(w))
        .map(|d| d.min(Duration::from_secs(600)))
}

/// What every live member publishes under a key of its own state; `?wait=` waits for all
/// to publish one value (schema agreement).
async fn versions(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let v = match wait_of(&q) {
        Some(wait) => match app.node.await_versions(&key, wait).await {
            Ok(v) => v,
            Err(grapevine::Error::Timeout(_)) => app.node.versions(&key).await?,
            Err(e) => return Err(e.into()),
        },
        None => app.node.versions(&key).await?,
    };
    let versions: serde_json::Map<String, Value> = v
        .versions
        .iter()
        .map(|(val, who)| (String::from_utf8_lossy(val).into_owned(), json!(who)))
        .collect();
    Ok(Json(
        json!({"Agreed": v.agreed, "Versions": versions, "Unknown": v.unknown}),
    ))
}

/// Whether every live member holds the same shared keyspace as this one; `?wait=` waits for
/// it (`grapevine kv await`).
async fn converged(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let a = match wait_of(&q) {
        Some(wait) => match app.node.await_agreement(Target::Keyspace, wait).await {
            Ok(a) => a,
            Err(grapevine::Error::Timeout(_)) => app.node.track(Target::Keyspace).await?,
            Err(e) => return Err(e.into()),
        },
        None => app.node.track(Target::Keyspace).await?,
    };
    let names =
        |v: &[grapevine::Name]| v.iter().map(|n| n.as_str().to_string()).collect::<Vec<_>>();
    let body = json!({"Converged": a.agreed, "Differ": names(&a.differ), "Unknown": names(&a.unknown),
                      "Index": app.node.kv_index()});
    let code = if a.agreed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(body)).into_response())
}
