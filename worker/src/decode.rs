//! Decode: Kafka record values (JSON) -> Arrow, against the declared schema, with arrow-json.
//!
//! The fast path feeds every syntactically valid JSON object of the micro-batch to one arrow-json
//! decoder (vectorised; split over threads when the batch is large). Only when that fails does a
//! batch fall back to record-by-record decoding, which finds the bad records and, for `rescue`,
//! the bad fields inside them. Every input record ends up either as a row or as a [`BadRecord`]:
//! nothing is dropped.

use std::collections::BTreeSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Int32Array, Int64Array, ListBuilder, StringArray,
    StringBuilder, StructBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::{concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Field, Fields, Schema, SchemaRef, TimeUnit,
};
use deltalake::arrow::json::ReaderBuilder;
use deltalake::arrow::record_batch::RecordBatch;
use tributary_crds::{DataType, JsonFormat, MetadataColumn, OnError, RESCUED_DATA_COLUMN};

use crate::error::{Error, Result};
use crate::source::Record;

/// Batches at least this large are decoded on several threads.
const PARALLEL_DECODE_MIN_RECORDS: usize = 20_000;

/// The Arrow type of a Spark type. Nested members are nullable, as Spark's are.
pub fn arrow_type(data_type: &DataType) -> ArrowType {
    match data_type {
        DataType::String => ArrowType::Utf8,
        DataType::Boolean => ArrowType::Boolean,
        DataType::Byte => ArrowType::Int8,
        DataType::Short => ArrowType::Int16,
        DataType::Int => ArrowType::Int32,
        DataType::Long => ArrowType::Int64,
        DataType::Float => ArrowType::Float32,
        DataType::Double => ArrowType::Float64,
        DataType::Decimal { precision, scale } => ArrowType::Decimal128(*precision, *scale as i8),
        DataType::Date => ArrowType::Date32,
        DataType::Timestamp => ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::TimestampNtz => ArrowType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Binary => ArrowType::Binary,
        DataType::Array(element) => {
            ArrowType::List(Arc::new(Field::new("element", arrow_type(element), true)))
        }
        DataType::Map(key, value) => ArrowType::Map(
            Arc::new(Field::new(
                "key_value",
                ArrowType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(key), false),
                    Field::new("value", arrow_type(value), true),
                ])),
                false,
            )),
            false,
        ),
        DataType::Struct(fields) => ArrowType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name, arrow_type(&f.data_type), true))
                .collect::<Vec<_>>(),
        )),
    }
}

/// The Arrow type of a Kafka metadata column (Spark's Kafka source types).
pub fn metadata_type(column: MetadataColumn) -> ArrowType {
    match column {
        MetadataColumn::Topic => ArrowType::Utf8,
        MetadataColumn::Partition => ArrowType::Int32,
        MetadataColumn::Offset => ArrowType::Int64,
        MetadataColumn::Timestamp => {
            ArrowType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        MetadataColumn::TimestampType => ArrowType::Int32,
        MetadataColumn::Key => ArrowType::Binary,
        MetadataColumn::Headers => ArrowType::List(Arc::new(Field::new(
            "element",
            ArrowType::Struct(header_fields()),
            true,
        ))),
    }
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", ArrowType::Utf8, true),
        Field::new("value", ArrowType::Binary, true),
    ])
}

/// One declared column, resolved.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    required: bool,
}

/// A record that did not become a row (deadLetter / fail), with why.
#[derive(Clone, Debug)]
pub struct BadRecord {
    pub index: usize,
    pub reason: String,
}

/// The outcome of decoding one micro-batch.
pub struct Decoded {
    /// Rows in the table's schema.
    pub batch: RecordBatch,
    /// Rows whose `_rescued_data` is set (rescue mode).
    pub rescued_rows: usize,
    /// Records that are not in `batch` (deadLetter and fail modes).
    pub bad: Vec<BadRecord>,
}

/// Decodes micro-batches for one ingestion.
pub struct JsonDecoder {
    on_error: OnError,
    columns: Vec<Column>,
    /// What arrow-json decodes into: the declared columns, all nullable (required columns are
    /// checked afterwards so that a missing value becomes a bad record, not a failed batch).
    decode_schema: SchemaRef,
    metadata: Vec<MetadataColumn>,
    /// The table's schema: declared columns, metadata columns, then `_rescued_data` (rescue).
    table_schema: SchemaRef,
}

