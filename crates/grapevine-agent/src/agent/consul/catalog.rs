//! Consul's agent, catalog, health and coordinate endpoints, read from the catalog every
//! member's published state makes, in Consul's JSON shapes, blocking where Consul's block.
//! Query filters as Consul's: `tag` (repeated: all required), `passing`, `filter`.

use super::super::acl::{Authz, Need, Resource};
use super::super::api::{blocking, index_header, ApiError, App};
use super::super::services::{
    Catalog, CheckDef, CheckRecord, Instance, LocalCheck, NodeEntry, Origin, RegisterError,
    ServiceDef, ServiceRecord, Status,
};
use super::Filter;
use super::DATACENTER;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(service_maintenance),
        )
        .route("/v1/agent/service/{id}", get(agent_service))
        .route("/v1/agent/checks", get(agent_checks))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/{op}/{id}", put(check_op))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/catalog/register", any(catalog_write))
        .route("/v1/catalog/deregister", any(catalog_write))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/health/checks/{name}", get(health_checks))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/health/state/{state}", get(health_state))
        .route("/v1/coordinate/nodes", get(coordinates))
        .route("/v1/coordinate/datacenters", get(coordinates))
        .route("/v1/coordinate/node/{node}", get(coordinates))
}

/// A request's query: repeated parameters kept (`?tag=a&tag=b`).
type Params = Query<Vec<(String, String)>>;

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn params<'a>(q: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    q.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A flag as Consul reads one: present with no value or a true one.
fn flag(q: &[(String, String)], name: &str) -> bool {
    param(q, name).is_some_and(|v| !matches!(v, "false" | "0" | "no"))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        let code = match e {
            RegisterError::NoCheck(_) | RegisterError::NoService(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

fn denied(d: super::super::acl::Denied) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, d.to_string())
}

/// `?filter=`, parsed (Consul's message for a bad one).
fn filter_of(q: &[(String, String)]) -> Result<Option<Filter>, ApiError> {
    param(q, "filter")
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            Filter::parse(f).map_err(|e| {
                bad(format!(
                    "Failed to create boolean expression evaluator: {e}"
                ))
            })
        })
        .transpose()
}

/// Keeps the elements of a list (or the values of a map) that pass `filter`.
fn filtered(v: Value, filter: &Option<Filter>) -> Value {
    let Some(f) = filter else {
        return v;
    };
    match v {
        Value::Array(a) => Value::Array(a.into_iter().filter(|x| f.matches(x)).collect()),
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, x)| f.matches(x)).collect()),
        other => other,
    }
}

/// The catalog after a blocking wait on `?index=`, with its index.
async fn catalog_after(app: &App, q: &[(String, String)]) -> (u64, Arc<Catalog>) {
    let map: std::collections::HashMap<String, String> = q.iter().cloned().collect();
    let mut rx = app.catalog.clone();
    if let Some((index, wait)) = blocking(&map) {
        let _ = tokio::time::timeout(wait, rx.wait_for(|(i, _)| *i > index)).await;
    }
    let (i, c) = &*rx.borrow();
    (*i, c.clone())
}

/// A blocking read answered with `X-Consul-Index` and `filter` applied.
async fn answer(
    app: &App,
    q: &[(String, String)],
    body: impl FnOnce(&Catalog) -> Value,
) -> Result<Response, ApiError> {
    let filter = filter_of(q)?;
    let (index, catalog) = catalog_after(app, q).await;
    let v = filtered(body(&catalog), &filter);
    Ok((index_header(index), Json(v)).into_response())
}

