//! The DNS interface (hickory-proto messages, served here), Consul's names under a
//! configurable domain (`grapevine.` by default, and an alternative such as `consul.`):
//!
//! * `[TAG.]NAME.service[.DC].DOMAIN` and RFC 2782's `_NAME._TAG.service[.DC].DOMAIN`
//!   (`_tcp` or `_udp` for any tag) answer A/AAAA (the instances' addresses) and SRV (port,
//!   weight, target `NODE.node.DOMAIN` with its address as additional record) for
//!   instances that are not critical, as Consul's DNS does;
//! * `NODE.node[.DC].DOMAIN` answers the member's address;
//! * `d.c.b.a.in-addr.arpa.` (and `ip6.arpa.`) answers PTR with the member that has it;
//! * a negative answer carries the domain's SOA, so resolvers cache it as RFC 2308 asks.
//!
//! Answers come from the agent's catalog, so they are local reads: no query leaves the
//! machine.

use super::consul::DATACENTER;
use super::services::{Catalog, Status};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

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
    /// The domains answered, lowercase, each ending in a dot.
    domains: Vec<String>,
}

/// Answer records and additional records.
type Found = (Vec<Record>, Vec<Record>);

/// What a name asks for.
#[derive(Debug, PartialEq)]
enum Query {
    /// `[TAG.]NAME.service.DOMAIN`, `_NAME._TAG.service.DOMAIN`.
    Service { name: String, tag: Option<String> },
    /// `NODE.node.DOMAIN`.
    Node(String),
    /// An address, from `in-addr.arpa.` or `ip6.arpa.`.
    Reverse(IpAddr),
    /// Something else under the domain (or another datacenter's name).
    Unknown,
}

/// The address a reverse name asks about.
fn reverse(text: &str) -> Option<IpAddr> {
    if let Some(v4) = text.strip_suffix(".in-addr.arpa.") {
        let mut octets: Vec<u8> = v4
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let v6 = text.strip_suffix(".ip6.arpa.")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(bytes))
}

