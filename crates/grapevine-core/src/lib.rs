//! grapevine-core: the grapevine gossip protocol as pure state machines.
//!
//! Bytes and the current time go in; datagrams and frames to send, membership
//! events and the next deadline come out. Nothing here reads a clock, opens a
//! socket, spawns a task or touches a global RNG, so the same inputs always give
//! the same outputs: the simulator runs thousands of these nodes deterministically,
//! and the networked driver runs one.
//!
//! Start at [`Node`]; the wire format is in [`wire`]; the profiles in [`Config`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod aggregate;
mod chunked;
pub mod config;
mod detection;
pub mod digest;
mod error;
pub mod event;
pub mod filter;
pub mod incarnation;
pub mod member;
mod membership;
pub mod name;
pub mod node;
mod replication;
pub mod roots;
pub mod rumor;
pub mod state;
pub mod stats;
pub mod time;
pub mod wire;

pub use admission::{Limiter, Rate};
pub use aggregate::{AggregateError, Estimate};
pub use config::{Config, ConfigError, Detector, ProbeSelection};
pub use event::Event;
pub use member::{Member, State};
pub use name::{Name, NameError};
pub use node::{Agreement, CommandError, Node, Target, Transmit};
pub use replication::ReplicationStats;
pub use stats::{DropReason, Stats};
pub use time::Time;
