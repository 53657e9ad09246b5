//! Compaction of the small files continuous mode leaves behind (issue #3).
//!
//! Every micro-batch commits its own Parquet files, so a query that commits every second adds
//! about a hundred small files a minute. delta-rs's `optimize` needs datafusion, which the worker
//! does not build, so this module does the same job with the writer module alone:
//!
//! 1. plan: pick the files of the current snapshot below a size threshold, grouped by their
//!    partition values, and bin-pack each partition's files (oldest first, so a bin covers one
//!    stretch of time and its statistics stay tight) into bins of at most the target file size;
//!    a partition is compacted only once it holds `min_small_files` small files.
//! 2. rewrite: one bin at a time (memory is bounded by one bin: each input file is read whole,
//!    at most half the target size, and streamed into a writer that uploads as it goes), read
//!    the files through the table's object store and write their rows again with delta-rs's
//!    `RecordBatchWriter`, so partition paths and statistics are made exactly as for appends.
//! 3. commit: one commit holding `remove` actions for the inputs and `add` actions for the
//!    outputs, all with `dataChange: false` (readers of the change feed and streaming readers
//!    skip them: the table's content did not change), as an `OPTIMIZE` operation. Never a `txn`
//!    action: the worker's offsets stay exactly where the appends put them.
//!
//! Concurrency. Appends (this worker's and other replicas') keep committing while a compaction
//! runs. delta-rs's conflict checker is not enough here: it only treats a concurrent remove as a
//! conflict when that remove has `dataChange: true` (conflict_checker.rs,
//! `check_for_deleted_files_against_current_txn_deleted_files`), so two compactions that rewrote
//! the same files would both commit and every row of those files would be in the table twice
//! (test `delta_rs_alone_commits_two_compactions_of_the_same_files` shows it). So the commit is
//! a rebase loop of our own: refresh the table, check that every input file is still in the
//! snapshot and that the schema and protocol did not change, then commit on exactly that version
//! with delta-rs's retries off (`max_retries(0)`), so the log store's put-if-absent of the next
//! version is the atomic step. If another commit took that version, start the loop again: an
//! append only adds files, so it never invalidates a bin; a bin whose inputs another writer
//! removed first is dropped (its output deleted) and the rest still commit.

// Until pipeline.rs calls `DeltaSink::compact` (issue #3), only the tests use this module.
#![cfg_attr(not(test), allow(dead_code))]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{ArrayRef, UInt32Array, new_null_array};
use deltalake::arrow::compute::{cast, take};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, LogicalFileView, Metadata, Protocol, Remove};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore, Path};
use futures::StreamExt;
use tracing::Instrument;

use crate::error::{Error, Result};

/// The target file size when the sink does not set one (Spark's and delta-rs's default is in the
/// same range: large enough for efficient scans, small enough to rewrite cheaply).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Commit attempts before giving up. Each lost attempt means another writer committed in the
/// short window between our refresh and our put; appends arrive every ~0.3-1 s per replica.
const COMMIT_ATTEMPTS: u32 = 50;

/// Rows per decoded batch while reading an input file.
const READ_BATCH_ROWS: usize = 8192;

/// When a partition is worth compacting, and how much one run may do.
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    /// Files below this many bytes are small. None: half the target file size (a file that
    /// large is already fine, and any two small files fit one target-sized bin).
    pub small_file_bytes: Option<u64>,
    /// A partition (set of partition values; the whole table when unpartitioned) is compacted
    /// once it holds at least this many small files. At least 2 whatever is set.
    pub min_small_files: usize,
    /// Bins rewritten per run, each at most the target size of input: bounds the time one run
    /// takes away from ingestion. What is left waits for the next run.
    pub max_bins_per_run: usize,
    /// Small files are compacted with files of their own size tier only (tier 0 below this
    /// many bytes, then one tier per factor of [`TIER_FACTOR`]). Without tiers every run merged
    /// the growing output of the previous runs again with a minute's new files, rewriting each
    /// byte ~16 times on its way to the target size; with them about once per tier.
    pub tier_base_bytes: u64,
}

/// Size ratio between compaction tiers.
pub const TIER_FACTOR: u64 = 8;

/// The size tier of a file: 0 below `base`, then 1, 2, ... per factor of [`TIER_FACTOR`].
fn tier(size: u64, base: u64) -> u32 {
    let mut tier = 0;
    let mut bound = base.max(1);
    while size >= bound {
        tier += 1;
        match bound.checked_mul(TIER_FACTOR) {
            Some(next) => bound = next,
            None => break,
        }
    }
    tier
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            small_file_bytes: None,
            min_small_files: 20,
            max_bins_per_run: 8,
            tier_base_bytes: 1 << 20,
        }
    }
}

/// How a compaction run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactionStatus {
    /// No partition had enough small files: nothing written, nothing committed.
    NothingToDo,
    /// The rewritten bins are committed (`version`).
    Committed,
    /// Another writer (another compaction, maybe in another replica) removed the input files
    /// first: nothing committed, the files this run wrote are deleted again.
    Superseded,
    /// Gave up without committing, for this reason (the schema or protocol changed, or other
    /// writers took every version we tried); the files this run wrote are deleted again and the
    /// next run starts over.
    Abandoned(String),
}

/// What a compaction run did, for logs and metrics.
#[derive(Clone, Debug)]
pub struct CompactionOutcome {
    pub status: CompactionStatus,
    /// The table version the run was planned on.
    pub read_version: i64,
    /// The version of the compaction's commit (only when Committed).
    pub version: Option<i64>,
    pub files_removed: usize,
    pub files_added: usize,
    /// Sizes of the removed files and of the added files.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bins dropped because another writer removed one of their input files first.
    pub bins_superseded: usize,
    /// Commit attempts lost to other writers' commits (appends) before ours landed.
    pub retries: u32,
}

impl CompactionOutcome {
    fn empty(status: CompactionStatus, read_version: i64) -> CompactionOutcome {
        CompactionOutcome {
            status,
            read_version,
            version: None,
            files_removed: 0,
            files_added: 0,
            bytes_before: 0,
            bytes_after: 0,
            bins_superseded: 0,
            retries: 0,
        }
    }
}