fn node_json(n: &NodeEntry) -> Value {
    json!({
        "ID": "", "Node": n.name, "Address": n.addr.to_string(), "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": n.addr.to_string(), "wan": n.addr.to_string()},
        "Meta": n.meta, "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn check_json(node: &str, c: &CheckRecord, service: Option<&ServiceRecord>) -> Value {
    json!({
        "Node": node, "CheckID": c.check_id, "Name": c.name, "Status": c.status,
        "Notes": c.notes, "Output": c.output,
        "ServiceID": service.map_or("", |s| s.id.as_str()),
        "ServiceName": service.map_or("", |s| s.name.as_str()),
        "ServiceTags": service.map_or(&[][..], |s| &s.tags[..]),
        "Type": "", "Definition": {}, "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn service_json(s: &ServiceRecord) -> Value {
    json!({
        "ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address,
        "TaggedAddresses": s.tagged_addresses, "Meta": s.meta, "Port": s.port,
        "Weights": s.weights, "EnableTagOverride": s.enable_tag_override,
        "Datacenter": DATACENTER, "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn catalog_entry(i: &Instance, node: Option<&NodeEntry>) -> Value {
    json!({
        "ID": "", "Node": i.node, "Address": i.node_addr.to_string(), "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": i.node_addr.to_string(), "wan": i.node_addr.to_string()},
        "NodeMeta": node.map(|n| n.meta.clone()).unwrap_or_default(),
        "ServiceKind": "",
        "ServiceID": i.service.id, "ServiceName": i.service.name, "ServiceTags": i.service.tags,
        "ServiceAddress": i.service.address, "ServicePort": i.service.port,
        "ServiceTaggedAddresses": i.service.tagged_addresses,
        "ServiceWeights": i.service.weights, "ServiceMeta": i.service.meta,
        "ServiceEnableTagOverride": i.service.enable_tag_override,
        "CreateIndex": 1, "ModifyIndex": 1,
    })
}

fn health_entry(i: &Instance, node: Option<&NodeEntry>) -> Value {
    let mut checks: Vec<Value> = match node {
        Some(n) => n
            .all_checks()
            .iter()
            .map(|c| check_json(&i.node, c, None))
            .collect(),
        None => Vec::new(),
    };
    for c in &i.service.checks {
        checks.push(check_json(&i.node, c, Some(&i.service)));
    }
    json!({
        "Node": node.map_or_else(|| json!({"Node": i.node, "Address": i.node_addr.to_string()}), node_json),
        "Service": service_json(&i.service),
        "Checks": checks,
    })
}

// ---- agent ----

async fn agent_services(State(app): State<App>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let filter = filter_of(&q)?;
    let out: serde_json::Map<String, Value> = app
        .registry
        .local()
        .iter()
        .map(|s| (s.id.clone(), service_json(s)))
        .collect();
    Ok(Json(filtered(Value::Object(out), &filter)))
}

async fn agent_service(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = app.registry.name_of(&id).unwrap_or_else(|| id.clone());
    authz
        .check(&Need::read(Resource::Service, name))
        .map_err(denied)?;
    app.registry
        .local()
        .iter()
        .find(|s| s.id == id)
        .map(|s| Json(service_json(s)))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("unknown service ID: {id}")))
}

async fn register(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    let def =
        ServiceDef::from_json(&body).map_err(|e| bad(format!("Request decode failed: {e}")))?;
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
            format!("Unknown service ID {id:?}"),
        ));
    }
    Ok(Json(true))
}

/// `?enable=true|false&reason=`: Consul requires `enable`.
fn maintenance_reason(q: &[(String, String)], default: &str) -> Result<Option<String>, ApiError> {
    let enable = match param(q, "enable") {
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(bad("Invalid value for \"enable\"")),
        None => return Err(bad("Missing value for enable")),
    };
    Ok(enable.then(|| {
        param(q, "reason")
            .filter(|r| !r.is_empty())
            .unwrap_or(default)
            .to_string()
    }))
}

async fn service_maintenance(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Json<bool>, ApiError> {
    let name = app
        .registry
        .name_of(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("Unknown service ID {id:?}")))?;
    authz
        .check(&Need::write(Resource::Service, name))
        .map_err(denied)?;
    let reason = maintenance_reason(
        &q,
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.",
    )?;
    app.registry
        .service_maintenance(&id, reason.as_deref())
        .await?;
    Ok(Json(true))
}

async fn node_maintenance(
    State(app): State<App>,
    Query(q): Params,
) -> Result<Json<bool>, ApiError> {
    let reason = maintenance_reason(
        &q,
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.",
    )?;
    app.registry.node_maintenance(reason.as_deref()).await;
    Ok(Json(true))
}

async fn agent_checks(State(app): State<App>, Query(q): Params) -> Result<Json<Value>, ApiError> {
    let filter = filter_of(&q)?;
    let me = app.node.name().as_str().to_string();
    let out: serde_json::Map<String, Value> = app
        .registry
        .local_checks()
        .iter()
        .map(
            |LocalCheck {
                 record,
                 service,
                 service_tags,
             }| {
                let mut v = check_json(&me, record, None);
                v["ServiceID"] = json!(service.0);
                v["ServiceName"] = json!(service.1);
                v["ServiceTags"] = json!(service_tags);
                (record.check_id.clone(), v)
            },
        )
        .collect();
    Ok(Json(filtered(Value::Object(out), &filter)))
}

/// The permission a check operation needs: its service's, or this node's.
fn check_need(app: &App, service: Option<String>) -> Need {
    match service {
        Some(s) => Need::write(Resource::Service, s),
        None => Need::write(Resource::Node, app.node.name().as_str()),
    }
}

async fn register_check(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("Request decode failed: {e}")))?;
    let def = CheckDef::from_value(v).map_err(|e| bad(format!("Request decode failed: {e}")))?;
    let service = def
        .service_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|sid| app.registry.name_of(sid).unwrap_or_else(|| sid.to_string()));
    authz.check(&check_need(&app, service)).map_err(denied)?;
    app.registry.register_check(def, Origin::Api).await?;
    Ok(Json(true))
}

