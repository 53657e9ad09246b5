//! `spec.transform.sql`: one SQL query over each decoded micro-batch. This module is the check
//! validation makes (the operator's, `render`'s and the worker's alike) from the query's text
//! alone, parsed by `sqlparser` (the parser Apache DataFusion itself uses, so the worker reads
//! the same statement): the query is one per-row SELECT over the table `input`, and the names
//! of the columns it writes, where the text says them. Types, unknown functions, a column that
//! is not there or a cast that cannot be made are the planner's to find: the worker, which
//! links DataFusion to run the query, plans it in full before it reads anything.
//!
//! A transform runs on one micro-batch at a time, so only queries whose every output row comes
//! from one input row are accepted: projections, renames, casts, `WHERE`, `CASE`, scalar
//! functions. Anything that looks across rows (an aggregation, a window, a join, ORDER BY,
//! LIMIT, DISTINCT, a set operation, a subquery) would give a different answer for every way
//! the stream happens to be cut into batches, and is refused naming what it found.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, FunctionArguments, GroupByExpr, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, Value,
    WildcardAdditionalOptions, visit_expressions,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::spec::{Format, MetadataColumn, RAW_KEY_COLUMN, RAW_VALUE_COLUMN, RESCUED_DATA_COLUMN};

/// The table the query reads: the batch's decoded columns and its metadata columns.
pub const INPUT_TABLE: &str = "input";

/// Names the engine keeps for itself (a row's position in its batch rides along under one).
pub const RESERVED_PREFIX: &str = "__tributary";

/// Why a query cannot be a transform; the message follows `spec.transform.sql: `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

/// Aggregate functions of DataFusion (names and aliases): without GROUP BY they still fold
/// every row of the batch into one. The worker's tests hold this list to DataFusion's own.
pub const AGGREGATE_FUNCTIONS: &[&str] = &[
    "any_value",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "count",
    "covar",
    "covar_pop",
    "covar_samp",
    "first_value",
    "grouping",
    "last_value",
    "max",
    "mean",
    "median",
    "min",
    "nth_value",
    "percentile_cont",
    "quantile_cont",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var",
    "var_pop",
    "var_population",
    "var_samp",
    "var_sample",
];

/// Window functions of DataFusion: they only mean something over other rows.
pub const WINDOW_FUNCTIONS: &[&str] = &[
    "cume_dist",
    "dense_rank",
    "first_value",
    "lag",
    "last_value",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
];

const AGGREGATION: &str =
    "an aggregation (GROUP BY, or an aggregate function such as count or sum)";
const WINDOW: &str = "a window function (OVER ...)";
const SUBQUERY: &str = "a subquery";
const JOIN: &str = "a join";
const NOT_SELECT: &str = "a statement other than a SELECT";

/// The refusal of a query that looks across rows, naming everything found (the worker's
/// planner words its findings the same way).
pub fn not_per_row(found: &BTreeSet<String>) -> TransformError {
    TransformError(format!(
        "is not a per-row query: it has {}. A transform runs on each micro-batch alone, so only \
         a SELECT ... FROM {INPUT_TABLE} [WHERE ...] of columns, casts, CASE and functions of \
         one row is accepted",
        found.iter().cloned().collect::<Vec<_>>().join(", ")
    ))
}

/// A column the query writes, as its text names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputColumn {
    pub name: String,
    /// The input column it is, unchanged (a bare column reference, renamed or not).
    pub from: Option<String>,
}

/// The columns of `input`, by name: the JSON schema's fields, or a raw format's key
/// and value, then the metadata columns. `_rescued_data` is not among them: the worker
/// carries it beside the query.
pub fn input_columns(format: &Format, metadata: &[MetadataColumn]) -> Vec<String> {
    let mut columns: Vec<String> = match (&format.json, &format.raw) {
        (Some(json), _) => json.schema.iter().map(|f| f.name.clone()).collect(),
        (None, Some(_)) => vec![RAW_KEY_COLUMN.to_string(), RAW_VALUE_COLUMN.to_string()],
        (None, None) => Vec::new(),
    };
    let metadata: BTreeSet<MetadataColumn> = metadata.iter().copied().collect();
    columns.extend(metadata.into_iter().map(|c| c.column_name().to_string()));
    columns
}

