//! The dead-letter table (onError: deadLetter): each record that did not parse, with its error
//! and Kafka coordinates, so it can be inspected and replayed.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;

use crate::decode::{BadRecord, raw_text};
use crate::error::{Error, Result};
use crate::source::Record;

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
pub fn batch(records: &[Record], bad: &[&BadRecord], query_id: &str) -> Result<RecordBatch> {
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
