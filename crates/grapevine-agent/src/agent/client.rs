//! The CLI's side: each command calls the local agent's HTTP API and prints the answer.

use super::http::MemberView;
use anyhow::{anyhow, Context, Result};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// How the CLI reaches the local agent: its address (`host:port`, or a URL with `http://`
/// or `https://`), the token it presents, and for HTTPS the CA to trust and the client
/// certificate to show.
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        write!(f, "Api({})", self.base)
    }
}

/// The CLI's TLS files.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// CA certificates to trust (PEM); the system's roots otherwise.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), for agents that require one.
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
}

impl Api {
    /// The agent at `addr` (default scheme http), presenting `token`.
    pub fn new(addr: &str, token: Option<String>, tls: &TlsFiles) -> Result<Api> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let mut builder =
            ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(5));
        if base.starts_with("https://") {
            builder = builder.tls_config(client_tls(tls)?);
        }
        Ok(Api {
            base,
            agent: builder.build(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.set("X-Consul-Token", t),
            None => req,
        }
    }
}

/// The rustls client configuration for `tls`.
fn client_tls(tls: &TlsFiles) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the CA file {}", ca.display()))?
            {
                roots
                    .add(c.with_context(|| format!("parsing the CA file {}", ca.display()))?)
                    .context("adding the CA")?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .context("the client certificate and key do not go together")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(anyhow!(
                "a client certificate needs its key, and a key its certificate"
            ))
        }
    };
    Ok(Arc::new(config))
}

/// `grapevine members`: the local agent's view, as a table or JSON.
pub fn members_command(http: &Api, json: bool) -> Result<String> {
    let body = simple_command(http, "GET", "/v1/grapevine/members", None)?;
    let members: Vec<MemberView> = serde_json::from_str(&body)?;
    if json {
        return Ok(serde_json::to_string_pretty(&members)? + "\n");
    }
    let mut out = format!(
        "{:<24} {:<24} {:<8} {:>11}  {}\n",
        "NAME", "ADDR", "STATUS", "INCARNATION", "TAGS"
    );
    for m in members {
        out += &format!(
            "{:<24} {:<24} {:<8} {:>11}  {}\n",
            m.name, m.addr, m.status, m.incarnation, m.tags
        );
    }
    Ok(out)
}

/// An HTTP call to the local agent, with a clear error when none answers.
fn call(method: &str, http: &Api, path: &str, body: Option<&[u8]>) -> Result<ureq::Response> {
    let req = http
        .request(method, path)
        .timeout(std::time::Duration::from_secs(600));
    let r = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(code, resp)) => Ok(ureq::Response::new(
            code,
            "error",
            &resp.into_string().unwrap_or_default(),
        )?),
        Err(e) => Err(anyhow!("no agent answers at {}: {e}", http.base)),
    }
}

/// A response, or the agent's refusal as an error (404 passes: callers read it as absent).
fn refused(r: ureq::Response) -> Result<ureq::Response> {
    let status = r.status();
    if status >= 400 && status != 404 {
        return Err(anyhow!(
            "the agent refused ({status}): {}",
            r.into_string().unwrap_or_default()
        ));
    }
    Ok(r)
}

