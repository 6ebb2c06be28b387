//! Rumour mongering's messages: a user event, and a recipient's feedback on it.

use crate::name::Name;
use crate::wire::read_name;
use crate::wire::{Body, DecodeError, Reader, Writer};

/// The longest user event name, in bytes.
pub const MAX_EVENT_NAME_LEN: usize = 128;
/// The largest user event payload, in bytes: an event travels in one datagram.
pub const MAX_EVENT_PAYLOAD: usize = 1024;

/// A user event: a broadcast that is not state, spread by rumour mongering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// Its id, for deduplication.
    pub id: u64,
    /// The member that raised it.
    pub origin: Name,
    /// The application's name for it.
    pub name: String,
    /// The application's payload.
    pub payload: Vec<u8>,
    /// Forwards so far.
    pub hops: u8,
    /// Whether the sender wants feedback (a [`RumorAck`]).
    pub feedback: bool,
}

/// Feedback on a user event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RumorAck {
    /// The event.
    pub id: u64,
    /// Whether the recipient already knew it.
    pub knew: bool,
}

impl Body for UserEvent {
    fn write(&self, w: &mut Writer) {
        w.u64(self.id);
        w.lp(self.origin.as_bytes());
        w.lp(self.name.as_bytes());
        w.lp(&self.payload);
        w.u8(self.hops);
        w.u8(u8::from(self.feedback));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u64("event id")?;
        let origin = read_name(r, "event origin")?;
        let name = r.str("event name", MAX_EVENT_NAME_LEN)?.to_string();
        let len = r.len("event payload", MAX_EVENT_PAYLOAD)?;
        let payload = r.bytes(len, "event payload")?.to_vec();
        Ok(UserEvent {
            id,
            origin,
            name,
            payload,
            hops: r.u8("event hops")?,
            feedback: r.u8("event feedback flag")? != 0,
        })
    }
}

impl Body for RumorAck {
    fn write(&self, w: &mut Writer) {
        w.u64(self.id);
        w.u8(u8::from(self.knew));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RumorAck {
            id: r.u64("rumor ack id")?,
            knew: r.u8("rumor ack flag")? != 0,
        })
    }
}
