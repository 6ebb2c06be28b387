//! The DNS interface (hickory-proto messages, served here): `NAME.service.grapevine` and
//! `TAG.NAME.service.grapevine` answer A/AAAA (the instances' addresses) and SRV (port and
//! target `NODE.node.grapevine`, with the target's address as additional record) for
//! passing instances only, as Consul's DNS does under `.consul`. Answers come from the
//! agent's catalog, so they are local reads: no query leaves the machine.

use super::services::Catalog;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// The domain answered.
pub const DOMAIN: &str = "grapevine.";

/// Answers have a TTL of 0, as Consul's do by default: the catalog moves.
const TTL: u32 = 0;

/// The largest answer sent over UDP (RFC 1035's limit, whatever EDNS offers): a 40-byte
/// query can draw at most about 13 times its size, and a longer answer is truncated (TC
/// set) for the client to ask again over TCP.
pub const MAX_UDP_ANSWER: usize = 512;

/// DNS over TCP: connections from one address at once.
const TCP_PER_CLIENT: usize = 8;
/// DNS over TCP: how long a connection may wait for (or dribble) a query.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// DNS over TCP: queries one connection may ask.
const TCP_QUERIES: usize = 16;

/// Answers DNS queries from the catalog.
pub struct Handler {
    catalog: watch::Receiver<(u64, Arc<Catalog>)>,
}

/// What a name asks for.
#[derive(Debug, PartialEq)]
enum Query {
    /// `[TAG.]NAME.service.grapevine.`
    Service { name: String, tag: Option<String> },
    /// `NODE.node.grapevine.`
    Node(String),
    /// Something else under the domain.
    Unknown,
}

fn parse(name: &LowerName) -> Option<Query> {
    let text = name.to_string().to_ascii_lowercase();
    let rest = text.strip_suffix(DOMAIN)?;
    let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
    Some(match labels.as_slice() {
        [svc, "service"] => Query::Service {
            name: svc.to_string(),
            tag: None,
        },
        [tag, svc, "service"] => Query::Service {
            name: svc.to_string(),
            tag: Some(tag.to_string()),
        },
        [node, "node"] => Query::Node(node.to_string()),
        _ => Query::Unknown,
    })
}

fn addr_record(name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), TTL, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(v6))),
    }
}

fn wants(rt: RecordType, ip: IpAddr) -> bool {
    matches!(
        (rt, ip),
        (RecordType::A | RecordType::ANY, IpAddr::V4(_))
            | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_))
    )
}

impl Handler {
    /// A handler reading `catalog`.
    pub fn new(catalog: watch::Receiver<(u64, Arc<Catalog>)>) -> Self {
        Handler { catalog }
    }

    /// The answer and additional records for one question, or `None` for NXDOMAIN.
    fn answer(&self, qname: &LowerName, rt: RecordType) -> Option<(Vec<Record>, Vec<Record>)> {
        let catalog = self.catalog.borrow().1.clone();
        let name = Name::from(qname.clone());
        let (mut answers, mut extra) = (Vec::new(), Vec::new());
        match parse(qname)? {
            Query::Service { name: svc, tag } => {
                let found = catalog.service(&svc, tag.as_deref(), true);
                let known = !catalog.service(&svc, None, false).is_empty();
                if !known {
                    return None;
                }
                for i in found {
                    let Ok(ip) = i.address().parse::<IpAddr>() else {
                        continue;
                    };
                    if rt == RecordType::SRV {
                        let Ok(target) = Name::from_str(&format!("{}.node.{DOMAIN}", i.node))
                        else {
                            continue;
                        };
                        answers.push(Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::SRV(SRV::new(1, 1, i.service.port, target.clone())),
                        ));
                        extra.push(addr_record(&target, ip));
                    } else if wants(rt, ip) {
                        answers.push(addr_record(&name, ip));
                    }
                }
            }
            Query::Node(node) => {
                let i = catalog.instances.iter().find(|i| i.node == node)?;
                if wants(rt, i.node_addr) {
                    answers.push(addr_record(&name, i.node_addr));
                }
            }
            Query::Unknown => return None,
        }
        Some((answers, extra))
    }
}

