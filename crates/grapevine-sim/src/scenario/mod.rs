//! Scenarios: each sets up a cluster, applies faults and measures against the truth.

pub mod swim;
