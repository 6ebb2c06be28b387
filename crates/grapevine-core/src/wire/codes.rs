//! The table of message codes: one row per message type, with its name for logs and
//! metrics and the largest frame it may open. Never reuse a retired code.

/// The largest frame of any type a receiver accepts on the reliable channel: a membership
/// exchange with a table of 200,000 members of about 80 bytes each.
pub const MAX_FRAME: usize = 16 << 20;

/// Probes, membership news, events, aggregates: a few KiB at most.
const SMALL: usize = 256 << 10;

macro_rules! message_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $str:literal, $limit:expr;)*) => {
        /// Message type codes on the wire.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum MessageType {
            $($(#[$doc])* $name = $code,)*
        }

        impl MessageType {
            /// The type for a wire code, if this build knows it.
            pub fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(MessageType::$name),)*
                    _ => None,
                }
            }

            /// A short name for logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(MessageType::$name => $str,)*
                }
            }

            /// The largest frame a receiver accepts whose first message is of this type.
            fn limit(self) -> usize {
                match self {
                    $(MessageType::$name => $limit,)*
                }
            }
        }
    };
}

message_codes! {
    /// A direct probe.
    Ping = 1, "ping", SMALL;
    /// A request to probe a target on our behalf.
    IndirectPing = 2, "indirect_ping", SMALL;
    /// A probe's answer.
    Ack = 3, "ack", SMALL;
    /// A relay's word that the target did not answer it.
    Nack = 4, "nack", SMALL;
    /// A member is alive at an incarnation.
    Alive = 5, "alive", SMALL;
    /// A member is suspected at an incarnation.
    Suspect = 6, "suspect", SMALL;
    /// A member is confirmed dead at an incarnation.
    Dead = 7, "dead", SMALL;
    /// A member left gracefully.
    Leave = 8, "leave", SMALL;
    /// Opens an anti-entropy exchange with the sender's digest root.
    SyncRequest = 9, "sync_request", SMALL;
    /// The responder's bucket hashes, or word that the roots match.
    SyncBuckets = 10, "sync_buckets", 2 << 20; // A filter (at most 1 MiB) and 1,024 bucket hashes.
    /// The requester's entries in differing buckets.
    SyncPush = 11, "sync_push", MAX_FRAME;
    /// The responder's entries in differing buckets.
    SyncPull = 12, "sync_pull", MAX_FRAME;
    /// Tree anti-entropy: the sender's hashes of some ranges of one tree level.
    TreeHashes = 13, "tree_hashes", 1 << 20; // Ranges: at most 65,536 of 13 bytes.
    /// Tree anti-entropy: the sender's item digests of some leaf ranges.
    TreeItems = 14, "tree_items", 4 << 20; // At most 65,536 item digests with what is held of each (40 bytes).
    /// Tree anti-entropy: entries sent, and the keys of entries wanted.
    TreeEntries = 15, "tree_entries", 8 << 20; // A chunk (at most 4 MiB, see `Config::validate`) and one entry past it.
    /// Tree anti-entropy of per-node state: deltas sent, and the nodes wanted.
    StateDeltas = 16, "state_deltas", 8 << 20; // A member's whole state (at most 4 MiB) and a budget of deltas.
    /// A user event spread by rumour mongering.
    UserEvent = 17, "user_event", SMALL;
    /// A recipient's feedback on a user event: whether it knew it.
    RumorAck = 18, "rumor_ack", SMALL;
    /// Push-sum mass for aggregation.
    Aggregate = 19, "aggregate", SMALL;
}

/// The largest frame a receiver accepts whose first message is of type `code` (unknown
/// codes: 1 MiB, room for a newer version's small messages). Every limit sits above the
/// most the sender ever puts in such a frame, and far below [`MAX_FRAME`] where it can:
/// a stranger announcing a huge frame is refused before a byte of it is buffered.
pub fn frame_limit(code: u8) -> usize {
    MessageType::from_code(code).map_or(1 << 20, MessageType::limit)
}
