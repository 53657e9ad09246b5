use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType as ArrowType, Date32Type, Field, Int64Type, Schema};
use tributary_crds::{
    Format, JsonFormat, MetadataColumn, OnError, RawFormat, RawType, SchemaField,
};

use super::*;
use crate::decode::{Decoder, JsonDecoder};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn record(offset: i64, value: Option<&str>) -> Record {
    Record {
        topic: Arc::from("t"),
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        timestamp_type: 0,
        key: Some(format!("k{}", offset % 3).into_bytes().into()),
        headers: Vec::new(),
        value: value.map(|v| bytes::Bytes::copy_from_slice(v.as_bytes())),
    }
}

fn format(on_error: OnError) -> JsonFormat {
    JsonFormat {
        schema: vec![
            SchemaField {
                name: "device".into(),
                data_type: "string".into(),
                ..Default::default()
            },
            SchemaField {
                name: "reading".into(),
                data_type: "string".into(),
                ..Default::default()
            },
        ],
        on_error: Some(on_error),
        ..Default::default()
    }
}

/// Decodes `records` as the pipeline does and runs `sql` over them.
fn run(sql: &str, on_error: OnError, records: &[Record]) -> Result<Transformed> {
    let runtime = runtime();
    let decoder = JsonDecoder::new(&format(on_error), &[MetadataColumn::Offset])?;
    let transform = Transform::new(
        sql,
        &decoder.table_schema(),
        on_error,
        runtime.handle().clone(),
    )?;
    let decoded = decoder.decode(records)?;
    let bad: Vec<usize> = decoded.bad.iter().map(|b| b.index).collect();
    let rows: Vec<usize> = (0..records.len()).filter(|i| !bad.contains(i)).collect();
    transform.apply(decoded.batch(), &rows, records)
}

fn readings(n: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            record(
                i,
                Some(&format!(
                    r#"{{"device":"d-{}","reading":"{}"}}"#,
                    i % 3,
                    i * 10
                )),
            )
        })
        .collect()
}

#[test]
fn filters_and_derives_columns_following_each_row_to_its_record() {
    let out = run(
        "SELECT device, CAST(reading AS BIGINT) + 1 AS next, kafka_offset * 2 AS twice \
         FROM input WHERE device <> 'd-1'",
        OnError::Fail,
        &readings(7),
    )
    .expect("runs");
    assert_eq!(out.records, vec![0, 2, 3, 5, 6]);
    assert!(out.failed.is_empty());
    let schema = out.batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["device", "next", "twice"]);
    let next = out.batch.column(1).as_primitive::<Int64Type>();
    assert_eq!(next.values().to_vec(), vec![1, 21, 31, 51, 61]);
    let twice = out.batch.column(2).as_primitive::<Int64Type>();
    assert_eq!(twice.values().to_vec(), vec![0, 4, 6, 10, 12]);
}

