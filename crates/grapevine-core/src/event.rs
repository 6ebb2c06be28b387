//! What a node tells its application.

use crate::member::{Member, State};
use crate::name::Name;
use crate::time::Time;
use std::net::SocketAddr;

/// A change in membership as this node sees it. Every variant carries the member's
/// new view, so an observer can track states from events alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member this node did not list as alive now is: new, or back after failing or leaving.
    Joined {
        /// The member.
        member: Member,
    },
    /// A member is suspected.
    Suspected {
        /// The member.
        member: Member,
        /// Who accused it.
        accuser: Name,
        /// Whether this node's own probe raised the suspicion.
        local: bool,
    },
    /// A suspected member refuted the suspicion.
    Alive {
        /// The member.
        member: Member,
    },
    /// A member was confirmed failed.
    Failed {
        /// The member.
        member: Member,
        /// Whether this node declared it (its own suspicion timer or probe).
        local: bool,
    },
    /// A member left gracefully.
    Left {
        /// The member.
        member: Member,
    },
    /// A member's tags or address changed.
    Updated {
        /// The member.
        member: Member,
    },
    /// A dead or departed member was forgotten.
    Reaped {
        /// Its name.
        name: Name,
        /// The state it was forgotten in.
        state: State,
    },
    /// This node was accused and refuted with a higher incarnation.
    Refuted {
        /// The accusation refuted.
        accusation: State,
        /// The new incarnation.
        incarnation: u32,
    },
    /// Another node claims a name at a different address.
    Conflict {
        /// The name.
        name: Name,
        /// The address this node knows.
        known: SocketAddr,
        /// The address claimed.
        claimed: SocketAddr,
    },
    /// An anti-entropy exchange with a seed or member completed: this node is in the cluster.
    Synced {
        /// The peer.
        peer: SocketAddr,
        /// When.
        at: Time,
    },
    /// The live members came to agree, or stopped agreeing, on a tracked target.
    Agreement {
        /// The target.
        target: crate::state::Target,
        /// Whether they now agree.
        agreed: bool,
    },
    /// A user event arrived (or was raised here), once per event id.
    User {
        /// The event's id.
        id: u64,
        /// The member that raised it.
        origin: Name,
        /// Its name.
        name: String,
        /// Its payload.
        payload: Vec<u8>,
    },
}

impl Event {
    /// The member the event is about, if it is about one.
    pub fn member(&self) -> Option<&Member> {
        match self {
            Event::Joined { member }
            | Event::Suspected { member, .. }
            | Event::Alive { member }
            | Event::Failed { member, .. }
            | Event::Left { member }
            | Event::Updated { member } => Some(member),
            _ => None,
        }
    }
}
