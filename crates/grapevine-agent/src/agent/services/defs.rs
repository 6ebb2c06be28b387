//! What a registration says: Consul's service and check definitions, parsed as Consul
//! parses them (field names in any case; fields Consul has and grapevine does not use are
//! taken and ignored; check kinds it cannot run are refused), and Go's durations.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use super::Status;

/// A health check definition, Consul's fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDef {
    /// Its id (default `service:SERVICE_ID`, numbered when there are several).
    #[serde(rename = "CheckID", alias = "ID", default)]
    pub check_id: Option<String>,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// GET this URL: 2xx passing, 429 warning, else critical.
    #[serde(rename = "HTTP", default)]
    pub http: Option<String>,
    /// Connect to this `host:port`: passing if it accepts.
    #[serde(rename = "TCP", default)]
    pub tcp: Option<String>,
    /// Run this: exit 0 passing, 1 warning, else critical (`ScriptArgs` in Consul's Go
    /// client).
    #[serde(default, alias = "ScriptArgs")]
    pub args: Option<Vec<String>>,
    /// Critical unless passed (`/v1/agent/check/pass/ID`) within this long.
    #[serde(rename = "TTL", default)]
    pub ttl: Option<String>,
    /// How often to run an HTTP, TCP or script check (default 10 s).
    #[serde(default)]
    pub interval: Option<String>,
    /// How long one run may take (default 10 s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The status before the first run (default critical).
    #[serde(default)]
    pub status: Option<Status>,
    /// Notes, ignored.
    #[serde(default)]
    pub notes: Option<String>,
    /// Deregister the check's service once the check has been critical this long.
    #[serde(default)]
    pub deregister_critical_service_after: Option<String>,
    /// HTTP checks: the method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// HTTP checks: headers to send.
    #[serde(default)]
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP checks: the body to send.
    #[serde(default)]
    pub body: Option<String>,
    /// HTTP checks: accept any certificate.
    #[serde(rename = "TLSSkipVerify", default)]
    pub tls_skip_verify: bool,
    /// `/v1/agent/check/register`: the service the check belongs to (none: the node).
    #[serde(rename = "ServiceID", default)]
    pub service_id: Option<String>,
    /// Consul's fields with no meaning here, accepted and ignored (see docs/http-api.md).
    #[serde(flatten, default)]
    pub ignored: BTreeMap<String, serde_json::Value>,
}

/// Consul check fields taken and ignored: they tune behaviour grapevine does not have.
const IGNORED_CHECK_FIELDS: &[&str] = &[
    "TLSServerName",
    "OutputMaxSize",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "Definition",
    "Namespace",
    "Partition",
    "Type",
    "CheckType",
    "Node",
    "ServiceName",
    "ServiceTags",
    "Output",
];

/// Consul check kinds this agent cannot run: refused rather than left forever critical.
const UNSUPPORTED_CHECK_KINDS: &[&str] = &[
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "DockerContainerID",
    "Shell",
    "AliasNode",
    "AliasService",
    "UDP",
    "OSService",
];

/// A service's weights in DNS SRV answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// While every check passes.
    pub passing: u32,
    /// While some check warns.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// A service registration, Consul's fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceDef {
    /// Unique on this agent (default: the name).
    #[serde(rename = "ID", default)]
    pub id: Option<String>,
    /// The service's name.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its address (default: this member's).
    #[serde(default)]
    pub address: Option<String>,
    /// Its port.
    #[serde(default)]
    pub port: u16,
    /// Free-form metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// One check.
    #[serde(default)]
    pub check: Option<CheckDef>,
    /// More checks.
    #[serde(default)]
    pub checks: Vec<CheckDef>,
    /// Consul's anti-entropy may not overwrite the tags: kept and shown, there being no
    /// catalog server to sync with.
    #[serde(default)]
    pub enable_tag_override: Option<bool>,
    /// Its weights in DNS SRV answers (default 1 and 1).
    #[serde(default)]
    pub weights: Option<Weights>,
    /// More addresses, by name (`lan`, `wan`, ...): shown as Consul shows them.
    #[serde(default)]
    pub tagged_addresses: BTreeMap<String, serde_json::Value>,
    /// Consul's fields with no meaning here (Connect, namespaces), accepted and ignored.
    #[serde(flatten, default)]
    pub ignored: BTreeMap<String, serde_json::Value>,
}

