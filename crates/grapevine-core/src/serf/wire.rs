//! memberlist's wire format: one type byte and a msgpack body per message; compound
//! packets, an optional CRC, LZW compression and AES-GCM encryption around them; and the
//! push-pull stream over TCP. Everything is bounded: counts against bytes, decompression
//! against a cap, nesting against a depth.

use super::msgpack::{decode, decode_all, Enc, Mp, MpError};
use super::security::{self, Keyring, SecurityError};
use thiserror::Error;

/// memberlist's message types.
#[allow(missing_docs)]
pub mod code {
    pub const PING: u8 = 0;
    pub const INDIRECT_PING: u8 = 1;
    pub const ACK: u8 = 2;
    pub const SUSPECT: u8 = 3;
    pub const ALIVE: u8 = 4;
    pub const DEAD: u8 = 5;
    pub const PUSH_PULL: u8 = 6;
    pub const COMPOUND: u8 = 7;
    pub const USER: u8 = 8;
    pub const COMPRESS: u8 = 9;
    pub const ENCRYPT: u8 = 10;
    pub const NACK: u8 = 11;
    pub const HAS_CRC: u8 = 12;
    pub const ERR: u8 = 13;
}

/// The most a compressed payload may expand to in a datagram (memberlist's are ≤ 64 KiB).
pub const MAX_PACKET_PLAIN: usize = 256 * 1024;
/// Compound and compressed wrappers nested deeper than this are refused.
const MAX_NESTING: usize = 4;

/// Why a packet or stream was dropped: each is counted by its `reason`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Empty input.
    #[error("empty message")]
    Empty,
    /// A message type memberlist does not define, or one not allowed here.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The msgpack body did not decode.
    #[error("bad body: {0}")]
    Body(#[from] MpError),
    /// The CRC did not match.
    #[error("checksum mismatch")]
    Crc,
    /// A compound message's lengths run past its end.
    #[error("truncated compound message")]
    Compound,
    /// LZW data that is invalid or expands past the cap.
    #[error("bad compressed payload")]
    Compression,
    /// Wrappers nested too deep.
    #[error("wrappers nested too deep")]
    Nesting,
    /// Encryption failed or was missing.
    #[error("encryption: {0}")]
    Security(#[from] SecurityError),
    /// Plaintext arrived where a key is configured.
    #[error("plaintext where encryption is required")]
    Plaintext,
    /// Encrypted data arrived where no key is configured.
    #[error("encrypted data but no key is configured")]
    NoKeyring,
    /// A stream longer than the limit.
    #[error("stream state over the limit")]
    TooLarge,
}

impl WireError {
    /// A short, stable name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Empty => "empty",
            WireError::UnknownType(_) => "unknown_type",
            WireError::Body(_) => "malformed",
            WireError::Crc => "crc",
            WireError::Compound => "compound",
            WireError::Compression => "compression",
            WireError::Nesting => "nesting",
            WireError::Security(SecurityError::NoKey) => "wrong_key",
            WireError::Security(_) => "decrypt",
            WireError::Plaintext => "plaintext",
            WireError::NoKeyring => "unexpected_encryption",
            WireError::TooLarge => "too_large",
        }
    }
}

/// A ping: `node` is the target's name, so a restarted agent with a new name can tell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ping {
    /// Sequence number the ack echoes.
    pub seq: u32,
    /// The intended target.
    pub node: String,
    /// Where to answer (memberlist ≥ 0.1.6).
    pub source_addr: Vec<u8>,
    /// Where to answer.
    pub source_port: u16,
    /// Who asks.
    pub source_node: String,
}

/// A request to ping `target` on the sender's behalf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndirectPing {
    /// Sequence number the ack and nack echo.
    pub seq: u32,
    /// The target's IP.
    pub target: Vec<u8>,
    /// The target's port.
    pub port: u16,
    /// The target's name.
    pub node: String,
    /// Whether the sender wants a nack if the target stays silent.
    pub nack: bool,
    /// Where to answer.
    pub source_addr: Vec<u8>,
    /// Where to answer.
    pub source_port: u16,
    /// Who asks.
    pub source_node: String,
}

