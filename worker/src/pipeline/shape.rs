//! Between decode and commit: `spec.transform.sql` over the decoded rows, and for outputMode
//! update the batch reduced to its last row per key (with the keys its tombstones delete).

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::SchemaRef;
use tokio::runtime::Handle;
use tributary_crds::{OnError, OutputMode, StreamingIngestionSpec};

use crate::decode::{Decoded, Decoder, JsonDecoder, RawDecoder};
use crate::error::{Error, Result};
use crate::record::Record;
use crate::transform::{Transform, delta_type, latest_per_key};

/// What is done to a batch's rows between decoding and the table.
pub(super) struct Shaping {
    transform: Option<Transform>,
    update: Option<Update>,
    /// The columns the table is written with.
    table: SchemaRef,
}

/// outputMode update.
struct Update {
    keys: Vec<String>,
    /// deleteOnTombstone: decodes tombstones into rows of null fields beside their metadata
    /// columns, from which their keys are computed.
    tombstones: Option<Decoder>,
}

impl Shaping {
    pub fn new(
        spec: &StreamingIngestionSpec,
        decoder: &Decoder,
        runtime: &Handle,
    ) -> Result<Shaping> {
        let transform = spec
            .transform
            .as_ref()
            .map(|t| {
                Transform::new(
                    &t.sql,
                    &decoder.table_schema(),
                    decoder.on_error(),
                    runtime.clone(),
                )
            })
            .transpose()?;
        let delta = &spec.sink.delta;
        let update = match delta.output_mode.unwrap_or_default() {
            OutputMode::Append => None,
            OutputMode::Update => {
                let tombstones = if delta.delete_on_tombstone.unwrap_or(false) {
                    let metadata = spec.metadata_columns();
                    // Rescue makes every tombstone a row (null fields beside its metadata
                    // columns); a raw format's tombstone is a row already (a null value).
                    Some(match (&spec.format.json, &spec.format.raw) {
                        (Some(json), _) => {
                            let mut format = json.clone();
                            format.on_error = Some(OnError::Rescue);
                            format.dead_letter = None;
                            Decoder::Json(JsonDecoder::new(&format, &metadata)?)
                        }
                        (None, Some(raw)) => Decoder::Raw(RawDecoder::new(raw, &metadata)?),
                        (None, None) => {
                            return Err(Error::Unsupported(
                                tributary_crds::FORMAT_ONE_OF_MESSAGE.to_string(),
                            ));
                        }
                    })
                } else {
                    None
                };
                Some(Update {
                    keys: delta.merge_keys.clone(),
                    tombstones,
                })
            }
            OutputMode::Complete => {
                return Err(Error::Unsupported(
                    tributary_crds::COMPLETE_REFUSED.to_string(),
                ));
            }
        };
        let table = transform
            .as_ref()
            .map_or_else(|| decoder.table_schema(), Transform::table_schema);
        if transform.is_some() {
            check_query_columns(spec, &table)?;
        }
        Ok(Shaping {
            transform,
            update,
            table,
        })
    }

    /// The columns the table is written with.
    pub fn table_schema(&self) -> SchemaRef {
        self.table.clone()
    }

    /// The merge keys, in update mode.
    pub fn merge_keys(&self) -> Option<&[String]> {
        self.update.as_ref().map(|u| u.keys.as_slice())
    }

