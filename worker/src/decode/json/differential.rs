//! The differential test against Spark's `from_json`: every value of the committed corpus
//! (worker/tests/fixtures/from_json) decoded with `onError: rescue`, each cell compared with
//! Spark's answer (spark_answers.jsonl, made by spark_answers.py with Spark itself). A cell must
//! hold Spark's value, or its record must be rescued; never a different value.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::datatypes::{
    DataType as ArrowType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use serde_json::Value as Json;
use tributary_crds::{JsonFormat, OnError, RESCUED_DATA_COLUMN, SchemaField};

use super::JsonDecoder;
use super::convert::decimal;
use crate::record::Record;

/// Records Spark reads a value from that this decoder rescues instead (the differences the
/// README lists: zone names, a time without a date, bytes that are not UTF-8, byte values
/// 128..=255 that Jackson wraps, lone surrogates, duplicate names, text after the object,
/// base64 with padding inside, doubles whose text depends on the JVM, ...). Rescuing more of
/// them than this is a regression.
const MAX_RESCUED_WHERE_SPARK_READS: usize = 33;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/from_json")
}

fn read_lines(name: &str) -> Vec<Json> {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn raw_value(line: &Json) -> Option<Vec<u8>> {
    if let Some(hex) = line.get("value_hex").and_then(Json::as_str) {
        return Some(
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect(),
        );
    }
    line.get("value")
        .and_then(Json::as_str)
        .map(|s| s.as_bytes().to_vec())
}

/// Compares our cell with Spark's canonical answer; None when equal, else ours as text.
fn differs(array: &ArrayRef, row: usize, spark: &Json) -> Option<String> {
    if array.is_null(row) {
        return (!spark.is_null()).then(|| "null".to_string());
    }
    if spark.is_null() {
        return Some(render(array, row));
    }
    let same = match array.data_type() {
        ArrowType::Utf8 => spark.as_str() == Some(array.as_string::<i32>().value(row)),
        ArrowType::Boolean => spark.as_bool() == Some(array.as_boolean().value(row)),
        ArrowType::Int8 => {
            spark.as_i64() == Some(i64::from(array.as_primitive::<Int8Type>().value(row)))
        }
        ArrowType::Int16 => {
            spark.as_i64() == Some(i64::from(array.as_primitive::<Int16Type>().value(row)))
        }
        ArrowType::Int32 => {
            spark.as_i64() == Some(i64::from(array.as_primitive::<Int32Type>().value(row)))
        }
        ArrowType::Date32 => {
            spark.as_i64() == Some(i64::from(array.as_primitive::<Date32Type>().value(row)))
        }
        ArrowType::Int64 => spark.as_i64() == Some(array.as_primitive::<Int64Type>().value(row)),
        ArrowType::Timestamp(..) => {
            spark.as_i64() == Some(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        ArrowType::Float32 => {
            let ours = array.as_primitive::<Float32Type>().value(row);
            spark
                .as_str()
                .and_then(|s| s.parse::<f32>().ok())
                .is_some_and(|theirs| {
                    theirs.to_bits() == ours.to_bits() || (theirs.is_nan() && ours.is_nan())
                })
        }
        ArrowType::Float64 => {
            let ours = array.as_primitive::<Float64Type>().value(row);
            spark
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .is_some_and(|theirs| {
                    theirs.to_bits() == ours.to_bits() || (theirs.is_nan() && ours.is_nan())
                })
        }
        ArrowType::Decimal128(precision, scale) => {
            let ours = array.as_primitive::<Decimal128Type>().value(row);
            spark
                .as_str()
                .and_then(|s| decimal(s, *precision, *scale as u8).ok())
                == Some(ours)
        }
        ArrowType::Binary => {
            let hex: String = array
                .as_binary::<i32>()
                .value(row)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            spark.as_str() == Some(hex.as_str())
        }
        ArrowType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            let Some(expected) = spark.as_array() else {
                return Some(render(array, row));
            };
            expected.len() == items.len()
                && expected
                    .iter()
                    .enumerate()
                    .all(|(i, e)| differs(&items, i, e).is_none())
        }
        ArrowType::Map(..) => {
            let entries = array.as_map().value(row);
            let Some(expected) = spark.as_array() else {
                return Some(render(array, row));
            };
            expected.len() == entries.len()
                && expected.iter().enumerate().all(|(i, e)| {
                    differs(entries.column(0), i, &e["k"]).is_none()
                        && differs(entries.column(1), i, &e["v"]).is_none()
                })
        }
        ArrowType::Struct(fields) => {
            let st = array.as_struct();
            fields.iter().enumerate().all(|(i, f)| {
                differs(
                    st.column(i),
                    row,
                    spark.get(f.name()).unwrap_or(&Json::Null),
                )
                .is_none()
            })
        }
        other => panic!("no comparison for {other}"),
    };
    (!same).then(|| render(array, row))
}

fn render(array: &ArrayRef, row: usize) -> String {
    deltalake::arrow::util::display::array_value_to_string(array, row)
        .unwrap_or_else(|e| format!("<{e}>"))
}

#[test]
fn every_cell_is_sparks_value_or_its_record_is_rescued() {
    let schemas: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("schemas.json")).expect("schemas.json"),
    )
    .expect("schemas.json");
    let options: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("schema_options.json"))
            .expect("schema_options.json"),
    )
    .expect("schema_options.json");
    let corpus = read_lines("corpus.jsonl");
    // Spark's cells, or Json::Null where Spark stopped the query on the value (an "error"
    // answer): such a record must be rescued.
    let answers: BTreeMap<i64, Json> = read_lines("spark_answers.jsonl")
        .into_iter()
        .map(|a| (a["id"].as_i64().expect("id"), a["cells"].clone()))
        .collect();
    assert_eq!(
        answers.len(),
        corpus.len(),
        "spark_answers.jsonl does not answer every corpus value: regenerate it"
    );
    let mut mismatches = Vec::new();
    let mut rescued_where_spark_reads = Vec::new();
    let (mut cells_compared, mut records_rescued) = (0, 0);
    for (name, columns) in &schemas {
        let format = JsonFormat {
            schema: columns
                .iter()
                .map(|(n, t)| SchemaField {
                    name: n.clone(),
                    data_type: t.clone(),
                    ..Default::default()
                })
                .collect(),
            on_error: Some(OnError::Rescue),
            timestamp_format: options
                .get(name)
                .and_then(|o| o.get("timestampFormat"))
                .cloned(),
            date_format: options.get(name).and_then(|o| o.get("dateFormat")).cloned(),
            timestamp_ntz_format: options
                .get(name)
                .and_then(|o| o.get("timestampNTZFormat"))
                .cloned(),
            time_zone: options.get(name).and_then(|o| o.get("timeZone")).cloned(),
            ..Default::default()
        };
        if let Some(unknown) = options.get(name).and_then(|o| {
            o.keys().find(|k| {
                ![
                    "timestampFormat",
                    "timestampNTZFormat",
                    "dateFormat",
                    "timeZone",
                ]
                .contains(&k.as_str())
            })
        }) {
            panic!("schema_options.json: option {unknown} of {name} is not one the decoder takes");
        }
        let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
        let lines: Vec<&Json> = corpus.iter().filter(|l| l["schema"] == **name).collect();
        let records: Vec<Record> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| Record {
                topic: "corpus".into(),
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                timestamp_type: 0,
                key: None,
                headers: vec![],
                value: raw_value(line).map(Into::into),
            })
            .collect();
        let decoded = decoder.decode(&records).expect("decode");
        assert!(decoded.bad.is_empty(), "rescue mode keeps every record");
        let batch = decoded.batch();
        assert_eq!(batch.num_rows(), records.len());
        let rescued = batch
            .column_by_name(RESCUED_DATA_COLUMN)
            .expect("rescued column");
        for (row, line) in lines.iter().enumerate() {
            let id = line["id"].as_i64().expect("id");
            let spark = &answers[&id];
            let input = line
                .get("value")
                .and_then(Json::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}", line.get("value_hex").unwrap_or(&Json::Null)));
            let is_rescued = rescued.is_valid(row);
            if is_rescued {
                records_rescued += 1;
            }
            if spark.is_null() {
                // Spark stopped the query on this value instead of answering.
                if !is_rescued {
                    mismatches.push(format!(
                        "{id:>4} | (all)  | {input} | Spark: an error | Tributary: read, not rescued"
                    ));
                }
                continue;
            }
            let mut lost = Vec::new();
            for (column, _) in columns {
                let array = batch.column_by_name(column).expect("column");
                let theirs = spark.get(column).unwrap_or(&Json::Null);
                // A rescued record may leave a cell null where Spark has a value (the value
                // is in _rescued_data), never hold a different one.
                if is_rescued && array.is_null(row) {
                    if !theirs.is_null() {
                        lost.push(column.as_str());
                    }
                    continue;
                }
                cells_compared += 1;
                if let Some(ours) = differs(array, row, theirs) {
                    mismatches.push(format!(
                        "{id:>4} | {column:<6} | {input} | Spark: {theirs} | Tributary: {ours}{}",
                        if is_rescued { " (rescued)" } else { "" }
                    ));
                }
            }
            if !lost.is_empty() {
                rescued_where_spark_reads.push(format!(
                    "{id:>4} {input}  (Spark reads {})",
                    lost.join(", ")
                ));
            }
        }
    }
    println!(
        "{} values: {cells_compared} cells compared, {records_rescued} records rescued",
        corpus.len()
    );
    println!(
        "rescued although Spark reads a value ({}):\n{}",
        rescued_where_spark_reads.len(),
        rescued_where_spark_reads.join("\n")
    );
    assert!(
        mismatches.is_empty(),
        "{} cells differ from Spark's from_json:\n  id | column | input | Spark | Tributary\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        rescued_where_spark_reads.len() <= MAX_RESCUED_WHERE_SPARK_READS,
        "{} records are rescued although Spark reads them (at most {MAX_RESCUED_WHERE_SPARK_READS})",
        rescued_where_spark_reads.len()
    );
}
