//! Scenarios: each sets up a cluster, applies faults and measures against the truth.

pub mod aggregate;
pub mod merkle;
pub mod rumor;
pub mod spread;
pub mod state;
pub mod swim;
