//! The member table: compact records, a name index and the incremental digest.
//!
//! A node of a 10,000-member cluster holds 10,000 records, and the simulator holds
//! 10,000 such nodes, so a record is kept to 48 bytes: the name inline, its hash cached
//! (scans, lookups and digest buckets never rehash it), the address packed, and tags,
//! which most members of a large simulation lack, in a side table.

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
    /// `name.hash64()`, cached.
    hash: u64,
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
        let hash = name.hash64();
        Record {
            name,
            hash,
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

    fn bucket(&self) -> usize {
        Digest::bucket(self.hash)
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
    /// Tags of the members that have any.
    tags: HashMap<Name, Box<[u8]>>,
    digest: Digest,
    live: usize,
}

impl Membership {
    pub fn new() -> Self {
        Membership {
            records: ChunkedVec::new(),
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

    pub fn find(&self, name: &Name) -> Option<u32> {
        let h = name.hash64();
        self.index
            .find(h, |&i| {
                let r = self.records.get(i as usize);
                r.hash == h && r.name == *name
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

    /// Whether a received entry says exactly what this record says.
    pub fn same_as(&self, r: &Record, e: &wire::Entry) -> bool {
        r.incarnation == e.incarnation
            && r.state == e.state
            && r.protocol() == e.protocol
            && r.addr() == e.addr
            && self.tags_of(r) == e.tags.as_slice()
    }

    /// The record's contribution to the digest: equal on two nodes iff they agree on it.
    fn record_hash(&self, r: &Record) -> u64 {
        // One shot over a stack buffer: this runs on every change and every insert.
        let name = r.name.as_bytes();
        let mut buf = [0u8; 1 + crate::name::MAX_NAME_LEN + 16 + 2 + 4 + 2 + 8];
        buf[0] = name.len() as u8;
        let mut n = 1 + name.len();
        buf[1..n].copy_from_slice(name);
        buf[n..n + 16].copy_from_slice(&r.ip);
        n += 16;
        buf[n..n + 2].copy_from_slice(&r.port.to_le_bytes());
        buf[n + 2..n + 6].copy_from_slice(&r.incarnation.to_le_bytes());
        buf[n + 6] = r.state.code();
        buf[n + 7] = r.protocol();
        n += 8;
        let tags = self.tags_of(r);
        if !tags.is_empty() {
            buf[n..n + 8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(tags).to_le_bytes());
            n += 8;
        }
        xxhash_rust::xxh3::xxh3_64(&buf[..n])
    }

    /// A cheap 64-bit key of what a record says, for anti-entropy filters: the cached name
    /// hash mixed with incarnation, state, protocol and address. Tags are left out: they
    /// only change with the incarnation.
    pub fn filter_key(r: &Record) -> u64 {
        Self::key_of(r.hash, r.incarnation, r.state, r.protocol(), &r.ip, r.port)
    }

    /// The filter key of a received entry (equal to the record's when they agree).
    pub fn entry_key(e: &wire::Entry) -> u64 {
        let (ip, port) = pack(e.addr);
        Self::key_of(
            e.name.hash64(),
            e.incarnation,
            e.state,
            e.protocol & !HAS_TAGS,
            &ip,
            port,
        )
    }

    fn key_of(name: u64, inc: u32, state: State, protocol: u8, ip: &[u8; 16], port: u16) -> u64 {
        let ip = u128::from_le_bytes(*ip);
        let fields = u64::from(inc)
            | u64::from(state.code()) << 32
            | u64::from(protocol) << 40
            | u64::from(port) << 48;
        crate::filter::mix(
            name ^ crate::filter::mix(fields ^ (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17)),
        )
    }

    /// Replaces member `idx`'s tags, keeping the digest right.
    pub fn set_tags(&mut self, idx: u32, tags: &[u8]) {
        let r = self.records.get(idx as usize);
        if self.tags_of(r) == tags {
            return;
        }
        let (h, old) = (r.hash, self.record_hash(r));
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
        let new = self.record_hash(self.records.get(idx as usize));
        self.digest.add(h, new);
    }

    pub fn since(&self, name: &Name) -> Option<Time> {
        self.since.get(name).copied()
    }

    pub fn non_alive(&self) -> impl Iterator<Item = (&Name, Time)> {
        self.since.iter().map(|(n, t)| (n, *t))
    }

    pub fn insert(&mut self, mut rec: Record, tags: &[u8], now: Time) -> u32 {
        const _: () = assert!(std::mem::size_of::<Record>() == 48);
        let idx = self.records.len() as u32;
        let h = rec.hash;
        if !tags.is_empty() {
            rec.meta |= HAS_TAGS;
            self.tags.insert(rec.name.clone(), tags.into());
        }
        self.digest.add(h, self.record_hash(&rec));
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
        let rec = self.records.get(idx as usize);
        let (h, before_state) = (rec.hash, rec.state);
        self.digest.remove(h, self.record_hash(rec));
        let rec = self.records.get_mut(idx as usize);
        let out = f(rec);
        let rec = self.records.get(idx as usize);
        self.digest.add(h, self.record_hash(rec));
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
        let h = rec.hash;
        self.digest.remove(h, self.record_hash(rec));
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
        let moved_from = if last != idx {
            let mh = self.records.get(idx as usize).hash;
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

    /// Appends to `w` the records of the buckets set in `mask` for which `keep` holds, and
    /// returns how many.
    pub fn write_entries(
        &self,
        mask: &[u8; wire::DIGEST_BUCKETS / 8],
        w: &mut wire::Writer,
        mut keep: impl FnMut(&Membership, &Record) -> bool,
    ) -> u32 {
        let mut n = 0u32;
        // While a node catches up every bucket differs: then skip hashing each name.
        let all = mask.iter().all(|b| *b == 0xff);
        for rec in self.records.iter() {
            let selected = all || {
                let b = rec.bucket();
                mask[b / 8] & (1 << (b % 8)) != 0
            };
            if selected && keep(self, rec) {
                wire::write_entry(w, &self.entry(rec));
                n += 1;
            }
        }
        n
    }
}