/// `pass`, `warn`, `fail`, `update` (a TTL check) and `deregister`.
async fn check_op(
    State(app): State<App>,
    Extension(authz): Extension<Authz>,
    Path((op, id)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    authz
        .check(&check_need(&app, app.registry.service_of_check(&id)))
        .map_err(denied)?;
    let note = param(&q, "note").unwrap_or("").to_string();
    let (status, note) = match op.as_str() {
        "pass" => (Status::Passing, note),
        "warn" => (Status::Warning, note),
        "fail" => (Status::Critical, note),
        "update" => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Update {
                status: Status,
                #[serde(default)]
                output: String,
            }
            let u: Update = serde_json::from_slice(&body)
                .map_err(|e| bad(format!("Request decode failed: {e}")))?;
            (u.status, u.output)
        }
        "deregister" => {
            if !app.registry.deregister_check(&id).await? {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("Unknown check ID {id:?}"),
                ));
            }
            return Ok(Json(true));
        }
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown check operation {op:?}"),
            ))
        }
    };
    app.registry.update_ttl(&id, status, &note).await?;
    Ok(Json(true))
}

// ---- catalog ----

async fn datacenters() -> Json<Value> {
    Json(json!([DATACENTER]))
}

async fn catalog_nodes(State(app): State<App>, Query(q): Params) -> Result<Response, ApiError> {
    answer(&app, &q, |c| {
        Value::Array(c.nodes.iter().map(node_json).collect())
    })
    .await
}

async fn catalog_node(
    State(app): State<App>,
    Path(node): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    answer(&app, &q, |c| match c.node(&node) {
        None => Value::Null,
        Some(n) => {
            let services: serde_json::Map<String, Value> = c
                .instances
                .iter()
                .filter(|i| i.node == node)
                .map(|i| (i.service.id.clone(), service_json(&i.service)))
                .collect();
            json!({"Node": node_json(n), "Services": services})
        }
    })
    .await
}

async fn catalog_services(State(app): State<App>, Query(q): Params) -> Result<Response, ApiError> {
    answer(&app, &q, |c| json!(c.services())).await
}

async fn catalog_service(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let tags = params(&q, "tag");
    answer(&app, &q, |c| {
        Value::Array(
            c.service(&name, &tags, false)
                .into_iter()
                .map(|i| catalog_entry(i, c.node(&i.node)))
                .collect(),
        )
    })
    .await
}

async fn catalog_write() -> ApiError {
    ApiError(
        StatusCode::NOT_IMPLEMENTED,
        "the catalog is written by its members: register services and checks with the agent \
         that runs them (/v1/agent/service/register, /v1/agent/check/register); each member \
         publishes its own, so there is no central catalog to write to"
            .into(),
    )
}

// ---- health ----

async fn health_service(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let tags = params(&q, "tag");
    let passing = flag(&q, "passing");
    answer(&app, &q, |c| {
        Value::Array(
            c.service(&name, &tags, passing)
                .into_iter()
                .map(|i| health_entry(i, c.node(&i.node)))
                .collect(),
        )
    })
    .await
}

async fn health_checks(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    answer(&app, &q, |c| {
        Value::Array(
            c.service(&name, &[], false)
                .into_iter()
                .flat_map(|i| {
                    i.service
                        .checks
                        .iter()
                        .map(|ch| check_json(&i.node, ch, Some(&i.service)))
                })
                .collect(),
        )
    })
    .await
}

/// Every check of `node` (`None`: of every node): its health, its own, its services'.
fn checks_of(c: &Catalog, node: Option<&str>) -> Vec<(CheckRecord, Value)> {
    let mut out = Vec::new();
    for n in c.nodes.iter().filter(|n| node.is_none_or(|x| x == n.name)) {
        for ch in n.all_checks() {
            let v = check_json(&n.name, &ch, None);
            out.push((ch, v));
        }
        for i in c.instances.iter().filter(|i| i.node == n.name) {
            for ch in &i.service.checks {
                out.push((ch.clone(), check_json(&n.name, ch, Some(&i.service))));
            }
        }
    }
    out
}

async fn health_node(
    State(app): State<App>,
    Path(node): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    answer(&app, &q, |c| {
        Value::Array(
            checks_of(c, Some(&node))
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
        )
    })
    .await
}

async fn health_state(
    State(app): State<App>,
    Path(state): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let want = match state.as_str() {
        "any" => None,
        "passing" => Some(Status::Passing),
        "warning" => Some(Status::Warning),
        "critical" => Some(Status::Critical),
        _ => {
            return Err(bad(format!(
                "Invalid check state {state:?}: any, passing, warning or critical"
            )))
        }
    };
    answer(&app, &q, |c| {
        Value::Array(
            checks_of(c, None)
                .into_iter()
                .filter(|(ch, _)| want.is_none_or(|w| ch.status == w))
                .map(|(_, v)| v)
                .collect(),
        )
    })
    .await
}

// ---- coordinates ----

/// Network coordinates are not computed yet: an empty list, with the headers clients read.
async fn coordinates(State(app): State<App>) -> Response {
    let (index, _) = &*app.catalog.borrow();
    (index_header(*index), Json(json!([]))).into_response()
}