impl Handler {
    /// The response to a query message's bytes, or `None` when it cannot be read at all;
    /// over UDP (`udp`) no longer than [`MAX_UDP_ANSWER`], truncated with TC if need be.
    pub fn respond(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // Echo the id with FORMERR when the header at least is there.
                let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
                let mut m = Message::new();
                m.set_id(id)
                    .set_message_type(MessageType::Response)
                    .set_response_code(ResponseCode::FormErr);
                return m.to_vec().ok();
            }
        };
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut m = Message::new();
        m.set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_authoritative(true);
        let q = match request.queries() {
            [q] if request.op_code() == OpCode::Query => q.clone(),
            _ => {
                m.set_response_code(ResponseCode::NotImp);
                return m.to_vec().ok();
            }
        };
        tracing::debug!(name = %q.name(), kind = %q.query_type(), udp, "DNS query");
        m.add_query(q.clone());
        match self.answer(&LowerName::from(q.name().clone()), q.query_type()) {
            Some((answers, extra)) => {
                m.add_answers(answers);
                m.add_additionals(extra);
            }
            None => {
                m.set_response_code(ResponseCode::NXDomain);
            }
        }
        let bytes = m.to_vec().ok()?;
        if !udp || bytes.len() <= MAX_UDP_ANSWER {
            return Some(bytes);
        }
        // Too long for UDP: drop the additional records, then answers, until it fits, and
        // say so (TC) so the client asks again over TCP for all of it.
        m.take_additionals();
        m.set_truncated(true);
        loop {
            let bytes = m.to_vec().ok()?;
            if bytes.len() <= MAX_UDP_ANSWER {
                return Some(bytes);
            }
            let mut answers = m.take_answers();
            if answers.pop().is_none() {
                return Some(bytes);
            }
            m.add_answers(answers);
        }
    }
}

/// Serves DNS on `addr` (UDP and TCP, at most `max_tcp` TCP connections) until the process
/// ends; a failure to bind is logged, not fatal: DNS is an extra, and several agents on
/// one machine cannot share a port.
pub async fn serve(
    addr: SocketAddr,
    catalog: watch::Receiver<(u64, Arc<Catalog>)>,
    max_tcp: usize,
) {
    let udp = match tokio::net::UdpSocket::bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot bind the DNS interface; DNS is off");
            return;
        }
    };
    let handler = Arc::new(Handler::new(catalog));
    match tokio::net::TcpListener::bind(addr).await {
        Ok(tcp) => {
            tokio::spawn(serve_tcp(tcp, handler.clone(), max_tcp));
        }
        Err(e) => tracing::warn!(%addr, error = %e, "DNS over TCP is off"),
    }
    tracing::info!(%addr, "DNS interface listening");
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match udp.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        if let Some(answer) = handler.respond(&buf[..n], true) {
            let _ = udp.send_to(&answer, from).await;
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, handler: Arc<Handler>, max: usize) {
    let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        {
            let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
            let total: usize = o.values().sum();
            let n = o.entry(peer.ip()).or_insert(0);
            if total >= max || *n >= TCP_PER_CLIENT {
                metrics::counter!(grapevine::metrics::DROPPED, "layer" => "dns", "reason" => "too_many_connections")
                    .increment(1);
                continue;
            }
            *n += 1;
        }
        let (open, handler) = (open.clone(), handler.clone());
        tokio::spawn(async move {
            for _ in 0..TCP_QUERIES {
                let mut len = [0u8; 2];
                let query = async {
                    stream.read_exact(&mut len).await?;
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    stream.read_exact(&mut q).await?;
                    Ok::<_, std::io::Error>(q)
                };
                let Ok(Ok(q)) = tokio::time::timeout(TCP_TIMEOUT, query).await else {
                    break;
                };
                let Some(answer) = handler.respond(&q, false) else {
                    break;
                };
                let Ok(n) = u16::try_from(answer.len()) else {
                    break;
                };
                let write = async {
                    stream.write_all(&n.to_be_bytes()).await?;
                    stream.write_all(&answer).await
                };
                if !matches!(tokio::time::timeout(TCP_TIMEOUT, write).await, Ok(Ok(()))) {
                    break;
                }
            }
            let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = o.get_mut(&peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    o.remove(&peer.ip());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let q = |s: &str| parse(&LowerName::from(Name::from_str(s).unwrap()));
        assert_eq!(
            q("web.service.grapevine."),
            Some(Query::Service {
                name: "web".into(),
                tag: None
            })
        );
        assert_eq!(
            q("Primary.WEB.service.grapevine."),
            Some(Query::Service {
                name: "web".into(),
                tag: Some("primary".into())
            })
        );
        assert_eq!(q("a.node.grapevine."), Some(Query::Node("a".into())));
        assert_eq!(q("x.y.z.w.grapevine."), Some(Query::Unknown));
        assert_eq!(q("example.com."), None);
    }
}
