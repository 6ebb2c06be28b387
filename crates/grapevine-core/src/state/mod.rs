//! Replicated state: what the members know, beside who they are.
//!
//! * [`endpoint`]: per-node state, versioned, reconciled by Scuttlebutt deltas.
//! * [`hlc`]: hybrid logical clocks, which order last-write-wins writes.
//! * [`crdt`]: the merges of the shared keyspace.
//! * [`keyspace`]: the shared keyspace, its policies, tombstones and expiry.
//! * [`merkle`]: the hash tree its anti-entropy compares.
//! * [`nodes`]: everyone's per-node state as held here, in a tree by node name.
//! * [`reconcile`]: the exchange that compares two trees and moves what differs.
//!
//! The node's side: `replication` (rounds, their back-off and budget, exchanges opened by
//! pings), `rounds` (its sends), `agreement` (Cassandra-style agreement checks) and
//! `commands` (the application's writes).

mod agreement;
mod commands;
pub mod crdt;
pub mod endpoint;
pub mod hlc;
pub mod keyspace;
pub(crate) mod kv;
pub mod merkle;
pub(crate) mod messages;
pub mod nodes;
pub mod reconcile;
pub(crate) mod replication;
mod rounds;
mod slots;
mod target;
pub(crate) mod value;

pub use hlc::{ClockError, Hlc, Timestamp};
pub use kv::{KvChange, KvEntry, KvWrite};
pub use slots::{LostClaim, SlotMap, SlotOwner, MAX_SLOTS};
pub use target::{Agreement, Target, Versions};
