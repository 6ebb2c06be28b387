//! The member table: compact records, a name index and the incremental digest.
//!
//! A node of a 10,000-member cluster holds 10,000 records, and the simulator holds
//! 10,000 such nodes, so a record is kept to 56 bytes: the name inline, the address
//! packed, tags behind a thin pointer.

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
    pub fn new(name: Name, addr: SocketAddr, incarnation: u32, state: State, tags: &[u8], protocol: u8) -> Self {
        let (ip, port) = pack(addr);
        Record { name, ip, port, incarnation, state, protocol, tags: ThinVec::from(tags) }
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
            name: self.name.as_str(),
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
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.name.as_str().as_bytes());
        h.update(&[0xff]);
        h.update(&self.ip);
        h.update(&self.port.to_le_bytes());
        h.update(&self.incarnation.to_le_bytes());
        h.update(&[self.state.code(), self.protocol]);
        h.update(&self.tags);
        h.digest()
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
    records: Vec<Record>,
    index: HashTable<u32>,
    /// When each member that is not alive entered its state (for reaping and reclaim).
    since: HashMap<Name, Time>,
    digest: Digest,
    live: usize,
}

impl Membership {
    pub fn new() -> Self {
        Membership {
            records: Vec::new(),
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
        &self.records[idx as usize]
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn find(&self, name: &Name) -> Option<u32> {
        let h = name.hash64();
        self.index.find(h, |&i| self.records[i as usize].name == *name).copied()
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
        // Grow by an eighth, not double: 10,000 nodes × 10,000 records must fit in memory.
        if self.records.len() == self.records.capacity() {
            let extra = (self.records.len() / 8).max(16);
            self.records.reserve_exact(extra);
        }
        self.records.push(rec);
        let records = &self.records;
        self.index.insert_unique(h, idx, |&i| records[i as usize].name.hash64());
        idx
    }

    /// Changes a record in place, keeping the digest, live count and state times right.
    pub fn update<R>(&mut self, idx: u32, now: Time, f: impl FnOnce(&mut Record) -> R) -> R {
        let rec = &mut self.records[idx as usize];
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
        let rec = &self.records[idx as usize];
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
            let mh = self.records[idx as usize].name.hash64();
            if let Some(slot) = self.index.find_mut(mh, |&i| i == last) {
                *slot = idx;
            }
            Some(last)
        } else {
            None
        };
        Removal { removed: idx, moved_from }
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
        for rec in &self.records {
            let b = Digest::bucket(rec.name.hash64());
            if mask[b / 8] & (1 << (b % 8)) != 0 && keep(rec) {
                wire::write_entry(&mut w, &rec.entry());
                n += 1;
            }
        }
        (n, w.buf)
    }
}
