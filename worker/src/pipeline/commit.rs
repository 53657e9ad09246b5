//! The decode and commit stages: records -> rows, then dead letters and the batch's rows with
//! every partition's next offset, each in one Delta commit.

use std::collections::HashMap;
use std::time::Instant;

use tracing::warn;
use tributary_crds::OnError;

use super::Pipeline;
use super::read::ReadBatch;
use crate::decode::Decoded;
use crate::error::Result;
use crate::partition::OffsetMap;
use crate::sink::{CommitOutcome, PartitionCommit};

/// A batch's rows, and how long decoding took.
pub(super) struct DecodedBatch {
    pub decoded: Decoded,
    pub decode_ms: i64,
}

/// A batch in the table.
pub(super) struct Committed {
    pub version: i64,
    pub files: usize,
    /// Commits retried after another replica's commit.
    pub retries: u64,
    pub dead_letter_rows: i64,
    /// Writing the batch's dead letters (onError: deadLetter), then its rows.
    pub dead_letter_ms: Option<i64>,
    /// Writing the batch's Parquet files, part of `commit_ms`.
    pub write_ms: i64,
    pub commit_ms: i64,
}

impl Pipeline {
    /// Decodes the batch's records; with `onError: fail` the first bad record stops the query,
    /// named by its offset.
    pub(super) fn decode(&self, read: &ReadBatch) -> Result<DecodedBatch> {
        let started = Instant::now();
        let decoded = self.decoder.decode(&read.records)?;
        let decode_ms = started.elapsed().as_millis() as i64;
        if self.decoder.on_error() == OnError::Fail
            && let Some(bad) = decoded.bad.first()
        {
            return Err(self
                .decoder
                .stop_at(&read.records[bad.index], bad.reason.clone()));
        }
        Ok(DecodedBatch { decoded, decode_ms })
    }

    /// Commits dead letters first (idempotent through their own txns), then the batch. None
    /// when another writer moved one of the batch's partitions: the batch is abandoned and its
    /// partitions re-read from the table.
    pub(super) fn commit(
        &mut self,
        batch_id: i64,
        read: &ReadBatch,
        decoded: &DecodedBatch,
    ) -> Result<Option<Committed>> {
        let started = Instant::now();
        let ends: OffsetMap = read
            .plan
            .partitions()
            .iter()
            .map(|p| (p.tp.clone(), p.cursor))
            .collect();
        let dead_letter_rows = match self.dead_letter.as_mut() {
            None => Some(0),
            Some(table) => table.write(&read.records, &decoded.decoded.bad, &ends)?,
        };
        let dead_letter_ms = self
            .dead_letter
            .is_some()
            .then(|| started.elapsed().as_millis() as i64);
        let started = Instant::now();
        let Some(dead_letter_rows) = dead_letter_rows else {
            warn!(
                "another worker wrote dead letters for these partitions: the batch is abandoned and the partitions re-read from the table"
            );
            self.resync_plan(&read.plan)?;
            return Ok(None);
        };
        let partitions: Vec<PartitionCommit> = read
            .plan
            .partitions()
            .iter()
            .map(|p| PartitionCommit {
                tp: p.tp.clone(),
                expected: p.start.table_version,
                next: p.cursor,
            })
            .collect();
        // Callbacks only run inside poll, so the assignment cannot change from here to the
        // commit; a partition lost to a rebalance we have not polled yet is caught by the txn
        // check in the commit.
        let metadata = HashMap::from([
            (
                crate::sink::QUERY_ID_KEY.to_string(),
                serde_json::json!(self.query_id),
            ),
            (
                "tributary.runId".to_string(),
                serde_json::json!(self.run_id),
            ),
            (
                crate::sink::BATCH_ID_KEY.to_string(),
                serde_json::json!(batch_id),
            ),
        ]);
        let (version, files, retries, write_ms) = match self.table.commit(
            &decoded.decoded.batch,
            &partitions,
            metadata,
        )? {
            CommitOutcome::Committed {
                version,
                files,
                retries,
                write_ms,
            } => (version, files, retries, write_ms),
            CommitOutcome::Conflict(reason) => {
                warn!(
                    reason,
                    "another writer moved these partitions: the batch is abandoned and the partitions re-read from the table"
                );
                self.resync_plan(&read.plan)?;
                return Ok(None);
            }
        };
        let commit_ms = started.elapsed().as_millis() as i64;
        // The batch is in the table: its partitions continue after it.
        self.source.committed(&ends);
        Ok(Some(Committed {
            version,
            files,
            retries,
            dead_letter_rows,
            dead_letter_ms,
            write_ms,
            commit_ms,
        }))
    }
}
