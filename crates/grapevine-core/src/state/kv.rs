//! The shared keyspace as key-value clients see it (Consul's KV): entries with their modify
//! index, the changes since an index, and check-and-set, checked against this replica.

use super::keyspace::{Keyspace, Value};
use super::replication::Replication;
use crate::error::CommandError;
use crate::time::Time;

/// A shared key as a key-value client sees it: its value and the local change count when
/// it last changed (Consul's `ModifyIndex`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
    /// The keyspace's change count when it last changed here.
    pub modify_index: u64,
    /// The member whose write this value is: after concurrent writes, each writer can see
    /// whether it won.
    pub writer: String,
    /// The write's hybrid-logical-clock timestamp (microseconds since the UNIX epoch, and a
    /// logical count): later wins, ties by writer name.
    pub written_at: (u64, u32),
    /// The flags stored with the value (Consul's `Flags`).
    pub flags: u64,
}

/// A write to a shared key as a key-value client makes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvWrite {
    /// The value, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
    /// Opaque flags stored and replicated with the value.
    pub flags: u64,
    /// Check-and-set: write only if the key's modify index here is this (0: only if the
    /// key holds no value).
    pub cas: Option<u64>,
}

/// A shared key that changed: its value now (`None`: deleted or expired) and the local
/// change count at which it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvChange {
    /// The key.
    pub key: Vec<u8>,
    /// Its value now, or `None` if it was deleted or has expired.
    pub value: Option<Vec<u8>>,
    /// The keyspace's change count when it changed here.
    pub modify_index: u64,
}

/// The value of a last-write-wins key, unless it is a tombstone (other policies' values are
/// not bytes a key-value client can be handed).
fn lww_value(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Lww(l) => l.value.as_deref(),
        _ => None,
    }
}

/// The key `key` (or, with `prefix`, every key under it) that holds a value, at physical
/// time `phys`, in key order.
pub(crate) fn entries(ks: &Keyspace, phys: u64, key: &[u8], prefix: bool) -> Vec<KvEntry> {
    let entry = |k: &[u8], v: &Value| match v {
        Value::Lww(l) => l.value.as_ref().map(|value| KvEntry {
            key: k.to_vec(),
            value: value.clone(),
            modify_index: ks.modified(k).unwrap_or(0),
            writer: l.writer.as_str().to_string(),
            written_at: (l.at.physical, l.at.logical),
            flags: l.flags,
        }),
        _ => None,
    };
    let mut out: Vec<KvEntry> = if prefix {
        // Entries are kept in key-hash order: a prefix means a scan.
        ks.iter(phys)
            .filter(|(k, _)| k.starts_with(key))
            .filter_map(|(k, v)| entry(k, v))
            .collect()
    } else {
        ks.get(key, phys)
            .and_then(|v| entry(key, v))
            .into_iter()
            .collect()
    };
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The keys under `prefix` that changed after change count `after`, deletions included, in
/// the order of their changes.
pub(crate) fn changes(ks: &Keyspace, phys: u64, prefix: &[u8], after: u64) -> Vec<KvChange> {
    let mut out: Vec<KvChange> = ks
        .changed_since(after)
        .filter(|(k, _, _)| k.starts_with(prefix))
        .map(|(k, v, at)| KvChange {
            key: k.to_vec(),
            value: (!v.is_gone(phys))
                .then(|| lww_value(v))
                .flatten()
                .map(<[u8]>::to_vec),
            modify_index: at,
        })
        .collect();
    out.sort_by_key(|c| c.modify_index);
    out
}

impl Replication {
    /// Check-and-set: writes `value` (`None`: deletes) only if the key's modify index here
    /// is `cas` (0: only if it holds no value); returns whether it wrote. Concurrent writes
    /// on other members still resolve by the key's policy.
    pub fn put_cas(
        &mut self,
        now: Time,
        key: &[u8],
        value: Option<Vec<u8>>,
        cas: u64,
    ) -> Result<bool, CommandError> {
        self.kv_write(
            now,
            key,
            KvWrite {
                value,
                flags: 0,
                cas: Some(cas),
            },
        )
    }

    /// A key-value client's write: with flags, and checked against `cas` if given; returns
    /// whether it wrote. Deleting a key that holds no value writes nothing and succeeds.
    pub fn kv_write(&mut self, now: Time, key: &[u8], w: KvWrite) -> Result<bool, CommandError> {
        let phys = self.physical(now);
        // Any live value counts for the check (a key holding a counter is not "absent"),
        // as it always has.
        let holds = self.keyspace.get(key, phys).is_some();
        let current = if holds {
            self.keyspace.modified(key).unwrap_or(0)
        } else {
            0
        };
        if w.cas.is_some_and(|cas| cas != current) {
            return Ok(false);
        }
        if w.value.is_none() && !holds {
            return Ok(true);
        }
        self.put_shared_flags(now, key, w.value, w.flags)?;
        Ok(true)
    }
}
