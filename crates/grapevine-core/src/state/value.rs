//! A shared key's replicated state, and its encoding: a key and its merge state. The
//! encoding is canonical (maps in key order), so equal states encode to equal bytes and
//! hash alike on every node (the keyspace's item hashes are taken over it).

use super::crdt::{
    AwSet, Dot, EpochRegister, Lww, MaxRegister, Merge, MvRegister, PnCounter, Sibling,
    VersionVector,
};
use super::hlc::Timestamp;
use crate::name::Name;
use crate::wire::{read_name, DecodeError, Reader, Writer};
use std::collections::{BTreeMap, BTreeSet};

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// The longest shared value (a register's bytes, a set element), in bytes: Consul's limit
/// for a KV value. Shared entries travel in exchanges over the reliable channel, in chunks of
/// `state_chunk` bytes (one entry always fits a frame), never in datagrams.
pub const MAX_VALUE_LEN: usize = 512 * 1024;
/// The most siblings a multi-value register may carry.
pub const MAX_SIBLINGS: usize = 64;
/// The most writers a version vector or counter may name.
pub const MAX_WRITERS: usize = 4096;
/// The most elements an add-wins set may hold.
pub const MAX_SET_ELEMENTS: usize = 65_536;

/// A key's replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Last-write-wins register.
    Lww(Lww),
    /// Multi-value register.
    Mv(MvRegister),
    /// Bytes merged by the application.
    Custom(Vec<u8>),
    /// PN-counter.
    Counter(PnCounter),
    /// Max register.
    Max(MaxRegister),
    /// Epoch register.
    Epoch(EpochRegister),
    /// Add-wins set.
    Set(AwSet),
}

impl Value {
    /// The type's order for settling a clash of types (nodes configured differently): the
    /// higher wins, whatever the order of arrival.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Value::Lww(_) => 1,
            Value::Mv(_) => 2,
            Value::Custom(_) => 3,
            Value::Counter(_) => 4,
            Value::Max(_) => 5,
            Value::Epoch(_) => 6,
            Value::Set(_) => 7,
        }
    }

    /// Merges `other` in; `custom` is the application's merge for `Custom` values.
    pub fn merge(&mut self, other: &Value, custom: Option<&dyn Merge>) {
        match (&mut *self, other) {
            (Value::Lww(a), Value::Lww(b)) => a.merge(b),
            (Value::Mv(a), Value::Mv(b)) => a.merge(b),
            (Value::Custom(a), Value::Custom(b)) => {
                *a = match custom {
                    Some(m) => m.merge(a, b),
                    // No merge registered here: a deterministic stand-in.
                    None => a.as_slice().max(b.as_slice()).to_vec(),
                }
            }
            (Value::Counter(a), Value::Counter(b)) => a.merge(b),
            (Value::Max(a), Value::Max(b)) => a.merge(b),
            (Value::Epoch(a), Value::Epoch(b)) => a.merge(b),
            (Value::Set(a), Value::Set(b)) => a.merge(b),
            (a, b) => {
                if b.rank() > a.rank() {
                    *a = b.clone();
                }
            }
        }
    }

    /// Whether the value is a tombstone or expired at `now` (hybrid physical µs).
    pub fn is_gone(&self, now: u64) -> bool {
        match self {
            Value::Lww(l) => l.value.is_none() || l.expires_at.is_some_and(|t| t <= now),
            Value::Mv(m) => m.siblings.iter().all(|s| s.value.is_none()),
            _ => false,
        }
    }

    /// When a gone value may be collected from: its write's physical time, or its expiry.
    pub(crate) fn gone_since(&self) -> Option<u64> {
        match self {
            Value::Lww(l) => Some(match (l.value.is_none(), l.expires_at) {
                (false, Some(e)) => e,
                _ => l.at.physical,
            }),
            _ => None,
        }
    }

    /// The physical time of the newest write the value holds, if it records one.
    pub(crate) fn written_at(&self) -> Option<u64> {
        match self {
            Value::Lww(l) => Some(l.at.physical),
            _ => None,
        }
    }
}

/// Appends an entry.
pub(crate) fn write_entry(w: &mut Writer, key: &[u8], v: &Value) {
    w.lp(key);
    write_value(w, v);
}

/// Reads an entry: its key and value.
pub(crate) fn read_entry(r: &mut Reader<'_>) -> Result<(Vec<u8>, Value), DecodeError> {
    let len = r.len("key", MAX_KEY_LEN)?;
    let key = r.bytes(len, "key")?.to_vec();
    Ok((key, read_value(r)?))
}

fn write_opt_bytes(w: &mut Writer, v: &Option<Vec<u8>>) {
    match v {
        Some(b) => {
            w.u8(1);
            w.lp(b);
        }
        None => w.u8(0),
    }
}

fn read_opt_bytes(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
    match r.u8(what)? {
        0 => Ok(None),
        _ => Ok(Some(read_bytes(r, what)?)),
    }
}

