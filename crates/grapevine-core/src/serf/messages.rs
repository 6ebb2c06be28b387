//! Serf's messages, carried inside memberlist's user messages: intents, user events,
//! queries and their responses, relays, push-pull state, key-management bodies and tags.

use super::msgpack::{decode, decode_all, Enc, Mp, MpError};
use std::collections::BTreeMap;

/// Serf's message types (the first byte of a memberlist user message).
#[allow(missing_docs)]
pub mod kind {
    pub const LEAVE: u8 = 0;
    pub const JOIN: u8 = 1;
    pub const PUSH_PULL: u8 = 2;
    pub const USER_EVENT: u8 = 3;
    pub const QUERY: u8 = 4;
    pub const QUERY_RESPONSE: u8 = 5;
    pub const CONFLICT_RESPONSE: u8 = 6;
    pub const KEY_REQUEST: u8 = 7;
    pub const KEY_RESPONSE: u8 = 8;
    pub const RELAY: u8 = 9;
}

/// A query asks for acks.
pub const FLAG_ACK: u32 = 1;
/// A query is not to be re-gossiped.
pub const FLAG_NO_BROADCAST: u32 = 2;
/// Serf marks tags in meta with this first byte (protocol ≥ 3).
const TAG_MAGIC: u8 = 255;

/// A join or leave intent: a member's status at a Lamport time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Intent {
    /// The member's status clock.
    pub ltime: u64,
    /// Its name.
    pub node: String,
    /// For leave: erase it at once (Serf's `force-leave -prune`).
    pub prune: bool,
}

/// A user event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserEvent {
    /// Event clock.
    pub ltime: u64,
    /// Name.
    pub name: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// May be coalesced with others of its name.
    pub cc: bool,
}

/// One filter of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Only these nodes.
    Nodes(Vec<String>),
    /// Only nodes whose tag matches the regular expression.
    Tag {
        /// The tag.
        tag: String,
        /// Go's regexp syntax.
        expr: String,
    },
}

/// A query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Query clock.
    pub ltime: u64,
    /// Random id.
    pub id: u32,
    /// Where responses go.
    pub addr: Vec<u8>,
    /// Where responses go.
    pub port: u16,
    /// Who asks.
    pub source_node: String,
    /// Filters, all of which must match.
    pub filters: Vec<Filter>,
    /// `FLAG_ACK`, `FLAG_NO_BROADCAST`.
    pub flags: u32,
    /// How many extra members relay each response.
    pub relay_factor: u8,
    /// Go's time.Duration: nanoseconds.
    pub timeout_ns: i64,
    /// Name.
    pub name: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A response (or an ack) to a query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResponse {
    /// The query's clock.
    pub ltime: u64,
    /// The query's id.
    pub id: u32,
    /// Who answers.
    pub from: String,
    /// `FLAG_ACK` for an ack.
    pub flags: u32,
    /// Response payload.
    pub payload: Vec<u8>,
}

/// The user events of one Lamport time: (name, payload) pairs.
pub type EventsAt = (u64, Vec<(String, Vec<u8>)>);

/// Serf's push-pull state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushPull {
    /// Member clock.
    pub ltime: u64,
    /// Every member's status time.
    pub status_ltimes: Vec<(String, u64)>,
    /// Members that left.
    pub left_members: Vec<String>,
    /// Event clock.
    pub event_ltime: u64,
    /// Recent events, by clock.
    pub events: Vec<EventsAt>,
    /// Query clock.
    pub query_ltime: u64,
}

/// A key-management query's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyResponse {
    /// Success.
    pub result: bool,
    /// Why not.
    pub message: String,
    /// Installed keys, base64 (list-keys).
    pub keys: Vec<String>,
    /// The primary key, base64 (list-keys).
    pub primary: String,
}