    /// The rows to write, and in update mode the rows to MERGE (the last per key, with
    /// [`crate::transform::DELETE_COLUMN`]).
    pub fn apply(
        &self,
        decoded: Decoded,
        records: &[Record],
    ) -> Result<(Decoded, Option<RecordBatch>)> {
        if self.transform.is_none() && self.update.is_none() {
            return Ok((decoded, None));
        }
        // A transform and a MERGE see the batch's rows together.
        let mut batch = decoded.to_batch()?;
        let Decoded {
            mut rescued_rows,
            mut bad,
            ..
        } = decoded;
        // Each row's record: the records that did not become rows are the bad ones.
        let bad_set: HashSet<usize> = bad.iter().map(|b| b.index).collect();
        let mut rows: Vec<usize> = (0..records.len())
            .filter(|i| !bad_set.contains(i))
            .collect();
        let mut deletes = None;
        if let Some(Update {
            tombstones: Some(decoder),
            keys,
        }) = &self.update
        {
            let (tombstones, positions) = self.tombstones(decoder, keys, records)?;
            if !positions.is_empty() {
                // A tombstone that deletes is no longer bad input, nor a rescued row.
                let deleting: HashSet<usize> = positions.iter().copied().collect();
                bad.retain(|b| !deleting.contains(&b.index));
                let keep: BooleanArray = rows.iter().map(|r| Some(!deleting.contains(r))).collect();
                if keep.true_count() < rows.len() {
                    let removed_rescued = rescued_in(&batch, &keep);
                    batch = filter_record_batch(&batch, &keep)
                        .map_err(|e| Error::Transform(e.to_string()))?;
                    rescued_rows = rescued_rows.saturating_sub(removed_rescued);
                    rows.retain(|r| !deleting.contains(r));
                }
            }
            deletes = Some((tombstones, positions));
        }
        if let Some(transform) = &self.transform {
            let out = transform.apply(&batch, &rows, records)?;
            batch = out.batch;
            rows = out.records;
            rescued_rows = out.rescued_rows;
            bad.extend(out.failed);
            bad.sort_by_key(|b| b.index);
        }
        let merge = match &self.update {
            None => None,
            Some(update) => {
                let (tombstones, positions) = match deletes {
                    Some(deletes) => deletes,
                    None => (RecordBatch::new_empty(self.table.clone()), Vec::new()),
                };
                Some(latest_per_key(
                    &batch,
                    &rows,
                    &tombstones,
                    &positions,
                    &update.keys,
                )?)
            }
        };
        Ok((Decoded::whole(batch, rescued_rows, bad), merge))
    }

    /// The batch's tombstones whose keys are known, as rows of the table (null fields, their
    /// metadata columns, the transform's columns of those), with their records' positions. A
    /// tombstone whose key comes out null, or which the transform filters out or fails on,
    /// stays what it is without deleteOnTombstone: bad input.
    fn tombstones(
        &self,
        decoder: &Decoder,
        keys: &[String],
        records: &[Record],
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let positions: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.value.is_none())
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return Ok((RecordBatch::new_empty(self.table.clone()), positions));
        }
        let tombstones: Vec<Record> = positions.iter().map(|&i| records[i].clone()).collect();
        // In rescue mode every record is a row, in order.
        let decoded = decoder.decode(&Arc::new(tombstones))?.to_batch()?;
        let (batch, positions) = match &self.transform {
            Some(transform) => {
                // Rows the query fails on come out with null keys (rescue) or not at all.
                let out = transform.apply(&decoded, &positions, records)?;
                (out.batch, out.records)
            }
            None => (by_name(&decoded, &self.table)?, positions),
        };
        let mut known = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let has_keys = keys.iter().all(|key| {
                batch
                    .schema()
                    .index_of(key)
                    .is_ok_and(|i| !batch.column(i).is_null(row))
            });
            known.push(Some(has_keys));
        }
        let known = BooleanArray::from(known);
        let batch =
            filter_record_batch(&batch, &known).map_err(|e| Error::Transform(e.to_string()))?;
        let positions = positions
            .into_iter()
            .zip(known.iter())
            .filter(|(_, k)| k.unwrap_or(false))
            .map(|(p, _)| p)
            .collect();
        Ok((batch, positions))
    }
}

