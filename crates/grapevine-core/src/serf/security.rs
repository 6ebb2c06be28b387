//! memberlist's encryption: AES-GCM with a keyring of 16, 24 or 32-byte keys, the primary
//! first. Version 0 pads the plaintext (PKCS#7), version 1 does not; both are read, and the
//! version to write is chosen by the caller (memberlist writes 1 from protocol 2 on).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use thiserror::Error;

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

const NONCE: usize = 12;
const TAG: usize = 16;
const BLOCK: usize = 16;

/// Why a keyring change or a decryption failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecurityError {
    /// A key of another size than 16, 24 or 32 bytes.
    #[error("a key must be 16, 24 or 32 bytes, not {0}")]
    KeySize(usize),
    /// `use` or `remove` named a key the ring does not hold.
    #[error("the key is not installed")]
    UnknownKey,
    /// The primary key cannot be removed.
    #[error("removing the primary key is not allowed")]
    RemovePrimary,
    /// Shorter than a version byte, a nonce and a tag.
    #[error("too short to decrypt")]
    Short,
    /// A version byte other than 0 or 1.
    #[error("unsupported encryption version {0}")]
    Version(u8),
    /// No installed key opened it (a wrong key, or tampering).
    #[error("no installed key could decrypt the message")]
    NoKey,
    /// Version 0's padding was not PKCS#7.
    #[error("bad padding")]
    Padding,
}

/// The keys this member accepts; the first encrypts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

fn check(key: &[u8]) -> Result<(), SecurityError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(SecurityError::KeySize(n)),
    }
}

impl Keyring {
    /// A ring holding one primary key.
    pub fn new(primary: Vec<u8>) -> Result<Self, SecurityError> {
        check(&primary)?;
        Ok(Keyring {
            keys: vec![primary],
        })
    }

    /// Adds a key (a no-op if present), not as primary.
    pub fn install(&mut self, key: Vec<u8>) -> Result<(), SecurityError> {
        check(&key)?;
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        Ok(())
    }

    /// Makes an installed key the primary.
    pub fn use_key(&mut self, key: &[u8]) -> Result<(), SecurityError> {
        let i = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or(SecurityError::UnknownKey)?;
        let k = self.keys.remove(i);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key other than the primary.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), SecurityError> {
        if self.keys.first().is_some_and(|k| k == key) {
            return Err(SecurityError::RemovePrimary);
        }
        self.keys.retain(|k| k != key);
        Ok(())
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The key that encrypts.
    pub fn primary(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }
}

fn seal(key: &[u8], nonce: &[u8; NONCE], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg, aad };
    // Sealing cannot fail for these key sizes and lengths under 64 GiB.
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
        24 => Aes192Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
        _ => Aes256Gcm::new_from_slice(key).map(|c| c.encrypt(n, p)),
    };
    match out {
        Ok(Ok(ct)) => ct,
        _ => Vec::new(),
    }
}

fn open(key: &[u8], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let n = Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    let out = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(n, p),
        24 => Aes192Gcm::new_from_slice(key).ok()?.decrypt(n, p),
        32 => Aes256Gcm::new_from_slice(key).ok()?.decrypt(n, p),
        _ => return None,
    };
    out.ok()
}

/// The encrypted length of `len` plaintext bytes.
pub fn encrypted_len(version: u8, len: usize) -> usize {
    if version >= 1 {
        1 + NONCE + len + TAG
    } else {
        1 + NONCE + len + (BLOCK - len % BLOCK) + TAG
    }
}

/// Encrypts `msg` with `key` as memberlist does: version byte, nonce, ciphertext and tag.
pub fn encrypt(version: u8, key: &[u8], nonce: [u8; NONCE], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encrypted_len(version, msg.len()));
    out.push(version);
    out.extend_from_slice(&nonce);
    if version == 0 {
        let pad = BLOCK - msg.len() % BLOCK;
        let mut padded = Vec::with_capacity(msg.len() + pad);
        padded.extend_from_slice(msg);
        padded.resize(msg.len() + pad, pad as u8);
        out.extend_from_slice(&seal(key, &nonce, &padded, aad));
    } else {
        out.extend_from_slice(&seal(key, &nonce, msg, aad));
    }
    out
}

/// Decrypts with whichever installed key opens it.
pub fn decrypt(keys: &[Vec<u8>], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecurityError> {
    let version = *msg.first().ok_or(SecurityError::Short)?;
    if version > 1 {
        return Err(SecurityError::Version(version));
    }
    if msg.len() < encrypted_len(version, 0) {
        return Err(SecurityError::Short);
    }
    let (nonce, ct) = msg[1..].split_at(NONCE);
    let plain = keys
        .iter()
        .find_map(|k| open(k, nonce, ct, aad))
        .ok_or(SecurityError::NoKey)?;
    if version == 0 {
        let pad = usize::from(*plain.last().ok_or(SecurityError::Padding)?);
        if pad == 0 || pad > BLOCK || pad > plain.len() {
            return Err(SecurityError::Padding);
        }
        return Ok(plain[..plain.len() - pad].to_vec());
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_and_all_key_sizes_round_trip_and_wrong_keys_fail() {
        for size in [16, 24, 32] {
            for version in [0, 1] {
                let key = vec![7u8; size];
                let ct = encrypt(version, &key, [3; 12], b"hello gossip", b"aad");
                assert_eq!(ct.len(), encrypted_len(version, 12));
                let other = vec![8u8; size];
                assert_eq!(
                    decrypt(&[other.clone(), key.clone()], &ct, b"aad").unwrap(),
                    b"hello gossip"
                );
                assert_eq!(
                    decrypt(&[other], &ct, b"aad").unwrap_err(),
                    SecurityError::NoKey
                );
                assert_eq!(
                    decrypt(&[key], &ct, b"other").unwrap_err(),
                    SecurityError::NoKey
                );
            }
        }
        assert_eq!(
            decrypt(&[], &[2; 40], b"").unwrap_err(),
            SecurityError::Version(2)
        );
        assert_eq!(
            decrypt(&[], &[1; 5], b"").unwrap_err(),
            SecurityError::Short
        );
    }

    #[test]
    fn the_ring_rotates_like_memberlists() {
        let mut ring = Keyring::new(vec![1; 32]).unwrap();
        assert_eq!(ring.install(vec![2; 5]), Err(SecurityError::KeySize(5)));
        ring.install(vec![2; 16]).unwrap();
        assert_eq!(ring.remove(&[1; 32]), Err(SecurityError::RemovePrimary));
        ring.use_key(&[2; 16]).unwrap();
        ring.remove(&[1; 32]).unwrap();
        assert_eq!(ring.keys(), &[vec![2u8; 16]]);
        assert_eq!(ring.use_key(&[9; 16]), Err(SecurityError::UnknownKey));
    }
}