impl JsonDecoder {
    pub fn new(format: &JsonFormat, metadata: &[MetadataColumn]) -> Result<JsonDecoder> {
        let on_error = format.on_error();
        let mut columns = Vec::new();
        let mut decode_fields = Vec::new();
        let mut table_fields = Vec::new();
        for field in &format.schema {
            let data_type = DataType::parse(&field.data_type)
                .map_err(|e| Error::Schema(format!("field {}: {e}", field.name)))?;
            let required = !field.nullable.unwrap_or(true);
            let arrow = arrow_type(&data_type);
            decode_fields.push(Field::new(&field.name, arrow.clone(), true));
            // In rescue mode a required field that is missing still keeps its row (with the
            // record in _rescued_data), so the column has to be nullable, as Spark's from_json
            // makes every column nullable. The other modes keep nulls out of the table.
            let nullable = !required || on_error == OnError::Rescue;
            table_fields.push(Field::new(&field.name, arrow, nullable));
            columns.push(Column {
                name: field.name.clone(),
                required,
            });
        }
        let mut metadata: Vec<MetadataColumn> = metadata.to_vec();
        metadata.sort();
        metadata.dedup();
        for column in &metadata {
            let nullable = matches!(
                column,
                MetadataColumn::Key | MetadataColumn::Headers | MetadataColumn::Timestamp
            );
            table_fields.push(Field::new(
                column.column_name(),
                metadata_type(*column),
                nullable,
            ));
        }
        if on_error == OnError::Rescue {
            table_fields.push(Field::new(RESCUED_DATA_COLUMN, ArrowType::Utf8, true));
        }
        let names: BTreeSet<&str> = table_fields.iter().map(|f| f.name().as_str()).collect();
        if names.len() != table_fields.len() {
            return Err(Error::Schema(format!(
                "a schema field has the name of a metadata column or of {RESCUED_DATA_COLUMN}"
            )));
        }
        Ok(JsonDecoder {
            on_error,
            columns,
            decode_schema: Arc::new(Schema::new(decode_fields)),
            metadata,
            table_schema: Arc::new(Schema::new(table_fields)),
        })
    }

    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    pub fn table_schema(&self) -> SchemaRef {
        self.table_schema.clone()
    }

