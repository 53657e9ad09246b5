//! The table as the pipeline and the source share it: how the table names each source
//! partition's offset (a `txn` app id per partition), and one handle through which the source
//! reads those offsets (when partitions are assigned) and the pipeline commits batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::record_batch::RecordBatch;
use tokio::runtime::Handle;
use tracing::Instrument;

use super::delta::{CommitOutcome, DeltaSink, RESET_ID_KEY, ResetRecord, TableProbe, TxnUpdate};
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition};

/// The txn app ids of a query's partitions: derived from the query id, so a new query (new
/// checkpoint) writing to the same table does not inherit another query's offsets.
#[derive(Clone, Debug)]
pub struct TxnIds {
    query_id: String,
    prefix: String,
}

impl TxnIds {
    pub fn for_query(query_id: &str) -> TxnIds {
        TxnIds {
            query_id: query_id.to_string(),
            prefix: format!("tributary-{query_id}"),
        }
    }

    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// The app id of a partition's offset in the data table.
    pub fn data(&self, tp: &TopicPartition) -> String {
        format!("{}-{}-{}", self.prefix, tp.topic, tp.partition)
    }

    /// The app id under which a table records that reset `id` was applied to this query (its
    /// version: when, in epoch milliseconds). Partition app ids start with the query id, a
    /// UUID, so none can look like this one.
    pub fn reset(&self, id: &str) -> String {
        format!("tributary-reset-{}-{id}", self.query_id)
    }

    /// The app id of a partition's offset in the dead-letter table.
    pub fn dead_letter(&self, tp: &TopicPartition) -> String {
        format!("{}-deadletter-{}-{}", self.prefix, tp.topic, tp.partition)
    }
}

/// One partition's move in a batch commit: from where the batch started (the table's txn
/// then, None if never written) to the next offset after the batch.
#[derive(Clone, Debug)]
pub struct PartitionCommit {
    pub tp: TopicPartition,
    pub expected: Option<i64>,
    pub next: i64,
}

/// The data table, shared by the source's start resolver and the pipeline's commits. Both use
/// it on the pipeline's thread (rebalance callbacks run inside its polls); the lock is for the
/// consumer context, which librdkafka requires to be `Sync`.
#[derive(Clone)]
pub struct SharedTable {
    sink: Arc<Mutex<DeltaSink>>,
    runtime: Handle,
    ids: TxnIds,
}

impl SharedTable {
    pub fn new(sink: DeltaSink, runtime: Handle, ids: TxnIds) -> SharedTable {
        SharedTable {
            sink: Arc::new(Mutex::new(sink)),
            runtime,
            ids,
        }
    }

    fn with_sink<T>(&self, f: impl FnOnce(&mut DeltaSink) -> Result<T>) -> Result<T> {
        let mut sink = self
            .sink
            .lock()
            .map_err(|_| Error::Runtime("sink lock poisoned".into()))?;
        f(&mut sink)
    }

    /// A reachability check of the table's storage, usable without holding the table.
    pub fn reach_probe(&self) -> Result<TableProbe> {
        self.with_sink(|sink| Ok(sink.reach_probe()))
    }

    /// Reopens the table with other storage options (renewed credentials).
    pub fn reopen_with(&self, storage_options: HashMap<String, String>) -> Result<()> {
        let runtime = self.runtime.clone();
        self.with_sink(|sink| runtime.block_on(sink.reopen_with(storage_options)))
    }

    /// The next offset the table records for each of `tps` (absent: never written by this
    /// query).
    pub fn committed_offsets(&self, tps: &[TopicPartition]) -> Result<OffsetMap> {
        self.offsets_recorded_by(&self.ids, tps)
    }

    /// The next offset the table records for each of `tps` under the txn ids of one query.
    fn offsets_recorded_by(&self, ids: &TxnIds, tps: &[TopicPartition]) -> Result<OffsetMap> {
        let app_ids: Vec<String> = tps.iter().map(|tp| ids.data(tp)).collect();
        let versions = self.with_sink(|sink| self.runtime.block_on(sink.txn_versions(&app_ids)))?;
        Ok(tps
            .iter()
            .zip(versions)
            .filter_map(|(tp, v)| v.map(|v| (tp.clone(), v)))
            .collect())
    }

