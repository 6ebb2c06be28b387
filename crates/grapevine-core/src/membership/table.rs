//! The member table: compact records, a name index and the incremental digest.
//!
//! A node of a 10,000-member cluster holds 10,000 records, and the simulator holds
//! 10,000 such nodes, so a record is kept to 32 bytes (the name inline, an IPv4 address
//! inline; IPv6 addresses and tags, which most members of a large simulation lack, in side
//! tables) plus a 12-byte entry in a parallel array of hashes: the name's (index, digest
//! bucket) and the record's (digest, anti-entropy filters). An exchange scans only the
//! hashes, 12 bytes a member, and reads the full record of the members it sends.

use crate::chunked::ChunkedVec;
use crate::digest::Digest;
use crate::member::{Member, State};
use crate::membership::messages::EntryRef;
use crate::name::Name;
use crate::time::Time;
use crate::wire::{self};
use hashbrown::{HashMap, HashTable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `meta` bit: the member has tags in the side table.
const HAS_TAGS: u8 = 0x80;
/// `meta` bit: the member's address is IPv6, kept in the side table.
const IS_V6: u8 = 0x40;
/// `meta` bits: the protocol version.
const PROTOCOL_BITS: u8 = 0x3f;

/// One member as stored (its address and tags through [`Table`], which holds the
/// side tables).
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub name: Name,
    /// The IPv4 address, or zero for an IPv6 member.
    v4: [u8; 4],
    port: u16,
    pub incarnation: u32,
    pub state: State,
    /// Protocol version (low 6 bits), `IS_V6` and `HAS_TAGS`.
    meta: u8,
}

impl Record {
    /// A record without its address, which [`Table::insert`] sets.
    pub fn new(name: Name, incarnation: u32, state: State, protocol: u8) -> Self {
        Record {
            name,
            v4: [0; 4],
            port: 0,
            incarnation,
            state,
            meta: protocol & PROTOCOL_BITS,
        }
    }

    /// The newest protocol version the member speaks (versions are below 64).
    pub fn protocol(&self) -> u8 {
        self.meta & PROTOCOL_BITS
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.meta = (self.meta & !PROTOCOL_BITS) | (protocol & PROTOCOL_BITS);
    }

    fn has_tags(&self) -> bool {
        self.meta & HAS_TAGS != 0
    }

    fn is_v6(&self) -> bool {
        self.meta & IS_V6 != 0
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

/// A record's address, with the side table of IPv6 addresses.
fn addr_in(r: &Record, v6: &HashMap<Name, [u8; 16]>) -> SocketAddr {
    let ip = if r.is_v6() {
        IpAddr::V6(Ipv6Addr::from(v6.get(&r.name).copied().unwrap_or_default()))
    } else {
        IpAddr::V4(Ipv4Addr::from(r.v4))
    };
    SocketAddr::new(ip, r.port)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps (as records store them).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match split(addr) {
        Ok(v4) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), addr.port()),
        Err(_) => addr,
    }
}

/// The address index's hash.
fn addr_hash(addr: SocketAddr) -> u64 {
    use crate::filter::mix;
    let ip = match split(addr) {
        Ok(v4) => u128::from(u32::from_be_bytes(v4)),
        Err(v6) => u128::from_be_bytes(v6),
    };
    mix(mix(ip as u64 ^ u64::from(addr.port())) ^ (ip >> 64) as u64)
}

/// An address as IPv4 (mapped IPv6 addresses included), or as IPv6.
fn split(addr: SocketAddr) -> Result<[u8; 4], [u8; 16]> {
    match addr.ip() {
        IpAddr::V4(v4) => Ok(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Ok(v4.octets()),
            None => Err(v6.octets()),
        },
    }
}

/// What `remove` did to indices: `moved` now lives at `removed`.
pub(crate) struct Removal {
    pub removed: u32,
    pub moved_from: Option<u32>,
}

/// The table of members, self included.
pub(crate) struct Table {
    records: ChunkedVec<Record>,
    keys: ChunkedVec<Keys>,
    index: HashTable<u32>,
    /// Records by address: to tell whether a datagram comes from a member (about 8 bytes a
    /// member).
    by_addr: HashTable<u32>,
    /// When each member that is not alive entered its state (for reaping and reclaim).
    since: HashMap<Name, Time>,
    /// Tags of the members that have any.
    tags: HashMap<Name, Box<[u8]>>,
    /// Addresses of the IPv6 members.
    v6: HashMap<Name, [u8; 16]>,
    digest: Digest,
    live: usize,
}

