//! The member table: compact records, a name index and the incremental digest.
//!
//! A node of a 10,000-member cluster holds 10,000 records, and the simulator holds
//! 10,000 such nodes, so a record is kept to 56 bytes: the name inline, the address
//! packed, tags behind a thin pointer.

use crate::chunked::ChunkedVec;
use crate::digest::Digest;
use crate::member::{Member, State};
use crate::name::Name;
use crate::time::Time;
use crate::wire::{self, EntryRef};
use hashbrown::{HashMap, HashTable};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use thin_vec::ThinVec;

/// One member as stored.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub name: Name,
    ip: [u8; 16],
    port: u16,
    pub incarnation: u32,
    pub state: State,
    pub protocol: u8,
    pub tags: ThinVec<u8>,
}

impl Record {
    pub fn new(
        name: Name,
        addr: SocketAddr,
        incarnation: u32,
        state: State,
        tags: &[u8],
        protocol: u8,
    ) -> Self {
        let (ip, port) = pack(addr);
        Record {
            name,
            ip,
            port,
            incarnation,
            state,
            protocol,
            tags: ThinVec::from(tags),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        let ip = Ipv6Addr::from(self.ip);
        let ip = match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ip),
        };
        SocketAddr::new(ip, self.port)
    }

    pub fn set_addr(&mut self, addr: SocketAddr) {
        let (ip, port) = pack(addr);
        self.ip = ip;
        self.port = port;
    }

    pub fn to_member(&self) -> Member {
        Member {
            name: self.name.clone(),
            addr: self.addr(),
            incarnation: self.incarnation,
            state: self.state,
            tags: self.tags.to_vec(),
            protocol: self.protocol,
        }
    }

    pub fn entry(&self) -> EntryRef<'_> {
        EntryRef {
            name: self.name.as_bytes(),
            addr: self.addr(),
            incarnation: self.incarnation,
            state: self.state,
            protocol: self.protocol,
            tags: &self.tags,
        }
    }

    /// Whether a received entry says exactly what this record says.
    pub fn same_as(&self, e: &wire::Entry) -> bool {
        self.incarnation == e.incarnation
            && self.state == e.state
            && self.protocol == e.protocol
            && self.addr() == e.addr
            && *self.tags == *e.tags
    }

    /// The record's contribution to the digest: equal on two nodes iff they agree on it.
    fn hash(&self) -> u64 {
        // One shot over a stack buffer: this runs on every change and every insert.
        let name = self.name.as_bytes();
        let mut buf = [0u8; 1 + crate::name::MAX_NAME_LEN + 16 + 2 + 4 + 2 + 8];
        buf[0] = name.len() as u8;
        let mut n = 1 + name.len();
        buf[1..n].copy_from_slice(name);
        buf[n..n + 16].copy_from_slice(&self.ip);
        n += 16;
        buf[n..n + 2].copy_from_slice(&self.port.to_le_bytes());
        buf[n + 2..n + 6].copy_from_slice(&self.incarnation.to_le_bytes());
        buf[n + 6] = self.state.code();
        buf[n + 7] = self.protocol;
        n += 8;
        if !self.tags.is_empty() {
            buf[n..n + 8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(&self.tags).to_le_bytes());
            n += 8;
        }
        xxhash_rust::xxh3::xxh3_64(&buf[..n])
    }
}

fn pack(addr: SocketAddr) -> ([u8; 16], u16) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    (ip, addr.port())
}

/// What `remove` did to indices: `moved` now lives at `removed`.
pub(crate) struct Removal {
    pub removed: u32,
    pub moved_from: Option<u32>,
}

/// The table of members, self included.
pub(crate) struct Membership {
    records: ChunkedVec<Record>,
    index: HashTable<u32>,
    /// When each member that is not alive entered its state (for reaping and reclaim).
    since: HashMap<Name, Time>,
    digest: Digest,
    live: usize,
}

