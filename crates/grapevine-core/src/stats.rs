//! Counters a node keeps about its own traffic and decisions, for metrics and tests.

use crate::wire::{DecodeError, MessageType};

/// Why an input was dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than its fields say.
    Truncated,
    /// Over the channel's size limit.
    Oversized,
    /// A protocol version this build does not speak.
    UnknownVersion,
    /// CRC mismatch.
    BadChecksum,
    /// Another cluster's label.
    WrongLabel,
    /// Malformed contents.
    Malformed,
    /// A ping meant for another member name.
    WrongTarget,
    /// A reply to nothing this node asked.
    Unexpected,
    /// The member table is full.
    TableFull,
    /// A message type this build does not know (skipped, the rest of the packet is used).
    UnknownType,
    /// A message that is only valid on the other channel.
    WrongChannel,
    /// A message only members may send, from an address that is not a live member's (or
    /// not the address of the member it names).
    NotMember,
    /// A step of a state exchange that this node never opened or answered.
    Unsolicited,
    /// Over a rate limit: new members from one source, user events from one origin or in
    /// all, or exchanges answered at once.
    RateLimited,
    /// A member heard of by hearsay that never answered this node's ping.
    Unverified,
}

impl DropReason {
    /// All reasons, for exporting counters.
    pub const ALL: [DropReason; 15] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::UnknownVersion,
        DropReason::BadChecksum,
        DropReason::WrongLabel,
        DropReason::Malformed,
        DropReason::WrongTarget,
        DropReason::Unexpected,
        DropReason::TableFull,
        DropReason::UnknownType,
        DropReason::WrongChannel,
        DropReason::NotMember,
        DropReason::Unsolicited,
        DropReason::RateLimited,
        DropReason::Unverified,
    ];

    /// A stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::WrongLabel => "wrong_label",
            DropReason::Malformed => "malformed",
            DropReason::WrongTarget => "wrong_target",
            DropReason::Unexpected => "unexpected",
            DropReason::TableFull => "table_full",
            DropReason::UnknownType => "unknown_type",
            DropReason::WrongChannel => "wrong_channel",
            DropReason::NotMember => "not_member",
            DropReason::Unsolicited => "unsolicited",
            DropReason::RateLimited => "rate_limited",
            DropReason::Unverified => "unverified",
        }
    }

    pub(crate) fn of(e: &DecodeError) -> DropReason {
        match e {
            DecodeError::TooShort { .. } | DecodeError::Truncated { .. } => DropReason::Truncated,
            DecodeError::Oversized { .. } => DropReason::Oversized,
            DecodeError::UnknownVersion(_) => DropReason::UnknownVersion,
            DecodeError::BadChecksum { .. } => DropReason::BadChecksum,
            DecodeError::WrongLabel { .. } => DropReason::WrongLabel,
            _ => DropReason::Malformed,
        }
    }
}

/// Counters of one node. All monotonic.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Datagrams and frames received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams and frames sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages sent, by type code.
    pub messages_out: [u64; 32],
    /// Rumours sent, piggybacked on packets or in gossip ticks.
    pub broadcasts_out: u64,
    /// Messages received, by type code.
    pub messages_in: [u64; 32],
    /// Bytes received, by the type code of each packet's first message (piggybacked
    /// rumours count with the packet that carries them).
    pub bytes_in_by_type: [u64; 32],
    /// Bytes sent, by the type code of each packet's first message.
    pub bytes_out_by_type: [u64; 32],
    /// Inputs dropped, by reason (indexed like [`DropReason::ALL`]).
    pub dropped: [u64; DropReason::ALL.len()],
    /// Probes started.
    pub probes: u64,
    /// Probes that ended without any ack.
    pub probes_failed: u64,
    /// Probes answered only by the reliable-channel fallback.
    pub fallback_acks: u64,
    /// Probes answered only through a relay.
    pub indirect_acks: u64,
    /// Suspicions this node raised from its own probes.
    pub suspicions_raised: u64,
    /// Accusations of this node that it refuted.
    pub refutations: u64,
    /// Members this node declared dead itself.
    pub declared_dead: u64,
    /// Anti-entropy exchanges completed as requester.
    pub syncs: u64,
    /// Exchanges that found the views divergent.
    pub syncs_divergent: u64,
    /// Push-pull exchanges skipped because pings showed members holding the same table.
    pub syncs_skipped: u64,
    /// Member entries received in anti-entropy exchanges.
    pub sync_entries_in: u64,
    /// Bytes of replicated-state exchanges sent (per-node state and shared keyspace).
    pub state_bytes_out: u64,
    /// Sum of probe round-trip times in microseconds (direct acks), and their count.
    pub rtt_micros_sum: u64,
    /// Number of round trips summed in `rtt_micros_sum`.
    pub rtt_count: u64,
}

impl Stats {
    /// Counts a dropped input.
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.dropped[i] += 1;
        }
    }

    /// How many inputs were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.dropped[i])
    }

    pub(crate) fn sent(&mut self, kind: MessageType) {
        self.messages_out[kind as usize & 31] += 1;
    }

    /// Counts a packet's bytes under the type of its first message.
    pub(crate) fn packet_bytes(by_type: &mut [u64; 32], packet: &[u8]) {
        // version, label length, label, then the first message's type code.
        let at = 2 + packet.get(1).copied().unwrap_or(0) as usize;
        if let Some(&code) = packet.get(at) {
            by_type[code as usize & 31] += packet.len() as u64;
        }
    }
}
