//! Consul's user events: `/v1/event/fire` with its node, service and tag filters (carried
//! with the event, see `event_filters`), and `/v1/event/list`, with IDs as UUIDs (Consul's
//! Go client reads an index out of them).

use super::super::api::{blocking, index_header, ApiError, App};
use super::super::event_filters::{compile, uuid, wrap, Filters};
use super::super::log::EventLog;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/event/fire/{name}", put(fire))
        .route("/v1/event/list", get(list))
}

/// `PUT /v1/event/fire/NAME?node=&service=&tag=`: raises a user event.
async fn fire(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let filters = Filters {
        node_filter: get("node"),
        service_filter: get("service"),
        tag_filter: get("tag"),
    };
    for (what, re) in [
        ("node", &filters.node_filter),
        ("service", &filters.service_filter),
        ("tag", &filters.tag_filter),
    ] {
        if !re.is_empty() && compile(re).is_none() {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("Invalid {what} filter {re:?}: not a regular expression"),
            ));
        }
    }
    if !filters.tag_filter.is_empty() && filters.service_filter.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a tag filter needs a service filter".into(),
        ));
    }
    // Past this member's event budget (`events_per_origin`) the node refuses: 429.
    let payload = wrap(&filters, body.to_vec());
    let id = app.node.broadcast(&name, payload).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(serde_json::json!({
        "ID": uuid(app.node.name().as_str(), id), "Name": name,
        "Payload": if body.is_empty() { None } else { Some(b64.encode(&body)) },
        "NodeFilter": filters.node_filter, "ServiceFilter": filters.service_filter,
        "TagFilter": filters.tag_filter, "Version": 1, "LTime": 0,
    })))
}

/// `GET /v1/event/list`: the user events this agent delivered (the last 256), oldest
/// first, `?name=` to filter, blocking on `?index=` (the count received).
async fn list(
    State(log): State<Arc<EventLog>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some((index, wait)) = blocking(&q) {
        log.wait_user(index, wait).await;
    }
    let index = log.user_index();
    let b64 = base64::engine::general_purpose::STANDARD;
    let out: Vec<serde_json::Value> = log
        .user_events(q.get("name").map(String::as_str))
        .iter()
        .map(|e| {
            serde_json::json!({
                "ID": uuid(&e.origin, e.id),
                "Name": e.name,
                "Payload": if e.payload.is_empty() { None } else { Some(b64.encode(&e.payload)) },
                "NodeFilter": e.filters.node_filter, "ServiceFilter": e.filters.service_filter,
                "TagFilter": e.filters.tag_filter,
                "Version": 1,
                "LTime": e.ltime,
                "Origin": e.origin,
                "Time": e.time,
            })
        })
        .collect();
    (index_header(index), Json(out)).into_response()
}
