//! Serf's queries (query.go, internal_query.go): asking every matching member and
//! gathering acks and responses until a timeout, or until every member that matches has
//! answered; answering others' queries, with relays; and the internal `_serf_` queries
//! behind `serf keys` and `serf reachability`.

use super::messages::{
    self, Filter, KeyResponse, Query, QueryResponse, SerfMsg, FLAG_ACK, FLAG_NO_BROADCAST,
};
use super::msgpack::Enc;
use super::{SerfEvent, SerfNode, Status};
use crate::Time;
use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Queries of our own in flight at once.
const MAX_OUTSTANDING: usize = 256;
/// Others' queries we may still answer.
const MAX_PENDING_ANSWERS: usize = 1024;
/// Serf's prefix for the queries it answers itself.
pub const INTERNAL_PREFIX: &str = "_serf_";

/// Why a query could not be sent or answered.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Larger than the query size limit.
    #[error("the query is {0} bytes, over the {1}-byte limit")]
    TooLarge(usize, usize),
    /// A response larger than the response size limit.
    #[error("the response is {0} bytes, over the {1}-byte limit")]
    ResponseTooLarge(usize, usize),
    /// The query is unknown or its deadline passed.
    #[error("the query's deadline has passed")]
    Expired,
    /// Too many queries in flight.
    #[error("too many queries in flight")]
    Busy,
    /// A tag filter that is not a valid regular expression.
    #[error("bad tag filter: {0}")]
    BadFilter(String),
}

/// What to ask and of whom.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    /// Name.
    pub name: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Only these members (none: all).
    pub nodes: Vec<String>,
    /// Only members whose tag matches the regular expression.
    pub tags: Vec<(String, String)>,
    /// Ask for acks as well as responses.
    pub request_ack: bool,
    /// Extra members that relay each response.
    pub relay_factor: u8,
    /// How long to wait (none: Serf's default for the cluster's size).
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
struct Outgoing {
    id: u32,
    deadline: Time,
    expected: BTreeSet<String>,
    responded: BTreeSet<String>,
    acked: BTreeSet<String>,
}

#[derive(Debug)]
struct Incoming {
    ltime: u64,
    id: u32,
    to: SocketAddr,
    source: String,
    deadline: Time,
    relay_factor: u8,
}

/// Queries in flight, ours and others'.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    out: BTreeMap<u64, Outgoing>,
    incoming: BTreeMap<u64, Incoming>,
    next_handle: u64,
}

impl Queries {
    pub fn next_deadline(&self) -> Option<Time> {
        self.out.values().map(|o| o.deadline).min()
    }
}

fn matches_filters(
    filters: &[Filter],
    name: &str,
    tags: &std::collections::BTreeMap<String, String>,
) -> bool {
    filters.iter().all(|f| match f {
        Filter::Nodes(names) => names.iter().any(|n| n == name),
        Filter::Tag { tag, expr } => regex::RegexBuilder::new(expr)
            .size_limit(1 << 20)
            .build()
            .is_ok_and(|re| re.is_match(tags.get(tag).map_or("", String::as_str))),
    })
}

impl SerfNode {
    /// Serf's default query timeout for the cluster's size.
    pub fn default_query_timeout(&self) -> Duration {
        let n = self.live_count() as f64;
        let scale = (n + 1.0).log10().ceil().max(1.0);
        self.cfg.gossip_interval * self.cfg.query_timeout_mult * scale as u32
    }

    /// Sends a query; its acks, responses and end come as events with the returned id.
    pub fn query(&mut self, p: QueryParams, now: Time) -> Result<u64, QueryError> {
        if self.queries.out.len() >= MAX_OUTSTANDING {
            return Err(QueryError::Busy);
        }
        let mut filters = Vec::new();
        if !p.nodes.is_empty() {
            filters.push(Filter::Nodes(p.nodes.clone()));
        }
        for (tag, expr) in &p.tags {
            regex::Regex::new(expr).map_err(|e| QueryError::BadFilter(e.to_string()))?;
            filters.push(Filter::Tag {
                tag: tag.clone(),
                expr: expr.clone(),
            });
        }
        let timeout = p.timeout.unwrap_or_else(|| self.default_query_timeout());
        let (addr, port) = self.my_addr();
        let q = Query {
            ltime: self.clocks_query(),
            id: rand::Rng::gen(&mut self.rng),
            addr,
            port,
            source_node: self.cfg.name.clone(),
            filters,
            flags: if p.request_ack { FLAG_ACK } else { 0 },
            relay_factor: p.relay_factor,
            timeout_ns: timeout.as_nanos().min(i64::MAX as u128) as i64,
            name: p.name,
            payload: p.payload,
        };
        let raw = SerfMsg::Query(q.clone()).encode();
        if raw.len() > self.cfg.query_size_limit {
            return Err(QueryError::TooLarge(raw.len(), self.cfg.query_size_limit));
        }
        self.bump_query_clock();
        let expected = self
            .members
            .values()
            .filter(|m| m.status == Status::Alive && matches_filters(&q.filters, &m.name, &m.tags))
            .map(|m| m.name.clone())
            .collect();
        self.queries.out.insert(
            q.ltime,
            Outgoing {
                id: q.id,
                deadline: now + timeout,
                expected,
                responded: BTreeSet::new(),
                acked: BTreeSet::new(),
            },
        );
        let ltime = q.ltime;
        // Serf handles its own query too (and answers it, if it matches).
        self.handle_query(q, now);
        self.query_queue.push(None, raw);
        Ok(ltime)
    }

