//! Golden vectors captured from the real `serf` (Debian's 0.9.4 sources, memberlist 0.2) on
//! loopback, and decoded by our engine: what Go writes, we read.

use base64::Engine;
use grapevine_core::serf::messages::{decode_tags, PushPull};
use grapevine_core::serf::wire::{read_stream, StreamMsg};
use grapevine_core::serf::Keyring;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/serf/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn check_join(msg: StreamMsg, node: &str, tags: &[(&str, &str)]) {
    let StreamMsg::PushPull { join, nodes, user } = msg else {
        panic!("not a push-pull: {msg:?}")
    };
    assert!(join);
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.name, node);
    assert_eq!(n.addr, vec![127, 0, 0, 1]);
    assert_eq!(n.state, 0);
    assert_eq!(n.vsn, vec![1, 5, 2, 2, 5, 5]);
    let t = decode_tags(&n.meta);
    for (k, v) in tags {
        assert_eq!(t.get(*k).map(String::as_str), Some(*v), "{t:?}");
    }
    assert_eq!(user[0], 2, "Serf's push-pull type");
    let pp = PushPull::decode(&user[1..]).unwrap();
    assert!(pp.status_ltimes.iter().any(|(n, _)| n == node), "{pp:?}");
}

#[test]
fn a_compressed_join_push_pull_from_serf_decodes() {
    let buf = fixture("serf-pushpull-join.bin");
    // Every strict prefix is incomplete, never an error: a stream reader waits for more.
    for cut in 0..buf.len() {
        assert_eq!(
            read_stream(&buf[..cut], None, 1 << 20).unwrap(),
            None,
            "cut {cut}"
        );
    }
    let (msg, used) = read_stream(&buf, None, 1 << 20).unwrap().unwrap();
    assert_eq!(used, buf.len());
    check_join(msg, "s1", &[("role", "web"), ("dc", "one")]);
}

#[test]
fn an_encrypted_join_push_pull_from_serf_decodes_with_its_key_only() {
    let buf = fixture("serf-pushpull-join-encrypted.bin");
    let key = base64::engine::general_purpose::STANDARD
        .decode(
            String::from_utf8(fixture("serf-pushpull-join-encrypted.key"))
                .unwrap()
                .trim(),
        )
        .unwrap();
    let ring = Keyring::new(key).unwrap();
    let (msg, used) = read_stream(&buf, Some(&ring), 1 << 20).unwrap().unwrap();
    assert_eq!(used, buf.len());
    check_join(msg, "s2", &[("role", "db")]);
    let wrong = Keyring::new(vec![9; 32]).unwrap();
    assert_eq!(
        read_stream(&buf, Some(&wrong), 1 << 20)
            .unwrap_err()
            .reason(),
        "wrong_key"
    );
    assert_eq!(
        read_stream(&buf, None, 1 << 20).unwrap_err().reason(),
        "unexpected_encryption"
    );
}
