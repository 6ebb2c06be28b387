//! Encryption and authentication of every datagram and stream record: XChaCha20-Poly1305
//! with a keyring, the cluster label in clear (and authenticated) in front, a timestamp and
//! a random nonce inside, so a recorded packet cannot be played again.
//!
//! An envelope is: `0xE2`, the label length (u8) and the label, a 24-byte random nonce, then
//! the sealed plaintext; the bytes before the nonce are the AEAD's associated data. The
//! plaintext starts with the sender's clock (milliseconds since the UNIX epoch, u64 LE),
//! then the body: a whole core packet for a datagram, or a stream record's header and data
//! (see [`crate::transport`]). A receiver checks the label first (cheap, and it says which
//! cluster a stray packet was for), then tries its keys, primary first, then asks the
//! [`ReplayGuard`] whether the timestamp is within its window and the nonce unseen. The
//! 24-byte nonce makes random nonces safe at any traffic a gossip node will ever send.
//!
//! Rotation across a running cluster, with no member ever unable to read another: install
//! the new key everywhere (nodes still send with the old primary and read both), make it
//! primary everywhere, then remove the old one.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// The first byte of an envelope (`0xE1`, without timestamps, is no longer read).
const ENVELOPE: u8 = 0xE2;
/// Bytes of nonce.
const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
const TAG_LEN: usize = 16;
/// Bytes of the timestamp at the head of every plaintext.
const TIME_LEN: usize = 8;

/// A 256-bit key.
pub type Key = [u8; 32];

/// Why an incoming envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The packet is not encrypted, and this node requires encryption.
    #[error("unencrypted packet, and encryption is on")]
    Unencrypted,
    /// Shorter than its fields say.
    #[error("truncated envelope")]
    Truncated,
    /// For another cluster.
    #[error("cluster label mismatch: got {got:?}")]
    WrongLabel {
        /// The label it carried.
        got: Vec<u8>,
    },
    /// No key of ours opens it: a wrong key, or tampering.
    #[error("no key in the keyring opens it (wrong key, or tampered)")]
    NoKey,
    /// Sealed too long ago (or too far ahead) for the replay window.
    #[error("sealed {age_ms} ms from now, outside the {window_ms} ms replay window")]
    Stale {
        /// Its age in milliseconds (negative: from the future).
        age_ms: i64,
        /// The window.
        window_ms: u64,
    },
    /// Its nonce was seen already: a replay.
    #[error("replayed: this envelope was seen already")]
    Replayed,
}

impl OpenError {
    /// A stable reason for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Unencrypted => "unencrypted",
            OpenError::Truncated => "truncated",
            OpenError::WrongLabel { .. } => "wrong_label",
            OpenError::NoKey => "bad_key",
            OpenError::Stale { .. } => "stale",
            OpenError::Replayed => "replayed",
        }
    }
}

/// Why a keyring change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The key is not installed.
    #[error("key not installed")]
    NotInstalled,
    /// The primary key cannot be removed; make another primary first.
    #[error("cannot remove the primary key")]
    RemovePrimary,
    /// A key must be 32 bytes (base64 of 32 bytes, as Serf's).
    #[error("a key must be 32 bytes, got {0}")]
    BadKey(usize),
}

/// The keys a node reads with; the first (primary) is the one it writes with.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

/// An opened envelope: when it was sealed and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's clock when it sealed it, ms since the UNIX epoch.
    pub sealed_at: u64,
    /// The first 16 bytes of its nonce, for the replay guard.
    pub nonce: [u8; 16],
    /// The body.
    pub body: Vec<u8>,
}

