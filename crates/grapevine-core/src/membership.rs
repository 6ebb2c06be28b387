//! The member table: compact records, a name index and the incremental digest.
//!
//! A node of a 10,000-member cluster holds 10,000 records, and the simulator holds
//! 10,000 such nodes, so a record is kept to 40 bytes (the name inline, the address
//! packed, tags, which most members of a large simulation lack, in a side table) plus a
//! 16-byte entry in a parallel array of hashes: the name's (index, digest bucket) and the
//! record's (digest, anti-entropy filters). An exchange scans only the hashes, 16 bytes a
//! member, and reads the full record of the members it sends.

use crate::chunked::ChunkedVec;
use crate::digest::Digest;
use crate::member::{Member, State};
use crate::name::Name;
use crate::time::Time;
use crate::wire::{self, EntryRef};
use hashbrown::{HashMap, HashTable};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `meta` bit: the member has tags in the side table.
const HAS_TAGS: u8 = 0x80;

/// One member as stored.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub name: Name,
    ip: [u8; 16],
    port: u16,
    pub incarnation: u32,
    pub state: State,
    /// Protocol version (low 7 bits) and `HAS_TAGS`.
    meta: u8,
}

impl Record {
    pub fn new(name: Name, addr: SocketAddr, incarnation: u32, state: State, protocol: u8) -> Self {
        let (ip, port) = pack(addr);
        Record {
            name,
            ip,
            port,
            incarnation,
            state,
            meta: protocol & !HAS_TAGS,
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

    /// The newest protocol version the member speaks (versions are below 128).
    pub fn protocol(&self) -> u8 {
        self.meta & !HAS_TAGS
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.meta = (self.meta & HAS_TAGS) | (protocol & !HAS_TAGS);
    }

    fn has_tags(&self) -> bool {
        self.meta & HAS_TAGS != 0
    }
}

/// The hashes kept beside each record: 12 bytes, 4-byte aligned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keys {
    /// The top 32 bits of `name.hash64()`: enough for the digest bucket (its top bits) and,
    /// spread back to 64 bits, for the name index.
    name: u32,
    /// The record's hash, its digest contribution and anti-entropy filter key, in halves.
    record: [u32; 2],
}

impl Keys {
    fn new(name_hash: u64, record: u64) -> Self {
        Keys {
            name: (name_hash >> 32) as u32,
            record: [record as u32, (record >> 32) as u32],
        }
    }

    /// The record's hash.
    pub fn record(&self) -> u64 {
        u64::from(self.record[0]) | u64::from(self.record[1]) << 32
    }

    fn set_record(&mut self, h: u64) {
        self.record = [h as u32, (h >> 32) as u32];
    }

    /// The name hash as the digest sees it: its top 32 bits (the bucket is in the top 10).
    fn name_hash(&self) -> u64 {
        u64::from(self.name) << 32
    }

    /// The digest bucket of the name (the top bits of its hash).
    fn bucket(&self) -> usize {
        Digest::bucket(u64::from(self.name) << 32)
    }