    /// Answers a query delivered as [`SerfEvent::Query`].
    pub fn respond(&mut self, handle: u64, payload: &[u8], now: Time) -> Result<(), QueryError> {
        let inc = self
            .queries
            .incoming
            .remove(&handle)
            .ok_or(QueryError::Expired)?;
        if now > inc.deadline {
            return Err(QueryError::Expired);
        }
        let resp = QueryResponse {
            ltime: inc.ltime,
            id: inc.id,
            from: self.cfg.name.clone(),
            flags: 0,
            payload: payload.to_vec(),
        };
        let raw = SerfMsg::QueryResponse(resp.clone()).encode();
        if raw.len() > self.cfg.query_response_size_limit {
            return Err(QueryError::ResponseTooLarge(
                raw.len(),
                self.cfg.query_response_size_limit,
            ));
        }
        self.send_response(inc.to, &inc.source, inc.relay_factor, resp);
        Ok(())
    }

    fn send_response(
        &mut self,
        to: SocketAddr,
        source: &str,
        relay_factor: u8,
        resp: QueryResponse,
    ) {
        if to == self.cfg.addr {
            return self.handle_query_response(&resp);
        }
        let raw = SerfMsg::QueryResponse(resp).encode();
        let mut m = vec![super::wire::code::USER];
        m.extend_from_slice(&raw);
        self.send_packet(to, m);
        if relay_factor > 0 {
            let me = self.cfg.name.clone();
            let source = source.to_string();
            let relays = self.random_members(usize::from(relay_factor), |m| {
                m.name != me && m.name != source && m.status == Status::Alive
            });
            let relay = SerfMsg::Relay {
                addr: super::ip_bytes(to.ip()),
                port: to.port(),
                name: source,
                msg: raw,
            }
            .encode();
            for r in relays {
                let mut m = vec![super::wire::code::USER];
                m.extend_from_slice(&relay);
                self.send_packet(r, m);
            }
        }
    }

    fn clocks_query(&self) -> u64 {
        self.clocks().2
    }