    /// Another query's record of offsets for any of `tps`: the query id and its offsets, from
    /// the queries that wrote the table's latest commits. A new query must not start where one
    /// of them already wrote, or it would write the same records again.
    pub fn offsets_of_other_queries(
        &self,
        tps: &[TopicPartition],
    ) -> Result<Option<(String, OffsetMap)>> {
        // Recent enough to find a query whose checkpoint was lost, while reading only a
        // bounded number of commit files at start.
        const COMMITS_LOOKED_AT: usize = 100;
        let ours = self.ids.query_id();
        let writers = self.with_sink(|sink| {
            self.runtime
                .block_on(sink.recent_writers(COMMITS_LOOKED_AT))
        })?;
        for writer in writers.into_iter().filter(|w| w != ours) {
            let offsets = self.offsets_recorded_by(&TxnIds::for_query(&writer), tps)?;
            if !offsets.is_empty() {
                return Ok(Some((writer, offsets)));
            }
        }
        Ok(None)
    }

    /// The highest micro-batch id this query recorded in the table's recent commits: a batch
    /// whose progress record was lost (a full checkpoint disk after the commit) still counts,
    /// so its id is never given to another batch.
    pub fn last_batch_id(&self) -> Result<Option<i64>> {
        const COMMITS_LOOKED_AT: usize = 100;
        let ours = self.ids.query_id().to_string();
        self.with_sink(|sink| {
            self.runtime
                .block_on(sink.last_batch_of(&ours, COMMITS_LOOKED_AT))
        })
    }

    /// The table's txn version for one app id (another writer's, e.g. a Spark query's).
    pub fn txn_version(&self, app_id: &str) -> Result<Option<i64>> {
        let ids = [app_id.to_string()];
        let versions = self.with_sink(|sink| self.runtime.block_on(sink.txn_versions(&ids)))?;
        Ok(versions.into_iter().next().flatten())
    }

    /// When the table recorded reset `id` as applied to this query (epoch milliseconds), if it
    /// did.
    pub fn reset_applied_at(&self, id: &str) -> Result<Option<i64>> {
        self.txn_version(&self.ids.reset(id))
    }

    /// Applies a reset to the data table, once (see [`apply_reset`]).
    pub fn apply_reset(&self, reset: &ResetCommit) -> Result<ResetOutcome> {
        let marker = self.ids.reset(&reset.id);
        let query_id = self.ids.query_id().to_string();
        self.with_sink(|sink| {
            self.runtime.block_on(
                apply_reset(sink, reset, &marker, &query_id, |tp| self.ids.data(tp))
                    .instrument(tracing::info_span!("reset", id = %reset.id)),
            )
        })
    }

    fn txns(&self, partitions: &[PartitionCommit]) -> Vec<TxnUpdate> {
        partitions
            .iter()
            .map(|p| TxnUpdate {
                app_id: self.ids.data(&p.tp),
                expected: p.expected,
                version: p.next,
            })
            .collect()
    }

    /// MERGEs a batch's last rows per key (outputMode update) with every partition's move,
    /// atomically; as [`SharedTable::commit`] otherwise.
    pub fn upsert(
        &self,
        rows: &RecordBatch,
        keys: &[String],
        delete_column: &str,
        partitions: &[PartitionCommit],
        metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let txns = self.txns(partitions);
        self.with_sink(|sink| {
            self.runtime.block_on(
                sink.upsert(rows, keys, delete_column, &txns, metadata)
                    .instrument(tracing::info_span!("merge")),
            )
        })
    }

    /// Commits a batch's rows (in the parts they were decoded in) with every partition's move,
    /// atomically; a partition that is no longer where the batch started makes it a
    /// [`CommitOutcome::Conflict`].
    pub fn commit(
        &self,
        parts: &[RecordBatch],
        partitions: &[PartitionCommit],
        metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let txns = self.txns(partitions);
        self.with_sink(|sink| {
            self.runtime.block_on(
                sink.commit(parts, &txns, metadata)
                    .instrument(tracing::info_span!("commit")),
            )
        })
    }
}

