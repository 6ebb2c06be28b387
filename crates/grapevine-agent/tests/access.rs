//! Access control and TLS on the HTTP API, with real clients: tokens decide what a request
//! may do (no token or a read-only one cannot write: 403 with Consul's message), the CLI
//! and python-consul pass their token, and HTTPS works with curl, python-consul and the
//! CLI, refusing at the handshake a client without a certificate when one is required.

mod common;

use common::{eventually, free_port, python_consul, Agent, BIN};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "admin-secret-0123456789";
const READER: &str = "reader-secret-0123456789";
const APP: &str = "app-secret-0123456789abc";

/// Starts an agent with `config` (TOML) and extra flags; its log goes to `log`.
fn agent(dir: &Path, name: &str, config: &str, args: &[&str]) -> Agent {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gossip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(BIN)
        .args([
            "agent",
            "--name",
            name,
            "--profile",
            "local",
            "--dns",
            "off",
        ])
        .args(["--bind", &gossip.to_string(), "--http", &http.to_string()])
        .args(["--config", cfg.to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent starts");
    Agent::guard(child, name, http, gossip)
}

/// A request's status and body, presenting `token` in `X-Consul-Token`.
fn call(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.set("X-Consul-Token", t);
    }
    match req.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Runs a python snippet; its stdout, or a panic with its stderr.
fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tokens_decide_what_a_request_may_do_for_curl_the_cli_and_python_consul() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
        [[acl.tokens]]
        name = "admin"
        secret = "{ADMIN}"
        management = true
        [[acl.tokens]]
        name = "reader"
        secret = "{READER}"
        [acl.tokens.rules]
        key_prefix = {{ "" = "read" }}
        node_prefix = {{ "" = "read" }}
        service_prefix = {{ "" = "read" }}
        [[acl.tokens]]
        name = "app"
        secret = "{APP}"
        [acl.tokens.rules]
        key_prefix = {{ "app/" = "write" }}
        node_prefix = {{ "" = "read" }}
        agent_prefix = {{ "" = "read" }}
        "#
    );
    let a = agent(dir.path(), "acl", &config, &[]);
    let base = format!("http://{}", a.http);
    eventually(Duration::from_secs(10), || {
        call("GET", &format!("{base}/v1/agent/self"), Some(ADMIN), "").0 == 200
    });
    // No token, a read-only one, an unknown one: no write.
    let put =
        |key: &str, token: Option<&str>| call("PUT", &format!("{base}/v1/kv/{key}"), token, "v");
    let (code, msg) = put("app/x", None);
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' \
         lacks permission 'key:write' on \"app/x\""
    );
    let (code, msg) = put("app/x", Some(READER));
    assert_eq!(
        (code, msg.contains("AccessorID 'reader'")),
        (403, true),
        "{msg}"
    );
    assert_eq!(
        put("app/x", Some("not-a-token")),
        (403, "ACL not found".into())
    );
    // The app token writes its prefix only; the reader reads.
    assert_eq!(put("app/x", Some(APP)).0, 200);
    assert_eq!(put("other", Some(APP)).0, 403);
    assert_eq!(
        call("GET", &format!("{base}/v1/kv/app/x"), Some(READER), "").0,
        200
    );
    assert_eq!(call("GET", &format!("{base}/v1/kv/app/x"), None, "").0, 403);
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/grapevine/keyring"),
            Some(APP),
            ""
        )
        .0,
        403
    );
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/grapevine/keyring"),
            Some(ADMIN),
            ""
        )
        .0,
        200
    );
    // Bearer and ?token= work as the header does.
    let bearer = ureq::get(&format!("{base}/v1/kv/app/x"))
        .set("Authorization", &format!("Bearer {READER}"))
        .call()
        .map(|r| r.status())
        .unwrap_or(0);
    assert_eq!(bearer, 200);
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/kv/app/x?token={READER}"),
            None,
            ""
        )
        .0,
        200
    );
    // The CLI, by flag and by environment.
    let cli = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args).args(["--http", &a.http.to_string()]);
        if let Some(t) = env {
            c.env("GRAPEVINE_HTTP_TOKEN", t);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!cli(&["kv", "put", "app/y", "1"], None).0, "no token");
    assert!(cli(&["kv", "put", "app/y", "1", "--token", APP], None).0);
    assert!(cli(&["kv", "put", "app/z", "1"], Some(APP)).0);
    let (ok, err) = cli(&["kv", "put", "other", "1"], Some(APP));
    assert!(
        !ok && err.contains("403") && err.contains("Permission denied"),
        "{err}"
    );
    // python-consul passes its token.
    if python_consul() {
        let out = python(&format!(
            r#"
import consul
c = consul.Consul(host="127.0.0.1", port={port}, token="{APP}")
c.kv.put("app/py", "hello")
print(c.kv.get("app/py")[1]["Value"].decode())
try:
    consul.Consul(host="127.0.0.1", port={port}, token="{READER}").kv.put("app/py", "no")
    print("written")
except consul.ACLPermissionDenied:
    print("denied")
"#,
            port = a.http.port()
        ));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["hello", "denied"]
        );
    }
    // No secret ever reaches the log, debug level included.
    drop(a);
    let log = std::fs::read_to_string(dir.path().join("acl.log")).unwrap();
    for secret in [ADMIN, READER, APP] {
        assert!(!log.contains(secret), "a token in the log");
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
struct Certs {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=grapevine test CA",
        ],
    ]
    .concat());
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
    Certs {
        ca: dir.join("ca.pem"),
        server: (dir.join("server.pem"), dir.join("server.key")),
        client: (dir.join("client.pem"), dir.join("client.key")),
    }
}

