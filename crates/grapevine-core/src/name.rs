//! Member names: short UTF-8 strings, stored inline when they fit in 24 bytes.

use std::fmt;

/// The longest member name the wire format accepts, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A member's unique name in the cluster.
///
/// 16 bytes: up to 15 bytes are stored inline, longer names behind one thin pointer.
/// A node of a large cluster stores one per member, so this is a quarter of a record.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: InlineLen, bytes: [u8; INLINE] },
    Heap(Box<Box<str>>),
}

const INLINE: usize = 15;

/// 0..=15: the values left free (16..=255) hold the enum's tag, keeping `Name` at 16 bytes.
#[derive(Clone, Copy)]
#[repr(u8)]
#[rustfmt::skip]
enum InlineLen { L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15 }

impl InlineLen {
    const ALL: [InlineLen; 16] = {
        use InlineLen::*;
        [
            L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15,
        ]
    };
}

/// Why a string cannot be a member name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("a member name cannot be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("member name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// The offending length.
        len: usize,
    },
}

impl Name {
    /// A validated name.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: s.len() });
        }
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            return Ok(Name(Repr::Inline {
                len: InlineLen::ALL[s.len()],
                bytes,
            }));
        }
        Ok(Name(Repr::Heap(Box::new(Box::from(s)))))
    }

    /// The name's bytes (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `&str`, so always valid UTF-8.
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Repr::Heap(s) => s,
        }
    }

    /// A stable 64-bit hash of the name (the same on every node and every build).
    pub fn hash64(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.as_bytes())
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // Unused inline bytes are always zero, so the arrays compare whole.
            (Repr::Inline { len: a, bytes: x }, Repr::Inline { len: b, bytes: y }) => {
                *a as u8 == *b as u8 && x == y
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}
impl Eq for Name {}
impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}
impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sixteen_bytes_and_compare_by_content() {
        assert_eq!(std::mem::size_of::<Name>(), 16);
        let short = Name::new("node-000001").unwrap();
        let long = Name::new("a-rather-long-hostname.example.internal").unwrap();
        assert_eq!(short.as_str(), "node-000001");
        assert_eq!(long.as_str(), "a-rather-long-hostname.example.internal");
        assert_eq!(
            Name::new("exactly15bytes!").unwrap().as_str(),
            "exactly15bytes!"
        );
        assert_eq!(
            Name::new("sixteen-bytes-ok").unwrap().as_str(),
            "sixteen-bytes-ok"
        );
        assert_eq!(short, Name::new("node-000001").unwrap());
        assert!(long < short, "names order like their strings");
        assert_eq!(long.cmp(&short), long.as_str().cmp(short.as_str()));
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert!(Name::new(&"x".repeat(129)).is_err());
    }
}