/// A state claim about a member: alive (with its address, meta and versions), suspect
/// or dead.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alive {
    /// The claim's incarnation.
    pub incarnation: u32,
    /// Whose.
    pub node: String,
    /// Its IP (4 or 16 bytes).
    pub addr: Vec<u8>,
    /// Its port.
    pub port: u16,
    /// Its meta (Serf's tags).
    pub meta: Vec<u8>,
    /// pmin, pmax, pcur, dmin, dmax, dcur.
    pub vsn: Vec<u8>,
}

/// `suspect` and `dead` share a shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accuse {
    /// The incarnation accused.
    pub incarnation: u32,
    /// The accused.
    pub node: String,
    /// The accuser (for dead: the node itself when it leaves).
    pub from: String,
}

/// A member's state as push-pull carries it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushNode {
    /// Name.
    pub name: String,
    /// IP.
    pub addr: Vec<u8>,
    /// Port.
    pub port: u16,
    /// Meta.
    pub meta: Vec<u8>,
    /// Incarnation.
    pub incarnation: u32,
    /// 0 alive, 1 suspect, 2 dead, 3 left.
    pub state: u8,
    /// Versions.
    pub vsn: Vec<u8>,
}

/// One memberlist message.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// Direct probe.
    Ping(Ping),
    /// Probe on another's behalf.
    IndirectPing(IndirectPing),
    /// Answer to a ping, with the delegate's payload.
    Ack {
        /// Sequence.
        seq: u32,
        /// Payload (Serf's coordinates).
        payload: Vec<u8>,
    },
    /// An indirect probe that went unanswered.
    Nack {
        /// Sequence.
        seq: u32,
    },
    /// Suspicion.
    Suspect(Accuse),
    /// Liveness (and join, and refutation, and meta updates).
    Alive(Alive),
    /// Death (or, from the node itself, leave).
    Dead(Accuse),
    /// A delegate's (Serf's) message.
    User(Vec<u8>),
    /// An error from the other end of a stream.
    Err(String),
}

fn ping_body(v: &Mp) -> Result<Ping, MpError> {
    Ok(Ping {
        seq: v.u32("SeqNo")?,
        node: v.string("Node")?,
        source_addr: v.bytes("SourceAddr")?,
        source_port: v.u16("SourcePort")?,
        source_node: v.string("SourceNode")?,
    })
}

fn accuse_body(v: &Mp) -> Result<Accuse, MpError> {
    Ok(Accuse {
        incarnation: v.u32("Incarnation")?,
        node: v.string("Node")?,
        from: v.string("From")?,
    })
}

