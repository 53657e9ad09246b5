//! outputMode update: a batch reduced to its last row per key, in offset order, as Spark users
//! do in foreachBatch before MERGE (a MERGE source may hold a key once).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType as ArrowType, Field, Schema};
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

/// The column of the reduced batch that says a row's key is to be deleted (a tombstone was
/// its last record).
pub const DELETE_COLUMN: &str = "__tributary_delete";

/// The last row of each key among `rows` (upserts) and `tombstones` (deletes), both in the
/// table's schema, each row with its record's position in the batch. Rows whose key has a
/// null are all kept: a MERGE on equality matches no row with them, so each is inserted, as
/// Spark's MERGE does. The result is in record order, with [`DELETE_COLUMN`] last.
pub fn latest_per_key(
    rows: &RecordBatch,
    row_records: &[usize],
    tombstones: &RecordBatch,
    tombstone_records: &[usize],
    keys: &[String],
) -> Result<RecordBatch> {
    let error = |e: datafusion::arrow::error::ArrowError| Error::Transform(e.to_string());
    // A tombstone's data columns are null whatever the schema says of them.
    let schema = Arc::new(Schema::new(
        rows.schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = rows
        .columns()
        .iter()
        .zip(tombstones.columns())
        .map(|(r, t)| concat(&[r.as_ref(), t.as_ref()]))
        .collect::<std::result::Result<_, _>>()
        .map_err(error)?;
    let all = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
    let records: Vec<usize> = row_records
        .iter()
        .chain(tombstone_records)
        .copied()
        .collect();
    let deleted = rows.num_rows();
    let mut key_columns: Vec<ArrayRef> = Vec::with_capacity(keys.len());
    for key in keys {
        let index = schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(key))
            .ok_or_else(|| {
                Error::Transform(format!("the merge key {key} is not a column of the table"))
            })?;
        key_columns.push(all.column(index).clone());
    }
    let converter = RowConverter::new(
        key_columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(error)?;
    let converted = converter.convert_columns(&key_columns).map_err(error)?;
    // Per key: the position (in `all`) of its latest record.
    let mut latest: HashMap<&[u8], usize> = HashMap::new();
    let mut keep: Vec<usize> = Vec::new();
    for position in 0..all.num_rows() {
        if key_columns.iter().any(|c| c.is_null(position)) {
            keep.push(position);
            continue;
        }
        let key = converted.row(position);
        latest
            .entry(key.data())
            .and_modify(|at| {
                if records[position] >= records[*at] {
                    *at = position;
                }
            })
            .or_insert(position);
    }
    keep.extend(latest.into_values());
    keep.sort_by_key(|&position| records[position]);
    let indices = UInt32Array::from_iter_values(keep.iter().map(|&p| p as u32));
    let mut columns: Vec<ArrayRef> = all
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(error)?;
    columns.push(Arc::new(BooleanArray::from_iter(
        keep.iter().map(|&p| Some(p >= deleted)),
    )));
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DELETE_COLUMN, ArrowType::Boolean, false));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(error)
}
