//! Tables Spark created: with Spark's defaults, and with each table feature Databricks or a
//! Spark user commonly turns on. Tributary must append to each (and Spark then read every row,
//! its own and ours, with the feature's guarantees intact) or refuse it with a message naming
//! the feature; never leave a table Spark cannot read.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::data::{self, SENSOR};
use super::harness::{Spark, problems};
use super::lake::{Ingestion, Kafka, Produced, Worker, write_expected};

const TIMEOUT: Duration = Duration::from_secs(300);

/// One Spark-created table: the SQL after CREATE TABLE, and the feature names (as the Delta
/// protocol spells them) one of which a refusal must contain. Spark lists `invariants` among the
/// writer features of every table it gives a table feature, and deltalake without its
/// datafusion feature cannot write that one: such a refusal names invariants.
struct Case {
    name: &'static str,
    properties: &'static str,
    after_create: &'static [&'static str],
    feature: &'static [&'static str],
    /// Run by default; the others (more refusals of the same kind, each costing Spark a table
    /// and a check) run with TRIBUTARY_SPARK_ALL_FEATURES=1.
    default: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "defaults",
        properties: "",
        after_create: &[],
        feature: &[],
        default: true,
    },
    Case {
        name: "deletion_vectors",
        properties: "'delta.enableDeletionVectors' = 'true'",
        after_create: &[],
        feature: &["invariants"],
        default: true,
    },
    Case {
        name: "column_mapping",
        properties: "'delta.columnMapping.mode' = 'name'",
        after_create: &[],
        feature: &["columnMapping"],
        default: false,
    },
    Case {
        name: "row_tracking",
        properties: "'delta.enableRowTracking' = 'true'",
        after_create: &[],
        feature: &["rowTracking", "invariants"],
        default: false,
    },
    Case {
        name: "in_commit_timestamps",
        properties: "'delta.enableInCommitTimestamps' = 'true'",
        after_create: &[],
        feature: &["inCommitTimestamp", "invariants"],
        default: false,
    },
    Case {
        name: "v2_checkpoint",
        properties: "'delta.checkpointPolicy' = 'v2'",
        after_create: &[],
        feature: &["invariants"],
        default: false,
    },
    Case {
        name: "change_data_feed",
        properties: "'delta.enableChangeDataFeed' = 'true'",
        after_create: &[],
        feature: &["changeDataFeed"],
        default: false,
    },
    Case {
        name: "check_constraint",
        properties: "",
        after_create: &[
            "ALTER TABLE {table} ADD CONSTRAINT battery_range CHECK (battery_pct BETWEEN 0 AND 100)",
        ],
        feature: &["checkConstraints", "invariants"],
        default: false,
    },
];

/// The row Spark inserts itself, and the same row as the JSON record a producer would send.
const SPARK_ROW: &str = "('spark-row', 'oslo', 1.5, 3, TIMESTAMP'2026-01-01 00:00:00', DATE'2026-01-01', 'spark-insert', 0, 0, NULL)";
const SPARK_ROW_JSON: &str = r#"{"device_id":"spark-row","site":"oslo","temperature":1.5,"battery_pct":3,"timestamp":"2026-01-01T00:00:00Z","day":"2026-01-01"}"#;