/// A key's fingerprint: the first 8 bytes of its SHA-256, in hex. Safe to show and log:
/// it tells keys apart without revealing them.
pub fn fingerprint(key: &Key) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Keyring {
    /// A keyring holding `primary` alone.
    pub fn new(primary: Key) -> Self {
        Keyring {
            keys: vec![primary],
        }
    }

    /// A key from bytes (exactly 32).
    pub fn key(bytes: &[u8]) -> Result<Key, KeyringError> {
        <Key>::try_from(bytes).map_err(|_| KeyringError::BadKey(bytes.len()))
    }

    /// Whether encryption is off (no keys).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a key to read with (not yet to write with).
    pub fn install(&mut self, key: Key) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Makes an installed key the primary.
    pub fn use_key(&mut self, key: &Key) -> Result<(), KeyringError> {
        let i = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or(KeyringError::NotInstalled)?;
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, key: &Key) -> Result<(), KeyringError> {
        match self.keys.iter().position(|k| k == key) {
            None => Err(KeyringError::NotInstalled),
            Some(0) => Err(KeyringError::RemovePrimary),
            Some(i) => {
                self.keys.remove(i);
                Ok(())
            }
        }
    }

    /// The installed keys, primary first.
    pub fn list(&self) -> &[Key] {
        &self.keys
    }

    /// The installed keys' fingerprints, primary first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint).collect()
    }

    /// Bytes an envelope adds to a body of `label`.
    pub fn overhead(label: &[u8]) -> usize {
        2 + label.len().min(255) + NONCE_LEN + TIME_LEN + TAG_LEN
    }

    /// Seals `body` for `label` with the primary key, a random nonce and the time `now_ms`;
    /// without keys, returns it as it is.
    pub fn seal(&self, label: &[u8], body: &[u8], now_ms: u64) -> Vec<u8> {
        let Some(key) = self.keys.first() else {
            return body.to_vec();
        };
        let mut out = Vec::with_capacity(Self::overhead(label) + body.len());
        out.push(ENVELOPE);
        out.push(label.len().min(255) as u8);
        out.extend_from_slice(&label[..label.len().min(255)]);
        let ad_len = out.len();
        let nonce: [u8; NONCE_LEN] = rand::random();
        out.extend_from_slice(&nonce);
        let mut plain = Vec::with_capacity(TIME_LEN + body.len());
        plain.extend_from_slice(&now_ms.to_le_bytes());
        plain.extend_from_slice(body);
        let cipher = XChaCha20Poly1305::new(key.into());
        let sealed = cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &out[..ad_len],
            },
        );
        match sealed {
            Ok(c) => out.extend_from_slice(&c),
            // Encryption of an in-memory buffer does not fail; if it ever did, send nothing
            // readable rather than plaintext.
            Err(_) => out.truncate(ad_len),
        }
        out
    }

    /// Opens an envelope for `label`: authenticates it and returns its timestamp, nonce and
    /// body (the replay check is the caller's, with a [`ReplayGuard`]). Without keys, the
    /// bytes are taken as a plain body.
    pub fn open(&self, label: &[u8], bytes: &[u8]) -> Result<Opened, OpenError> {
        if self.keys.is_empty() {
            return Ok(Opened {
                sealed_at: 0,
                nonce: [0; 16],
                body: bytes.to_vec(),
            });
        }
        if bytes.first() != Some(&ENVELOPE) {
            return Err(OpenError::Unencrypted);
        }
        let len = *bytes.get(1).ok_or(OpenError::Truncated)? as usize;
        let got = bytes.get(2..2 + len).ok_or(OpenError::Truncated)?;
        if got != label {
            return Err(OpenError::WrongLabel { got: got.to_vec() });
        }
        let ad_len = 2 + len;
        let nonce = bytes
            .get(ad_len..ad_len + NONCE_LEN)
            .ok_or(OpenError::Truncated)?;
        let sealed = &bytes[ad_len + NONCE_LEN..];
        if sealed.len() < TIME_LEN + TAG_LEN {
            return Err(OpenError::Truncated);
        }
        for key in &self.keys {
            let cipher = XChaCha20Poly1305::new(key.into());
            if let Ok(mut p) = cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &bytes[..ad_len],
                },
            ) {
                let mut t = [0u8; TIME_LEN];
                t.copy_from_slice(&p[..TIME_LEN]);
                p.drain(..TIME_LEN);
                let mut n = [0u8; 16];
                n.copy_from_slice(&nonce[..16]);
                return Ok(Opened {
                    sealed_at: u64::from_le_bytes(t),
                    nonce: n,
                    body: p,
                });
            }
        }
        Err(OpenError::NoKey)
    }
}

/// The most nonces remembered: at a few hundred authenticated packets a second, a minute's
/// worth many times over (about 3 MB at most). Past it the oldest are forgotten, and
/// nothing sealed before the newest forgotten one is taken any more.
const MAX_REMEMBERED: usize = 1 << 16;

/// Refuses envelopes sealed outside a window around the local clock, and those seen before.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    seen: HashSet<[u8; 16]>,
    /// (sealed at, nonce), in arrival order.
    order: VecDeque<(u64, [u8; 16])>,
    /// Nothing sealed at or before this is taken (the newest nonce forgotten early).
    floor: u64,
}

impl ReplayGuard {
    /// A guard taking envelopes sealed at most `window` before or after the local clock.
    pub fn new(window: Duration) -> Self {
        ReplayGuard {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            seen: HashSet::new(),
            order: VecDeque::new(),
            floor: 0,
        }
    }

