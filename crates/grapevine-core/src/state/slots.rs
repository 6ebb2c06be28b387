//! Ownership maps (Redis Cluster's slots, Cassandra's token ranges): each slot of a map is
//! a shared key holding an epoch register, so a claim at a higher epoch wins on every
//! member, and equal epochs break by owner name. A member remembers its own claims, so it
//! can tell which it lost.

use super::crdt::EpochRegister;
use super::keyspace::Value;
use super::replication::Replication;
use crate::error::CommandError;
use crate::node::context::Ctx;
use crate::time::Time;
use std::collections::BTreeMap;
use std::ops::Range;

/// The most slots an ownership map has (Redis Cluster's 16,384).
pub const MAX_SLOTS: u32 = 16_384;

/// The longest map name, in bytes.
const MAX_MAP_NAME: usize = 128;

/// Who owns a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotOwner {
    /// The owner's name.
    pub owner: String,
    /// The epoch of its claim.
    pub epoch: u64,
    /// The address it claimed with.
    pub addr: String,
}

/// A claim of this node that another, higher one overrode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostClaim {
    /// The slot.
    pub slot: u32,
    /// The epoch this node claimed it at.
    pub epoch: u64,
    /// The claim that won.
    pub winner: SlotOwner,
}

/// An ownership map as held here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// Each claimed slot's owner.
    pub owners: BTreeMap<u32, SlotOwner>,
    /// This node's claims that lost.
    pub lost: Vec<LostClaim>,
}

/// The shared-key prefix of an ownership map's slots.
fn slot_prefix(map: &str) -> Vec<u8> {
    format!("__own/{map}/").into_bytes()
}

/// The shared key of one slot.
fn slot_key(map: &str, slot: u32) -> Vec<u8> {
    format!("__own/{map}/{slot:05}").into_bytes()
}

/// Why a claim is refused: a map name that is empty, too long or holds a `/`, or slots
/// outside `0..MAX_SLOTS`.
pub(crate) fn check_claim(map: &str, slots: &Range<u32>) -> Result<(), CommandError> {
    if map.is_empty() || map.len() > MAX_MAP_NAME || map.contains('/') {
        return Err(CommandError::MapName(map.to_string()));
    }
    if slots.start >= slots.end || slots.end > MAX_SLOTS {
        return Err(CommandError::Slots {
            start: slots.start,
            end: slots.end,
            max: MAX_SLOTS,
        });
    }
    Ok(())
}

impl Replication {
    /// Claims `slots` of `map` for this node at `epoch` (default: one above the map's
    /// highest here); returns the epoch claimed at.
    pub fn claim(
        &mut self,
        ctx: &Ctx,
        now: Time,
        map: &str,
        slots: Range<u32>,
        epoch: Option<u64>,
    ) -> Result<u64, CommandError> {
        check_claim(map, &slots)?;
        let epoch = epoch.unwrap_or_else(|| {
            let phys = self.physical(now);
            let prefix = slot_prefix(map);
            self.keyspace
                .iter(phys)
                .filter(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(_, v)| match v {
                    Value::Epoch(e) => Some(e.epoch),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
                .saturating_add(1)
        });
        let claim = Value::Epoch(EpochRegister {
            epoch,
            owner: ctx.me.name.clone(),
            value: ctx.me.addr.to_string().into_bytes(),
        });
        for slot in slots {
            self.merge_shared(&slot_key(map, slot), &claim, now);
            self.claims.insert((map.to_string(), slot), epoch);
        }
        Ok(epoch)
    }

    /// The claimed slots of `map` as held here, and this node's claims that lost.
    pub fn slot_map(&self, ctx: &Ctx, now: Time, map: &str) -> SlotMap {
        let phys = self.physical(now);
        let prefix = slot_prefix(map);
        let mut owners = BTreeMap::new();
        for (k, v) in self.keyspace.iter(phys) {
            let Some(slot) = k
                .strip_prefix(prefix.as_slice())
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Value::Epoch(e) = v {
                owners.insert(
                    slot,
                    SlotOwner {
                        owner: e.owner.as_str().to_string(),
                        epoch: e.epoch,
                        addr: String::from_utf8_lossy(&e.value).into_owned(),
                    },
                );
            }
        }
        let me = ctx.me.name.as_str();
        let lost = self
            .claims
            .iter()
            .filter(|((m, _), _)| m == map)
            .filter_map(|((_, slot), epoch)| {
                let o = owners.get(slot)?;
                (o.owner != me).then(|| LostClaim {
                    slot: *slot,
                    epoch: *epoch,
                    winner: o.clone(),
                })
            })
            .collect();
        SlotMap { owners, lost }
    }
}
