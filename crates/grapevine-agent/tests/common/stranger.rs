//! What a stranger does in the hostile suites: connect from 127.0.0.2, speak raw HTTP.

use grapevine_core::Name;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// A TCP connection from the stranger's address, 127.0.0.2.
pub fn stranger_tcp(dst: SocketAddr) -> Option<TcpStream> {
    // std cannot bind before connecting: tokio's socket can, in a small runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().ok()?;
        sock.bind("127.0.0.2:0".parse().ok()?).ok()?;
        let s = tokio::time::timeout(Duration::from_secs(2), sock.connect(dst))
            .await
            .ok()?
            .ok()?;
        s.into_std().ok()
    })
    .and_then(|s| {
        s.set_nonblocking(false).ok()?;
        Some(s)
    })
}

/// A UDP socket on the stranger's address.
pub fn stranger_udp() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 is loopback")
}

/// An HTTP request written by hand; the status code (0 if none came).
pub fn raw_http(addr: SocketAddr, request: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A PUT's status and body.
pub fn put_status(url: &str, body: &str) -> (u16, String) {
    match ureq::put(url)
        .timeout(Duration::from_secs(5))
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ----- 1. remote command execution, keys handed out, DNS rebinding ---------------------
