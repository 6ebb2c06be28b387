//! The message set: every protocol's messages under one enum, as a packet carries them.
//!
//! Each row of the table below names a variant, which is also its code's name in
//! [`MessageType`], and the type its protocol defines (with its [`Body`] codec, in that
//! protocol's `messages.rs`). A new message is its protocol's message file, a row in
//! `wire/codes.rs`, a row here, and an arm in `node/dispatch.rs`.

use crate::aggregate::messages::Aggregate;
use crate::detection::messages::{Ack, IndirectPing, Nack, Ping};
use crate::membership::messages::{
    Alive, Dead, Leave, Suspect, SyncBuckets, SyncEntries, SyncRequest,
};
use crate::rumor::messages::{RumorAck, UserEvent};
use crate::state::messages::{StateDeltas, TreeEntries, TreeHashes, TreeItems};
use crate::wire::{
    open_packet, Body, DecodeError, Framed, MessageType, RawMessage, Reader, Writer,
};

macro_rules! message_set {
    ($($variant:ident($ty:ty),)*) => {
        /// Any protocol message.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Message {
            $(
                #[doc = concat!("See [`", stringify!($ty), "`].")]
                $variant($ty),
            )*
        }

        impl Message {
            /// This message's wire type.
            pub fn kind(&self) -> MessageType {
                match self {
                    $(Message::$variant(_) => MessageType::$variant,)*
                }
            }

            fn write_body(&self, w: &mut Writer) {
                match self {
                    $(Message::$variant(m) => m.write(w),)*
                }
            }

            /// Decodes one message body of a known type. Trailing bytes in the body are
            /// ignored, so a newer sender may append fields.
            pub fn decode(kind: MessageType, body: &[u8]) -> Result<Message, DecodeError> {
                let r = &mut Reader::new(body);
                Ok(match kind {
                    $(MessageType::$variant => Message::$variant(<$ty>::read(r)?),)*
                })
            }
        }
    };
}

message_set! {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack(Nack),
    Alive(Alive),
    Suspect(Suspect),
    Dead(Dead),
    Leave(Leave),
    SyncRequest(SyncRequest),
    SyncBuckets(SyncBuckets),
    SyncPush(SyncEntries),
    SyncPull(SyncEntries),
    TreeHashes(TreeHashes),
    TreeItems(TreeItems),
    TreeEntries(TreeEntries),
    StateDeltas(StateDeltas),
    UserEvent(UserEvent),
    RumorAck(RumorAck),
    Aggregate(Aggregate),
}

impl Message {
    /// Appends the framed message (type, length, body) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::with_capacity(64);
        self.write_body(&mut w);
        out.push(self.kind() as u8);
        let mut lw = Writer {
            buf: std::mem::take(out),
        };
        lw.varint(u32::try_from(w.buf.len()).unwrap_or(u32::MAX));
        lw.bytes(&w.buf);
        *out = lw.buf;
    }

    /// The framed encoding as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

impl Framed for Message {
    fn encode_into(&self, out: &mut Vec<u8>) {
        Message::encode_into(self, out);
    }
}

impl RawMessage<'_> {
    /// Decodes the body; `Ok(None)` for a type this build does not know (skipped).
    pub fn decode(&self) -> Result<Option<Message>, DecodeError> {
        match MessageType::from_code(self.code) {
            Some(kind) => Message::decode(kind, self.body).map(Some),
            None => Ok(None),
        }
    }
}

/// Decodes a whole packet into messages (unknown types skipped); for tests and tools.
pub fn decode_packet(
    buf: &[u8],
    label: &[u8],
    max_len: usize,
) -> Result<Vec<Message>, DecodeError> {
    let p = open_packet(buf, label, max_len)?;
    let mut out = Vec::new();
    for raw in p.messages() {
        if let Some(m) = raw?.decode()? {
            out.push(m);
        }
    }
    Ok(out)
}
