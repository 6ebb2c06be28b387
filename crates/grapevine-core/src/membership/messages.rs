//! Membership's messages: the updates gossip carries, and push-pull's exchange.

use crate::filter::{Filter, MAX_FILTER_BYTES, MAX_HASHES};
use crate::member::State;
use crate::name::Name;
use crate::wire::{read_name, read_node, write_node};
use crate::wire::{Body, DecodeError, NodeAddr, Reader, Writer};
use std::net::SocketAddr;

/// The largest node tags (metadata) the wire format accepts, in bytes.
pub const MAX_TAGS_LEN: usize = 512;
/// Buckets in a membership digest (see the `digest` module).
pub const DIGEST_BUCKETS: usize = 1024;
/// The most member entries one sync message may carry.
pub const MAX_SYNC_ENTRIES: usize = 1 << 20;
/// The smallest encoded size of a sync entry: used to reject hostile counts early.
const MIN_ENTRY_SIZE: usize = 1 + 1 + 7 + 1 + 1 + 1 + 1;

/// A member's entry as carried by gossip and anti-entropy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The member's name.
    pub name: Name,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u32,
    /// The state the sender holds for it.
    pub state: State,
    /// Its tags (application metadata), at most [`MAX_TAGS_LEN`] bytes.
    pub tags: Vec<u8>,
    /// The newest protocol version the member speaks.
    pub protocol: u8,
}

/// A member is alive at `incarnation`, at `addr`, with these tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alive {
    /// The member's name.
    pub name: Name,
    /// Its address.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u32,
    /// Its tags.
    pub tags: Vec<u8>,
    /// The newest protocol version it speaks.
    pub protocol: u8,
}

/// `accuser` suspects `name` at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The suspected member.
    pub name: Name,
    /// The incarnation suspected.
    pub incarnation: u32,
    /// Who suspects it (distinct accusers shorten the suspicion timeout).
    pub accuser: Name,
}

/// `accuser` declares `name` dead at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dead {
    /// The member declared dead.
    pub name: Name,
    /// The incarnation declared dead.
    pub incarnation: u32,
    /// Who declared it.
    pub accuser: Name,
}

/// `name` left the cluster gracefully at `incarnation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    /// The member leaving.
    pub name: Name,
    /// Its incarnation when it left.
    pub incarnation: u32,
}

/// Opens an anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// The exchange's id, echoed by every reply.
    pub id: u32,
    /// The requester.
    pub sender: NodeAddr,
    /// The requester's digest root.
    pub root: u64,
    /// How many members the requester knows.
    pub members: u32,
    /// Whether this is a join (the responder then always answers with its buckets).
    pub join: bool,
}

/// The responder's digest buckets; `None` when the roots already match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncBuckets {
    /// The exchange's id.
    pub id: u32,
    /// The responder.
    pub sender: NodeAddr,
    /// [`DIGEST_BUCKETS`] bucket hashes, or `None` if in sync.
    pub buckets: Option<Vec<u64>>,
    /// With the buckets: a filter of the responder's record keys, seeded with the exchange
    /// id (an appended field: absent from senders that do not filter).
    pub filter: Option<Filter>,
}

/// Entries of the buckets that differ, from one side of an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncEntries {
    /// The exchange's id.
    pub id: u32,
    /// The side sending these entries.
    pub sender: NodeAddr,
    /// Which buckets differ (bit i of byte i/8).
    pub mask: [u8; DIGEST_BUCKETS / 8],
    /// The sender's entries in those buckets.
    pub entries: Vec<Entry>,
    /// In a push: a filter of all the requester's record keys in those buckets, seeded with
    /// the exchange id, so the reply leaves out what it already holds (appended field).
    pub filter: Option<Filter>,
}

fn read_tags(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = r.len("tags", MAX_TAGS_LEN)?;
    Ok(r.bytes(len, "tags")?.to_vec())
}

fn read_mask(r: &mut Reader<'_>) -> Result<[u8; DIGEST_BUCKETS / 8], DecodeError> {
    let mut mask = [0u8; DIGEST_BUCKETS / 8];
    mask.copy_from_slice(r.bytes(DIGEST_BUCKETS / 8, "bucket mask")?);
    Ok(mask)
}

/// An optional trailing filter: absent when the body ends here.
fn read_filter(r: &mut Reader<'_>) -> Result<Option<Filter>, DecodeError> {
    if r.is_empty() {
        return Ok(None);
    }
    let hashes = r.u8("filter hash count")?;
    if hashes == 0 || hashes > MAX_HASHES {
        return Err(DecodeError::TooMany {
            what: "filter hashes",
            count: hashes as usize,
            max: MAX_HASHES as usize,
        });
    }
    let len = r.len("filter", MAX_FILTER_BYTES)?;
    if len % 8 != 0 {
        return Err(DecodeError::Misaligned {
            what: "filter",
            len,
            multiple: 8,
        });
    }
    Ok(Some(Filter::from_parts(hashes, r.bytes(len, "filter")?)))
}

pub(crate) fn write_filter(w: &mut Writer, f: &Filter) {
    w.u8(f.hashes());
    w.varint(f.len_bytes() as u32);
    for word in f.to_bytes() {
        w.bytes(&word);
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let name = read_name(r, "entry name")?;
    let addr = r.addr("entry address")?;
    let incarnation = r.varint("entry incarnation")?;
    let code = r.u8("entry state")?;
    let state = State::from_code(code).ok_or(DecodeError::InvalidState(code))?;
    let protocol = r.u8("entry protocol")?;
    let tags = read_tags(r)?;
    Ok(Entry {
        name,
        addr,
        incarnation,
        state,
        tags,
        protocol,
    })
}

pub(crate) fn write_entry(w: &mut Writer, e: &EntryRef<'_>) {
    w.lp(e.name);
    w.addr(e.addr);
    w.varint(e.incarnation);
    w.u8(e.state.code());
    w.u8(e.protocol);
    w.lp(e.tags);
}

/// A borrowed entry, encoded straight from the member table without copying.
pub(crate) struct EntryRef<'a> {
    pub name: &'a [u8],
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: State,
    pub protocol: u8,
    pub tags: &'a [u8],
}

