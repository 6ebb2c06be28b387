//! Packets: framed messages behind a version byte and a cluster label, sealed by a CRC-32.
//! See `docs/wire-format.md` for the byte layout. Messages are bytes here: what they mean
//! is their protocols' business (each protocol's `messages.rs`).

use super::codec::{Reader, Writer};
use super::codes::MessageType;
use bytes::Bytes;

/// The protocol version this build writes by default.
pub const PROTOCOL_VERSION: u8 = 1;
/// The oldest protocol version this build still reads and writes.
pub const PROTOCOL_VERSION_MIN: u8 = 1;
/// The longest cluster label, in bytes.
pub const MAX_LABEL_LEN: usize = 255;
/// Bytes a packet spends outside its messages, beside the label: version, label length, CRC.
pub const PACKET_OVERHEAD: usize = 1 + 1 + 4;

/// Why a packet or message was rejected. Every variant says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the smallest possible packet.
    #[error("packet of {len} bytes is shorter than the {min}-byte minimum")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Larger than this channel allows.
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol version this build does not speak.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u8),
    /// The CRC-32 does not match the contents.
    #[error("checksum mismatch: packet says {expected:#010x}, contents give {actual:#010x}")]
    BadChecksum {
        /// The checksum carried by the packet.
        expected: u32,
        /// The checksum of what arrived.
        actual: u32,
    },
    /// The packet belongs to another cluster.
    #[error("cluster label mismatch: got {got:?}")]
    WrongLabel {
        /// The label the packet carried (lossily decoded).
        got: String,
    },
    /// A field runs past the end of its container.
    #[error("{what} truncated: needs {needed} bytes, {available} remain")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A length prefix over its limit.
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length that is not a multiple of its unit.
    #[error("{what} is {len} bytes, not a multiple of {multiple}")]
    Misaligned {
        /// The field.
        what: &'static str,
        /// The length given.
        len: usize,
        /// The unit.
        multiple: usize,
    },
    /// A count over its limit.
    #[error("{what}: {count} items, the limit is {max}")]
    TooMany {
        /// The field.
        what: &'static str,
        /// The claimed count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A varint longer than 5 bytes or over 32 bits.
    #[error("{what}: varint overflows 32 bits")]
    VarintOverflow {
        /// The field.
        what: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A name that is empty or too long.
    #[error("{what} is not a valid member name")]
    InvalidName {
        /// The field.
        what: &'static str,
    },
    /// An address family other than 4 or 6.
    #[error("{what}: unknown address family {family}")]
    InvalidAddressFamily {
        /// The field.
        what: &'static str,
        /// The family byte.
        family: u8,
    },
    /// A shared-keyspace value type this build does not know.
    #[error("unknown value type {0}")]
    UnknownValueType(u8),
    /// A member state code this build does not know.
    #[error("unknown member state code {0}")]
    InvalidState(u8),
    /// More messages in one packet than allowed.
    #[error("packet holds more than {max} messages")]
    TooManyMessages {
        /// The limit.
        max: usize,
    },
}

impl DecodeError {
    /// A stable, low-cardinality reason for drop counters and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooShort { .. } | DecodeError::Truncated { .. } => "truncated",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::UnknownVersion(_) => "unknown_version",
            DecodeError::BadChecksum { .. } => "bad_checksum",
            DecodeError::WrongLabel { .. } => "wrong_label",
            _ => "malformed",
        }
    }
}

/// The most messages one packet may hold (a bound on per-packet work).
pub const MAX_MESSAGES_PER_PACKET: usize = 4096;

/// The type code of a packet's first message from the packet's first bytes: `Ok(None)`
/// while more bytes are needed (at most `2 + 255 + 1`), `Ok(Some(None))` for a packet
/// with no message.
pub fn peek_first_type(head: &[u8], total_len: usize) -> Result<Option<Option<u8>>, DecodeError> {
    let Some(&label_len) = head.get(1) else {
        return Ok(None);
    };
    let version = head[0];
    if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let at = 2 + label_len as usize;
    // Version, label, then the CRC: a packet this short holds no message.
    if total_len <= at + 4 {
        return Ok(Some(None));
    }
    Ok(head.get(at).map(|c| Some(*c)))
}

/// A message that can write itself framed: type code, length, body.
pub trait Framed {
    /// Appends the framed message to `out`.
    fn encode_into(&self, out: &mut Vec<u8>);
}

/// Builds one packet: header, then messages while they fit the byte budget, then the CRC.
pub struct PacketBuilder {
    buf: Vec<u8>,
    budget: usize,
    messages: usize,
}

impl PacketBuilder {
    /// Starts a packet for `label` at protocol `version` that must not exceed `budget` bytes.
    pub fn new(version: u8, label: &[u8], budget: usize) -> Self {
        let label = &label[..label.len().min(MAX_LABEL_LEN)];
        // Most packets are a ping or an ack of a few dozen bytes; a packet that fills up
        // with rumours grows. (A 1,400-byte buffer would be kept by every 40-byte ping.)
        let mut buf = Vec::with_capacity(budget.min(128));
        buf.push(version);
        buf.push(label.len() as u8);
        buf.extend_from_slice(label);
        PacketBuilder {
            buf,
            budget,
            messages: 0,
        }
    }

