//! grapevine-sim: a deterministic discrete-event simulator that runs many real
//! `grapevine_core` nodes over a simulated network with latency, loss, partitions,
//! one-way cuts, crashes, restarts and slow nodes. The same seed gives the same run,
//! bit for bit.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod net;
pub mod parallel;
pub mod scenario;
pub mod sim;
pub mod sockets;
pub mod tune;

pub use net::{NetConfig, Topology};
pub use parallel::par_map;
pub use sim::{sim_addr, sim_name, NoObserver, Observer, Sim, Slowness};
pub use sockets::{Ledger, SocketCost};
