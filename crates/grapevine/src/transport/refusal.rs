//! Why a peer was refused: one reason per bound, each counted and logged.

/// Why a connection, frame or record was refused or dropped.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// From an address outside `allowed_networks`.
    NotAllowed,
    /// Over `max_connections`.
    TooManyConnections,
    /// Over `max_per_source` or `max_pending_per_source`.
    TooManyFromSource,
    /// No hello within `handshake_timeout`.
    HandshakeTimeout,
    /// Not our transport (magic, version or address family).
    BadHello,
    /// A plain hello naming another IP than the connection's.
    HelloMismatch,
    /// A plain hello where encryption is on.
    Unencrypted,
    /// A sealed hello where encryption is off.
    Encrypted,
    /// A record for another cluster label.
    WrongLabel,
    /// A record no key of ours opens (a wrong key, or tampering).
    BadKey,
    /// A record shorter than its fields.
    Truncated,
    /// A record or sealed hello sealed outside the replay window.
    Stale,
    /// A record or sealed hello seen before.
    Replayed,
    /// Records out of order or from another connection.
    BadSequence,
    /// A frame over the limit of its type, or a record over its size.
    Oversized,
    /// No progress within `read_timeout`, or a frame slower than its deadline.
    ReadTimeout,
    /// The in-flight budget stayed spent for `read_timeout`.
    Budget,
    /// The socket failed.
    Io,
}

impl Refusal {
    pub(crate) fn of(e: crate::crypto::OpenError) -> Refusal {
        use crate::crypto::OpenError as E;
        match e {
            E::Unencrypted => Refusal::Unencrypted,
            E::Truncated => Refusal::Truncated,
            E::WrongLabel { .. } => Refusal::WrongLabel,
            E::NoKey => Refusal::BadKey,
            E::Stale { .. } => Refusal::Stale,
            E::Replayed => Refusal::Replayed,
        }
    }

    /// Every reason, for exporting counters.
    pub const ALL: [Refusal; 18] = [
        Refusal::NotAllowed,
        Refusal::TooManyConnections,
        Refusal::TooManyFromSource,
        Refusal::HandshakeTimeout,
        Refusal::BadHello,
        Refusal::HelloMismatch,
        Refusal::Unencrypted,
        Refusal::Encrypted,
        Refusal::WrongLabel,
        Refusal::BadKey,
        Refusal::Truncated,
        Refusal::Stale,
        Refusal::Replayed,
        Refusal::BadSequence,
        Refusal::Oversized,
        Refusal::ReadTimeout,
        Refusal::Budget,
        Refusal::Io,
    ];

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::TooManyFromSource => "too_many_from_source",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::BadHello => "bad_hello",
            Refusal::HelloMismatch => "hello_mismatch",
            Refusal::Unencrypted => "unencrypted",
            Refusal::Encrypted => "encrypted",
            Refusal::WrongLabel => "wrong_label",
            Refusal::BadKey => "bad_key",
            Refusal::Truncated => "truncated",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::BadSequence => "bad_sequence",
            Refusal::Oversized => "oversized",
            Refusal::ReadTimeout => "read_timeout",
            Refusal::Budget => "budget",
            Refusal::Io => "io",
        }
    }
}