impl Msg {
    /// Decodes one message (type byte and body); wrappers are not messages.
    pub fn decode(buf: &[u8]) -> Result<Msg, WireError> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        if t == code::USER {
            return Ok(Msg::User(body.to_vec()));
        }
        let v = decode_all(body)?;
        Ok(match t {
            code::PING => Msg::Ping(ping_body(&v)?),
            code::INDIRECT_PING => Msg::IndirectPing(IndirectPing {
                seq: v.u32("SeqNo")?,
                target: v.bytes("Target")?,
                port: v.u16("Port")?,
                node: v.string("Node")?,
                nack: v.boolean("Nack")?,
                source_addr: v.bytes("SourceAddr")?,
                source_port: v.u16("SourcePort")?,
                source_node: v.string("SourceNode")?,
            }),
            code::ACK => Msg::Ack {
                seq: v.u32("SeqNo")?,
                payload: v.bytes("Payload")?,
            },
            code::NACK => Msg::Nack {
                seq: v.u32("SeqNo")?,
            },
            code::SUSPECT => Msg::Suspect(accuse_body(&v)?),
            code::DEAD => Msg::Dead(accuse_body(&v)?),
            code::ALIVE => Msg::Alive(Alive {
                incarnation: v.u32("Incarnation")?,
                node: v.string("Node")?,
                addr: v.bytes("Addr")?,
                port: v.u16("Port")?,
                meta: v.bytes("Meta")?,
                vsn: v.small_uints("Vsn")?,
            }),
            code::ERR => Msg::Err(v.string("Error")?),
            other => return Err(WireError::UnknownType(other)),
        })
    }

    /// Encodes the message as memberlist does.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            Msg::Ping(p) => {
                e.buf.push(code::PING);
                e.map(5)
                    .key("SeqNo")
                    .uint(p.seq.into())
                    .key("Node")
                    .str(&p.node)
                    .key("SourceAddr")
                    .raw(&p.source_addr)
                    .key("SourcePort")
                    .uint(p.source_port.into())
                    .key("SourceNode")
                    .str(&p.source_node);
            }
            Msg::IndirectPing(p) => {
                e.buf.push(code::INDIRECT_PING);
                e.map(8)
                    .key("SeqNo")
                    .uint(p.seq.into())
                    .key("Target")
                    .raw(&p.target)
                    .key("Port")
                    .uint(p.port.into())
                    .key("Node")
                    .str(&p.node)
                    .key("Nack")
                    .boolean(p.nack)
                    .key("SourceAddr")
                    .raw(&p.source_addr)
                    .key("SourcePort")
                    .uint(p.source_port.into())
                    .key("SourceNode")
                    .str(&p.source_node);
            }
            Msg::Ack { seq, payload } => {
                e.buf.push(code::ACK);
                e.map(2).key("SeqNo").uint((*seq).into()).key("Payload");
                if payload.is_empty() {
                    e.nil();
                } else {
                    e.raw(payload);
                }
            }
            Msg::Nack { seq } => {
                e.buf.push(code::NACK);
                e.map(1).key("SeqNo").uint((*seq).into());
            }
            Msg::Suspect(a) | Msg::Dead(a) => {
                e.buf.push(if matches!(self, Msg::Suspect(_)) {
                    code::SUSPECT
                } else {
                    code::DEAD
                });
                e.map(3)
                    .key("Incarnation")
                    .uint(a.incarnation.into())
                    .key("Node")
                    .str(&a.node)
                    .key("From")
                    .str(&a.from);
            }
            Msg::Alive(a) => {
                e.buf.push(code::ALIVE);
                e.map(6)
                    .key("Incarnation")
                    .uint(a.incarnation.into())
                    .key("Node")
                    .str(&a.node)
                    .key("Addr")
                    .raw(&a.addr)
                    .key("Port")
                    .uint(a.port.into())
                    .key("Meta")
                    .raw(&a.meta)
                    .key("Vsn")
                    .raw(&a.vsn);
            }
            Msg::User(b) => {
                e.buf.push(code::USER);
                e.buf.extend_from_slice(b);
            }
            Msg::Err(s) => {
                e.buf.push(code::ERR);
                e.map(1).key("Error").str(s);
            }
        }
        e.buf
    }
}

/// Joins messages into one compound message (at most 255, each under 64 KiB).
pub fn compound(msgs: &[Vec<u8>]) -> Vec<u8> {
    let n = msgs.len().min(255);
    let mut out = Vec::with_capacity(2 + 2 * n + msgs.iter().map(Vec::len).sum::<usize>());
    out.push(code::COMPOUND);
    out.push(n as u8);
    for m in &msgs[..n] {
        out.extend_from_slice(&(m.len().min(0xffff) as u16).to_be_bytes());
    }
    for m in &msgs[..n] {
        out.extend_from_slice(&m[..m.len().min(0xffff)]);
    }
    out
}

