//! Who a user event is for: Consul's node, service and tag filters, carried with the event
//! so that each receiving agent decides whether to deliver it (to its event list and its
//! handlers), as Consul's agents do; and the event's ID as Consul shows it, a UUID.
//!
//! A filtered event's payload is wrapped in an envelope ([`MAGIC`], then JSON with the
//! filters and the payload). An unfiltered event travels as it always has.

use super::services::ServiceRecord;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The first bytes of a filtered event's payload.
pub const MAGIC: &[u8] = b"\x00grapevine-event-filter\x00";

/// Who an event is for: regular expressions on the node's name, its services' names, and
/// those services' tags (empty: anyone).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Filters {
    /// The node's name.
    #[serde(default)]
    pub node_filter: String,
    /// A service registered on the node.
    #[serde(default)]
    pub service_filter: String,
    /// A tag of a service that matched (needs `service_filter`, as in Consul).
    #[serde(default)]
    pub tag_filter: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(flatten)]
    filters: Filters,
    #[serde(with = "b64")]
    payload: Vec<u8>,
}

mod b64 {
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Consul anchors nothing: a filter matches anywhere in the text, as Go's regexp does.
pub fn compile(re: &str) -> Option<Regex> {
    regex::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .build()
        .ok()
}

impl Filters {
    /// Whether any filter is set.
    pub fn is_empty(&self) -> bool {
        self.node_filter.is_empty() && self.service_filter.is_empty() && self.tag_filter.is_empty()
    }

    /// Whether an agent named `me` with `services` should deliver the event. A filter that
    /// does not compile delivers nothing: better silent than everywhere.
    pub fn admits(&self, me: &str, services: &[ServiceRecord]) -> bool {
        if !self.node_filter.is_empty()
            && !compile(&self.node_filter).is_some_and(|r| r.is_match(me))
        {
            return false;
        }
        if self.service_filter.is_empty() {
            return true;
        }
        let (Some(svc), tag) = (
            compile(&self.service_filter),
            (!self.tag_filter.is_empty()).then(|| compile(&self.tag_filter)),
        ) else {
            return false;
        };
        services.iter().any(|s| {
            svc.is_match(&s.name)
                && match &tag {
                    None => true,
                    Some(None) => false,
                    Some(Some(t)) => s.tags.iter().any(|x| t.is_match(x)),
                }
        })
    }
}

/// The payload to send for `payload` with `filters`.
pub fn wrap(filters: &Filters, payload: Vec<u8>) -> Vec<u8> {
    if filters.is_empty() {
        return payload;
    }
    let env = Envelope {
        filters: filters.clone(),
        payload,
    };
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(&env).unwrap_or_default());
    out
}

/// A received payload's filters and the payload itself.
pub fn unwrap(payload: &[u8]) -> (Filters, Vec<u8>) {
    match payload
        .strip_prefix(MAGIC)
        .and_then(|j| serde_json::from_slice::<Envelope>(j).ok())
    {
        Some(e) => (e.filters, e.payload),
        None => (Filters::default(), payload.to_vec()),
    }
}

/// The event's ID as Consul shows it: a UUID made from its origin and its number, the same
/// on every agent.
pub fn uuid(origin: &str, id: u64) -> String {
    // FNV-1a of the origin: stable across builds and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in origin.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let v = (u128::from(h) << 64) | u128::from(id);
    let x = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, tags: &[&str]) -> ServiceRecord {
        serde_json::from_value(serde_json::json!({"ID": name, "Name": name,
            "Tags": tags, "Address": "", "Port": 1, "Meta": {}, "Checks": []}))
        .unwrap()
    }

    #[test]
    fn filters_travel_in_the_payload_and_select_as_consul_does() {
        let f = Filters {
            node_filter: "^web-".into(),
            service_filter: "api".into(),
            tag_filter: "v2".into(),
        };
        let sent = wrap(&f, b"go".to_vec());
        assert_eq!(unwrap(&sent), (f.clone(), b"go".to_vec()));
        assert_eq!(unwrap(b"plain"), (Filters::default(), b"plain".to_vec()));
        assert_eq!(wrap(&Filters::default(), b"x".to_vec()), b"x");
        let services = [svc("api", &["v1", "v2"]), svc("db", &[])];
        assert!(f.admits("web-1", &services));
        assert!(!f.admits("db-1", &services), "node filter");
        assert!(!f.admits("web-1", &services[1..]), "service filter");
        let v3 = Filters {
            tag_filter: "v3".into(),
            ..f
        };
        assert!(!v3.admits("web-1", &services), "tag filter");
        assert!(Filters::default().admits("anyone", &[]));
    }

    #[test]
    fn ids_are_uuids_that_go_clients_can_index() {
        let id = uuid("node-1", 0x1234);
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        // Consul's api.Event.IDToIndex.
        let lower = u64::from_str_radix(&(id[0..8].to_string() + &id[9..13] + &id[14..18]), 16);
        let upper = u64::from_str_radix(&(id[19..23].to_string() + &id[24..36]), 16);
        assert!(lower.is_ok() && upper.is_ok());
        assert_eq!(id, uuid("node-1", 0x1234));
        assert_ne!(id, uuid("node-2", 0x1234));
    }
}