/// Compacts the small files of `table` (at `uri`, for messages) into files of about
/// `target_file_size` bytes, as `policy` says. Safe while other writers append; see the module
/// comment. Leaves `table` at the latest version it saw.
pub async fn compact(
    table: &mut DeltaTable,
    uri: &str,
    target_file_size: u64,
    policy: &CompactionPolicy,
) -> Result<CompactionOutcome> {
    let span = tracing::info_span!(
        "compact",
        table = uri,
        target_file_size,
        read_version = tracing::field::Empty,
        bins = tracing::field::Empty,
    );
    async move {
        table
            .update_state()
            .await
            .map_err(Error::delta("refresh", uri))?;
        let plan = plan(table, uri, target_file_size, policy)?;
        let span = tracing::Span::current();
        span.record("read_version", plan.read_version);
        span.record("bins", plan.bins.len());
        if plan.bins.is_empty() {
            tracing::debug!("no partition has enough small files");
            return Ok(CompactionOutcome::empty(
                CompactionStatus::NothingToDo,
                plan.read_version,
            ));
        }
        let rewritten = rewrite(table, uri, &plan).await?;
        let outcome = commit(table, uri, &plan, rewritten).await?;
        match &outcome.status {
            CompactionStatus::Committed => tracing::info!(
                version = outcome.version,
                files_removed = outcome.files_removed,
                files_added = outcome.files_added,
                bytes_before = outcome.bytes_before,
                bytes_after = outcome.bytes_after,
                bins_superseded = outcome.bins_superseded,
                retries = outcome.retries,
                "compacted small files"
            ),
            CompactionStatus::Superseded => {
                tracing::info!("another writer compacted the same files first")
            }
            CompactionStatus::Abandoned(reason) => {
                tracing::warn!(reason, "gave up compacting; the next run starts over")
            }
            CompactionStatus::NothingToDo => {}
        }
        Ok(outcome)
    }
    .instrument(span)
    .await
}

/// The files of a bin share these partition values (column -> raw value as in the log), in
/// column order; empty for an unpartitioned table.
type PartitionKey = Vec<(String, Option<String>)>;

/// Files to rewrite together: one partition, at most the target size in all.
struct Bin {
    partition: PartitionKey,
    files: Vec<LogicalFileView>,
    bytes: u64,
}

/// What to compact, from one snapshot.
struct Plan {
    read_version: i64,
    target_file_size: u64,
    /// The table's metadata and protocol the files were read under: if either changes before
    /// the commit (a schema change, a new table feature), the rewrite may no longer be valid.
    metadata: Metadata,
    protocol: Protocol,
    bins: Vec<Bin>,
}

/// A bin rewritten: the actions that swap its inputs for its outputs.
struct RewrittenBin {
    removes: Vec<Remove>,
    adds: Vec<Add>,
}

impl RewrittenBin {
    fn bytes_before(&self) -> u64 {
        self.removes
            .iter()
            .map(|r| r.size.map_or(0, |s| s.max(0) as u64))
            .sum()
    }

    fn bytes_after(&self) -> u64 {
        self.adds.iter().map(|a| a.size.max(0) as u64).sum()
    }
}

fn plan(
    table: &DeltaTable,
    uri: &str,
    target_file_size: u64,
    policy: &CompactionPolicy,
) -> Result<Plan> {
    let snapshot = table.snapshot().map_err(Error::delta("read", uri))?;
    let threshold = policy.small_file_bytes.unwrap_or(target_file_size / 2);
    let mut by_partition: BTreeMap<(PartitionKey, u32), Vec<LogicalFileView>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let size = u64::try_from(file.size()).unwrap_or(0);
        if size >= threshold {
            continue;
        }
        // A deletion vector hides some of the file's rows; rewriting the file would need it
        // applied. The worker never writes one, so such files (from other engines) are left.
        if file.deletion_vector_descriptor().is_some() {
            continue;
        }
        let key: BTreeMap<String, Option<String>> =
            file.partition_values_map().into_iter().collect();
        by_partition
            .entry((
                key.into_iter().collect(),
                tier(size, policy.tier_base_bytes),
            ))
            .or_default()
            .push(file);
    }
    let mut bins = Vec::new();
    for ((partition, _tier), mut files) in by_partition {
        if files.len() < policy.min_small_files.max(2) {
            continue;
        }
        // Oldest first: a bin then holds rows that arrived together, and its min/max
        // statistics (timestamps, offsets) stay narrow for data skipping.
        files.sort_by(|a, b| {
            (a.modification_time(), a.path()).cmp(&(b.modification_time(), b.path()))
        });
        let sizes: Vec<u64> = files
            .iter()
            .map(|f| u64::try_from(f.size()).unwrap_or(0))
            .collect();
        for range in pack(&sizes, target_file_size) {
            bins.push(Bin {
                partition: partition.clone(),
                bytes: sizes[range.clone()].iter().sum(),
                // A view is a row index into shared Arrow arrays: cloning it is cheap.
                files: files[range].to_vec(),
            });
        }
    }
    // The bins with the most files first: they remove the most files per byte rewritten.
    bins.sort_by_key(|b| std::cmp::Reverse(b.files.len()));
    bins.truncate(policy.max_bins_per_run.max(1));
    Ok(Plan {
        read_version: snapshot.version() as i64,
        target_file_size,
        metadata: snapshot.metadata().clone(),
        protocol: snapshot.protocol().clone(),
        bins,
    })
}

/// Next-fit packing of files (in the given order) into contiguous runs of at most `target`
/// bytes. A run of one file is dropped: rewriting it alone would gain nothing.
fn pack(sizes: &[u64], target: u64) -> Vec<std::ops::Range<usize>> {
    let mut bins = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        if i > start && bytes.saturating_add(*size) > target {
            bins.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(*size);
    }
    if start < sizes.len() {
        bins.push(start..sizes.len());
    }
    bins.retain(|r| r.len() >= 2);
    bins
}

