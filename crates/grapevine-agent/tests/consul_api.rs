//! Consul's HTTP API as its clients use it, exactly: each case below once answered
//! silently wrong (a wrong `?cas=` deleted anyway, `?acquire` wrote under another's lock,
//! `?recurse` deletes left the subtree, flags were dropped, `?separator` was ignored, another
//! datacenter was served as this one, endpoints answered a bare 404, and more). Refused calls
//! leave what is stored as it was, on every agent.

mod common;

use common::{eventually, free_port, Agent, Spec};
use std::process::Command;
use std::time::{Duration, Instant};

/// An answer: status, headers we look at, body.
struct Answer {
    status: u16,
    index: Option<String>,
    leader: Option<String>,
    body: String,
}

fn request(method: &str, url: &str, body: Option<&[u8]>) -> Answer {
    let r = ureq::request(method, url).timeout(Duration::from_secs(30));
    let resp = match body {
        Some(b) => r.send_bytes(b),
        None => r.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    Answer {
        status: resp.status(),
        index: resp.header("X-Consul-Index").map(str::to_string),
        leader: resp.header("X-Consul-KnownLeader").map(str::to_string),
        body: resp.into_string().unwrap_or_default(),
    }
}

fn json(a: &Answer) -> serde_json::Value {
    serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.body))
}

/// Two agents, alive in each other's view.
fn pair(tag: &str, extra: &[&str]) -> (Agent, Agent) {
    let a = Spec::new(&format!("{tag}-a")).args(extra).start();
    let b = Spec::new(&format!("{tag}-b"))
        .join(a.gossip)
        .args(extra)
        .start();
    let names = [a.name.clone(), b.name.clone()];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    eventually(Duration::from_secs(30), || {
        common::all_alive(&[&a, &b], &names)
    });
    (a, b)
}

fn url(a: &Agent, path: &str) -> String {
    format!("http://{}{path}", a.http)
}

/// The value of KEY as agent `x` holds it (None: absent).
fn value(x: &Agent, key: &str) -> Option<serde_json::Value> {
    let r = request("GET", &url(x, &format!("/v1/kv/{key}")), None);
    (r.status == 200).then(|| json(&r)[0].clone())
}

/// Puts KEY on `a` and waits until `b` holds it.
fn put_seen(a: &Agent, b: &Agent, key: &str, v: &str) {
    assert_eq!(
        request("PUT", &url(a, &format!("/v1/kv/{key}")), Some(v.as_bytes())).body,
        "true"
    );
    eventually(Duration::from_secs(20), || value(b, key).is_some());
}

