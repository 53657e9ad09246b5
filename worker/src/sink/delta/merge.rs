//! outputMode update: a batch's last row per key MERGEd into the table (updated when the key is
//! there, inserted when not, deleted for a tombstone), in one commit with the partitions' txn
//! actions, so that a replayed batch finds its offsets already recorded and is never applied
//! twice.

use std::collections::HashMap;

use datafusion::common::Column;
use datafusion::logical_expr::{Expr, col, not};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTableError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::{CommitConflictError, CommitProperties, TransactionError};

use super::{COMMIT_RETRIES, CommitOutcome, DeltaSink, TxnUpdate, txn_conflict_in};
use crate::error::{Error, Result};

const SOURCE: &str = "source";
const TARGET: &str = "target";

fn source(name: &str) -> Expr {
    col(Column::new(Some(SOURCE), name))
}

impl DeltaSink {
    /// MERGEs `rows` (the table's columns and `delete_column`, one row per key but for null
    /// keys) on equality of `keys`, and commits the result with `txns`, atomically. Offsets
    /// are committed alone when the MERGE changes nothing.
    pub async fn upsert(
        &mut self,
        rows: &RecordBatch,
        keys: &[String],
        delete_column: &str,
        txns: &[TxnUpdate],
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let app_ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let current = self.txn_versions(&app_ids).await?;
        if let Some(reason) = txn_conflict_in(txns, &current) {
            return Ok(CommitOutcome::Conflict(reason));
        }
        if rows.num_rows() == 0 {
            return self.commit_read(&[], txns, &current, app_metadata).await;
        }
        let before = self.table.version();
        let ctx = SessionContext::new();
        let frame = ctx
            .read_batch(rows.clone())
            .map_err(|e| Error::Transform(format!("cannot read the batch to MERGE: {e}")))?;
        let predicate = keys
            .iter()
            .map(|key| col(Column::new(Some(TARGET), key)).eq(source(key)))
            .reduce(Expr::and)
            .ok_or_else(|| Error::Unsupported("outputMode update needs mergeKeys".into()))?;
        let columns: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| name != delete_column)
            .collect();
        let properties = CommitProperties::default()
            .with_application_transactions(
                txns.iter()
                    .map(|t| Transaction::new(&t.app_id, t.version))
                    .collect(),
            )
            .with_metadata(app_metadata.clone())
            .with_max_retries(COMMIT_RETRIES);
        let deleted = source(delete_column);
        let merged = self
            .table
            .clone()
            .merge(frame, predicate)
            .with_source_alias(SOURCE)
            .with_target_alias(TARGET)
            .with_commit_properties(properties)
            .with_merge_schema(self.evolve_to.is_some())
            // The first clause that matches applies: a tombstone deletes, any other row updates.
            .when_matched_delete(|delete| delete.predicate(deleted.clone()))
            .and_then(|merge| {
                merge.when_matched_update(|update| {
                    columns.iter().fold(update, |update, name| {
                        update.update(Column::new_unqualified(name), source(name))
                    })
                })
            })
            .and_then(|merge| {
                merge.when_not_matched_insert(|insert| {
                    columns
                        .iter()
                        .fold(insert.predicate(not(deleted.clone())), |insert, name| {
                            insert.set(Column::new_unqualified(name), source(name))
                        })
                })
            })
            .map_err(Error::delta("prepare the MERGE into", &self.uri))?
            .await;
        match merged {
            Ok((table, metrics)) => {
                let version = table.version();
                self.table = table;
                if version == before {
                    // Deletes of keys the table does not hold: nothing to commit but offsets.
                    return self.commit(&[], txns, app_metadata).await;
                }
                if self.evolve_to.take().is_some() {
                    tracing::info!(table = %self.uri, "added the columns to the table (mergeSchema)");
                }
                tracing::debug!(
                    inserted = metrics.num_target_rows_inserted,
                    updated = metrics.num_target_rows_updated,
                    deleted = metrics.num_target_rows_deleted,
                    "merged"
                );
                Ok(CommitOutcome::Committed {
                    version: version.map_or(0, |v| v as i64),
                    files: metrics.num_target_files_added,
                    retries: 0,
                    // The MERGE's scan and rewrite of the files it touched.
                    write_ms: i64::try_from(metrics.scan_time_ms + metrics.rewrite_time_ms)
                        .unwrap_or(i64::MAX),
                })
            }
            // Another writer's commit touched what this MERGE read, or moved a partition: the
            // batch is read again from the table's offsets and merged again.
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(conflict),
            }) => Ok(CommitOutcome::Conflict(match conflict {
                CommitConflictError::ConcurrentTransaction => {
                    "a concurrent commit wrote the same partitions".to_string()
                }
                other => format!("a concurrent commit conflicts with the MERGE: {other}"),
            })),
            Err(source) => {
                // delta-rs reports the whole MERGE failed when only what follows its log entry
                // did (reading the table back, writing a checkpoint): if the table now holds
                // this batch's offsets, the entry is written and the batch is done.
                if self.holds(txns).await {
                    tracing::warn!(
                        table = %self.uri,
                        error = %source,
                        "merged; the work after the commit failed (the table is read again \
                         before the next commit; the batch's file count is not known)"
                    );
                    return Ok(CommitOutcome::Committed {
                        version: self.table.version().map_or(0, |v| v as i64),
                        files: 0,
                        retries: 0,
                        write_ms: 0,
                    });
                }
                Err(Error::delta("MERGE into", &self.uri)(source))
            }
        }
    }

    /// Whether the table, read again, holds every one of `txns` at its new version. The read
    /// is tried [`HOLDS_READS`] times over a few seconds, as what failed after the commit is
    /// often a read of the same store that fails for a moment. False when the table answers
    /// without them, or cannot be read by the last try: the failure stands, and a restart finds
    /// out from the table what landed.
    async fn holds(&mut self, txns: &[TxnUpdate]) -> bool {
        let app_ids: Vec<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let mut pause = HOLDS_FIRST_PAUSE;
        for attempt in 1..=HOLDS_READS {
            match self.txn_versions(&app_ids).await {
                Ok(current) => {
                    return current
                        .iter()
                        .zip(txns)
                        .all(|(held, txn)| *held == Some(txn.version));
                }
                Err(error) if attempt < HOLDS_READS => {
                    tracing::debug!(table = %self.uri, attempt, %error, "cannot read the table after the MERGE yet");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => {
                    tracing::warn!(table = %self.uri, %error, "cannot read the table after the MERGE to see whether it committed");
                }
            }
        }
        false
    }
}

