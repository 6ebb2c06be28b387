//! Bounded little-endian readers and writers: every length is checked before anything is allocated.

use super::DecodeError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A cursor over received bytes that never reads past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// An unsigned LEB128 integer of at most 32 bits.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..5 {
            let byte = self.u8(what)?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| DecodeError::VarintOverflow { what });
            }
        }
        Err(DecodeError::VarintOverflow { what })
    }

    /// A length prefix no larger than `max` nor than the bytes that remain.
    pub(crate) fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.varint(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                needed: len,
                available: self.remaining(),
            });
        }
        Ok(len)
    }

    /// An element count no larger than `max`, and small enough that `min_size` bytes per
    /// element could still follow: a hostile count cannot make us allocate.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.varint(what)? as usize;
        if count > max {
            return Err(DecodeError::TooMany { what, count, max });
        }
        if count.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                needed: count.saturating_mul(min_size.max(1)),
                available: self.remaining(),
            });
        }
        Ok(count)
    }

    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = self.len(what, max)?;
        let b = self.bytes(len, what)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    pub(crate) fn addr(&mut self, what: &'static str) -> Result<SocketAddr, DecodeError> {
        let family = self.u8(what)?;
        let ip = match family {
            4 => {
                let b = self.bytes(4, what)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b = self.bytes(16, what)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            other => {
                return Err(DecodeError::InvalidAddressFamily {
                    what,
                    family: other,
                })
            }
        };
        let port = self.u16(what)?;
        Ok(SocketAddr::new(ip, port))
    }
}

/// An append-only encoder into a growable buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn varint(&mut self, mut v: u32) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A length-prefixed byte string; callers bound `b` by the same limit the reader enforces.
    pub(crate) fn lp(&mut self, b: &[u8]) {
        self.varint(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(v4) => {
                self.u8(4);
                self.bytes(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.u8(6);
                self.bytes(&v6.octets());
            }
        }
        self.u16(a.port());
    }
}

/// A message body: how its protocol writes and reads it. Readers ignore trailing bytes, so a
/// newer sender may append fields.
pub(crate) trait Body: Sized {
    /// Appends the body.
    fn write(&self, w: &mut Writer);
    /// Reads a body, every length and count bounded before allocation.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}
