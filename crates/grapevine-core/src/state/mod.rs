//! Replicated state: what the members know, beside who they are.
//!
//! * [`endpoint`]: per-node state, versioned, reconciled by Scuttlebutt deltas.
//! * [`hlc`]: hybrid logical clocks, which order last-write-wins writes.
//! * [`crdt`]: the merges of the shared keyspace.
//! * [`keyspace`]: the shared keyspace, its policies, tombstones and expiry.
//! * [`merkle`]: the hash tree its anti-entropy compares.
//! * [`nodes`]: everyone's per-node state as held here, in a tree by node name.
//! * [`reconcile`]: the exchange that compares two trees and moves what differs.

pub mod crdt;
pub mod endpoint;
pub mod hlc;
pub mod keyspace;
pub mod merkle;
pub mod nodes;
pub mod reconcile;

pub use hlc::{ClockError, Hlc, Timestamp};
