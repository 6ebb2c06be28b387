//! The bytes of a connection: the hello's address, and the two halves that write and read
//! frames, plain or sealed in records.

use super::*;

/// Encodes an address: family 4 or 6, address bytes, port BE.
pub(super) fn encode_addr(out: &mut Vec<u8>, addr: SocketAddr) {
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
}

/// Decodes an address; `None` if malformed. Returns it and the bytes it took.
pub(super) fn decode_addr(b: &[u8]) -> Option<(SocketAddr, usize)> {
    let (ip, n): (IpAddr, usize) = match *b.first()? {
        4 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(1..5)?).ok()?)),
            5,
        ),
        6 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(1..17)?).ok()?)),
            17,
        ),
        _ => return None,
    };
    let port = u16::from_be_bytes(<[u8; 2]>::try_from(b.get(n..n + 2)?).ok()?);
    Some((SocketAddr::new(ip, port), n + 2))
}

/// The writing side of a connection: a hello (once), then frames, sealed when encryption
/// is on.
pub(super) struct Writer {
    wr: OwnedWriteHalf,
    shared: Arc<Shared>,
    conn_id: [u8; 8],
    records: u32,
    hello_sent: bool,
}

impl Writer {
    pub(super) fn new(wr: OwnedWriteHalf, shared: Arc<Shared>) -> Self {
        Writer {
            wr,
            shared,
            conn_id: rand::random(),
            records: 0,
            hello_sent: false,
        }
    }

    pub(super) fn sealed(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let mut body = Vec::with_capacity(RECORD_HEADER + data.len());
        body.extend_from_slice(&self.conn_id);
        body.extend_from_slice(&self.records.to_be_bytes());
        body.push(if last { LAST } else { 0 });
        body.extend_from_slice(data);
        self.records = self.records.wrapping_add(1);
        let keyring = self
            .shared
            .keyring
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        let env = keyring.seal(&self.shared.label, &body, now_ms());
        let mut out = Vec::with_capacity(4 + env.len());
        out.extend_from_slice(&(env.len() as u32).to_be_bytes());
        out.extend_from_slice(&env);
        out
    }

    pub(super) async fn hello(&mut self) -> io::Result<()> {
        if self.hello_sent {
            return Ok(());
        }
        self.hello_sent = true;
        let mut out = MAGIC.to_vec();
        if self.shared.encrypted() {
            out.push(SEALED);
            let mut addr = Vec::new();
            encode_addr(&mut addr, self.shared.me);
            out.extend_from_slice(&self.sealed(&addr, true));
        } else {
            out.push(PLAIN);
            encode_addr(&mut out, self.shared.me);
        }
        self.wr.write_all(&out).await
    }

    pub(super) async fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.hello().await?;
        if !self.shared.encrypted() {
            let len = u32::try_from(frame.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
            self.wr.write_all(&len.to_be_bytes()).await?;
            return self.wr.write_all(frame).await;
        }
        let mut chunks = frame.chunks(RECORD_DATA).peekable();
        if chunks.peek().is_none() {
            let r = self.sealed(&[], true);
            return self.wr.write_all(&r).await;
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let r = self.sealed(c, last);
            self.wr.write_all(&r).await?;
        }
        Ok(())
    }
}

/// The reading side of a connection: the peer's hello, then frames within the limits.
pub(super) struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    pub(super) shared: Arc<Shared>,
    /// The connection's source IP (its budget).
    ip: IpAddr,
    /// The peer's connection id and next record count (sealed connections).
    peer_conn: Option<([u8; 8], u32)>,
    /// On a connection this node opened: the peer's hello is still to come (it precedes
    /// the peer's first frame).
    await_hello: bool,
}

/// One opened record: its data and whether it ends its frame.
pub(super) struct Record {
    data: Vec<u8>,
    last: bool,
}

impl Reader {
    pub(super) fn new(
        rd: OwnedReadHalf,
        shared: Arc<Shared>,
        ip: IpAddr,
        await_hello: bool,
    ) -> Self {
        Reader {
            rd,
            buf: BytesMut::new(),
            shared,
            ip,
            peer_conn: None,
            await_hello,
        }
    }

    pub(super) fn no_permit() -> Permit {
        Permit {
            _total: None,
            _source: None,
        }
    }