fn curl(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn https_works_with_curl_python_consul_and_the_cli_and_client_certs_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let a = agent(
        dir.path(),
        "tls",
        "",
        &[
            "--tls-cert-file",
            &s(&c.server.0),
            "--tls-key-file",
            &s(&c.server.1),
        ],
    );
    let url = format!("https://{}/v1/agent/self", a.http);
    eventually(Duration::from_secs(10), || {
        curl(&url, &["--cacert", &s(&c.ca)]).0
    });
    assert_eq!(curl(&url, &["--cacert", &s(&c.ca)]).1, "200");
    assert!(
        !curl(&url.replace("https", "http"), &[])
            .1
            .starts_with("200"),
        "no plain HTTP"
    );
    if python_consul() {
        let out = python(&format!(
            r#"
import consul
c = consul.Consul(host="127.0.0.1", port={port}, scheme="https", verify="{ca}")
c.kv.put("tls/k", "over tls")
print(c.kv.get("tls/k")[1]["Value"].decode())
"#,
            port = a.http.port(),
            ca = s(&c.ca)
        ));
        assert_eq!(out.trim(), "over tls");
    }
    let https = format!("https://{}", a.http);
    let out = Command::new(BIN)
        .args([
            "kv",
            "put",
            "tls/cli",
            "yes",
            "--http",
            &https,
            "--ca-file",
            &s(&c.ca),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Client certificates required: none, refused at the handshake; the CA's, served.
    let b = agent(
        dir.path(),
        "mtls",
        "",
        &[
            "--tls-cert-file",
            &s(&c.server.0),
            "--tls-key-file",
            &s(&c.server.1),
            "--tls-client-ca-file",
            &s(&c.ca),
            "--tls-verify-incoming",
        ],
    );
    let url = format!("https://{}/v1/agent/self", b.http);
    let with_cert = [
        "--cacert",
        &s(&c.ca),
        "--cert",
        &s(&c.client.0),
        "--key",
        &s(&c.client.1),
    ];
    eventually(Duration::from_secs(10), || curl(&url, &with_cert).0);
    let (ok, out) = curl(&url, &["--cacert", &s(&c.ca)]);
    assert!(
        !ok && !out.starts_with("200"),
        "served without a client certificate: {out}"
    );
    assert_eq!(curl(&url, &with_cert).1, "200");
    let cli = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "info",
                "--http",
                &format!("https://{}", b.http),
                "--ca-file",
                &s(&c.ca),
            ])
            .args(extra)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!cli(&[]));
    assert!(cli(&[
        "--client-cert",
        &s(&c.client.0),
        "--client-key",
        &s(&c.client.1)
    ]));
}

/// A body fetched with curl over HTTPS trusting `ca`.
fn curl_body(url: &str, ca: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert", ca])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP check honours `TLSSkipVerify`, `Method` and `Header`: against this agent's own
/// HTTPS API, whose certificate comes from a CA no system trusts, the check that skips
/// verification passes and the one that verifies fails.
#[test]
fn http_checks_honour_tls_skip_verify() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let ca = s(&c.ca);
    let a = agent(
        dir.path(),
        "tlscheck",
        "",
        &[
            "--tls-cert-file",
            &s(&c.server.0),
            "--tls-key-file",
            &s(&c.server.1),
        ],
    );
    let base = format!("https://{}", a.http);
    eventually(Duration::from_secs(10), || {
        curl(&format!("{base}/v1/agent/self"), &["--cacert", &ca]).0
    });
    let reg = format!(
        r#"{{"Name":"api","Checks":[
            {{"CheckID":"skip","HTTP":"{base}/v1/agent/self","Interval":"200ms",
              "TLSSkipVerify":true,"Method":"GET","Header":{{"X-Check":["1"]}}}},
            {{"CheckID":"verify","HTTP":"{base}/v1/agent/self","Interval":"200ms"}}]}}"#
    );
    let out = curl_body(
        &format!("{base}/v1/agent/service/register"),
        &ca,
        &["-X", "PUT", "--data", &reg],
    );
    assert_eq!(out, "true");
    eventually(Duration::from_secs(20), || {
        let v: serde_json::Value =
            serde_json::from_str(&curl_body(&format!("{base}/v1/agent/checks"), &ca, &[]))
                .unwrap_or_default();
        v["skip"]["Status"] == "passing" && v["verify"]["Status"] == "critical"
    });
}