#[test]
fn a_row_the_query_fails_on_is_bad_input_and_the_others_are_written() {
    let mut records = readings(40);
    records[13] = record(13, Some(r#"{"device":"d-1","reading":"thirteen"}"#));
    records[31] = record(31, Some(r#"{"device":"d-1","reading":"x"}"#));
    let sql = "SELECT device, CAST(reading AS INT) AS value FROM input";
    let out = run(sql, OnError::DeadLetter, &records).expect("runs");
    let failed: Vec<usize> = out.failed.iter().map(|b| b.index).collect();
    assert_eq!(failed, vec![13, 31]);
    assert!(
        out.failed[0]
            .reason
            .contains("spec.transform.sql failed on it")
            && out.failed[0].reason.contains("thirteen"),
        "{}",
        out.failed[0].reason
    );
    assert_eq!(out.batch.num_rows(), 38);
    assert!(!out.records.contains(&13) && !out.records.contains(&31));

    // Rescue keeps them, every column null and the value in _rescued_data.
    let out = run(sql, OnError::Rescue, &records).expect("runs");
    assert_eq!(out.batch.num_rows(), 40);
    assert_eq!(out.rescued_rows, 2);
    let rescued = out.batch.column(2).as_string::<i32>();
    let kept: Vec<(usize, &str)> = out
        .records
        .iter()
        .zip(rescued.iter())
        .filter_map(|(r, v)| v.map(|v| (*r, v)))
        .collect();
    assert_eq!(
        kept,
        vec![
            (13, r#"{"device":"d-1","reading":"thirteen"}"#),
            (31, r#"{"device":"d-1","reading":"x"}"#)
        ]
    );
    let values = out
        .batch
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
    let at = out.records.iter().position(|r| *r == 13).expect("row 13");
    assert!(values.is_null(at));
}

#[test]
fn rescue_carries_the_decoders_rescued_data_beside_the_query() {
    let mut records = readings(3);
    records[1] = record(1, Some("not json"));
    let out = run(
        "SELECT device FROM input WHERE kafka_offset >= 1",
        OnError::Rescue,
        &records,
    )
    .expect("runs");
    assert_eq!(out.records, vec![1, 2]);
    let rescued = out.batch.column(1).as_string::<i32>();
    assert_eq!(rescued.value(0), "not json");
    assert!(rescued.is_null(1));
    assert_eq!(out.rescued_rows, 1);
}

#[test]
fn output_types_become_the_tables_and_every_column_is_nullable() {
    let out = run(
        "SELECT arrow_cast(reading, 'Utf8View') AS v, to_timestamp_seconds(kafka_offset) AS ts, \
         CAST('2024-05-01' AS DATE) AS day, CAST(kafka_offset AS INT UNSIGNED) AS u FROM input",
        OnError::Fail,
        &readings(2),
    )
    .expect("runs");
    let schema = out.batch.schema();
    let types: Vec<(String, ArrowType, bool)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("v".into(), ArrowType::Utf8, true),
            (
                "ts".into(),
                ArrowType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                true
            ),
            ("day".into(), ArrowType::Date32, true),
            ("u".into(), ArrowType::Int64, true),
        ]
    );
    assert_eq!(
        out.batch.column(2).as_primitive::<Date32Type>().value(0),
        19844
    );
}

/// The decoder's columns by name, without `_rescued_data` (carried beside the query).
fn decoded_names(decoder: &Decoder) -> Vec<String> {
    decoder
        .table_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| name != tributary_crds::RESCUED_DATA_COLUMN)
        .collect()
}

#[test]
fn the_input_validation_reads_is_the_decoders() {
    for on_error in [OnError::Rescue, OnError::Fail] {
        let mut json = format(on_error);
        json.schema.push(SchemaField {
            name: "nested".into(),
            data_type: "struct<a:array<decimal(10,2)>,m:map<string,timestamp_ntz>,b:binary>".into(),
            ..Default::default()
        });
        let format = Format {
            json: Some(json),
            raw: None,
        };
        let decoder = Decoder::new(&format, &MetadataColumn::ALL).expect("decoder");
        assert_eq!(
            decoded_names(&decoder),
            tributary_crds::transform::input_columns(&format, &MetadataColumn::ALL)
        );
    }
    let format = Format {
        json: None,
        raw: Some(RawFormat {
            key_type: Some(RawType::String),
            value_type: Some(RawType::Binary),
        }),
    };
    let metadata = [MetadataColumn::Topic, MetadataColumn::Offset];
    let decoder = Decoder::new(&format, &metadata).expect("decoder");
    assert_eq!(
        decoded_names(&decoder),
        tributary_crds::transform::input_columns(&format, &metadata)
    );
}

#[test]
fn validations_lists_of_functions_across_rows_are_datafusions() {
    use tributary_crds::transform::{AGGREGATE_FUNCTIONS, WINDOW_FUNCTIONS, check};
    let ctx = super::plan::session();
    let state = ctx.state();
    let mut aggregates: Vec<String> = Vec::new();
    for (name, function) in state.aggregate_functions() {
        aggregates.push(name.clone());
        aggregates.extend(function.aliases().iter().cloned());
    }
    let mut windows: Vec<String> = Vec::new();
    for (name, function) in state.window_functions() {
        windows.push(name.clone());
        windows.extend(function.aliases().iter().cloned());
    }
    for name in &aggregates {
        assert!(
            AGGREGATE_FUNCTIONS.contains(&name.as_str()),
            "DataFusion's aggregate function {name} is missing from AGGREGATE_FUNCTIONS"
        );
    }
    for name in &windows {
        assert!(
            WINDOW_FUNCTIONS.contains(&name.as_str()),
            "DataFusion's window function {name} is missing from WINDOW_FUNCTIONS"
        );
    }
    for name in AGGREGATE_FUNCTIONS {
        assert!(
            aggregates.iter().any(|a| a == name),
            "{name} is no aggregate of DataFusion"
        );
    }
    for name in WINDOW_FUNCTIONS {
        assert!(
            windows.iter().any(|w| w == name),
            "{name} is no window function of DataFusion"
        );
    }
    // And each is refused from the text, as the planner refuses it.
    let input = vec!["device".to_string(), "reading".to_string()];
    for name in aggregates.iter().chain(&windows) {
        let sql = format!("SELECT {name}(reading) AS x FROM input");
        let refused = check(&sql, &input, false).expect_err(&sql).to_string();
        assert!(
            refused.contains("is not a per-row query"),
            "{sql}: {refused}"
        );
    }
}

#[test]
fn the_worker_plans_the_query_before_reading_and_names_what_does_not_plan() {
    let runtime = runtime();
    let plan = |sql: &str| {
        let decoder =
            JsonDecoder::new(&format(OnError::Fail), &[MetadataColumn::Offset]).expect("decoder");
        Transform::new(
            sql,
            &decoder.table_schema(),
            OnError::Fail,
            runtime.handle().clone(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        plan("SELECT device, CAST(reading AS DOUBLE) AS r FROM input"),
        Ok(())
    );
    for (sql, expected) in [
        ("SELECT nope AS x FROM input", "nope"),
        (
            "SELECT device, CAST(make_array(kafka_offset) AS INT) AS n FROM input",
            "does not plan (in the column \"n\"): ",
        ),
        (
            "SELECT device, device + 1 AS n FROM input",
            "does not plan (in the column \"n\"): ",
        ),
        (
            "SELECT no_such_function(device) AS x FROM input",
            "no_such_function",
        ),
        (
            "SELECT NULL AS nothing, device FROM input",
            "column \"nothing\" has no type",
        ),
        (
            "SELECT device, INTERVAL '1 day' AS span FROM input",
            "column \"span\" is of type Interval",
        ),
    ] {
        let error = plan(sql).expect_err(sql);
        assert!(
            error.starts_with("spec.transform.sql: ") && error.contains(expected),
            "{sql}: expected {expected:?} in {error}"
        );
    }
}

#[test]
fn the_last_row_of_each_key_wins_in_record_order_and_a_tombstone_deletes() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", ArrowType::Utf8, true),
        Field::new("v", ArrowType::Int64, true),
    ]));
    let rows = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("b"),
                Some("a"),
                None,
                None,
                Some("c"),
            ])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6])),
        ],
    )
    .expect("rows");
    // Rows are not in record order (a transform's failed rows come last in rescue mode).
    let row_records = vec![0, 1, 4, 2, 3, 7];
    let tombstones = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("b"), Some("c")])),
            Arc::new(Int64Array::from(vec![None, None])),
        ],
    )
    .expect("tombstones");
    let reduced = latest_per_key(
        &rows,
        &row_records,
        &tombstones,
        &[5, 6],
        &["id".to_string()],
    )
    .expect("reduced");
    let ids: Vec<Option<&str>> = reduced.column(0).as_string::<i32>().iter().collect();
    let values: Vec<Option<i64>> = reduced
        .column(1)
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    let deletes: &BooleanArray = reduced.column(2).as_boolean();
    // Record order: null key (2), null key (3), a@4, b deleted@5, c@7 after its tombstone@6.
    assert_eq!(ids, vec![None, None, Some("a"), Some("b"), Some("c")]);
    assert_eq!(values, vec![Some(4), Some(5), Some(3), None, Some(6)]);
    assert_eq!(
        deletes.iter().collect::<Vec<_>>(),
        vec![
            Some(false),
            Some(false),
            Some(false),
            Some(true),
            Some(false)
        ]
    );
    assert_eq!(reduced.schema().field(2).name(), DELETE_COLUMN);
}