/// What validation cannot see from the query's text, checked against its plan: that
/// partitionBy and mergeKeys name columns the query writes, of types a partition column or a
/// merge key can have.
fn check_query_columns(spec: &StreamingIngestionSpec, table: &SchemaRef) -> Result<()> {
    let delta = &spec.sink.delta;
    let written = || {
        table
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| *name != tributary_crds::RESCUED_DATA_COLUMN)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let typed = |path: String, column: &str| -> Result<tributary_crds::DataType> {
        let field = table
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(column))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "{path}: \"{column}\" is not a column of spec.transform.sql (it writes {})",
                    written()
                ))
            })?;
        delta_type(field.data_type())
            .map_err(|problem| Error::Transform(format!("column \"{column}\" {problem}")))
    };
    let mut problems = Vec::new();
    for (i, column) in delta.partition_by.iter().enumerate() {
        let path = format!("spec.sink.delta.partitionBy[{i}]");
        match typed(path.clone(), column) {
            Ok(data_type) if !data_type.is_partitionable() => problems.push(format!(
                "{path}: cannot partition by \"{column}\" of type {data_type} (as spec.transform.sql writes it): use a string, integer, decimal, date, timestamp or boolean column"
            )),
            Ok(_) => {}
            Err(error) => problems.push(error.to_string()),
        }
    }
    for (i, key) in delta.merge_keys.iter().enumerate() {
        let path = format!("spec.sink.delta.mergeKeys[{i}]");
        match typed(path.clone(), key) {
            Ok(
                data_type @ (tributary_crds::DataType::Array(_)
                | tributary_crds::DataType::Map(..)
                | tributary_crds::DataType::Struct(_)),
            ) => problems.push(format!(
                "{path}: cannot merge on \"{key}\" of type {data_type} (as spec.transform.sql writes it): use a column of a primitive type"
            )),
            Ok(_) => {}
            Err(error) => problems.push(error.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(problems.join("; ")))
    }
}

/// The rows of `batch` that `keep` drops and whose `_rescued_data` is set.
fn rescued_in(batch: &RecordBatch, keep: &BooleanArray) -> usize {
    let Ok(index) = batch.schema().index_of(tributary_crds::RESCUED_DATA_COLUMN) else {
        return 0;
    };
    let rescued = batch.column(index);
    (0..batch.num_rows())
        .filter(|&row| !keep.value(row) && !rescued.is_null(row))
        .count()
}

/// `batch`'s columns in `schema`'s order, by name (null where it has none; every column
/// nullable, as a tombstone's data columns are null).
fn by_name(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let schema: SchemaRef = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.schema().index_of(field.name()) {
            Ok(i) => batch.column(i).clone(),
            Err(_) => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Transform(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sql: &str, sink: &str) -> StreamingIngestionSpec {
        let text = format!(
            "apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata: {{name: t, namespace: iot}}
spec:
  source: {{kafka: {{bootstrapServers: 127.0.0.1:9092, subscribe: [t]}}}}
  format:
    json:
      schema:
        - {{name: device_id, type: string}}
        - {{name: temperature, type: double}}
  metadataColumns: [offset]
  transform: {{sql: \"{sql}\"}}
  sink:
    delta:
      uri: /lake/t
      volume: {{claimName: lake}}
{sink}
  checkpoint: {{location: /checkpoints/t, volume: {{size: 1Gi}}}}
"
        );
        let mut found = tributary_crds::manifest::load_str(&text, "test").expect("valid");
        found.remove(0).spec
    }

    fn shaping(spec: &StreamingIngestionSpec) -> std::result::Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let decoder = Decoder::new(&spec.format, &spec.metadata_columns()).expect("decoder");
        Shaping::new(spec, &decoder, runtime.handle())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_types_of_computed_partition_and_merge_columns_are_checked_at_start() {
        let sql = "SELECT device_id, temperature * 2 AS doubled, make_array(1) AS tags, \
                   CAST(kafka_offset AS STRING) AS o FROM input";
        assert_eq!(shaping(&spec(sql, "      partitionBy: [o]")), Ok(()));
        let refused = shaping(&spec(sql, "      partitionBy: [doubled]")).expect_err("double");
        assert!(
            refused.contains(
                "spec.sink.delta.partitionBy[0]: cannot partition by \"doubled\" of type double"
            ),
            "{refused}"
        );
        let refused = shaping(&spec(
            sql,
            "      outputMode: update\n      mergeKeys: [device_id, tags]",
        ))
        .expect_err("array");
        assert!(
            refused.contains(
                "spec.sink.delta.mergeKeys[1]: cannot merge on \"tags\" of type array<long>"
            ),
            "{refused}"
        );
        // Columns the text does not name are found by the plan.
        let refused = shaping(&spec(
            "SELECT * EXCLUDE (temperature) FROM input",
            "      partitionBy: [temperature]",
        ))
        .expect_err("excluded");
        assert!(
            refused.contains(
                "spec.sink.delta.partitionBy[0]: \"temperature\" is not a column of spec.transform.sql (it writes device_id, kafka_offset)"
            ),
            "{refused}"
        );
    }
}