    /// Decodes one micro-batch. Records are in the order they were read.
    pub fn decode(&self, records: &[Record]) -> Result<Decoded> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if records.len() < PARALLEL_DECODE_MIN_RECORDS || threads < 2 {
            return self.decode_chunk(records, 0);
        }
        let chunk = records.len().div_ceil(threads);
        let parts: Vec<Result<Decoded>> = std::thread::scope(|scope| {
            let handles: Vec<_> = records
                .chunks(chunk)
                .enumerate()
                .map(|(i, part)| scope.spawn(move || self.decode_chunk(part, i * chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Decode("a decode thread panicked".into())))
                })
                .collect()
        });
        let mut batches = Vec::new();
        let mut rescued_rows = 0;
        let mut bad = Vec::new();
        for part in parts {
            let part = part?;
            batches.push(part.batch);
            rescued_rows += part.rescued_rows;
            bad.extend(part.bad);
        }
        let batch = concat_batches(&self.table_schema, &batches)
            .map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Decoded {
            batch,
            rescued_rows,
            bad,
        })
    }

    /// Decodes a slice of a batch; `base` is the slice's first index in the batch.
    fn decode_chunk(&self, records: &[Record], base: usize) -> Result<Decoded> {
        // Step 1: per record, a cheap syntax check (valid UTF-8, exactly one JSON object).
        let mut texts: Vec<Option<&[u8]>> = Vec::with_capacity(records.len());
        let mut problems: Vec<Option<String>> = vec![None; records.len()];
        for (i, record) in records.iter().enumerate() {
            match check_syntax(record.value.as_deref()) {
                Ok(text) => texts.push(Some(text)),
                Err(reason) => {
                    texts.push(None);
                    problems[i] = Some(reason);
                }
            }
        }
        let rescue = self.on_error == OnError::Rescue;
        // In rescue mode a bad record still becomes a row: all columns null, raw text rescued.
        let mut rescued: Vec<Option<String>> = vec![None; records.len()];
        let mut keep: Vec<bool> = vec![true; records.len()];
        for i in 0..records.len() {
            if problems[i].is_some() {
                if rescue {
                    rescued[i] = Some(raw_text(records[i].value.as_deref()));
                } else {
                    keep[i] = false;
                }
            }
        }
        // Step 2: the vectorised decode of the whole slice.
        let inputs: Vec<&[u8]> = (0..records.len())
            .filter(|&i| keep[i])
            .map(|i| texts[i].unwrap_or(b"{}"))
            .collect();
        let data = match self.decode_many(&inputs, rescue) {
            Ok(batch) => batch,
            Err(_) => {
                // Step 3: record by record, to find which records (and fields) are bad.
                let mut rows = Vec::with_capacity(inputs.len());
                let candidates: Vec<usize> = (0..records.len()).filter(|&i| keep[i]).collect();
                for i in candidates {
                    let text = texts[i].unwrap_or(b"{}");
                    match self.decode_many(&[text], rescue) {
                        Ok(row) => rows.push(row),
                        Err(error) if rescue => {
                            let (row, bad_fields) = self.rescue_fields(text)?;
                            rescued[i] = Some(bad_fields);
                            rows.push(row);
                            let _ = error;
                        }
                        Err(error) => {
                            problems[i] = Some(clean_arrow_error(&error));
                            keep[i] = false;
                        }
                    }
                }
                concat_batches(&self.decode_schema, &rows)
                    .map_err(|e| Error::Decode(e.to_string()))?
            }
        };
        // Step 4: required columns. A null there is bad input, like a type error.
        let kept: Vec<usize> = (0..records.len()).filter(|&i| keep[i]).collect();
        let mut row_ok = vec![true; kept.len()];
        for (c, column) in self.columns.iter().enumerate() {
            if !column.required {
                continue;
            }
            let array = data.column(c);
            if array.null_count() == 0 {
                continue;
            }
            for (row, &i) in kept.iter().enumerate() {
                if array.is_null(row) {
                    let reason = format!(
                        "field \"{}\" is missing or null, but the schema says nullable: false",
                        column.name
                    );
                    if rescue {
                        if rescued[i].is_none() {
                            rescued[i] = Some(raw_text(records[i].value.as_deref()));
                        }
                    } else if problems[i].is_none() {
                        problems[i] = Some(reason);
                        row_ok[row] = false;
                    }
                }
            }
        }
        let data = if row_ok.iter().all(|ok| *ok) {
            data
        } else {
            filter_record_batch(&data, &BooleanArray::from(row_ok.clone()))
                .map_err(|e| Error::Decode(e.to_string()))?
        };
        let rows: Vec<usize> = kept
            .iter()
            .zip(&row_ok)
            .filter(|(_, ok)| **ok)
            .map(|(i, _)| *i)
            .collect();
        // Step 5: the table's columns: data, metadata, rescued.
        let mut columns: Vec<ArrayRef> = data.columns().to_vec();
        for column in &self.metadata {
            columns.push(metadata_array(*column, records, &rows));
        }
        let mut rescued_rows = 0;
        if rescue {
            let values: Vec<Option<&str>> = rows.iter().map(|&i| rescued[i].as_deref()).collect();
            rescued_rows = values.iter().filter(|v| v.is_some()).count();
            columns.push(Arc::new(StringArray::from(values)));
        }
        let batch = RecordBatch::try_new(self.table_schema.clone(), columns)
            .map_err(|e| Error::Decode(e.to_string()))?;
        // In rescue mode every record is a row; otherwise exactly the records with a problem
        // are not.
        let bad = if rescue {
            Vec::new()
        } else {
            problems
                .into_iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.map(|reason| BadRecord {
                        index: base + i,
                        reason,
                    })
                })
                .collect()
        };
        Ok(Decoded {
            batch,
            rescued_rows,
            bad,
        })
    }

    /// One arrow-json pass over several JSON objects.
    fn decode_many(
        &self,
        inputs: &[&[u8]],
        strict: bool,
    ) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
        decode_objects(self.decode_schema.clone(), inputs, strict)
    }

    /// Splits a record that failed as a whole into the fields that decode and the ones that do
    /// not (wrong type, or not in the schema), as Auto Loader's rescued data column does.
    /// Returns the row and the JSON object of the rescued fields.
    fn rescue_fields(&self, text: &[u8]) -> Result<(RecordBatch, String)> {
        let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(text)
        {
            Ok(object) => object,
            Err(_) => {
                let row = self
                    .decode_many(&[b"{}"], true)
                    .map_err(|e| Error::Decode(e.to_string()))?;
                return Ok((row, raw_text(Some(text))));
            }
        };
        let mut good = serde_json::Map::new();
        let mut bad = serde_json::Map::new();
        for (key, value) in object {
            let Ok(index) = self.decode_schema.index_of(&key) else {
                bad.insert(key, value);
                continue;
            };
            let field = Arc::new(Schema::new(vec![self.decode_schema.field(index).clone()]));
            let mut single = serde_json::Map::new();
            single.insert(key.clone(), value.clone());
            let bytes = serde_json::Value::Object(single).to_string();
            if decode_objects(field, &[bytes.as_bytes()], true).is_ok() {
                good.insert(key, value);
            } else {
                bad.insert(key, value);
            }
        }
        let good_text = serde_json::Value::Object(good).to_string();
        let row = match self.decode_many(&[good_text.as_bytes()], true) {
            Ok(row) => row,
            // Fields that decode alone but not together cannot happen with a flat object; keep
            // the row anyway, with everything rescued.
            Err(_) => {
                let row = self
                    .decode_many(&[b"{}"], true)
                    .map_err(|e| Error::Decode(e.to_string()))?;
                return Ok((row, raw_text(Some(text))));
            }
        };
        Ok((row, serde_json::Value::Object(bad).to_string()))
    }
}

