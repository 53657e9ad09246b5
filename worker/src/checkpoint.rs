//! The checkpoint location: the query's identity (`metadata`), the ownership claim (`owner`),
//! the starting offsets of a new query (`offsets/initial`), the targets of the current
//! availableNow run (`availableNow`), and the progress log (`progress.jsonl`).
//!
//! What was written is recorded in the Delta table, not here: these files never decide which
//! offsets are read next, except where the table has nothing for a partition yet.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tributary_crds::{PartitionOffsets, StreamingQueryProgress};

use crate::error::{Error, Result};
use crate::source::Tp;

/// The query's identity, as Spark's `metadata` file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueryMetadata {
    pub id: String,
}

/// Who owns the location.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OwnerClaim {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for OwnerClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The planned end of an availableNow run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AvailableNowRun {
    pub run_id: String,
    pub planned_at: String,
    /// topic -> partition -> offset to stop before.
    pub targets: PartitionOffsets,
    pub finished: bool,
}

/// A local checkpoint directory.
pub struct CheckpointDir {
    root: PathBuf,
    location: String,
}

impl CheckpointDir {
    /// Opens (creating) the location and claims it for `owner`, or refuses if another
    /// ingestion holds it.
    pub fn open(location: &str, owner: &OwnerClaim) -> Result<CheckpointDir> {
        let root = match location.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if location.starts_with('/') => PathBuf::from(location),
            None => {
                return Err(Error::Unsupported(format!(
                    "checkpoint location {location}: only local paths are supported by this worker so far"
                )));
            }
        };
        std::fs::create_dir_all(root.join("offsets"))
            .map_err(Error::checkpoint("create the checkpoint directory", &root))?;
        let checkpoint = CheckpointDir {
            root,
            location: location.to_string(),
        };
        checkpoint.claim(owner)?;
        Ok(checkpoint)
    }

    fn claim(&self, owner: &OwnerClaim) -> Result<()> {
        let path = self.root.join("owner");
        let existing: OwnerClaim = match create_new_json(&path, owner)? {
            true => return Ok(()),
            false => read_json(&path)?.ok_or_else(|| Error::CorruptCheckpoint {
                path: path.clone(),
                reason: "the ownership claim vanished".into(),
            })?,
        };
        if &existing != owner {
            return Err(Error::CheckpointClaimed {
                location: self.location.clone(),
                owner: existing.to_string(),
                me: owner.to_string(),
            });
        }
        Ok(())
    }

    /// The query's metadata, created with a new id on first start. Returns it and whether it
    /// is new.
    pub fn metadata(&self) -> Result<QueryMetadata> {
        let path = self.root.join("metadata");
        let fresh = QueryMetadata {
            id: uuid::Uuid::new_v4().to_string(),
        };
        if create_new_json(&path, &fresh)? {
            return Ok(fresh);
        }
        read_json(&path)?.ok_or_else(|| Error::CorruptCheckpoint {
            path,
            reason: "metadata vanished".into(),
        })
    }

    /// Starting offsets of the query, resolved when it first ran (None before that).
    pub fn initial_offsets(&self) -> Result<Option<BTreeMap<Tp, i64>>> {
        let offsets: Option<PartitionOffsets> =
            read_json(&self.root.join("offsets").join("initial"))?;
        Ok(offsets.map(|o| from_partition_offsets(&o)))
    }

    /// Records the starting offsets; if another replica recorded them first, returns theirs.
    pub fn save_initial_offsets(&self, offsets: &BTreeMap<Tp, i64>) -> Result<BTreeMap<Tp, i64>> {
        let path = self.root.join("offsets").join("initial");
        if create_new_json(&path, &to_partition_offsets(offsets))? {
            return Ok(offsets.clone());
        }
        Ok(self.initial_offsets()?.unwrap_or_else(|| offsets.clone()))
    }

    pub fn available_now(&self) -> Result<Option<AvailableNowRun>> {
        read_json(&self.root.join("availableNow"))
    }

    pub fn save_available_now(&self, run: &AvailableNowRun) -> Result<()> {
        write_json_atomic(&self.root.join("availableNow"), run)
    }

    /// Appends one batch to the progress log.
    pub fn log_progress(&self, progress: &StreamingQueryProgress) -> Result<()> {
        let path = self.root.join("progress.jsonl");
        let mut line = serde_json::to_string(progress).map_err(|e| Error::CorruptCheckpoint {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::checkpoint("open the progress log", &path))?;
        file.write_all(line.as_bytes())
            .map_err(Error::checkpoint("append to the progress log", &path))
    }

    /// The last batch id in the progress log (the next run continues the numbering).
    pub fn last_batch_id(&self) -> Result<Option<i64>> {
        let path = self.root.join("progress.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::checkpoint("read the progress log", &path)(e)),
        };
        // A line torn by a crash is skipped: the batch ids only number the progress records.
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<StreamingQueryProgress>(line).ok())
            .map(|p| p.batch_id)
            .max())
    }
}

