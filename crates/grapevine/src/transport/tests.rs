use super::records::encode_addr;
use super::*;
use grapevine_core::wire::{self, Ack, Message, PROTOCOL_VERSION};
use tokio::net::TcpListener;

fn quick() -> Limits {
    Limits {
        handshake_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

struct Side {
    shared: Arc<Shared>,
    frames: mpsc::Receiver<Inbound>,
    control: mpsc::Receiver<Control>,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
}

/// A listening side with `limits` and `keys`, accepting in the background.
async fn side(limits: Limits, keys: Keyring) -> Side {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared::new(
        limits,
        addr,
        b"lbl".to_vec(),
        Arc::new(RwLock::new(keys)),
        Arc::new(Mutex::new(ReplayGuard::new(Duration::from_secs(60)))),
        Vec::new(),
    );
    let (tx, frames) = mpsc::channel(16);
    let (ctx, control) = mpsc::channel(16);
    let (s, t) = (shared.clone(), tx.clone());
    tokio::spawn(async move {
        while let Ok((stream, remote)) = listener.accept().await {
            accept(s.clone(), stream, remote, t.clone(), ctx.clone());
        }
    });
    Side {
        shared,
        frames,
        control,
        addr,
        inbound: tx,
    }
}

fn ack(seq: u32) -> Bytes {
    wire::encode_packet(PROTOCOL_VERSION, b"lbl", &[Message::Ack(Ack { seq })])
}

/// How many refusals for `r` there are, once there are `n` or 2 s have passed (and
/// 100 ms more, for any past the count).
async fn refused_n(s: &Shared, r: Refusal, n: u64) -> u64 {
    let count = || {
        s.counters
            .refused()
            .into_iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| n)
    };
    for _ in 0..100 {
        if count() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    count()
}

async fn refused(s: &Shared, r: Refusal) -> u64 {
    refused_n(s, r, 1).await
}

async fn both_ways(keys: Keyring) {
    let mut a = side(quick(), keys.clone()).await;
    let mut b = side(quick(), keys).await;
    let (tx, rx) = mpsc::channel(8);
    connect(
        a.shared.clone(),
        b.addr,
        Duration::from_secs(1),
        rx,
        a.inbound.clone(),
    );
    tx.send(ack(1)).await.unwrap();
    tx.send(ack(2)).await.unwrap();
    for seq in [1, 2] {
        let f = b.frames.recv().await.unwrap();
        assert_eq!(f.from, a.addr, "attributed to the hello's address");
        assert_eq!(f.frame, ack(seq));
    }
    // b learns it may answer on that connection, and does.
    let Some(Control::Connected { peer, tx: back }) = b.control.recv().await else {
        panic!("no control message");
    };
    assert_eq!(peer, a.addr);
    back.send(ack(3)).await.unwrap();
    let f = a.frames.recv().await.unwrap();
    assert_eq!((f.from, f.frame), (b.addr, ack(3)));
    assert!(
        a.control.try_recv().is_err(),
        "a opened it: nothing to report"
    );
}

#[tokio::test]
async fn frames_go_both_ways_on_one_connection_plain_and_sealed() {
    both_ways(Keyring::default()).await;
    both_ways(Keyring::new([5; 32])).await;
}

async fn raw(dst: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(dst).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

fn plain_hello(addr: SocketAddr) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(PLAIN);
    encode_addr(&mut h, addr);
    h
}

#[tokio::test]
async fn a_hello_naming_another_ip_is_refused() {
    let b = side(quick(), Keyring::default()).await;
    let _s = raw(b.addr, &plain_hello("10.1.2.3:7946".parse().unwrap())).await;
    assert_eq!(refused(&b.shared, Refusal::HelloMismatch).await, 1);
}

#[tokio::test]
async fn a_frame_over_its_types_limit_is_refused_before_its_body() {
    let b = side(quick(), Keyring::default()).await;
    let me: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut bytes = plain_hello(me);
    // An ack announcing 10 MiB: acks are small, so its header is enough to refuse it.
    let head = ack(1);
    bytes.extend_from_slice(&(10u32 << 20).to_be_bytes());
    bytes.extend_from_slice(&head[..head.len() - 4]);
    let _s = raw(b.addr, &bytes).await;
    assert_eq!(refused(&b.shared, Refusal::Oversized).await, 1);
    assert_eq!(b.shared.budget.available_permits(), quick().inflight_total);
}

#[tokio::test]
async fn a_stalled_hello_and_a_dribbled_frame_time_out() {
    let b = side(quick(), Keyring::default()).await;
    let _silent = raw(b.addr, b"G").await;
    assert_eq!(refused(&b.shared, Refusal::HandshakeTimeout).await, 1);
    let mut bytes = plain_hello("127.0.0.1:9".parse().unwrap());
    bytes.extend_from_slice(&100u32.to_be_bytes());
    bytes.extend_from_slice(&ack(1)[..5]);
    let _dribble = raw(b.addr, &bytes).await;
    assert_eq!(refused(&b.shared, Refusal::ReadTimeout).await, 1);
}

#[tokio::test]
async fn handshakes_pending_from_one_address_are_capped() {
    let limits = Limits {
        max_pending_per_source: 3,
        ..quick()
    };
    let b = side(limits, Keyring::default()).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(raw(b.addr, b"GV").await);
    }
    assert_eq!(refused_n(&b.shared, Refusal::TooManyFromSource, 2).await, 2);
}

#[tokio::test]
async fn a_frame_larger_than_the_budget_waits_then_is_dropped() {
    let limits = Limits {
        inflight_total: 100 << 10,
        ..quick()
    };
    let b = side(limits, Keyring::default()).await;
    // A 200 KiB frame of keyspace entries (whose type allows 8 MiB), sent whole.
    let mut frame = vec![PROTOCOL_VERSION, 3, b'l', b'b', b'l', 15];
    frame.resize(200 << 10, 0);
    let mut bytes = plain_hello("127.0.0.1:9".parse().unwrap());
    bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&frame);
    let _s = raw(b.addr, &bytes).await;
    assert_eq!(refused(&b.shared, Refusal::Budget).await, 1);
    // The budget it held is back.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.shared.budget.available_permits(), 100 << 10);
}

#[tokio::test]
async fn a_replayed_sealed_connection_and_a_plain_one_are_refused() {
    let keys = Keyring::new([7; 32]);
    let b = side(quick(), keys.clone()).await;
    // Record what a member writes: its hello and a frame.
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let a = side(quick(), keys).await;
    let (tx, rx) = mpsc::channel(8);
    connect(
        a.shared.clone(),
        sink_addr,
        Duration::from_secs(1),
        rx,
        a.inbound.clone(),
    );
    tx.send(ack(1)).await.unwrap();
    let (mut s, _) = sink.accept().await.unwrap();
    let mut recorded = vec![0u8; 4096];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = s.read(&mut recorded).await.unwrap();
    recorded.truncate(n);
    // Played to b twice: the first is taken, the copy refused.
    let _first = raw(b.addr, &recorded).await;
    let _copy = raw(b.addr, &recorded).await;
    assert_eq!(refused(&b.shared, Refusal::Replayed).await, 1);
    let _plain = raw(b.addr, &plain_hello("127.0.0.1:9".parse().unwrap())).await;
    assert_eq!(refused(&b.shared, Refusal::Unencrypted).await, 1);
}
