//! Any bytes given to the Serf engine's decoders (memberlist packets and streams, Serf's
//! messages, tags) and to a whole Serf member return a value or a counted drop, never a
//! panic, a hang or an unbounded allocation; and the member still leaves in bounded time.
#![no_main]
use grapevine_core::serf::messages::{decode_tags, KeyResponse, PushPull, SerfMsg};
use grapevine_core::serf::wire::{self, Msg};
use grapevine_core::serf::{Keyring, SerfConfig, SerfNode};
use grapevine_core::Time;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(vec![7; 16]).unwrap();
    let _ = wire::open_packet(data, None);
    let _ = wire::open_packet(data, Some(&ring));
    let _ = wire::read_stream(data, None, 1 << 20);
    let _ = wire::read_stream(data, Some(&ring), 1 << 20);
    let _ = wire::frame_len(data, 1 << 20);
    if let Ok(m) = Msg::decode(data) {
        // What decodes re-encodes to something that decodes the same.
        let again = Msg::decode(&m.encode());
        assert_eq!(again.as_ref().ok(), Some(&m), "{again:?}");
    }
    if let Ok(m) = SerfMsg::decode(data) {
        if !matches!(m, SerfMsg::Other(_)) {
            assert_eq!(SerfMsg::decode(&m.encode()).ok(), Some(m));
        }
    }
    if data.len() > 1 {
        let _ = PushPull::decode(&data[1..]);
    }
    let _ = KeyResponse::decode(data);
    let _ = decode_tags(data);
    // A whole member, fed the bytes as a datagram and as a stream.
    let cfg = SerfConfig::lan("fuzz", "127.0.0.1:7946".parse().unwrap());
    let mut node = SerfNode::new(cfg, [1; 32], Time::ZERO);
    let from = "127.0.0.1:7947".parse().unwrap();
    node.handle_packet(from, data, Time::from_micros(1));
    let _ = node.handle_stream(from, data, Time::from_micros(2));
    node.handle_timeout(Time::from_micros(2_000_000));
    while node.poll_output().is_some() {}
    while node.poll_event().is_some() {}
    // Whatever the bytes put in its table, a graceful leave ends within its own bounds
    // (two broadcast timeouts and the propagation delay: 11 s).
    node.leave(Time::from_micros(3_000_000));
    for s in 4..=15u64 {
        node.handle_timeout(Time::from_micros(s * 1_000_000));
        while node.poll_output().is_some() {}
    }
    assert!(node.has_left());
});