    /// Reads until `n` bytes are buffered (never more), each read within the read deadline
    /// and all by `until`.
    pub(super) async fn fill(
        &mut self,
        n: usize,
        until: tokio::time::Instant,
    ) -> Result<(), Refusal> {
        while self.buf.len() < n {
            let room = (n - self.buf.len()).min(READ_CHUNK);
            self.buf.reserve(room);
            let deadline = until.min(tokio::time::Instant::now() + self.shared.limits.read_timeout);
            let mut limited = (&mut self.rd).take(room as u64);
            let read = limited.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => return Err(Refusal::ReadTimeout),
                Ok(Err(_) | Ok(0)) => return Err(Refusal::Io),
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Takes budget for `n` more bytes, waiting at most the read deadline.
    pub(super) async fn budget(&self, n: usize, permits: &mut Permit) -> Result<(), Refusal> {
        let n = u32::try_from(n).map_err(|_| Refusal::Oversized)?;
        let wait = self.shared.limits.read_timeout;
        let total = tokio::time::timeout(wait, self.shared.budget.clone().acquire_many_owned(n))
            .await
            .map_err(|_| Refusal::Budget)?
            .map_err(|_| Refusal::Io)?;
        merge(&mut permits._total, total);
        if let Some(source) = self.shared.source_budget(self.ip) {
            let p = tokio::time::timeout(wait, source.acquire_many_owned(n))
                .await
                .map_err(|_| Refusal::Budget)?
                .map_err(|_| Refusal::Io)?;
            merge(&mut permits._source, p);
        }
        Ok(())
    }

    /// Reads the peer's hello within the handshake deadline; returns its address. With
    /// `check_ip`, a plain hello must name that IP.
    pub(super) async fn hello(&mut self, check_ip: Option<IpAddr>) -> Result<SocketAddr, Refusal> {
        let until = tokio::time::Instant::now() + self.shared.limits.handshake_timeout;
        let r = async {
            self.fill(4, until).await?;
            if self.buf[..3] != MAGIC {
                return Err(Refusal::BadHello);
            }
            let mode = self.buf[3];
            self.buf.advance(4);
            match (mode, self.shared.encrypted()) {
                (PLAIN, false) => {
                    self.fill(1, until).await?;
                    let need = match self.buf[0] {
                        4 => 7,
                        6 => 19,
                        _ => return Err(Refusal::BadHello),
                    };
                    self.fill(need, until).await?;
                    let (addr, n) = decode_addr(&self.buf).ok_or(Refusal::BadHello)?;
                    self.buf.advance(n);
                    if let Some(ip) = check_ip {
                        if canonical(addr.ip()) != canonical(ip) {
                            return Err(Refusal::HelloMismatch);
                        }
                    }
                    Ok(addr)
                }
                (SEALED, true) => {
                    // A hello is tiny: a larger record is refused before it is read.
                    let max = 64 + Keyring::overhead(&self.shared.label);
                    let rec = self.record(until, max, None).await?;
                    let (addr, _) = decode_addr(&rec.data).ok_or(Refusal::BadHello)?;
                    Ok(addr)
                }
                (PLAIN, true) => Err(Refusal::Unencrypted),
                (SEALED, false) => Err(Refusal::Encrypted),
                _ => Err(Refusal::BadHello),
            }
        };
        match tokio::time::timeout_at(until, r).await {
            Ok(Err(Refusal::ReadTimeout)) | Err(_) => Err(Refusal::HandshakeTimeout),
            Ok(r) => r,
        }
    }

    /// Reads one sealed record of at most `max` bytes (budgeted into `permit` before its
    /// body is read, when given), opens it, and checks its place in the stream: the first
    /// record of a connection (its hello) sets the connection id, every later one must
    /// carry it and the next count.
    pub(super) async fn record(
        &mut self,
        until: tokio::time::Instant,
        max: usize,
        permit: Option<&mut Permit>,
    ) -> Result<Record, Refusal> {
        self.fill(4, until).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > max {
            return Err(Refusal::Oversized);
        }
        if let Some(p) = permit {
            self.budget(len, p).await?;
        }
        self.fill(4 + len, until).await?;
        self.buf.advance(4);
        let env = self.buf.split_to(len);
        let keyring = self
            .shared
            .keyring
            .read()
            .map(|k| k.clone())
            .unwrap_or_default();
        let opened: Opened = keyring
            .open(&self.shared.label, &env)
            .map_err(Refusal::of)?;
        self.shared
            .replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&opened, now_ms())
            .map_err(Refusal::of)?;
        let mut data = opened.body;
        if data.len() < RECORD_HEADER {
            return Err(Refusal::Truncated);
        }
        let mut conn = [0u8; 8];
        conn.copy_from_slice(&data[..8]);
        let count = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        match self.peer_conn {
            None if count == 0 => self.peer_conn = Some((conn, 1)),
            Some((id, next)) if id == conn && next == count => {
                self.peer_conn = Some((id, next.wrapping_add(1)));
            }
            _ => return Err(Refusal::BadSequence),
        }
        let last = data[12] & LAST != 0;
        data.drain(..RECORD_HEADER);
        Ok(Record { data, last })
    }

    /// The next frame, within its type's limit and the budgets; `Ok(None)` when the
    /// connection has been idle past the limit, or closed cleanly between frames.
    pub(super) async fn frame(&mut self, idle: &Idle) -> Result<Option<Inbound>, Refusal> {
        loop {
            // Wait for the first bytes, for as long as the connection is in use either way.
            while self.buf.is_empty() {
                let wait = idle.left(self.shared.limits.idle_timeout);
                if wait.is_zero() {
                    return Ok(None);
                }
                self.buf.reserve(4);
                let mut limited = (&mut self.rd).take(4);
                match tokio::time::timeout(wait, limited.read_buf(&mut self.buf)).await {
                    Err(_) => continue,
                    Ok(Err(_)) => return Err(Refusal::Io),
                    Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(_)) => {}
                }
            }
            idle.touch();
            if !self.await_hello {
                break;
            }
            self.await_hello = false;
            // The peer answers on the connection this node opened: its hello first.
            self.hello(None).await?;
        }
        if self.shared.encrypted() {
            self.sealed_frame().await.map(Some)
        } else {
            self.plain_frame().await.map(Some)
        }
    }

