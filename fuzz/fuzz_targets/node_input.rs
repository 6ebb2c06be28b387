//! A node fed arbitrary datagrams and frames (sealed with a valid CRC) never panics.
#![no_main]
use grapevine_core::{wire, Config, Name, Node, Time};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = Name::new("fuzzed") else {
        return;
    };
    let Ok(addr) = "127.0.0.1:7946".parse() else {
        return;
    };
    let Ok(mut node) = Node::new(Config::lan(), name, addr, 1, Time::ZERO) else {
        return;
    };
    let Ok(from) = "127.0.0.2:7946".parse() else {
        return;
    };
    let mut now = Time::ZERO;
    for (i, chunk) in data.split(|&b| b == 0xfe).enumerate() {
        let mut sealed = vec![wire::PROTOCOL_VERSION, 0];
        sealed.extend_from_slice(chunk);
        let crc = crc32fast::hash(&sealed);
        sealed.extend_from_slice(&crc.to_le_bytes());
        if i % 2 == 0 {
            node.handle_datagram(now, from, &sealed);
        } else {
            node.handle_frame(now, from, &sealed);
        }
        now = now + Duration::from_millis(300);
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
});