    /// Bytes still free for messages.
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.buf.len() + 4)
    }

    /// Number of messages added.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// Whether no message was added.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Appends an already framed message if it fits; returns whether it did.
    pub fn push_framed(&mut self, framed: &[u8]) -> bool {
        if framed.len() > self.remaining() || self.messages >= MAX_MESSAGES_PER_PACKET {
            return false;
        }
        self.buf.extend_from_slice(framed);
        self.messages += 1;
        true
    }

    /// Appends a message, whatever the budget (the first message of a packet must go).
    pub fn push_forced(&mut self, msg: &impl Framed) {
        msg.encode_into(&mut self.buf);
        self.messages += 1;
    }

    /// Seals the packet with its CRC-32.
    pub fn finish(mut self) -> Bytes {
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(self.buf)
    }
}

/// Writes a packet holding one message straight into a single buffer, for large frames
/// (anti-entropy entries): lengths and counts not known in advance are written as padded
/// 5-byte varints and filled in afterwards, so nothing is copied.
pub(crate) struct FrameWriter {
    pub w: Writer,
    len_at: usize,
    body_start: usize,
}

impl FrameWriter {
    pub fn new(version: u8, label: &[u8], kind: MessageType, capacity: usize) -> Self {
        let label = &label[..label.len().min(MAX_LABEL_LEN)];
        let mut w = Writer::with_capacity(capacity + label.len() + 16);
        w.u8(version);
        w.u8(label.len() as u8);
        w.bytes(label);
        w.u8(kind as u8);
        let len_at = w.buf.len();
        w.bytes(&[0; 5]);
        let body_start = w.buf.len();
        FrameWriter {
            w,
            len_at,
            body_start,
        }
    }

    /// Reserves a varint to be filled in with `patch`.
    pub fn placeholder(&mut self) -> usize {
        let at = self.w.buf.len();
        self.w.bytes(&[0; 5]);
        at
    }

    /// Fills a reserved varint (LEB128 padded to 5 bytes, which every reader accepts).
    pub fn patch(&mut self, at: usize, v: u32) {
        for i in 0..4 {
            self.w.buf[at + i] = ((v >> (7 * i)) & 0x7f) as u8 | 0x80;
        }
        self.w.buf[at + 4] = ((v >> 28) & 0x0f) as u8;
    }

    pub fn finish(mut self) -> Bytes {
        let len = (self.w.buf.len() - self.body_start) as u32;
        self.patch(self.len_at, len);
        let crc = crc32fast::hash(&self.w.buf);
        self.w.buf.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(self.w.buf)
    }
}

/// Encodes a whole packet of `messages`, ignoring the byte budget.
pub fn encode_packet<M: Framed>(version: u8, label: &[u8], messages: &[M]) -> Bytes {
    let mut b = PacketBuilder::new(version, label, usize::MAX);
    for m in messages {
        b.push_forced(m);
    }
    b.finish()
}

/// A checked packet: the version it was written in and its framed messages.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The protocol version of the packet.
    pub version: u8,
    body: &'a [u8],
}

/// One framed message of a packet, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    /// The type code (possibly one this build does not know).
    pub code: u8,
    /// The body bytes.
    pub body: &'a [u8],
}

/// Checks a packet's size, version, checksum and label, in that order, and returns its body.
pub fn open_packet<'a>(
    buf: &'a [u8],
    label: &[u8],
    max_len: usize,
) -> Result<Packet<'a>, DecodeError> {
    let min = PACKET_OVERHEAD;
    if buf.len() < min {
        return Err(DecodeError::TooShort {
            len: buf.len(),
            min,
        });
    }
    if buf.len() > max_len {
        return Err(DecodeError::Oversized {
            len: buf.len(),
            max: max_len,
        });
    }
    let version = buf[0];
    if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let (content, crc_bytes) = buf.split_at(buf.len() - 4);
    let expected = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let actual = crc32fast::hash(content);
    if expected != actual {
        return Err(DecodeError::BadChecksum { expected, actual });
    }
    let mut r = Reader::new(&content[1..]);
    let label_len = r.u8("label length")? as usize;
    let got = r.bytes(label_len, "label")?;
    if got != label {
        return Err(DecodeError::WrongLabel {
            got: String::from_utf8_lossy(got).into_owned(),
        });
    }
    let start = 2 + label_len;
    Ok(Packet {
        version,
        body: &content[start..],
    })
}

impl<'a> Packet<'a> {
    /// The framed messages of the body, in order; a malformed frame ends the sequence with
    /// its error.
    pub fn messages(&self) -> impl Iterator<Item = Result<RawMessage<'a>, DecodeError>> + 'a {
        let mut r = Reader::new(self.body);
        let mut count = 0usize;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || r.is_empty() {
                return None;
            }
            let next = if count >= MAX_MESSAGES_PER_PACKET {
                Err(DecodeError::TooManyMessages {
                    max: MAX_MESSAGES_PER_PACKET,
                })
            } else {
                (|| {
                    let code = r.u8("message type")?;
                    let len = r.len("message body", usize::MAX)?;
                    let body = r.bytes(len, "message body")?;
                    Ok(RawMessage { code, body })
                })()
            };
            count += 1;
            failed = next.is_err();
            Some(next)
        })
    }
}
