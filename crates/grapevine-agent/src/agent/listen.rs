//! Serving the HTTP API within bounds: connections in all and per client address, a TLS
//! handshake deadline, a deadline for a request's headers (slowloris) and for its body, and
//! TLS (rustls) with optional client certificates. Refusals are counted and logged at most
//! once a minute per reason.

use anyhow::{anyhow, Context, Result};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Bounds on the HTTP API's connections.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_conns: usize,
    /// Connections open at once from one client address (Consul's
    /// `http_max_conns_per_client`).
    pub max_conns_per_client: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a request's headers may take to arrive (also how long a kept-alive
    /// connection may wait for its next request).
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
}

impl Default for Limits {
    /// 256 connections, 128 from one client (Consul allows 200 per client; with the gossip
    /// channel's 384 and DNS's 32 this keeps the agent under the common 1,024-descriptor
    /// limit), 5 s for a TLS handshake (Consul's `https_handshake_timeout`), 10 s for a
    /// request's headers and 30 s for its body: a slow client is dropped long before a
    /// thousand of them could hold the API.
    fn default() -> Self {
        Limits {
            max_conns: 256,
            max_conns_per_client: 128,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// TLS settings: a certificate chain and key, and optionally a CA to verify clients by.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates clients are verified against, if any.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (Consul's `verify_incoming`); needs `client_ca`.
    pub require_client_cert: bool,
}

impl Tls {
    /// The rustls server configuration.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading the certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing the certificate {}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(anyhow!("no certificate in {}", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading the private key {}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("reading the client CA {}", ca.display()))?
                {
                    roots
                        .add(c.with_context(|| format!("parsing the client CA {}", ca.display()))?)
                        .context("adding the client CA")?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let v = if self.require_client_cert {
                    v.build()
                } else {
                    v.allow_unauthenticated().build()
                }
                .context("the client certificate verifier")?;
                builder.with_client_cert_verifier(v)
            }
            None if self.require_client_cert => {
                return Err(anyhow!(
                    "requiring client certificates needs a CA to verify them (tls_client_ca)"
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .context("the certificate and key do not go together")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Refusals of the HTTP listener, by reason.
#[derive(Debug, Default)]
pub struct Counters {
    /// Over `max_conns`.
    pub too_many: AtomicU64,
    /// Over `max_conns_per_client`.
    pub too_many_from_client: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
}

/// One connection's place in the counts.
struct Slot {
    per: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    counters: Arc<Counters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        let mut per = self.per.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

fn refuse(reason: &'static str, peer: SocketAddr) {
    metrics::counter!(grapevine::metrics::DROPPED, "layer" => "http", "reason" => reason)
        .increment(1);
    log_refusal(reason, peer);
}

/// The first refusal of a reason at warn, then one line a minute with the count.
fn log_refusal(reason: &'static str, peer: SocketAddr) {
    use std::time::Instant;
    static SEEN: Mutex<Vec<(&str, Instant, u64)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    match seen.iter_mut().find(|(r, _, _)| *r == reason) {
        None => {
            seen.push((reason, Instant::now(), 0));
            tracing::warn!(%peer, reason, "HTTP connection refused (further ones are summed once a minute)");
        }
        Some((_, last, n)) => {
            *n += 1;
            if last.elapsed() >= Duration::from_secs(60) {
                tracing::warn!(%peer, reason, since_last = *n, "HTTP connections refused");
                *last = Instant::now();
                *n = 0;
            }
        }
    }
}

/// Serves `app` on `listener` within `limits`, over TLS if `tls` is given, until the task
/// is aborted.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    counters: Arc<Counters>,
) {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let per: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if counters.open.load(Ordering::Relaxed) >= limits.max_conns {
            counters.too_many.fetch_add(1, Ordering::Relaxed);
            refuse("too_many_connections", peer);
            continue;
        }
        let ip = peer.ip();
        {
            let mut p = per.lock().unwrap_or_else(|e| e.into_inner());
            let n = p.entry(ip).or_insert(0);
            if *n >= limits.max_conns_per_client {
                counters
                    .too_many_from_client
                    .fetch_add(1, Ordering::Relaxed);
                drop(p);
                refuse("too_many_from_client", peer);
                continue;
            }
            *n += 1;
        }
        counters.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            per: per.clone(),
            ip,
            counters: counters.clone(),
        };
        let (app, acceptor, limits, counters) = (
            app.clone(),
            acceptor.clone(),
            limits.clone(),
            counters.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(app);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let result = match acceptor {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        limits.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            counters.tls.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            refuse("tls_handshake", peer);
                            return;
                        }
                        Err(_) => {
                            counters.tls.fetch_add(1, Ordering::Relaxed);
                            refuse("tls_handshake_timeout", peer);
                            return;
                        }
                    };
                    http.serve_connection(TokioIo::new(tls), service).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
