//! The Delta table the worker appends to. One commit per micro-batch, carrying its data files and one `txn`
//! action per source partition (the next offset to read), so data and offsets land atomically.

use std::collections::HashMap;

use std::sync::Arc;

use deltalake::arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::MetadataExt;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, PROTOCOL, PreCommit, TransactionError,
};
use deltalake::kernel::{Action, StructField, StructType, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use url::Url;

use crate::error::{Error, Result};
use crate::tuning::ParquetSettings;

mod merge;

/// Commits retried by delta-rs when another writer (a replica) committed first and the two
/// commits do not conflict (appends to different partitions' txns).
const COMMIT_RETRIES: usize = 50;

/// A partition's offset update in a commit.
#[derive(Clone, Debug)]
pub struct TxnUpdate {
    pub app_id: String,
    /// The version the table must hold now (None: never written). Anything else means another
    /// writer moved this partition since the batch was planned.
    pub expected: Option<i64>,
    /// The next offset to read after this batch.
    pub version: i64,
}

/// Why `txns` cannot be committed over the table's `current` txn versions (in the order of
/// `txns`): another writer moved a partition since the batch was planned, or a partition would
/// move backwards. None when they can.
fn txn_conflict_in(txns: &[TxnUpdate], current: &[Option<i64>]) -> Option<String> {
    for (txn, now) in txns.iter().zip(current) {
        if *now != txn.expected {
            return Some(format!(
                "{} is at {:?} in the table, the batch started at {:?}",
                txn.app_id, now, txn.expected
            ));
        }
        if now.is_some_and(|v| txn.version <= v) {
            return Some(format!(
                "{} would move from {:?} back to {}",
                txn.app_id, now, txn.version
            ));
        }
    }
    None
}

/// What became of a commit.
#[derive(Debug)]
pub enum CommitOutcome {
    Committed {
        version: i64,
        files: usize,
        /// Times delta-rs retried after a concurrent commit (of another replica's partitions).
        retries: u64,
        /// Of the commit's time, how long writing its Parquet files took (the rest is reading
        /// txns and writing the log entry).
        write_ms: i64,
    },
    /// Another writer owns (or owned) one of the partitions: nothing was committed.
    Conflict(String),
}

/// A Delta table the worker appends to.
/// What a VACUUM deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VacuumOutcome {
    pub files_deleted: usize,
    pub retain_hours: i32,
}

pub struct DeltaSink {
    uri: String,
    url: Url,
    storage_options: HashMap<String, String>,
    table: DeltaTable,
    partition_by: Vec<String>,
    target_file_size: Option<u64>,
    parquet: ParquetSettings,
    /// The table's schema with the declared columns it lacks, added by the next commit that
    /// carries rows (mergeSchema).
    evolve_to: Option<StructType>,
    txn_cache: TxnCache,
}

/// Txn versions known at one table version. delta-rs answers each app id's lookup with a
/// replay of the log since the last checkpoint, and a batch looks up every partition of both
/// tables; the log of a version never changes, so while the table stays at the version an
/// answer was read at (or moves only by this sink's own commits, whose txns are known) the
/// answer holds. Any other move of the table (another replica, a compaction) starts afresh.
#[derive(Debug, Default)]
struct TxnCache {
    version: Option<u64>,
    versions: HashMap<String, Option<i64>>,
}

impl TxnCache {
    /// Forgets what was known unless the table is still at the version it was known at.
    fn at(&mut self, version: Option<u64>) {
        if self.version != version {
            self.version = version;
            self.versions.clear();
        }
    }

    /// This sink's commit of `txns` took the table from `from` to `to`: with nothing in
    /// between, the answers carry over with the new txns; otherwise they are forgotten.
    fn committed(&mut self, from: Option<u64>, to: u64, txns: &[TxnUpdate]) {
        if self.version.is_none() || self.version != from || from.map(|v| v + 1) != Some(to) {
            self.version = None;
            self.versions.clear();
            return;
        }
        self.version = Some(to);
        for txn in txns {
            self.versions.insert(txn.app_id.clone(), Some(txn.version));
        }
    }
}

/// The table property under which txns expire: with it an answer can change while the table
/// does not, so such tables are not cached.
const TXN_RETENTION_PROPERTY: &str = "delta.setTransactionRetentionDuration";

/// How to open (or create) a table.
pub struct OpenOptions<'a> {
    pub uri: &'a str,
    pub storage_options: HashMap<String, String>,
    /// The rows' schema.
    pub schema: SchemaRef,
    pub partition_by: Vec<String>,
    pub checkpoint_interval: i32,
    pub target_file_size: Option<u64>,
    pub parquet: ParquetSettings,
    /// The comment of a new table.
    pub description: &'a str,
    /// Add the columns of `schema` that an existing table lacks (Spark's mergeSchema);
    /// otherwise such a table is refused.
    pub merge_schema: bool,
    /// Table properties the spec sets (delta.logRetentionDuration, ...), by name: on a new
    /// table, and on an existing one whose value differs.
    pub properties: Vec<(String, String)>,
}

/// A reachability check of the table's storage: the commit file of a version the worker read
/// (never removed while it is the latest: log cleanup keeps the newest commits) is looked up.
pub struct TableProbe {
    log_store: deltalake::logstore::LogStoreRef,
    version: Option<u64>,
    uri: String,
}

