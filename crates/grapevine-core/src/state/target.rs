//! What agreement checks are about: a target whose value members publish, the verdict, and
//! the targets a node tracks.

use crate::name::Name;
use std::collections::BTreeMap;

/// Something whose value the cluster may agree on: a shared key, or a key of one member's
/// own state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A shared key.
    Shared(Vec<u8>),
    /// `(member, key)`: a key of that member's state.
    NodeKey(Name, String),
    /// The whole shared keyspace (its Merkle root): agreement means every live member holds
    /// exactly the same keys, versions and tombstones.
    Keyspace,
}

impl Target {
    /// The key of a member's own state under which it publishes what it holds of this.
    pub fn seen_key(&self) -> String {
        let h = match self {
            Target::Shared(k) => xxhash_rust::xxh3::xxh3_64(k),
            Target::Keyspace => 0x6b65_7973_7061_6365,
            Target::NodeKey(n, k) => {
                let mut b = n.as_bytes().to_vec();
                b.push(0);
                b.extend_from_slice(k.as_bytes());
                xxhash_rust::xxh3::xxh3_64(&b) ^ 1
            }
        };
        format!("__seen/{h:016x}")
    }
}

/// Whether the live members agree on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// Every live member publishes the value held here.
    pub agreed: bool,
    /// Live members that publish another value.
    pub differ: Vec<Name>,
    /// Live members that publish nothing for it (yet).
    pub unknown: Vec<Name>,
}

/// The targets a node tracks, and those the cluster agreed on at the last check.
#[derive(Default)]
pub(crate) struct Tracking {
    pub tracked: Vec<Target>,
    pub agreed: Vec<Target>,
}

impl Tracking {
    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }
}

/// What the live members publish under one key of their own state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// Every live member publishes the same value.
    pub agreed: bool,
    /// Each value published, with the members that publish it.
    pub versions: BTreeMap<Vec<u8>, Vec<String>>,
    /// Live members that publish nothing under the key.
    pub unknown: Vec<String>,
}
