//! The checkpoint location: the query's identity (`metadata`), the ownership claim (`owner`),
//! the starting offsets of a new query (`offsets/initial`), the targets of the current
//! availableNow run (`availableNow`), the resets applied (`resets/<id>`), and the progress log.
//!
//! What was written is recorded in the Delta table, not here: these files never decide which
//! offsets are read next, except where the table has nothing for a partition yet.
//!
//! A location is a directory on a volume (`/checkpoints/q`, `file:///checkpoints/q`) or an object
//! store URL (`abfss://container@account.dfs.core.windows.net/q`, `az://container/q`). Both are
//! reached through object_store (the version deltalake links), so every file is written whole or
//! not at all, and the files that must be written once (`owner`, `metadata`, `offsets/initial`)
//! are conditional puts (`PutMode::Create`: a hard link on a volume, `If-None-Match: *` on Azure
//! Blob Storage): of two workers racing to write one, exactly one wins and the other reads the
//! winner's.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use deltalake::logstore::object_store::{
    self, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tributary_crds::{PartitionOffsets, StreamingQueryProgress};

use crate::error::{Error, Result};
use crate::partition::{OffsetMap, from_partition_offsets, to_partition_offsets};
use crate::secrets;
use crate::store::{local_dir, store_at, store_error};

/// Progress records kept in an object store (Spark's `minBatchesToRetain` default): a store
/// cannot append, so each batch is one object and older ones are deleted.
const PROGRESS_RETAINED: usize = 100;
/// Batches between two prunings of the progress records in an object store.
const PROGRESS_PRUNE_EVERY: i64 = 10;
/// The progress log of a location on a volume: one JSON line per batch, appended.
const PROGRESS_LOG: &str = "progress.jsonl";
/// The progress records of a location in an object store: `progress/<batch id>-<writer>.json`.
const PROGRESS_DIR: &str = "progress";

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

/// A reset of the query's offsets, as the table recorded it (the checkpoint keeps a copy: the
/// table's marker of it could expire with delta.setTransactionRetentionDuration).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppliedResetRecord {
    pub id: String,
    /// When its commit was made, epoch milliseconds.
    pub applied_at_ms: i64,
}

/// The object store options of the checkpoint: its own when it sets any (plain or from
/// Secrets), else the sink's. All or nothing, rather than key by key, so that a checkpoint in
/// another account or with another kind of credential never inherits the sink's key.
pub fn storage_options(
    checkpoint: &tributary_crds::Checkpoint,
    sink: &HashMap<String, String>,
) -> Result<HashMap<String, String>> {
    if checkpoint.storage_options.is_empty() && checkpoint.secret_storage_options.is_empty() {
        return Ok(sink.clone());
    }
    secrets::storage_options(
        &checkpoint.storage_options,
        &checkpoint.secret_storage_options,
        "spec.checkpoint",
    )
}

/// A checkpoint location: a directory on a volume, or a prefix in an object store.
pub struct CheckpointDir {
    /// Rooted at the location: object paths are relative to it.
    store: Arc<dyn ObjectStore>,
    /// As the manifest wrote it, for messages.
    location: String,
    /// What the store was opened with (a Spark checkpoint to take over is read with the same).
    storage_options: HashMap<String, String>,
    /// The directory, for a location on a volume.
    local: Option<PathBuf>,
    /// Tells this process's progress records apart from another replica's with the same id.
    writer: String,
}

impl CheckpointDir {
    /// Opens (creating) the location and claims it for `owner`, or refuses if another
    /// ingestion holds it. `storage_options` (see [`storage_options`]) are used for a URL.
    pub async fn open(
        location: &str,
        storage_options: &HashMap<String, String>,
        owner: &OwnerClaim,
    ) -> Result<CheckpointDir> {
        let local = local_dir(location);
        let store = store_at(location, storage_options, true)?;
        let checkpoint = CheckpointDir {
            store,
            location: location.to_string(),
            storage_options: storage_options.clone(),
            local,
            writer: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        };
        checkpoint.claim(owner).await?;
        Ok(checkpoint)
    }

