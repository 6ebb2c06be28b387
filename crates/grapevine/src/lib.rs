//! grapevine: the library services embed.
//!
//! Today it re-exports the sans-IO protocol core; the tokio driver with UDP and TCP
//! transport, encryption and the async API (`Node::builder()...start().await`) is the
//! next piece of work (issue 3/6). Until then, drive [`Node`] yourself: feed it datagrams,
//! frames and timeouts, and send what `poll_transmit` returns.

#![forbid(unsafe_code)]

pub use grapevine_core::*;
