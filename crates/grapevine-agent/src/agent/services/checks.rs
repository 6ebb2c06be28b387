//! The health checks an agent runs itself: HTTP, TCP and script.

use super::Status;
use std::time::Duration;

pub(super) async fn http_check(url: String, timeout: Duration) -> (Status, String) {
    // ureq blocks: run it off the runtime, and reduce its error to a code or a message.
    let r = tokio::task::spawn_blocking(move || match ureq::get(&url).timeout(timeout).call() {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(code, _)) => Ok(code),
        Err(e) => Err(e.to_string()),
    })
    .await;
    match r {
        Ok(Ok(code)) if (200..300).contains(&code) => {
            (Status::Passing, format!("HTTP GET: {code}"))
        }
        Ok(Ok(429)) => (Status::Warning, "HTTP GET: 429".into()),
        Ok(Ok(code)) => (Status::Critical, format!("HTTP GET: {code}")),
        Ok(Err(e)) => (Status::Critical, format!("HTTP GET: {e}")),
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
