//! `spec.transform.sql`: one SQL query over each decoded micro-batch, planned by Apache
//! DataFusion. Shared by validation (the worker's and the operator's: refuse a query that is not
//! per-row, and learn the columns it writes) and the worker's engine (which runs it).
//!
//! A transform runs on one micro-batch at a time, so only queries whose every output row comes
//! from one input row are accepted: projections, renames, casts, `WHERE`, `CASE`, scalar
//! functions. Anything that looks across rows (an aggregation, a window, a join, ORDER BY,
//! LIMIT, DISTINCT, a set operation, a subquery) would give a different answer for every way
//! the stream happens to be cut into batches, and is refused naming what it found.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{
    DataType as ArrowType, Field, Fields, Schema, SchemaRef, TimeUnit,
};
use datafusion::catalog::MemTable;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::datatype::{DataType, StructField};
use crate::spec::{
    Format, MetadataColumn, RAW_KEY_COLUMN, RAW_VALUE_COLUMN, RESCUED_DATA_COLUMN, RawType,
    StreamingIngestionSpec,
};

/// The table the query reads: the batch's decoded columns and its metadata columns.
pub const INPUT_TABLE: &str = "input";

/// Names the engine keeps for itself (a row's position in its batch rides along under one).
pub const RESERVED_PREFIX: &str = "__tributary";

/// Why a query cannot be a transform; the message follows `spec.transform.sql: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

/// The Arrow type of a Spark type, as the worker's decoder builds its columns (nested members
/// nullable, as Spark's are).
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

/// The Arrow type of a Kafka metadata column (Spark's Kafka source types), as the decoder
/// builds it.
pub fn metadata_arrow_type(column: MetadataColumn) -> ArrowType {
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
            ArrowType::Struct(Fields::from(vec![
                Field::new("key", ArrowType::Utf8, true),
                Field::new("value", ArrowType::Binary, true),
            ])),
            true,
        ))),
    }
}

/// The columns of `input` for a spec: the JSON schema's fields, or a raw format's key and
/// value, then the metadata columns (sorted, as the decoder orders them). `_rescued_data` is
/// not among them: the engine carries it beside the query. None when a field's type does not
/// parse or the format is not one of the two (validation reports those).
pub fn input_schema(format: &Format, metadata: &[MetadataColumn]) -> Option<SchemaRef> {
    let mut fields = Vec::new();
    match (&format.json, &format.raw) {
        (Some(json), None) => {
            for field in &json.schema {
                let data_type = DataType::parse(&field.data_type).ok()?;
                fields.push(Field::new(&field.name, arrow_type(&data_type), true));
            }
        }
        (None, Some(raw)) => {
            let raw_type = |t: RawType| match t {
                RawType::Binary => ArrowType::Binary,
                RawType::String => ArrowType::Utf8,
            };
            fields.push(Field::new(RAW_KEY_COLUMN, raw_type(raw.key_type()), true));
            fields.push(Field::new(
                RAW_VALUE_COLUMN,
                raw_type(raw.value_type()),
                true,
            ));
        }
        _ => return None,
    }
    let metadata: BTreeSet<MetadataColumn> = metadata.iter().copied().collect();
    for column in metadata {
        fields.push(Field::new(
            column.column_name(),
            metadata_arrow_type(column),
            true,
        ));
    }
    Some(Arc::new(Schema::new(fields)))
}

/// A DataFusion session as transforms run in: identifiers keep their case (column names are
/// matched exactly, and an alias is the column name written), one partition (a batch is
/// small, and rows keep their order).
pub fn session() -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    SessionContext::new_with_config(config)
}

/// Plans `sql` against a table `input` of `schema` (no rows) and checks it is per-row.
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
    schema: SchemaRef,
) -> Result<LogicalPlan, TransformError> {
    let table = MemTable::try_new(schema, vec![Vec::new()])
        .map_err(|e| TransformError(format!("cannot set up the table input: {e}")))?;
    ctx.deregister_table(INPUT_TABLE)
        .map_err(|e| TransformError(e.to_string()))?;
    ctx.register_table(INPUT_TABLE, Arc::new(table))
        .map_err(|e| TransformError(e.to_string()))?;
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(|e| TransformError(format!("does not plan: {}", e.strip_backtrace())))?;
    check_per_row(&plan)?;
    Ok(plan)
}