    /// Checks an opened envelope at local time `now_ms`, and remembers it if taken.
    pub fn check(&mut self, o: &Opened, now_ms: u64) -> Result<(), OpenError> {
        let age = now_ms as i64 - o.sealed_at as i64;
        if age.unsigned_abs() > self.window_ms || o.sealed_at <= self.floor {
            return Err(OpenError::Stale {
                age_ms: age,
                window_ms: self.window_ms,
            });
        }
        // Forget what has left the window: it would be refused as stale anyway.
        while let Some(&(at, n)) = self.order.front() {
            if now_ms.saturating_sub(at) <= self.window_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&n);
        }
        if !self.seen.insert(o.nonce) {
            return Err(OpenError::Replayed);
        }
        self.order.push_back((o.sealed_at, o.nonce));
        while self.order.len() > MAX_REMEMBERED {
            if let Some((at, n)) = self.order.pop_front() {
                self.seen.remove(&n);
                self.floor = self.floor.max(at);
            }
        }
        Ok(())
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn sealed_packets_open_with_any_installed_key_and_nothing_else() {
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let sender = Keyring::new(k1);
        let mut reader = Keyring::new(k2);
        let env = sender.seal(b"prod", b"core packet", NOW);
        assert_ne!(&env[env.len() - 11..], b"core packet", "not in clear");
        assert_eq!(reader.open(b"prod", &env), Err(OpenError::NoKey));
        reader.install(k1);
        let opened = reader.open(b"prod", &env).unwrap();
        assert_eq!(opened.body, b"core packet");
        assert_eq!(opened.sealed_at, NOW);
        assert_eq!(
            reader.open(b"staging", &env),
            Err(OpenError::WrongLabel {
                got: b"prod".to_vec()
            })
        );
        assert_eq!(
            reader.open(b"prod", b"\x01plain"),
            Err(OpenError::Unencrypted)
        );
        assert_eq!(reader.open(b"prod", &env[..5]), Err(OpenError::Truncated));
        let mut tampered = env.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(reader.open(b"prod", &tampered), Err(OpenError::NoKey));
        // The label is authenticated: moving a packet to another label fails.
        let mut relabelled = env.clone();
        relabelled[2] = b'q';
        assert_eq!(reader.open(b"qrod", &relabelled), Err(OpenError::NoKey));
        assert!(Keyring::new(k3).open(b"prod", &env).is_err());
        assert_eq!(env.len(), Keyring::overhead(b"prod") + 11);
    }

    #[test]
    fn rotation_keeps_every_pair_readable() {
        let (old, new) = ([7u8; 32], [8u8; 32]);
        let mut a = Keyring::new(old);
        let mut b = Keyring::new(old);
        // Install everywhere, then switch one at a time, then remove.
        a.install(new);
        b.install(new);
        a.use_key(&new).unwrap();
        assert!(b.open(b"", &a.seal(b"", b"x", NOW)).is_ok());
        assert!(a.open(b"", &b.seal(b"", b"x", NOW)).is_ok());
        b.use_key(&new).unwrap();
        assert_eq!(a.remove(&new), Err(KeyringError::RemovePrimary));
        a.remove(&old).unwrap();
        b.remove(&old).unwrap();
        assert!(a.open(b"", &b.seal(b"", b"x", NOW)).is_ok());
        assert_eq!(a.list(), &[new]);
        assert_eq!(Keyring::key(&[0; 16]), Err(KeyringError::BadKey(16)));
        assert_eq!(a.fingerprints(), vec![fingerprint(&new)]);
        assert_ne!(fingerprint(&new), fingerprint(&old));
        assert_eq!(fingerprint(&new).len(), 16);
    }

    #[test]
    fn a_replayed_or_stale_envelope_is_refused() {
        let k = Keyring::new([9u8; 32]);
        let mut guard = ReplayGuard::new(Duration::from_secs(60));
        let env = k.seal(b"", b"event", NOW);
        let o = k.open(b"", &env).unwrap();
        assert_eq!(guard.check(&o, NOW + 10), Ok(()));
        assert_eq!(guard.check(&o, NOW + 20), Err(OpenError::Replayed));
        // The same packet replayed after the window: stale.
        assert!(matches!(
            guard.check(&o, NOW + 61_000),
            Err(OpenError::Stale { .. })
        ));
        // From too far in the future, too.
        let ahead = k.open(b"", &k.seal(b"", b"x", NOW + 120_000)).unwrap();
        assert!(matches!(
            guard.check(&ahead, NOW),
            Err(OpenError::Stale { .. })
        ));
        // Forgotten nonces raise the floor, so they cannot come back either.
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            let o = k.open(b"", &k.seal(b"", b"y", NOW + i / 1000)).unwrap();
            assert_eq!(guard.check(&o, NOW + i / 1000), Ok(()));
        }
        assert!(guard.len() <= MAX_REMEMBERED);
        let old = k.open(b"", &k.seal(b"", b"z", NOW)).unwrap();
        assert!(matches!(
            guard.check(&old, NOW + 66),
            Err(OpenError::Stale { .. })
        ));
    }
}
