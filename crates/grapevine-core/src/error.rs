//! The errors commands return.

use crate::member::State;
use crate::membership::messages::MAX_TAGS_LEN;

/// An error from a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Tags over the wire limit.
    #[error("tags are {len} bytes, the limit is {MAX_TAGS_LEN}")]
    TagsTooLong {
        /// Their length.
        len: usize,
    },
    /// The node has left.
    #[error("the node has left the cluster")]
    Left,
    /// Over this member's rate of user events (`events_per_origin`).
    #[error("too many user events: at most {burst} at once and {per_second} a second")]
    RateLimited {
        /// The burst allowed.
        burst: u32,
        /// The sustained rate allowed, a second.
        per_second: u32,
    },
    /// No member of that name is known.
    #[error("no member named {0:?} is known")]
    UnknownMember(String),
    /// Force-leave applies to failed members only: a live one would refute it.
    #[error("{name:?} is {state:?}, not failed: only a failed member can be forced to leave")]
    NotFailed {
        /// The member.
        name: String,
        /// Its state here.
        state: State,
    },
    /// An ownership map's name: empty, over 128 bytes, or holding a `/`.
    #[error("a map name is 1 to 128 bytes with no '/': {0:?}")]
    MapName(String),
    /// Slots outside an ownership map.
    #[error("slots {start}..{end} are not within 0..{max}")]
    Slots {
        /// The first slot asked for.
        start: u32,
        /// One past the last.
        end: u32,
        /// The map's size.
        max: u32,
    },
    /// A key, value or name over its wire limit.
    #[error("{what} is {len} bytes, the limit is {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// `Ok` if `len` is within `max`, else the typed error naming `what`.
pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CommandError> {
    if len > max {
        return Err(CommandError::TooLong { what, len, max });
    }
    Ok(())
}
