//! The transform stage, between decode and sink: `spec.transform.sql` over each decoded batch
//! (`engine`), and for outputMode update the batch's last row per key (`latest`).
//!
//! Rows are followed by their record's position in the batch throughout, so that a row the
//! query fails on is handled by onError like a record that does not decode (named by its
//! offset), and so that "last" means last in offset order. Rows the query filters out simply
//! are not written: their offsets advance with the batch like every other record's.

mod engine;
mod latest;
mod plan;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use tokio::runtime::Handle;
use tributary_crds::{OnError, RESCUED_DATA_COLUMN};

use crate::error::{Error, Result};
use crate::record::{BadRecord, Record, raw_text};
use engine::{Engine, pick};

pub use latest::{DELETE_COLUMN, latest_per_key};
pub use plan::delta_type;

/// `spec.transform.sql`, planned for one ingestion.
pub struct Transform {
    engine: Engine,
    rescue: bool,
    /// The query's columns, then `_rescued_data` (rescue).
    table: SchemaRef,
}

/// A batch after the query.
pub struct Transformed {
    /// Rows in [`Transform::table_schema`].
    pub batch: RecordBatch,
    /// For each row, its record's position in the batch.
    pub records: Vec<usize>,
    /// Records the query failed on (deadLetter and fail modes; in rescue mode they are rows).
    pub failed: Vec<BadRecord>,
    /// Rows whose `_rescued_data` is set.
    pub rescued_rows: usize,
}

impl Transform {
    /// Plans `sql` over the decoder's columns (`decoded`: the decoder's table schema, whose
    /// `_rescued_data`, in rescue mode, is carried beside the query rather than shown to it).
    pub fn new(sql: &str, decoded: &Schema, on_error: OnError, runtime: Handle) -> Result<Self> {
        let rescue = on_error == OnError::Rescue;
        let input = Schema::new(
            decoded
                .fields()
                .iter()
                .filter(|f| f.name() != RESCUED_DATA_COLUMN)
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        );
        let engine = Engine::new(sql, &input, rescue, runtime)?;
        let mut fields: Vec<Field> = engine
            .output()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if rescue {
            fields.push(Field::new(RESCUED_DATA_COLUMN, ArrowType::Utf8, true));
        }
        Ok(Transform {
            engine,
            rescue,
            table: Arc::new(Schema::new(fields)),
        })
    }

    /// The columns the table is written with.
    pub fn table_schema(&self) -> SchemaRef {
        self.table.clone()
    }

    /// Runs the query over `batch` (the decoder's rows; `records[i]` is the position of row
    /// i's record in `all`, the batch's records).
    pub fn apply(
        &self,
        batch: &RecordBatch,
        records: &[usize],
        all: &[Record],
    ) -> Result<Transformed> {
        let schema = batch.schema();
        let mut inputs = Vec::with_capacity(batch.num_columns());
        let mut rescued: Option<ArrayRef> = None;
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            if field.name() == RESCUED_DATA_COLUMN {
                rescued = Some(column.clone());
            } else {
                inputs.push(column.clone());
            }
        }
        let (run, failed) = self.engine.run(inputs, batch.num_rows())?;
        let mut out_records: Vec<usize> = run.from.iter().map(|&row| records[row]).collect();
        let mut columns: Vec<ArrayRef> = run.batch.columns().to_vec();
        let mut bad = Vec::new();
        if self.rescue {
            // The failed rows are kept, as rescue keeps a record that does not decode: every
            // column null, the record's value in _rescued_data.
            let rescued = match rescued {
                Some(rescued) => pick(&rescued, &run.from)?,
                None => new_null_array(&ArrowType::Utf8, run.from.len()),
            };
            let failed_records: Vec<usize> = failed.iter().map(|(row, _)| records[*row]).collect();
            if let Some((_, reason)) = failed.first() {
                tracing::warn!(
                    rows = failed.len(),
                    first_reason = %reason,
                    "spec.transform.sql failed on some records: kept with their value in _rescued_data"
                );
                columns = columns
                    .iter()
                    .map(|column| {
                        concat(&[
                            column.as_ref(),
                            new_null_array(column.data_type(), failed.len()).as_ref(),
                        ])
                    })
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| Error::Transform(e.to_string()))?;
            }
            let raw = StringArray::from_iter_values(
                failed_records
                    .iter()
                    .map(|&i| raw_text(all[i].value.as_deref())),
            );
            let rescued =
                concat(&[rescued.as_ref(), &raw]).map_err(|e| Error::Transform(e.to_string()))?;
            columns.push(rescued);
            out_records.extend(failed_records);
        } else {
            bad = failed
                .into_iter()
                .map(|(row, reason)| BadRecord {
                    index: records[row],
                    reason: format!("spec.transform.sql failed on it: {reason}"),
                })
                .collect();
        }
        let batch = RecordBatch::try_new(self.table.clone(), columns)
            .map_err(|e| Error::Transform(e.to_string()))?;
        let rescued_rows = if self.rescue {
            batch
                .column(batch.num_columns() - 1)
                .len()
                .saturating_sub(batch.column(batch.num_columns() - 1).null_count())
        } else {
            0
        };
        Ok(Transformed {
            batch,
            records: out_records,
            failed: bad,
            rescued_rows,
        })
    }
}

#[cfg(test)]
mod tests;
