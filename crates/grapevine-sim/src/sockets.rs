//! What real sockets pay for the messages the simulated nodes send: IP, UDP and TCP headers,
//! TCP's acknowledgements, and the set-up and teardown of connections. A message count alone
//! hides the cost of a reliable frame; this ledger counts it as `grapevine`'s driver would
//! spend it on a network.
//!
//! The model, per datagram: one packet with a 28-byte IPv4 and UDP header. Per frame: the
//! driver's 4-byte length prefix, segments of at most [`MSS`] bytes each with a 52-byte IPv4
//! and TCP header (Linux sends the timestamp option), and one bare acknowledgement for every
//! two segments, at least one per frame (an upper bound: a reply often carries the
//! acknowledgement instead). Frames between two nodes share one connection in both
//! directions, as the driver's do, until it has carried nothing for [`IDLE_TIMEOUT`]; the
//! next frame opens a new one: a handshake (two 60-byte SYNs and an acknowledgement), a
//! hello each way with its acknowledgement, and a teardown of three packets.

use grapevine_core::Time;
use hashbrown::HashMap;
use serde::Serialize;
use std::time::Duration;

/// IPv4 and UDP headers.
pub const UDP_HEADER: u64 = 20 + 8;
/// IPv4 and TCP headers with the timestamp option.
pub const TCP_HEADER: u64 = 20 + 20 + 12;
/// A SYN or SYN-ACK: IPv4, TCP and its options (MSS, SACK, timestamps, window scale).
pub const SYN: u64 = 20 + 40;
/// Payload bytes per TCP segment on a 1,500-byte MTU with timestamps.
pub const MSS: u64 = 1448;
/// The driver's frame length prefix.
const FRAME_PREFIX: u64 = 4;
/// A plain hello: magic, version, mode, an IPv4 address and port.
const HELLO: u64 = 3 + 1 + 1 + 4 + 2;
/// How long the driver keeps a connection that carries nothing (`Limits::idle_timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// What one node's sockets sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketCost {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Frames sent on the reliable channel.
    pub frames: u64,
    /// Connections this node opened.
    pub connections: u64,
    /// Protocol bytes sent (datagram and frame payloads).
    pub payload_bytes: u64,
    /// Packets on the wire: datagrams, segments, acknowledgements, handshakes, teardowns.
    pub packets: u64,
    /// Bytes on the wire, headers included.
    pub wire_bytes: u64,
}

impl SocketCost {
    fn add(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.wire_bytes += bytes;
    }

    /// The sum of two costs.
    pub fn plus(&self, o: &SocketCost) -> SocketCost {
        SocketCost {
            datagrams: self.datagrams + o.datagrams,
            frames: self.frames + o.frames,
            connections: self.connections + o.connections,
            payload_bytes: self.payload_bytes + o.payload_bytes,
            packets: self.packets + o.packets,
            wire_bytes: self.wire_bytes + o.wire_bytes,
        }
    }

    /// What was sent between `earlier` and this.
    pub fn since(&self, earlier: &SocketCost) -> SocketCost {
        SocketCost {
            datagrams: self.datagrams - earlier.datagrams,
            frames: self.frames - earlier.frames,
            connections: self.connections - earlier.connections,
            payload_bytes: self.payload_bytes - earlier.payload_bytes,
            packets: self.packets - earlier.packets,
            wire_bytes: self.wire_bytes - earlier.wire_bytes,
        }
    }
}

/// Every node's socket costs, and the connections open between them.
#[derive(Default)]
pub struct Ledger {
    costs: Vec<SocketCost>,
    /// Open connections by node pair (lower index first): when each last carried a frame.
    connections: HashMap<(u32, u32), Time>,
    /// When idle connections are next forgotten.
    next_tidy: Time,
}

impl Ledger {
    fn cost(&mut self, node: u32) -> &mut SocketCost {
        let i = node as usize;
        if self.costs.len() <= i {
            self.costs.resize(i + 1, SocketCost::default());
        }
        &mut self.costs[i]
    }

