//! What a node remembers across restarts, in its data directory: the members it knew, its
//! last incarnation and generation, and its own state's keys. Written atomically (a
//! temporary file, synced, renamed over the old one), so a crash leaves the old snapshot or
//! the new one, never half of either.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The file name inside the data directory.
const FILE: &str = "grapevine-snapshot.json";

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file system refused.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a snapshot this build reads.
    #[error("snapshot {path} is unreadable: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// A node's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version.
    pub version: u32,
    /// The member name it was taken for.
    pub name: String,
    /// The incarnation it last ran at.
    pub incarnation: u32,
    /// Its state generation.
    pub generation: u64,
    /// Members it knew alive or suspect: name and address.
    pub members: Vec<(String, SocketAddr)>,
    /// Its own state's live keys and values.
    pub state: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// The snapshot in `dir`, if there is one.
    pub fn load(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotError::Io { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| SnapshotError::Format { path, source })
    }

    /// Writes it to `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let io = |source| SnapshotError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| SnapshotError::Format {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Snapshot::load(dir.path()).unwrap(), None);
        let s = Snapshot {
            version: 1,
            name: "a".into(),
            incarnation: 3,
            generation: 99,
            members: vec![("b".into(), "127.0.0.1:7946".parse().unwrap())],
            state: vec![("role".into(), b"db".to_vec())],
        };
        s.save(dir.path()).unwrap();
        assert_eq!(Snapshot::load(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert!(matches!(
            Snapshot::load(dir.path()),
            Err(SnapshotError::Format { .. })
        ));
    }
}