    pub(super) async fn plain_frame(&mut self) -> Result<Inbound, Refusal> {
        let mut until = tokio::time::Instant::now() + self.shared.limits.read_timeout;
        self.fill(4, until).await?;
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > grapevine_core::wire::MAX_FRAME {
            return Err(Refusal::Oversized);
        }
        until += Duration::from_secs(len as u64 / MIN_FRAME_RATE);
        // The type's limit, from the frame's first bytes: version, label, type.
        self.fill(4 + len.min(2), until).await?;
        let head = match self.buf.get(5) {
            Some(&label) => len.min(2 + label as usize + 1),
            None => len,
        };
        self.fill(4 + head, until).await?;
        let limit = match grapevine_core::wire::peek_first_type(&self.buf[4..4 + head], len) {
            Ok(Some(Some(code))) => grapevine_core::wire::frame_limit(code),
            _ => grapevine_core::wire::MAX_FRAME,
        };
        if len > limit {
            return Err(Refusal::Oversized);
        }
        self.buf.advance(4);
        let mut permit = Self::no_permit();
        let mut frame = BytesMut::new();
        while frame.len() < len {
            let step = (len - frame.len()).min(READ_CHUNK);
            self.budget(step, &mut permit).await?;
            self.fill(step, until).await?;
            frame.extend_from_slice(&self.buf.split_to(step));
        }
        Ok(Inbound {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            frame: frame.freeze(),
            permit,
        })
    }

    pub(super) async fn sealed_frame(&mut self) -> Result<Inbound, Refusal> {
        let mut until = tokio::time::Instant::now() + self.shared.limits.read_timeout;
        let mut permit = Self::no_permit();
        let mut frame = BytesMut::new();
        let mut limit = grapevine_core::wire::MAX_FRAME;
        let max = RECORD_DATA + RECORD_HEADER + Keyring::overhead(&self.shared.label);
        loop {
            let rec = self.record(until, max, Some(&mut permit)).await?;
            if frame.is_empty() {
                if let Ok(Some(Some(code))) =
                    grapevine_core::wire::peek_first_type(&rec.data, usize::MAX)
                {
                    limit = grapevine_core::wire::frame_limit(code);
                }
            }
            if frame.len() + rec.data.len() > limit {
                return Err(Refusal::Oversized);
            }
            frame.extend_from_slice(&rec.data);
            until += Duration::from_secs(rec.data.len() as u64 / MIN_FRAME_RATE)
                + self.shared.limits.read_timeout / 8;
            if rec.last {
                break;
            }
        }
        Ok(Inbound {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            frame: frame.freeze(),
            permit,
        })
    }
}
