//! Decode: Kafka record values (JSON) -> Arrow, against the declared schema, reading every
//! value as Spark's `from_json` does (PERMISSIVE, session time zone UTC, default options).
//!
//! Each record is parsed into small tokens (`parse`), each top-level field converted by
//! Spark's rules for its type (`convert`, `time`) and pushed into its column (`build`, whose
//! columns take a record's values back when it is refused or rescued whole); large batches
//! are split over threads. Where Spark would read a value as null
//! (it cannot read it) or where this decoder cannot reproduce Spark's value exactly, the field
//! is bad input: rescued into `_rescued_data` (rescue), or the record goes to the dead letters
//! (deadLetter) or stops the query (fail), named by its offset and column. A cell never holds a
//! value Spark would not. Every input record ends up either as a row or as a [`BadRecord`]:
//! nothing is dropped.

mod build;
mod convert;
mod parse;
mod pattern;
mod split;
mod time;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, ListBuilder, StringBuilder, StructBuilder,
    TimestampMicrosecondArray, new_null_array,
};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Field, Fields, Schema, SchemaRef, TimeUnit,
};
use deltalake::arrow::record_batch::RecordBatch;
use tributary_crds::{DataType, JsonFormat, MetadataColumn, OnError, RESCUED_DATA_COLUMN};

use crate::arrow_types::arrow_type;
use crate::error::{Error, Result};
use crate::record::{BadRecord, Record, raw_text};
use parse::{Doc, Member};

/// Batches at least this large are decoded on several threads.
const PARALLEL_DECODE_MIN_RECORDS: usize = 20_000;

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
    data_type: DataType,
    arrow: ArrowType,
    required: bool,
}

/// The outcome of decoding one micro-batch.
pub struct Decoded {
    /// Rows in the table's schema, in the records' order: one Arrow batch, or the parts a large
    /// micro-batch was decoded in (written one after the other, not copied into one). Never
    /// empty.
    pub parts: Vec<RecordBatch>,
    /// Rows whose `_rescued_data` is set (rescue mode).
    pub rescued_rows: usize,
    /// Records that are not among the rows (deadLetter and fail modes).
    pub bad: Vec<BadRecord>,
}

impl Decoded {
    /// A micro-batch decoded as one Arrow batch.
    pub fn whole(batch: RecordBatch, rescued_rows: usize, bad: Vec<BadRecord>) -> Decoded {
        Decoded {
            parts: vec![batch],
            rescued_rows,
            bad,
        }
    }

    pub fn num_rows(&self) -> usize {
        self.parts.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows as one Arrow batch (a copy of them when there are several parts), for what
    /// needs them together: a transform, a MERGE.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        match self.parts.as_slice() {
            [one] => Ok(one.clone()),
            parts => {
                let schema = parts.first().map(RecordBatch::schema).ok_or_else(|| {
                    Error::Decode("internal: a decoded batch without rows or schema".into())
                })?;
                concat_batches(&schema, parts).map_err(|e| Error::Decode(e.to_string()))
            }
        }
    }
}

/// Decodes micro-batches for one ingestion: small ones on the calling thread, large ones in
/// parts beside it (`split`).
pub struct JsonDecoder {
    reader: Arc<RecordReader>,
    split: split::Split,
}

/// How one ingestion's records are read: the declared columns, the metadata columns and the
/// error mode. Shared with the threads that decode parts of large batches.
struct RecordReader {
    on_error: OnError,
    columns: Vec<Column>,
    /// Column index by field name (names match exactly, as in Spark's parser).
    by_name: HashMap<String, usize>,
    metadata: Vec<MetadataColumn>,
    /// The table's schema: declared columns, metadata columns, then `_rescued_data` (rescue).
    table_schema: SchemaRef,
    /// How dates and timestamps are read (dateFormat, timestampFormat, timeZone).
    formats: time::Formats,
    /// Per declared column, the bytes per value its string or binary values took in the last
    /// part decoded: the next part's builder starts that large instead of growing by copies
    /// into fresh pages. Updated by whichever thread decoded last; only a size hint.
    value_bytes: Vec<AtomicUsize>,
}

