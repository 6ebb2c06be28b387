//! Replicated state: what the members know, beside who they are.
//!
//! * [`hlc`]: hybrid logical clocks, which order last-write-wins writes.
//! * [`crdt`]: the merges of the shared keyspace.

pub mod crdt;
pub mod hlc;

pub use hlc::{ClockError, Hlc, Timestamp};