    /// What the name index hashes by.
    fn index_hash(&self) -> u64 {
        index_hash(u64::from(self.name) << 32)
    }
}

/// The name index's hash for a name hash: only its top 32 bits are kept beside the record,
/// so spread them over 64 for the table.
fn index_hash(name_hash: u64) -> u64 {
    let top = name_hash >> 32;
    top.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ top
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
    keys: ChunkedVec<Keys>,
    index: HashTable<u32>,
    /// When each member that is not alive entered its state (for reaping and reclaim).
    since: HashMap<Name, Time>,
    /// Tags of the members that have any.
    tags: HashMap<Name, Box<[u8]>>,
    digest: Digest,
    live: usize,
}

impl Membership {
    pub fn new() -> Self {
        Membership {
            records: ChunkedVec::new(),
            keys: ChunkedVec::new(),
            index: HashTable::new(),
            since: HashMap::new(),
            tags: HashMap::new(),
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

    /// The records' hashes, in record order.
    pub fn keys(&self) -> impl Iterator<Item = &Keys> + '_ {
        self.keys.iter()
    }

    pub fn find(&self, name: &Name) -> Option<u32> {
        self.find_hashed(name, name.hash64())
    }

    /// Like `find`, with `name.hash64()` already computed.
    pub fn find_hashed(&self, name: &Name, h: u64) -> Option<u32> {
        self.index
            .find(index_hash(h), |&i| {
                self.keys.get(i as usize).name == (h >> 32) as u32
                    && self.records.get(i as usize).name == *name
            })
            .copied()
    }

    /// The tags of a record.
    pub fn tags_of(&self, rec: &Record) -> &[u8] {
        if !rec.has_tags() {
            return &[];
        }
        self.tags.get(&rec.name).map_or(&[], |t| t)
    }

    /// A snapshot of member `idx`.
    pub fn member(&self, idx: u32) -> Member {
        self.to_member(self.get(idx))
    }

    /// A snapshot of a record.
    pub fn to_member(&self, r: &Record) -> Member {
        Member {
            name: r.name.clone(),
            addr: r.addr(),
            incarnation: r.incarnation,
            state: r.state,
            tags: self.tags_of(r).to_vec(),
            protocol: r.protocol(),
        }
    }

    fn entry<'a>(&'a self, r: &'a Record) -> EntryRef<'a> {
        EntryRef {
            name: r.name.as_bytes(),
            addr: r.addr(),
            incarnation: r.incarnation,
            state: r.state,
            protocol: r.protocol(),
            tags: self.tags_of(r),
        }
    }

    /// The record's hash: its contribution to the digest and its filter key, equal on two
    /// nodes iff they agree on the record.
    fn record_hash(&self, r: &Record) -> u64 {
        hash_fields(
            r.name.as_bytes(),
            &r.ip,
            r.port,
            r.incarnation,
            r.state,
            r.protocol(),
            self.tags_of(r),
        )
    }

    fn rehash(&mut self, idx: u32) {
        let h = self.record_hash(self.records.get(idx as usize));
        self.keys.get_mut(idx as usize).set_record(h);
    }

    /// Replaces member `idx`'s tags, keeping the digest right.
    pub fn set_tags(&mut self, idx: u32, tags: &[u8]) {
        let r = self.records.get(idx as usize);
        if self.tags_of(r) == tags {
            return;
        }
        let k = *self.keys.get(idx as usize);
        let (h, old) = (k.name_hash(), k.record());
        self.digest.remove(h, old);
        let name = r.name.clone();
        let r = self.records.get_mut(idx as usize);
        if tags.is_empty() {
            r.meta &= !HAS_TAGS;
            self.tags.remove(&name);
        } else {
            r.meta |= HAS_TAGS;
            self.tags.insert(name, tags.into());
        }
        self.rehash(idx);
        self.digest.add(h, self.keys.get(idx as usize).record());
    }

    pub fn since(&self, name: &Name) -> Option<Time> {
        self.since.get(name).copied()
    }

    pub fn non_alive(&self) -> impl Iterator<Item = (&Name, Time)> {
        self.since.iter().map(|(n, t)| (n, *t))
    }

    pub fn insert(&mut self, rec: Record, tags: &[u8], now: Time) -> u32 {
        let h = rec.name.hash64();
        self.insert_hashed(rec, h, tags, now)
    }

    /// Like `insert`, with `rec.name.hash64()` already computed.
    pub fn insert_hashed(&mut self, mut rec: Record, h: u64, tags: &[u8], now: Time) -> u32 {
        const _: () = assert!(std::mem::size_of::<Record>() == 40);
        debug_assert_eq!(h, rec.name.hash64());
        let idx = self.records.len() as u32;
        if !tags.is_empty() {
            rec.meta |= HAS_TAGS;
            self.tags.insert(rec.name.clone(), tags.into());
        }
        let record = self.record_hash(&rec);
        self.digest.add(h, record);
        if rec.state.is_live() {
            self.live += 1;
        }
        if rec.state != State::Alive {
            self.since.insert(rec.name.clone(), now);
        }
        self.records.push(rec);
        self.keys.push(Keys::new(h, record));
        let keys = &self.keys;
        self.index
            .insert_unique(index_hash(h), idx, |&i| keys.get(i as usize).index_hash());
        idx
    }

    /// Changes a record in place, keeping the digest, live count and state times right.
    pub fn update<R>(&mut self, idx: u32, now: Time, f: impl FnOnce(&mut Record) -> R) -> R {
        let k = *self.keys.get(idx as usize);
        let before_state = self.records.get(idx as usize).state;
        self.digest.remove(k.name_hash(), k.record());
        let out = f(self.records.get_mut(idx as usize));
        self.rehash(idx);
        self.digest
            .add(k.name_hash(), self.keys.get(idx as usize).record());
        let rec = self.records.get(idx as usize);
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
        let k = *self.keys.get(idx as usize);
        let h = k.index_hash();
        self.digest.remove(k.name_hash(), k.record());
        let rec = self.records.get(idx as usize);
        self.tags.remove(&rec.name);
        let rec = self.records.get(idx as usize);
        if rec.state.is_live() {
            self.live -= 1;
        }
        self.since.remove(&rec.name);
        if let Ok(entry) = self.index.find_entry(h, |&i| i == idx) {
            entry.remove();
        }
        let last = (self.records.len() - 1) as u32;
        self.records.swap_remove(idx as usize);
        self.keys.swap_remove(idx as usize);
        let moved_from = if last != idx {
            let mh = self.keys.get(idx as usize).index_hash();
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

    /// Appends to `w` the records of the buckets set in `mask` for which
    /// `keep(index, record hash)` holds, and returns how many. Only the hash array is
    /// scanned; a record is read only to be written.
    pub fn write_entries(
        &self,
        mask: &[u8; wire::DIGEST_BUCKETS / 8],
        w: &mut wire::Writer,
        mut keep: impl FnMut(&Membership, u32, u64) -> bool,
    ) -> u32 {
        let mut n = 0u32;
        let all = mask.iter().all(|b| *b == 0xff);
        for (i, k) in self.keys.iter().enumerate() {
            let selected = all || {
                let b = k.bucket();
                mask[b / 8] & (1 << (b % 8)) != 0
            };
            if selected && keep(self, i as u32, k.record()) {
                wire::write_entry(w, &self.entry(self.records.get(i)));
                n += 1;
            }
        }
        n
    }
}

/// The record hash over a record's fields (see docs/wire-format.md): the digest contribution.
fn hash_fields(
    name: &[u8],
    ip: &[u8; 16],
    port: u16,
    inc: u32,
    state: State,
    protocol: u8,
    tags: &[u8],
) -> u64 {
    // One shot over a stack buffer: this runs on every change and every insert.
    let mut buf = [0u8; 1 + crate::name::MAX_NAME_LEN + 16 + 2 + 4 + 2 + 8];
    let name = &name[..name.len().min(crate::name::MAX_NAME_LEN)];
    buf[0] = name.len() as u8;
    let mut n = 1 + name.len();
    buf[1..n].copy_from_slice(name);
    buf[n..n + 16].copy_from_slice(ip);
    n += 16;
    buf[n..n + 2].copy_from_slice(&port.to_le_bytes());
    buf[n + 2..n + 6].copy_from_slice(&inc.to_le_bytes());
    buf[n + 6] = state.code();
    buf[n + 7] = protocol;
    n += 8;
    if !tags.is_empty() {
        buf[n..n + 8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(tags).to_le_bytes());
        n += 8;
    }
    xxhash_rust::xxh3::xxh3_64(&buf[..n])
}