/// What became of one record (its fields' values are in the column sinks).
struct Outcome {
    /// What goes into `_rescued_data` (rescue mode).
    rescued: Option<String>,
    /// Why the record is bad (every mode; in rescue mode it is still a row).
    problem: Option<String>,
    /// The record's fields are not read (a tombstone, or a record rescued or refused whole):
    /// if it is a row, its data columns are all null.
    unread: bool,
}

impl JsonDecoder {
    pub fn new(format: &JsonFormat, metadata: &[MetadataColumn]) -> Result<JsonDecoder> {
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(JsonDecoder {
            reader: Arc::new(RecordReader::new(format, metadata)?),
            split: split::Split::new(parts),
        })
    }

    pub fn on_error(&self) -> OnError {
        self.reader.on_error
    }

    pub fn table_schema(&self) -> SchemaRef {
        self.reader.table_schema.clone()
    }

    /// Decodes one micro-batch on the calling thread. Records are in the order they were
    /// read.
    pub fn decode(&self, records: &[Record]) -> Result<Decoded> {
        self.reader.decode_chunk(records, 0)
    }

    /// Decodes one micro-batch, a large one in parts on several threads (the records are
    /// shared with them). Records are in the order they were read.
    pub fn decode_shared(&self, records: &Arc<Vec<Record>>) -> Result<Decoded> {
        if records.len() < PARALLEL_DECODE_MIN_RECORDS {
            return self.decode(records);
        }
        let decoded = self.split.decode(&self.reader, records)?;
        let mut parts = Vec::with_capacity(decoded.len());
        let mut rescued_rows = 0;
        let mut bad = Vec::new();
        for part in decoded {
            parts.extend(part.parts);
            rescued_rows += part.rescued_rows;
            bad.extend(part.bad);
        }
        if parts.is_empty() {
            parts.push(RecordBatch::new_empty(self.reader.table_schema.clone()));
        }
        Ok(Decoded {
            parts,
            rescued_rows,
            bad,
        })
    }
}

#[cfg(test)]
impl Decoded {
    /// The rows of a batch decoded whole.
    pub(crate) fn batch(&self) -> &RecordBatch {
        assert_eq!(self.parts.len(), 1, "decoded whole");
        &self.parts[0]
    }
}