impl Table {
    pub fn new() -> Self {
        Table {
            records: ChunkedVec::new(),
            keys: ChunkedVec::new(),
            index: HashTable::new(),
            by_addr: HashTable::new(),
            since: HashMap::new(),
            tags: HashMap::new(),
            v6: HashMap::new(),
            digest: Digest::default(),
            live: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Makes room in the name index for `additional` more members, so a large exchange
    /// grows it once rather than by repeated doubling and rehashing.
    pub fn reserve(&mut self, additional: usize) {
        let keys = &self.keys;
        self.index
            .reserve(additional, |&i| keys.get(i as usize).index_hash());
        let (records, v6) = (&self.records, &self.v6);
        self.by_addr.reserve(additional, |&i| {
            addr_hash(addr_in(records.get(i as usize), v6))
        });
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

    /// The records at `addr` (a restarted member may share its address with its old name's).
    pub fn at_addr(&self, addr: SocketAddr) -> impl Iterator<Item = u32> + '_ {
        let addr = canonical(addr);
        self.by_addr
            .iter_hash(addr_hash(addr))
            .copied()
            .filter(move |&i| self.addr_of(self.records.get(i as usize)) == addr)
    }

    /// Re-files record `idx` in the address index, from `old` (if filed) to its address now.
    fn refile(&mut self, idx: u32, old: Option<SocketAddr>) {
        if let Some(old) = old {
            if let Ok(e) = self.by_addr.find_entry(addr_hash(old), |&i| i == idx) {
                e.remove();
            }
        }
        let now = self.addr_of(self.records.get(idx as usize));
        let (records, v6) = (&self.records, &self.v6);
        self.by_addr.insert_unique(addr_hash(now), idx, |&i| {
            addr_hash(addr_in(records.get(i as usize), v6))
        });
    }

    /// The address of a record.
    pub fn addr_of(&self, r: &Record) -> SocketAddr {
        addr_in(r, &self.v6)
    }

    /// The address as 16 bytes (IPv4 mapped into IPv6), as the record hash takes it.
    fn ip16(&self, r: &Record) -> [u8; 16] {
        if r.is_v6() {
            self.v6.get(&r.name).copied().unwrap_or_default()
        } else {
            Ipv4Addr::from(r.v4).to_ipv6_mapped().octets()
        }
    }

    /// Sets a record's address, in place or in the side table.
    fn store_addr(&mut self, idx: u32, addr: SocketAddr) {
        let r = self.records.get_mut(idx as usize);
        r.port = addr.port();
        match split(addr) {
            Ok(v4) => {
                r.v4 = v4;
                if r.is_v6() {
                    r.meta &= !IS_V6;
                    let name = r.name.clone();
                    self.v6.remove(&name);
                }
            }
            Err(v6) => {
                r.v4 = [0; 4];
                r.meta |= IS_V6;
                let name = r.name.clone();
                self.v6.insert(name, v6);
            }
        }
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
            addr: self.addr_of(r),
            incarnation: r.incarnation,
            state: r.state,
            tags: self.tags_of(r).to_vec(),
            protocol: r.protocol(),
        }
    }

    fn entry<'a>(&'a self, r: &'a Record) -> EntryRef<'a> {
        EntryRef {
            name: r.name.as_bytes(),
            addr: self.addr_of(r),
            incarnation: r.incarnation,
            state: r.state,
            protocol: r.protocol(),
            tags: self.tags_of(r),
        }
    }

    /// The record's hash: its contribution to the digest and its filter key, equal on two
    /// nodes iff they agree on the record. `name_hash` is `r.name.hash64()`.
    fn record_hash(&self, r: &Record, name_hash: u64) -> u64 {
        hash_fields(
            name_hash,
            &self.ip16(r),
            r.port,
            r.incarnation,
            r.state,
            r.protocol(),
            self.tags_of(r),
        )
    }

    fn rehash(&mut self, idx: u32) {
        let r = self.records.get(idx as usize);
        let h = self.record_hash(r, r.name.hash64());
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

    pub fn insert(&mut self, rec: Record, addr: SocketAddr, tags: &[u8], now: Time) -> u32 {
        let h = rec.name.hash64();
        self.insert_hashed(rec, h, addr, tags, now)
    }

    /// Like `insert`, with `rec.name.hash64()` already computed.
    pub fn insert_hashed(
        &mut self,
        mut rec: Record,
        h: u64,
        addr: SocketAddr,
        tags: &[u8],
        now: Time,
    ) -> u32 {
        const _: () = assert!(std::mem::size_of::<Record>() == 32);
        debug_assert_eq!(h, rec.name.hash64());
        let idx = self.records.len() as u32;
        if !tags.is_empty() {
            rec.meta |= HAS_TAGS;
            self.tags.insert(rec.name.clone(), tags.into());
        }
        if rec.state.is_live() {
            self.live += 1;
        }
        if rec.state != State::Alive {
            self.since.insert(rec.name.clone(), now);
        }
        self.records.push(rec);
        self.store_addr(idx, addr);
        self.refile(idx, None);
        let record = self.record_hash(self.records.get(idx as usize), h);
        self.digest.add(h, record);
        self.keys.push(Keys::new(h, record));
        let keys = &self.keys;
        self.index
            .insert_unique(index_hash(h), idx, |&i| keys.get(i as usize).index_hash());
        idx
    }

    /// Changes a record in place, keeping the digest, live count and state times right.
    /// `addr`, when given, is the record's new address.
    pub fn update<R>(
        &mut self,
        idx: u32,
        now: Time,
        addr: Option<SocketAddr>,
        f: impl FnOnce(&mut Record) -> R,
    ) -> R {
        let k = *self.keys.get(idx as usize);
        let before_state = self.records.get(idx as usize).state;
        self.digest.remove(k.name_hash(), k.record());
        let out = f(self.records.get_mut(idx as usize));
        if let Some(addr) = addr {
            let old = self.addr_of(self.records.get(idx as usize));
            if old != canonical(addr) {
                self.store_addr(idx, addr);
                self.refile(idx, Some(old));
            }
        }
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
        let gone = self.addr_of(self.records.get(idx as usize));
        if let Ok(e) = self.by_addr.find_entry(addr_hash(gone), |&i| i == idx) {
            e.remove();
        }
        self.digest.remove(k.name_hash(), k.record());
        let rec = self.records.get(idx as usize);
        self.tags.remove(&rec.name);
        self.v6.remove(&rec.name);
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
            let moved = self.addr_of(self.records.get(idx as usize));
            if let Some(slot) = self.by_addr.find_mut(addr_hash(moved), |&i| i == last) {
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
        mask: &[u8; crate::membership::messages::DIGEST_BUCKETS / 8],
        w: &mut wire::Writer,
        mut keep: impl FnMut(&Table, u32, u64) -> bool,
    ) -> u32 {
        let mut n = 0u32;
        let all = mask.iter().all(|b| *b == 0xff);
        for (i, k) in self.keys.iter().enumerate() {
            let selected = all || {
                let b = k.bucket();
                mask[b / 8] & (1 << (b % 8)) != 0
            };
            if selected && keep(self, i as u32, k.record()) {
                crate::membership::messages::write_entry(w, &self.entry(self.records.get(i)));
                n += 1;
            }
        }
        n
    }
}

/// The record hash over a record's fields (see docs/wire-format.md): the digest contribution.
/// A chain of splitmix64 finalisers over the fields packed in words, starting from the name's
/// hash, which every insert has already computed: this runs on every change and every insert.
fn hash_fields(
    name_hash: u64,
    ip: &[u8; 16],
    port: u16,
    inc: u32,
    state: State,
    protocol: u8,
    tags: &[u8],
) -> u64 {
    use crate::filter::mix;
    let ip = u128::from_le_bytes(*ip);
    let rest = u64::from(port)
        | u64::from(inc) << 16
        | u64::from(state.code()) << 48
        | u64::from(protocol) << 56;
    let mut r = mix(name_hash);
    r = mix(r ^ ip as u64);
    r = mix(r ^ (ip >> 64) as u64);
    r = mix(r ^ rest);
    if !tags.is_empty() {
        r = mix(r ^ xxhash_rust::xxh3::xxh3_64(tags));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> Table {
        let mut m = Table::new();
        for (name, addr) in entries {
            let rec = Record::new(Name::new(name).unwrap(), 1, State::Alive, 1);
            m.insert(rec, addr.parse().unwrap(), &[], Time::ZERO);
        }
        m
    }

    #[test]
    fn addresses_of_both_families_round_trip_and_hash_alike() {
        let mut m = table(&[
            ("a", "10.0.0.1:7946"),
            ("b", "[2001:db8::1]:7946"),
            ("c", "[::ffff:10.0.0.3]:7946"),
        ]);
        let addr = |m: &Table, n: &str| {
            let i = m.find(&Name::new(n).unwrap()).unwrap();
            m.addr_of(m.get(i))
        };
        assert_eq!(addr(&m, "a"), "10.0.0.1:7946".parse().unwrap());
        assert_eq!(addr(&m, "b"), "[2001:db8::1]:7946".parse().unwrap());
        // A mapped address is stored, and hashed, as the IPv4 address it maps.
        assert_eq!(addr(&m, "c"), "10.0.0.3:7946".parse().unwrap());
        assert_eq!(m.v6.len(), 1);

        // Moving between families keeps the side table and the digest right.
        let b = m.find(&Name::new("b").unwrap()).unwrap();
        m.update(
            b,
            Time::ZERO,
            Some("10.0.0.2:7946".parse().unwrap()),
            |_| (),
        );
        assert!(m.v6.is_empty());
        let a = m.find(&Name::new("a").unwrap()).unwrap();
        m.update(
            a,
            Time::ZERO,
            Some("[2001:db8::a]:1".parse().unwrap()),
            |_| (),
        );
        let same = table(&[
            ("a", "[2001:db8::a]:1"),
            ("b", "10.0.0.2:7946"),
            ("c", "10.0.0.3:7946"),
        ]);
        assert_eq!(m.digest().root(), same.digest().root());
        assert_eq!(m.digest().buckets(), same.digest().buckets());
        let r = m.remove(m.find(&Name::new("a").unwrap()).unwrap());
        assert!(m.v6.is_empty());
        assert_eq!(r.removed, a);
    }
}
