//! Encryption and authentication of every datagram and frame: XChaCha20-Poly1305 with a
//! keyring, the cluster label in clear (and authenticated) in front.
//!
//! An envelope is: `0xE1`, the label length (u8) and the label, a 24-byte random nonce, then
//! the sealed core packet; the bytes before the nonce are the AEAD's associated data. A
//! receiver checks the label first (cheap, and it says which cluster a stray packet was
//! for), then tries its keys, primary first. The 24-byte nonce makes random nonces safe at
//! any traffic a gossip node will ever send.
//!
//! Rotation across a running cluster, with no member ever unable to read another: install
//! the new key everywhere (nodes still send with the old primary and read both), make it
//! primary everywhere, then remove the old one.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The first byte of an envelope.
const ENVELOPE: u8 = 0xE1;
/// Bytes of nonce.
const NONCE_LEN: usize = 24;

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
}

impl OpenError {
    /// A stable reason for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::Unencrypted => "unencrypted",
            OpenError::Truncated => "truncated",
            OpenError::WrongLabel { .. } => "wrong_label",
            OpenError::NoKey => "bad_key",
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

    /// Whether encryption is on.
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

    /// Seals a core packet for `label` with the primary key and a random nonce; without
    /// keys, returns it as it is.
    pub fn seal(&self, label: &[u8], packet: &[u8]) -> Vec<u8> {
        let Some(key) = self.keys.first() else {
            return packet.to_vec();
        };
        let mut out = Vec::with_capacity(2 + label.len() + NONCE_LEN + packet.len() + 16);
        out.push(ENVELOPE);
        out.push(label.len().min(255) as u8);
        out.extend_from_slice(&label[..label.len().min(255)]);
        let ad_len = out.len();
        let nonce: [u8; NONCE_LEN] = rand::random();
        out.extend_from_slice(&nonce);
        let cipher = XChaCha20Poly1305::new(key.into());
        let sealed = cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: packet,
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

    /// Opens an envelope for `label`; without keys, takes the bytes as a plain core packet.
    pub fn open(&self, label: &[u8], bytes: &[u8]) -> Result<Vec<u8>, OpenError> {
        if self.keys.is_empty() {
            return Ok(bytes.to_vec());
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
        for key in &self.keys {
            let cipher = XChaCha20Poly1305::new(key.into());
            if let Ok(p) = cipher.decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &bytes[..ad_len],
                },
            ) {
                return Ok(p);
            }
        }
        Err(OpenError::NoKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_packets_open_with_any_installed_key_and_nothing_else() {
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let sender = Keyring::new(k1);
        let mut reader = Keyring::new(k2);
        let env = sender.seal(b"prod", b"core packet");
        assert_ne!(&env[env.len() - 11..], b"core packet", "not in clear");
        assert_eq!(reader.open(b"prod", &env), Err(OpenError::NoKey));
        reader.install(k1);
        assert_eq!(reader.open(b"prod", &env).unwrap(), b"core packet");
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
        assert!(b.open(b"", &a.seal(b"", b"x")).is_ok());
        assert!(a.open(b"", &b.seal(b"", b"x")).is_ok());
        b.use_key(&new).unwrap();
        assert_eq!(a.remove(&new), Err(KeyringError::RemovePrimary));
        a.remove(&old).unwrap();
        b.remove(&old).unwrap();
        assert!(a.open(b"", &b.seal(b"", b"x")).is_ok());
        assert_eq!(a.list(), &[new]);
        assert_eq!(Keyring::key(&[0; 16]), Err(KeyringError::BadKey(16)));
    }
}