impl RecordReader {
    fn new(format: &JsonFormat, metadata: &[MetadataColumn]) -> Result<RecordReader> {
        let on_error = format.on_error();
        let mut columns = Vec::new();
        let mut table_fields = Vec::new();
        for field in &format.schema {
            let data_type = DataType::parse(&field.data_type)
                .map_err(|e| Error::Schema(format!("field {}: {e}", field.name)))?;
            let required = !field.nullable.unwrap_or(true);
            let arrow = arrow_type(&data_type);
            // In rescue mode a required field that is missing still keeps its row (with the
            // record in _rescued_data), so the column has to be nullable, as Spark's from_json
            // makes every column nullable. The other modes keep nulls out of the table.
            let nullable = !required || on_error == OnError::Rescue;
            table_fields.push(Field::new(&field.name, arrow.clone(), nullable));
            columns.push(Column {
                name: field.name.clone(),
                data_type,
                arrow,
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
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Ok(RecordReader {
            on_error,
            value_bytes: columns
                .iter()
                .map(|_| AtomicUsize::new(build::DEFAULT_VALUE_BYTES))
                .collect(),
            columns,
            by_name,
            metadata,
            table_schema: Arc::new(Schema::new(table_fields)),
            formats: time::Formats::of(format).map_err(Error::Unsupported)?,
        })
    }

    /// Decodes a slice of a batch; `base` is the slice's first index in the batch.
    fn decode_chunk(&self, records: &[Record], base: usize) -> Result<Decoded> {
        let rescue = self.on_error == OnError::Rescue;
        let mut sinks = self
            .columns
            .iter()
            .zip(&self.value_bytes)
            .map(|(c, hint)| {
                build::ColumnSink::new(&c.arrow, records.len(), hint.load(Ordering::Relaxed))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rows = Vec::with_capacity(records.len());
        // Most rows rescue nothing: the rescued texts with their rows, the column built once
        // the chunk is read (all null, without a value appended per row, when there are none).
        let mut rescued: Vec<(usize, String)> = Vec::new();
        let mut bad = Vec::new();
        // Reused from record to record: one allocation per chunk, not per record.
        let mut doc = Doc::default();
        for (i, record) in records.iter().enumerate() {
            let row = rows.len();
            let outcome =
                self.decode_record(record.value.as_deref(), rescue, &mut sinks, row, &mut doc)?;
            if !rescue && let Some(reason) = outcome.problem {
                sinks.iter_mut().for_each(|sink| sink.truncate(row));
                bad.push(BadRecord {
                    index: base + i,
                    reason,
                });
                continue;
            }
            // The row's cells: nulls where the record gave none (or none that counts).
            for sink in &mut sinks {
                if outcome.unread {
                    sink.truncate(row);
                }
                if sink.len() == row {
                    sink.push_null();
                }
            }
            // Some only in rescue mode (decode_record and tombstone keep it None otherwise).
            if let Some(text) = outcome.rescued {
                rescued.push((row, text));
            }
            rows.push(i);
        }
        // The table's columns: data, metadata, rescued.
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.table_schema.fields().len());
        for ((sink, hint), column) in sinks.into_iter().zip(&self.value_bytes).zip(&self.columns) {
            if let Some(bytes) = sink.value_bytes() {
                hint.store(bytes_per_value(bytes, rows.len()), Ordering::Relaxed);
            }
            columns.push(sink.finish().map_err(in_column(&column.name))?);
        }
        for column in &self.metadata {
            columns.push(metadata_array(*column, records, &rows));
        }
        let rescued_rows = rescued.len();
        if rescue {
            columns.push(rescued_column(rescued, rows.len()));
        }
        let batch = RecordBatch::try_new(self.table_schema.clone(), columns)
            .map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Decoded::whole(batch, rescued_rows, bad))
    }

    /// The column a top-level name belongs to (names match exactly, as in Spark's parser);
    /// `position` is the member's place in its object.
    fn column_index(&self, name: &str, position: usize) -> Option<usize> {
        // Producers usually write the fields in the schema's order: try that column first.
        let same = |column: &Column| same_name(column.name.as_bytes(), name.as_bytes());
        if self.columns.get(position).is_some_and(same) {
            return Some(position);
        }
        // A short scan beats hashing for the usual handful of columns.
        if self.columns.len() <= 16 {
            return self.columns.iter().position(same);
        }
        self.by_name.get(name).copied()
    }

    /// A tombstone (a record with no value, as a compacted topic's deletes are): Spark's
    /// `from_json(null)` is a null struct, not a corrupt record, so it is a row whose data
    /// columns are all null, with `_rescued_data` null (there is no text to keep), in every
    /// mode. Only a `nullable: false` field keeps it out of a fail or deadLetter table (whose
    /// column cannot hold the null); a rescue table's columns are all nullable.
    fn tombstone(&self, rescue: bool) -> Outcome {
        let required = self.columns.iter().find(|c| c.required).filter(|_| !rescue);
        Outcome {
            rescued: None,
            unread: true,
            problem: required.map(|column| {
                format!(
                    "the record is a tombstone (no value), so field \"{}\" is null, but the schema says nullable: false",
                    column.name
                )
            }),
        }
    }

    /// Reads one record's value, its fields' values pushed onto `sinks` (which hold `row`
    /// rows before it; the caller takes them back if the outcome says so, and pads the
    /// fields the record did not give with nulls). In rescue mode fields that do not read
    /// are rescued (with the fields not in the schema, as Auto Loader's rescued data column
    /// does); a value that is not one JSON object, or whose required field is missing, is
    /// rescued whole. In the other modes fields not in the schema are ignored, as Spark
    /// ignores them.
    fn decode_record<'a>(
        &self,
        value: Option<&'a [u8]>,
        rescue: bool,
        sinks: &mut [build::ColumnSink<'a>],
        row: usize,
        doc: &mut Doc<'a>,
    ) -> Result<Outcome> {
        if value.is_none() {
            return Ok(self.tombstone(rescue));
        }
        let whole = |problem: String| Outcome {
            rescued: rescue.then(|| raw_text(value)),
            problem: Some(problem),
            unread: true,
        };
        if let Err(problem) = read_object(value, doc) {
            return Ok(whole(problem));
        }
        let doc = &*doc;
        let members = doc.top_members();
        let mut problems: Vec<String> = Vec::new();
        let mut rescued_members: Vec<&Member> = Vec::new();
        let refuse_duplicate = |problem: String| {
            whole(format!(
                "{problem} (Spark keeps the last one; the record is refused rather than losing \
                 a value silently)"
            ))
        };
        // The columns (below 64) already met in this object: a name given twice is usually
        // found with one bit per member. Names not in the schema (or past the 64th column) are
        // checked with the others once the object is read.
        let mut seen = 0u64;
        let mut unchecked = false;
        for (position, member) in members.iter().enumerate() {
            let name = doc.str(member.key);
            let index = self.column_index(name, position);
            match index {
                Some(index) if index < 64 => {
                    let bit = 1u64 << index;
                    if seen & bit != 0 {
                        return Ok(refuse_duplicate(convert::appears_twice(name)));
                    }
                    seen |= bit;
                }
                _ => unchecked = true,
            }
            let Some(index) = index else {
                if rescue {
                    rescued_members.push(member);
                }
                continue;
            };
            let column = &self.columns[index];
            // Matched in place: moving the converted cell out into a binding of its own copied
            // bytes just written, a stall (see build.rs).
            let mut converted =
                convert::convert(&column.data_type, member.value, doc, &self.formats);
            match &mut converted {
                Ok(cell) => sinks[index].push(cell).map_err(in_column(&column.name))?,
                Err(why) => {
                    problems.push(format!(
                        "column \"{}\" ({}): {why}",
                        column.name, column.data_type
                    ));
                    rescued_members.push(member);
                }
            }
        }
        if unchecked && let Err(problem) = convert::no_duplicates(members, doc) {
            return Ok(refuse_duplicate(problem));
        }
        // A required column is null when the record gave it no value, or null.
        let is_null = |index: usize| sinks[index].len() == row || sinks[index].is_null(row);
        if let Some(column) = self
            .columns
            .iter()
            .enumerate()
            .find(|(index, c)| c.required && is_null(*index))
            .map(|(_, c)| c)
            .filter(|_| problems.is_empty())
        {
            let problem = format!(
                "field \"{}\" is missing or null, but the schema says nullable: false",
                column.name
            );
            if rescued_members.is_empty() {
                return Ok(Outcome {
                    rescued: rescue.then(|| raw_text(value)),
                    problem: Some(problem),
                    unread: false,
                });
            }
            problems.push(problem);
        }
        let rescued = (rescue && !rescued_members.is_empty()).then(|| {
            let mut text = String::from("{");
            for (i, member) in rescued_members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(
                    &serde_json::to_string(doc.str(member.key)).unwrap_or_else(|_| "\"\"".into()),
                );
                text.push(':');
                text.push_str(doc.slice(member.raw));
            }
            text.push('}');
            text
        });
        Ok(Outcome {
            rescued,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
            unread: false,
        })
    }
}

/// The `_rescued_data` column of `rows` rows, of which those in `rescued` (in row order) hold
/// a text and the others null.
fn rescued_column(rescued: Vec<(usize, String)>, rows: usize) -> ArrayRef {
    if rescued.is_empty() {
        return new_null_array(&ArrowType::Utf8, rows);
    }
    let bytes = rescued.iter().map(|(_, text)| text.len()).sum();
    let mut column = StringBuilder::with_capacity(rows, bytes);
    let mut next = 0;
    for (row, text) in rescued {
        column.append_nulls(row - next);
        column.append_value(text);
        next = row + 1;
    }
    column.append_nulls(rows - next);
    Arc::new(column.finish())
}

/// Whether two names are the same bytes. Every member of every record is matched against a
/// column name, a handful of bytes each: comparing them in registers, eight bytes at a time
/// (the last word overlapping the first when the name is shorter than sixteen), keeps a
/// library call per member out of the decoder's loop, where it was 2 % of the worker's time.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    fn word(bytes: &[u8], at: usize) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    }
    fn half(bytes: &[u8], at: usize) -> u32 {
        let mut half = [0; 4];
        half.copy_from_slice(&bytes[at..at + 4]);
        u32::from_ne_bytes(half)
    }
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        4..8 => half(a, 0) == half(b, 0) && half(a, len - 4) == half(b, len - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
        _ => a == b,
    }
}

/// Reads a value that is one JSON object into `doc`, or says why it is not one.
fn read_object<'a>(value: Option<&'a [u8]>, doc: &mut Doc<'a>) -> std::result::Result<(), String> {
    let Some(value) = value else {
        return Err("the record is a tombstone (no value)".to_string());
    };
    if value.is_empty() {
        return Err(
            "the value is empty (0 bytes), which is not JSON (Spark's from_json reads it as null)"
                .to_string(),
        );
    }
    // The fast check says only whether the text is valid; std's says where it is not.
    let text = simdutf8::basic::from_utf8(value).map_err(|_| {
        let valid_up_to = std::str::from_utf8(value)
            .err()
            .map_or(0, |error| error.valid_up_to());
        format!(
            "the value is not valid UTF-8 (invalid byte at position {valid_up_to}; Spark would \
             read it with U+FFFD in place of the bytes)"
        )
    })?;
    match doc.parse(text)? {
        parse::TopLevel::Object => Ok(()),
        parse::TopLevel::Other(other) => Err(format!(
            "the value is JSON but {} rather than an object (Spark's from_json reads it as \
             null)",
            doc.kind(other)
        )),
    }
}

