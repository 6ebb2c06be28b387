//! The reliable channel over TCP: each connection opens with a hello naming the sender's
//! advertised address (so frames are attributed to the member, not to an ephemeral port),
//! then carries frames as a u32 big-endian length and that many bytes. Connections are
//! one-way: a node writes on the connections it opened and reads on those it accepted.

use bytes::Bytes;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The first bytes of every connection: "GV" and the transport version.
const MAGIC: [u8; 3] = *b"GV\x01";

/// Why a connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer does not speak this transport.
    #[error("bad hello: expected magic {MAGIC:?}")]
    BadHello,
    /// A frame over the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Its announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No progress within the time allowed.
    #[error("timed out")]
    Timeout,
}

/// Encodes the hello: magic, then the address (family 4 or 6, address bytes, port BE).
pub fn hello(addr: SocketAddr) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Reads a hello from `s`.
pub async fn read_hello(s: &mut TcpStream) -> Result<SocketAddr, TransportError> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[..3] != MAGIC {
        return Err(TransportError::BadHello);
    }
    let ip = match head[3] {
        4 => {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        6 => {
            let mut b = [0u8; 16];
            s.read_exact(&mut b).await?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(TransportError::BadHello),
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// Reads frames from an accepted connection and hands them to the node, attributed to the
/// address its hello named. Ends at the first error, or after `idle` without a frame.
pub async fn read_frames(
    mut s: TcpStream,
    max: usize,
    idle: Duration,
    to_node: mpsc::Sender<(SocketAddr, Bytes)>,
) -> Result<(), TransportError> {
    let from = tokio::time::timeout(idle, read_hello(&mut s))
        .await
        .map_err(|_| TransportError::Timeout)??;
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(idle, s.read_exact(&mut len)).await {
            Err(_) => return Err(TransportError::Timeout),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => {
                r?;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            return Err(TransportError::Oversized { len, max });
        }
        let mut buf = vec![0u8; len];
        tokio::time::timeout(idle, s.read_exact(&mut buf))
            .await
            .map_err(|_| TransportError::Timeout)??;
        if to_node.send((from, Bytes::from(buf))).await.is_err() {
            return Ok(());
        }
    }
}

/// Connects to `dst` and writes the frames it is given, after a hello naming `me`. Ends when
/// the sender is dropped, after `idle` without a frame, or at the first error.
pub async fn write_frames(
    me: SocketAddr,
    dst: SocketAddr,
    connect_timeout: Duration,
    idle: Duration,
    mut frames: mpsc::Receiver<Bytes>,
) -> Result<(), TransportError> {
    let mut s = tokio::time::timeout(connect_timeout, TcpStream::connect(dst))
        .await
        .map_err(|_| TransportError::Timeout)??;
    s.set_nodelay(true)?;
    s.write_all(&hello(me)).await?;
    loop {
        let frame = match tokio::time::timeout(idle, frames.recv()).await {
            Err(_) | Ok(None) => return Ok(()),
            Ok(Some(f)) => f,
        };
        let len = u32::try_from(frame.len()).map_err(|_| TransportError::Oversized {
            len: frame.len(),
            max: u32::MAX as usize,
        })?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(&frame).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn frames_arrive_attributed_to_the_hello_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = listener.local_addr().unwrap();
        let me: SocketAddr = "[::1]:7946".parse().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            read_frames(s, 1024, Duration::from_secs(5), tx).await
        });
        let (ftx, frx) = mpsc::channel(8);
        tokio::spawn(write_frames(
            me,
            dst,
            Duration::from_secs(1),
            Duration::from_secs(5),
            frx,
        ));
        ftx.send(Bytes::from_static(b"hello")).await.unwrap();
        ftx.send(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), (me, Bytes::from_static(b"hello")));
        assert_eq!(rx.recv().await.unwrap(), (me, Bytes::from_static(b"world")));
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = listener.local_addr().unwrap();
        let (tx, _rx) = mpsc::channel(8);
        let reader = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            read_frames(s, 4, Duration::from_secs(5), tx).await
        });
        let mut s = TcpStream::connect(dst).await.unwrap();
        s.write_all(&hello("127.0.0.1:1".parse().unwrap()))
            .await
            .unwrap();
        s.write_all(&100u32.to_be_bytes()).await.unwrap();
        let r = reader.await.unwrap();
        assert!(matches!(
            r,
            Err(TransportError::Oversized { len: 100, max: 4 })
        ));
    }
}