/// LZW-compresses `plain` as memberlist's `compress` message.
pub fn compress(plain: &[u8]) -> Vec<u8> {
    let mut enc = weezl::encode::Encoder::new(weezl::BitOrder::Lsb, 8);
    let data = enc.encode(plain).unwrap_or_default();
    let mut e = Enc::new(vec![code::COMPRESS]);
    e.map(2).key("Algo").uint(0).key("Buf").raw(&data);
    e.buf
}

/// Decompresses a `compress` body, refusing more than `cap` bytes of output.
fn decompress(body: &Mp, cap: usize) -> Result<Vec<u8>, WireError> {
    if body.uint("Algo")? != 0 {
        return Err(WireError::Compression);
    }
    let data = body.bytes("Buf")?;
    let mut dec = weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut input = &data[..];
    loop {
        let r = dec.decode_bytes(input, &mut chunk);
        input = &input[r.consumed_in..];
        if out.len() + r.consumed_out > cap {
            return Err(WireError::Compression);
        }
        out.extend_from_slice(&chunk[..r.consumed_out]);
        match r.status {
            Ok(weezl::LzwStatus::Done) => return Ok(out),
            // Go's writer ends with an end code; a stream that stops without one is
            // accepted, as Go's reader accepts it at EOF.
            Ok(weezl::LzwStatus::NoProgress) => return Ok(out),
            Ok(weezl::LzwStatus::Ok) if input.is_empty() && r.consumed_out == 0 => return Ok(out),
            Ok(weezl::LzwStatus::Ok) => {}
            Err(_) => return Err(WireError::Compression),
        }
    }
}

/// Opens a datagram: decrypts (if a ring is given), checks the CRC, and unwraps compound
/// and compressed messages into the messages they hold. Messages that fail to decode are
/// returned as errors beside the good ones, as memberlist handles each part alone.
pub fn open_packet(
    buf: &[u8],
    ring: Option<&Keyring>,
) -> Result<Vec<Result<Msg, WireError>>, WireError> {
    let plain;
    let mut buf = buf;
    if let Some(ring) = ring {
        plain = security::decrypt(ring.keys(), buf, &[]).map_err(|e| match buf.first() {
            Some(0 | 1) => WireError::Security(e),
            _ => WireError::Plaintext,
        })?;
        buf = &plain;
    }
    if buf.len() >= 5 && buf[0] == code::HAS_CRC {
        let want = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if crc32fast::hash(&buf[5..]) != want {
            return Err(WireError::Crc);
        }
        buf = &buf[5..];
    }
    let mut out = Vec::new();
    unwrap_into(buf, 0, &mut out)?;
    Ok(out)
}

fn unwrap_into(
    buf: &[u8],
    depth: usize,
    out: &mut Vec<Result<Msg, WireError>>,
) -> Result<(), WireError> {
    if depth > MAX_NESTING {
        return Err(WireError::Nesting);
    }
    let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
    match t {
        code::COMPOUND => {
            let (&n, rest) = body.split_first().ok_or(WireError::Compound)?;
            let n = usize::from(n);
            if rest.len() < 2 * n {
                return Err(WireError::Compound);
            }
            let (lens, mut data) = rest.split_at(2 * n);
            for l in lens.chunks_exact(2) {
                let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
                if data.len() < l {
                    // memberlist keeps the whole parts and logs the truncated rest.
                    out.push(Err(WireError::Compound));
                    break;
                }
                let (part, tail) = data.split_at(l);
                data = tail;
                if let Err(e) = unwrap_into(part, depth + 1, out) {
                    out.push(Err(e));
                }
            }
            Ok(())
        }
        code::COMPRESS => {
            let v = decode_all(body)?;
            let plain = decompress(&v, MAX_PACKET_PLAIN)?;
            unwrap_into(&plain, depth + 1, out)
        }
        _ => {
            out.push(Msg::decode(buf));
            Ok(())
        }
    }
}