/// A Serf message.
#[derive(Debug, Clone, PartialEq)]
pub enum SerfMsg {
    /// A member leaves.
    Leave(Intent),
    /// A member joins.
    Join(Intent),
    /// A user event.
    UserEvent(UserEvent),
    /// A query.
    Query(Query),
    /// A query response or ack.
    QueryResponse(QueryResponse),
    /// Forward `msg` to `addr:port`.
    Relay {
        /// Destination IP.
        addr: Vec<u8>,
        /// Destination port.
        port: u16,
        /// Destination name.
        name: String,
        /// The Serf message to forward.
        msg: Vec<u8>,
    },
    /// Another message type: ignored, as Serf ignores what it does not know.
    Other(u8),
}

fn intent(v: &Mp) -> Result<Intent, MpError> {
    Ok(Intent {
        ltime: v.uint("LTime")?,
        node: v.string("Node")?,
        prune: v.boolean("Prune")?,
    })
}

fn filter(raw: &[u8]) -> Result<Filter, MpError> {
    let (&t, body) = raw
        .split_first()
        .ok_or(MpError::Malformed("empty filter"))?;
    let v = decode_all(body)?;
    match t {
        0 => match v {
            Mp::Array(items) => Ok(Filter::Nodes(
                items.iter().map(Mp::as_string).collect::<Result<_, _>>()?,
            )),
            Mp::Nil => Ok(Filter::Nodes(Vec::new())),
            _ => Err(MpError::Malformed("node filter")),
        },
        1 => Ok(Filter::Tag {
            tag: v.string("Tag")?,
            expr: v.string("Expr")?,
        }),
        _ => Err(MpError::Malformed("filter type")),
    }
}

fn encode_filter(f: &Filter) -> Vec<u8> {
    match f {
        Filter::Nodes(names) => {
            let mut e = Enc::new(vec![0]);
            e.array(names.len());
            for n in names {
                e.str(n);
            }
            e.buf
        }
        Filter::Tag { tag, expr } => {
            let mut e = Enc::new(vec![1]);
            e.map(2).key("Tag").str(tag).key("Expr").str(expr);
            e.buf
        }
    }
}

impl SerfMsg {
    /// Decodes a Serf message.
    pub fn decode(buf: &[u8]) -> Result<SerfMsg, MpError> {
        let (&t, body) = buf.split_first().ok_or(MpError::Malformed("empty"))?;
        Ok(match t {
            kind::LEAVE => SerfMsg::Leave(intent(&decode_all(body)?)?),
            kind::JOIN => SerfMsg::Join(intent(&decode_all(body)?)?),
            kind::USER_EVENT => {
                let v = decode_all(body)?;
                SerfMsg::UserEvent(UserEvent {
                    ltime: v.uint("LTime")?,
                    name: v.string("Name")?,
                    payload: v.bytes("Payload")?,
                    cc: v.boolean("CC")?,
                })
            }
            kind::QUERY => {
                let v = decode_all(body)?;
                SerfMsg::Query(Query {
                    ltime: v.uint("LTime")?,
                    id: v.u32("ID")?,
                    addr: v.bytes("Addr")?,
                    port: v.u16("Port")?,
                    source_node: v.string("SourceNode")?,
                    filters: v
                        .array("Filters")?
                        .iter()
                        .map(|f| filter(f.as_bytes()?))
                        .collect::<Result<_, _>>()?,
                    flags: v.u32("Flags")?,
                    relay_factor: v.u8("RelayFactor")?,
                    timeout_ns: v.int("Timeout")?,
                    name: v.string("Name")?,
                    payload: v.bytes("Payload")?,
                })
            }
            kind::QUERY_RESPONSE => {
                let v = decode_all(body)?;
                SerfMsg::QueryResponse(QueryResponse {
                    ltime: v.uint("LTime")?,
                    id: v.u32("ID")?,
                    from: v.string("From")?,
                    flags: v.u32("Flags")?,
                    payload: v.bytes("Payload")?,
                })
            }
            kind::RELAY => {
                let (h, used) = decode(body)?;
                let dest = h.field("DestAddr").cloned().unwrap_or(Mp::Nil);
                let rest = &body[used..];
                SerfMsg::Relay {
                    addr: dest.bytes("IP")?,
                    port: u16::try_from(dest.int("Port")?)
                        .map_err(|_| MpError::Malformed("port"))?,
                    name: h.string("DestName")?,
                    msg: rest.to_vec(),
                }
            }
            other => SerfMsg::Other(other),
        })
    }

