//! The dead-letter table (onError: deadLetter): each record that did not parse, with its error
//! and Kafka coordinates, so it can be inspected and replayed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use tokio::runtime::Handle;

use super::delta::{CommitOutcome, DeltaSink, TxnUpdate};
use super::table::TxnIds;
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition};
use crate::record::{BadRecord, Record, raw_text};

/// The dead-letter table of an ingestion, with its own txn per source partition so that a
/// retried batch does not write its bad records twice.
pub struct DeadLetterTable {
    sink: DeltaSink,
    ids: TxnIds,
    runtime: Handle,
    query_id: String,
}

impl DeadLetterTable {
    pub fn new(sink: DeltaSink, ids: TxnIds, runtime: Handle, query_id: String) -> DeadLetterTable {
        DeadLetterTable {
            sink,
            ids,
            runtime,
            query_id,
        }
    }

    /// Writes a batch's bad records, skipping those a previous attempt of the same batch
    /// already wrote (the txns say how far each partition got); `ends` holds each partition of
    /// the batch and the next offset after it. Returns the batch's dead-letter row count, or
    /// None when another worker moved one of the partitions' dead-letter txns meanwhile: it
    /// owns them now.
    pub fn write(
        &mut self,
        records: &[Record],
        bad: &[BadRecord],
        ends: &OffsetMap,
    ) -> Result<Option<i64>> {
        if bad.is_empty() {
            return Ok(Some(0));
        }
        let tps: Vec<TopicPartition> = ends.keys().cloned().collect();
        let ids: Vec<String> = tps.iter().map(|tp| self.ids.dead_letter(tp)).collect();
        let versions = self.runtime.block_on(self.sink.txn_versions(&ids))?;
        let written: BTreeMap<TopicPartition, Option<i64>> =
            tps.iter().cloned().zip(versions).collect();
        let fresh = not_yet_written(records, bad, &written);
        if fresh.is_empty() {
            return Ok(Some(bad.len() as i64));
        }
        let batch = batch(records, &fresh, &self.query_id)?;
        let txns: Vec<TxnUpdate> = tps
            .iter()
            .filter(|tp| {
                fresh.iter().any(|b| {
                    let r = &records[b.index];
                    *r.topic == *tp.topic && r.partition == tp.partition
                })
            })
            .map(|tp| TxnUpdate {
                app_id: self.ids.dead_letter(tp),
                expected: written.get(tp).copied().flatten(),
                version: ends.get(tp).copied().unwrap_or(0),
            })
            .collect();
        match self
            .runtime
            .block_on(self.sink.commit(Some(&batch), &txns, HashMap::new()))?
        {
            CommitOutcome::Committed { .. } => Ok(Some(bad.len() as i64)),
            CommitOutcome::Conflict(reason) => {
                tracing::debug!(reason, "dead-letter commit conflict");
                Ok(None)
            }
        }
    }
}

/// The bad records at or past where their partition's dead-letter txn says an earlier attempt
/// got (`written`: None for a partition never written).
fn not_yet_written<'a>(
    records: &[Record],
    bad: &'a [BadRecord],
    written: &BTreeMap<TopicPartition, Option<i64>>,
) -> Vec<&'a BadRecord> {
    bad.iter()
        .filter(|b| {
            let r = &records[b.index];
            let done = written
                .get(&TopicPartition::new(&*r.topic, r.partition))
                .copied()
                .flatten();
            done.is_none_or(|v| r.offset >= v)
        })
        .collect()
}

pub fn schema() -> SchemaRef {
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("kafka_topic", DataType::Utf8, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", utc(), true),
        Field::new("kafka_key", DataType::Binary, true),
        // The value exactly as read, and as text (non-UTF-8 bytes escaped as \xNN).
        Field::new("value", DataType::Binary, true),
        Field::new("value_text", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("query_id", DataType::Utf8, false),
        Field::new("failed_at", utc(), false),
    ]))
}

/// The dead-letter rows of a batch's bad records.
fn batch(records: &[Record], bad: &[&BadRecord], query_id: &str) -> Result<RecordBatch> {
    let rows: Vec<&Record> = bad.iter().map(|b| &records[b.index]).collect();
    let now = chrono::Utc::now().timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.topic),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.partition),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset))),
        Arc::new(
            TimestampMicrosecondArray::from_iter(
                rows.iter().map(|r| r.timestamp_ms.map(|t| t * 1000)),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(BinaryArray::from_iter(
            rows.iter().map(|r| r.key.as_deref()),
        )),
        Arc::new(BinaryArray::from_iter(
            rows.iter().map(|r| r.value.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter()
                .map(|r| r.value.as_deref().map(|v| raw_text(Some(v)))),
        )),
        Arc::new(StringArray::from_iter_values(
            bad.iter().map(|b| b.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| query_id))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|_| now))
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| Error::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            topic: Arc::from("t"),
            partition,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            timestamp_type: 0,
            key: None,
            headers: Vec::new(),
            value: Some(b"{not json".to_vec()),
        }
    }

    #[test]
    fn a_retried_batch_writes_only_the_bad_records_not_yet_written() {
        let records = [record(0, 5), record(0, 9), record(1, 2), record(2, 7)];
        let bad: Vec<BadRecord> = (0..records.len())
            .map(|index| BadRecord {
                index,
                reason: "not JSON".into(),
            })
            .collect();
        // Partition 0 got up to offset 6 in an earlier attempt; 1 was never written; 2 has no
        // txn lookup at all (not in the batch's partitions).
        let written = BTreeMap::from([
            (TopicPartition::new("t", 0), Some(6)),
            (TopicPartition::new("t", 1), None),
        ]);
        let fresh: Vec<usize> = not_yet_written(&records, &bad, &written)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(fresh, [1, 2, 3]);

        let rows = batch(
            &records,
            &fresh.iter().map(|i| &bad[*i]).collect::<Vec<_>>(),
            "q",
        )
        .expect("dead-letter rows");
        assert_eq!(rows.num_rows(), 3);
        assert_eq!(rows.schema(), schema());
    }
}
