//! `format.raw`: each record's value and key kept as they came, beside the metadata columns,
//! as Spark's Kafka source gives them before any parsing (a bronze table). Binary keeps every
//! byte; string is the text, and a value or key that is not UTF-8 stops the query naming its
//! offset (a string column cannot hold it unchanged, and Spark's cast would replace the bytes).

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, BinaryBuilder, StringBuilder};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use tributary_crds::{MetadataColumn, RAW_KEY_COLUMN, RAW_VALUE_COLUMN, RawFormat, RawType};

use super::json::{Decoded, metadata_array, metadata_type};
use crate::error::{Error, Result};
use crate::record::{BadRecord, Record};

/// Decodes micro-batches of a raw format.
pub struct RawDecoder {
    key_type: RawType,
    value_type: RawType,
    metadata: Vec<MetadataColumn>,
    table_schema: SchemaRef,
}

fn arrow(raw: RawType) -> ArrowType {
    match raw {
        RawType::Binary => ArrowType::Binary,
        RawType::String => ArrowType::Utf8,
    }
}

impl RawDecoder {
    pub fn new(format: &RawFormat, metadata: &[MetadataColumn]) -> Result<RawDecoder> {
        let mut metadata = metadata.to_vec();
        metadata.sort();
        metadata.dedup();
        // Spark's order: key, value, then the Kafka columns. A tombstone's value and a record
        // without a key are null, as in Spark.
        let mut fields = vec![
            Field::new(RAW_KEY_COLUMN, arrow(format.key_type()), true),
            Field::new(RAW_VALUE_COLUMN, arrow(format.value_type()), true),
        ];
        for column in &metadata {
            let nullable = matches!(
                column,
                MetadataColumn::Key | MetadataColumn::Headers | MetadataColumn::Timestamp
            );
            fields.push(Field::new(
                column.column_name(),
                metadata_type(*column),
                nullable,
            ));
        }
        Ok(RawDecoder {
            key_type: format.key_type(),
            value_type: format.value_type(),
            metadata,
            table_schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn table_schema(&self) -> SchemaRef {
        self.table_schema.clone()
    }

    /// One micro-batch: every record is a row, except (with a string column) those whose
    /// bytes are not UTF-8, which are bad records.
    pub fn decode(&self, records: &[Record]) -> Result<Decoded> {
        let mut bad = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let problem = [
                ("value", self.value_type, record.value.as_deref()),
                ("key", self.key_type, record.key.as_deref()),
            ]
            .into_iter()
            .find_map(|(what, raw, bytes)| not_text(what, raw, bytes));
            match problem {
                Some(reason) => bad.push(BadRecord { index, reason }),
                None => rows.push(index),
            }
        }
        let mut columns: Vec<ArrayRef> = vec![
            column(
                self.key_type,
                rows.iter().map(|&i| records[i].key.as_deref()),
            ),
            column(
                self.value_type,
                rows.iter().map(|&i| records[i].value.as_deref()),
            ),
        ];
        for metadata in &self.metadata {
            columns.push(metadata_array(*metadata, records, &rows));
        }
        let batch = RecordBatch::try_new(self.table_schema.clone(), columns)
            .map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Decoded::whole(batch, 0, bad))
    }
}

/// Why bytes cannot go into a string column, if they cannot.
fn not_text(what: &str, raw: RawType, bytes: Option<&[u8]>) -> Option<String> {
    let bytes = bytes.filter(|_| raw == RawType::String)?;
    let error = std::str::from_utf8(bytes).err()?;
    Some(format!(
        "the {what} is not UTF-8 (invalid byte at position {}), which a string column cannot hold unchanged: set format.raw.{what}Type: binary to keep every byte",
        error.valid_up_to()
    ))
}

/// A key or value column; the rows' bytes are UTF-8 where the type is string.
fn column<'a>(raw: RawType, values: impl Iterator<Item = Option<&'a [u8]>>) -> ArrayRef {
    match raw {
        RawType::Binary => {
            let mut builder = BinaryBuilder::new();
            for value in values {
                builder.append_option(value);
            }
            Arc::new(builder.finish())
        }
        RawType::String => {
            let mut builder = StringBuilder::new();
            for value in values {
                builder.append_option(value.and_then(|v| std::str::from_utf8(v).ok()));
            }
            Arc::new(builder.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};

    fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            timestamp_type: 0,
            key: key.map(bytes::Bytes::copy_from_slice),
            headers: vec![],
            value: value.map(bytes::Bytes::copy_from_slice),
        }
    }

    #[test]
    fn binary_keeps_every_byte_and_string_refuses_what_is_not_utf8() {
        let records = [
            record(0, Some(b"k"), Some(b"{\"a\":1}")),
            record(1, None, None),
            record(2, Some(b"k2"), Some(b"caf\xe9")),
            record(3, Some(b""), Some(b"")),
        ];
        let binary =
            RawDecoder::new(&RawFormat::default(), &[MetadataColumn::Offset]).expect("decoder");
        let decoded = binary.decode(&records).expect("decode");
        assert!(decoded.bad.is_empty());
        let batch = decoded.batch();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["key", "value", "kafka_offset"]);
        let values = batch.column(1).as_binary::<i32>();
        assert_eq!(values.value(2), b"caf\xe9", "every byte kept");
        assert!(values.is_null(1), "a tombstone's value is null");
        assert!(
            values.is_valid(3) && values.value(3).is_empty(),
            "an empty value is empty"
        );
        assert!(batch.column(0).is_null(1), "no key: null");

        let text = RawDecoder::new(
            &RawFormat {
                value_type: Some(RawType::String),
                key_type: Some(RawType::String),
            },
            &[],
        )
        .expect("decoder");
        let decoded = text.decode(&records).expect("decode");
        assert_eq!(decoded.batch().num_rows(), 3);
        assert_eq!(decoded.bad.len(), 1);
        assert_eq!(decoded.bad[0].index, 2);
        assert!(
            decoded.bad[0].reason.contains("valueType: binary"),
            "{}",
            decoded.bad[0].reason
        );
        let values = decoded.batch().column(1).as_string::<i32>();
        assert_eq!(values.value(0), "{\"a\":1}");
    }
}
