//! A look inside a node, for people (the agent's dashboard): the probe in flight, Lifeguard's
//! health score, each suspicion held with its timer and confirmations, and the depth of the
//! rumour queue. Read-only: looking changes nothing and sends nothing.

use crate::name::Name;
use std::time::Duration;

/// What a node is doing now.
#[derive(Clone, Debug, PartialEq)]
pub struct Internals {
    /// Lifeguard's local health score (0 is healthy; higher stretches probe timeouts).
    pub health_score: u32,
    /// The probe in flight, if any.
    pub probe: Option<ProbeView>,
    /// The suspicions this node holds, soonest deadline first.
    pub suspicions: Vec<SuspicionView>,
    /// Rumours waiting to be piggybacked.
    pub queue_depth: usize,
    /// This node's incarnation.
    pub incarnation: u32,
}

/// The probe in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeView {
    /// Its target.
    pub target: Name,
    /// How long ago it started.
    pub age: Duration,
    /// Whether the direct ack timed out and relays are asked.
    pub indirect: bool,
}

/// One suspicion held.
#[derive(Clone, Debug, PartialEq)]
pub struct SuspicionView {
    /// The suspect.
    pub member: Name,
    /// At which incarnation.
    pub incarnation: u32,
    /// How long ago it began.
    pub age: Duration,
    /// Until its deadline (`None` while it waits for a last-chance probe).
    pub remaining: Option<Duration>,
    /// Independent confirmations so far.
    pub confirmations: u32,
    /// Confirmations that bring the timer to its shortest.
    pub expected: u32,
}