#[test]
fn delete_with_a_wrong_cas_deletes_nothing() {
    let (a, b) = pair("delcas", &[]);
    put_seen(&a, &b, "k", "v");
    let idx = value(&a, "k").unwrap()["ModifyIndex"].as_u64().unwrap();
    let r = request(
        "DELETE",
        &url(&a, &format!("/v1/kv/k?cas={}", idx + 100)),
        None,
    );
    assert_eq!((r.status, r.body.as_str()), (200, "false"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(value(&a, "k").is_some() && value(&b, "k").is_some());
    let r = request("DELETE", &url(&a, &format!("/v1/kv/k?cas={idx}")), None);
    assert_eq!(r.body, "true");
    eventually(Duration::from_secs(20), || value(&b, "k").is_none());
}

#[test]
fn locks_are_refused_and_leave_the_key_as_it_was_everywhere() {
    let (a, b) = pair("lock", &[]);
    put_seen(&a, &b, "svc/leader", "alpha");
    let before = value(&b, "svc/leader").unwrap();
    for q in ["acquire=0a0b-session", "release=0a0b-session"] {
        let r = request(
            "PUT",
            &url(&a, &format!("/v1/kv/svc/leader?{q}")),
            Some(b"beta"),
        );
        assert_eq!(r.status, 501, "{q}: {}", r.body);
        assert!(
            r.body.contains("sessions and locks are not offered"),
            "{}",
            r.body
        );
        assert!(r.index.is_some(), "an error carries X-Consul-Index");
    }
    for path in [
        "/v1/session/create",
        "/v1/session/list",
        "/v1/session/info/x",
    ] {
        let method = if path.ends_with("create") {
            "PUT"
        } else {
            "GET"
        };
        let r = request(method, &url(&a, path), Some(b"{}"));
        assert_eq!(r.status, 501, "{path}");
        assert!(r.body.contains("eventually consistent"), "{}", r.body);
    }
    // A transaction and another datacenter: refused, and nothing written.
    let txn = br#"[{"KV":{"Verb":"set","Key":"svc/leader","Value":"YmV0YQ=="}}]"#;
    let r = request("PUT", &url(&a, "/v1/txn"), Some(txn));
    assert_eq!(r.status, 501);
    assert!(
        r.body.contains("transactions are not offered"),
        "{}",
        r.body
    );
    let r = request(
        "PUT",
        &url(&a, "/v1/kv/svc/leader?dc=elsewhere"),
        Some(b"beta"),
    );
    assert_eq!((r.status, r.body.as_str()), (500, "No path to datacenter"));
    let r = request("DELETE", &url(&a, "/v1/kv/svc/leader?dc=elsewhere"), None);
    assert_eq!(r.status, 500);
    std::thread::sleep(Duration::from_secs(1));
    for x in [&a, &b] {
        assert_eq!(value(x, "svc/leader").unwrap(), before, "on {}", x.name);
    }
}

#[test]
fn recursive_delete_removes_the_subtree_everywhere() {
    let (a, b) = pair("rdel", &[]);
    for k in ["app/x", "app/y/z", "application"] {
        put_seen(&a, &b, k, "1");
    }
    assert_eq!(
        request("DELETE", &url(&a, "/v1/kv/app/?recurse"), None).body,
        "true"
    );
    eventually(Duration::from_secs(20), || {
        value(&b, "app/x").is_none() && value(&b, "app/y/z").is_none()
    });
    assert!(value(&b, "application").is_some(), "outside the prefix");
    // The whole keyspace: `/v1/kv/?recurse`.
    let all = request("GET", &url(&a, "/v1/kv/?recurse"), None);
    assert_eq!(all.status, 200);
    assert_eq!(json(&all).as_array().unwrap().len(), 1, "{}", all.body);
}

#[test]
fn flags_are_stored_and_replicated() {
    let (a, b) = pair("flags", &[]);
    let r = request("PUT", &url(&a, "/v1/kv/f?flags=42"), Some(b"x"));
    assert_eq!(r.body, "true");
    eventually(Duration::from_secs(20), || value(&b, "f").is_some());
    assert_eq!(value(&b, "f").unwrap()["Flags"], 42);
    let r = request("PUT", &url(&a, "/v1/kv/f?flags=-1"), Some(b"x"));
    assert_eq!(r.status, 400);
}

#[test]
fn keys_stop_at_the_separator_and_raw_gives_the_bytes() {
    let (a, b) = pair("keys", &[]);
    for k in ["cfg/a", "cfg/db/host", "cfg/db/port", "cfg/web/"] {
        put_seen(&a, &b, k, "v");
    }
    let r = request("GET", &url(&b, "/v1/kv/cfg/?keys&separator=/"), None);
    assert_eq!(
        json(&r),
        serde_json::json!(["cfg/a", "cfg/db/", "cfg/web/"])
    );
    let r = request("GET", &url(&b, "/v1/kv/cfg/?keys"), None);
    assert_eq!(json(&r).as_array().unwrap().len(), 4);
    let r = request("GET", &url(&b, "/v1/kv/cfg/a?raw"), None);
    assert_eq!((r.status, r.body.as_str()), (200, "v"));
    // An empty value reads back null, as Consul's does.
    request("PUT", &url(&a, "/v1/kv/empty"), Some(b""));
    assert_eq!(
        value(&a, "empty").unwrap()["Value"],
        serde_json::Value::Null
    );
}

#[test]
fn values_up_to_512_kib_travel_and_larger_are_refused() {
    let (a, b) = pair("big", &[]);
    let big = vec![b'v'; 512 * 1024];
    let r = request("PUT", &url(&a, "/v1/kv/big"), Some(&big));
    assert_eq!(r.body, "true");
    eventually(Duration::from_secs(30), || {
        let r = request("GET", &url(&b, "/v1/kv/big?raw"), None);
        r.status == 200 && r.body.len() == big.len()
    });
    let r = request(
        "PUT",
        &url(&a, "/v1/kv/big"),
        Some(&vec![b'v'; 512 * 1024 + 1]),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("too large"), "{}", r.body);
}

#[test]
fn every_consul_answer_carries_the_headers_clients_read() {
    let (a, _b) = pair("headers", &[]);
    let r = request("GET", &url(&a, "/v1/kv/absent"), None);
    assert_eq!(r.status, 404);
    assert!(r.index.is_some() && r.leader.as_deref() == Some("true"));
    let r = request("GET", &url(&a, "/v1/no/such/endpoint"), None);
    assert_eq!(r.status, 404);
    assert!(
        r.index.is_some() && !r.body.is_empty(),
        "an error has a body"
    );
    for bad in ["wait=forever", "index=x"] {
        let r = request("GET", &url(&a, &format!("/v1/kv/k?{bad}")), None);
        assert_eq!(r.status, 400, "{bad}");
    }
    let r = request("GET", &url(&a, "/v1/catalog/nodes?dc=elsewhere"), None);
    assert_eq!((r.status, r.body.as_str()), (500, "No path to datacenter"));
    let r = request("GET", &url(&a, "/v1/catalog/nodes?dc=grapevine"), None);
    assert_eq!(r.status, 200);
}

#[test]
fn go_durations_bound_a_blocking_query() {
    let (a, _b) = pair("wait", &[]);
    request("PUT", &url(&a, "/v1/kv/w"), Some(b"1"));
    let idx = request("GET", &url(&a, "/v1/kv/w"), None).index.unwrap();
    // Before, `0.5s` and `1m30s` silently became the 5-minute default.
    let t0 = Instant::now();
    request(
        "GET",
        &url(&a, &format!("/v1/kv/w?index={idx}&wait=0.5s")),
        None,
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[test]
fn agent_health_and_catalog_endpoints_answer_in_consuls_shapes() {
    let (a, b) = pair("cat", &["--tag", "rack=r1"]);
    let reg = br#"{"Name":"web","ID":"web-1","Port":80,"Tags":["v1","primary"],
        "Weights":{"Passing":5,"Warning":1},"TaggedAddresses":{"lan":{"Address":"127.0.0.1","Port":80}},
        "EnableTagOverride":true,
        "Check":{"CheckID":"web-ttl","TTL":"30s","Status":"passing"}}"#;
    let r = request("PUT", &url(&a, "/v1/agent/service/register"), Some(reg));
    assert_eq!(r.status, 200, "{}", r.body);
    let node = br#"{"Name":"disk","ID":"disk","TTL":"30s","Status":"passing"}"#;
    let r = request("PUT", &url(&a, "/v1/agent/check/register"), Some(node));
    assert_eq!(r.status, 200, "{}", r.body);
    let checks = json(&request("GET", &url(&a, "/v1/agent/checks"), None));
    assert_eq!(checks["disk"]["ServiceID"], "");
    assert_eq!(checks["web-ttl"]["ServiceID"], "web-1");
    eventually(Duration::from_secs(20), || {
        json(&request(
            "GET",
            &url(&b, "/v1/health/service/web?passing"),
            None,
        ))
        .as_array()
        .is_some_and(|v| v.len() == 1)
    });
    // Several tags: all required (Prometheus' consul_sd with two tags).
    let n = |path: &str| {
        json(&request("GET", &url(&b, path), None))
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(n("/v1/health/service/web?tag=v1&tag=primary"), 1);
    assert_eq!(n("/v1/health/service/web?tag=v1&tag=canary"), 0);
    assert_eq!(n("/v1/catalog/service/web?tag=v1&tag=canary"), 0);
    // `filter`, Consul's expression language.
    assert_eq!(
        n("/v1/health/service/web?filter=Service.Meta.absent%20is%20empty"),
        1
    );
    assert_eq!(
        n("/v1/catalog/service/web?filter=%22canary%22%20in%20ServiceTags"),
        0
    );
    assert_eq!(n("/v1/catalog/nodes?filter=Meta.rack%20%3D%3D%20r1"), 2);
    let r = request("GET", &url(&b, "/v1/catalog/nodes?filter=%3D%3D"), None);
    assert_eq!(r.status, 400);
    let entry = &json(&request("GET", &url(&b, "/v1/catalog/service/web"), None))[0];
    assert_eq!(
        entry["ServiceWeights"],
        serde_json::json!({"Passing": 5, "Warning": 1})
    );
    assert_eq!(entry["NodeMeta"]["rack"], "r1");
    assert_eq!(entry["ServiceTaggedAddresses"]["lan"]["Port"], 80);
    assert_eq!(
        json(&request("GET", &url(&b, "/v1/catalog/datacenters"), None)),
        serde_json::json!(["grapevine"])
    );
    assert_eq!(n("/v1/catalog/nodes"), 2);
    let node_view = json(&request(
        "GET",
        &url(&b, &format!("/v1/catalog/node/{}", a.name)),
        None,
    ));
    assert!(node_view["Services"]["web-1"].is_object(), "{node_view}");
    assert_eq!(
        n(&format!("/v1/health/node/{}", a.name)),
        3,
        "serfHealth, disk, web-ttl"
    );
    assert_eq!(n("/v1/health/checks/web"), 1);
    // A failing check: `passing=false` is no filter; `?passing` is.
    request("PUT", &url(&a, "/v1/agent/check/fail/web-ttl"), None);
    eventually(Duration::from_secs(20), || {
        n("/v1/health/service/web?passing") == 0
    });
    assert_eq!(n("/v1/health/service/web?passing=false"), 1);
    assert!(n("/v1/health/state/critical") >= 1);
    // Maintenance: a critical check every member sees.
    request(
        "PUT",
        &url(&a, "/v1/agent/maintenance?enable=true&reason=reboot"),
        None,
    );
    eventually(Duration::from_secs(20), || {
        request("GET", &url(&b, "/v1/health/state/critical"), None)
            .body
            .contains("_node_maintenance")
    });
    let r = request("PUT", &url(&a, "/v1/agent/maintenance"), None);
    assert_eq!(r.status, 400, "enable is required");
    let r = request(
        "PUT",
        &url(&a, "/v1/agent/service/maintenance/web-1?enable=true"),
        None,
    );
    assert_eq!(r.status, 200);
    eventually(Duration::from_secs(20), || {
        request("GET", &url(&b, "/v1/health/checks/web"), None)
            .body
            .contains("_service_maintenance:web-1")
    });
    // Coordinates wait for network coordinates: an empty list with the headers.
    let r = request("GET", &url(&b, "/v1/coordinate/nodes"), None);
    assert_eq!((r.status, r.body.as_str()), (200, "[]"));
    assert!(r.index.is_some());
    // Check kinds this agent cannot run are refused with the reason.
    let r = request(
        "PUT",
        &url(&a, "/v1/agent/check/register"),
        Some(br#"{"Name":"g","GRPC":"x:1"}"#),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("GRPC checks are not supported"),
        "{}",
        r.body
    );
    let r = request("PUT", &url(&a, "/v1/agent/check/deregister/disk"), None);
    assert_eq!(r.status, 200);
    assert!(json(&request("GET", &url(&a, "/v1/agent/checks"), None))
        .get("disk")
        .is_none());
}

#[test]
fn events_are_filtered_by_node_and_service_and_have_uuids() {
    let (a, b) = pair("ev", &[]);
    let reg = br#"{"Name":"api","Tags":["v2"],"Port":1}"#;
    assert_eq!(
        request("PUT", &url(&b, "/v1/agent/service/register"), Some(reg)).status,
        200
    );
    let fire = |q: &str| {
        json(&request(
            "PUT",
            &url(&a, &format!("/v1/event/fire/{q}")),
            Some(b"p"),
        ))
    };
    let ev = fire(&format!("to-b?node=^{}$", b.name));
    let id = ev["ID"].as_str().unwrap();
    assert_eq!(
        id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    fire("to-api?service=api&tag=v2");
    fire("to-nobody?service=absent");
    fire("to-all");
    let names = |x: &Agent| -> Vec<String> {
        json(&request("GET", &url(x, "/v1/event/list"), None))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Name"].as_str().unwrap().to_string())
            .collect()
    };
    eventually(Duration::from_secs(20), || {
        names(&a).contains(&"to-all".into()) && names(&b).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(names(&a), ["to-all"]);
    // Listed in the order this agent received them, as Consul's are; gossip may deliver
    // two events fired in sequence in either order (CI saw to-api before to-b).
    let mut got = names(&b);
    got.sort();
    assert_eq!(
        got,
        ["to-all", "to-api", "to-b"],
        "each once, none filtered out"
    );
    let listed = json(&request("GET", &url(&b, "/v1/event/list?name=to-b"), None));
    assert_eq!(listed[0]["ID"], id, "the same UUID on every agent");
    assert_eq!(listed[0]["Payload"], "cA==");
}

/// `dig @127.0.0.1 -p PORT NAME TYPE`, the whole answer.
fn dig(port: u16, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, rtype, "+norec"])
        .output()
        .expect("dig runs (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dns_answers_consuls_names() {
    if Command::new("dig").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("GRAPEVINE_REQUIRE_PROMETHEUS").is_none(),
            "dig is required"
        );
        eprintln!("skipped: dig is not installed");
        return;
    }
    let port = free_port();
    let dns = format!("127.0.0.1:{port}");
    let a = Spec::new("dns-a")
        .args(&["--dns", &dns, "--alt-domain", "consul"])
        .start();
    eventually(Duration::from_secs(10), || {
        common::get(&url(&a, "/v1/agent/self")).is_some()
    });
    let reg = br#"{"Name":"web","Port":8080,"Tags":["v2"],"Weights":{"Passing":7,"Warning":1}}"#;
    assert_eq!(
        request("PUT", &url(&a, "/v1/agent/service/register"), Some(reg)).status,
        200
    );
    eventually(Duration::from_secs(10), || {
        dig(port, "web.service.grapevine.", "A").contains("ANSWER SECTION")
    });
    for name in [
        "web.service.consul.",
        "_web._tcp.service.consul.",
        "_web._v2.service.grapevine.",
        "web.service.grapevine.consul.",
        "v2.web.service.consul.",
    ] {
        let out = dig(port, name, "SRV");
        assert!(
            out.contains("status: NOERROR") && out.contains("1 7 8080 dns-a.node."),
            "{name}: {out}"
        );
    }
    let out = dig(port, "dns-a.node.consul.", "A");
    assert!(
        out.contains("ANSWER SECTION") && out.contains("127.0.0.1"),
        "{out}"
    );
    let out = dig(port, "1.0.0.127.in-addr.arpa.", "PTR");
    assert!(out.contains("dns-a.node.grapevine."), "{out}");
    for name in ["nothing.service.consul.", "web.service.dc9.consul."] {
        let out = dig(port, name, "A");
        assert!(out.contains("NXDOMAIN"), "{name}: {out}");
        assert!(
            out.contains("SOA") && out.contains("hostmaster.consul."),
            "a negative answer carries the SOA: {out}"
        );
    }
    let out = dig(port, "web.service.grapevine.", "AAAA");
    assert!(
        out.contains("status: NOERROR") && out.contains("SOA"),
        "no data, with the SOA: {out}"
    );
}
