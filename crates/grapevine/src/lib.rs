//! grapevine: the library services embed — a gossip member over UDP and TCP, driven by tokio.
//!
//! ```no_run
//! # async fn demo() -> Result<(), grapevine::Error> {
//! let node = grapevine::Node::builder()
//!     .name("web-1")
//!     .bind("0.0.0.0:7946".parse().unwrap())
//!     .seeds(["10.0.0.2:7946", "seed.example.com:7946"])
//!     .config(grapevine::Config::lan())
//!     .start()
//!     .await?;
//! node.put(b"config/feature-x", Some(b"on".to_vec())).await?;
//! let mut events = node.events();
//! while let Some(e) = events.next().await {
//!     println!("{e:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! The protocol itself is the sans-IO [`grapevine_core`], re-exported here.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod crypto;
mod driver;
pub mod metrics;
pub mod serf;
pub mod snapshot;
pub mod transport;

pub use crypto::Keyring;
pub use driver::{
    Error, Events, Faults, KvChange, KvEntry, KvWrite, LostClaim, Node, NodeBuilder, NodeStateView,
    SlotMap, SlotOwner, Versions, Watch, MAX_SLOTS,
};
/// The sans-IO protocol core, for what this crate does not wrap.
pub use grapevine_core as core;
pub use grapevine_core::{
    Agreement, CommandError, Config, Detector, Estimate, Event, Member, Name, State, Target,
};
pub use transport::Limits;