/// Puts the column's name in an error of building it (a limit of Arrow's arrays, which hold a
/// column of a micro-batch), so that the message says which field to look at.
fn in_column(column: &str) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::Decode(why) => Error::Decode(format!("column \"{column}\": {why}")),
        other => other,
    }
}

/// The size hint for a column whose `bytes` of values made `rows` rows: an eighth more than
/// seen, so that a part a little larger than the last still fits.
fn bytes_per_value(bytes: usize, rows: usize) -> usize {
    if rows == 0 {
        return build::DEFAULT_VALUE_BYTES;
    }
    let per_row = bytes.div_ceil(rows);
    per_row + per_row / 8 + 1
}

/// A metadata column for the rows `rows` (indices into `records`).
pub(super) fn metadata_array(
    column: MetadataColumn,
    records: &[Record],
    rows: &[usize],
) -> ArrayRef {
    let each = rows.iter().map(|&i| &records[i]);
    match column {
        MetadataColumn::Topic => {
            // Sized up front: a builder grown by doubling copies the column into fresh pages.
            let bytes = rows.iter().map(|&i| records[i].topic.len()).sum();
            let mut builder = StringBuilder::with_capacity(rows.len(), bytes);
            for record in each {
                builder.append_value(&*record.topic);
            }
            Arc::new(builder.finish())
        }
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
mod differential;
#[cfg(test)]
mod tests;