/// What is wrong with `name` as a column the query writes, given the names before it (`seen`,
/// lower case, as Delta compares names); None when it can be a column of the table.
pub fn name_problem(name: &str, seen: &mut BTreeSet<String>, rescue: bool) -> Option<String> {
    if name.starts_with(RESERVED_PREFIX) {
        return Some(format!(
            "writes a column \"{name}\": names starting with {RESERVED_PREFIX} are reserved"
        ));
    }
    if !seen.insert(name.to_ascii_lowercase()) {
        return Some(format!(
            "writes the column \"{name}\" twice (column names are case-insensitive): alias one of them"
        ));
    }
    if rescue && name.eq_ignore_ascii_case(RESCUED_DATA_COLUMN) {
        return Some(format!(
            "writes a column \"{RESCUED_DATA_COLUMN}\": with onError rescue the worker adds it itself, after the query's columns"
        ));
    }
    if name.is_empty() || name.chars().any(|c| " ,;{}()\n\t=".contains(c)) {
        return Some(format!(
            "writes a column \"{name}\", which is not a Delta column name (no spaces or any of ,;{{}}()=): give it an alias with AS"
        ));
    }
    None
}

/// Validation's check of `spec.transform.sql` from its text: one SELECT, per-row, over
/// `input` (whose columns are `input`), writing columns the table can be written with. Returns
/// the columns it writes, or None where the text does not say them all (e.g. `* EXCLUDE (...)`;
/// the worker's planner knows them).
pub fn check(
    sql: &str,
    input: &[String],
    rescue: bool,
) -> Result<Option<Vec<OutputColumn>>, TransformError> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| TransformError(format!("does not parse: {e}")))?;
    let query = match statements.as_slice() {
        [Statement::Query(query)] => query,
        [] => return Err(TransformError("holds no statement".into())),
        [_] => return Err(not_per_row(&BTreeSet::from([NOT_SELECT.to_string()]))),
        more => {
            return Err(TransformError(format!(
                "holds {} statements: a transform is one SELECT ... FROM {INPUT_TABLE}",
                more.len()
            )));
        }
    };
    let mut found = Findings::default();
    let columns = found.query(query, Some(input));
    if !found.refused.is_empty() {
        return Err(not_per_row(&found.refused));
    }
    if !found.problems.is_empty() {
        return Err(TransformError(found.problems.join("; ")));
    }
    let Some(columns) = columns else {
        return Ok(None);
    };
    let mut seen = BTreeSet::new();
    let problems: Vec<String> = columns
        .iter()
        .filter_map(|c| name_problem(&c.name, &mut seen, rescue))
        .collect();
    if !problems.is_empty() {
        return Err(TransformError(problems.join("; ")));
    }
    if columns.is_empty() {
        return Err(TransformError("writes no column".into()));
    }
    Ok(Some(columns))
}

/// What a walk over the query found.
#[derive(Default)]
struct Findings {
    /// What makes it more than per-row.
    refused: BTreeSet<String>,
    /// Other mistakes (a column without a name, one `input` does not have).
    problems: Vec<String>,
    /// The WITH clause's names, and their columns where known.
    ctes: Vec<(String, Option<Vec<String>>)>,
}

impl Findings {
    fn refuse(&mut self, what: impl Into<String>) {
        self.refused.insert(what.into());
    }