/// `grapevine kv ...` against the local agent.
pub fn kv_command(http: &Api, op: &KvOp) -> Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |body: &str| -> Result<Vec<(String, Vec<u8>, u64)>> {
        let v: Vec<serde_json::Value> = serde_json::from_str(body)?;
        Ok(v.iter()
            .map(|e| {
                (
                    e["Key"].as_str().unwrap_or_default().to_string(),
                    b64.decode(e["Value"].as_str().unwrap_or_default())
                        .unwrap_or_default(),
                    e["ModifyIndex"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    };
    match op {
        KvOp::Await { prefix, timeout } => {
            let t0 = std::time::Instant::now();
            let r = refused(call(
                "GET",
                http,
                &format!("/v1/grapevine/converged?wait={timeout}"),
                None,
            )?)?;
            let status = r.status();
            let v: serde_json::Value = serde_json::from_str(&r.into_string()?)?;
            if status != 200 {
                return Err(anyhow!(
                    "not converged within {timeout}: differ {}, unknown {}",
                    v["Differ"],
                    v["Unknown"]
                ));
            }
            let mut out = format!(
                "converged: every live member holds this keyspace ({:.3} s)\n",
                t0.elapsed().as_secs_f64()
            );
            out += &kv_command(
                http,
                &KvOp::List {
                    prefix: prefix.clone(),
                },
            )?;
            Ok(out)
        }
        KvOp::Get { key } => {
            let r = refused(call("GET", http, &format!("/v1/kv/{key}"), None)?)?;
            if r.status() == 404 {
                return Err(anyhow!("no such key: {key}"));
            }
            let entries = decode(&r.into_string()?)?;
            Ok(entries
                .first()
                .map(|e| String::from_utf8_lossy(&e.1).into_owned() + "\n")
                .unwrap_or_default())
        }
        KvOp::Put { key, value } => {
            refused(call(
                "PUT",
                http,
                &format!("/v1/kv/{key}"),
                Some(value.as_bytes()),
            )?)?;
            Ok(format!("wrote {key}\n"))
        }
        KvOp::Delete { key } => {
            refused(call("DELETE", http, &format!("/v1/kv/{key}"), None)?)?;
            Ok(format!("deleted {key}\n"))
        }
        KvOp::List { prefix } => {
            let r = refused(call(
                "GET",
                http,
                &format!("/v1/kv/{prefix}?recurse"),
                None,
            )?)?;
            if r.status() == 404 {
                return Ok(String::new());
            }
            Ok(decode(&r.into_string()?)?
                .iter()
                .map(|(k, v, _)| format!("{k}\t{}\n", String::from_utf8_lossy(v)))
                .collect())
        }
        KvOp::Watch { prefix } => {
            // Blocking queries in a loop: print the prefix each time it changes.
            let mut index = 0u64;
            loop {
                let r = refused(call(
                    "GET",
                    http,
                    &format!("/v1/kv/{prefix}?recurse&index={index}&wait=5m"),
                    None,
                )?)?;
                let next: u64 = r
                    .header("X-Consul-Index")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(index + 1);
                let body = if r.status() == 404 {
                    "[]".to_string()
                } else {
                    r.into_string()?
                };
                if next != index {
                    let mut out = format!("-- index {next}\n");
                    for (k, v, _) in decode(&body)? {
                        out += &format!("{k}\t{}\n", String::from_utf8_lossy(&v));
                    }
                    print!("{out}");
                    index = next;
                }
            }
        }
    }
}

/// A `grapevine kv` operation.
#[derive(clap::Subcommand, Debug)]
pub enum KvOp {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// List the keys under a prefix, with their values.
    List {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print the keys under a prefix every time they change (blocking queries).
    Watch {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Wait until every live member holds the keyspace this agent holds (so the latest
    /// versions under the prefix it knows), then print them; exit 1 after the timeout.
    Await {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// How long to wait (10s, 1m, ...).
        #[arg(long, default_value = "60s")]
        timeout: String,
    },
}

/// `grapevine services`: every service in the catalog with its instances and health.
pub fn services_command(http: &Api) -> Result<String> {
    let names: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(&simple_command(http, "GET", "/v1/catalog/services", None)?)?;
    let mut out = format!(
        "{:<20} {:<20} {:<24} {:<9} {}\n",
        "SERVICE", "NODE", "ADDRESS", "STATUS", "TAGS"
    );
    for name in names.keys() {
        let body = simple_command(http, "GET", &format!("/v1/health/service/{name}"), None)?;
        let entries: Vec<serde_json::Value> = serde_json::from_str(&body)?;
        for e in entries {
            let svc = &e["Service"];
            let addr = match svc["Address"].as_str() {
                Some(a) if !a.is_empty() => a.to_string(),
                _ => e["Node"]["Address"].as_str().unwrap_or("?").to_string(),
            };
            let worst = e["Checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["Status"].as_str())
                .max_by_key(|s| match *s {
                    "passing" => 0,
                    "warning" => 1,
                    _ => 2,
                })
                .unwrap_or("passing")
                .to_string();
            let tags: Vec<&str> = svc["Tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            out += &format!(
                "{:<20} {:<20} {:<24} {:<9} {}\n",
                name,
                e["Node"]["Node"].as_str().unwrap_or("?"),
                format!("{addr}:{}", svc["Port"]),
                worst,
                tags.join(",")
            );
        }
    }
    Ok(out)
}

/// `grapevine aggregate NAME [VALUE]`: contributes a value if given, then prints this
/// agent's estimate of the cluster-wide aggregates.
pub fn aggregate_command(
    http: &Api,
    name: &str,
    value: Option<f64>,
    withdraw: bool,
) -> Result<String> {
    let path = format!("/v1/grapevine/aggregate/{name}");
    if let Some(v) = value {
        simple_command(http, "PUT", &path, Some(v.to_string().as_bytes()))?;
    }
    if withdraw {
        simple_command(http, "DELETE", &path, None)?;
    }
    let r = refused(call("GET", http, &path, None)?)?;
    if r.status() == 404 {
        return Ok(format!("no estimate of {name} yet\n"));
    }
    let v: serde_json::Value = serde_json::from_str(&r.into_string()?)?;
    let f = |k: &str| v[k].as_f64().map_or("-".to_string(), |x| format!("{x}"));
    Ok(format!(
        "{name}: average {} sum {} count {} min {} max {} (epoch {}, {})\n",
        f("Average"),
        f("Sum"),
        f("Count"),
        f("Min"),
        f("Max"),
        v["Epoch"],
        if v["Settled"].as_bool() == Some(true) {
            "settled"
        } else {
            "converging"
        }
    ))
}

/// `grapevine event`, `join`, `leave`, `info`: one call each.
pub fn simple_command(http: &Api, method: &str, path: &str, body: Option<&[u8]>) -> Result<String> {
    let r = call(method, http, path, body)?;
    let status = r.status();
    let text = r.into_string()?;
    if status >= 400 {
        return Err(anyhow!("the agent refused ({status}): {text}"));
    }
    Ok(text + "\n")
}

/// One line of `grapevine monitor` for a stream event: `HH:MM:SS.mmm UTC`, the kind, the
/// member and the details.
fn monitor_line(v: &serde_json::Value) -> String {
    let t = v["time"].as_f64().unwrap_or(0.0);
    let ms = (t * 1000.0) as u64;
    let (h, m, s) = (ms / 3_600_000 % 24, ms / 60_000 % 60, ms / 1000 % 60);
    let mut line = format!(
        "{h:02}:{m:02}:{s:02}.{:03} {:<14} {}",
        ms % 1000,
        v["event"].as_str().unwrap_or("?"),
        v["name"].as_str().unwrap_or("?"),
    );
    line += &format!(" reason={}", v["reason"].as_str().unwrap_or("?"));
    for k in ["addr", "incarnation", "accuser", "local"] {
        if !v[k].is_null() {
            line += &format!(" {k}={}", v[k].to_string().trim_matches('"'));
        }
    }
    line + "\n"
}

/// `grapevine monitor`: prints the agent's event stream as it happens (one line per event,
/// or its JSON with `json`), until the agent stops or the user interrupts.
pub fn monitor_command(http: &Api, json: bool) -> Result<()> {
    use std::io::{BufRead, Write};
    let resp = match http.request("GET", "/v1/grapevine/events").call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(anyhow!(
                "the agent refused ({code}): {}",
                r.into_string().unwrap_or_default()
            ))
        }
        Err(e) => return Err(anyhow!("no agent answers at {}: {e}", http.base)),
    };
    eprintln!("monitoring the agent at {} (Ctrl-C to stop)", http.base);
    let reader = std::io::BufReader::new(resp.into_reader());
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let text = if json {
            data.trim().to_string() + "\n"
        } else {
            match serde_json::from_str::<serde_json::Value>(data.trim()) {
                Ok(v) => monitor_line(&v),
                Err(_) => continue,
            }
        };
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Err(anyhow!(
        "the agent at {} closed the event stream",
        http.base
    ))
}

/// Whom a query asks and how long it waits.
pub struct QueryOpts {
    /// Only these members.
    pub nodes: Vec<String>,
    /// Only members whose tag matches, `key=regexp`.
    pub tags: Vec<String>,
    /// Go's duration syntax.
    pub timeout: Option<String>,
    /// Ask for acks.
    pub ack: bool,
    /// Members that relay each response.
    pub relay_factor: u8,
}

/// `grapevine query`: sends a query through the local agent and prints each ack and
/// response as it arrives, then a summary.
pub fn query_command(http: &Api, name: &str, payload: &str, o: &QueryOpts) -> Result<()> {
    use std::io::{BufRead, Write};
    let mut req = http
        .request("POST", "/v1/grapevine/query")
        .query("name", name)
        .query("ack", if o.ack { "true" } else { "false" })
        .query("relay-factor", &o.relay_factor.to_string());
    for n in &o.nodes {
        req = req.query("node", n);
    }
    for t in &o.tags {
        req = req.query("tag", t);
    }
    if let Some(t) = &o.timeout {
        req = req.query("timeout", t);
    }
    let resp = match req.send_bytes(payload.as_bytes()) {
        Ok(r) => r,
        Err(ureq::Error::Status(404, _)) => {
            return Err(anyhow!(
                "this agent does not run queries: they need an agent started with --protocol serf"
            ))
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(anyhow!(
                "the agent refused ({code}): {}",
                r.into_string().unwrap_or_default()
            ))
        }
        Err(e) => return Err(anyhow!("no agent answers at {}: {e}", http.base)),
    };
    let mut out = std::io::stdout().lock();
    let (mut acks, mut responses) = (0, 0);
    for line in std::io::BufReader::new(resp.into_reader()).lines() {
        let v: serde_json::Value = match serde_json::from_str(&line?) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let text = match v["type"].as_str() {
            Some("ack") => {
                acks += 1;
                format!("Ack from '{}'\n", v["from"].as_str().unwrap_or("?"))
            }
            Some("response") => {
                responses += 1;
                format!(
                    "Response from '{}': {}\n",
                    v["from"].as_str().unwrap_or("?"),
                    v["payload"].as_str().unwrap_or("")
                )
            }
            Some("done") => format!("Total Acks: {acks}\nTotal Responses: {responses}\n"),
            _ => continue,
        };
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_line_shows_time_kind_member_and_details() {
        let v = serde_json::json!({
            "event": "member-suspect", "reason": "suspected", "name": "db-2",
            "addr": "10.0.0.2:7946", "incarnation": 3, "accuser": "db-1", "local": false,
            "time": 3723.25,
        });
        assert_eq!(
            monitor_line(&v),
            "01:02:03.250 member-suspect db-2 reason=suspected addr=10.0.0.2:7946 \
             incarnation=3 accuser=db-1 local=false\n"
        );
    }
}