/// A reset of a query's offsets, ready to be committed: the id, where each partition moves,
/// and what the table's history says about it.
#[derive(Clone, Debug)]
pub struct ResetCommit {
    pub id: String,
    pub offsets: OffsetMap,
    /// The target as the spec says it: "timestamp 2026-..." or "offsets {...}".
    pub to: String,
    /// namespace/name of the ingestion.
    pub ingestion: String,
    /// The worker (pod) applying it.
    pub worker: String,
    /// When, epoch milliseconds.
    pub at_ms: i64,
}

/// What became of a reset in one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The table already recorded it (at these epoch milliseconds): nothing was done.
    AlreadyApplied { at_ms: i64 },
    /// This call committed it, as this table version.
    Applied { at_ms: i64, version: i64 },
}

/// Commits tried before a reset gives up on writers that keep moving its partitions.
const RESET_ATTEMPTS: usize = 20;

/// Applies `reset` to one table once: unless the table records its marker txn already, one
/// commit moves every partition's txn (`app_id` of each) to the reset's offset, with the
/// marker. A concurrent writer that moved a partition meanwhile makes the commit conflict: the
/// table is read again and the commit retried (or found already applied by another worker).
pub async fn apply_reset(
    sink: &mut DeltaSink,
    reset: &ResetCommit,
    marker: &str,
    query_id: &str,
    app_id: impl Fn(&TopicPartition) -> String,
) -> Result<ResetOutcome> {
    let mut app_ids: Vec<String> = reset.offsets.keys().map(&app_id).collect();
    app_ids.push(marker.to_string());
    for _ in 0..RESET_ATTEMPTS {
        let mut current = sink.txn_versions(&app_ids).await?;
        if let Some(Some(at_ms)) = current.pop() {
            return Ok(ResetOutcome::AlreadyApplied { at_ms });
        }
        let mut txns: Vec<TxnUpdate> = reset
            .offsets
            .iter()
            .zip(current)
            .map(|((tp, offset), now)| TxnUpdate {
                app_id: app_id(tp),
                expected: now,
                version: *offset,
            })
            .collect();
        txns.push(TxnUpdate {
            app_id: marker.to_string(),
            expected: None,
            version: reset.at_ms,
        });
        match sink
            .commit_reset(&txns, reset_record(reset, query_id))
            .await?
        {
            CommitOutcome::Committed { version, .. } => {
                return Ok(ResetOutcome::Applied {
                    at_ms: reset.at_ms,
                    version,
                });
            }
            CommitOutcome::Conflict(reason) => {
                tracing::info!(
                    reason,
                    "another writer moved the partitions; the reset is read again"
                );
            }
        }
    }
    Err(Error::Reset {
        id: reset.id.clone(),
        reason: format!(
            "other writers moved its partitions {RESET_ATTEMPTS} times while it was committed; the worker restarts and tries again"
        ),
    })
}