/// Reads of the table after a MERGE that reported a failure, and the pause after the first
/// (doubling after each): 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, about 3 s in all.
const HOLDS_READS: u32 = 6;
const HOLDS_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;
    use datafusion::arrow::array::{AsArray, BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use deltalake::DeltaTableBuilder;
    use deltalake::logstore::object_store::{
        self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
        local::LocalFileSystem, path::Path,
    };
    use futures::stream::{self, BoxStream, StreamExt};

    use super::*;

    /// The local filesystem, refusing the next `failures` reads once a log entry is written
    /// after [`UnreadableAfterCommit::arm`]: a store that fails for a moment right after a
    /// commit.
    #[derive(Debug)]
    struct UnreadableAfterCommit {
        inner: LocalFileSystem,
        failures: usize,
        armed: AtomicBool,
        left: AtomicUsize,
        refused: AtomicUsize,
    }

    impl UnreadableAfterCommit {
        fn new(failures: usize) -> UnreadableAfterCommit {
            UnreadableAfterCommit {
                inner: LocalFileSystem::new(),
                failures,
                armed: AtomicBool::new(false),
                left: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
            }
        }

        fn arm(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }

        /// Reads refused so far.
        fn refused(&self) -> usize {
            self.refused.load(Ordering::SeqCst)
        }

        /// Refuses this read if failures are left.
        fn read(&self) -> object_store::Result<()> {
            let refuse = self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refuse {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(object_store::Error::Generic {
                    store: "unreadable-after-commit",
                    source: "the store is unreachable for a moment".into(),
                });
            }
            Ok(())
        }
    }

    impl std::fmt::Display for UnreadableAfterCommit {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "UnreadableAfterCommit({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for UnreadableAfterCommit {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            let log_entry = matches!(opts.mode, PutMode::Create)
                && location.as_ref().contains("_delta_log/")
                && location.as_ref().ends_with(".json");
            let put = self.inner.put_opts(location, payload, opts).await?;
            if log_entry && self.armed.swap(false, Ordering::SeqCst) {
                self.left.store(self.failures, Ordering::SeqCst);
            }
            Ok(put)
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.read()?;
            self.inner.get_opts(location, options).await
        }

        async fn get_ranges(
            &self,
            location: &Path,
            ranges: &[Range<u64>],
        ) -> object_store::Result<Vec<bytes::Bytes>> {
            self.read()?;
            self.inner.get_ranges(location, ranges).await
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            match self.read() {
                Ok(()) => self.inner.list(prefix),
                Err(error) => stream::once(async move { Err(error) }).boxed(),
            }
        }

        fn list_with_offset(
            &self,
            prefix: Option<&Path>,
            offset: &Path,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            match self.read() {
                Ok(()) => self.inner.list_with_offset(prefix, offset),
                Err(error) => stream::once(async move { Err(error) }).boxed(),
            }
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.read()?;
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// MERGEs the row ("a", 1) with the first offsets of partition 0 (txn version 2).
    async fn merge_first_row(sink: &mut DeltaSink) -> Result<CommitOutcome> {
        sink.upsert(
            &rows(&[("a", Some(1), false)]),
            &["id".to_string()],
            DELETE,
            &txn(None, 2),
            HashMap::new(),
        )
        .await
    }

    /// A new table at `location`, and a sink on it whose store refuses `failures` reads after
    /// the next commit once armed.
    async fn create_on_unreliable_store(
        location: &str,
        failures: usize,
    ) -> (DeltaSink, Arc<UnreadableAfterCommit>) {
        let mut sink = create(location).await;
        let store = Arc::new(UnreadableAfterCommit::new(failures));
        sink.table = DeltaTableBuilder::from_url(sink.url.clone())
            .expect("builder")
            .with_storage_backend(store.clone(), sink.url.clone())
            .build()
            .expect("build");
        sink.table.load().await.expect("load");
        (sink, store)
    }

    const DELETE: &str = "__delete";

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn rows(rows: &[(&str, Option<i64>, bool)]) -> RecordBatch {
        let mut fields: Vec<Field> = schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.2)))),
            ],
        )
        .expect("rows")
    }

    fn txn(expected: Option<i64>, version: i64) -> Vec<TxnUpdate> {
        vec![TxnUpdate {
            app_id: "q-t-0".into(),
            expected,
            version,
        }]
    }

    async fn contents(sink: &mut DeltaSink) -> Vec<(String, i64)> {
        sink.refresh().await.expect("refresh");
        let ctx = SessionContext::new();
        let provider = sink.table.table_provider().await.expect("provider");
        ctx.register_table("t", provider).expect("register");
        let batches = ctx
            .sql("SELECT id, v FROM t ORDER BY id")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("read");
        batches
            .iter()
            .flat_map(|b| {
                // The table provider reads strings as string views.
                let ids = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
                    .expect("strings");
                let ids = ids.as_string::<i32>();
                let values = b.column(1).as_primitive::<Int64Type>();
                (0..b.num_rows())
                    .map(|i| (ids.value(i).to_string(), values.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A new table of `schema()` at `location`.
    async fn create(location: &str) -> DeltaSink {
        DeltaSink::open_or_create(
            location,
            HashMap::new(),
            schema(),
            Vec::new(),
            10,
            None,
            "t",
        )
        .await
        .expect("create")
    }

    #[tokio::test]
    async fn merges_updates_inserts_and_deletes_with_the_offsets_in_the_same_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let mut sink = create(&location).await;
        let keys = ["id".to_string()];
        let first = sink
            .upsert(
                &rows(&[("a", Some(1), false), ("b", Some(2), false)]),
                &keys,
                DELETE,
                &txn(None, 2),
                HashMap::new(),
            )
            .await
            .expect("first");
        assert!(
            matches!(first, CommitOutcome::Committed { version: 1, .. }),
            "{first:?}"
        );
        let second_rows = rows(&[
            ("a", Some(3), false),
            ("b", None, true),
            ("c", Some(4), false),
        ]);
        let second = sink
            .upsert(
                &second_rows,
                &keys,
                DELETE,
                &txn(Some(2), 4),
                HashMap::new(),
            )
            .await
            .expect("second");
        assert!(
            matches!(second, CommitOutcome::Committed { version: 2, .. }),
            "{second:?}"
        );
        assert_eq!(
            contents(&mut sink).await,
            vec![("a".to_string(), 3), ("c".to_string(), 4)]
        );
        // The same batch replayed from where it started: refused, nothing applied twice.
        let replay = sink
            .upsert(
                &second_rows,
                &keys,
                DELETE,
                &txn(Some(2), 4),
                HashMap::new(),
            )
            .await
            .expect("replay");
        assert!(matches!(replay, CommitOutcome::Conflict(_)), "{replay:?}");
        // A batch that changes nothing (a delete of an absent key) still records its offsets.
        let nothing = sink
            .upsert(
                &rows(&[("z", None, true)]),
                &keys,
                DELETE,
                &txn(Some(4), 5),
                HashMap::new(),
            )
            .await
            .expect("nothing");
        assert!(
            matches!(nothing, CommitOutcome::Committed { version: 3, .. }),
            "{nothing:?}"
        );
        assert_eq!(
            sink.txn_versions(&["q-t-0".to_string()])
                .await
                .expect("txn"),
            vec![Some(5)]
        );
        // The MERGE commit carried the txn: version 2 recorded offset 4.
        let log = std::fs::read_to_string(dir.path().join("_delta_log/00000000000000000002.json"))
            .expect("log");
        assert!(
            log.contains("\"MERGE\"") && log.contains(r#""appId":"q-t-0","version":4"#),
            "{log}"
        );
        assert_eq!(
            contents(&mut sink).await,
            vec![("a".to_string(), 3), ("c".to_string(), 4)]
        );
    }

    #[tokio::test]
    async fn a_merge_whose_checkpoint_fails_after_its_commit_is_a_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let mut sink = create(&location).await;
        // A checkpoint after every commit (version 1), and the next one's path taken by a
        // directory, so that writing it fails once the MERGE's log entry is written.
        sink.table = super::super::set_changed_properties(
            sink.table.clone(),
            &[("delta.checkpointInterval".to_string(), "1".to_string())],
            &location,
        )
        .await
        .expect("set the checkpoint interval");
        let version = sink.table.version().expect("a version") as i64;
        let blocked = dir
            .path()
            .join("_delta_log")
            .join(format!("{:020}.checkpoint.parquet", version + 1));
        std::fs::create_dir(&blocked).expect("block the checkpoint");
        let merged = merge_first_row(&mut sink)
            .await
            .expect("the MERGE is reported committed");
        assert!(
            matches!(merged, CommitOutcome::Committed { version: v, .. } if v == version + 1),
            "{merged:?}"
        );
        assert!(blocked.is_dir(), "no checkpoint was written");
        assert_eq!(contents(&mut sink).await, vec![("a".to_string(), 1)]);
        assert_eq!(
            sink.txn_versions(&["q-t-0".to_string()])
                .await
                .expect("txn"),
            vec![Some(2)]
        );
    }

    #[tokio::test]
    async fn a_merge_whose_table_is_unreadable_for_a_moment_after_its_commit_is_a_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        // Reading the table back after the commit fails (delta-rs then reports the MERGE
        // failed), and so do the next two reads: the check that follows must try again.
        let (mut sink, store) = create_on_unreliable_store(&location, 3).await;
        let version = sink.table.version().expect("a version") as i64;
        store.arm();
        let merged = merge_first_row(&mut sink)
            .await
            .expect("the MERGE is reported committed");
        assert_eq!(
            store.refused(),
            3,
            "the store refused every read it was set to"
        );
        assert!(
            matches!(merged, CommitOutcome::Committed { version: v, .. } if v == version + 1),
            "{merged:?}"
        );
        assert_eq!(contents(&mut sink).await, vec![("a".to_string(), 1)]);
    }

    #[tokio::test]
    async fn a_merge_whose_table_stays_unreadable_after_its_commit_fails_and_the_table_tells_later()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = dir.path().to_str().expect("utf-8").to_string();
        let (mut sink, store) = create_on_unreliable_store(&location, 100).await;
        store.arm();
        let error = merge_first_row(&mut sink)
            .await
            .expect_err("the MERGE's outcome cannot be known");
        assert!(error.to_string().contains("MERGE into"), "{error}");
        assert!(
            (HOLDS_READS as usize..100).contains(&store.refused()),
            "read again {HOLDS_READS} times, then given up: {} reads refused",
            store.refused()
        );
        // What a restart does: read the table, find the batch's offsets in it.
        store.left.store(0, Ordering::SeqCst);
        assert_eq!(
            sink.txn_versions(&["q-t-0".to_string()])
                .await
                .expect("txn"),
            vec![Some(2)]
        );
        assert_eq!(contents(&mut sink).await, vec![("a".to_string(), 1)]);
    }
}