/// What `name` asks, and under which of `domains`.
fn parse<'d>(name: &LowerName, domains: &'d [String]) -> Option<(Query, &'d str)> {
    let text = name.to_string().to_ascii_lowercase();
    if let Some(ip) = reverse(&text) {
        return Some((Query::Reverse(ip), domains.first()?));
    }
    let domain = domains
        .iter()
        .find(|d| text.ends_with(&format!(".{d}")) || text == **d)?;
    let rest = text.strip_suffix(domain.as_str())?;
    let mut labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
    // The datacenter form: `...service.DC.` / `...node.DC.`.
    if labels.len() >= 3 && matches!(labels[labels.len() - 2], "service" | "node") {
        let dc = labels.pop().unwrap_or_default();
        if dc != DATACENTER {
            return Some((Query::Unknown, domain));
        }
    }
    let tag_of = |t: &str| (!matches!(t, "tcp" | "udp")).then(|| t.to_string());
    Some((
        match labels.as_slice() {
            [svc, "service"] => Query::Service {
                name: svc.to_string(),
                tag: None,
            },
            [svc, tag, "service"] if svc.starts_with('_') && tag.starts_with('_') => {
                Query::Service {
                    name: svc[1..].to_string(),
                    tag: tag_of(&tag[1..]),
                }
            }
            [tag, svc, "service"] => Query::Service {
                name: svc.to_string(),
                tag: Some(tag.to_string()),
            },
            [node, "node"] => Query::Node(node.to_string()),
            _ => Query::Unknown,
        },
        domain,
    ))
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

/// The domain's SOA, for negative answers (Consul's fields: refresh 3600, retry 600, expire
/// 86400, and a minimum of 0, as its answers' TTL).
fn soa(domain: &str) -> Option<Record> {
    let zone = Name::from_str(domain).ok()?;
    let mname = Name::from_str(&format!("ns.{domain}")).ok()?;
    let rname = Name::from_str(&format!("hostmaster.{domain}")).ok()?;
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    Some(Record::from_rdata(
        zone,
        TTL,
        RData::SOA(SOA::new(mname, rname, serial, 3600, 600, 86400, 0)),
    ))
}

impl Handler {
    /// A handler reading `catalog`, answering under `domains` (each ending in a dot).
    pub fn new(catalog: watch::Receiver<(u64, Arc<Catalog>)>, domains: Vec<String>) -> Self {
        Handler { catalog, domains }
    }

    /// The answer and additional records for one question (`None`: NXDOMAIN), and the
    /// domain it fell under.
    fn answer(&self, qname: &LowerName, rt: RecordType) -> (Option<Found>, Option<&str>) {
        let Some((query, domain)) = parse(qname, &self.domains) else {
            return (None, None);
        };
        (self.lookup(qname, rt, query, domain), Some(domain))
    }

    fn lookup(
        &self,
        qname: &LowerName,
        rt: RecordType,
        query: Query,
        domain: &str,
    ) -> Option<Found> {
        let catalog = self.catalog.borrow().1.clone();
        let name = Name::from(qname.clone());
        let (mut answers, mut extra) = (Vec::new(), Vec::new());
        match query {
            Query::Service { name: svc, tag } => {
                let tags: Vec<&str> = tag.iter().map(String::as_str).collect();
                if catalog.service(&svc, &[], false).is_empty() {
                    return None;
                }
                // Consul's DNS leaves out critical instances and keeps warning ones.
                let found = catalog
                    .service(&svc, &tags, false)
                    .into_iter()
                    .filter(|i| i.status() != Status::Critical);
                for i in found {
                    let Ok(ip) = i.address().parse::<IpAddr>() else {
                        continue;
                    };
                    if rt == RecordType::SRV {
                        let Ok(target) = Name::from_str(&format!("{}.node.{domain}", i.node))
                        else {
                            continue;
                        };
                        let w = &i.service.weights;
                        let weight = if i.status() == Status::Warning {
                            w.warning
                        } else {
                            w.passing
                        };
                        answers.push(Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::SRV(SRV::new(
                                1,
                                weight.min(65_535) as u16,
                                i.service.port,
                                target.clone(),
                            )),
                        ));
                        extra.push(addr_record(&target, ip));
                    } else if wants(rt, ip) {
                        answers.push(addr_record(&name, ip));
                    }
                }
            }
            Query::Node(node) => {
                let n = catalog.node(&node)?;
                if wants(rt, n.addr) {
                    answers.push(addr_record(&name, n.addr));
                }
            }
            Query::Reverse(ip) => {
                let n = catalog.nodes.iter().find(|n| n.addr == ip)?;
                if matches!(rt, RecordType::PTR | RecordType::ANY) {
                    let target = Name::from_str(&format!("{}.node.{domain}", n.name)).ok()?;
                    answers.push(Record::from_rdata(name, TTL, RData::PTR(PTR(target))));
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
        let (found, domain) = self.answer(&LowerName::from(q.name().clone()), q.query_type());
        let negative = match found {
            Some((answers, extra)) => {
                let none = answers.is_empty();
                m.add_answers(answers);
                m.add_additionals(extra);
                none
            }
            None => {
                m.set_response_code(ResponseCode::NXDomain);
                true
            }
        };
        if negative {
            if let Some(soa) = soa(domain.unwrap_or(&self.domains[0])) {
                m.add_name_server(soa);
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
    domains: Vec<String>,
    max_tcp: usize,
) {
    let udp = match tokio::net::UdpSocket::bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot bind the DNS interface; DNS is off");
            return;
        }
    };
    let handler = Arc::new(Handler::new(catalog, domains));
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
        let domains = vec!["grapevine.".to_string(), "consul.".to_string()];
        let q =
            |s: &str| parse(&LowerName::from(Name::from_str(s).unwrap()), &domains).map(|(q, _)| q);
        let svc = |name: &str, tag: Option<&str>| {
            Some(Query::Service {
                name: name.into(),
                tag: tag.map(str::to_string),
            })
        };
        assert_eq!(q("web.service.grapevine."), svc("web", None));
        assert_eq!(
            q("Primary.WEB.service.grapevine."),
            svc("web", Some("primary"))
        );
        assert_eq!(
            q("web.service.consul."),
            svc("web", None),
            "the alternative domain"
        );
        assert_eq!(
            q("web.service.grapevine.consul."),
            svc("web", None),
            "the datacenter form"
        );
        assert_eq!(
            q("_web._tcp.service.consul."),
            svc("web", None),
            "RFC 2782, any tag"
        );
        assert_eq!(
            q("_web._v2.service.grapevine."),
            svc("web", Some("v2")),
            "RFC 2782"
        );
        assert_eq!(
            q("web.service.dc9.grapevine."),
            Some(Query::Unknown),
            "another datacenter"
        );
        assert_eq!(q("a.node.grapevine."), Some(Query::Node("a".into())));
        assert_eq!(
            q("a.node.grapevine.grapevine."),
            Some(Query::Node("a".into()))
        );
        assert_eq!(q("x.y.z.w.grapevine."), Some(Query::Unknown));
        assert_eq!(q("example.com."), None);
        assert_eq!(
            q("4.3.2.10.in-addr.arpa."),
            Some(Query::Reverse("10.2.3.4".parse().unwrap()))
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.ip6.arpa.";
        assert_eq!(q(v6), Some(Query::Reverse("db8::1".parse().unwrap())));
    }
}