    /// Encodes a Serf message as Serf does.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SerfMsg::Leave(i) => {
                let mut e = Enc::new(vec![kind::LEAVE]);
                e.map(3)
                    .key("LTime")
                    .uint(i.ltime)
                    .key("Node")
                    .str(&i.node)
                    .key("Prune")
                    .boolean(i.prune);
                e.buf
            }
            SerfMsg::Join(i) => {
                let mut e = Enc::new(vec![kind::JOIN]);
                e.map(2).key("LTime").uint(i.ltime).key("Node").str(&i.node);
                e.buf
            }
            SerfMsg::UserEvent(u) => {
                let mut e = Enc::new(vec![kind::USER_EVENT]);
                e.map(4)
                    .key("LTime")
                    .uint(u.ltime)
                    .key("Name")
                    .str(&u.name)
                    .key("Payload")
                    .raw(&u.payload)
                    .key("CC")
                    .boolean(u.cc);
                e.buf
            }
            SerfMsg::Query(q) => {
                let mut e = Enc::new(vec![kind::QUERY]);
                e.map(11)
                    .key("LTime")
                    .uint(q.ltime)
                    .key("ID")
                    .uint(q.id.into())
                    .key("Addr")
                    .raw(&q.addr)
                    .key("Port")
                    .uint(q.port.into())
                    .key("SourceNode")
                    .str(&q.source_node)
                    .key("Filters")
                    .array(q.filters.len());
                for f in &q.filters {
                    e.raw(&encode_filter(f));
                }
                e.key("Flags")
                    .uint(q.flags.into())
                    .key("RelayFactor")
                    .uint(q.relay_factor.into())
                    .key("Timeout")
                    .int(q.timeout_ns)
                    .key("Name")
                    .str(&q.name)
                    .key("Payload")
                    .raw(&q.payload);
                e.buf
            }
            SerfMsg::QueryResponse(r) => {
                let mut e = Enc::new(vec![kind::QUERY_RESPONSE]);
                e.map(5)
                    .key("LTime")
                    .uint(r.ltime)
                    .key("ID")
                    .uint(r.id.into())
                    .key("From")
                    .str(&r.from)
                    .key("Flags")
                    .uint(r.flags.into())
                    .key("Payload")
                    .raw(&r.payload);
                e.buf
            }
            SerfMsg::Relay {
                addr,
                port,
                name,
                msg,
            } => {
                let mut e = Enc::new(vec![kind::RELAY]);
                e.map(2)
                    .key("DestAddr")
                    .map(3)
                    .key("IP")
                    .raw(addr)
                    .key("Port")
                    .uint((*port).into())
                    .key("Zone")
                    .str("")
                    .key("DestName")
                    .str(name);
                e.buf.extend_from_slice(msg);
                e.buf
            }
            SerfMsg::Other(t) => vec![*t],
        }
    }
}

impl PushPull {
    /// Decodes Serf's push-pull state (after its type byte).
    pub fn decode(body: &[u8]) -> Result<PushPull, MpError> {
        let v = decode_all(body)?;
        let status_ltimes = match v.field("StatusLTimes") {
            Some(Mp::Map(pairs)) => pairs
                .iter()
                .map(|(k, t)| Ok((k.as_string()?, t.as_uint()?)))
                .collect::<Result<_, MpError>>()?,
            None | Some(Mp::Nil) => Vec::new(),
            Some(_) => return Err(MpError::Malformed("StatusLTimes")),
        };
        let mut events = Vec::new();
        for e in v.array("Events")? {
            if matches!(e, Mp::Nil) {
                continue;
            }
            let list = e
                .array("Events")?
                .iter()
                .map(|u| Ok((u.string("Name")?, u.bytes("Payload")?)))
                .collect::<Result<_, MpError>>()?;
            events.push((e.uint("LTime")?, list));
        }
        Ok(PushPull {
            ltime: v.uint("LTime")?,
            status_ltimes,
            left_members: v
                .array("LeftMembers")?
                .iter()
                .map(Mp::as_string)
                .collect::<Result<_, _>>()?,
            event_ltime: v.uint("EventLTime")?,
            events,
            query_ltime: v.uint("QueryLTime")?,
        })
    }

