//! What the HTTP handlers share: the application state, the error they answer with, and
//! Consul's blocking-query parameters. (The API's routes are in `http`, the applications'
//! in `apps`; both build on this.)

use super::acl::Acl;
use super::log::EventLog;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use grapevine::Node;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    /// The node.
    pub node: Node,
    /// Recent user events and the member event stream.
    pub log: Arc<EventLog>,
    /// Renders `/metrics`.
    pub prom: PrometheusHandle,
    /// The services registered here.
    pub registry: super::services::Registry,
    /// The catalog as known here, with its index.
    pub catalog: tokio::sync::watch::Receiver<(u64, Arc<super::services::Catalog>)>,
    /// The tokens and their rules.
    pub acl: Arc<Acl>,
    /// Which `Host` headers are taken.
    pub hosts: Arc<Hosts>,
    /// The fault drills, and whether they are allowed.
    pub drills: super::drills::Drills,
    /// The configuration profile's name (lan, wan, local).
    pub profile: String,
}

/// The `Host` headers the API answers: an IP literal, `localhost` when bound to loopback,
/// or a name in `http_allowed_hosts`. A page elsewhere that resolves its own name to this
/// agent's address (DNS rebinding) sends its own name, and is refused.
#[derive(Clone, Debug)]
pub struct Hosts {
    /// Names allowed (lowercase); `*` allows any.
    pub allowed: Vec<String>,
    /// Whether the API is bound to a loopback (or every) address.
    pub loopback: bool,
}

impl Hosts {
    /// Whether a request with these headers may be served.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(host) = headers.get(axum::http::header::HOST) else {
            // HTTP/1.0 clients may send none; browsers always do.
            return Ok(());
        };
        let host = host
            .to_str()
            .map_err(|_| "a Host header that is not text".to_string())?;
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        }
        .to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if name.parse::<std::net::IpAddr>().is_ok()
            || self.allowed.iter().any(|a| a == "*" || a == name)
            || (self.loopback && (name == "localhost" || name.ends_with(".localhost")))
        {
            return Ok(());
        }
        Err(format!(
            "Host {name:?} is not this agent's address: add it to http_allowed_hosts to allow \
             it (the check keeps web pages from reaching the API by DNS rebinding)"
        ))
    }
}

/// An API error: the status and a plain-text reason.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl From<grapevine::Error> for ApiError {
    fn from(e: grapevine::Error) -> Self {
        use grapevine::Error as E;
        let code = match e {
            E::Command(grapevine::CommandError::UnknownMember(_)) => StatusCode::NOT_FOUND,
            E::Command(grapevine::CommandError::RateLimited { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            E::Command(_) | E::Keyring(_) | E::Name(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

/// The `?index=` and `?wait=` of a blocking query: the index to wait past and for how long
/// (default 5 minutes, at most 10, as Consul).
pub(crate) fn blocking(q: &HashMap<String, String>) -> Option<(u64, Duration)> {
    let index = q.get("index")?.parse::<u64>().ok()?;
    let wait = q
        .get("wait")
        .and_then(|w| super::services::duration(w))
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600));
    Some((index, wait))
}

pub(crate) fn index_header(index: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&index.max(1).to_string()) {
        headers.insert("X-Consul-Index", v);
    }
    headers
}

/// A member state in the API's words.
pub(crate) fn status(s: grapevine::State) -> &'static str {
    match s {
        grapevine::State::Alive => "alive",
        grapevine::State::Suspect => "suspect",
        grapevine::State::Dead => "failed",
        grapevine::State::Left => "left",
    }
}