    async fn claim(&self, owner: &OwnerClaim) -> Result<()> {
        let name = "owner";
        let existing: OwnerClaim = match self.create_new_json(name, owner, "claim").await? {
            true => return Ok(()),
            false => self
                .read_json(name)
                .await?
                .ok_or_else(|| self.corrupt(name, "the ownership claim vanished"))?,
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

    /// The location as the spec names it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object store options the location was opened with.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.storage_options
    }

    /// The query's metadata, created on first start with `adopted` as its id (a query whose
    /// checkpoint was lost, continued from the offsets it recorded in the table), else a new
    /// one. An existing checkpoint of another query than `adopted` is refused: continuing it
    /// would silently ignore the id asked for.
    pub async fn metadata(&self, adopted: Option<&str>) -> Result<QueryMetadata> {
        let name = "metadata";
        let fresh = QueryMetadata {
            id: adopted.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
        };
        if self
            .create_new_json(name, &fresh, "record the query id")
            .await?
        {
            return Ok(fresh);
        }
        let held: QueryMetadata = self
            .read_json(name)
            .await?
            .ok_or_else(|| self.corrupt(name, "metadata vanished"))?;
        match adopted {
            Some(asked) if asked != held.id => Err(Error::CheckpointOfAnotherQuery {
                location: self.location.clone(),
                held: held.id,
                asked: asked.to_string(),
            }),
            _ => Ok(held),
        }
    }

    /// Starting offsets of the query, resolved when it first ran (None before that).
    pub async fn initial_offsets(&self) -> Result<Option<OffsetMap>> {
        let offsets: Option<PartitionOffsets> = self.read_json("offsets/initial").await?;
        Ok(offsets.map(|o| from_partition_offsets(&o)))
    }

    /// Records the starting offsets; if another replica recorded them first, returns theirs.
    pub async fn save_initial_offsets(&self, offsets: &OffsetMap) -> Result<OffsetMap> {
        let created = self
            .create_new_json(
                "offsets/initial",
                &to_partition_offsets(offsets),
                "record the starting offsets",
            )
            .await?;
        if created {
            return Ok(offsets.clone());
        }
        Ok(self
            .initial_offsets()
            .await?
            .unwrap_or_else(|| offsets.clone()))
    }

    /// The reset `id`, if the checkpoint records it as applied.
    pub async fn applied_reset(&self, id: &str) -> Result<Option<AppliedResetRecord>> {
        self.read_json(&format!("resets/{id}")).await
    }

    /// Records that reset `id` was applied (once; a record already there stays).
    pub async fn record_reset(&self, record: &AppliedResetRecord) -> Result<()> {
        self.create_new_json(
            &format!("resets/{}", record.id),
            record,
            "record the applied reset",
        )
        .await
        .map(|_| ())
    }

    pub async fn available_now(&self) -> Result<Option<AvailableNowRun>> {
        self.read_json("availableNow").await
    }

    pub async fn save_available_now(&self, run: &AvailableNowRun) -> Result<()> {
        let name = "availableNow";
        let bytes = self.to_json(name, run)?;
        self.put(
            name,
            bytes,
            PutMode::Overwrite,
            "save the availableNow targets",
        )
        .await
        .map(|_| ())
    }

    /// Appends one batch to the progress log.
    pub async fn log_progress(&self, progress: &StreamingQueryProgress) -> Result<()> {
        match &self.local {
            Some(root) => {
                let path = root.join(PROGRESS_LOG);
                let mut line = serde_json::to_string(progress)
                    .map_err(|e| self.corrupt(PROGRESS_LOG, &e.to_string()))?;
                line.push('\n');
                // An object store cannot append; a file can, and one file is what a person
                // tails on a volume.
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(Error::checkpoint("open the progress log", &path))?;
                // A line torn by a full disk or a crash has no newline: the record after it
                // starts a line of its own, or it would be torn too.
                if !ends_with_newline(&mut file)
                    .map_err(Error::checkpoint("read the end of the progress log", &path))?
                {
                    line.insert(0, '\n');
                }
                file.write_all(line.as_bytes())
                    .map_err(Error::checkpoint("append to the progress log", &path))
            }
            None => {
                let name = format!(
                    "{PROGRESS_DIR}/{:020}-{}.json",
                    progress.batch_id.max(0),
                    self.writer
                );
                let bytes = self.to_json(&name, progress)?;
                self.put(&name, bytes, PutMode::Overwrite, "write the progress log")
                    .await?;
                if progress.batch_id % PROGRESS_PRUNE_EVERY == 0 {
                    self.prune_progress().await?;
                }
                Ok(())
            }
        }
    }

    /// The last batch id in the progress log (the next run continues the numbering).
    pub async fn last_batch_id(&self) -> Result<Option<i64>> {
        match &self.local {
            Some(root) => {
                let path = root.join(PROGRESS_LOG);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::checkpoint("read the progress log", &path)(e)),
                };
                // A line torn by a crash is skipped: the batch ids only number the progress
                // records.
                Ok(text
                    .lines()
                    .filter_map(|line| serde_json::from_str::<StreamingQueryProgress>(line).ok())
                    .map(|p| p.batch_id)
                    .max())
            }
            None => Ok(self
                .progress_records()
                .await?
                .iter()
                .filter_map(|(batch_id, _)| *batch_id)
                .max()),
        }
    }

    /// The progress records in the object store, oldest first, with their batch ids.
    async fn progress_records(&self) -> Result<Vec<(Option<i64>, Path)>> {
        let prefix = Path::from(PROGRESS_DIR);
        let listed: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.error("list the progress log"))?;
        let mut records: Vec<(Option<i64>, Path)> = listed
            .into_iter()
            .map(|meta| {
                let batch_id = meta
                    .location
                    .filename()
                    .and_then(|f| f.split('-').next())
                    .and_then(|id| id.parse().ok());
                (batch_id, meta.location)
            })
            .collect();
        // Zero-padded ids: name order is batch order.
        records.sort_by(|a, b| a.1.as_ref().cmp(b.1.as_ref()));
        Ok(records)
    }

    /// Deletes all but the newest [`PROGRESS_RETAINED`] progress records.
    async fn prune_progress(&self) -> Result<()> {
        let records = self.progress_records().await?;
        let excess = records.len().saturating_sub(PROGRESS_RETAINED);
        for (_, path) in records.into_iter().take(excess) {
            match self.store.delete(&path).await {
                // Another replica pruned it first.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("prune the progress log")(e)),
            }
        }
        Ok(())
    }

    fn to_json<T: Serialize>(&self, name: &str, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(value).map_err(|e| self.corrupt(name, &e.to_string()))
    }

    async fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>> {
        let bytes = match self.store.get(&Path::from(name)).await {
            Ok(found) => found
                .bytes()
                .await
                .map_err(self.error(&format!("read {name}")))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error(&format!("read {name}"))(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.corrupt(name, &e.to_string()))
    }

    /// Writes an object only if none exists. Returns false if it existed.
    async fn create_new_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        action: &str,
    ) -> Result<bool> {
        let bytes = self.to_json(name, value)?;
        self.put(name, bytes, PutMode::Create, action).await
    }

    /// Puts a whole object; false when `PutMode::Create` found one there. A retried create
    /// whose first attempt had landed also finds one: callers then read it back and find
    /// their own.
    async fn put(&self, name: &str, bytes: Vec<u8>, mode: PutMode, action: &str) -> Result<bool> {
        let path = Path::from(name);
        let options = PutOptions::from(mode);
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => {}
            // Azure answers 409 to `If-None-Match: *`; other stores may answer 412.
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => return Ok(false),
            Err(e) => return Err(self.error(action)(e)),
        }
        self.sync_local(name)?;
        Ok(true)
    }

    /// On a volume, flushes a written file and its directory entry to disk, so that the
    /// query's identity survives a node crash (object_store's local store does not sync).
    fn sync_local(&self, name: &str) -> Result<()> {
        let Some(root) = &self.local else {
            return Ok(());
        };
        let path = root.join(name);
        let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
        sync(&path).map_err(Error::checkpoint("flush", &path))?;
        if let Some(dir) = path.parent() {
            sync(dir).map_err(Error::checkpoint("flush", dir))?;
        }
        Ok(())
    }

    fn corrupt(&self, name: &str, reason: &str) -> Error {
        Error::CorruptCheckpoint {
            path: format!("{}/{name}", self.location.trim_end_matches('/')),
            reason: reason.to_string(),
        }
    }

    fn error(&self, action: &str) -> impl FnOnce(object_store::Error) -> Error {
        store_error(action, &self.location, self.local.is_some())
    }
}