    /// Encodes it with its type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(vec![kind::PUSH_PULL]);
        e.map(6).key("LTime").uint(self.ltime).key("StatusLTimes");
        e.map(self.status_ltimes.len());
        for (n, t) in &self.status_ltimes {
            e.str(n).uint(*t);
        }
        e.key("LeftMembers").array(self.left_members.len());
        for n in &self.left_members {
            e.str(n);
        }
        e.key("EventLTime")
            .uint(self.event_ltime)
            .key("Events")
            .array(self.events.len());
        for (t, list) in &self.events {
            e.map(2)
                .key("LTime")
                .uint(*t)
                .key("Events")
                .array(list.len());
            for (name, payload) in list {
                e.map(2).key("Name").str(name).key("Payload").raw(payload);
            }
        }
        e.key("QueryLTime").uint(self.query_ltime);
        e.buf
    }
}

impl KeyResponse {
    /// Encodes it as Serf's key response message.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(vec![kind::KEY_RESPONSE]);
        e.map(4)
            .key("Result")
            .boolean(self.result)
            .key("Message")
            .str(&self.message)
            .key("Keys")
            .array(self.keys.len());
        for k in &self.keys {
            e.str(k);
        }
        e.key("PrimaryKey").str(&self.primary);
        e.buf
    }

    /// Decodes a key response message.
    pub fn decode(buf: &[u8]) -> Result<KeyResponse, MpError> {
        match buf.split_first() {
            Some((&kind::KEY_RESPONSE, body)) => {
                let v = decode_all(body)?;
                Ok(KeyResponse {
                    result: v.boolean("Result")?,
                    message: v.string("Message")?,
                    keys: v
                        .array("Keys")?
                        .iter()
                        .map(Mp::as_string)
                        .collect::<Result<_, _>>()?,
                    primary: v.string("PrimaryKey")?,
                })
            }
            _ => Err(MpError::Malformed("not a key response")),
        }
    }
}

/// The key a key-management query carries (`[KEY_REQUEST] {Key: bytes}`).
pub fn key_request(key: &[u8]) -> Vec<u8> {
    let mut e = Enc::new(vec![kind::KEY_REQUEST]);
    e.map(1).key("Key").raw(key);
    e.buf
}

/// Reads a key-management query's key.
pub fn read_key_request(payload: &[u8]) -> Result<Vec<u8>, MpError> {
    let body = payload.get(1..).ok_or(MpError::Malformed("empty"))?;
    decode_all(body)?.bytes("Key")
}

/// Serf's tags as member meta.
pub fn encode_tags(tags: &BTreeMap<String, String>) -> Vec<u8> {
    let mut e = Enc::new(vec![TAG_MAGIC]);
    e.map(tags.len());
    for (k, v) in tags {
        e.str(k).str(v);
    }
    e.buf
}

/// Tags from member meta: Serf's encoding, or (older peers) the meta as the `role` tag.
pub fn decode_tags(meta: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match meta.split_first() {
        Some((&TAG_MAGIC, body)) => {
            if let Ok(Mp::Map(pairs)) = decode_all(body) {
                for (k, v) in pairs {
                    if let (Ok(k), Ok(v)) = (k.as_string(), v.as_string()) {
                        out.insert(k, v);
                    }
                }
            }
        }
        Some(_) => {
            out.insert("role".into(), String::from_utf8_lossy(meta).into_owned());
        }
        None => {}
    }
    out
}
