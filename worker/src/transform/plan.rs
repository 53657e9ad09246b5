//! `spec.transform.sql` planned by DataFusion against the decoder's columns, before the worker
//! reads anything: the check validation makes from the text alone (`tributary_crds::transform`)
//! cannot know types, functions or whether a cast can be made. The plan is held to the same
//! rule (per-row), and its output to what a Delta table can hold.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Statement, WildcardAdditionalOptions};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use tributary_crds::DataType;
use tributary_crds::transform::{INPUT_TABLE, TransformError, name_problem, not_per_row};

/// A DataFusion session as transforms run in: identifiers keep their case (column names are
/// matched exactly, and an alias is the column name written), one partition (a batch is
/// small, and rows keep their order).
pub(super) fn session() -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false);
    SessionContext::new_with_config(config)
}

/// Plans `sql` against a table `input` of `schema` (no rows) and checks it is per-row.
pub(super) async fn plan(
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
    let plan = match ctx.state().create_logical_plan(sql).await {
        Ok(plan) => plan,
        Err(error) => return Err(does_not_plan(ctx, sql, error).await),
    };
    check_per_row(&plan)?;
    // The logical plan takes a cast's target type on trust; the physical plan is where a cast
    // that cannot be made (a list to an integer) is found. Planning it once here puts that at
    // start, not on every row of every batch.
    if let Err(error) = ctx.state().create_physical_plan(&plan).await {
        return Err(does_not_plan(ctx, sql, error).await);
    }
    Ok(plan)
}

/// The refusal of a query DataFusion cannot plan, naming the output column it fails on where
/// that is one.
async fn does_not_plan(ctx: &SessionContext, sql: &str, error: DataFusionError) -> TransformError {
    let at = match culprit(ctx, sql).await {
        Some(column) => format!(" (in the column {column})"),
        None => String::new(),
    };
    TransformError(format!("does not plan{at}: {}", error.strip_backtrace()))
}

/// Whether `sql` plans, logically and physically.
async fn plans(ctx: &SessionContext, sql: &str) -> bool {
    let state = ctx.state();
    match state.create_logical_plan(sql).await {
        Ok(plan) => state.create_physical_plan(&plan).await.is_ok(),
        Err(_) => false,
    }
}

/// The select item of a one-SELECT query that does not plan, by planning each alone over the
/// same FROM and WHERE: its alias, or its text. None when FROM or WHERE fail already, or the
/// query is not one SELECT.
async fn culprit(ctx: &SessionContext, sql: &str) -> Option<String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let with_projection = |projection: Vec<SelectItem>| {
        let mut select = select.as_ref().clone();
        select.projection = projection;
        let mut query = query.as_ref().clone();
        *query.body = SetExpr::Select(Box::new(select));
        query.to_string()
    };
    let everything = SelectItem::Wildcard(WildcardAdditionalOptions::default());
    if !plans(ctx, &with_projection(vec![everything])).await {
        return None;
    }
    for item in &select.projection {
        if !plans(ctx, &with_projection(vec![item.clone()])).await {
            return Some(match item {
                SelectItem::ExprWithAlias { alias, .. } => format!("\"{}\"", alias.value),
                other => other.to_string(),
            });
        }
    }
    None
}

/// What of the plan makes it more than a per-row query, in words; empty when it is per-row.
fn refusals(plan: &LogicalPlan) -> BTreeSet<String> {
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
    found
}

/// Refuses a plan that is not per-row, naming everything that makes it so.
pub(super) fn check_per_row(plan: &LogicalPlan) -> Result<(), TransformError> {
    let found = refusals(plan);
    if found.is_empty() {
        Ok(())
    } else {
        Err(not_per_row(&found))
    }
}

/// The Spark type a Delta table stores a query's output column as: string views and large
/// strings become string, unsigned integers the next wider signed type, any timestamp unit
/// microseconds (with a time zone: timestamp, without: timestamp_ntz), and so on. Types a
/// Delta table cannot hold are refused with what to do.
pub fn delta_type(arrow: &ArrowType) -> Result<DataType, String> {
    let decimal = |precision: u8, scale: i8| {
        if scale < 0 || precision > tributary_crds::datatype::MAX_DECIMAL_PRECISION {
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
                    delta_type(m.data_type()).map(|data_type| {
                        tributary_crds::datatype::StructField {
                            name: m.name().clone(),
                            data_type,
                        }
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
pub(super) fn table_columns(
    output: &Schema,
    rescue: bool,
) -> Result<Vec<(String, DataType)>, TransformError> {
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    let mut seen = BTreeSet::new();
    for field in output.fields() {
        let name = field.name();
        if let Some(problem) = name_problem(name, &mut seen, rescue) {
            problems.push(problem);
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
