//! Consul's HTTP API where grapevine has an answer, in Consul's shapes: the keyspace (KV),
//! the catalog, health, the agent's checks, and the refusals, with a reason, of what gossip
//! cannot promise (sessions, locks, transactions). Every Consul path answers with the
//! headers Consul's clients read, errors included, and a request for another datacenter is
//! refused as Consul refuses it.

mod catalog;
mod event;
mod filter;
pub(crate) mod kv;
mod refuse;

use super::api::App;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use filter::Filter;

/// The datacenter every agent reports (one gossip pool is one datacenter).
pub const DATACENTER: &str = "grapevine";

/// Consul's routes answered here.
pub fn router() -> Router<App> {
    Router::new()
        .merge(kv::router())
        .merge(catalog::router())
        .merge(event::router())
        .merge(refuse::router())
}

/// Whether `path` is one of Consul's (not grapevine's own, not `/metrics`).
fn is_consul(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/grapevine/")
}

/// What every Consul path shares: `?dc=` other than this datacenter is refused as Consul
/// refuses it (500, "No path to datacenter"); a `?wait=` or `?index=` that does not parse
/// is a 400, not a silent default; answers carry `X-Consul-KnownLeader` and
/// `X-Consul-LastContact` (there is no leader to lose: every agent answers for itself);
/// errors carry `X-Consul-Index` (clients read it from every answer) and a body.
pub async fn layer(State(app): State<App>, req: Request, next: Next) -> Response {
    if !is_consul(req.uri().path()) {
        return next.run(req).await;
    }
    let params: Vec<(String, String)> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let early = if get("dc").is_some_and(|dc| !dc.is_empty() && dc != DATACENTER) {
        Some((StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter"))
    } else if get("wait").is_some_and(|w| super::services::duration(w).is_none()) {
        Some((StatusCode::BAD_REQUEST, "Invalid wait time"))
    } else if get("index").is_some_and(|i| i.parse::<u64>().is_err()) {
        Some((StatusCode::BAD_REQUEST, "Invalid index"))
    } else {
        None
    };
    let mut resp = match early {
        Some((code, why)) => {
            refused(why);
            (code, why.to_string()).into_response()
        }
        None => next.run(req).await,
    };
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let empty = axum::body::HttpBody::size_hint(resp.body()).exact() == Some(0);
        if empty {
            let why = status.canonical_reason().unwrap_or("error").to_string();
            let (parts, _) = resp.into_parts();
            resp = Response::from_parts(parts, axum::body::Body::from(why));
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if !resp.headers().contains_key("X-Consul-Index") {
            if let Ok(v) = HeaderValue::from_str(&app.node.kv_index().max(1).to_string()) {
                resp.headers_mut().insert("X-Consul-Index", v);
            }
        }
    }
    let h = resp.headers_mut();
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    resp
}

/// Counts a Consul request refused before its handler.
fn refused(reason: &'static str) {
    let reason = match reason {
        "No path to datacenter" => "unknown_datacenter",
        "Invalid wait time" => "bad_wait",
        _ => "bad_index",
    };
    metrics::counter!(grapevine::metrics::DROPPED, "layer" => "http", "reason" => reason)
        .increment(1);
}
