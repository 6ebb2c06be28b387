//! Consul's KV endpoint on the shared keyspace: every option Consul documents behaves as
//! Consul's does, or is refused with Consul's status and a reason. `?acquire` and
//! `?release` (locks) are refused: on an eventually consistent store two clients could both
//! believe they hold one.

use super::super::api::{blocking, index_header, ApiError, App};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use grapevine::{KvEntry, KvWrite, Node};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Consul's largest value: 512 KiB.
pub const MAX_VALUE: usize = grapevine::core::wire::MAX_VALUE_LEN;

/// The routes: a key, and the root (`/v1/kv/?recurse`: the whole keyspace).
pub fn router() -> Router<App> {
    Router::new()
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route("/v1/kv", get(get_root).put(put_root).delete(delete_root))
}

type Params = Query<HashMap<String, String>>;

async fn get_root(State(app): State<App>, q: Params) -> Result<Response, ApiError> {
    read(&app.node, "", &q.0).await
}

async fn get_key(
    State(app): State<App>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    read(&app.node, &key, &q.0).await
}

async fn put_root(State(app): State<App>, q: Params, body: Bytes) -> Result<Response, ApiError> {
    write(&app.node, "", &q.0, body).await
}

async fn put_key(
    State(app): State<App>,
    Path(key): Path<String>,
    q: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(&app.node, &key, &q.0, body).await
}

async fn delete_root(State(app): State<App>, q: Params) -> Result<Response, ApiError> {
    delete(&app.node, "", &q.0).await
}

async fn delete_key(
    State(app): State<App>,
    Path(key): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    delete(&app.node, &key, &q.0).await
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

/// `?flags=` or `?cas=`: a whole number.
fn number(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("Invalid {name} index {v:?}: a whole number")))
        })
        .transpose()
}

/// Consul's entry shape. An empty value reads back `null`, as Consul's does (it stores an
/// empty body as no value).
pub(crate) fn entry_json(e: &KvEntry) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "Key": String::from_utf8_lossy(&e.key),
        "Value": if e.value.is_empty() { Value::Null } else { Value::String(b64.encode(&e.value)) },
        "Flags": e.flags, "LockIndex": 0,
        "CreateIndex": e.modify_index, "ModifyIndex": e.modify_index,
        // grapevine's: whose write this is and when, so racing writers can tell which won.
        "Writer": e.writer, "WrittenAt": e.written_at.0,
    })
}

/// The keys under `prefix`, each cut after the first `separator` past the prefix (Consul's
/// folders), without repeats, in order.
fn keys_upto(entries: &[KvEntry], prefix: &str, separator: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let k = String::from_utf8_lossy(&e.key).into_owned();
        let rest = k.get(prefix.len()..);
        let cut = match (separator.filter(|s| !s.is_empty()), rest) {
            (Some(sep), Some(rest)) => match rest.find(sep) {
                Some(i) => k[..prefix.len() + i + sep.len()].to_string(),
                None => k,
            },
            _ => k,
        };
        if out.last() != Some(&cut) {
            out.push(cut);
        }
    }
    out
}

async fn read(node: &Node, key: &str, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let recurse = q.contains_key("recurse");
    let keys_only = q.contains_key("keys");
    if let Some((index, wait)) = blocking(q) {
        node.kv_wait(index, wait).await;
    }
    let entries = node.entries(key.as_bytes(), recurse || keys_only).await?;
    let headers = index_header(node.kv_index());
    if entries.is_empty() {
        return Ok((StatusCode::NOT_FOUND, headers, "").into_response());
    }
    if keys_only {
        let keys = keys_upto(&entries, key, q.get("separator").map(String::as_str));
        return Ok((headers, Json(keys)).into_response());
    }
    if q.contains_key("raw") && !recurse {
        let value = entries
            .into_iter()
            .next()
            .map(|e| e.value)
            .unwrap_or_default();
        return Ok((
            headers,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            value,
        )
            .into_response());
    }
    let out: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok((headers, Json(out)).into_response())
}

/// Why locks are refused, in every answer that refuses one.
pub const NO_LOCKS: &str = "sessions and locks are not offered: grapevine's keyspace is \
    eventually consistent (no leader orders writes), so two clients could both believe they \
    hold a lock. Use a Consul server for locks and leader election; see docs/http-api.md";

async fn write(
    node: &Node,
    key: &str,
    q: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if q.contains_key("acquire") || q.contains_key("release") {
        return Err(ApiError(StatusCode::NOT_IMPLEMENTED, NO_LOCKS.into()));
    }
    if key.is_empty() {
        return Err(bad("Missing key name"));
    }
    if body.len() > MAX_VALUE {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE} bytes",
                body.len()
            ),
        ));
    }
    let w = KvWrite {
        value: Some(body.to_vec()),
        flags: number(q, "flags")?.unwrap_or(0),
        cas: number(q, "cas")?,
    };
    let wrote = node.kv_write(key.as_bytes(), w).await?;
    Ok(Json(wrote).into_response())
}

async fn delete(node: &Node, key: &str, q: &HashMap<String, String>) -> Result<Response, ApiError> {
    let cas = number(q, "cas")?;
    if q.contains_key("recurse") {
        if cas.is_some() {
            return Err(bad("cas and recurse cannot be combined"));
        }
        // Each key under the prefix gets a tombstone; the whole subtree goes.
        for e in node.entries(key.as_bytes(), true).await? {
            node.kv_write(&e.key, KvWrite::default()).await?;
        }
        return Ok(Json(true).into_response());
    }
    if key.is_empty() {
        return Err(bad("Missing key name"));
    }
    let w = KvWrite {
        value: None,
        flags: 0,
        cas,
    };
    Ok(Json(node.kv_write(key.as_bytes(), w).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str) -> KvEntry {
        KvEntry {
            key: k.as_bytes().to_vec(),
            value: vec![],
            modify_index: 1,
            writer: "a".into(),
            written_at: (0, 0),
            flags: 0,
        }
    }

    #[test]
    fn keys_are_cut_at_the_separator_past_the_prefix() {
        let es: Vec<KvEntry> = ["a/b", "a/c/d", "a/c/e", "a/f/", "b"]
            .into_iter()
            .map(e)
            .collect();
        assert_eq!(
            keys_upto(&es, "a/", Some("/")),
            ["a/b", "a/c/", "a/f/", "b"]
        );
        assert_eq!(keys_upto(&es, "", Some("/")), ["a/", "b"]);
        assert_eq!(keys_upto(&es, "a/", None).len(), 5);
    }
}