impl TableProbe {
    /// Whether the storage answers, and holds the table; else why not (secrets redacted).
    pub async fn check(&self) -> std::result::Result<(), String> {
        use deltalake::logstore::object_store::ObjectStoreExt;
        let Some(version) = self.version else {
            return Ok(());
        };
        let path = deltalake::logstore::object_store::path::Path::from(format!(
            "_delta_log/{version:020}.json"
        ));
        let store = self.log_store.object_store(None);
        match store.head(&path).await {
            Ok(_) => Ok(()),
            Err(deltalake::logstore::object_store::Error::NotFound { .. }) => Err(format!(
                "the Delta table at {} has lost its commit {version} (was the table deleted or its volume unmounted?)",
                self.uri
            )),
            Err(error) => Err(format!(
                "cannot reach the Delta table at {}: {}",
                self.uri,
                crate::secrets::redact(&first_line(&error.to_string()))
            )),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// The commit-info key under which each batch commit records the query that wrote it.
pub const QUERY_ID_KEY: &str = "tributary.queryId";
/// The commit info key of the micro-batch a commit wrote.
pub const BATCH_ID_KEY: &str = "tributary.batchId";

/// The table URL of a location: an absolute path or a URL.
pub fn table_url(location: &str) -> Result<Url> {
    if location.starts_with('/') {
        std::fs::create_dir_all(location).map_err(Error::checkpoint(
            "create the table directory",
            location.as_ref(),
        ))?;
        Url::from_directory_path(location)
            .map_err(|_| Error::Unsupported(format!("{location} is not an absolute path")))
    } else {
        Url::parse(location).map_err(|e| Error::Unsupported(format!("{location}: {e}")))
    }
}

impl DeltaSink {
    /// Opens the table, or creates it from the schema on first use; refuses a table whose
    /// schema or partitioning differs.
    pub async fn open_or_create(
        uri: &str,
        storage_options: HashMap<String, String>,
        schema: SchemaRef,
        partition_by: Vec<String>,
        checkpoint_interval: i32,
        target_file_size: Option<u64>,
        description: &str,
    ) -> Result<DeltaSink> {
        DeltaSink::open(OpenOptions {
            uri,
            storage_options,
            schema,
            partition_by,
            checkpoint_interval,
            target_file_size,
            parquet: ParquetSettings::default(),
            description,
            merge_schema: false,
            properties: Vec::new(),
        })
        .await
    }

    /// Opens the table, or creates it from the schema on first use; refuses a table whose
    /// schema or partitioning differs, except for columns it lacks when `merge_schema`: those
    /// are added by the first commit that carries rows.
    pub async fn open(options: OpenOptions<'_>) -> Result<DeltaSink> {
        let OpenOptions {
            uri,
            storage_options,
            schema,
            partition_by,
            checkpoint_interval,
            target_file_size,
            parquet,
            description,
            merge_schema,
            properties,
        } = options;
        let url = table_url(uri)?;
        let writer_options = storage_options.clone();
        let wanted: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| Error::Schema(e.to_string()))?;
        let mut table = DeltaTableBuilder::from_url(url.clone())
            .map_err(Error::delta("locate", uri))?
            .with_storage_options(storage_options.clone())
            .build()
            .map_err(Error::delta("open", uri))?;
        let evolve_to = match table.load().await {
            Ok(()) => {
                let evolve_to = check_fit(&table, &wanted, &partition_by, uri, merge_schema)?;
                table = set_changed_properties(table, &properties, uri).await?;
                evolve_to
            }
            Err(DeltaTableError::NotATable(_)) => {
                // Every column nullable, as Spark creates the table of a Kafka source query
                // (`from_json` and the Kafka columns are all nullable): a NOT NULL column is an
                // invariant in Delta, which Spark requires a table-features protocol to list
                // (the worker's required fields are enforced by its decoder instead).
                let created = CreateBuilder::new()
                    .with_configuration(
                        properties
                            .iter()
                            .map(|(key, value)| (key.clone(), Some(value.clone()))),
                    )
                    .with_location(url.to_string())
                    .with_storage_options(storage_options)
                    .with_columns(wanted.fields().map(|field| StructField {
                        nullable: true,
                        ..field.clone()
                    }))
                    .with_partition_columns(partition_by.clone())
                    .with_comment(description)
                    .with_configuration_property(
                        TableProperty::CheckpointInterval,
                        Some(checkpoint_interval.to_string()),
                    )
                    // Another replica may create it at the same moment: then use theirs.
                    .with_save_mode(SaveMode::Ignore)
                    .await
                    .map_err(Error::delta("create", uri))?;
                table = created;
                table.load().await.map_err(Error::delta("load", uri))?;
                let evolve_to = check_fit(&table, &wanted, &partition_by, uri, merge_schema)?;
                tracing::info!(table = uri, "created the Delta table");
                evolve_to
            }
            Err(source) => return Err(Error::delta("load", uri)(source)),
        };
        Ok(DeltaSink {
            uri: uri.to_string(),
            url,
            storage_options: writer_options,
            table,
            partition_by,
            target_file_size,
            parquet,
            evolve_to,
            txn_cache: TxnCache::default(),
        })
    }

    /// Rewrites the table's small files into files of the target size ([`super::compact`]); safe while
    /// this and other writers append. Leaves the table at its latest version.
    pub async fn compact(
        &mut self,
        policy: &super::compact::CompactionPolicy,
    ) -> Result<super::compact::CompactionOutcome> {
        let target = self
            .target_file_size
            .unwrap_or(super::compact::DEFAULT_TARGET_FILE_SIZE);
        super::compact::compact(&mut self.table, &self.uri, target, policy, self.parquet).await
    }

    /// VACUUM: deletes the data files the table stopped referencing more than `retain_hours`
    /// ago (Delta's lite mode: the files of its remove actions, such as the small files a
    /// compaction replaced). With `enforce_retention`, a retention under the table's
    /// deletedFileRetentionDuration is refused. Safe while this and other writers append:
    /// only files no version newer than the retention reads are deleted.
    pub async fn vacuum(
        &mut self,
        retain_hours: i32,
        enforce_retention: bool,
    ) -> Result<VacuumOutcome> {
        // Another writer's commits since this handle last looked must count.
        self.table
            .update_state()
            .await
            .map_err(Error::delta("refresh", &self.uri))?;
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::hours(i64::from(retain_hours)))
            .with_enforce_retention_duration(enforce_retention)
            .await
            .map_err(Error::delta("vacuum", &self.uri))?;
        self.table = table;
        Ok(VacuumOutcome {
            files_deleted: metrics.files_deleted.len(),
            retain_hours,
        })
    }

    /// Reopens the table with other storage options (renewed credentials), at its latest
    /// version.
    pub async fn reopen_with(&mut self, storage_options: HashMap<String, String>) -> Result<()> {
        let mut table = DeltaTableBuilder::from_url(table_url(&self.uri)?)
            .map_err(Error::delta("locate", &self.uri))?
            .with_storage_options(storage_options)
            .build()
            .map_err(Error::delta("open", &self.uri))?;
        table
            .load()
            .await
            .map_err(Error::delta("load", &self.uri))?;
        self.table = table;
        Ok(())
    }

    /// What a reachability check needs (taken under the table's lock, used outside it): the
    /// log store and the version whose commit file must be there.
    pub fn reach_probe(&self) -> TableProbe {
        TableProbe {
            log_store: self.table.log_store(),
            version: self.table.version(),
            uri: self.uri.clone(),
        }
    }

    /// Reloads the table to its latest version.
    pub async fn refresh(&mut self) -> Result<()> {
        self.table
            .update_state()
            .await
            .map_err(Error::delta("refresh", &self.uri))
    }

    /// The commit infos of the table's latest `limit` commits, newest first.
    async fn recent_commit_infos(
        &mut self,
        limit: usize,
    ) -> Result<Vec<deltalake::kernel::CommitInfo>> {
        use futures::TryStreamExt;
        self.refresh().await?;
        self.table
            .history(Some(limit))
            .try_collect()
            .await
            .map_err(Error::delta("read the history of", &self.uri))
    }

    /// The query ids recorded in the table's latest `limit` commits (`tributary.queryId` in
    /// the commit info), newest first, each once.
    pub async fn recent_writers(&mut self, limit: usize) -> Result<Vec<String>> {
        let mut writers: Vec<String> = Vec::new();
        for info in self.recent_commit_infos(limit).await? {
            if let Some(id) = info.info.get(QUERY_ID_KEY).and_then(|v| v.as_str())
                && !writers.iter().any(|w| w == id)
            {
                writers.push(id.to_string());
            }
        }
        Ok(writers)
    }

    /// The highest `tributary.batchId` that query `query_id` recorded in the table's latest
    /// `limit` commits.
    pub async fn last_batch_of(&mut self, query_id: &str, limit: usize) -> Result<Option<i64>> {
        Ok(self
            .recent_commit_infos(limit)
            .await?
            .iter()
            .filter(|info| info.info.get(QUERY_ID_KEY).and_then(|v| v.as_str()) == Some(query_id))
            .filter_map(|info| info.info.get(BATCH_ID_KEY).and_then(|v| v.as_i64()))
            .max())
    }

    /// The latest txn version of each app id (None: never written).
    pub async fn txn_versions(&mut self, app_ids: &[String]) -> Result<Vec<Option<i64>>> {
        self.refresh().await?;
        let log_store = self.table.log_store();
        let snapshot = self
            .table
            .snapshot()
            .map_err(Error::delta("read", &self.uri))?;
        let cacheable = !snapshot
            .metadata()
            .configuration()
            .contains_key(TXN_RETENTION_PROPERTY);
        self.txn_cache
            .at(cacheable.then(|| self.table.version()).flatten());
        let mut versions = Vec::with_capacity(app_ids.len());
        for app_id in app_ids {
            if let Some(known) = self.txn_cache.versions.get(app_id) {
                versions.push(*known);
                continue;
            }
            let version = snapshot
                .transaction_version(log_store.as_ref(), app_id)
                .await
                .map_err(Error::delta("read the txn versions of", &self.uri))?;
            if self.txn_cache.version.is_some() {
                self.txn_cache.versions.insert(app_id.clone(), version);
            }
            versions.push(version);
        }
        Ok(versions)
    }

    /// Writes the rows of `parts` (one after the other, into the same files) and commits them
    /// with `txns`, atomically; checks first that every partition's txn is where this batch
    /// started, so no offset is written twice or moves backwards.
    pub async fn commit(
        &mut self,
        parts: &[RecordBatch],
        txns: &[TxnUpdate],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let app_ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let current = self.txn_versions(&app_ids).await?;
        self.commit_read(parts, txns, &current, app_metadata).await
    }

    /// [`DeltaSink::commit`] for txns whose versions the caller has just read with
    /// [`DeltaSink::txn_versions`] (`current`, in the order of `txns`): the table is not read
    /// again. A writer that moved one of them since is still caught, by the commit's own
    /// conflict check (a concurrent commit carrying the same txn app id fails it).
    pub async fn commit_read(
        &mut self,
        parts: &[RecordBatch],
        txns: &[TxnUpdate],
        current: &[Option<i64>],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        if current.len() != txns.len() {
            return Err(Error::Runtime(format!(
                "internal: {} txn versions read for {} txns of {}",
                current.len(),
                txns.len(),
                self.uri
            )));
        }
        if let Some(reason) = txn_conflict_in(txns, current) {
            return Ok(CommitOutcome::Conflict(reason));
        }
        let mut actions = Vec::new();
        let mut evolves = false;
        let writing = std::time::Instant::now();
        let parts: Vec<&RecordBatch> = parts.iter().filter(|b| b.num_rows() > 0).collect();
        if let Some(first) = parts.first() {
            let mut writer = match &self.evolve_to {
                // The files carry the added columns; the commit's metadata action adds them to
                // the table, atomically with the rows and the offsets.
                Some(merged) => {
                    let arrow: ArrowSchema = merged
                        .try_into_arrow()
                        .map_err(|e| Error::Schema(e.to_string()))?;
                    evolves = true;
                    RecordBatchWriter::try_new(
                        self.url.as_str(),
                        Arc::new(arrow),
                        (!self.partition_by.is_empty()).then(|| self.partition_by.clone()),
                        Some(self.storage_options.clone()),
                    )
                }
                None => RecordBatchWriter::for_table(&self.table),
            }
            .map_err(Error::delta("write to", &self.uri))?
            .with_writer_properties(super::parquet::writer_properties_for(
                self.parquet,
                &first.schema(),
                &parts,
            ));
            if let Some(size) = self.target_file_size {
                writer = writer.with_target_file_size(size);
            }
            for part in parts {
                writer
                    .write(part.clone())
                    .await
                    .map_err(Error::delta("write Parquet files to", &self.uri))?;
            }
            let adds = writer
                .flush()
                .await
                .map_err(Error::delta("write Parquet files to", &self.uri))?;
            actions.extend(adds.into_iter().map(Action::Add));
        }
        let write_ms = writing.elapsed().as_millis() as i64;
        let files = actions.len();
        let properties = CommitProperties::default()
            .with_application_transactions(
                txns.iter()
                    .map(|t| Transaction::new(&t.app_id, t.version))
                    .collect(),
            )
            .with_metadata(app_metadata)
            .with_max_retries(COMMIT_RETRIES);
        let partition_by = (!self.partition_by.is_empty()).then(|| self.partition_by.clone());
        let snapshot = self
            .table
            .snapshot()
            .map_err(Error::delta("read", &self.uri))?;
        if evolves && let Some(merged) = &self.evolve_to {
            let metadata = snapshot
                .metadata()
                .clone()
                .with_schema(merged)
                .map_err(|e| {
                    Error::Schema(format!("cannot evolve the schema of {}: {e}", self.uri))
                })?;
            actions.push(Action::Metadata(metadata));
        }
        let result = land(
            CommitBuilder::from(properties).with_actions(actions).build(
                Some(snapshot),
                self.table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by,
                    predicate: None,
                },
            ),
            &self.uri,
        )
        .await;
        match result {
            Ok(landed) => {
                self.txn_cache
                    .committed(self.table.version(), landed.version, txns);
                if evolves && let Some(merged) = self.evolve_to.take() {
                    let added: Vec<&str> = merged
                        .fields()
                        .map(|f| f.name().as_str())
                        .filter(|name| snapshot.schema().field(name).is_none())
                        .collect();
                    tracing::info!(
                        table = %self.uri,
                        version = landed.version,
                        columns = ?added,
                        "added the columns to the table (mergeSchema)"
                    );
                }
                Ok(CommitOutcome::Committed {
                    version: landed.version as i64,
                    files,
                    retries: landed.retries,
                    write_ms,
                })
            }
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
            }) => Ok(CommitOutcome::Conflict(
                "a concurrent commit wrote the same partitions".into(),
            )),
            Err(source) => Err(Error::delta("commit to", &self.uri)(source)),
        }
    }
}