/// What of the plan makes it more than a per-row query, in words; empty when it is per-row.
fn refusals(plan: &LogicalPlan) -> Vec<String> {
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut scans = 0;
    let _ = plan.apply(|node| {
        let what: Option<String> = match node {
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                None
            }
            LogicalPlan::TableScan(scan) => {
                scans += 1;
                (scan.table_name.table() != INPUT_TABLE)
                    .then(|| format!("reads table {}, not {INPUT_TABLE}", scan.table_name))
            }
            LogicalPlan::Aggregate(_) => {
                Some("an aggregation (GROUP BY, or an aggregate function such as count or sum)".into())
            }
            LogicalPlan::Window(_) => Some("a window function (OVER ...)".into()),
            LogicalPlan::Join(_) => Some("a join".into()),
            LogicalPlan::Sort(_) => Some("ORDER BY".into()),
            LogicalPlan::Limit(_) => Some("LIMIT or OFFSET".into()),
            LogicalPlan::Distinct(_) => Some("DISTINCT".into()),
            LogicalPlan::Union(_) => Some("a set operation (UNION, INTERSECT, EXCEPT)".into()),
            LogicalPlan::Unnest(_) => Some("unnest (one row into several)".into()),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Some(format!(
                "rows that do not come from the table {INPUT_TABLE} (VALUES, or a SELECT without FROM {INPUT_TABLE})"
            )),
            LogicalPlan::RecursiveQuery(_) => Some("a recursive query".into()),
            LogicalPlan::Subquery(_) => Some("a subquery".into()),
            LogicalPlan::Repartition(_) => Some("a repartition".into()),
            LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Extension(_) => Some("a statement other than a SELECT".into()),
        };
        if let Some(what) = what {
            found.insert(what);
        }
        let _ = node.apply_expressions(|expr| {
            expr.apply(|e| {
                let what = match e {
                    Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::SetComparison(_)
                    | Expr::OuterReferenceColumn(..) => Some("a subquery"),
                    Expr::WindowFunction(_) => Some("a window function (OVER ...)"),
                    Expr::AggregateFunction(_) => Some(
                        "an aggregation (GROUP BY, or an aggregate function such as count or sum)",
                    ),
                    Expr::Placeholder(_) => Some("a parameter placeholder ($1)"),
                    _ => None,
                };
                if let Some(what) = what {
                    found.insert(what.to_string());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(TreeNodeRecursion::Continue)
    });
    if scans == 0 && found.is_empty() {
        found.insert(format!("no FROM {INPUT_TABLE}"));
    }
    found.into_iter().collect()
}

/// Refuses a plan that is not per-row, naming everything that makes it so.
pub fn check_per_row(plan: &LogicalPlan) -> Result<(), TransformError> {
    let found = refusals(plan);
    if found.is_empty() {
        return Ok(());
    }
    Err(TransformError(format!(
        "is not a per-row query: it has {}. A transform runs on each micro-batch alone, so only \
         a SELECT ... FROM {INPUT_TABLE} [WHERE ...] of columns, casts, CASE and functions of \
         one row is accepted",
        found.join(", ")
    )))
}

/// The Spark type a Delta table stores a query's output column as: string views and large
/// strings become string, unsigned integers the next wider signed type, any timestamp unit
/// microseconds (with a time zone: timestamp, without: timestamp_ntz), and so on. Types a
/// Delta table cannot hold are refused with what to do.
pub fn delta_type(arrow: &ArrowType) -> Result<DataType, String> {
    let decimal = |precision: u8, scale: i8| {
        if scale < 0 || precision > crate::datatype::MAX_DECIMAL_PRECISION {
            Err(format!(
                "is decimal({precision},{scale}), which a Delta table cannot hold: CAST it to \
                 DECIMAL(p,s) with p at most 38 and s at least 0"
            ))
        } else {
            Ok(DataType::Decimal {
                precision,
                scale: scale as u8,
            })
        }
    };
    Ok(match arrow {
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => DataType::String,
        ArrowType::Boolean => DataType::Boolean,
        ArrowType::Int8 => DataType::Byte,
        ArrowType::Int16 | ArrowType::UInt8 => DataType::Short,
        ArrowType::Int32 | ArrowType::UInt16 => DataType::Int,
        ArrowType::Int64 | ArrowType::UInt32 => DataType::Long,
        ArrowType::Float16 | ArrowType::Float32 => DataType::Float,
        ArrowType::Float64 => DataType::Double,
        ArrowType::Decimal32(p, s)
        | ArrowType::Decimal64(p, s)
        | ArrowType::Decimal128(p, s)
        | ArrowType::Decimal256(p, s) => decimal(*p, *s)?,
        ArrowType::Date32 | ArrowType::Date64 => DataType::Date,
        ArrowType::Timestamp(_, Some(_)) => DataType::Timestamp,
        ArrowType::Timestamp(_, None) => DataType::TimestampNtz,
        ArrowType::Binary
        | ArrowType::LargeBinary
        | ArrowType::BinaryView
        | ArrowType::FixedSizeBinary(_) => DataType::Binary,
        ArrowType::List(element)
        | ArrowType::LargeList(element)
        | ArrowType::ListView(element)
        | ArrowType::LargeListView(element)
        | ArrowType::FixedSizeList(element, _) => {
            DataType::Array(Box::new(delta_type(element.data_type())?))
        }
        ArrowType::Map(entries, _) => match entries.data_type() {
            ArrowType::Struct(members) if members.len() == 2 => DataType::Map(
                Box::new(delta_type(members[0].data_type())?),
                Box::new(delta_type(members[1].data_type())?),
            ),
            other => {
                return Err(format!(
                    "is a map of {other}, which is not a key and a value"
                ));
            }
        },
        ArrowType::Struct(members) => DataType::Struct(
            members
                .iter()
                .map(|m| {
                    delta_type(m.data_type()).map(|data_type| StructField {
                        name: m.name().clone(),
                        data_type,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ArrowType::Dictionary(_, value) => delta_type(value)?,
        ArrowType::UInt64 => {
            return Err(
                "is an unsigned 64-bit integer, which a Delta table cannot hold: CAST it to \
                 BIGINT or DECIMAL(20,0)"
                    .into(),
            );
        }
        ArrowType::Null => {
            return Err(
                "has no type (it is NULL in every row): CAST it, e.g. CAST(NULL AS STRING)".into(),
            );
        }
        other => {
            return Err(format!(
                "is of type {other}, which a Delta table cannot hold: CAST it to one it can \
                 (STRING, BIGINT, DOUBLE, DECIMAL, DATE, TIMESTAMP, ...)"
            ));
        }
    })
}

/// The columns a query writes, as the table holds them, in order. Refuses an empty output,
/// duplicate names (case-insensitively, as Delta compares them), reserved names and types a
/// Delta table cannot hold.
pub fn table_columns(
    output: &Schema,
    rescue: bool,
) -> Result<Vec<(String, DataType)>, TransformError> {
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    let mut seen = BTreeSet::new();
    for field in output.fields() {
        let name = field.name();
        if name.starts_with(RESERVED_PREFIX) {
            problems.push(format!(
                "writes a column \"{name}\": names starting with {RESERVED_PREFIX} are reserved"
            ));
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            problems.push(format!(
                "writes the column \"{name}\" twice (column names are case-insensitive): alias one of them"
            ));
            continue;
        }
        if rescue && name.eq_ignore_ascii_case(RESCUED_DATA_COLUMN) {
            problems.push(format!(
                "writes a column \"{RESCUED_DATA_COLUMN}\": with onError rescue the worker adds it itself, after the query's columns"
            ));
            continue;
        }
        if name.is_empty() || name.chars().any(|c| " ,;{}()\n\t=".contains(c)) {
            problems.push(format!(
                "writes a column \"{name}\", which is not a Delta column name (no spaces or any of ,;{{}}()=): give it an alias with AS"
            ));
            continue;
        }
        match delta_type(field.data_type()) {
            Ok(data_type) => columns.push((name.clone(), data_type)),
            Err(problem) => problems.push(format!("column \"{name}\" {problem}")),
        }
    }
    if columns.is_empty() && problems.is_empty() {
        problems.push("writes no column".into());
    }
    if problems.is_empty() {
        Ok(columns)
    } else {
        Err(TransformError(problems.join("; ")))
    }
}

/// Validation's check of `spec.transform.sql`: plans the query against the spec's input
/// columns and returns the columns it writes. Planning reads no data, so it is run to
/// completion here without a runtime.
pub fn check(
    sql: &str,
    spec: &StreamingIngestionSpec,
) -> Result<Vec<(String, DataType)>, TransformError> {
    let Some(schema) = input_schema(&spec.format, &spec.metadata_columns()) else {
        return Err(TransformError(
            "cannot be checked until spec.format is valid (one format, every schema type parses)"
                .into(),
        ));
    };
    let rescue = spec
        .format
        .json()
        .is_some_and(|json| json.on_error() == crate::spec::OnError::Rescue);
    let ctx = session();
    let plan = futures::executor::block_on(plan(&ctx, sql, schema))?;
    table_columns(plan.schema().as_arrow(), rescue)
}
