//! Members and their states.

use crate::name::Name;
use std::fmt;
use std::net::SocketAddr;

/// A member's state as one node sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Answering probes, or refuted the last accusation.
    Alive,
    /// A probe failed; dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Confirmed failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl State {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
            State::Left => 3,
        }
    }

    /// The state for a wire code.
    pub fn from_code(code: u8) -> Option<State> {
        Some(match code {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Dead,
            3 => State::Left,
            _ => return None,
        })
    }

    /// The name used by the CLI and HTTP API (`alive`, `suspect`, `failed`, `left`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "failed",
            State::Left => "left",
        }
    }

    /// Whether the member still counts as part of the cluster (alive or suspect).
    pub fn is_live(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one member, as handed to applications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its unique name.
    pub name: Name,
    /// Its advertised address.
    pub addr: SocketAddr,
    /// Its incarnation number.
    pub incarnation: u32,
    /// Its state as this node sees it.
    pub state: State,
    /// Its tags (application metadata).
    pub tags: Vec<u8>,
    /// The newest protocol version it speaks.
    pub protocol: u8,
}
