//! What Consul offers and gossip cannot promise, refused with a reason, never a silent
//! success: sessions (and the locks built on them) and transactions.

use super::super::api::{ApiError, App};
use super::kv::NO_LOCKS;
use axum::http::StatusCode;
use axum::routing::any;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/session/{*rest}", any(session))
        .route("/v1/txn", any(txn))
}

/// Why transactions are refused.
pub const NO_TXN: &str = "transactions are not offered: a transaction's checks and its \
    all-or-nothing writes need one ordered log (a Consul server's Raft), and grapevine's \
    keyspace is eventually consistent. Write keys one by one, with ?cas= for a check on \
    this agent's replica; see docs/http-api.md";

/// Logs a refusal at most once a minute per kind, so a client that retries in a loop (as
/// Patroni does on session.create) is visible in the log without flooding it.
fn log_refusal(last: &AtomicU64, what: &str, why: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prev = last.load(Ordering::Relaxed);
    if now >= prev + 60
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            what,
            "a client asked for what this agent does not offer: {why}"
        );
    }
    metrics::counter!(grapevine::metrics::DROPPED, "layer" => "http", "reason" => "unsupported")
        .increment(1);
}

async fn session() -> ApiError {
    static LAST: AtomicU64 = AtomicU64::new(0);
    log_refusal(&LAST, "session", NO_LOCKS);
    ApiError(StatusCode::NOT_IMPLEMENTED, NO_LOCKS.into())
}

async fn txn() -> ApiError {
    static LAST: AtomicU64 = AtomicU64::new(0);
    log_refusal(&LAST, "txn", NO_TXN);
    ApiError(StatusCode::NOT_IMPLEMENTED, NO_TXN.into())
}