fn read_bytes(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let len = r.len(what, MAX_VALUE_LEN)?;
    Ok(r.bytes(len, what)?.to_vec())
}

fn write_counts(w: &mut Writer, m: &BTreeMap<Name, u64>) {
    w.varint(m.len() as u32);
    for (n, c) in m {
        w.lp(n.as_bytes());
        w.u64(*c);
    }
}

fn read_counts(r: &mut Reader<'_>, what: &'static str) -> Result<BTreeMap<Name, u64>, DecodeError> {
    let n = r.count(what, MAX_WRITERS, 10)?;
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let name = read_name(r, what)?;
        let c = r.u64(what)?;
        m.insert(name, c);
    }
    Ok(m)
}

fn write_value(w: &mut Writer, v: &Value) {
    match v {
        Value::Lww(l) => {
            // Flags travel only when set (type 8), so a value without them encodes, and
            // hashes, as it always has.
            w.u8(if l.flags == 0 { 1 } else { 8 });
            w.u64(l.at.physical);
            w.varint(l.at.logical);
            w.lp(l.writer.as_bytes());
            write_opt_bytes(w, &l.value);
            match l.expires_at {
                Some(t) => {
                    w.u8(1);
                    w.u64(t);
                }
                None => w.u8(0),
            }
            if l.flags != 0 {
                w.u64(l.flags);
            }
        }
        Value::Mv(m) => {
            w.u8(2);
            w.varint(m.siblings.len() as u32);
            for s in &m.siblings {
                write_counts(w, &s.version.0);
                write_opt_bytes(w, &s.value);
            }
        }
        Value::Custom(b) => {
            w.u8(3);
            w.lp(b);
        }
        Value::Counter(c) => {
            w.u8(4);
            write_counts(w, &c.p);
            write_counts(w, &c.n);
        }
        Value::Max(m) => {
            w.u8(5);
            w.u64(m.0 as u64);
        }
        Value::Epoch(e) => {
            w.u8(6);
            w.u64(e.epoch);
            w.lp(e.owner.as_bytes());
            w.lp(&e.value);
        }
        Value::Set(s) => {
            w.u8(7);
            w.varint(s.elements.len() as u32);
            for (elem, dots) in &s.elements {
                w.lp(elem);
                w.varint(dots.len() as u32);
                for d in dots {
                    w.lp(d.node.as_bytes());
                    w.u64(d.counter);
                }
            }
            write_counts(w, &s.seen.0);
        }
    }
}

fn read_value(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let tag = r.u8("value type")?;
    Ok(match tag {
        1 | 8 => {
            let physical = r.u64("timestamp")?;
            let logical = r.varint("timestamp")?;
            let mut l = Lww {
                at: Timestamp::new(physical, logical),
                writer: read_name(r, "writer")?,
                value: read_opt_bytes(r, "value")?,
                expires_at: match r.u8("expiry flag")? {
                    0 => None,
                    _ => Some(r.u64("expiry")?),
                },
                flags: 0,
            };
            if tag == 8 {
                l.flags = r.u64("flags")?;
                if l.flags == 0 {
                    // Not canonical: zero flags encode as type 1.
                    return Err(DecodeError::UnknownValueType(tag));
                }
            }
            Value::Lww(l)
        }
        2 => {
            let n = r.count("siblings", MAX_SIBLINGS, 2)?;
            let mut siblings = Vec::with_capacity(n);
            for _ in 0..n {
                let version = VersionVector(read_counts(r, "version vector")?);
                let value = read_opt_bytes(r, "sibling")?;
                siblings.push(Sibling { version, value });
            }
            // Canonical: sorted and free of duplicates, as merges leave them.
            let mut reg = MvRegister::default();
            reg.merge(&MvRegister { siblings });
            Value::Mv(reg)
        }
        3 => Value::Custom(read_bytes(r, "value")?),
        4 => Value::Counter(PnCounter {
            p: read_counts(r, "increments")?,
            n: read_counts(r, "decrements")?,
        }),
        5 => Value::Max(MaxRegister(r.u64("max register")? as i64)),
        6 => Value::Epoch(EpochRegister {
            epoch: r.u64("epoch")?,
            owner: read_name(r, "owner")?,
            value: read_bytes(r, "value")?,
        }),
        7 => {
            let n = r.count("set elements", MAX_SET_ELEMENTS, 2)?;
            let mut elements = BTreeMap::new();
            for _ in 0..n {
                let elem = read_bytes(r, "set element")?;
                let d = r.count("dots", MAX_WRITERS, 10)?;
                let mut dots = BTreeSet::new();
                for _ in 0..d {
                    let node = read_name(r, "dot")?;
                    let counter = r.u64("dot")?;
                    dots.insert(Dot { node, counter });
                }
                if !dots.is_empty() {
                    elements.insert(elem, dots);
                }
            }
            let seen = VersionVector(read_counts(r, "seen")?);
            Value::Set(AwSet { elements, seen })
        }
        other => return Err(DecodeError::UnknownValueType(other)),
    })
}