/// The `operation` of a reset's commit in the table's history (DESCRIBE HISTORY).
pub const RESET_OPERATION: &str = "RESET STREAMING OFFSETS";
/// The commit-info key of the reset a commit applied.
pub const RESET_ID_KEY: &str = "tributary.resetId";

/// What a reset's commit says in the table's history.
#[derive(Clone, Debug)]
pub struct ResetRecord {
    /// Shown as DESCRIBE HISTORY's operationParameters (string values, as Delta writes them).
    pub parameters: HashMap<String, serde_json::Value>,
    /// A sentence for DESCRIBE HISTORY's userMetadata: "reset r1 to timestamp ...".
    pub summary: String,
    /// Extra commit-info keys (the query id, the reset id).
    pub info: HashMap<String, serde_json::Value>,
    /// The commit's timestamp, epoch milliseconds.
    pub timestamp_ms: i64,
}

impl DeltaSink {
    /// Commits a move of offsets with no rows: each txn goes to its new version, forwards or
    /// backwards, provided it is still where the caller read it (`expected`); anything else is
    /// a [`CommitOutcome::Conflict`] (another writer moved it: read again and retry). The
    /// commit's own commit info says what it is, for the table's history.
    pub async fn commit_reset(
        &mut self,
        txns: &[TxnUpdate],
        record: ResetRecord,
    ) -> Result<CommitOutcome> {
        let app_ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let current = self.txn_versions(&app_ids).await?;
        for (txn, now) in txns.iter().zip(&current) {
            if *now != txn.expected {
                return Ok(CommitOutcome::Conflict(format!(
                    "{} is at {:?} in the table, the reset read {:?}",
                    txn.app_id, now, txn.expected
                )));
            }
        }
        let snapshot = self
            .table
            .snapshot()
            .map_err(Error::delta("read", &self.uri))?;
        let commit_info = deltalake::kernel::CommitInfo {
            timestamp: Some(record.timestamp_ms),
            operation: Some(RESET_OPERATION.to_string()),
            operation_parameters: Some(record.parameters),
            read_version: self.table.version(),
            is_blind_append: Some(false),
            engine_info: Some(format!("tributary-worker/{}", env!("CARGO_PKG_VERSION"))),
            user_metadata: Some(record.summary),
            info: record.info,
            ..Default::default()
        };
        let properties = CommitProperties::default()
            .with_application_transactions(
                txns.iter()
                    .map(|t| Transaction::new(&t.app_id, t.version))
                    .collect(),
            )
            .with_max_retries(COMMIT_RETRIES);
        let result = land(
            CommitBuilder::from(properties)
                .with_actions(vec![Action::CommitInfo(commit_info)])
                .build(
                    Some(snapshot),
                    self.table.log_store(),
                    DeltaOperation::Write {
                        mode: SaveMode::Append,
                        partition_by: None,
                        predicate: None,
                    },
                ),
            &self.uri,
        )
        .await;
        match result {
            Ok(landed) => {
                self.txn_cache
                    .committed(self.table.version(), landed.version, txns);
                Ok(CommitOutcome::Committed {
                    version: landed.version as i64,
                    files: 0,
                    retries: landed.retries,
                    write_ms: 0,
                })
            }
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
            }) => Ok(CommitOutcome::Conflict(
                "a concurrent commit moved the same partitions".into(),
            )),
            Err(source) => Err(Error::delta("commit a reset to", &self.uri)(source)),
        }
    }
}