/// Consul service fields taken and ignored.
const IGNORED_SERVICE_FIELDS: &[&str] = &[
    "Kind",
    "Proxy",
    "Connect",
    "SocketPath",
    "Namespace",
    "Partition",
    "Locality",
];

impl CheckDef {
    /// A field neither Consul's known ones nor its ignored ones (a typo in a config file).
    pub fn unknown_field(&self) -> Option<&str> {
        self.ignored
            .keys()
            .map(String::as_str)
            .find(|k| !IGNORED_CHECK_FIELDS.contains(k))
    }
}

impl ServiceDef {
    /// A field neither Consul's known ones nor its ignored ones (a typo in a config file).
    pub fn unknown_field(&self) -> Option<&str> {
        self.ignored
            .keys()
            .map(String::as_str)
            .find(|k| !IGNORED_SERVICE_FIELDS.contains(k))
            .or_else(|| {
                self.check
                    .iter()
                    .chain(&self.checks)
                    .find_map(CheckDef::unknown_field)
            })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }
}

/// Field names as Consul spells them. Consul (Go's JSON decoding) accepts any case, and
/// clients rely on it (python-consul sends `name`, `ttl`): keys are mapped to these before
/// parsing.
const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "EnableTagOverride",
    "Weights",
    "TaggedAddresses",
];
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "HTTP",
    "TCP",
    "Args",
    "ScriptArgs",
    "TTL",
    "Interval",
    "Timeout",
    "Status",
    "Notes",
    "DeregisterCriticalServiceAfter",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "ServiceID",
];

/// Maps keys to Consul's spelling, and refuses what is neither known nor ignored.
fn canonical(v: &mut serde_json::Value, known: &[&str], ignored: &[&str]) -> Result<(), String> {
    canonical_keys(v, known);
    canonical_keys(v, ignored);
    if let serde_json::Value::Object(map) = v {
        for k in map.keys() {
            if !known.contains(&k.as_str()) && !ignored.contains(&k.as_str()) {
                return Err(format!("unknown field {k:?}"));
            }
        }
    }
    Ok(())
}

fn canonical_keys(v: &mut serde_json::Value, names: &[&str]) {
    if let serde_json::Value::Object(map) = v {
        let old = std::mem::take(map);
        for (k, val) in old {
            let key = names
                .iter()
                .find(|n| n.eq_ignore_ascii_case(&k))
                .map_or(k, |n| n.to_string());
            map.insert(key, val);
        }
    }
}

