//! Runs `spec.transform.sql` on one decoded batch with DataFusion.
//!
//! The query is planned once, against `input` with one more column, the row's position in its
//! batch, which the plan is rewritten to carry through every projection. Each batch then swaps
//! its rows in as the scanned table and runs the plan: the carried positions say which input
//! row each output row came from (so its offset, its `_rescued_data`, its record), and which
//! rows the query filtered out.
//!
//! When DataFusion fails the whole batch (a cast that fails on one value), the batch is run
//! again in halves until the failing rows are alone; only those follow onError. A batch that
//! runs pays nothing for this.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType as ArrowType, Field, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::catalog::default_table_source::provider_as_source;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::prelude::SessionContext;
use tokio::runtime::Handle;
use tributary_crds::transform::TransformError;

use super::plan::{check_per_row, plan, session, table_columns};
use crate::arrow_types::arrow_type;

use crate::error::{Error, Result};

/// The column that carries each row's position in its batch through the query.
pub(super) const ROW_COLUMN: &str = "__tributary_row";

/// A query, planned for one ingestion's input columns.
pub(super) struct Engine {
    ctx: SessionContext,
    /// The plan, carrying [`ROW_COLUMN`]; its scan's rows are replaced for each batch.
    plan: LogicalPlan,
    /// `input`'s columns with [`ROW_COLUMN`] last.
    input: SchemaRef,
    /// The query's columns as the table holds them (every one nullable, as the tables the
    /// worker creates are).
    output: SchemaRef,
    runtime: Handle,
}

/// One run of the query over some rows.
pub(super) struct Run {
    /// Rows in [`Engine::output`]'s schema.
    pub batch: RecordBatch,
    /// For each output row, its input row's position.
    pub from: Vec<usize>,
}

