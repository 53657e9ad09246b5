//! The dead-letter table (onError: deadLetter): each record that did not parse, with its error
//! and Kafka coordinates, so it can be inspected and replayed.

use std::collections::HashMap;
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
    /// the batch and the next offset after it. One commit for the whole batch, carrying a txn
    /// for each partition that has bad records in it; the table is read once (its txns) and
    /// written once. Returns the batch's dead-letter row count, or None when another worker
    /// moved one of the partitions' dead-letter txns meanwhile: it owns them now.
    pub fn write(
        &mut self,
        records: &[Record],
        bad: &[BadRecord],
        ends: &OffsetMap,
    ) -> Result<Option<i64>> {
        if bad.is_empty() {
            return Ok(Some(0));
        }
        let by_partition = BadByPartition::of(records, bad);
        let ids: Vec<String> = by_partition
            .partitions
            .iter()
            .map(|tp| self.ids.dead_letter(tp))
            .collect();
        let written = self.runtime.block_on(self.sink.txn_versions(&ids))?;
        let fresh = by_partition.not_yet_written(records, bad, &written);
        if fresh.is_empty() {
            return Ok(Some(bad.len() as i64));
        }
        let batch = batch(records, &fresh, &self.query_id)?;
        let mut txns = Vec::new();
        let mut current = Vec::new();
        for (i, tp) in by_partition.partitions.iter().enumerate() {
            if !fresh.iter().any(|b| by_partition.of_record[b.index] == i) {
                continue;
            }
            let end = ends.get(tp).copied().ok_or_else(|| {
                Error::Runtime(format!(
                    "internal: a bad record of {}-{} is not in the batch's partitions",
                    tp.topic, tp.partition
                ))
            })?;
            txns.push(TxnUpdate {
                app_id: ids[i].clone(),
                expected: written[i],
                version: end,
            });
            current.push(written[i]);
        }
        match self.runtime.block_on(self.sink.commit_read(
            std::slice::from_ref(&batch),
            &txns,
            &current,
            HashMap::new(),
        ))? {
            CommitOutcome::Committed { .. } => Ok(Some(bad.len() as i64)),
            CommitOutcome::Conflict(reason) => {
                tracing::debug!(reason, "dead-letter commit conflict");
                Ok(None)
            }
        }
    }
}

impl DeadLetterTable {
    /// Moves the dead-letter txns of the reset's partitions to its offsets, once, so that the
    /// records read again after a rewind have their dead letters written again (and a skip
    /// leaves none behind); committed before the data table's reset, so that a crash between
    /// the two finds this one done and the data table's still to do.
    pub fn apply_reset(
        &mut self,
        reset: &super::table::ResetCommit,
    ) -> Result<super::table::ResetOutcome> {
        let marker = self.ids.reset(&reset.id);
        let ids = self.ids.clone();
        self.runtime.block_on(super::table::apply_reset(
            &mut self.sink,
            reset,
            &marker,
            &self.query_id,
            |tp| ids.dead_letter(tp),
        ))
    }
}

/// The partitions a batch's bad records come from, and each record's partition, found without
/// an allocation per record.
struct BadByPartition {
    partitions: Vec<TopicPartition>,
    /// For each record of the batch that is bad, the index of its partition in `partitions`
    /// (indexed by the record's position in the batch; unused for good records).
    of_record: Vec<usize>,
}

impl BadByPartition {
    fn of(records: &[Record], bad: &[BadRecord]) -> BadByPartition {
        let mut index: HashMap<(&str, i32), usize> = HashMap::new();
        let mut partitions = Vec::new();
        let mut of_record = vec![usize::MAX; records.len()];
        for b in bad {
            let r = &records[b.index];
            let i = *index.entry((&*r.topic, r.partition)).or_insert_with(|| {
                partitions.push(TopicPartition::new(&*r.topic, r.partition));
                partitions.len() - 1
            });
            of_record[b.index] = i;
        }
        BadByPartition {
            partitions,
            of_record,
        }
    }

    /// The bad records at or past where their partition's dead-letter txn says an earlier
    /// attempt got (`written`, in the order of `partitions`: None for one never written).
    fn not_yet_written<'a>(
        &self,
        records: &[Record],
        bad: &'a [BadRecord],
        written: &[Option<i64>],
    ) -> Vec<&'a BadRecord> {
        bad.iter()
            .filter(|b| {
                let done = written.get(self.of_record[b.index]).copied().flatten();
                done.is_none_or(|v| records[b.index].offset >= v)
            })
            .collect()
    }
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
            value: Some(b"{not json".to_vec().into()),
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
        let by_partition = BadByPartition::of(&records, &bad);
        assert_eq!(
            by_partition.partitions,
            [
                TopicPartition::new("t", 0),
                TopicPartition::new("t", 1),
                TopicPartition::new("t", 2)
            ]
        );
        // Partition 0 got up to offset 6 in an earlier attempt; 1 and 2 were never written.
        let written = [Some(6), None, None];
        let fresh: Vec<usize> = by_partition
            .not_yet_written(&records, &bad, &written)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(fresh, [1, 2, 3]);
        // Everything written: nothing is fresh.
        let all = [Some(10), Some(3), Some(8)];
        assert!(
            by_partition
                .not_yet_written(&records, &bad, &all)
                .is_empty()
        );

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