/// Rewrites every bin of the plan, one at a time. On an error, the files already written are
/// deleted again (nothing refers to them).
async fn rewrite(table: &DeltaTable, uri: &str, plan: &Plan) -> Result<Vec<RewrittenBin>> {
    let store = table.object_store();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(Error::delta("compact", uri))?
        .with_target_file_size(plan.target_file_size);
    let schema = writer.arrow_schema();
    let mut done: Vec<RewrittenBin> = Vec::with_capacity(plan.bins.len());
    for bin in &plan.bins {
        let span = tracing::debug_span!(
            "compact_bin",
            partition = ?bin.partition,
            files = bin.files.len(),
            bytes = bin.bytes,
        );
        match rewrite_bin(&store, &mut writer, &schema, uri, bin)
            .instrument(span)
            .await
        {
            Ok(rewritten) => done.push(rewritten),
            Err(error) => {
                // Aborts the uploads in progress; finished files of this bin stay as orphans
                // for VACUUM (the writer does not say which they are).
                writer.reset();
                delete_outputs(&store, done.iter()).await;
                return Err(error);
            }
        }
    }
    Ok(done)
}

async fn rewrite_bin(
    store: &Arc<dyn ObjectStore>,
    writer: &mut RecordBatchWriter,
    schema: &SchemaRef,
    uri: &str,
    bin: &Bin,
) -> Result<RewrittenBin> {
    let mut removes = Vec::with_capacity(bin.files.len());
    for file in &bin.files {
        let path = file.object_store_path();
        let failed = |what: &str, e: &dyn std::fmt::Display| Error::Compact {
            uri: uri.to_string(),
            reason: format!("cannot {what} {path}: {e}"),
        };
        // A small file is read whole (at most half the target size) rather than ranged: one
        // request instead of one per column chunk.
        let bytes = store
            .get_opts(&path, Default::default())
            .await
            .map_err(|e| failed("read", &e))?
            .bytes()
            .await
            .map_err(|e| failed("read", &e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| failed("open the Parquet file", &e))?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| failed("open the Parquet file", &e))?;
        let partition = partition_columns(file, schema).map_err(|e| failed("read", &e))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed("decode", &e))?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = conform(&batch, schema, &partition).map_err(|e| failed("convert", &e))?;
            writer
                .write(batch)
                .await
                .map_err(Error::delta("write the compacted files of", uri))?;
        }
        removes.push(file.remove_action(false));
    }
    let mut adds = writer
        .flush()
        .await
        .map_err(Error::delta("write the compacted files of", uri))?;
    for add in &mut adds {
        // Same rows, new layout: readers following the table's changes must skip this file.
        add.data_change = false;
    }
    tracing::debug!(files_added = adds.len(), "bin rewritten");
    Ok(RewrittenBin { removes, adds })
}

/// The file's partition values as one-row arrays of the table's types, by column name. A
/// Parquet file of a partitioned table does not hold its partition columns: the log does.
fn partition_columns(
    file: &LogicalFileView,
    schema: &SchemaRef,
) -> Result<Vec<(String, ArrayRef)>, String> {
    let Some(values) = file.partition_values() else {
        return if file.partition_values_map().is_empty() {
            Ok(Vec::new())
        } else {
            Err("the snapshot has no parsed partition values for it".to_string())
        };
    };
    let mut columns = Vec::with_capacity(values.fields().len());
    for (field, value) in values.fields().iter().zip(values.values()) {
        let array = value
            .to_array(1)
            .map_err(|e| format!("partition value {}: {e}", field.name()))?;
        let wanted = schema
            .field_with_name(field.name())
            .map_err(|e| format!("partition column {}: {e}", field.name()))?
            .data_type();
        let array = if array.data_type() == wanted {
            array
        } else {
            cast(&array, wanted).map_err(|e| format!("partition value {}: {e}", field.name()))?
        };
        columns.push((field.name().clone(), array));
    }
    Ok(columns)
}

