//! The DNS interface (hickory-server): `NAME.service.grapevine` and
//! `TAG.NAME.service.grapevine` answer A/AAAA (the instances' addresses) and SRV (port and
//! target `NODE.node.grapevine`, with the target's address as additional record) for
//! passing instances only, as Consul's DNS does under `.consul`. Answers come from the
//! agent's catalog, so they are local reads: no query leaves the machine.

use super::services::Catalog;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::watch;

/// The domain answered.
pub const DOMAIN: &str = "grapevine.";

/// Answers have a TTL of 0, as Consul's do by default: the catalog moves.
const TTL: u32 = 0;

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

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(true);
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                header.set_response_code(ResponseCode::FormErr);
                return send(&mut response, builder.build_no_records(header)).await;
            }
        };
        if info.header.message_type() != MessageType::Query
            || info.header.op_code() != OpCode::Query
        {
            header.set_response_code(ResponseCode::NotImp);
            return send(&mut response, builder.build_no_records(header)).await;
        }
        match self.answer(info.query.name(), info.query.query_type()) {
            Some((answers, extra)) => {
                let msg = builder.build(header, answers.iter(), [], [], extra.iter());
                send(&mut response, msg).await
            }
            None => {
                header.set_response_code(ResponseCode::NXDomain);
                send(&mut response, builder.build_no_records(header)).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS response");
            let mut h = Header::new();
            h.set_response_code(ResponseCode::ServFail);
            h.into()
        }
    }
}

/// Serves DNS on `addr` (UDP and TCP) until the process ends; a failure to bind is logged,
/// not fatal: DNS is an extra, and several agents on one machine cannot share a port.
pub async fn serve(addr: SocketAddr, catalog: watch::Receiver<(u64, Arc<Catalog>)>) {
    let udp = match tokio::net::UdpSocket::bind(addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot bind the DNS interface; DNS is off");
            return;
        }
    };
    let mut server = hickory_server::ServerFuture::new(Handler::new(catalog));
    server.register_socket(udp);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(tcp) => server.register_listener(tcp, std::time::Duration::from_secs(5)),
        Err(e) => tracing::warn!(%addr, error = %e, "DNS over TCP is off"),
    }
    tracing::info!(%addr, "DNS interface listening");
    if let Err(e) = server.block_until_done().await {
        tracing::warn!(error = %e, "the DNS interface stopped");
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
