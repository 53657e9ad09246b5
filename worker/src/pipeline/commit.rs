//! The decode and commit stages: records -> rows, the hand-off of the rows to the committer
//! (`committer.rs`), and, once they have landed, what follows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;
use tributary_crds::OnError;

use super::Pipeline;
use super::committer::{Job, Landed, Merge};
use super::read::ReadBatch;
use crate::batch::Plan;
use crate::decode::Decoded;
use crate::error::{Error, Result};
use crate::partition::OffsetMap;
use crate::record::BadRecord;
use crate::sink::PartitionCommit;
use deltalake::arrow::record_batch::RecordBatch;

/// A batch's rows, and how long decoding (and the transform) took.
pub(super) struct DecodedBatch {
    pub decoded: Decoded,
    pub decode_ms: i64,
    /// outputMode update: the rows to MERGE, the last per key.
    pub merge: Option<RecordBatch>,
}

/// A batch handed to the committer: what its progress record needs once it lands. Its records
/// are gone by then (only the dead letters travel with the rows), so that reading the next
/// batch does not hold two batches of records.
pub(super) struct InFlight {
    pub batch_id: i64,
    pub started: Instant,
    /// Its partitions, with where each started and stopped.
    pub plan: Plan,
    pub ends: OffsetMap,
    pub input_rows: i64,
    pub input_bytes: u64,
    pub output_rows: i64,
    pub rescued_rows: i64,
    pub latest_offset_ms: i64,
    pub fetch_ms: i64,
    pub decode_ms: i64,
}

impl Pipeline {
    /// Decodes the batch's records; with `onError: fail` the first bad record stops the query,
    /// named by its offset.
    pub(super) fn decode(&self, read: &ReadBatch) -> Result<DecodedBatch> {
        let started = Instant::now();
        let decoded = self.decoder.decode(&read.records)?;
        let (decoded, merge) = self.shaping.apply(decoded, &read.records)?;
        let decode_ms = started.elapsed().as_millis() as i64;
        if self.decoder.on_error() == OnError::Fail
            && let Some(bad) = decoded.bad.first()
        {
            return Err(self
                .decoder
                .stop_at(&read.records[bad.index], bad.reason.clone()));
        }
        Ok(DecodedBatch {
            decoded,
            decode_ms,
            merge,
        })
    }

    /// Hands a decoded batch to the committer (whose slot must be free), and plans on from its
    /// ends: the next batch of each partition starts where this one stops.
    pub(super) fn hand_off(
        &mut self,
        started: Instant,
        read: ReadBatch,
        decoded: DecodedBatch,
    ) -> Result<()> {
        let batch_id = self.next_batch_id;
        let ReadBatch {
            plan,
            records,
            latest_offset_ms,
            fetch_ms,
            ..
        } = read;
        let ends: OffsetMap = plan
            .partitions()
            .iter()
            .map(|p| (p.tp.clone(), p.cursor))
            .collect();
        let partitions: Vec<PartitionCommit> = plan
            .partitions()
            .iter()
            .map(|p| PartitionCommit {
                tp: p.tp.clone(),
                expected: p.start.table_version,
                next: p.cursor,
            })
            .collect();
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
        let DecodedBatch {
            decoded,
            decode_ms,
            merge,
        } = decoded;
        let merge = match (merge, self.shaping.merge_keys()) {
            (Some(rows), Some(keys)) => Some(Merge {
                rows,
                keys: keys.to_vec(),
            }),
            _ => None,
        };
        let output_rows = decoded.num_rows() as i64;
        // Only the bad records go on with the rows, renumbered among themselves.
        let bad_records = decoded
            .bad
            .iter()
            .map(|b| records[b.index].clone())
            .collect();
        let bad = decoded
            .bad
            .into_iter()
            .enumerate()
            .map(|(index, b)| BadRecord {
                index,
                reason: b.reason,
            })
            .collect();
        let in_flight = InFlight {
            batch_id,
            started,
            plan,
            ends: ends.clone(),
            input_rows: records.len() as i64,
            input_bytes: records
                .iter()
                .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                .sum(),
            output_rows,
            rescued_rows: decoded.rescued_rows as i64,
            latest_offset_ms,
            fetch_ms,
            decode_ms,
        };
        // Its records go (freeing their payloads' chunks for the next batch); the vector that
        // held them is kept for the next batch's. The decode threads have let go of it by now
        // (each drops its share before handing its part back).
        if let Ok(mut records) = Arc::try_unwrap(records) {
            records.clear();
            self.spare_records = records;
        }
        self.committer.start(Job {
            parts: decoded.parts,
            merge,
            partitions,
            ends: ends.clone(),
            metadata,
            bad_records,
            bad,
        })?;
        // Callbacks only run inside poll, so the assignment cannot change between planning
        // this batch and here; a partition lost to a rebalance meanwhile is caught by the txn
        // check in the commit.
        self.source.advance(&ends);
        self.in_flight = Some(in_flight);
        self.next_batch_id = batch_id + 1;
        Ok(())
    }

    /// Waits for the batch in flight (if any): publishes it once it has landed; when it was
    /// abandoned (another writer moved one of its partitions), its partitions are read again
    /// from where the table says and its batch id is given to the next batch. True unless a
    /// batch was abandoned.
    pub(super) fn settle(&mut self) -> Result<bool> {
        let Some(landed) = self.committer.wait() else {
            return Ok(true);
        };
        let in_flight = self.in_flight.take().ok_or_else(|| {
            Error::Runtime("internal: a commit ended with no batch in flight".into())
        })?;
        match landed? {
            Landed::Committed(committed) => {
                // The batch is in the table: the consumer group hears of it (for lag tools).
                self.source.committed(&in_flight.ends);
                self.publish(&in_flight, &committed)?;
                Ok(true)
            }
            Landed::Abandoned(reason) => {
                warn!(
                    reason,
                    batch = in_flight.batch_id,
                    "the batch is abandoned and its partitions re-read from the table"
                );
                self.resync_plan(&in_flight.plan)?;
                self.next_batch_id = in_flight.batch_id;
                Ok(false)
            }
        }
    }
}
