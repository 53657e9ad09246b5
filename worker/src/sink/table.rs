//! The table as the pipeline and the source share it: how the table names each source
//! partition's offset (a `txn` app id per partition), and one handle through which the source
//! reads those offsets (when partitions are assigned) and the pipeline commits batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::record_batch::RecordBatch;
use tokio::runtime::Handle;
use tracing::Instrument;

use super::delta::{CommitOutcome, DeltaSink, TableProbe, TxnUpdate};
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

    /// Commits a batch's rows with every partition's move, atomically; a partition that is no
    /// longer where the batch started makes it a [`CommitOutcome::Conflict`].
    pub fn commit(
        &self,
        batch: &RecordBatch,
        partitions: &[PartitionCommit],
        metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome> {
        let txns = self.txns(partitions);
        self.with_sink(|sink| {
            self.runtime.block_on(
                sink.commit(Some(batch), &txns, metadata)
                    .instrument(tracing::info_span!("commit")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