/// The batch in the writer's schema: partition columns from the log, the others by name (cast
/// if a type differs, e.g. another writer's timestamp unit; null if the file predates a nullable
/// column).
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    partition: &[(String, ArrayRef)],
) -> Result<RecordBatch, String> {
    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = if let Some((_, one)) = partition.iter().find(|(n, _)| n == field.name()) {
            let repeat = UInt32Array::from(vec![0u32; rows]);
            take(one.as_ref(), &repeat, None).map_err(|e| e.to_string())?
        } else if let Some(column) = batch.column_by_name(field.name()) {
            column.clone()
        } else if field.is_nullable() {
            new_null_array(field.data_type(), rows)
        } else {
            return Err(format!(
                "the file has no column {} and the table says it is NOT NULL",
                field.name()
            ));
        };
        let column = if column.data_type() == field.data_type() {
            column
        } else {
            cast(&column, field.data_type()).map_err(|e| format!("column {}: {e}", field.name()))?
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// Commits the rewritten bins: the rebase loop of the module comment.
async fn commit(
    table: &mut DeltaTable,
    uri: &str,
    plan: &Plan,
    mut pending: Vec<RewrittenBin>,
) -> Result<CompactionOutcome> {
    let store = table.object_store();
    let mut bins_superseded = 0;
    for attempt in 0..COMMIT_ATTEMPTS {
        // The first attempt commits on the snapshot the plan read (the usual case in a quiet
        // table costs no extra round trip); later ones on the latest version.
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
            table
                .update_state()
                .await
                .map_err(Error::delta("refresh", uri))?;
        }
        let snapshot = table.snapshot().map_err(Error::delta("read", uri))?;
        if snapshot.metadata() != &plan.metadata || snapshot.protocol() != &plan.protocol {
            delete_outputs(&store, pending.iter()).await;
            let reason = format!(
                "the table's metadata or protocol changed after version {}",
                plan.read_version
            );
            return Ok(CompactionOutcome {
                bins_superseded,
                retries: attempt,
                ..CompactionOutcome::empty(CompactionStatus::Abandoned(reason), plan.read_version)
            });
        }
        // Which of our inputs are still in the table: a bin with one of them gone was (at
        // least partly) compacted or deleted by another writer, and its rows must not come back.
        let wanted: HashSet<&str> = pending
            .iter()
            .flat_map(|b| b.removes.iter().map(|r| r.path.as_str()))
            .collect();
        let live: HashSet<String> = snapshot
            .log_data()
            .iter()
            .filter_map(|f| {
                let path = f.path();
                wanted.contains(path.as_ref()).then(|| path.into_owned())
            })
            .collect();
        let (keep, gone): (Vec<RewrittenBin>, Vec<RewrittenBin>) = pending
            .into_iter()
            .partition(|b| b.removes.iter().all(|r| live.contains(&r.path)));
        if !gone.is_empty() {
            tracing::info!(
                bins = gone.len(),
                version = snapshot.version(),
                "another writer removed files of these bins first; dropping them"
            );
            bins_superseded += gone.len();
            delete_outputs(&store, gone.iter()).await;
        }
        pending = keep;
        if pending.is_empty() {
            return Ok(CompactionOutcome {
                bins_superseded,
                retries: attempt,
                ..CompactionOutcome::empty(CompactionStatus::Superseded, plan.read_version)
            });
        }

        let now = chrono::Utc::now().timestamp_millis();
        let mut actions = Vec::new();
        for bin in &pending {
            actions.extend(bin.removes.iter().cloned().map(|mut r| {
                r.deletion_timestamp = Some(now);
                Action::Remove(r)
            }));
            actions.extend(bin.adds.iter().cloned().map(Action::Add));
        }
        let files_removed: usize = pending.iter().map(|b| b.removes.len()).sum();
        let files_added: usize = pending.iter().map(|b| b.adds.len()).sum();
        let bytes_before: u64 = pending.iter().map(RewrittenBin::bytes_before).sum();
        let bytes_after: u64 = pending.iter().map(RewrittenBin::bytes_after).sum();
        let properties = CommitProperties::default()
            .with_metadata([
                (
                    "tributary.operation".to_string(),
                    serde_json::json!("compaction"),
                ),
                (
                    "tributary.compaction".to_string(),
                    serde_json::json!({
                        "plannedOnVersion": plan.read_version,
                        "bins": pending.len(),
                        "filesRemoved": files_removed,
                        "filesAdded": files_added,
                        "bytesBefore": bytes_before,
                        "bytesAfter": bytes_after,
                    }),
                ),
            ])
            // Our loop above is the retry: delta-rs's would not notice another compaction.
            .with_max_retries(0);
        let result = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: i64::try_from(plan.target_file_size).unwrap_or(i64::MAX),
                },
            )
            .await;
        match result {
            Ok(finalized) => {
                let version = finalized.version() as i64;
                // Best effort: the commit is in; a failed refresh only leaves `table` behind,
                // and the sink refreshes before each append anyway.
                if let Err(error) = table.update_state().await {
                    tracing::warn!(%error, "cannot refresh the table after compacting");
                }
                return Ok(CompactionOutcome {
                    status: CompactionStatus::Committed,
                    read_version: plan.read_version,
                    version: Some(version),
                    files_removed,
                    files_added,
                    bytes_before,
                    bytes_after,
                    bins_superseded,
                    retries: attempt,
                });
            }
            // Another writer committed first (the version was taken, or the log had moved past
            // our snapshot): our commit is certainly not in. Rebase and try again.
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_),
            })
            | Err(DeltaTableError::VersionAlreadyExists(_)) => {
                tracing::debug!(attempt, "a concurrent commit landed first; rebasing");
            }
            // Anything else may or may not have committed (a timeout after the put, a failed
            // checkpoint after the commit): the outputs stay, VACUUM removes them if unused.
            Err(source) => {
                return Err(Error::delta("commit the compaction of", uri)(source));
            }
        }
    }
    delete_outputs(&store, pending.iter()).await;
    Ok(CompactionOutcome {
        bins_superseded,
        retries: COMMIT_ATTEMPTS,
        ..CompactionOutcome::empty(
            CompactionStatus::Abandoned(format!(
                "other writers committed first {COMMIT_ATTEMPTS} times in a row"
            )),
            plan.read_version,
        )
    })
}

/// 20 ms, 40 ms, ... up to 1 s: enough for an append in flight to land.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((20 * u64::from(attempt)).min(1000))
}