/// A commit whose entry is in the log.
#[derive(Debug)]
pub struct LandedCommit {
    pub version: u64,
    /// Attempts lost to other writers' commits before this one landed (0 when unknown).
    pub retries: u64,
}

/// Writes the commit's log entry, then reads the table at the new version (and writes a
/// checkpoint when one is due). A commit is done once its entry is written: a failure after
/// that (the log unreadable for a moment, a checkpoint refused) does not undo it, so it is
/// logged and the commit reported, not turned into a failed batch that would stop a worker
/// whose rows and offsets are already in the table. The next commit reads the table again.
pub async fn land(commit: PreCommit<'_>, uri: &str) -> DeltaResult<LandedCommit> {
    let written = commit.into_prepared_commit_future().await?.await?;
    let version = written.version;
    match written.await {
        Ok(finalized) => Ok(LandedCommit {
            version,
            retries: finalized.metrics.num_retries,
        }),
        Err(error) => {
            tracing::warn!(
                table = %uri,
                version,
                %error,
                "committed; reading the table after the commit failed (it is read again before the next commit)"
            );
            Ok(LandedCommit {
                version,
                retries: 0,
            })
        }
    }
}

/// Sets the table properties whose values differ from `properties`, in one SET TBLPROPERTIES
/// commit (none when all match). Replicas opening the table at once may each commit the same
/// values: harmless, the last one wins with the same values.
async fn set_changed_properties(
    table: DeltaTable,
    properties: &[(String, String)],
    uri: &str,
) -> Result<DeltaTable> {
    let changed: HashMap<String, String> = {
        let snapshot = table.snapshot().map_err(Error::delta("read", uri))?;
        let configuration = snapshot.metadata().configuration();
        properties
            .iter()
            .filter(|(key, value)| configuration.get(key) != Some(value))
            .cloned()
            .collect()
    };
    if changed.is_empty() {
        return Ok(table);
    }
    tracing::info!(table = uri, properties = ?changed, "setting the table properties the spec changed");
    table
        .set_tbl_properties()
        .with_properties(changed)
        .await
        .map_err(Error::delta("set the table properties of", uri))
}

