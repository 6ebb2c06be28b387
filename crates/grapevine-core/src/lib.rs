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
#![deny(missing_docs)]

mod admission;
mod aggregate;
mod chunked;
pub mod config;
mod detection;
mod digest;
mod error;
mod event;
pub mod filter;
mod incarnation;
pub mod inspect;
mod member;
mod membership;
mod message;
mod name;
mod node;
mod roots;
mod rumor;
pub mod serf;
pub mod state;
mod stats;
mod time;

/// The wire format: packets, the bounded codec and the table of message codes (the byte
/// layer, in `wire/`, which knows nothing of what messages mean), and every protocol's
/// messages, re-exported from their protocols for those who encode or decode them.
pub mod wire {
    mod codec;
    mod codes;
    mod fields;
    mod framing;

    pub(crate) use codec::{Body, Reader, Writer};
    pub use codes::{frame_limit, MessageType, MAX_FRAME};
    pub use fields::NodeAddr;
    pub(crate) use fields::{read_name, read_node, write_node};
    pub(crate) use framing::FrameWriter;
    pub use framing::*;

    pub use crate::aggregate::messages::*;
    pub use crate::detection::messages::*;
    pub use crate::membership::messages::*;
    pub use crate::message::{decode_packet, Message};
    pub use crate::rumor::messages::*;
    pub use crate::state::messages::*;
    pub use crate::state::value::{MAX_KEY_LEN, MAX_VALUE_LEN};
}

pub use admission::{Limiter, Rate};
pub use aggregate::{AggregateError, Estimate, MAX_METRICS};
pub use config::{Config, ConfigError, Detector, ProbeSelection};
pub use event::Event;
pub use member::{Member, State};
pub use name::{Name, NameError, MAX_NAME_LEN};
pub use node::{
    Agreement, CommandError, KvChange, KvEntry, KvWrite, LostClaim, Node, SlotMap, SlotOwner,
    Target, Transmit, Versions, MAX_SLOTS,
};
pub use rumor::RumorStop;
pub use state::replication::ReplicationStats;
pub use stats::{DropReason, Stats};
pub use time::Time;
