//! Member names: short UTF-8 strings, stored inline when they fit in 24 bytes.

use compact_str::CompactString;
use std::fmt;

/// The longest member name the wire format accepts, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A member's unique name in the cluster.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(CompactString);

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
        Ok(Name(CompactString::new(s)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A stable 64-bit hash of the name (the same on every node and every build).
    pub fn hash64(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.0.as_bytes())
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