/// Refuses, before anything is read, a table whose protocol requires a writer feature this
/// build of delta-rs does not implement (it would refuse the first commit anyway).
fn check_writable(table: &DeltaTable, uri: &str) -> Result<()> {
    let snapshot = table.snapshot().map_err(Error::delta("read", uri))?;
    let unenforced = unenforced_features(snapshot.protocol());
    if !unenforced.is_empty() {
        return Err(Error::UnwritableTable {
            uri: uri.to_string(),
            features: unenforced.join(", "),
            remedy: unwritable_remedy(&unenforced),
        });
    }
    match PROTOCOL.can_write_to(snapshot) {
        Ok(()) => Ok(()),
        Err(TransactionError::UnsupportedTableFeatures(features)) => {
            let names: Vec<String> = features.iter().map(|f| f.to_string()).collect();
            Err(Error::UnwritableTable {
                uri: uri.to_string(),
                features: names.join(", "),
                remedy: unwritable_remedy(&names),
            })
        }
        Err(other) => Err(Error::delta("check the protocol of", uri)(other.into())),
    }
}

/// Writer features delta-rs accepts in its DataFusion build because its own write operations
/// enforce them there, but which the worker's appends (RecordBatchWriter plus a commit) would
/// ignore: column invariants and CHECK constraints unchecked, generated columns not computed,
/// physical column names not used. (changeDataFeed needs nothing of an append, and MERGE writes
/// its change files itself.)
const UNENFORCED_FEATURES: [&str; 4] = [
    "invariants",
    "checkConstraints",
    "generatedColumns",
    "columnMapping",
];

