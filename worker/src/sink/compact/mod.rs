//! Compaction of the small files that micro-batches leave behind.
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
//!    at most half the target size, and streamed into a writer that uploads as it goes and
//!    holds one open row group of about [`CompactionPolicy::row_group_bytes`]), read
//!    the files through the table's object store and write their rows again with delta-rs's
//!    `RecordBatchWriter`, so partition paths and statistics are made exactly as for appends,
//!    and with the appends' Parquet settings (codec, dictionary).
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
use deltalake::table::state::DeltaTableState;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, ObjectStore, Path};
use futures::StreamExt;
use tracing::Instrument;

use super::delta::land;
use crate::error::{Error, Result};
use crate::tuning::{DEFAULT_COMPACTION_ROW_GROUP_BYTES, ParquetSettings, Tuning};

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
    /// many bytes, then one tier per factor of [`TIER_FACTOR`]). Without tiers every run would
    /// merge the growing output of the previous runs again with a minute's new files, rewriting
    /// each byte ~16 times on its way to the target size; with them about once per tier.
    pub tier_base_bytes: u64,
    /// Row groups of the rewritten files close at about this many encoded bytes. The Parquet
    /// writer holds the open row group in memory, so this bounds what a rewrite holds beside
    /// ingestion: with the writer's default of a million rows per group a rewrite held ~22 MB
    /// of it for readings of ~158 bytes.
    pub row_group_bytes: usize,
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

impl CompactionPolicy {
    /// The default policy with the worker's compaction knobs applied.
    pub fn tuned(tuning: &Tuning) -> CompactionPolicy {
        let default = CompactionPolicy::default();
        CompactionPolicy {
            min_small_files: tuning
                .compaction_min_files
                .unwrap_or(default.min_small_files),
            row_group_bytes: tuning.compaction_row_group_bytes,
            ..default
        }
    }
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            small_file_bytes: None,
            min_small_files: 20,
            max_bins_per_run: 8,
            tier_base_bytes: 1 << 20,
            row_group_bytes: DEFAULT_COMPACTION_ROW_GROUP_BYTES,
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
    parquet: ParquetSettings,
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
        let rewritten = rewrite(table, uri, &plan, parquet).await?;
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
    row_group_bytes: usize,
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
        // At least one byte: the Parquet writer refuses a zero bound.
        row_group_bytes: policy.row_group_bytes.max(1),
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
async fn rewrite(
    table: &DeltaTable,
    uri: &str,
    plan: &Plan,
    parquet: ParquetSettings,
) -> Result<Vec<RewrittenBin>> {
    let store = table.object_store();
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(Error::delta("compact", uri))?
        .with_writer_properties(
            super::parquet::writer_properties(parquet)
                .into_builder()
                .set_max_row_group_bytes(Some(plan.row_group_bytes))
                .build(),
        )
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
        let (keep, gone) = split_superseded(snapshot, pending);
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

        let totals = BinTotals::of(&pending);
        let result = land(
            CommitBuilder::from(commit_properties(plan, &totals))
                .with_actions(optimize_actions(
                    &pending,
                    chrono::Utc::now().timestamp_millis(),
                ))
                .build(
                    Some(snapshot),
                    table.log_store(),
                    DeltaOperation::Optimize {
                        predicate: None,
                        target_size: i64::try_from(plan.target_file_size).unwrap_or(i64::MAX),
                    },
                ),
            uri,
        )
        .await;
        match result {
            Ok(landed) => {
                let version = landed.version as i64;
                // Best effort: the commit is in; a failed refresh only leaves `table` behind,
                // and the sink refreshes before each append anyway.
                if let Err(error) = table.update_state().await {
                    tracing::warn!(%error, "cannot refresh the table after compacting");
                }
                return Ok(CompactionOutcome {
                    status: CompactionStatus::Committed,
                    read_version: plan.read_version,
                    version: Some(version),
                    files_removed: totals.files_removed,
                    files_added: totals.files_added,
                    bytes_before: totals.bytes_before,
                    bytes_after: totals.bytes_after,
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

/// Splits bins into those whose inputs are all still in the table and those with an input gone:
/// another writer compacted or deleted it (at least partly) first, and its rows must not come
/// back.
fn split_superseded(
    snapshot: &DeltaTableState,
    pending: Vec<RewrittenBin>,
) -> (Vec<RewrittenBin>, Vec<RewrittenBin>) {
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
    pending
        .into_iter()
        .partition(|b| b.removes.iter().all(|r| live.contains(&r.path)))
}

/// What the bins of one commit remove and add.
struct BinTotals {
    bins: usize,
    files_removed: usize,
    files_added: usize,
    bytes_before: u64,
    bytes_after: u64,
}

impl BinTotals {
    fn of(bins: &[RewrittenBin]) -> BinTotals {
        BinTotals {
            bins: bins.len(),
            files_removed: bins.iter().map(|b| b.removes.len()).sum(),
            files_added: bins.iter().map(|b| b.adds.len()).sum(),
            bytes_before: bins.iter().map(RewrittenBin::bytes_before).sum(),
            bytes_after: bins.iter().map(RewrittenBin::bytes_after).sum(),
        }
    }
}

/// The commit's actions: every input removed at `now` (milliseconds), every output added.
fn optimize_actions(bins: &[RewrittenBin], now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    for bin in bins {
        actions.extend(bin.removes.iter().cloned().map(|mut r| {
            r.deletion_timestamp = Some(now);
            Action::Remove(r)
        }));
        actions.extend(bin.adds.iter().cloned().map(Action::Add));
    }
    actions
}

/// The commit's metadata (what was compacted, for readers of the log), with delta-rs's retries
/// off: the rebase loop in [`commit`] is the retry, and delta-rs's would not notice another
/// compaction.
fn commit_properties(plan: &Plan, totals: &BinTotals) -> CommitProperties {
    CommitProperties::default()
        .with_metadata([
            (
                "tributary.operation".to_string(),
                serde_json::json!("compaction"),
            ),
            (
                "tributary.compaction".to_string(),
                serde_json::json!({
                    "plannedOnVersion": plan.read_version,
                    "bins": totals.bins,
                    "filesRemoved": totals.files_removed,
                    "filesAdded": totals.files_added,
                    "bytesBefore": totals.bytes_before,
                    "bytesAfter": totals.bytes_after,
                }),
            ),
        ])
        .with_max_retries(0)
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
mod tests;