/// Decodes JSON objects (each one complete) into one batch; errors if any does not fit.
fn decode_objects(
    schema: SchemaRef,
    inputs: &[&[u8]],
    strict: bool,
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    use deltalake::arrow::error::ArrowError;
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_batch_size(inputs.len().max(1))
        .with_strict_mode(strict)
        .with_coerce_primitive(true)
        .build_decoder()?;
    for input in inputs {
        let consumed = decoder.decode(input)?;
        // A newline ends each value so that a number at the end of one record cannot run
        // into the next one.
        decoder.decode(b"\n")?;
        if consumed != input.len() || decoder.has_partial_record() {
            return Err(ArrowError::JsonError("incomplete JSON value".into()));
        }
    }
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    if batch.num_rows() != inputs.len() {
        return Err(ArrowError::JsonError(format!(
            "expected {} rows, decoded {}",
            inputs.len(),
            batch.num_rows()
        )));
    }
    Ok(batch)
}

/// Checks that a value is UTF-8 holding exactly one JSON object; returns it, or why not.
fn check_syntax(value: Option<&[u8]>) -> Result<&[u8], String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err("the record has no value".to_string());
    };
    if let Err(error) = std::str::from_utf8(value) {
        return Err(format!(
            "the value is not valid UTF-8 (invalid byte at position {})",
            error.valid_up_to()
        ));
    }
    // serde_json validates the whole text (one value, nothing after it) without allocating.
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(value) {
        return Err(format!("the value is not valid JSON: {error}"));
    }
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(value),
        _ => Err("the value is JSON but not an object".to_string()),
    }
}

/// The value as text for `_rescued_data`: UTF-8 as is; other bytes escaped as `\xNN` so that
/// nothing of the input is lost.
pub fn raw_text(value: Option<&[u8]>) -> String {
    let Some(mut bytes) = value else {
        return String::new();
    };
    let mut text = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                text.push_str(valid);
                return text;
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let invalid = error.error_len().unwrap_or(rest.len());
                for byte in &rest[..invalid] {
                    text.push_str(&format!("\\x{byte:02X}"));
                }
                bytes = &rest[invalid..];
            }
        }
    }
}

fn clean_arrow_error(error: &deltalake::arrow::error::ArrowError) -> String {
    error
        .to_string()
        .trim_start_matches("Json error: ")
        .to_string()
}

