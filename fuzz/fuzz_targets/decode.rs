//! Any bytes given to the packet decoder return a value or a typed error, never a panic.
#![no_main]
use grapevine_core::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Check with and without a label, and with the CRC made valid so the fuzzer reaches
    // the message decoders instead of stopping at the checksum.
    let _ = wire::decode_packet(data, b"", usize::MAX);
    let _ = wire::decode_packet(data, b"fuzz", 65_507);
    if data.len() >= 6 {
        let mut sealed = data.to_vec();
        sealed[0] = wire::PROTOCOL_VERSION;
        sealed[1] = 0;
        let n = sealed.len();
        let crc = crc32fast::hash(&sealed[..n - 4]);
        sealed[n - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(msgs) = wire::decode_packet(&sealed, b"", usize::MAX) {
            // Whatever decodes must re-encode and decode to the same messages, compared as
            // bytes: a float field may be NaN, which equals nothing (handlers refuse it).
            let again = wire::encode_packet(wire::PROTOCOL_VERSION, b"", &msgs);
            let back = wire::decode_packet(&again, b"", usize::MAX);
            assert!(back.is_ok(), "{back:?}");
            if let Ok(back) = back {
                assert_eq!(back.len(), msgs.len());
                let twice = wire::encode_packet(wire::PROTOCOL_VERSION, b"", &back);
                assert_eq!(twice, again);
            }
        }
    }
});