/// The history entry of a reset's commit.
fn reset_record(reset: &ResetCommit, query_id: &str) -> ResetRecord {
    let offsets = crate::partition::to_partition_offsets(&reset.offsets);
    let offsets_json = serde_json::to_string(&offsets).unwrap_or_default();
    let parameters = HashMap::from([
        ("resetId".to_string(), serde_json::json!(reset.id)),
        ("to".to_string(), serde_json::json!(reset.to)),
        ("offsets".to_string(), serde_json::json!(offsets_json)),
        ("queryId".to_string(), serde_json::json!(query_id)),
        ("ingestion".to_string(), serde_json::json!(reset.ingestion)),
        ("worker".to_string(), serde_json::json!(reset.worker)),
    ]);
    ResetRecord {
        parameters,
        summary: format!(
            "reset {} of ingestion {} to {} (spec.reset), applied by {}",
            reset.id, reset.ingestion, reset.to, reset.worker
        ),
        info: HashMap::from([
            (super::QUERY_ID_KEY.to_string(), serde_json::json!(query_id)),
            (RESET_ID_KEY.to_string(), serde_json::json!(reset.id)),
        ]),
        timestamp_ms: reset.at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sink(dir: &std::path::Path) -> DeltaSink {
        use deltalake::arrow::datatypes::{DataType, Field, Schema};
        DeltaSink::open_or_create(
            dir.to_str().expect("utf-8"),
            HashMap::new(),
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)])),
            Vec::new(),
            10,
            None,
            "test",
        )
        .await
        .expect("table")
    }

    #[tokio::test]
    async fn a_reset_moves_offsets_back_once_per_table_even_after_a_crash_between_tables() {
        let (data_dir, dead_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (mut data, mut dead) = (sink(data_dir.path()).await, sink(dead_dir.path()).await);
        let ids = TxnIds::for_query("q1");
        let p0 = TopicPartition::new("t", 0);
        let p1 = TopicPartition::new("t", 1);
        // The query read both partitions up to 50.
        let read = |tp: &TopicPartition| TxnUpdate {
            app_id: ids.data(tp),
            expected: None,
            version: 50,
        };
        let committed = data
            .commit(&[], &[read(&p0), read(&p1)], HashMap::new())
            .await
            .expect("commit");
        assert!(matches!(committed, CommitOutcome::Committed { .. }));
        let reset = ResetCommit {
            id: "r1".into(),
            offsets: OffsetMap::from([(p0.clone(), 10)]),
            to: "offsets {\"t\":{\"0\":10}}".into(),
            ingestion: "ns/name".into(),
            worker: "pod-1".into(),
            at_ms: 1_700_000_000_000,
        };
        let marker = ids.reset("r1");
        // The dead-letter table's reset is committed, then the worker dies.
        let outcome = apply_reset(&mut dead, &reset, &marker, "q1", |tp| ids.dead_letter(tp))
            .await
            .expect("dead letters");
        assert!(
            matches!(outcome, ResetOutcome::Applied { .. }),
            "{outcome:?}"
        );
        // The next start: the dead-letter table's part is done, the data table's is not.
        let again = apply_reset(&mut dead, &reset, &marker, "q1", |tp| ids.dead_letter(tp))
            .await
            .expect("dead letters again");
        assert_eq!(
            again,
            ResetOutcome::AlreadyApplied {
                at_ms: 1_700_000_000_000
            }
        );
        let outcome = apply_reset(&mut data, &reset, &marker, "q1", |tp| ids.data(tp))
            .await
            .expect("data");
        assert!(
            matches!(outcome, ResetOutcome::Applied { version: 2, .. }),
            "{outcome:?}"
        );
        // Backwards for the partition named, untouched for the other; never again.
        let versions = data
            .txn_versions(&[ids.data(&p0), ids.data(&p1), marker.clone()])
            .await
            .expect("txns");
        assert_eq!(versions, [Some(10), Some(50), Some(1_700_000_000_000)]);
        let later = ResetCommit {
            offsets: OffsetMap::from([(p0.clone(), 40)]),
            at_ms: 1_700_000_999_000,
            ..reset.clone()
        };
        let again = apply_reset(&mut data, &later, &marker, "q1", |tp| ids.data(tp))
            .await
            .expect("data again");
        assert_eq!(
            again,
            ResetOutcome::AlreadyApplied {
                at_ms: 1_700_000_000_000
            }
        );
        assert_eq!(
            data.txn_versions(&[ids.data(&p0)]).await.expect("txns"),
            [Some(10)]
        );
        // A new id is a new reset; another query's marker is not this one's.
        assert_ne!(ids.reset("r2"), marker);
        assert_ne!(TxnIds::for_query("q2").reset("r1"), marker);
    }

    #[test]
    fn txn_ids_belong_to_one_query_and_one_table() {
        let ids = TxnIds::for_query("q1");
        let tp = TopicPartition::new("sensor-readings", 3);
        assert_eq!(ids.data(&tp), "tributary-q1-sensor-readings-3");
        assert_eq!(
            ids.dead_letter(&tp),
            "tributary-q1-deadletter-sensor-readings-3"
        );
        assert_ne!(TxnIds::for_query("q2").data(&tp), ids.data(&tp));
    }
}