    /// Serf's `handleQuery`: once per (time, id); acks, delivers or answers internally;
    /// true if it should be re-gossiped.
    pub(super) fn handle_query(&mut self, q: Query, now: Time) -> bool {
        self.witness_query(q.ltime);
        let len = self.query_log.len() as u64;
        let cur = self.clocks_query();
        if cur > len && q.ltime < cur - len {
            self.drop_reason("old_query");
            return false;
        }
        let idx = (q.ltime % len) as usize;
        match &mut self.query_log[idx] {
            Some((t, ids)) if *t == q.ltime => {
                if ids.contains(&q.id) {
                    return false;
                }
                ids.push(q.id);
            }
            slot => *slot = Some((q.ltime, vec![q.id])),
        }
        let rebroadcast = q.flags & FLAG_NO_BROADCAST == 0;
        if !matches_filters(&q.filters, &self.cfg.name, &self.cfg.tags) {
            return rebroadcast;
        }
        let to = match super::ip_from(&q.addr) {
            Some(ip) => SocketAddr::new(ip, q.port),
            None => {
                self.drop_reason("bad_address");
                return rebroadcast;
            }
        };
        if q.flags & FLAG_ACK != 0 {
            let ack = QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.cfg.name.clone(),
                flags: FLAG_ACK,
                payload: Vec::new(),
            };
            self.send_response(to, &q.source_node, q.relay_factor, ack);
        }
        let timeout = Duration::from_nanos(q.timeout_ns.clamp(0, 3_600_000_000_000) as u64);
        if self.queries.incoming.len() >= MAX_PENDING_ANSWERS {
            self.queries.incoming.retain(|_, i| i.deadline >= now);
            if self.queries.incoming.len() >= MAX_PENDING_ANSWERS {
                self.drop_reason("queries_full");
                return rebroadcast;
            }
        }
        self.queries.next_handle += 1;
        let handle = self.queries.next_handle;
        self.queries.incoming.insert(
            handle,
            Incoming {
                ltime: q.ltime,
                id: q.id,
                to,
                source: q.source_node.clone(),
                deadline: now + timeout,
                relay_factor: q.relay_factor,
            },
        );
        if let Some(internal) = q.name.strip_prefix(INTERNAL_PREFIX) {
            self.internal_query(handle, internal, &q.payload, now);
        } else {
            self.events.push_back(SerfEvent::Query {
                handle,
                ltime: q.ltime,
                name: q.name,
                payload: q.payload,
                source: q.source_node,
                deadline: now + timeout,
            });
        }
        rebroadcast
    }

    fn witness_query(&mut self, t: u64) {
        self.clocks.witness_query(t);
    }

    fn bump_query_clock(&mut self) {
        self.clocks.bump_query();
    }

    /// A response or ack to one of our queries.
    pub(super) fn handle_query_response(&mut self, r: &QueryResponse) {
        let Some(q) = self.queries.out.get_mut(&r.ltime) else {
            return;
        };
        if q.id != r.id {
            return;
        }
        if r.flags & FLAG_ACK != 0 {
            if q.acked.insert(r.from.clone()) {
                self.events.push_back(SerfEvent::QueryAck {
                    id: r.ltime,
                    from: r.from.clone(),
                });
            }
            return;
        }
        if !q.responded.insert(r.from.clone()) {
            return;
        }
        self.events.push_back(SerfEvent::QueryResponse {
            id: r.ltime,
            from: r.from.clone(),
            payload: r.payload.clone(),
        });
        if !q.expected.is_empty() && q.expected.is_subset(&q.responded) {
            self.queries.out.remove(&r.ltime);
            self.events.push_back(SerfEvent::QueryDone { id: r.ltime });
        }
    }

    /// Queries whose time is up end; expired answers are forgotten.
    pub(super) fn query_timers(&mut self, now: Time) {
        let done: Vec<u64> = self
            .queries
            .out
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in done {
            self.queries.out.remove(&t);
            self.events.push_back(SerfEvent::QueryDone { id: t });
        }
        self.queries.incoming.retain(|_, i| i.deadline >= now);
    }

    /// Serf's internal queries: ping (acked above), conflict, and the keyring's.
    fn internal_query(&mut self, handle: u64, name: &str, payload: &[u8], now: Time) {
        let reply = match name {
            "ping" => None,
            "conflict" => self.conflict_answer(payload),
            "install-key" | "use-key" | "remove-key" | "list-keys" => {
                Some(self.key_answer(name, payload).encode())
            }
            _ => None,
        };
        if let Some(r) = reply {
            if let Err(e) = self.respond(handle, &r, now) {
                tracing::debug!(error = %e, query = name, "internal query answer dropped");
                self.drop_reason("internal_answer");
            }
        }
    }

    /// Our view of a member whose name is contested.
    fn conflict_answer(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let name = std::str::from_utf8(payload).ok()?;
        if name == self.cfg.name {
            return None;
        }
        let m = self.members.get(name)?;
        let mut e = Enc::new(vec![messages::kind::CONFLICT_RESPONSE]);
        e.map(10)
            .key("Name")
            .str(&m.name)
            .key("Addr")
            .raw(&super::ip_bytes(m.ip))
            .key("Port")
            .uint(m.port.into())
            .key("Tags")
            .map(m.tags.len());
        for (k, v) in &m.tags {
            e.str(k).str(v);
        }
        let status = match m.status {
            Status::None => 0,
            Status::Alive => 1,
            Status::Leaving => 2,
            Status::Left => 3,
            Status::Failed => 4,
        };
        e.key("Status").uint(status);
        for (k, v) in [
            "ProtocolMin",
            "ProtocolMax",
            "ProtocolCur",
            "DelegateMin",
            "DelegateMax",
        ]
        .iter()
        .zip(m.vsn)
        {
            e.key(k).uint(v.into());
        }
        Some(e.buf)
    }

    /// Applies a keyring query to our ring and says how it went.
    fn key_answer(&mut self, op: &str, payload: &[u8]) -> KeyResponse {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut resp = KeyResponse::default();
        let Some(ring) = self.cfg.keyring.as_mut() else {
            resp.message = "No keyring to modify (encryption not enabled)".into();
            return resp;
        };
        if op == "list-keys" {
            resp.keys = ring.keys().iter().map(|k| b64.encode(k)).collect();
            resp.primary = ring.primary().map(|k| b64.encode(k)).unwrap_or_default();
            resp.result = true;
            return resp;
        }
        let key = match messages::read_key_request(payload) {
            Ok(k) => k,
            Err(e) => {
                resp.message = format!("bad key request: {e}");
                return resp;
            }
        };
        let r = match op {
            "install-key" => ring.install(key),
            "use-key" => ring.use_key(&key),
            _ => ring.remove(&key),
        };
        match r {
            Ok(()) => resp.result = true,
            Err(e) => resp.message = e.to_string(),
        }
        resp
    }
}