/// The features of [`UNENFORCED_FEATURES`] a table's protocol requires of its writers.
fn unenforced_features(protocol: &deltalake::kernel::Protocol) -> Vec<String> {
    let required: Vec<String> = match protocol.min_writer_version() {
        // Legacy versions imply their features (writer version 2's invariants are enforced
        // only on columns that declare one, which Spark does not do by itself).
        0..=2 => Vec::new(),
        3 => vec!["invariants".into(), "checkConstraints".into()],
        4 => vec![
            "invariants".into(),
            "checkConstraints".into(),
            "generatedColumns".into(),
        ],
        5 | 6 => vec![
            "invariants".into(),
            "checkConstraints".into(),
            "generatedColumns".into(),
            "columnMapping".into(),
        ],
        _ => serde_json::to_value(protocol)
            .ok()
            .and_then(|p| p.get("writerFeatures").cloned())
            .and_then(|f| serde_json::from_value::<Vec<String>>(f).ok())
            .unwrap_or_default(),
    };
    required
        .into_iter()
        .filter(|f| UNENFORCED_FEATURES.contains(&f.as_str()))
        .collect()
}

/// What a user can do about a table Tributary cannot write.
fn unwritable_remedy(features: &[String]) -> String {
    if features.iter().any(|f| f == "invariants") {
        // Spark lists `invariants` among the writer features of every table that uses table
        // features (minWriterVersion 7), whatever feature made it so; the worker's appends
        // do not check `delta.invariants` column constraints (see UNENFORCED_FEATURES).
        "Spark lists invariants in every table it creates with a table feature (deletionVectors, \
         timestampNtz, v2Checkpoint, columnMapping, rowTracking, ...; DESCRIBE DETAIL shows \
         minWriterVersion 7). Write to a table Spark created with its default protocol \
         (minWriterVersion 2, no table features), or to a new table Tributary creates"
            .to_string()
    } else {
        "Write to a table created without them (DESCRIBE DETAIL lists a table's features), or to \
         a new table Tributary creates"
            .to_string()
    }
}

/// Checks that an existing table can take this ingestion's rows. Returns the schema the
/// table evolves to when it lacks declared columns and `merge_schema` allows adding them.
fn check_fit(
    table: &DeltaTable,
    wanted: &StructType,
    partition_by: &[String],
    uri: &str,
    merge_schema: bool,
) -> Result<Option<StructType>> {
    check_writable(table, uri)?;
    let snapshot = table.snapshot().map_err(Error::delta("read", uri))?;
    let have = snapshot.schema();
    let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    let fit = fit_problems(&have, &partitions, wanted, partition_by, merge_schema);
    if !fit.problems.is_empty() {
        return Err(Error::TableMismatch {
            uri: uri.to_string(),
            reason: fit.problems.join("; "),
        });
    }
    if fit.added.is_empty() {
        return Ok(None);
    }
    // Old rows have no value for an added column: it is nullable whatever the schema says,
    // as Spark's mergeSchema makes it.
    let merged = StructType::try_new(
        have.fields().cloned().chain(
            fit.added
                .into_iter()
                .map(|f| StructField::new(f.name().clone(), f.data_type().clone(), true)),
        ),
    )
    .map_err(|e| Error::Schema(e.to_string()))?;
    Ok(Some(merged))
}

/// What comparing a table's columns with the declared ones found.
pub struct Fit {
    /// Why the table cannot take the rows (empty: it can).
    pub problems: Vec<String>,
    /// Declared columns the table lacks, which `merge_schema` allows adding.
    pub added: Vec<StructField>,
}