impl Body for Alive {
    fn write(&self, w: &mut Writer) {
        w.lp(self.name.as_str().as_bytes());
        w.addr(self.addr);
        w.varint(self.incarnation);
        w.u8(self.protocol);
        w.lp(&self.tags);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Alive {
            name: read_name(r, "alive name")?,
            addr: r.addr("alive address")?,
            incarnation: r.varint("alive incarnation")?,
            protocol: r.u8("alive protocol")?,
            tags: read_tags(r)?,
        })
    }
}

/// Suspect and Dead share one layout: the accused, its incarnation, the accuser.
macro_rules! accusation_body {
    ($ty:ident, $name:literal, $incarnation:literal, $accuser:literal) => {
        impl Body for $ty {
            fn write(&self, w: &mut Writer) {
                w.lp(self.name.as_str().as_bytes());
                w.varint(self.incarnation);
                w.lp(self.accuser.as_str().as_bytes());
            }

            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($ty {
                    name: read_name(r, $name)?,
                    incarnation: r.varint($incarnation)?,
                    accuser: read_name(r, $accuser)?,
                })
            }
        }
    };
}

accusation_body!(
    Suspect,
    "suspect name",
    "suspect incarnation",
    "suspect accuser"
);
accusation_body!(Dead, "dead name", "dead incarnation", "dead accuser");

impl Body for Leave {
    fn write(&self, w: &mut Writer) {
        w.lp(self.name.as_str().as_bytes());
        w.varint(self.incarnation);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Leave {
            name: read_name(r, "leave name")?,
            incarnation: r.varint("leave incarnation")?,
        })
    }
}

impl Body for SyncRequest {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        write_node(w, &self.sender);
        w.u64(self.root);
        w.varint(self.members);
        w.u8(u8::from(self.join));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SyncRequest {
            id: r.varint("sync id")?,
            sender: read_node(r, "sync sender")?,
            root: r.u64("sync root")?,
            members: r.varint("sync member count")?,
            join: r.u8("sync join flag")? != 0,
        })
    }
}

impl Body for SyncBuckets {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        write_node(w, &self.sender);
        match &self.buckets {
            None => w.u8(0),
            Some(b) => {
                w.u8(1);
                for h in b.iter().take(DIGEST_BUCKETS) {
                    w.u64(*h);
                }
                for _ in b.len()..DIGEST_BUCKETS {
                    w.u64(0);
                }
                if let Some(f) = &self.filter {
                    write_filter(w, f);
                }
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("sync id")?;
        let sender = read_node(r, "sync sender")?;
        let buckets = match r.u8("sync buckets flag")? {
            0 => None,
            _ => {
                let raw = r.bytes(DIGEST_BUCKETS * 8, "sync buckets")?;
                Some(
                    raw.chunks_exact(8)
                        .map(|c| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(c);
                            u64::from_le_bytes(a)
                        })
                        .collect(),
                )
            }
        };
        let filter = if buckets.is_some() {
            read_filter(r)?
        } else {
            None
        };
        Ok(SyncBuckets {
            id,
            sender,
            buckets,
            filter,
        })
    }
}

impl Body for SyncEntries {
    fn write(&self, w: &mut Writer) {
        w.varint(self.id);
        write_node(w, &self.sender);
        w.bytes(&self.mask);
        w.varint(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        for e in &self.entries {
            write_entry(
                w,
                &EntryRef {
                    name: e.name.as_bytes(),
                    addr: e.addr,
                    incarnation: e.incarnation,
                    state: e.state,
                    protocol: e.protocol,
                    tags: &e.tags,
                },
            );
        }
        if let Some(f) = &self.filter {
            write_filter(w, f);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.varint("sync id")?;
        let sender = read_node(r, "sync sender")?;
        let mask = read_mask(r)?;
        let n = r.count("sync entries", MAX_SYNC_ENTRIES, MIN_ENTRY_SIZE)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(read_entry(r)?);
        }
        let filter = read_filter(r)?;
        let m = SyncEntries {
            id,
            sender,
            filter,
            mask,
            entries,
        };
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_that_is_not_whole_words_is_refused() {
        let body = |filter: Option<Filter>| {
            let m = SyncBuckets {
                id: 7,
                sender: NodeAddr {
                    name: Name::new("b").unwrap(),
                    addr: "10.0.0.2:7946".parse().unwrap(),
                },
                buckets: Some(vec![0; DIGEST_BUCKETS]),
                filter,
            };
            let mut w = Writer::with_capacity(64);
            m.write(&mut w);
            w.buf
        };
        let whole = body(Some(Filter::from_parts(7, &[0xff; 64])));
        assert!(matches!(
            SyncBuckets::read(&mut Reader::new(&whole)),
            Ok(SyncBuckets {
                filter: Some(_),
                ..
            })
        ));
        // The same message with a filter of 63 bytes: hash count, length, bits.
        let mut cut = body(None);
        cut.extend_from_slice(&[7, 63]);
        cut.extend_from_slice(&[0xff; 63]);
        assert_eq!(
            SyncBuckets::read(&mut Reader::new(&cut)),
            Err(DecodeError::Misaligned {
                what: "filter",
                len: 63,
                multiple: 8,
            })
        );
    }
}
