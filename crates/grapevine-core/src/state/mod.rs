//! Replicated state: what the members know, beside who they are.
//!
//! * [`hlc`]: hybrid logical clocks, which order last-write-wins writes.

pub mod hlc;

pub use hlc::{ClockError, Hlc, Timestamp};