/// Whether a table with columns `have`, partitioned by `partitions`, can take rows of `wanted`
/// partitioned by `partition_by` (the same rules for a Delta log and a catalog's columns).
pub fn fit_problems(
    have: &StructType,
    partitions: &[String],
    wanted: &StructType,
    partition_by: &[String],
    merge_schema: bool,
) -> Fit {
    let mut problems = Vec::new();
    let mut added = Vec::new();
    for field in wanted.fields() {
        match have.field(field.name()) {
            None if merge_schema => added.push(field.clone()),
            None => problems.push(format!(
                "column {} ({}) is not in the table; spec.sink.delta.mergeSchema: true adds it \
                 as a nullable column, as Spark's mergeSchema does (off by default, as in Spark)",
                field.name(),
                field.data_type()
            )),
            Some(existing) if existing.data_type() != field.data_type() => problems.push(format!(
                "column {} is {} in the table but {} in the schema (a type is never changed, \
                 mergeSchema or not)",
                field.name(),
                existing.data_type(),
                field.data_type()
            )),
            Some(existing) if !existing.is_nullable() && field.is_nullable() => {
                problems.push(format!(
                    "column {} is NOT NULL in the table but nullable here",
                    field.name()
                ))
            }
            Some(_) => {}
        }
    }
    for field in have.fields() {
        if wanted.field(field.name()).is_none() {
            problems.push(format!(
                "the table has a column {} ({}) that this ingestion does not write: a column \
                 dropped from the schema is refused (declare it again, or write to a new table)",
                field.name(),
                field.data_type()
            ));
        }
    }
    if partitions != partition_by {
        problems.push(format!(
            "the table is partitioned by {partitions:?}, the spec says {partition_by:?}"
        ));
    }
    Fit { problems, added }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, true),
            Field::new("kafka_offset", DataType::Int64, false),
        ]))
    }

    async fn open(location: &str) -> Result<DeltaSink> {
        DeltaSink::open_or_create(
            location,
            HashMap::new(),
            schema(),
            Vec::new(),
            10,
            None,
            "test",
        )
        .await
    }

    #[tokio::test]
    async fn creates_every_column_nullable_and_writes_non_null_batches_into_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let mut sink = open(&location).await.expect("create");
        let snapshot = sink.table.snapshot().expect("snapshot");
        let columns: Vec<(String, bool)> = snapshot
            .schema()
            .fields()
            .map(|f| (f.name().to_string(), f.is_nullable()))
            .collect();
        assert_eq!(
            columns,
            vec![("device_id".into(), true), ("kafka_offset".into(), true)]
        );
        // No NOT NULL column, so no invariants: the legacy protocol Spark reads and writes.
        assert_eq!(snapshot.protocol().min_writer_version(), 2);
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![Some("d-1"), None])),
                Arc::new(Int64Array::from(vec![0, 1])),
            ],
        )
        .expect("batch");
        let outcome = sink
            .commit(
                std::slice::from_ref(&batch),
                &[TxnUpdate {
                    app_id: "a".into(),
                    expected: None,
                    version: 2,
                }],
                HashMap::new(),
            )
            .await
            .expect("commit");
        assert!(matches!(outcome, CommitOutcome::Committed { files: 1, .. }));
        // Reopened with the same (partly NOT NULL) schema, the nullable table still fits.
        open(&location).await.expect("reopen");
    }

    #[tokio::test]
    async fn a_batch_in_parts_is_one_file_with_the_parts_rows_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let mut sink = open(&location).await.expect("create");
        let part = |devices: Vec<&str>, offsets: Vec<i64>| {
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(devices)),
                    Arc::new(Int64Array::from(offsets)),
                ],
            )
            .expect("part")
        };
        let parts = [
            part(vec!["d-1", "d-2"], vec![0, 1]),
            part(vec![], vec![]),
            part(vec!["d-3"], vec![2]),
        ];
        let outcome = sink
            .commit(&parts, &[txn("p0", None, 3)], HashMap::new())
            .await
            .expect("commit");
        assert!(matches!(outcome, CommitOutcome::Committed { files: 1, .. }));
        let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "parquet"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let reader =
            deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&files[0]).expect("open"),
            )
            .expect("parquet")
            .build()
            .expect("reader");
        let mut read = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let devices = batch.column(0).as_string::<i32>();
            let offsets = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                read.push((devices.value(row).to_string(), offsets.value(row)));
            }
        }
        assert_eq!(
            read,
            vec![("d-1".into(), 0), ("d-2".into(), 1), ("d-3".into(), 2)]
        );
    }

    fn rows() -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![Some("d-1")])),
                Arc::new(Int64Array::from(vec![0])),
            ],
        )
        .expect("batch")
    }

    fn txn(app_id: &str, expected: Option<i64>, version: i64) -> TxnUpdate {
        TxnUpdate {
            app_id: app_id.into(),
            expected,
            version,
        }
    }

    #[tokio::test]
    async fn txn_versions_known_from_own_commits_and_read_again_after_another_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let mut ours = open(&location).await.expect("create");
        let mut theirs = open(&location).await.expect("open");
        let ids = ["p0".to_string(), "p1".to_string()];
        let committed = |outcome: CommitOutcome| {
            assert!(
                matches!(outcome, CommitOutcome::Committed { .. }),
                "{outcome:?}"
            );
        };
        committed(
            ours.commit(&[rows()], &[txn("p0", None, 2)], HashMap::new())
                .await
                .expect("commit"),
        );
        assert_eq!(
            ours.txn_versions(&ids).await.expect("txns"),
            [Some(2), None]
        );
        // Another writer moves p1 (and the table): ours must not answer from what it knew.
        committed(
            theirs
                .commit(&[rows()], &[txn("p1", None, 7)], HashMap::new())
                .await
                .expect("commit"),
        );
        assert_eq!(
            ours.txn_versions(&ids).await.expect("txns"),
            [Some(2), Some(7)]
        );
        committed(
            ours.commit(&[rows()], &[txn("p0", Some(2), 4)], HashMap::new())
                .await
                .expect("commit"),
        );
        assert_eq!(
            ours.txn_versions(&ids).await.expect("txns"),
            [Some(4), Some(7)]
        );
        // A commit whose expectation is stale is refused, whatever was known before.
        let stale = theirs
            .commit(&[rows()], &[txn("p0", Some(2), 9)], HashMap::new())
            .await
            .expect("commit");
        assert!(matches!(stale, CommitOutcome::Conflict(_)), "{stale:?}");
        // A fresh handle reads the same from the log alone.
        let mut reopened = open(&location).await.expect("reopen");
        assert_eq!(
            reopened.txn_versions(&ids).await.expect("txns"),
            [Some(4), Some(7)]
        );
    }

    /// Fails every commit's after-work (reading the new version back), as a log unreadable for
    /// a moment right after the commit does.
    struct UnreadableAfterCommit;

    #[async_trait::async_trait]
    impl deltalake::operations::CustomExecuteHandler for UnreadableAfterCommit {
        async fn pre_execute(
            &self,
            _: &deltalake::logstore::LogStoreRef,
            _: uuid::Uuid,
        ) -> DeltaResult<()> {
            Ok(())
        }

        async fn post_execute(
            &self,
            _: &deltalake::logstore::LogStoreRef,
            _: uuid::Uuid,
        ) -> DeltaResult<()> {
            Ok(())
        }

        async fn before_post_commit_hook(
            &self,
            _: &deltalake::logstore::LogStoreRef,
            _: bool,
            _: uuid::Uuid,
        ) -> DeltaResult<()> {
            Err(DeltaTableError::Generic(
                "the log cannot be read right now".into(),
            ))
        }

        async fn after_post_commit_hook(
            &self,
            _: &deltalake::logstore::LogStoreRef,
            _: bool,
            _: uuid::Uuid,
        ) -> DeltaResult<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_commit_whose_after_work_fails_is_still_a_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let sink = open(&location).await.expect("create");
        let commit = |app_id: &str| {
            CommitBuilder::from(
                CommitProperties::default()
                    .with_application_transactions(vec![Transaction::new(app_id, 1)]),
            )
            .with_post_commit_hook_handler(Some(Arc::new(UnreadableAfterCommit)))
        };
        let operation = || DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let snapshot = sink.table.snapshot().expect("snapshot");
        // delta-rs alone reports the whole commit failed, though its entry is written...
        let whole = commit("p0")
            .build(Some(snapshot), sink.table.log_store(), operation())
            .await;
        assert!(whole.is_err(), "the handler fails the after-work");
        // ...`land` reports it landed, at the version the log now holds.
        let mut table = sink.table.clone();
        table.update_state().await.expect("reload");
        assert_eq!(table.version(), Some(1), "the first commit is in the log");
        let snapshot = table.snapshot().expect("snapshot");
        let landed = land(
            commit("p1").build(Some(snapshot), table.log_store(), operation()),
            &location,
        )
        .await
        .expect("landed");
        assert_eq!(landed.version, 2);
        table.update_state().await.expect("reload");
        assert_eq!(table.version(), Some(2));
        let log_store = table.log_store();
        let snapshot = table.snapshot().expect("snapshot");
        for app_id in ["p0", "p1"] {
            assert_eq!(
                snapshot
                    .transaction_version(log_store.as_ref(), app_id)
                    .await
                    .expect("txn"),
                Some(1),
                "{app_id}"
            );
        }
    }

    /// A table as Spark creates it with a table feature: writer version 7, and `invariants`
    /// among the writer features.
    fn spark_table_with_features(dir: &std::path::Path, writer_features: &[&str]) {
        let log = dir.join("_delta_log");
        std::fs::create_dir_all(&log).expect("mkdir");
        let schema = r#"{\"type\":\"struct\",\"fields\":[{\"name\":\"device_id\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}},{\"name\":\"kafka_offset\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}"#;
        let protocol = serde_json::json!({"protocol": {
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"], "writerFeatures": writer_features}});
        let metadata = format!(
            r#"{{"metaData":{{"id":"6c1e4b2a-0000-4000-8000-000000000001","format":{{"provider":"parquet","options":{{}}}},"schemaString":"{schema}","partitionColumns":[],"configuration":{{"delta.enableDeletionVectors":"true"}},"createdTime":1}}}}"#
        );
        std::fs::write(
            log.join("00000000000000000000.json"),
            format!("{protocol}\n{metadata}\n"),
        )
        .expect("write the log");
    }

    #[tokio::test]
    async fn refuses_a_table_requiring_invariants_naming_the_feature_and_the_way_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        spark_table_with_features(dir.path(), &["appendOnly", "invariants", "deletionVectors"]);
        let location = dir.path().to_str().expect("utf-8").to_string();
        let error = open(&location).await.err().expect("refused").to_string();
        assert!(
            error
                .contains("table features Tributary's Delta writer does not implement: invariants")
                && error.contains("minWriterVersion 2")
                && error.contains(&location),
            "{error}"
        );
        // Without invariants the same table is written.
        let dir = tempfile::tempdir().expect("tempdir");
        spark_table_with_features(dir.path(), &["appendOnly", "deletionVectors"]);
        open(dir.path().to_str().expect("utf-8"))
            .await
            .expect("a deletionVectors table without invariants");
    }
}
