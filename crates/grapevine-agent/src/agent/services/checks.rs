//! The health checks an agent runs itself: HTTP, TCP and script.

use super::Status;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP check's request: Consul's `HTTP`, `Method`, `Header`, `Body`, `TLSSkipVerify`.
pub(super) struct HttpCheck {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    skip_verify: bool,
}

impl HttpCheck {
    /// The request `c` describes, to `url`.
    pub(super) fn of(url: &str, c: &super::CheckDef) -> HttpCheck {
        HttpCheck {
            url: url.to_string(),
            method: c
                .method
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "GET".into())
                .to_ascii_uppercase(),
            headers: c
                .header
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            body: c.body.clone(),
            skip_verify: c.tls_skip_verify,
        }
    }
}

/// Accepts any server certificate: what `TLSSkipVerify` asks for (a check of a service
/// with a self-signed certificate). Signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client that skips certificate verification.
fn insecure_agent(timeout: Duration) -> Result<ureq::Agent, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(timeout)
        .build())
}

pub(super) async fn http_check(req: HttpCheck, timeout: Duration) -> (Status, String) {
    let method = req.method.clone();
    // ureq blocks: run it off the runtime, and reduce its error to a code or a message.
    let r = tokio::task::spawn_blocking(move || {
        let agent = if req.skip_verify {
            insecure_agent(timeout)?
        } else {
            ureq::AgentBuilder::new().timeout(timeout).build()
        };
        let mut r = agent.request(&req.method, &req.url);
        for (k, v) in &req.headers {
            r = r.set(k, v);
        }
        let sent = match &req.body {
            Some(b) => r.send_string(b),
            None => r.call(),
        };
        match sent {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(code, _)) => Ok(code),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    match r {
        Ok(Ok(code)) if (200..300).contains(&code) => {
            (Status::Passing, format!("HTTP {method}: {code}"))
        }
        Ok(Ok(429)) => (Status::Warning, format!("HTTP {method}: 429")),
        Ok(Ok(code)) => (Status::Critical, format!("HTTP {method}: {code}")),
        Ok(Err(e)) => (Status::Critical, format!("HTTP {method}: {e}")),
        Err(e) => (Status::Critical, format!("check task failed: {e}")),
    }
}

pub(super) async fn tcp_check(addr: &str, timeout: Duration) -> (Status, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => (Status::Passing, format!("TCP connect {addr}: success")),
        Ok(Err(e)) => (Status::Critical, format!("TCP connect {addr}: {e}")),
        Err(_) => (Status::Critical, format!("TCP connect {addr}: timed out")),
    }
}

pub(super) async fn script_check(args: &[String], timeout: Duration) -> (Status, String) {
    let Some((prog, rest)) = args.split_first() else {
        return (Status::Critical, "no command".into());
    };
    let run = tokio::process::Command::new(prog)
        .args(rest)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(4096)
                .collect();
            let status = match out.status.code() {
                Some(0) => Status::Passing,
                Some(1) => Status::Warning,
                _ => Status::Critical,
            };
            (status, text)
        }
        Ok(Err(e)) => (Status::Critical, format!("cannot run {prog}: {e}")),
        Err(_) => (Status::Critical, format!("{prog} timed out")),
    }
}