impl Membership {
    pub fn new() -> Self {
        Membership {
            records: ChunkedVec::new(),
            index: HashTable::new(),
            since: HashMap::new(),
            digest: Digest::default(),
            live: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Members alive or suspect, self included.
    pub fn live(&self) -> usize {
        self.live
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn get(&self, idx: u32) -> &Record {
        self.records.get(idx as usize)
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.records.iter()
    }

    pub fn find(&self, name: &Name) -> Option<u32> {
        let h = name.hash64();
        self.index
            .find(h, |&i| self.records.get(i as usize).name == *name)
            .copied()
    }

    pub fn since(&self, name: &Name) -> Option<Time> {
        self.since.get(name).copied()
    }

    pub fn non_alive(&self) -> impl Iterator<Item = (&Name, Time)> {
        self.since.iter().map(|(n, t)| (n, *t))
    }

    pub fn insert(&mut self, rec: Record, now: Time) -> u32 {
        const _: () = assert!(std::mem::size_of::<Record>() == 48);
        let idx = self.records.len() as u32;
        let h = rec.name.hash64();
        self.digest.add(h, rec.hash());
        if rec.state.is_live() {
            self.live += 1;
        }
        if rec.state != State::Alive {
            self.since.insert(rec.name.clone(), now);
        }
        self.records.push(rec);
        let records = &self.records;
        self.index
            .insert_unique(h, idx, |&i| records.get(i as usize).name.hash64());
        idx
    }

    /// Changes a record in place, keeping the digest, live count and state times right.
    pub fn update<R>(&mut self, idx: u32, now: Time, f: impl FnOnce(&mut Record) -> R) -> R {
        let rec = self.records.get_mut(idx as usize);
        let h = rec.name.hash64();
        let before_state = rec.state;
        self.digest.remove(h, rec.hash());
        let out = f(rec);
        self.digest.add(h, rec.hash());
        if before_state.is_live() != rec.state.is_live() {
            if rec.state.is_live() {
                self.live += 1;
            } else {
                self.live -= 1;
            }
        }
        if before_state != rec.state {
            if rec.state == State::Alive {
                self.since.remove(&rec.name);
            } else {
                self.since.insert(rec.name.clone(), now);
            }
        }
        out
    }

    pub fn remove(&mut self, idx: u32) -> Removal {
        let rec = self.records.get(idx as usize);
        let h = rec.name.hash64();
        self.digest.remove(h, rec.hash());
        if rec.state.is_live() {
            self.live -= 1;
        }
        self.since.remove(&rec.name);
        if let Ok(entry) = self.index.find_entry(h, |&i| i == idx) {
            entry.remove();
        }
        let last = (self.records.len() - 1) as u32;
        self.records.swap_remove(idx as usize);
        let moved_from = if last != idx {
            let mh = self.records.get(idx as usize).name.hash64();
            if let Some(slot) = self.index.find_mut(mh, |&i| i == last) {
                *slot = idx;
            }
            Some(last)
        } else {
            None
        };
        Removal {
            removed: idx,
            moved_from,
        }
    }

    /// Encodes the records of the buckets set in `mask` for an anti-entropy exchange.
    pub fn entries_in(&self, mask: &[u8; wire::DIGEST_BUCKETS / 8]) -> (u32, Vec<u8>) {
        self.entries_in_filtered(mask, |_| true)
    }

    /// Like `entries_in`, keeping only the records for which `keep` holds.
    pub fn entries_in_filtered(
        &self,
        mask: &[u8; wire::DIGEST_BUCKETS / 8],
        mut keep: impl FnMut(&Record) -> bool,
    ) -> (u32, Vec<u8>) {
        let mut w = wire::Writer::with_capacity(256);
        let mut n = 0u32;
        // While a node catches up every bucket differs: then skip hashing each name.
        let all = mask.iter().all(|b| *b == 0xff);
        for rec in self.records.iter() {
            let selected = all || {
                let b = Digest::bucket(rec.name.hash64());
                mask[b / 8] & (1 << (b % 8)) != 0
            };
            if selected && keep(rec) {
                wire::write_entry(&mut w, &rec.entry());
                n += 1;
            }
        }
        (n, w.buf)
    }
}