/// A metadata column for the rows `rows` (indices into `records`).
fn metadata_array(column: MetadataColumn, records: &[Record], rows: &[usize]) -> ArrayRef {
    let each = rows.iter().map(|&i| &records[i]);
    match column {
        MetadataColumn::Topic => Arc::new(StringArray::from_iter_values(each.map(|r| &*r.topic))),
        MetadataColumn::Partition => {
            Arc::new(Int32Array::from_iter_values(each.map(|r| r.partition)))
        }
        MetadataColumn::Offset => Arc::new(Int64Array::from_iter_values(each.map(|r| r.offset))),
        MetadataColumn::Timestamp => Arc::new(
            TimestampMicrosecondArray::from_iter(each.map(|r| r.timestamp_ms.map(|ms| ms * 1000)))
                .with_timezone("UTC"),
        ),
        MetadataColumn::TimestampType => {
            Arc::new(Int32Array::from_iter_values(each.map(|r| r.timestamp_type)))
        }
        MetadataColumn::Key => {
            let mut builder = BinaryBuilder::new();
            for record in each {
                builder.append_option(record.key.as_deref());
            }
            Arc::new(builder.finish())
        }
        MetadataColumn::Headers => {
            let values = StructBuilder::from_fields(header_fields(), 0);
            let mut builder = ListBuilder::new(values).with_field(Arc::new(Field::new(
                "element",
                ArrowType::Struct(header_fields()),
                true,
            )));
            for record in each {
                let entries = builder.values();
                for (key, value) in &record.headers {
                    if let Some(k) = entries.field_builder::<StringBuilder>(0) {
                        k.append_value(key);
                    }
                    if let Some(v) = entries.field_builder::<BinaryBuilder>(1) {
                        v.append_option(value.as_deref());
                    }
                    entries.append(true);
                }
                builder.append(true);
            }
            Arc::new(builder.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Float64Type, Int8Type, Int16Type, TimestampMicrosecondType};
    use tributary_crds::SchemaField;

    fn record(offset: i64, value: &[u8]) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            timestamp_type: 0,
            key: Some(b"k".to_vec()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            value: Some(value.to_vec()),
        }
    }

    fn every_type() -> JsonFormat {
        let field = |name: &str, data_type: &str| SchemaField {
            name: name.into(),
            data_type: data_type.into(),
            ..Default::default()
        };
        JsonFormat {
            schema: vec![
                field("s", "string"),
                field("b", "boolean"),
                field("y", "byte"),
                field("sh", "short"),
                field("i", "int"),
                field("l", "long"),
                field("f", "float"),
                field("d", "double"),
                field("dec", "decimal(10,2)"),
                field("dt", "date"),
                field("ts", "timestamp"),
                field("ntz", "timestamp_ntz"),
                field("bin", "binary"),
                field("arr", "array<int>"),
                field("m", "map<string,double>"),
                field("st", "struct<lat:double,lon:double>"),
            ],
            ..Default::default()
        }
    }

    const FULL: &str = r#"{"s":"x","b":true,"y":-3,"sh":300,"i":7,"l":9000000000,"f":1.5,"d":2.25,"dec":"12.34","dt":"2026-01-02","ts":"2026-01-02T03:04:05Z","ntz":"2026-01-02T03:04:05","bin":"cafe","arr":[1,2],"m":{"a":1.0},"st":{"lat":52.1,"lon":4.3}}"#;

    #[test]
    fn every_spark_type_decodes_into_its_arrow_type_with_metadata_columns() {
        let decoder = JsonDecoder::new(&every_type(), &MetadataColumn::ALL).expect("decoder");
        let decoded = decoder
            .decode(&[record(0, FULL.as_bytes())])
            .expect("decode");
        let batch = decoded.batch;
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(decoded.rescued_rows, 0);
        assert_eq!(
            batch
                .column_by_name("s")
                .expect("s")
                .as_string::<i32>()
                .value(0),
            "x"
        );
        assert_eq!(
            batch
                .column_by_name("y")
                .expect("y")
                .as_primitive::<Int8Type>()
                .value(0),
            -3
        );
        assert_eq!(
            batch
                .column_by_name("sh")
                .expect("sh")
                .as_primitive::<Int16Type>()
                .value(0),
            300
        );
        assert_eq!(
            batch
                .column_by_name("d")
                .expect("d")
                .as_primitive::<Float64Type>()
                .value(0),
            2.25
        );
        assert_eq!(
            batch
                .column_by_name("ts")
                .expect("ts")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_767_323_045_000_000
        );
        assert_eq!(
            batch
                .column_by_name("arr")
                .expect("arr")
                .as_list::<i32>()
                .value(0)
                .len(),
            2
        );
        assert!(batch.column_by_name("st").expect("st").is_valid(0));
        assert_eq!(
            batch
                .column_by_name("kafka_key")
                .expect("key")
                .as_binary::<i32>()
                .value(0),
            b"k"
        );
        assert_eq!(
            batch
                .column_by_name("kafka_headers")
                .expect("headers")
                .as_list::<i32>()
                .value(0)
                .len(),
            1
        );
        assert!(
            batch
                .column_by_name(RESCUED_DATA_COLUMN)
                .expect("rescued")
                .is_null(0)
        );
        // The table schema converts to Delta's types.
        use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
        let kernel: deltalake::kernel::StructType = decoder
            .table_schema()
            .as_ref()
            .try_into_kernel()
            .expect("delta schema");
        assert_eq!(kernel.fields().count(), 16 + 7 + 1);
    }

    #[test]
    fn a_wrong_typed_nested_field_is_rescued_alone() {
        let decoder = JsonDecoder::new(&every_type(), &[]).expect("decoder");
        let bad = FULL.replace(r#""arr":[1,2]"#, r#""arr":["one"]"#);
        let decoded = decoder
            .decode(&[record(0, FULL.as_bytes()), record(1, bad.as_bytes())])
            .expect("decode");
        assert_eq!(decoded.batch.num_rows(), 2);
        let rescued = decoded
            .batch
            .column_by_name(RESCUED_DATA_COLUMN)
            .expect("rescued");
        assert!(rescued.is_null(0));
        assert_eq!(rescued.as_string::<i32>().value(1), r#"{"arr":["one"]}"#);
        assert_eq!(
            decoded
                .batch
                .column_by_name("s")
                .expect("s")
                .as_string::<i32>()
                .value(1),
            "x"
        );
    }

    #[test]
    fn raw_text_escapes_only_invalid_bytes() {
        assert_eq!(raw_text(Some(b"ok \xff\xfe \xc3\xa9")), "ok \\xFF\\xFE é");
        assert_eq!(raw_text(None), "");
    }

    #[test]
    fn an_every_type_table_is_created_and_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let decoder = JsonDecoder::new(&every_type(), &MetadataColumn::ALL).expect("decoder");
        let batch = decoder
            .decode(&[record(0, FULL.as_bytes())])
            .expect("decode")
            .batch;
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let location = dir.path().join("t").display().to_string();
        let outcome = runtime.block_on(async {
            let mut sink = crate::sink::DeltaSink::open_or_create(
                &location,
                Default::default(),
                decoder.table_schema(),
                vec![],
                10,
                None,
                "test",
            )
            .await
            .expect("create");
            sink.commit(
                Some(&batch),
                &[crate::sink::TxnUpdate {
                    app_id: "a".into(),
                    expected: None,
                    version: 1,
                }],
                Default::default(),
            )
            .await
            .expect("commit")
        });
        assert!(
            matches!(
                outcome,
                crate::sink::CommitOutcome::Committed {
                    version: 1,
                    files: 1,
                    retries: 0
                }
            ),
            "{outcome:?}"
        );
        // Moving an offset backwards is refused by the worker, whatever delta-rs accepts.
        let again = runtime.block_on(async {
            let mut sink = crate::sink::DeltaSink::open_or_create(
                &location,
                Default::default(),
                decoder.table_schema(),
                vec![],
                10,
                None,
                "test",
            )
            .await
            .expect("open");
            sink.commit(
                None,
                &[crate::sink::TxnUpdate {
                    app_id: "a".into(),
                    expected: Some(1),
                    version: 0,
                }],
                Default::default(),
            )
            .await
            .expect("commit")
        });
        assert!(
            matches!(again, crate::sink::CommitOutcome::Conflict(_)),
            "{again:?}"
        );
    }
}