impl Engine {
    /// Plans `sql` over `input` (the decoded columns, without `_rescued_data`).
    pub fn new(sql: &str, input: &Schema, rescue: bool, runtime: Handle) -> Result<Engine> {
        // Nullable whatever the decoder says: a tombstone's fields are null in every mode.
        let mut fields: Vec<Field> = input
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        fields.push(Field::new(ROW_COLUMN, ArrowType::UInt32, false));
        let input = Arc::new(Schema::new(fields));
        let ctx = session();
        let planned = runtime
            .block_on(plan(&ctx, sql, input.clone()))
            .map_err(transform_error)?;
        let plan = carry_row(planned)
            .map_err(|e| Error::Transform(format!("cannot carry row positions: {e}")))?;
        check_per_row(&plan).map_err(transform_error)?;
        let written = Schema::new(
            plan.schema()
                .fields()
                .iter()
                .filter(|f| f.name() != ROW_COLUMN)
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        );
        let columns = table_columns(&written, rescue).map_err(transform_error)?;
        let output = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(name, data_type)| Field::new(name, arrow_type(data_type), true))
                .collect::<Vec<_>>(),
        ));
        Ok(Engine {
            ctx,
            plan,
            input,
            output,
            runtime,
        })
    }

    pub fn output(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Runs the query on `columns` (in `input`'s order, without the row column). Rows that
    /// fail it are returned by position with DataFusion's message; the others run.
    pub fn run(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<(Run, Vec<(usize, String)>)> {
        let mut columns = columns;
        let positions = UInt32Array::from_iter_values(0..rows as u32);
        columns.push(Arc::new(positions));
        let batch = RecordBatch::try_new(self.input.clone(), columns)
            .map_err(|e| Error::Transform(format!("cannot build the table input: {e}")))?;
        let mut runs = Vec::new();
        let mut failed = Vec::new();
        self.run_or_split(batch, &mut runs, &mut failed)?;
        let batch = concat_batches(&self.output, runs.iter().map(|r| &r.batch))
            .map_err(|e| Error::Transform(e.to_string()))?;
        let from = runs.into_iter().flat_map(|r| r.from).collect();
        failed.sort_by_key(|(row, _)| *row);
        Ok((Run { batch, from }, failed))
    }

    /// Runs `batch`; when DataFusion refuses it for its values, runs its halves, down to single
    /// rows, which are then the failing ones.
    fn run_or_split(
        &self,
        batch: RecordBatch,
        runs: &mut Vec<Run>,
        failed: &mut Vec<(usize, String)>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.execute(&batch) {
            Ok(run) => {
                runs.push(run);
                Ok(())
            }
            Err(error) if !about_values(&error) => Err(Error::Transform(format!(
                "DataFusion failed: {}",
                error.strip_backtrace()
            ))),
            Err(error) if batch.num_rows() == 1 => {
                let position = batch
                    .column(batch.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .map_or(0, |a| a.value(0) as usize);
                failed.push((position, error.strip_backtrace()));
                Ok(())
            }
            Err(_) => {
                let half = batch.num_rows() / 2;
                self.run_or_split(batch.slice(0, half), runs, failed)?;
                self.run_or_split(batch.slice(half, batch.num_rows() - half), runs, failed)
            }
        }
    }

    /// One execution of the plan over `batch` (with the row column).
    fn execute(&self, batch: &RecordBatch) -> Result<Run, DataFusionError> {
        let table = MemTable::try_new(self.input.clone(), vec![vec![batch.clone()]])?;
        let source = provider_as_source(Arc::new(table));
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::TableScan(mut scan) => {
                    scan.source = source.clone();
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let batches = self
            .runtime
            .block_on(async { self.ctx.execute_logical_plan(plan).await?.collect().await })?;
        let schema = match batches.first() {
            Some(first) => first.schema(),
            None => {
                return Ok(Run {
                    batch: RecordBatch::new_empty(self.output.clone()),
                    from: Vec::new(),
                });
            }
        };
        let all = concat_batches(&schema, &batches)?;
        let mut from = Vec::with_capacity(all.num_rows());
        let mut columns = Vec::with_capacity(self.output.fields().len());
        let mut written = self.output.fields().iter();
        for (field, column) in schema.fields().iter().zip(all.columns()) {
            if field.name() == ROW_COLUMN {
                let positions = column
                    .as_any()
                    .downcast_ref::<UInt32Array>()
                    .ok_or_else(|| {
                        DataFusionError::Internal("the row positions changed type".into())
                    })?;
                from.extend(positions.values().iter().map(|p| *p as usize));
                continue;
            }
            let Some(target) = written.next() else {
                return Err(DataFusionError::Internal(
                    "the query wrote more columns than it was planned with".into(),
                ));
            };
            // The table's types: string views as strings, timestamps in microseconds, ...
            columns.push(cast(column, target.data_type())?);
        }
        let batch = RecordBatch::try_new(self.output.clone(), columns)?;
        Ok(Run { batch, from })
    }
}

/// Whether an error is about the rows' values (a failed cast, a division by zero), as opposed
/// to the engine itself (memory, I/O, a bug), which no row is to blame for.
fn about_values(error: &DataFusionError) -> bool {
    match error {
        DataFusionError::ResourcesExhausted(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::Internal(_)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..) => false,
        DataFusionError::Context(_, inner) => about_values(inner),
        DataFusionError::Diagnostic(_, inner) => about_values(inner),
        DataFusionError::Shared(inner) => about_values(inner),
        _ => true,
    }
}

fn transform_error(error: TransformError) -> Error {
    Error::Transform(error.0)
}

/// Rewrites a per-row plan so that every projection also passes [`ROW_COLUMN`] on: the plan
/// holds only projections, filters, aliases and the scan, and only projections drop columns.
fn carry_row(plan: LogicalPlan) -> Result<LogicalPlan, DataFusionError> {
    Ok(plan
        .transform_up(|node| match node {
            LogicalPlan::Projection(projection) => {
                let carried = projection
                    .schema
                    .fields()
                    .iter()
                    .any(|f| f.name() == ROW_COLUMN);
                if carried {
                    return Ok(Transformed::no(LogicalPlan::Projection(projection)));
                }
                let qualifier = projection
                    .input
                    .schema()
                    .iter()
                    .find(|(_, field)| field.name() == ROW_COLUMN)
                    .map(|(qualifier, _)| qualifier.cloned())
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!("{ROW_COLUMN} is missing under a projection"))
                    })?;
                let mut exprs = projection.expr.clone();
                exprs.push(Expr::Column(Column::new(qualifier, ROW_COLUMN)));
                Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(exprs, projection.input.clone())?,
                )))
            }
            LogicalPlan::TableScan(scan) => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            other => Ok(Transformed::yes(other.recompute_schema()?)),
        })?
        .data)
}

/// The rows of `array` at `positions`.
pub(super) fn pick(array: &ArrayRef, positions: &[usize]) -> Result<ArrayRef> {
    let indices = UInt32Array::from_iter_values(positions.iter().map(|p| *p as u32));
    take(array.as_ref(), &indices, None).map_err(|e| Error::Transform(e.to_string()))
}