    /// The columns `query` writes (None when not all are known), reading a table of `input`.
    fn query(&mut self, query: &Query, input: Option<&[String]>) -> Option<Vec<OutputColumn>> {
        if let Some(with) = &query.with {
            if with.recursive {
                self.refuse("a recursive query (WITH RECURSIVE)");
            }
            // A common table expression is a subquery in FROM with a name: per-row when its
            // query is.
            for cte in &with.cte_tables {
                let columns = self
                    .query(&cte.query, input)
                    .filter(|_| cte.alias.columns.is_empty())
                    .map(|columns| columns.into_iter().map(|c| c.name).collect());
                self.ctes.push((cte.alias.name.value.clone(), columns));
            }
        }
        if query.order_by.is_some() {
            self.refuse("ORDER BY");
        }
        if query.limit_clause.is_some() || query.fetch.is_some() {
            self.refuse("LIMIT or OFFSET");
        }
        if !query.locks.is_empty()
            || query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            self.refuse("a clause other than SELECT, FROM and WHERE");
        }
        self.body(&query.body, input)
    }

    fn body(&mut self, body: &SetExpr, input: Option<&[String]>) -> Option<Vec<OutputColumn>> {
        match body {
            SetExpr::Select(select) => self.select(select, input),
            SetExpr::Query(query) => self.query(query, input),
            SetExpr::SetOperation { .. } => {
                self.refuse("a set operation (UNION, INTERSECT, EXCEPT)");
                None
            }
            SetExpr::Values(_) => {
                self.refuse(format!(
                    "rows that do not come from the table {INPUT_TABLE} (VALUES)"
                ));
                None
            }
            SetExpr::Table(_) => {
                self.refuse(format!("TABLE (write SELECT * FROM {INPUT_TABLE})"));
                None
            }
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                self.refuse(NOT_SELECT);
                None
            }
        }
    }

    fn select(&mut self, select: &Select, input: Option<&[String]>) -> Option<Vec<OutputColumn>> {
        match &select.distinct {
            None | Some(Distinct::All) => {}
            Some(_) => self.refuse("DISTINCT"),
        }
        if select.top.is_some() {
            self.refuse("TOP (a LIMIT)");
        }
        if select.into.is_some() {
            self.refuse("SELECT INTO");
        }
        if !select.lateral_views.is_empty() {
            self.refuse("LATERAL VIEW (one row into several)");
        }
        if !select.connect_by.is_empty() {
            self.refuse("CONNECT BY (a recursive query)");
        }
        match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers)
                if exprs.is_empty() && modifiers.is_empty() => {}
            _ => self.refuse(AGGREGATION),
        }
        if select.having.is_some() {
            self.refuse(format!("HAVING, {AGGREGATION}"));
        }
        if !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
        {
            self.refuse("CLUSTER BY, DISTRIBUTE BY or SORT BY");
        }
        if !select.named_window.is_empty() {
            self.refuse(WINDOW);
        }
        if select.qualify.is_some() {
            self.refuse(format!("QUALIFY, {WINDOW}"));
        }
        if select.prewhere.is_some() || select.value_table_mode.is_some() {
            self.refuse("a clause other than SELECT, FROM and WHERE");
        }
        let scanned = self.from(select, input);
        for item in &select.projection {
            self.expressions(item);
        }
        if let Some(selection) = &select.selection {
            self.expressions(selection);
        }
        if select.exclude.is_some() {
            return None;
        }
        let mut columns = Some(Vec::new());
        for item in &select.projection {
            let written = self.item(item, scanned.as_deref());
            columns = match (columns, written) {
                (Some(mut all), Some(these)) => {
                    all.extend(these);
                    Some(all)
                }
                _ => None,
            };
        }
        columns
    }

    /// The columns the FROM clause gives (None when not known, or when it is refused).
    fn from(&mut self, select: &Select, input: Option<&[String]>) -> Option<Vec<String>> {
        let [from] = select.from.as_slice() else {
            if select.from.is_empty() {
                self.refuse(format!(
                    "rows that do not come from the table {INPUT_TABLE} (a SELECT without FROM {INPUT_TABLE})"
                ));
            } else {
                self.refuse(JOIN);
            }
            return None;
        };
        if !from.joins.is_empty() {
            self.refuse(JOIN);
        }
        match &from.relation {
            TableFactor::Table {
                name,
                alias,
                args,
                sample,
                ..
            } => {
                let table = name.to_string();
                let scanned = if table == INPUT_TABLE {
                    input.map(<[String]>::to_vec)
                } else if let Some((_, columns)) =
                    self.ctes.iter().rev().find(|(cte, _)| *cte == table)
                {
                    columns.clone()
                } else {
                    self.refuse(format!("reads table {table}, not {INPUT_TABLE}"));
                    return None;
                };
                if args.is_some() {
                    self.refuse("a table function (FROM f(...))");
                }
                if sample.is_some() {
                    self.refuse("TABLESAMPLE");
                }
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    return None;
                }
                scanned
            }
            TableFactor::Derived {
                subquery,
                alias,
                lateral,
                ..
            } => {
                if *lateral {
                    self.refuse(format!("LATERAL, {JOIN}"));
                }
                let columns = self.query(subquery, input)?;
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    return None;
                }
                Some(columns.into_iter().map(|c| c.name).collect())
            }
            TableFactor::NestedJoin { .. } => {
                self.refuse(JOIN);
                None
            }
            TableFactor::UNNEST { .. } => {
                self.refuse("unnest (one row into several)");
                None
            }
            TableFactor::Pivot { .. } | TableFactor::Unpivot { .. } => {
                self.refuse("PIVOT or UNPIVOT");
                None
            }
            TableFactor::MatchRecognize { .. } => {
                self.refuse("MATCH_RECOGNIZE (a pattern across rows)");
                None
            }
            other => {
                self.refuse(format!(
                    "FROM {other}, which is not the table {INPUT_TABLE}"
                ));
                None
            }
        }
    }

    /// Refusals inside expressions: subqueries, aggregate and window functions, placeholders.
    fn expressions<V: sqlparser::ast::Visit>(&mut self, node: &V) {
        let _ = visit_expressions(node, |expr: &Expr| {
            match expr {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    self.refuse(SUBQUERY)
                }
                Expr::Value(value) if matches!(value.value, Value::Placeholder(_)) => {
                    self.refuse("a parameter placeholder ($1)")
                }
                Expr::Function(function) => {
                    let name = function
                        .name
                        .0
                        .last()
                        .map(|part| part.to_string().to_ascii_lowercase())
                        .unwrap_or_default();
                    if function.over.is_some() || WINDOW_FUNCTIONS.contains(&name.as_str()) {
                        self.refuse(WINDOW);
                    } else if AGGREGATE_FUNCTIONS.contains(&name.as_str())
                        || function.filter.is_some()
                        || !function.within_group.is_empty()
                    {
                        self.refuse(AGGREGATION);
                    }
                    if name == "unnest" {
                        self.refuse("unnest (one row into several)");
                    }
                    if matches!(function.args, FunctionArguments::Subquery(_)) {
                        self.refuse(SUBQUERY);
                    }
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
    }

    /// The columns one select item writes (None when not known), reading a table of `scanned`.
    fn item(&mut self, item: &SelectItem, scanned: Option<&[String]>) -> Option<Vec<OutputColumn>> {
        match item {
            SelectItem::UnnamedExpr(expr) => match naming(expr) {
                Naming::Column { name, bare } => Some(vec![self.reference(name, bare, scanned)]),
                Naming::Unknown => None,
                Naming::Expression => {
                    self.problems.push(format!(
                        "writes {expr} without a name: give it one with AS (e.g. {expr} AS name)"
                    ));
                    None
                }
            },
            SelectItem::ExprWithAlias { expr, alias } => {
                let from = match naming(expr) {
                    Naming::Column { name, bare } => self.reference(name, bare, scanned).from,
                    Naming::Unknown | Naming::Expression => None,
                };
                Some(vec![OutputColumn {
                    name: alias.value.clone(),
                    from,
                }])
            }
            SelectItem::ExprWithAliases { .. } => {
                self.problems
                    .push("names one expression with several aliases: give each column one".into());
                None
            }
            SelectItem::Wildcard(options) => all(options, scanned),
            SelectItem::QualifiedWildcard(kind, options) => match kind {
                SelectItemQualifiedWildcardKind::ObjectName(_) => all(options, scanned),
                SelectItemQualifiedWildcardKind::Expr(_) => None,
            },
        }
    }

    /// A column the query names bare (`bare`: not inside a cast), checked against `scanned`.
    fn reference(&mut self, name: String, bare: bool, scanned: Option<&[String]>) -> OutputColumn {
        if let Some(scanned) = scanned
            && !scanned.contains(&name)
        {
            self.problems.push(format!(
                "reads a column \"{name}\" that {INPUT_TABLE} does not have (its columns: {}; names are case-sensitive)",
                scanned.join(", ")
            ));
        }
        OutputColumn {
            from: bare.then(|| name.clone()),
            name,
        }
    }
}

/// How DataFusion names a column written by an expression without an alias.
enum Naming {
    /// A column reference (`input.` or not) keeps its name, through parentheses and casts;
    /// `bare` when it is the column itself (no cast).
    Column { name: String, bare: bool },
    /// Not known from the text (`t.x`: a column of an alias, or a struct's field).
    Unknown,
    /// Any other expression: DataFusion names it by its text, which no table column can be.
    Expression,
}

fn naming(expr: &Expr) -> Naming {
    match expr {
        Expr::Identifier(ident) => Naming::Column {
            name: ident.value.clone(),
            bare: true,
        },
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, column] if table.value == INPUT_TABLE => Naming::Column {
                name: column.value.clone(),
                bare: true,
            },
            _ => Naming::Unknown,
        },
        Expr::Nested(inner) => naming(inner),
        Expr::Cast { expr, .. } => match naming(expr) {
            Naming::Column { name, .. } => Naming::Column { name, bare: false },
            other => other,
        },
        _ => Naming::Expression,
    }
}