    /// A datagram of `len` bytes from `from`.
    pub fn datagram(&mut self, from: u32, len: usize) {
        let c = self.cost(from);
        c.datagrams += 1;
        c.payload_bytes += len as u64;
        c.add(1, UDP_HEADER + len as u64);
    }

    /// A frame of `len` bytes from `from` to `to` at `now` (`to` is `None` when nobody
    /// answers at the address: the SYN is all that goes out).
    pub fn frame(&mut self, now: Time, from: u32, to: Option<u32>, len: usize) {
        let Some(to) = to else {
            self.cost(from).add(1, SYN);
            return;
        };
        let pair = (from.min(to), from.max(to));
        let open = self
            .connections
            .get(&pair)
            .is_some_and(|last| now.saturating_since(*last) < IDLE_TIMEOUT);
        self.connections.insert(pair, now);
        if !open {
            // Handshake, a hello each way with its acknowledgement, and (later) a teardown:
            // FIN, FIN-ACK, ACK.
            let hello = TCP_HEADER + HELLO;
            let c = self.cost(from);
            c.connections += 1;
            c.add(5, SYN + TCP_HEADER + hello + TCP_HEADER + 2 * TCP_HEADER);
            self.cost(to).add(4, SYN + hello + TCP_HEADER + TCP_HEADER);
        }
        let data = len as u64 + FRAME_PREFIX;
        let segments = data.div_ceil(MSS).max(1);
        let c = self.cost(from);
        c.frames += 1;
        c.payload_bytes += len as u64;
        c.add(segments, segments * TCP_HEADER + data);
        let acks = (segments / 2).max(1);
        self.cost(to).add(acks, acks * TCP_HEADER);
    }

    /// What node `i` has sent so far.
    pub fn of(&self, i: u32) -> SocketCost {
        self.costs.get(i as usize).copied().unwrap_or_default()
    }

    /// What all nodes have sent so far.
    pub fn total(&self) -> SocketCost {
        self.costs
            .iter()
            .fold(SocketCost::default(), |a, c| a.plus(c))
    }

    /// Forgets connections idle past the timeout (bounded memory over long runs), once per
    /// timeout at most: the simulator calls this at every step.
    pub fn tidy(&mut self, now: Time) {
        if now < self.next_tidy {
            return;
        }
        self.next_tidy = now + IDLE_TIMEOUT;
        self.connections
            .retain(|_, last| now.saturating_since(*last) < IDLE_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_paid_once_while_it_carries_frames() {
        let mut l = Ledger::default();
        let t = Time::ZERO + Duration::from_secs(1);
        l.frame(t, 0, Some(1), 100);
        l.frame(t + Duration::from_secs(1), 1, Some(0), 50);
        let (a, b) = (l.of(0), l.of(1));
        assert_eq!(
            (a.connections, a.frames, b.frames, b.connections),
            (1, 1, 1, 0)
        );
        // Opener: 5 set-up/teardown packets, a segment, an ack of the answer.
        assert_eq!(a.packets, 5 + 1 + 1);
        assert_eq!(b.packets, 4 + 1 + 1);
        // Idle past the timeout: the next frame pays for a new connection.
        l.frame(t + Duration::from_secs(17), 0, Some(1), 100);
        assert_eq!(l.of(0).connections, 2);
    }

    #[test]
    fn a_datagram_is_one_packet_with_its_header() {
        let mut l = Ledger::default();
        l.datagram(3, 40);
        let c = l.of(3);
        assert_eq!(
            (c.datagrams, c.packets, c.wire_bytes, c.payload_bytes),
            (1, 1, 68, 40)
        );
        assert_eq!(l.total(), c);
    }

    #[test]
    fn large_frames_are_segmented_and_acknowledged() {
        let mut l = Ledger::default();
        l.frame(Time::ZERO, 0, Some(1), 10 * 1448);
        // 10 × 1448 + 4 bytes: 11 segments, 5 acknowledgements.
        assert_eq!(l.of(0).packets, 5 + 11);
        assert_eq!(l.of(1).packets, 4 + 5);
    }
}
