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
use crate::record::{BadRecord, Record, raw_text};

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
        let rescue = self.on_error == OnError::Rescue;
        let mut chunk = Chunk::check_syntax(records, rescue);
        let data = self.decode_kept(&mut chunk, rescue)?;
        let (data, rows) = self.check_required(records, &mut chunk, data, rescue)?;
        // The table's columns: data, metadata, rescued.
        let mut columns: Vec<ArrayRef> = data.columns().to_vec();
        for column in &self.metadata {
            columns.push(metadata_array(*column, records, &rows));
        }
        let mut rescued_rows = 0;
        if rescue {
            let values: Vec<Option<&str>> =
                rows.iter().map(|&i| chunk.rescued[i].as_deref()).collect();
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
            chunk
                .problems
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

    /// The vectorised decode of the records still kept; when it fails, record by record, to
    /// find which records (and, in rescue mode, which fields) are bad.
    fn decode_kept(&self, chunk: &mut Chunk<'_>, rescue: bool) -> Result<RecordBatch> {
        let kept = chunk.kept();
        let inputs: Vec<&[u8]> = kept
            .iter()
            .map(|&i| chunk.texts[i].unwrap_or(b"{}"))
            .collect();
        if let Ok(batch) = self.decode_many(&inputs, rescue) {
            return Ok(batch);
        }
        let mut rows = Vec::with_capacity(inputs.len());
        for i in kept {
            let text = chunk.texts[i].unwrap_or(b"{}");
            match self.decode_many(&[text], rescue) {
                Ok(row) => rows.push(row),
                Err(_) if rescue => {
                    let (row, bad_fields) = self.rescue_fields(text)?;
                    chunk.rescued[i] = Some(bad_fields);
                    rows.push(row);
                }
                Err(error) => {
                    chunk.problems[i] = Some(clean_arrow_error(&error));
                    chunk.keep[i] = false;
                }
            }
        }
        concat_batches(&self.decode_schema, &rows).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Required columns: a null there is bad input, like a type error (rescued whole in rescue
    /// mode). Returns the rows that stay and, for each, its record's index in the chunk.
    fn check_required(
        &self,
        records: &[Record],
        chunk: &mut Chunk<'_>,
        data: RecordBatch,
        rescue: bool,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let kept = chunk.kept();
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
                if !array.is_null(row) {
                    continue;
                }
                if rescue {
                    if chunk.rescued[i].is_none() {
                        chunk.rescued[i] = Some(raw_text(records[i].value.as_deref()));
                    }
                } else if chunk.problems[i].is_none() {
                    chunk.problems[i] = Some(format!(
                        "field \"{}\" is missing or null, but the schema says nullable: false",
                        column.name
                    ));
                    row_ok[row] = false;
                }
            }
        }
        let data = if row_ok.iter().all(|ok| *ok) {
            data
        } else {
            filter_record_batch(&data, &BooleanArray::from(row_ok.clone()))
                .map_err(|e| Error::Decode(e.to_string()))?
        };
        let rows = kept
            .iter()
            .zip(&row_ok)
            .filter(|(_, ok)| **ok)
            .map(|(i, _)| *i)
            .collect();
        Ok((data, rows))
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

/// What decoding has found so far about each record of a chunk.
struct Chunk<'a> {
    /// The value, when it is one syntactically valid JSON object.
    texts: Vec<Option<&'a [u8]>>,
    /// Why the record does not become a row (deadLetter and fail modes).
    problems: Vec<Option<String>>,
    /// What goes into `_rescued_data` (rescue mode).
    rescued: Vec<Option<String>>,
    /// Whether the record is still decoded into a row.
    keep: Vec<bool>,
}

impl<'a> Chunk<'a> {
    /// A cheap check per record (valid UTF-8, exactly one JSON object). In rescue mode a bad
    /// record still becomes a row: all columns null, its raw text rescued.
    fn check_syntax(records: &'a [Record], rescue: bool) -> Chunk<'a> {
        let mut chunk = Chunk {
            texts: Vec::with_capacity(records.len()),
            problems: vec![None; records.len()],
            rescued: vec![None; records.len()],
            keep: vec![true; records.len()],
        };
        for (i, record) in records.iter().enumerate() {
            match check_syntax(record.value.as_deref()) {
                Ok(text) => chunk.texts.push(Some(text)),
                Err(reason) => {
                    chunk.texts.push(None);
                    if rescue {
                        chunk.rescued[i] = Some(raw_text(record.value.as_deref()));
                    } else {
                        chunk.keep[i] = false;
                    }
                    chunk.problems[i] = Some(reason);
                }
            }
        }
        chunk
    }

    /// The indexes of the records still kept.
    fn kept(&self) -> Vec<usize> {
        (0..self.keep.len()).filter(|&i| self.keep[i]).collect()
    }
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
mod tests;