/// The columns `*` writes: every scanned one, unless options pick among them.
fn all(
    options: &WildcardAdditionalOptions,
    scanned: Option<&[String]>,
) -> Option<Vec<OutputColumn>> {
    let plain = options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
        && options.opt_alias.is_none();
    if !plain {
        return None;
    }
    scanned.map(|columns| {
        columns
            .iter()
            .map(|name| OutputColumn {
                name: name.clone(),
                from: Some(name.clone()),
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> Vec<String> {
        ["device_id", "temperature", "timestamp", "kafka_offset"]
            .map(String::from)
            .to_vec()
    }

    fn names(sql: &str) -> Vec<(String, Option<String>)> {
        check(sql, &input(), false)
            .expect("accepted")
            .expect("columns known")
            .into_iter()
            .map(|c| (c.name, c.from))
            .collect()
    }

    #[test]
    fn written_columns_are_named_as_datafusion_names_them() {
        let own = |name: &str| (name.to_string(), Some(name.to_string()));
        assert_eq!(
            names(
                "SELECT device_id, input.kafka_offset, (temperature), CAST(\"timestamp\" AS DATE), \
                 upper(device_id) AS loud, device_id AS device FROM input WHERE temperature > 1"
            ),
            vec![
                own("device_id"),
                own("kafka_offset"),
                own("temperature"),
                ("timestamp".to_string(), None),
                ("loud".to_string(), None),
                ("device".to_string(), Some("device_id".to_string())),
            ]
        );
        assert_eq!(names("SELECT * FROM input").len(), 4);
        assert_eq!(
            names("SELECT d FROM (SELECT device_id AS d FROM input) AS t"),
            vec![own("d")]
        );
        assert_eq!(
            names("WITH t AS (SELECT device_id AS d FROM input) SELECT * FROM t WHERE d <> 'x'"),
            vec![own("d")]
        );
        assert_eq!(
            check("SELECT * EXCLUDE (device_id) FROM input", &input(), false),
            Ok(None)
        );
    }

    #[test]
    fn mistakes_the_text_shows_are_named() {
        let error = |sql: &str| check(sql, &input(), true).expect_err("refused").to_string();
        assert!(error("SELEC x").starts_with("does not parse"));
        assert!(
            error("SELECT upper(device_id) FROM input")
                .contains("writes upper(device_id) without a name: give it one with AS")
        );
        assert!(
            error("SELECT Device_Id FROM input")
                .contains("reads a column \"Device_Id\" that input does not have")
        );
        assert!(error("SELECT 1 AS a; SELECT 2 AS b").contains("holds 2 statements"));
        assert!(
            error("SELECT device_id AS _rescued_data FROM input")
                .contains("writes a column \"_rescued_data\"")
        );
        assert!(error("SELECT device_id AS __tributary_row FROM input").contains("reserved"));
    }
}