impl CheckDef {
    /// Parses a check as Consul does: field names in any case; kinds this agent cannot run
    /// are refused.
    pub fn from_value(mut v: serde_json::Value) -> Result<CheckDef, String> {
        let mut known: Vec<&str> = CHECK_FIELDS.to_vec();
        known.extend(UNSUPPORTED_CHECK_KINDS);
        canonical(&mut v, &known, IGNORED_CHECK_FIELDS)?;
        if let serde_json::Value::Object(map) = &v {
            if let Some(k) = UNSUPPORTED_CHECK_KINDS.iter().find(|k| {
                map.get(**k).is_some_and(|x| {
                    !x.is_null() && x != &serde_json::Value::Bool(false) && x != ""
                })
            }) {
                return Err(format!(
                    "{k} checks are not supported by this agent: use HTTP, TCP, Args or TTL"
                ));
            }
        }
        if let serde_json::Value::Object(map) = &mut v {
            map.retain(|k, _| !UNSUPPORTED_CHECK_KINDS.contains(&k.as_str()));
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

impl ServiceDef {
    /// Parses a registration as Consul does: field names in any case.
    pub fn from_json(body: &[u8]) -> Result<ServiceDef, String> {
        let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        canonical(&mut v, SERVICE_FIELDS, IGNORED_SERVICE_FIELDS)?;
        let mut checks = Vec::new();
        if let Some(c) = v.get_mut("Check").filter(|c| !c.is_null()) {
            checks.push(("Check", CheckDef::from_value(c.take())?));
        }
        if let Some(serde_json::Value::Array(cs)) = v.get_mut("Checks") {
            for c in cs.drain(..) {
                checks.push(("Checks", CheckDef::from_value(c)?));
            }
        }
        if let serde_json::Value::Object(map) = &mut v {
            map.remove("Check");
            map.remove("Checks");
        }
        let mut def: ServiceDef = serde_json::from_value(v).map_err(|e| e.to_string())?;
        for (field, c) in checks {
            if field == "Check" {
                def.check = Some(c);
            } else {
                def.checks.push(c);
            }
        }
        Ok(def)
    }
}

/// Parses durations as Consul does, in Go's syntax (`1m30s`, `0.5s`, `300ms`, `2h45m`,
/// `10us`), and bare whole numbers as seconds. `None` for anything else, a negative
/// duration included.
pub fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(Duration::from_secs);
    }
    go_duration(s)
}

/// Parses a duration in Go's syntax only (`1m30s`, `0.5s`, `300ms`; a bare number other
/// than `0` needs a unit, as Go's `time.ParseDuration` says).
pub fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = tail;
    }
    // Go's durations end near 292 years; anything that long is as good as forever here.
    Duration::try_from_secs_f64(total.min(1e10)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_registration_json_parses() {
        let def = ServiceDef::from_json(
            br#"{"ID":"web-1","name":"web","Tags":["v1","primary"],"address":"10.0.0.5",
                "Port":8080,"Meta":{"version":"1.2", "name": "kept"},
                "check":{"http":"http://127.0.0.1:8080/health","Interval":"1s","Timeout":"500ms"},
                "Checks":[{"CheckID":"web-ttl","ttl":"15s"}]}"#,
        )
        .unwrap();
        assert_eq!(def.name, "web");
        assert_eq!(def.meta["name"], "kept", "metadata keys are the user's");
        assert!(def.check.as_ref().unwrap().http.is_some());
        assert_eq!(def.id(), "web-1");
        assert_eq!(def.checks[0].ttl.as_deref(), Some("15s"));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("5"), None, "Go wants a unit");
        for bad in ["", "s", "1x", "-1s", "1..2s", "1m30", "."] {
            assert_eq!(duration(bad), None, "{bad:?}");
        }
        assert!(ServiceDef::from_json(br#"{"Name":"x","Bogus":1}"#).is_err());
        // Every field Consul's registration has is taken; kinds this agent cannot run are not.
        let def = ServiceDef::from_json(
            br#"{"Name":"x","Weights":{"Passing":3,"Warning":1},"TaggedAddresses":
                {"lan":{"Address":"10.0.0.1","Port":80}},"EnableTagOverride":true,"Kind":"",
                "Checks":[{"HTTP":"https://x/","Method":"POST","Header":{"A":["b"]},"Body":"{}",
                "TLSSkipVerify":true,"DeregisterCriticalServiceAfter":"1m30s"},
                {"ScriptArgs":["/bin/true"],"Interval":"10s"}]}"#,
        )
        .unwrap();
        assert_eq!(def.weights.unwrap().passing, 3);
        assert!(def.checks[0].tls_skip_verify);
        assert_eq!(
            def.checks[1].args.as_deref(),
            Some(&["/bin/true".to_string()][..])
        );
        assert!(def.unknown_field().is_none());
        let e = ServiceDef::from_json(br#"{"Name":"x","Check":{"GRPC":"a:1"}}"#).unwrap_err();
        assert!(e.contains("GRPC checks are not supported"), "{e}");
    }
}