/// Seals a datagram: compresses if that makes it smaller, then encrypts with the
/// primary key if a ring is given.
pub fn seal_packet(
    msg: Vec<u8>,
    compress_it: bool,
    ring: Option<&Keyring>,
    version: u8,
    nonce: [u8; 12],
) -> Vec<u8> {
    let mut msg = msg;
    if compress_it {
        let c = compress(&msg);
        if c.len() < msg.len() {
            msg = c;
        }
    }
    match ring.and_then(Keyring::primary) {
        Some(key) => security::encrypt(version, key, nonce, &msg, &[]),
        None => msg,
    }
}

/// What one stream (a TCP connection's first message) carries.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamMsg {
    /// A push-pull exchange's state.
    PushPull {
        /// Whether the sender is joining.
        join: bool,
        /// Its members.
        nodes: Vec<PushNode>,
        /// Its delegate's (Serf's) state.
        user: Vec<u8>,
    },
    /// Any other message (the TCP ping and its ack, a user message, an error).
    Msg(Msg),
}

fn push_node(v: &Mp) -> Result<PushNode, MpError> {
    Ok(PushNode {
        name: v.string("Name")?,
        addr: v.bytes("Addr")?,
        port: v.u16("Port")?,
        meta: v.bytes("Meta")?,
        incarnation: v.u32("Incarnation")?,
        state: v.u8("State")?,
        vsn: v.small_uints("Vsn")?,
    })
}

/// Reads one stream message from the front of `buf`: `Ok(None)` until it is all there.
/// `limit` bounds the bytes it may claim; a ring, if given, is required.
pub fn read_stream(
    buf: &[u8],
    ring: Option<&Keyring>,
    limit: usize,
) -> Result<Option<(StreamMsg, usize)>, WireError> {
    let Some(&t) = buf.first() else {
        return Ok(None);
    };
    if t == code::ENCRYPT {
        let Some(ring) = ring else {
            return Err(WireError::NoKeyring);
        };
        if buf.len() < 5 {
            return Ok(None);
        }
        let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if n > limit {
            return Err(WireError::TooLarge);
        }
        if buf.len() < 5 + n {
            return Ok(None);
        }
        let plain = security::decrypt(ring.keys(), &buf[5..5 + n], &buf[..5])?;
        return match read_plain(&plain, limit, 0)? {
            Some((m, _)) => Ok(Some((m, 5 + n))),
            None => Err(WireError::Body(MpError::Incomplete)),
        };
    }
    if ring.is_some() {
        return Err(WireError::Plaintext);
    }
    if buf.len() > limit {
        return Err(WireError::TooLarge);
    }
    read_plain(buf, limit, 0)
}

