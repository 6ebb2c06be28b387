//! MessagePack as HashiCorp's Go codec writes it: structs as maps keyed by field name,
//! strings and byte slices both as the legacy "raw" type. Decoding is bounded: every count
//! is checked against the bytes left before anything is allocated, and nesting is capped.

use thiserror::Error;

/// Nesting deeper than this is refused (memberlist's and Serf's messages nest three deep).
const MAX_DEPTH: usize = 16;

/// Why bytes did not decode.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MpError {
    /// The value runs past the end of the bytes (a stream may still bring the rest).
    #[error("truncated msgpack")]
    Incomplete,
    /// The bytes are not a value we accept.
    #[error("malformed msgpack: {0}")]
    Malformed(&'static str),
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Mp {
    /// nil (Go's nil slice, map or pointer).
    Nil,
    /// A boolean.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// A float (32 or 64 bits).
    Float(f64),
    /// A string, raw or binary value: Go's codec does not tell them apart.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Mp>),
    /// A map, in wire order.
    Map(Vec<(Mp, Mp)>),
}

impl Mp {
    /// The value of a struct's field, if this is a map that has it.
    pub fn field(&self, name: &str) -> Option<&Mp> {
        match self {
            Mp::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Mp::Bytes(b) if b == name.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// An unsigned integer field; absent or nil reads as Go's zero value.
    pub fn uint(&self, name: &str) -> Result<u64, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(0),
            Some(Mp::Uint(v)) => Ok(*v),
            Some(_) => Err(MpError::Malformed("expected an unsigned integer")),
        }
    }

    /// A signed integer field (Go's int and time.Duration).
    pub fn int(&self, name: &str) -> Result<i64, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(0),
            Some(Mp::Uint(v)) => i64::try_from(*v).map_err(|_| MpError::Malformed("int range")),
            Some(Mp::Int(v)) => Ok(*v),
            Some(_) => Err(MpError::Malformed("expected an integer")),
        }
    }

    /// A field that must fit a u32.
    pub fn u32(&self, name: &str) -> Result<u32, MpError> {
        u32::try_from(self.uint(name)?).map_err(|_| MpError::Malformed("u32 range"))
    }

    /// A field that must fit a u16.
    pub fn u16(&self, name: &str) -> Result<u16, MpError> {
        u16::try_from(self.uint(name)?).map_err(|_| MpError::Malformed("u16 range"))
    }

    /// A field that must fit a u8.
    pub fn u8(&self, name: &str) -> Result<u8, MpError> {
        u8::try_from(self.uint(name)?).map_err(|_| MpError::Malformed("u8 range"))
    }

    /// A boolean field.
    pub fn boolean(&self, name: &str) -> Result<bool, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(false),
            Some(Mp::Bool(b)) => Ok(*b),
            Some(_) => Err(MpError::Malformed("expected a boolean")),
        }
    }

    /// A byte-slice field.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(Vec::new()),
            Some(v) => v.as_bytes().map(<[u8]>::to_vec),
        }
    }

    /// A string field (UTF-8 required).
    pub fn string(&self, name: &str) -> Result<String, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(String::new()),
            Some(v) => v.as_string(),
        }
    }

    /// An array field's items (nil reads as empty).
    pub fn array(&self, name: &str) -> Result<&[Mp], MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(&[]),
            Some(Mp::Array(items)) => Ok(items),
            // Go's codec writes a []uint8 as raw bytes; callers that want numbers use
            // `small_uints`.
            Some(_) => Err(MpError::Malformed("expected an array")),
        }
    }

    /// A `[]uint8` field, which Go's codec writes as raw bytes (or, from other encoders,
    /// as an array of integers).
    pub fn small_uints(&self, name: &str) -> Result<Vec<u8>, MpError> {
        match self.field(name) {
            None | Some(Mp::Nil) => Ok(Vec::new()),
            Some(Mp::Bytes(b)) => Ok(b.clone()),
            Some(Mp::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Mp::Uint(v) => u8::try_from(*v).map_err(|_| MpError::Malformed("u8 range")),
                    _ => Err(MpError::Malformed("expected u8 items")),
                })
                .collect(),
            Some(_) => Err(MpError::Malformed("expected []uint8")),
        }
    }

    /// This value as bytes.
    pub fn as_bytes(&self) -> Result<&[u8], MpError> {
        match self {
            Mp::Bytes(b) => Ok(b),
            Mp::Nil => Ok(&[]),
            _ => Err(MpError::Malformed("expected bytes")),
        }
    }

    /// This value as a UTF-8 string.
    pub fn as_string(&self) -> Result<String, MpError> {
        String::from_utf8(self.as_bytes()?.to_vec()).map_err(|_| MpError::Malformed("not UTF-8"))
    }

    /// This value as an unsigned integer.
    pub fn as_uint(&self) -> Result<u64, MpError> {
        match self {
            Mp::Uint(v) => Ok(*v),
            Mp::Nil => Ok(0),
            _ => Err(MpError::Malformed("expected an unsigned integer")),
        }
    }
}