pub fn to_partition_offsets(offsets: &BTreeMap<Tp, i64>) -> PartitionOffsets {
    let mut out = PartitionOffsets::new();
    for ((topic, partition), offset) in offsets {
        out.entry(topic.clone())
            .or_default()
            .insert(partition.to_string(), *offset);
    }
    out
}

pub fn from_partition_offsets(offsets: &PartitionOffsets) -> BTreeMap<Tp, i64> {
    let mut out = BTreeMap::new();
    for (topic, partitions) in offsets {
        for (partition, offset) in partitions {
            if let Ok(p) = partition.parse::<i32>() {
                out.insert((topic.clone(), p), *offset);
            }
        }
    }
    out
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::CorruptCheckpoint {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::checkpoint("read", path)(e)),
    }
}

/// Writes a file only if none exists, atomically: a temporary file hard-linked into place, so
/// a reader never sees half a file and two writers cannot both win. Returns false if it existed.
fn create_new_json<T: Serialize>(path: &Path, value: &T) -> Result<bool> {
    let temp = temp_path(path);
    write_file(&temp, value)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::checkpoint("create", path)(e)),
    }
}

/// Replaces a file atomically (write, fsync, rename).
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let temp = temp_path(path);
    write_file(&temp, value)?;
    std::fs::rename(&temp, path).map_err(Error::checkpoint("replace", path))
}

fn write_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::CorruptCheckpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut file = std::fs::File::create(path).map_err(Error::checkpoint("create", path))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::checkpoint("write", path))
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_ingestion_is_refused_naming_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().join("cp").display().to_string();
        let first = OwnerClaim {
            namespace: "iot".into(),
            name: "a".into(),
        };
        let second = OwnerClaim {
            namespace: "iot".into(),
            name: "b".into(),
        };
        let checkpoint = CheckpointDir::open(&location, &first).expect("first claim");
        let id = checkpoint.metadata().expect("metadata").id;
        assert_eq!(
            CheckpointDir::open(&location, &first)
                .expect("reopen")
                .metadata()
                .expect("metadata")
                .id,
            id
        );
        let error = CheckpointDir::open(&location, &second)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("belongs to ingestion iot/a, not iot/b"),
            "{error}"
        );
    }

    #[test]
    fn initial_offsets_are_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().display().to_string();
        let owner = OwnerClaim {
            namespace: "n".into(),
            name: "x".into(),
        };
        let checkpoint = CheckpointDir::open(&location, &owner).expect("open");
        let first = BTreeMap::from([(("t".to_string(), 0), 5_i64)]);
        let second = BTreeMap::from([(("t".to_string(), 0), 9_i64)]);
        assert_eq!(
            checkpoint.save_initial_offsets(&first).expect("save"),
            first
        );
        assert_eq!(
            checkpoint.save_initial_offsets(&second).expect("save"),
            first
        );
    }
}