/// Deletes files a compaction wrote but will not commit. Best effort: a file left behind is
/// referenced by nothing and VACUUM removes it.
async fn delete_outputs<'a>(
    store: &Arc<dyn ObjectStore>,
    bins: impl Iterator<Item = &'a RewrittenBin>,
) {
    let paths: Vec<Path> = bins
        .flat_map(|b| b.adds.iter())
        .map(|a| Path::parse(&a.path).unwrap_or_else(|_| Path::from(a.path.as_str())))
        .collect();
    if paths.is_empty() {
        return;
    }
    let locations = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
    let mut results = store.delete_stream(locations);
    while let Some(result) = results.next().await {
        if let Err(error) = result {
            tracing::warn!(%error, "cannot delete an uncommitted compaction output; VACUUM will");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::{Path as FsPath, PathBuf};

    use deltalake::DeltaTableBuilder;
    use deltalake::arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::arrow::util::display::array_value_to_string;
    use deltalake::kernel::Transaction;
    use deltalake::protocol::SaveMode;
    use serde_json::Value;

    use super::*;
    use crate::sink::{CommitOutcome, DeltaSink, TxnUpdate};

    /// The query's txn app id for source partition `p`, as the worker names them.
    fn app(p: i32) -> String {
        format!("q-events-{p}")
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("site", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
        ]))
    }

    /// Rows `ids`, each with the site `site(id)`.
    fn rows(ids: std::ops::Range<i64>, site: impl Fn(i64) -> Option<&'static str>) -> RecordBatch {
        let ids: Vec<i64> = ids.collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(
                    ids.iter().map(|i| site(*i)).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    ids.iter().map(|i| *i as f64 / 4.0).collect::<Vec<_>>(),
                )),
            ],
        )
        .expect("batch")
    }

    async fn sink(location: &str, partition_by: &[&str], target: Option<u64>) -> DeltaSink {
        DeltaSink::open_or_create(
            location,
            Default::default(),
            schema(),
            partition_by.iter().map(|s| s.to_string()).collect(),
            10,
            target,
            "compaction test",
        )
        .await
        .expect("open or create the table")
    }

    /// Commits `batch` with the txn of source partition `p` moving from `version - 1` to
    /// `version`, as the worker's batch loop does.
    async fn append(sink: &mut DeltaSink, p: i32, version: i64, batch: &RecordBatch) {
        let outcome = sink
            .commit(
                Some(batch),
                &[TxnUpdate {
                    app_id: app(p),
                    expected: (version > 1).then_some(version - 1),
                    version,
                }],
                HashMap::new(),
            )
            .await
            .expect("append");
        assert!(
            matches!(outcome, CommitOutcome::Committed { .. }),
            "{outcome:?}"
        );
    }

    async fn open(location: &str) -> DeltaTable {
        let url = crate::sink::table_url(location).expect("url");
        let mut table = DeltaTableBuilder::from_url(url)
            .expect("builder")
            .build()
            .expect("build");
        table.load().await.expect("load");
        table
    }

    fn location(dir: &tempfile::TempDir) -> String {
        dir.path().join("table").display().to_string()
    }

    /// The table read without deltalake: `_delta_log/*.json` replayed (add, remove, txn; the
    /// JSON commits stay next to checkpoints) and the live Parquet files read from disk.
    struct Replayed {
        version: i64,
        /// Live data files by path as written in the log, with their partition values.
        files: BTreeMap<String, BTreeMap<String, Option<String>>>,
        txns: BTreeMap<String, i64>,
        /// Every row as "id|site|value", sorted: a multiset.
        rows: Vec<String>,
    }

    fn replay(location: &str) -> Replayed {
        let log = FsPath::new(location).join("_delta_log");
        let mut commits: Vec<(i64, PathBuf)> = std::fs::read_dir(&log)
            .expect("read _delta_log")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
            .collect();
        commits.sort();
        let mut files = BTreeMap::new();
        let mut txns = BTreeMap::new();
        for (_, path) in &commits {
            for line in std::fs::read_to_string(path).expect("commit").lines() {
                let action: Value = serde_json::from_str(line).expect("JSON action");
                if let Some(add) = action.get("add") {
                    let values: BTreeMap<String, Option<String>> = add["partitionValues"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                                .collect()
                        })
                        .unwrap_or_default();
                    files.insert(add["path"].as_str().expect("path").to_string(), values);
                }
                if let Some(remove) = action.get("remove") {
                    let path = remove["path"].as_str().expect("path");
                    assert!(
                        files.remove(path).is_some(),
                        "remove of a file that is not live: {path}"
                    );
                }
                if let Some(txn) = action.get("txn") {
                    txns.insert(
                        txn["appId"].as_str().expect("appId").to_string(),
                        txn["version"].as_i64().expect("version"),
                    );
                }
            }
        }
        let mut rows = Vec::new();
        for (path, partition) in &files {
            let decoded = percent_decode(path);
            let file = std::fs::File::open(FsPath::new(location).join(&decoded))
                .unwrap_or_else(|e| panic!("open {decoded}: {e}"));
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet")
                .build()
                .expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                for row in 0..batch.num_rows() {
                    let cell = |name: &str| match partition.get(name) {
                        Some(value) => value.clone().unwrap_or_else(|| "NULL".into()),
                        None => {
                            let column = batch.column_by_name(name).expect("column");
                            if column.is_null(row) {
                                "NULL".into()
                            } else {
                                array_value_to_string(column, row).expect("display")
                            }
                        }
                    };
                    rows.push(format!("{}|{}|{}", cell("id"), cell("site"), cell("value")));
                }
            }
        }
        rows.sort();
        Replayed {
            version: commits.last().map_or(-1, |(v, _)| *v),
            files,
            txns,
            rows,
        }
    }

    fn percent_decode(path: &str) -> String {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).expect("utf-8")
    }

    /// The actions of commit `version`.
    fn commit_actions(location: &str, version: i64) -> Vec<Value> {
        let path = FsPath::new(location)
            .join("_delta_log")
            .join(format!("{version:020}.json"));
        std::fs::read_to_string(path)
            .expect("commit file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON action"))
            .collect()
    }

    /// Every Parquet file under the table directory, live or not.
    fn parquet_on_disk(location: &str) -> Vec<PathBuf> {
        fn walk(dir: &FsPath, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|x| x == "parquet")
                    && !path.starts_with(FsPath::new("_delta_log"))
                    && !path.to_string_lossy().contains("_delta_log")
                {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(FsPath::new(location), &mut out);
        out.sort();
        out
    }

    /// 30 micro-batches of 10 rows each, on source partition 0.
    async fn thirty_appends(location: &str) -> DeltaSink {
        let mut sink = sink(location, &[], None).await;
        for n in 1..=30 {
            let batch = rows(n * 10..n * 10 + 10, |i| (i % 3 == 0).then_some("north"));
            append(&mut sink, 0, n, &batch).await;
        }
        sink
    }

    #[test]
    fn tiers_grow_by_a_factor_of_eight_from_the_base() {
        let base = 1 << 20;
        assert_eq!(tier(0, base), 0);
        assert_eq!(tier(base - 1, base), 0);
        assert_eq!(tier(base, base), 1);
        assert_eq!(tier(8 * base - 1, base), 1);
        assert_eq!(tier(8 * base, base), 2);
        assert_eq!(
            tier(u64::MAX, base),
            15,
            "the last tier holds everything above 2^62"
        );
    }

    #[tokio::test]
    async fn files_of_different_tiers_are_compacted_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = thirty_appends(&location).await;
        // First run: the thirty tiny files (all in tier 0 with a base above their size) merge.
        let policy = CompactionPolicy {
            min_small_files: 3,
            tier_base_bytes: 1 << 20,
            ..CompactionPolicy::default()
        };
        let first = sink.compact(&policy).await.expect("first compaction");
        assert_eq!(first.status, CompactionStatus::Committed);
        assert_eq!(first.files_added, 1);
        let merged = first.bytes_after;
        // Three more tiny appends, then a base that puts the merged file one tier up: the
        // merged file is left alone and only the three new ones are merged.
        for n in 31..=33 {
            let batch = rows(n * 10..n * 10 + 10, |_| None);
            append(&mut sink, 0, n, &batch).await;
        }
        let tiny = CompactionPolicy {
            tier_base_bytes: merged,
            ..policy
        };
        let second = sink.compact(&tiny).await.expect("second compaction");
        assert_eq!(second.status, CompactionStatus::Committed);
        assert_eq!(
            second.files_removed, 3,
            "the merged file is not rewritten again"
        );
        assert!(second.bytes_before < merged);
    }

    #[test]
    fn pack_fills_bins_in_order_and_drops_lone_files() {
        assert_eq!(pack(&[10, 10, 10, 10, 10], 30), vec![0..3, 3..5]);
        // A file that does not fit starts the next bin; a bin of one file is dropped.
        assert_eq!(pack(&[20, 20, 5, 25], 30), vec![1..3]);
        assert_eq!(pack(&[40, 1, 1], 30), vec![1..3]);
        assert!(pack(&[5], 30).is_empty());
        assert!(pack(&[], 30).is_empty());
        for bin in pack(&[7, 9, 3, 12, 30, 1, 1, 29, 2], 30) {
            assert!(bin.len() >= 2);
        }
    }

    #[tokio::test]
    async fn thirty_small_appends_become_one_file_with_the_same_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = thirty_appends(&location).await;
        let before = replay(&location);
        assert_eq!(before.files.len(), 30);
        assert_eq!(before.rows.len(), 300);
        let txns_before = sink.txn_versions(&[app(0)]).await.expect("txns");
        assert_eq!(txns_before, vec![Some(30)]);

        let outcome = sink
            .compact(&CompactionPolicy::default())
            .await
            .expect("compact");

        assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
        assert_eq!(outcome.read_version, before.version);
        assert_eq!(outcome.version, Some(before.version + 1));
        assert_eq!((outcome.files_removed, outcome.files_added), (30, 1));
        let sizes: u64 = before
            .files
            .keys()
            .map(|p| {
                std::fs::metadata(FsPath::new(&location).join(p))
                    .expect("size")
                    .len()
            })
            .sum();
        assert_eq!(outcome.bytes_before, sizes);
        assert!(outcome.bytes_after > 0 && outcome.bytes_after < outcome.bytes_before);

        let after = replay(&location);
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.files.len(), 1);
        assert_eq!(after.rows, before.rows, "the same rows, each once");
        assert_eq!(after.txns, before.txns);
        assert_eq!(
            sink.txn_versions(&[app(0)]).await.expect("txns"),
            txns_before
        );

        // The commit: an OPTIMIZE of no data change, no txn, saying it is tributary's.
        let actions = commit_actions(&location, before.version + 1);
        let (mut removes, mut adds) = (0, 0);
        for action in &actions {
            assert!(action.get("txn").is_none(), "no txn action: {action}");
            if let Some(remove) = action.get("remove") {
                removes += 1;
                assert_eq!(remove["dataChange"], false);
                assert!(remove["deletionTimestamp"].is_i64());
                assert!(remove["size"].as_i64().is_some_and(|s| s > 0));
                assert!(remove["partitionValues"].is_object());
            }
            if let Some(add) = action.get("add") {
                adds += 1;
                assert_eq!(add["dataChange"], false);
                assert!(
                    add["stats"]
                        .as_str()
                        .is_some_and(|s| s.contains("numRecords"))
                );
            }
            if let Some(info) = action.get("commitInfo") {
                assert_eq!(info["operation"], "OPTIMIZE");
                assert_eq!(info["tributary.operation"], "compaction");
                assert_eq!(info["tributary.compaction"]["filesRemoved"], 30);
            }
        }
        assert_eq!((removes, adds), (30, 1));

        // The worker keeps appending on top, from where its txn was.
        append(&mut sink, 0, 31, &rows(1000..1010, |_| None)).await;
        let last = replay(&location);
        assert_eq!(last.rows.len(), 310);
        assert_eq!(last.txns[&app(0)], 31);
        // And deltalake sees what the replay sees.
        let table = open(&location).await;
        assert_eq!(
            table.snapshot().expect("snapshot").log_data().num_files(),
            2
        );
    }

    #[tokio::test]
    async fn bins_never_mix_partition_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = sink(&location, &["site"], None).await;
        const SITES: [Option<&str>; 3] = [Some("north"), Some("south hall"), None];
        for n in 1..=22i64 {
            // Every batch has rows of three sites (one of them null); every fourth also of
            // "east", which so ends with only 5 files, below the threshold.
            let with_east = n % 4 == 0;
            let batch = rows(n * 100..n * 100 + 12, move |i| match i % 4 {
                3 if with_east => Some("east"),
                k => SITES[(k % 3) as usize],
            });
            append(&mut sink, 0, n, &batch).await;
        }
        let before = replay(&location);
        let east_before: Vec<&String> = before
            .files
            .iter()
            .filter(|(_, v)| v["site"].as_deref() == Some("east"))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(east_before.len(), 5);
        assert_eq!(before.files.len(), 3 * 22 + 5);

        // A target of about 8 input files: several bins per partition.
        let table = open(&location).await;
        let largest = table
            .snapshot()
            .expect("snapshot")
            .log_data()
            .iter()
            .map(|f| f.size() as u64)
            .max()
            .expect("files");
        let mut table = table;
        let policy = CompactionPolicy {
            small_file_bytes: Some(largest + 1),
            max_bins_per_run: 100,
            ..CompactionPolicy::default()
        };
        let outcome = compact(&mut table, &location, 8 * largest, &policy)
            .await
            .expect("compact");
        assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
        assert_eq!(outcome.files_removed, 3 * 22, "all but east's files");
        assert!(
            outcome.files_added >= 6,
            "several bins per partition: {outcome:?}"
        );

        let after = replay(&location);
        // Each row is still in its own partition (a file's rows take the partition values of
        // its add action, so a mixed bin would move rows to another site), exactly once.
        assert_eq!(after.rows, before.rows);
        for path in &east_before {
            assert!(
                after.files.contains_key(*path),
                "east's files are untouched"
            );
        }
        for action in commit_actions(&location, after.version) {
            if let Some(add) = action.get("add") {
                let path = add["path"].as_str().expect("path");
                let site = &add["partitionValues"]["site"];
                match site.as_str() {
                    Some(site) => assert!(
                        percent_decode(&percent_decode(path)).starts_with(&format!("site={site}/")),
                        "{path} is in the directory of {site}"
                    ),
                    None => assert!(path.starts_with("site=__HIVE_DEFAULT_PARTITION__/")),
                }
            }
        }
        assert_eq!(after.files.len(), 5 + outcome.files_added);
    }

    #[tokio::test]
    async fn an_append_landing_during_a_compaction_is_kept_and_the_compaction_rebases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = thirty_appends(&location).await;
        let before = replay(&location);

        let mut table = open(&location).await;
        let plan = plan(
            &table,
            &location,
            DEFAULT_TARGET_FILE_SIZE,
            &CompactionPolicy::default(),
        )
        .expect("plan");
        let rewritten = rewrite(&table, &location, &plan).await.expect("rewrite");
        // Another replica (another source partition) and this worker append meanwhile.
        append(&mut sink, 1, 1, &rows(5000..5010, |_| Some("west"))).await;
        append(&mut sink, 0, 31, &rows(6000..6010, |_| None)).await;

        let outcome = commit(&mut table, &location, &plan, rewritten)
            .await
            .expect("commit");
        assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
        assert_eq!(
            outcome.retries, 1,
            "the stale first attempt lost, then rebased"
        );
        assert_eq!(outcome.version, Some(before.version + 3));
        assert_eq!(outcome.files_removed, 30);

        let after = replay(&location);
        let mut expected = before.rows.clone();
        expected.extend(replay_rows_of(&[
            (5000..5010, Some("west")),
            (6000..6010, None),
        ]));
        expected.sort();
        assert_eq!(after.rows, expected, "every row exactly once");
        assert_eq!(after.files.len(), 3);
        assert_eq!(after.txns[&app(0)], 31);
        assert_eq!(after.txns[&app(1)], 1);
    }

    /// The rows `rows()` makes, as the replay prints them.
    fn replay_rows_of(parts: &[(std::ops::Range<i64>, Option<&str>)]) -> Vec<String> {
        parts
            .iter()
            .flat_map(|(ids, site)| {
                ids.clone()
                    .map(move |i| format!("{i}|{}|{:?}", site.unwrap_or("NULL"), i as f64 / 4.0))
            })
            .collect()
    }

    #[tokio::test]
    async fn an_append_planned_before_a_compaction_commits_after_it() {
        // The other order: the worker read the table, compaction committed, then the worker's
        // commit (delta-rs's conflict checker, as in DeltaSink::commit) must still go through.
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let _sink = thirty_appends(&location).await;
        let stale = open(&location).await;
        let mut writer = RecordBatchWriter::for_table(&stale).expect("writer");
        writer
            .write(rows(7000..7010, |_| Some("north")))
            .await
            .expect("write");
        let adds = writer.flush().await.expect("flush");

        let mut compactor = open(&location).await;
        let outcome = compact(
            &mut compactor,
            &location,
            DEFAULT_TARGET_FILE_SIZE,
            &CompactionPolicy::default(),
        )
        .await
        .expect("compact");
        assert_eq!(outcome.status, CompactionStatus::Committed);

        let appended = CommitBuilder::from(
            CommitProperties::default()
                .with_application_transaction(Transaction::new(app(0), 31))
                .with_max_retries(50),
        )
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(
            Some(stale.snapshot().expect("snapshot")),
            stale.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await
        .expect("the append commits after the compaction");
        // Built on the version before the compaction, checked against it, committed after it.
        assert_eq!(
            Some(appended.version() as i64),
            outcome.version.map(|v| v + 1)
        );

        let after = replay(&location);
        assert_eq!(after.files.len(), 2);
        assert_eq!(after.rows.len(), 310);
        assert_eq!(after.txns[&app(0)], 31);
    }

    #[tokio::test]
    async fn the_second_of_two_compactions_of_one_snapshot_is_superseded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let _sink = thirty_appends(&location).await;
        let before = replay(&location);
        let policy = CompactionPolicy::default();

        // Two replicas plan and rewrite the same files.
        let mut first = open(&location).await;
        let mut second = open(&location).await;
        let plan_1 = plan(&first, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
        let plan_2 = plan(&second, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
        let rewritten_1 = rewrite(&first, &location, &plan_1).await.expect("rewrite");
        let rewritten_2 = rewrite(&second, &location, &plan_2).await.expect("rewrite");
        let outputs_2: Vec<PathBuf> = rewritten_2
            .iter()
            .flat_map(|b| b.adds.iter())
            .map(|a| FsPath::new(&location).join(percent_decode(&a.path)))
            .collect();
        assert!(outputs_2.iter().all(|p| p.exists()));

        let outcome_1 = commit(&mut first, &location, &plan_1, rewritten_1)
            .await
            .expect("commit");
        assert_eq!(outcome_1.status, CompactionStatus::Committed);
        let outcome_2 = commit(&mut second, &location, &plan_2, rewritten_2)
            .await
            .expect("commit");
        assert_eq!(
            outcome_2.status,
            CompactionStatus::Superseded,
            "{outcome_2:?}"
        );
        assert_eq!(outcome_2.version, None);
        assert_eq!(outcome_2.bins_superseded, 1);
        assert_eq!(outcome_2.files_removed, 0);

        let after = replay(&location);
        assert_eq!(
            after.version,
            before.version + 1,
            "one compaction commit only"
        );
        assert_eq!(after.rows, before.rows, "no row twice");
        assert_eq!(after.files.len(), 1);
        assert!(
            outputs_2.iter().all(|p| !p.exists()),
            "the superseded run deleted its files"
        );
        // And a new run finds nothing to do.
        let again = compact(&mut second, &location, DEFAULT_TARGET_FILE_SIZE, &policy)
            .await
            .expect("compact");
        assert_eq!(again.status, CompactionStatus::NothingToDo);
    }

    #[tokio::test]
    async fn delta_rs_alone_commits_two_compactions_of_the_same_files() {
        // Why commit() has its own rebase loop: delta-rs 1.1's conflict checker ignores
        // concurrent removes with dataChange false, so the second compaction would commit and
        // every row would be in the table twice. If this test fails after a deltalake upgrade,
        // delta-rs now catches it (and the loop could hand retries back to delta-rs).
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let _sink = thirty_appends(&location).await;
        let before = replay(&location);
        let policy = CompactionPolicy::default();
        let mut first = open(&location).await;
        let second = open(&location).await;
        let plan_2 = plan(&second, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
        let rewritten_2 = rewrite(&second, &location, &plan_2).await.expect("rewrite");
        let outcome = compact(&mut first, &location, DEFAULT_TARGET_FILE_SIZE, &policy)
            .await
            .expect("compact");
        assert_eq!(outcome.status, CompactionStatus::Committed);

        let actions: Vec<Action> = rewritten_2
            .iter()
            .flat_map(|b| {
                b.removes
                    .iter()
                    .cloned()
                    .map(Action::Remove)
                    .chain(b.adds.iter().cloned().map(Action::Add))
            })
            .collect();
        let committed = CommitBuilder::from(CommitProperties::default())
            .with_actions(actions)
            .build(
                Some(second.snapshot().expect("snapshot")),
                second.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: DEFAULT_TARGET_FILE_SIZE as i64,
                },
            )
            .await;
        assert!(committed.is_ok(), "{:?}", committed.err());
        let table = open(&location).await;
        assert_eq!(
            table.snapshot().expect("snapshot").log_data().num_files(),
            2,
            "both compactions' outputs are live: every row twice"
        );
        assert_eq!(before.rows.len(), 300);
    }

    #[tokio::test]
    async fn a_checkpoint_written_by_the_compaction_commit_keeps_the_txns() {
        // 28 appends: the compaction is version 29, where its post-commit hook writes the
        // checkpoint (interval 10: delta-rs writes them at versions 9, 19, 29...). A restarted
        // worker reads its txns through that checkpoint.
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = sink(&location, &[], None).await;
        for n in 1..=28 {
            append(&mut sink, 0, n, &rows(n * 10..n * 10 + 10, |_| None)).await;
        }
        let before = replay(&location);
        let outcome = sink
            .compact(&CompactionPolicy::default())
            .await
            .expect("compact");
        assert_eq!(outcome.version, Some(29), "{outcome:?}");
        let checkpoint = FsPath::new(&location)
            .join("_delta_log")
            .join(format!("{:020}.checkpoint.parquet", 29));
        assert!(
            checkpoint.exists(),
            "the compaction commit wrote a checkpoint"
        );

        let mut restarted = self::sink(&location, &[], None).await;
        assert_eq!(
            restarted.txn_versions(&[app(0)]).await.expect("txns"),
            vec![Some(28)]
        );
        append(&mut restarted, 0, 29, &rows(5000..5010, |_| None)).await;
        let after = replay(&location);
        assert_eq!(after.rows.len(), before.rows.len() + 10);
        assert_eq!(after.files.len(), 2);
    }

    #[tokio::test]
    async fn a_metadata_change_during_a_compaction_abandons_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let _sink = thirty_appends(&location).await;
        let before = replay(&location);
        let mut table = open(&location).await;
        let plan = plan(
            &table,
            &location,
            DEFAULT_TARGET_FILE_SIZE,
            &CompactionPolicy::default(),
        )
        .expect("plan");
        let rewritten = rewrite(&table, &location, &plan).await.expect("rewrite");
        let outputs: Vec<PathBuf> = rewritten
            .iter()
            .flat_map(|b| b.adds.iter())
            .map(|a| FsPath::new(&location).join(percent_decode(&a.path)))
            .collect();
        open(&location)
            .await
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                "delta.checkpointInterval".to_string(),
                "20".to_string(),
            )]))
            .await
            .expect("set a table property");

        let outcome = commit(&mut table, &location, &plan, rewritten)
            .await
            .expect("commit");
        assert!(
            matches!(outcome.status, CompactionStatus::Abandoned(_)),
            "{outcome:?}"
        );
        assert_eq!(outcome.version, None);
        assert!(outputs.iter().all(|p| !p.exists()), "outputs deleted");
        let after = replay(&location);
        assert_eq!(
            after.version,
            before.version + 1,
            "only the property change"
        );
        assert_eq!(after.files, before.files);
    }

    #[tokio::test]
    async fn below_the_threshold_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = sink(&location, &[], None).await;
        for n in 1..=19 {
            append(&mut sink, 0, n, &rows(n * 10..n * 10 + 10, |_| None)).await;
        }
        let before = replay(&location);
        let on_disk = parquet_on_disk(&location);
        assert_eq!(on_disk.len(), 19);

        let outcome = sink
            .compact(&CompactionPolicy::default())
            .await
            .expect("compact");
        assert_eq!(outcome.status, CompactionStatus::NothingToDo);
        assert_eq!(outcome.version, None);
        assert_eq!(outcome.read_version, before.version);

        // Enough files, but none small.
        let mut table = open(&location).await;
        let none_small = CompactionPolicy {
            small_file_bytes: Some(1),
            min_small_files: 2,
            ..CompactionPolicy::default()
        };
        let outcome = compact(&mut table, &location, DEFAULT_TARGET_FILE_SIZE, &none_small)
            .await
            .expect("compact");
        assert_eq!(outcome.status, CompactionStatus::NothingToDo);

        let after = replay(&location);
        assert_eq!(after.version, before.version, "no commit");
        assert_eq!(after.files, before.files);
        assert_eq!(parquet_on_disk(&location), on_disk, "no file written");
    }
}