/// Decodes one value from the front of `buf`, returning it and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<(Mp, usize), MpError> {
    let mut pos = 0;
    let v = read(buf, &mut pos, 0)?;
    Ok((v, pos))
}

/// Decodes exactly one value that fills `buf` (trailing bytes are tolerated, as Go's decoder
/// does, and ignored).
pub fn decode_all(buf: &[u8]) -> Result<Mp, MpError> {
    decode(buf).map(|(v, _)| v)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], MpError> {
    let end = pos.checked_add(n).ok_or(MpError::Malformed("length"))?;
    let s = buf.get(*pos..end).ok_or(MpError::Incomplete)?;
    *pos = end;
    Ok(s)
}

fn be(buf: &[u8], pos: &mut usize, n: usize) -> Result<u64, MpError> {
    Ok(take(buf, pos, n)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn bytes_value(buf: &[u8], pos: &mut usize, n: u64) -> Result<Mp, MpError> {
    let n = usize::try_from(n).map_err(|_| MpError::Malformed("length"))?;
    // `take` checks the length against what is there before anything is copied.
    Ok(Mp::Bytes(take(buf, pos, n)?.to_vec()))
}

fn items(buf: &[u8], pos: &mut usize, n: u64, per: u64, depth: usize) -> Result<Vec<Mp>, MpError> {
    // Each item takes at least one byte: a count beyond what is left cannot be honest,
    // but a stream may bring more, so it is incomplete rather than malformed.
    let left = (buf.len() - *pos) as u64;
    if n.saturating_mul(per) > left {
        return Err(MpError::Incomplete);
    }
    let n = n * per;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(read(buf, pos, depth + 1)?);
    }
    Ok(out)
}

fn array(buf: &[u8], pos: &mut usize, n: u64, depth: usize) -> Result<Mp, MpError> {
    items(buf, pos, n, 1, depth).map(Mp::Array)
}

fn map(buf: &[u8], pos: &mut usize, n: u64, depth: usize) -> Result<Mp, MpError> {
    let flat = items(buf, pos, n, 2, depth)?;
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    Ok(Mp::Map(pairs))
}

fn read(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Mp, MpError> {
    if depth > MAX_DEPTH {
        return Err(MpError::Malformed("nested too deep"));
    }
    let m = take(buf, pos, 1)?[0];
    Ok(match m {
        0x00..=0x7f => Mp::Uint(u64::from(m)),
        0x80..=0x8f => map(buf, pos, u64::from(m & 0x0f), depth)?,
        0x90..=0x9f => array(buf, pos, u64::from(m & 0x0f), depth)?,
        0xa0..=0xbf => bytes_value(buf, pos, u64::from(m & 0x1f))?,
        0xc0 => Mp::Nil,
        0xc2 => Mp::Bool(false),
        0xc3 => Mp::Bool(true),
        0xc4 | 0xd9 => {
            let n = be(buf, pos, 1)?;
            bytes_value(buf, pos, n)?
        }
        0xc5 | 0xda => {
            let n = be(buf, pos, 2)?;
            bytes_value(buf, pos, n)?
        }
        0xc6 | 0xdb => {
            let n = be(buf, pos, 4)?;
            bytes_value(buf, pos, n)?
        }
        0xca => Mp::Float(f64::from(f32::from_bits(be(buf, pos, 4)? as u32))),
        0xcb => Mp::Float(f64::from_bits(be(buf, pos, 8)?)),
        0xcc => Mp::Uint(be(buf, pos, 1)?),
        0xcd => Mp::Uint(be(buf, pos, 2)?),
        0xce => Mp::Uint(be(buf, pos, 4)?),
        0xcf => Mp::Uint(be(buf, pos, 8)?),
        0xd0..=0xd3 => {
            let n = 1usize << (m - 0xd0);
            let raw = be(buf, pos, n)?;
            let shift = 64 - 8 * n as u32;
            let v = ((raw << shift) as i64) >> shift;
            if v >= 0 {
                Mp::Uint(v as u64)
            } else {
                Mp::Int(v)
            }
        }
        0xdc => {
            let n = be(buf, pos, 2)?;
            array(buf, pos, n, depth)?
        }
        0xdd => {
            let n = be(buf, pos, 4)?;
            array(buf, pos, n, depth)?
        }
        0xde => {
            let n = be(buf, pos, 2)?;
            map(buf, pos, n, depth)?
        }
        0xdf => {
            let n = be(buf, pos, 4)?;
            map(buf, pos, n, depth)?
        }
        0xe0..=0xff => Mp::Int(i64::from(m as i8)),
        // Extensions (0xc7-0xc9, 0xd4-0xd8) and the unused 0xc1: no message of ours has one.
        _ => return Err(MpError::Malformed("unsupported type")),
    })
}

/// Writes values the way Go's codec does.
#[derive(Default, Debug)]
pub struct Enc {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Enc {
    /// An encoder that appends to `buf`.
    pub fn new(buf: Vec<u8>) -> Self {
        Enc { buf }
    }

    /// A map header of `n` pairs (a struct of `n` fields).
    pub fn map(&mut self, n: usize) -> &mut Self {
        self.header(n, 0x80, 0xde, 0xdf)
    }

    /// An array header of `n` items.
    pub fn array(&mut self, n: usize) -> &mut Self {
        self.header(n, 0x90, 0xdc, 0xdd)
    }

    fn header(&mut self, n: usize, fix: u8, m16: u8, m32: u8) -> &mut Self {
        if n < 16 {
            self.buf.push(fix | n as u8);
        } else if n <= 0xffff {
            self.buf.push(m16);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(m32);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self
    }

    /// Raw bytes (Go's string and []byte alike).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(b);
        self
    }

    /// A string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.raw(s.as_bytes())
    }

    /// A struct field's name and then whatever the caller writes next.
    pub fn key(&mut self, name: &str) -> &mut Self {
        self.str(name)
    }

    /// An unsigned integer in its smallest form.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        if v < 128 {
            self.buf.push(v as u8);
        } else if v <= 0xff {
            self.buf.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= 0xffff {
            self.buf.push(0xcd);
            self.buf.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= 0xffff_ffff {
            self.buf.push(0xce);
            self.buf.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.buf.push(0xcf);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    /// A signed integer.
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            return self.uint(v as u64);
        }
        if v >= -32 {
            self.buf.push(v as i8 as u8);
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    /// A boolean.
    pub fn boolean(&mut self, b: bool) -> &mut Self {
        self.buf.push(if b { 0xc3 } else { 0xc2 });
        self
    }

    /// nil.
    pub fn nil(&mut self) -> &mut Self {
        self.buf.push(0xc0);
        self
    }

    /// A float64.
    pub fn float(&mut self, v: f64) -> &mut Self {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_truncation_is_incomplete() {
        let mut e = Enc::default();
        e.map(3)
            .key("SeqNo")
            .uint(70_000)
            .key("Node")
            .str("a")
            .key("Neg")
            .int(-5);
        let (v, used) = decode(&e.buf).unwrap();
        assert_eq!(used, e.buf.len());
        assert_eq!(v.u32("SeqNo").unwrap(), 70_000);
        assert_eq!(v.string("Node").unwrap(), "a");
        assert_eq!(v.int("Neg").unwrap(), -5);
        assert_eq!(v.uint("Missing").unwrap(), 0);
        for cut in 0..e.buf.len() {
            assert_eq!(decode(&e.buf[..cut]).unwrap_err(), MpError::Incomplete);
        }
    }

    #[test]
    fn hostile_counts_and_depths_are_refused_without_allocating() {
        // An array claiming four billion items in five bytes.
        assert_eq!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
            MpError::Incomplete
        );
        // Raw bytes claiming 4 GiB.
        assert_eq!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, 0]).unwrap_err(),
            MpError::Incomplete
        );
        let deep = vec![0x91u8; 100];
        assert!(matches!(decode(&deep), Err(MpError::Malformed(_))));
        assert!(matches!(decode(&[0xc1]), Err(MpError::Malformed(_))));
    }
}