/// Runs every case; returns a line per case saying what happened, and adds problems to `all`.
pub fn spark_created_tables(
    spark: &mut Spark,
    kafka: &mut Kafka,
    dir: &Path,
    all: &mut Vec<String>,
) -> Vec<String> {
    let mut outcomes = Vec::new();
    let all_cases = std::env::var_os("TRIBUTARY_SPARK_ALL_FEATURES").is_some_and(|v| v == "1");
    for case in CASES.iter().filter(|c| c.default || all_cases) {
        let topic = format!("spark_created_{}", case.name);
        kafka.topic(&topic, 2);
        let mut produced: Vec<Produced> = (0..40)
            .map(|n| kafka.send(&topic, (n % 2) as i32, None, &data::reading(n), false))
            .collect();
        kafka.flush();
        let ingestion = Ingestion::new(dir, &topic, SENSOR);
        std::fs::create_dir_all(ingestion.dir()).expect("create dir");
        let table = format!("delta.`{}`", ingestion.table.display());
        let properties = if case.properties.is_empty() {
            String::new()
        } else {
            format!(" TBLPROPERTIES ({})", case.properties)
        };
        let mut statements = vec![format!(
            "CREATE TABLE {table} (device_id STRING, site STRING, temperature DOUBLE, battery_pct INT, \
             timestamp TIMESTAMP, day DATE, kafka_topic STRING NOT NULL, kafka_partition INT NOT NULL, \
             kafka_offset BIGINT NOT NULL, _rescued_data STRING) USING delta{properties}"
        )];
        statements.extend(
            case.after_create
                .iter()
                .map(|s| s.replace("{table}", &table)),
        );
        statements.push(format!("INSERT INTO {table} VALUES {SPARK_ROW}"));
        statements.push(format!("DESCRIBE DETAIL {table}"));
        let created = spark.request(json!({"op": "sql", "statements": statements}), TIMEOUT);
        let features = created["rows"][0]["tableFeatures"].clone();

        let mut worker = Worker::start(&ingestion, &kafka.bootstrap, &[]);
        let status = worker.wait(Duration::from_secs(180));
        let log = worker.log();
        produced.push(Produced {
            topic: "spark-insert".into(),
            partition: 0,
            offset: 0,
            key: None,
            value: SPARK_ROW_JSON.into(),
            bad: false,
        });
        if status.success() {
            let expected = ingestion.dir().join("expected.jsonl");
            write_expected(&expected, &produced);
            match spark.try_request(ingestion.check_request(&expected), TIMEOUT) {
                Ok(answer) => {
                    all.extend(problems(&answer));
                    let feature_problems = feature_checks(spark, case, &table);
                    all.extend(
                        feature_problems
                            .iter()
                            .map(|p| format!("{}: {p}", case.name)),
                    );
                    outcomes.push(format!(
                        "{:<22} appended ({} rows read back){} features {features}",
                        case.name,
                        answer["rows"],
                        if feature_problems.is_empty() {
                            ""
                        } else {
                            ", FEATURE BROKEN"
                        }
                    ));
                }
                Err(error) => {
                    all.push(format!(
                        "{}: Tributary appended but Spark cannot read the table: {error}",
                        case.name
                    ));
                    outcomes.push(format!("{:<22} appended, Spark CANNOT READ it", case.name));
                }
            }
        } else {
            let reason = log
                .lines()
                .rev()
                .find(|l| l.contains("ERROR") || l.contains("error"))
                .unwrap_or("(no error line)")
                .to_string();
            if case.feature.is_empty() {
                all.push(format!(
                    "{}: the worker refused a table Spark created with its defaults: {reason}",
                    case.name
                ));
            } else if !case.feature.iter().any(|f| {
                reason
                    .replace(&ingestion.table.display().to_string(), "")
                    .contains(f)
            }) {
                all.push(format!(
                    "{}: the worker refused the table without naming the feature ({}): {reason}",
                    case.name,
                    case.feature.join(" or ")
                ));
            }
            // A refusal leaves the table as Spark made it.
            match spark.try_request(json!({"op": "count", "path": ingestion.table}), TIMEOUT) {
                Ok(answer) if answer["rows"] == json!(1) => {}
                Ok(answer) => all.push(format!(
                    "{}: after the refusal the table has {} rows, not Spark's 1",
                    case.name, answer["rows"]
                )),
                Err(error) => all.push(format!(
                    "{}: after the refusal Spark cannot read the table: {error}",
                    case.name
                )),
            }
            outcomes.push(format!(
                "{:<22} refused: {reason}; features {features}",
                case.name
            ));
        }
    }
    outcomes
}

/// What a feature promises Spark's readers, checked after Tributary appended.
fn feature_checks(spark: &mut Spark, case: &Case, table: &str) -> Vec<String> {
    let query = match case.name {
        // Every row keeps a distinct row id.
        "row_tracking" => format!(
            "SELECT count(*) = count(DISTINCT _metadata.row_id) AND count(_metadata.row_id) = count(*) AS ok FROM {table}"
        ),
        // The change feed lists every inserted row.
        "change_data_feed" => format!(
            "SELECT (SELECT count(*) FROM table_changes_by_path('{}', 0) WHERE _change_type = 'insert') = (SELECT count(*) FROM {table}) AS ok",
            table.trim_start_matches("delta.`").trim_end_matches('`')
        ),
        // The commits' timestamps (in-commit timestamps, once enabled) never go back.
        "in_commit_timestamps" => {
            let history = format!("DESCRIBE HISTORY {table}");
            return match spark.try_request(json!({"op": "sql", "statements": [history]}), TIMEOUT) {
                Ok(answer) => {
                    let mut rows: Vec<(i64, String)> = answer["rows"]
                        .as_array()
                        .map(|rows| {
                            rows.iter()
                                .map(|r| {
                                    let version =
                                        r["version"].as_str().and_then(|v| v.parse().ok());
                                    (
                                        version.unwrap_or(-1),
                                        r["timestamp"].as_str().unwrap_or("").to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    rows.sort();
                    rows.windows(2)
                        .filter(|w| w[1].1 < w[0].1)
                        .map(|w| {
                            format!(
                                "version {} has timestamp {} before version {}'s {}",
                                w[1].0, w[1].1, w[0].0, w[0].1
                            )
                        })
                        .collect()
                }
                Err(error) => vec![format!("DESCRIBE HISTORY errs: {error}")],
            };
        }
        // The constraint still holds.
        "check_constraint" => format!(
            "SELECT count(*) = 0 AS ok FROM {table} WHERE NOT (battery_pct BETWEEN 0 AND 100)"
        ),
        _ => return Vec::new(),
    };
    match spark.try_request(json!({"op": "sql", "statements": [query]}), TIMEOUT) {
        Ok(answer) if answer["rows"][0]["ok"] == json!("True") => Vec::new(),
        Ok(answer) => vec![format!(
            "Spark's check failed: {query} gave {}",
            answer["rows"]
        )],
        Err(error) => vec![format!("Spark's check errs: {query}: {error}")],
    }
}
