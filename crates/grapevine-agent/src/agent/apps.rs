//! The HTTP API of the applications: Consul's service registration, catalog and health
//! endpoints, and grapevine's aggregation, ownership maps, version agreement and keyspace
//! convergence.

use super::acl::{Authz, Need, Resource};
use super::api::{blocking, index_header, ApiError, App};
use super::services::{Catalog, Instance, Origin, RegisterError, ServiceDef, Status};
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use grapevine::{Estimate, Target};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The datacenter every agent reports (one gossip pool is one datacenter).
pub const DATACENTER: &str = "grapevine";

/// The routes.
pub fn router() -> axum::Router<App> {
    Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/check/{op}/{id}", put(check_update))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/health/service/{name}", get(health_service))
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

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        let code = match e {
            RegisterError::NoCheck(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

fn denied(d: super::acl::Denied) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, d.to_string())
}

async fn register(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    let def = ServiceDef::from_json(&body).map_err(bad)?;
    authz
        .check(&Need::write(Resource::Service, def.name.clone()))
        .map_err(denied)?;
    app.registry.register(def, Origin::Api).await?;
    Ok(Json(true))
}

async fn deregister(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    Path(id): Path<String>,
) -> Result<Json<bool>, ApiError> {
    let name = app.registry.name_of(&id).unwrap_or_else(|| id.clone());
    authz
        .check(&Need::write(Resource::Service, name))
        .map_err(denied)?;
    if !app.registry.deregister(&id).await {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no service {id:?} here"),
        ));
    }
    Ok(Json(true))
}

async fn check_update(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    Path((op, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<bool>, ApiError> {
    let need = match app.registry.service_of_check(&id) {
        Some(service) => Need::write(Resource::Service, service),
        None => Need::write(Resource::Node, app.node.name().as_str()),
    };
    authz.check(&need).map_err(denied)?;
    let status = match op.as_str() {
        "pass" => Status::Passing,
        "warn" => Status::Warning,
        "fail" => Status::Critical,
        _ => return Err(bad(format!("{op:?}: pass, warn or fail"))),
    };
    let note = q.get("note").map_or("", String::as_str);
    app.registry.update_ttl(&id, status, note).await?;
    Ok(Json(true))
}

async fn agent_services(State(app): State<App>) -> Json<Value> {
    let out: serde_json::Map<String, Value> = app
        .registry
        .local()
        .into_iter()
        .map(|s| {
            (
                s.id.clone(),
                json!({"ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
                       "Port": s.port, "Meta": s.meta, "Datacenter": DATACENTER}),
            )
        })
        .collect();
    Json(Value::Object(out))
}

/// The catalog after a blocking wait on `?index=`, with its index.
async fn catalog_after(app: &App, q: &HashMap<String, String>) -> (u64, Arc<Catalog>) {
    let mut rx = app.catalog.clone();
    if let Some((index, wait)) = blocking(q) {
        let _ = tokio::time::timeout(wait, rx.wait_for(|(i, _)| *i > index)).await;
    }
    let (i, c) = &*rx.borrow();
    (*i, c.clone())
}

async fn catalog_services(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (index, catalog) = catalog_after(&app, &q).await;
    (index_header(index), Json(catalog.services())).into_response()
}

fn catalog_entry(i: &Instance) -> Value {
    json!({
        "ID": "", "Node": i.node, "Address": i.node_addr.to_string(), "Datacenter": DATACENTER,
        "TaggedAddresses": {}, "NodeMeta": {},
        "ServiceID": i.service.id, "ServiceName": i.service.name, "ServiceTags": i.service.tags,
        "ServiceAddress": i.service.address, "ServicePort": i.service.port,
        "ServiceMeta": i.service.meta, "ServiceEnableTagOverride": false,
        "CreateIndex": 1, "ModifyIndex": 1,
    })
}

/// The instances of service NAME (`?tag=`, passing ones only if `passing`), each in
/// `shape`, after a blocking wait.
async fn instances(
    app: &App,
    name: &str,
    q: &HashMap<String, String>,
    passing: bool,
    shape: fn(&Instance) -> Value,
) -> Response {
    let (index, catalog) = catalog_after(app, q).await;
    let tag = q.get("tag").map(String::as_str);
    let out: Vec<Value> = catalog
        .service(name, tag, passing)
        .into_iter()
        .map(shape)
        .collect();
    (index_header(index), Json(out)).into_response()
}

async fn catalog_service(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    instances(&app, &name, &q, false, catalog_entry).await
}

fn health_entry(i: &Instance) -> Value {
    let serf = json!({
        "Node": i.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": if i.node_alive { "passing" } else { "critical" },
        "Notes": "", "Output": if i.node_alive { "Agent alive and reachable" } else { "Agent not live or unreachable" },
        "ServiceID": "", "ServiceName": "", "ServiceTags": [],
    });
    let mut checks = vec![serf];
    for c in &i.service.checks {
        checks.push(json!({
            "Node": i.node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
            "Notes": "", "Output": c.output, "ServiceID": i.service.id,
            "ServiceName": i.service.name, "ServiceTags": i.service.tags,
        }));
    }
    json!({
        "Node": {"ID": "", "Node": i.node, "Address": i.node_addr.to_string(),
                 "Datacenter": DATACENTER, "TaggedAddresses": {}, "Meta": {}},
        "Service": {"ID": i.service.id, "Service": i.service.name, "Tags": i.service.tags,
                    "Address": i.service.address, "Port": i.service.port,
                    "Meta": i.service.meta, "Weights": {"Passing": 1, "Warning": 1}},
        "Checks": checks,
    })
}

async fn health_service(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let passing = q.contains_key("passing");
    instances(&app, &name, &q, passing, health_entry).await
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