fn incomplete<T>(r: Result<T, MpError>) -> Result<Option<T>, WireError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MpError::Incomplete) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_plain(
    buf: &[u8],
    limit: usize,
    depth: usize,
) -> Result<Option<(StreamMsg, usize)>, WireError> {
    if depth > 1 {
        return Err(WireError::Nesting);
    }
    let Some((&t, body)) = buf.split_first() else {
        return Ok(None);
    };
    match t {
        code::COMPRESS => {
            let Some((v, used)) = incomplete(decode(body))? else {
                return Ok(None);
            };
            let plain = decompress(&v, limit)?;
            match read_plain(&plain, limit, depth + 1)? {
                Some((m, _)) => Ok(Some((m, 1 + used))),
                None => Err(WireError::Body(MpError::Incomplete)),
            }
        }
        code::PUSH_PULL => {
            let Some((h, mut pos)) = incomplete(decode(body))? else {
                return Ok(None);
            };
            let count =
                usize::try_from(h.int("Nodes")?).map_err(|_| MpError::Malformed("count"))?;
            let user = usize::try_from(h.int("UserStateLen")?)
                .map_err(|_| MpError::Malformed("length"))?;
            if count > limit || user > limit {
                return Err(WireError::TooLarge);
            }
            let mut nodes = Vec::with_capacity(count.min(body.len() - pos));
            for _ in 0..count {
                let Some((v, used)) = incomplete(decode(&body[pos..]))? else {
                    return Ok(None);
                };
                nodes.push(push_node(&v)?);
                pos += used;
            }
            if body.len() < pos + user {
                return Ok(None);
            }
            let user_state = body[pos..pos + user].to_vec();
            Ok(Some((
                StreamMsg::PushPull {
                    join: h.boolean("Join")?,
                    nodes,
                    user: user_state,
                },
                1 + pos + user,
            )))
        }
        code::USER => {
            let Some((h, pos)) = incomplete(decode(body))? else {
                return Ok(None);
            };
            let n =
                usize::try_from(h.int("UserMsgLen")?).map_err(|_| MpError::Malformed("length"))?;
            if n > limit {
                return Err(WireError::TooLarge);
            }
            if body.len() < pos + n {
                return Ok(None);
            }
            Ok(Some((
                StreamMsg::Msg(Msg::User(body[pos..pos + n].to_vec())),
                1 + pos + n,
            )))
        }
        code::PING | code::ACK | code::ERR => {
            let Some((_, used)) = incomplete(decode(body))? else {
                return Ok(None);
            };
            Ok(Some((
                StreamMsg::Msg(Msg::decode(&buf[..1 + used])?),
                1 + used,
            )))
        }
        other => Err(WireError::UnknownType(other)),
    }
}

/// Encodes a push-pull state as memberlist streams it (before compression and encryption).
pub fn push_pull(join: bool, nodes: &[PushNode], user: &[u8]) -> Vec<u8> {
    let mut e = Enc::new(vec![code::PUSH_PULL]);
    e.map(3)
        .key("Nodes")
        .uint(nodes.len() as u64)
        .key("UserStateLen")
        .uint(user.len() as u64)
        .key("Join")
        .boolean(join);
    for n in nodes {
        e.map(7)
            .key("Name")
            .str(&n.name)
            .key("Addr")
            .raw(&n.addr)
            .key("Port")
            .uint(n.port.into())
            .key("Meta")
            .raw(&n.meta)
            .key("Incarnation")
            .uint(n.incarnation.into())
            .key("State")
            .uint(n.state.into())
            .key("Vsn")
            .raw(&n.vsn);
    }
    e.buf.extend_from_slice(user);
    e.buf
}

/// Wraps a stream message as memberlist sends it: compressed if asked, then encrypted
/// with a length header if a ring is given.
pub fn seal_stream(
    msg: Vec<u8>,
    compress_it: bool,
    ring: Option<&Keyring>,
    version: u8,
    nonce: [u8; 12],
) -> Vec<u8> {
    let msg = if compress_it { compress(&msg) } else { msg };
    match ring.and_then(Keyring::primary) {
        Some(key) => {
            let n = security::encrypted_len(version, msg.len()) as u32;
            let mut head = vec![code::ENCRYPT];
            head.extend_from_slice(&n.to_be_bytes());
            let ct = security::encrypt(version, key, nonce, &msg, &head);
            head.extend_from_slice(&ct);
            head
        }
        None => msg,
    }
}

/// How many bytes at the front of `buf` make one stream message, without any key (an
/// encrypted one says its length): `Ok(None)` until they are all there.
pub fn frame_len(buf: &[u8], limit: usize) -> Result<Option<usize>, WireError> {
    match buf.first() {
        None => Ok(None),
        Some(&code::ENCRYPT) => {
            if buf.len() < 5 {
                return Ok(None);
            }
            let n = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if n > limit {
                return Err(WireError::TooLarge);
            }
            Ok((buf.len() >= 5 + n).then_some(5 + n))
        }
        Some(_) => {
            if buf.len() > limit {
                return Err(WireError::TooLarge);
            }
            Ok(read_plain(buf, limit, 0)?.map(|(_, n)| n))
        }
    }
}
