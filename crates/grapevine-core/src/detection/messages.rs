//! Detection's messages: probes, relayed probes, and their answers.

use crate::name::Name;
use crate::wire::{read_name, read_node, write_node};
use crate::wire::{Body, DecodeError, NodeAddr, Reader, Writer};

/// A direct probe of `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    /// Matches the ack to the probe.
    pub seq: u32,
    /// Who the prober means to reach (an address may have changed hands).
    pub target: Name,
    /// The prober, so the target can answer over the reliable channel.
    pub source: NodeAddr,
    /// The prober's data roots, fingerprinted with `seq` as salt (see the `roots` module);
    /// absent from builds before them.
    pub roots: Option<Fingerprints>,
}

/// Salted one-byte fingerprints of a sender's roots: membership, per-node states, keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprints(pub [u8; 3]);

/// The most fingerprint bytes a ping may carry: room for a newer build's extra roots.
const MAX_FINGERPRINTS: usize = 16;

/// A request to probe `target` for `requester` and report back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndirectPing {
    /// The requester's sequence number, echoed in the ack or nack.
    pub seq: u32,
    /// The member to probe.
    pub target: NodeAddr,
    /// Whether the requester wants a nack if the target does not answer.
    pub nack: bool,
    /// The member that asked.
    pub requester: NodeAddr,
}

/// The answer to a ping (direct, relayed or over the reliable channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The probe's sequence number.
    pub seq: u32,
}

/// A relay's report that the target did not answer within its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The requester's sequence number.
    pub seq: u32,
}

/// Optional trailing fingerprints: absent when the body ends here. Fewer than this build
/// compares count as none; more (a newer build's) are skipped.
fn read_fingerprints(r: &mut Reader<'_>) -> Result<Option<Fingerprints>, DecodeError> {
    if r.is_empty() {
        return Ok(None);
    }
    let len = r.len("ping fingerprints", MAX_FINGERPRINTS)?;
    let b = r.bytes(len, "ping fingerprints")?;
    Ok(match b {
        [m, n, k, ..] => Some(Fingerprints([*m, *n, *k])),
        _ => None,
    })
}

impl Body for Ping {
    fn write(&self, w: &mut Writer) {
        w.varint(self.seq);
        w.lp(self.target.as_str().as_bytes());
        write_node(w, &self.source);
        if let Some(f) = &self.roots {
            w.lp(&f.0);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Ping {
            seq: r.varint("ping seq")?,
            target: read_name(r, "ping target")?,
            source: read_node(r, "ping source")?,
            roots: read_fingerprints(r)?,
        })
    }
}

impl Body for IndirectPing {
    fn write(&self, w: &mut Writer) {
        w.varint(self.seq);
        write_node(w, &self.target);
        w.u8(u8::from(self.nack));
        write_node(w, &self.requester);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(IndirectPing {
            seq: r.varint("indirect ping seq")?,
            target: read_node(r, "indirect ping target")?,
            nack: r.u8("indirect ping nack flag")? != 0,
            requester: read_node(r, "indirect ping requester")?,
        })
    }
}

impl Body for Ack {
    fn write(&self, w: &mut Writer) {
        w.varint(self.seq);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Ack {
            seq: r.varint("ack seq")?,
        })
    }
}

impl Body for Nack {
    fn write(&self, w: &mut Writer) {
        w.varint(self.seq);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Nack {
            seq: r.varint("nack seq")?,
        })
    }
}