/// Whether a file is empty or its last byte is a newline.
fn ends_with_newline(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0_u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::TopicPartition;

    #[tokio::test]
    async fn a_record_after_a_torn_line_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().display().to_string();
        let checkpoint = CheckpointDir::open(&location, &HashMap::new(), &owner("t"))
            .await
            .expect("open");
        let progress = |batch_id| StreamingQueryProgress {
            id: "q".into(),
            run_id: "r".into(),
            timestamp: "2026-11-30T00:00:00Z".into(),
            batch_id,
            ..StreamingQueryProgress::default()
        };
        checkpoint.log_progress(&progress(3)).await.expect("log");
        // The disk filled up in the middle of the next record.
        let path = dir.path().join(PROGRESS_LOG);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(br#"{"id":"q","runId":"r","timesta"#)
            .expect("torn");
        drop(file);
        checkpoint.log_progress(&progress(5)).await.expect("log");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].ends_with("timesta"), "{text}");
        assert_eq!(checkpoint.last_batch_id().await.expect("read"), Some(5));
    }

    fn owner(name: &str) -> OwnerClaim {
        OwnerClaim {
            namespace: "iot".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn a_second_ingestion_is_refused_naming_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().join("cp").display().to_string();
        let none = HashMap::new();
        let checkpoint = CheckpointDir::open(&location, &none, &owner("a"))
            .await
            .expect("first claim");
        let id = checkpoint.metadata(None).await.expect("metadata").id;
        let reopened = CheckpointDir::open(&location, &none, &owner("a"))
            .await
            .expect("reopen");
        assert_eq!(reopened.metadata(None).await.expect("metadata").id, id);
        let error = CheckpointDir::open(&location, &none, &owner("b"))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("belongs to ingestion iot/a, not iot/b"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_applied_reset_is_recorded_once_per_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().display().to_string();
        let checkpoint = CheckpointDir::open(&location, &HashMap::new(), &owner("r"))
            .await
            .expect("open");
        assert_eq!(checkpoint.applied_reset("r1").await.expect("read"), None);
        let first = AppliedResetRecord {
            id: "r1".into(),
            applied_at_ms: 1_700_000_000_000,
        };
        checkpoint.record_reset(&first).await.expect("record");
        // A second worker's record of the same reset (it found the table's marker later) does
        // not replace the first.
        checkpoint
            .record_reset(&AppliedResetRecord {
                applied_at_ms: 1_700_000_500_000,
                ..first.clone()
            })
            .await
            .expect("record again");
        assert_eq!(
            checkpoint.applied_reset("r1").await.expect("read"),
            Some(first)
        );
        assert_eq!(checkpoint.applied_reset("r2").await.expect("read"), None);
    }

    #[tokio::test]
    async fn initial_offsets_are_written_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = format!("file://{}", dir.path().display());
        let checkpoint = CheckpointDir::open(&location, &HashMap::new(), &owner("x"))
            .await
            .expect("open");
        let first = OffsetMap::from([(TopicPartition::new("t", 0), 5_i64)]);
        let second = OffsetMap::from([(TopicPartition::new("t", 0), 9_i64)]);
        assert_eq!(
            checkpoint.save_initial_offsets(&first).await.expect("save"),
            first
        );
        assert_eq!(
            checkpoint
                .save_initial_offsets(&second)
                .await
                .expect("save"),
            first
        );
        // The files keep the layout of earlier versions, so existing checkpoints still open.
        let text = std::fs::read_to_string(dir.path().join("offsets/initial")).expect("file");
        assert!(text.contains("\"t\""), "{text}");
        assert!(dir.path().join("owner").exists());
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().display().to_string();
        let none = HashMap::new();
        let claims: Vec<_> = (0..8)
            .map(|i| {
                let location = location.clone();
                let none = none.clone();
                tokio::spawn(async move {
                    CheckpointDir::open(&location, &none, &owner(&format!("q{i}")))
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut winners = 0;
        for claim in claims {
            winners += usize::from(claim.await.expect("join"));
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn a_relative_path_is_refused() {
        let error = CheckpointDir::open("checkpoints/q", &HashMap::new(), &owner("a"))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("checkpoints/q"), "{error}");
    }
}
