//! One Spark session checks every table shape: every schema type, nested types, decimals,
//! partitionBy, `_rescued_data`, the dead-letter table, 1,000+ commits with Delta log
//! checkpoints, a table Spark streams from while Tributary appends and compacts, and tables
//! Spark created with its defaults and with the table features Databricks turns on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::data::{self, EVERY_TYPE, SENSOR};
use super::harness::{Spark, problems};
use super::lake::{
    Ingestion, Kafka, Produced, Worker, log_operations, run_to_end, wait_for, write_expected,
};
use super::spark_created::spark_created_tables;

/// A check's answer may take this long (a cold Spark on a busy machine reading a table).
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Records of the 1,000+ commit table: one per commit.
const MANY_COMMITS: usize = 1_010;

/// The test's directory, kept for a post-mortem with TRIBUTARY_KEEP_TEST_DIRS set.
struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    fn new() -> TestDir {
        let dir = tempfile::tempdir().expect("tempdir");
        eprintln!("test directory {}", dir.path().display());
        TestDir(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("dir").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("TRIBUTARY_KEEP_TEST_DIRS").is_some()
            && let Some(dir) = self.0.take()
        {
            let _ = dir.keep();
        }
    }
}

/// A table written and the records it must hold.
struct Written {
    ingestion: Ingestion,
    expected: PathBuf,
}

fn produce(
    kafka: &mut Kafka,
    topic: &str,
    partitions: i32,
    records: &[(String, bool)],
) -> Vec<Produced> {
    kafka.topic(topic, partitions);
    let produced = records
        .iter()
        .enumerate()
        .map(|(n, (value, bad))| {
            let key = (n % 5 != 0).then(|| format!("key-{n}"));
            kafka.send(
                topic,
                (n % partitions as usize) as i32,
                key.as_deref(),
                value,
                *bad,
            )
        })
        .collect();
    kafka.flush();
    produced
}

fn written(ingestion: Ingestion, records: &[Produced]) -> Written {
    let expected = ingestion.dir().join("expected.jsonl");
    std::fs::create_dir_all(ingestion.dir()).expect("create dir");
    write_expected(&expected, records);
    Written {
        ingestion,
        expected,
    }
}

/// Every type of the API with all metadata columns, over three partitions.
fn every_type(kafka: &mut Kafka, dir: &Path) -> Written {
    let records: Vec<(String, bool)> = (0..240)
        .map(|n| (data::every_type_record(n), false))
        .collect();
    let produced = produce(kafka, "every_type", 3, &records);
    let mut ingestion = Ingestion::new(dir, "every_type", EVERY_TYPE);
    ingestion.metadata = [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestampType",
        "key",
        "headers",
    ]
    .map(String::from)
    .to_vec();
    run_to_end(&ingestion, &kafka.bootstrap, &[]);
    written(ingestion, &produced)
}

/// partitionBy a string with characters paths must escape (and nulls) and a date.
fn partitioned(kafka: &mut Kafka, dir: &Path) -> Written {
    let records: Vec<(String, bool)> = (0..200).map(|n| (data::reading(n), false)).collect();
    let produced = produce(kafka, "partitioned", 2, &records);
    let mut ingestion = Ingestion::new(dir, "partitioned", SENSOR);
    ingestion.partition_by = vec!["site".into(), "day".into()];
    run_to_end(&ingestion, &kafka.bootstrap, &[]);
    written(ingestion, &produced)
}

/// Good and bad records mixed: `rescue` keeps them all.
fn mixed_records() -> Vec<(String, bool)> {
    (0..150)
        .map(|n| {
            if n % 6 == 3 {
                (data::bad_reading(n), true)
            } else {
                (data::reading(n), false)
            }
        })
        .collect()
}

fn rescued(kafka: &mut Kafka, dir: &Path) -> Written {
    let produced = produce(kafka, "rescued", 2, &mixed_records());
    let ingestion = Ingestion::new(dir, "rescued", SENSOR);
    run_to_end(&ingestion, &kafka.bootstrap, &[]);
    written(ingestion, &produced)
}

/// `deadLetter`: the good records in the table, the bad ones in the dead-letter table.
fn dead_lettered(kafka: &mut Kafka, dir: &Path) -> Written {
    let produced = produce(kafka, "dead_lettered", 2, &mixed_records());
    let mut ingestion = Ingestion::new(dir, "dead_lettered", SENSOR);
    ingestion.on_error = "deadLetter".into();
    ingestion.dead_letter = Some(dir.join("dead_lettered").join("dead_letter"));
    run_to_end(&ingestion, &kafka.bootstrap, &[]);
    // A reset to the latest offsets, where the query already is: a commit with no rows in each
    // table, which Spark must list in the history and read across.
    ingestion.reset = Some(format!("{{id: {RESET_ID}, offsets: latest}}"));
    run_to_end(&ingestion, &kafka.bootstrap, &[]);
    written(ingestion, &produced)
}

/// The reset the dead-letter ingestion applies.
const RESET_ID: &str = "spark-reads-a-reset";

/// Whether Spark's DESCRIBE HISTORY lists the reset's commit with its id.
fn check_reset_history(name: &str, answer: &Value, problems: &mut Vec<String>) {
    if answer.is_null() {
        return;
    }
    let history = answer["history"].as_array().cloned().unwrap_or_default();
    let resets: Vec<&Value> = history
        .iter()
        .filter(|h| h["operation"] == "RESET STREAMING OFFSETS")
        .collect();
    if resets.len() != 1 || resets[0]["operationParameters"]["resetId"] != RESET_ID {
        problems.push(format!(
            "{name}: DESCRIBE HISTORY should list one RESET STREAMING OFFSETS with resetId {RESET_ID}: {resets:?}"
        ));
    }
}

/// One record per commit: 1,000+ commits and a Delta log checkpoint every 10.
fn many_commits(kafka: &mut Kafka, dir: &Path) -> (Written, Worker) {
    let records: Vec<(String, bool)> = (0..MANY_COMMITS)
        .map(|n| (data::reading(n), false))
        .collect();
    let produced = produce(kafka, "many_commits", 1, &records);
    let mut ingestion = Ingestion::new(dir, "many_commits", SENSOR);
    ingestion.max_offsets_per_trigger = Some(1);
    ingestion.checkpoint_interval = Some(10);
    // The longest table to write: started first, and waited for only before Spark checks it.
    let worker = Worker::start(&ingestion, &kafka.bootstrap, &[]);
    (written(ingestion, &produced), worker)
}

/// Checks what Spark's DESCRIBE HISTORY says of a table Tributary created and appended to.
fn check_history(name: &str, answer: &Value, want_optimize: bool, problems: &mut Vec<String>) {
    if answer.is_null() {
        return;
    }
    let history = answer["history"].as_array().cloned().unwrap_or_default();
    let operations: Vec<&str> = history
        .iter()
        .filter_map(|h| h["operation"].as_str())
        .collect();
    if operations.first() != Some(&"CREATE TABLE") {
        problems.push(format!(
            "{name}: DESCRIBE HISTORY starts with {:?}, not CREATE TABLE",
            operations.first()
        ));
    }
    for entry in history.iter().skip(1) {
        let operation = entry["operation"].as_str().unwrap_or_default();
        match operation {
            "WRITE" => {
                if entry["operationParameters"]["mode"] != json!("Append") {
                    problems.push(format!(
                        "{name}: version {} is a WRITE without mode Append: {}",
                        entry["version"], entry["operationParameters"]
                    ));
                }
            }
            "OPTIMIZE" | "RESET STREAMING OFFSETS" => {}
            other => problems.push(format!(
                "{name}: version {} has operation {other:?}",
                entry["version"]
            )),
        }
    }
    if want_optimize && !operations.contains(&"OPTIMIZE") {
        problems.push(format!(
            "{name}: no OPTIMIZE in DESCRIBE HISTORY: {operations:?}"
        ));
    }
}

fn check(spark: &mut Spark, table: &Written, all: &mut Vec<String>) -> Value {
    let answer = match spark.try_request(
        table.ingestion.check_request(&table.expected),
        CHECK_TIMEOUT,
    ) {
        Ok(answer) => answer,
        Err(error) => {
            all.push(format!(
                "{}: Spark cannot read the table: {error}",
                table.ingestion.name
            ));
            return Value::Null;
        }
    };
    all.extend(problems(&answer));
    eprintln!(
        "{}: Spark read {} rows in {} s; {} versions; detail {}",
        table.ingestion.name,
        answer["rows"],
        answer["seconds"],
        answer["history"].as_array().map_or(0, Vec::len),
        answer["detail"]
    );
    answer
}

#[test]
fn spark_reads_every_table_tributary_writes() {
    let started = Instant::now();
    let dir = TestDir::new();
    let dir = dir.path();
    // Spark starts while the tables are written.
    let mut spark = Spark::start(&dir.join("spark"));
    let mut kafka = Kafka::start();

    let started_many = Instant::now();
    let (many, mut many_worker) = many_commits(&mut kafka, dir);
    let every = every_type(&mut kafka, dir);
    let partitioned = partitioned(&mut kafka, dir);
    let rescued = rescued(&mut kafka, dir);
    let dead = dead_lettered(&mut kafka, dir);
    eprintln!(
        "tables written after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    spark.wait_ready();
    let mut all = Vec::new();

    let answer = check(&mut spark, &every, &mut all);
    check_history("every_type", &answer, false, &mut all);
    let answer = check(&mut spark, &partitioned, &mut all);
    check_history("partitioned", &answer, false, &mut all);
    if answer["detail"]["partitionColumns"] != json!(["site", "day"]) {
        all.push(format!(
            "partitioned: Spark sees partition columns {}",
            answer["detail"]["partitionColumns"]
        ));
    }
    let answer = check(&mut spark, &rescued, &mut all);
    check_history("rescued", &answer, false, &mut all);
    let answer = check(&mut spark, &dead, &mut all);
    check_history("dead_lettered", &answer, false, &mut all);
    check_reset_history("dead_lettered", &answer, &mut all);
    let answer = spark.request(
        json!({"op": "check_dead_letter", "name": "dead_letter", "path": dead.ingestion.dead_letter,
               "expected": dead.expected}),
        CHECK_TIMEOUT,
    );
    all.extend(problems(&answer));
    let bad = std::fs::read_to_string(&dead.expected)
        .expect("expected")
        .matches("\"bad\":true")
        .count();
    if answer["rows"] != json!(bad) {
        all.push(format!(
            "dead_letter: Spark read {} rows, {bad} records were bad",
            answer["rows"]
        ));
    }
    let status = many_worker.wait(Duration::from_secs(600));
    assert!(
        status.success(),
        "many_commits: the worker failed ({status}); its log:\n{}",
        many_worker.log()
    );
    eprintln!(
        "many_commits: {MANY_COMMITS} commits written {:.1} s after they were started",
        started_many.elapsed().as_secs_f64()
    );
    let answer = check(&mut spark, &many, &mut all);
    check_history("many_commits", &answer, false, &mut all);
    let versions = answer["history"].as_array().map_or(0, Vec::len);
    if versions <= MANY_COMMITS {
        all.push(format!("many_commits: DESCRIBE HISTORY has {versions} versions, expected more than {MANY_COMMITS}"));
    }
    let checkpoints = std::fs::read_dir(many.ingestion.table.join("_delta_log"))
        .expect("_delta_log")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    if checkpoints < MANY_COMMITS / 10 {
        all.push(format!(
            "many_commits: {checkpoints} Delta log checkpoints for {MANY_COMMITS} commits"
        ));
    }

    streaming_read_while_appending_and_compacting(&mut spark, &mut kafka, dir, &mut all);
    let outcomes = spark_created_tables(&mut spark, &mut kafka, dir, &mut all);
    eprintln!(
        "tables Spark created, then Tributary appended to:\n  {}",
        outcomes.join("\n  ")
    );

    eprintln!("suite done in {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        all.is_empty(),
        "Spark disagrees with Tributary's tables ({} problems):\n{}",
        all.len(),
        all.join("\n")
    );
}

/// A Spark `readStream.format("delta")` over a table the worker keeps appending to and
/// compacting (dataChange=false) receives every record exactly once.
fn streaming_read_while_appending_and_compacting(
    spark: &mut Spark,
    kafka: &mut Kafka,
    dir: &Path,
    all: &mut Vec<String>,
) {
    const WAVES: usize = 12;
    const PER_WAVE: usize = 25;
    let topic = "appended";
    kafka.topic(topic, 2);
    let mut ingestion = Ingestion::new(dir, topic, SENSOR);
    ingestion.trigger = "{}".into();
    let worker = Worker::start(
        &ingestion,
        &kafka.bootstrap,
        &[
            ("TRIBUTARY_COMPACTION_INTERVAL_SECONDS", "1"),
            ("TRIBUTARY_COMPACTION_MIN_FILES", "4"),
        ],
    );
    let table = ingestion.table.clone();
    let mut produced = Vec::new();
    let wave = |kafka: &mut Kafka, produced: &mut Vec<Produced>, n: usize| {
        let writes_before = log_operations(&table)
            .values()
            .filter(|o| *o == "WRITE")
            .count();
        for i in 0..PER_WAVE {
            let value = data::reading(n * PER_WAVE + i);
            produced.push(kafka.send(topic, (i % 2) as i32, None, &value, false));
        }
        kafka.flush();
        // One commit per wave: many small files for compaction to merge.
        wait_for(
            &format!("wave {n} to be committed"),
            Duration::from_secs(60),
            || {
                log_operations(&table)
                    .values()
                    .filter(|o| *o == "WRITE")
                    .count()
                    > writes_before
            },
        );
    };
    wave(kafka, &mut produced, 0);
    let checkpoint = dir.join("appended").join("spark-stream-checkpoint");
    spark.request(
        json!({"op": "stream_start", "id": "appended", "path": table, "checkpoint": checkpoint}),
        CHECK_TIMEOUT,
    );
    wait_for(
        "the stream to receive rows",
        Duration::from_secs(120),
        || {
            spark.request(
                json!({"op": "stream_rows", "id": "appended"}),
                CHECK_TIMEOUT,
            )["rows"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    );
    let stream_started_at = *log_operations(&table).keys().last().expect("a version");
    for n in 1..WAVES {
        wave(kafka, &mut produced, n);
    }
    wait_for(
        "a compaction after the stream started",
        Duration::from_secs(120),
        || {
            log_operations(&table)
                .iter()
                .any(|(v, o)| *v > stream_started_at && o == "OPTIMIZE")
        },
    );
    // Appends after the compaction reach the stream too.
    wave(kafka, &mut produced, WAVES);
    worker.terminate();
    let expected = ingestion.dir().join("expected.jsonl");
    write_expected(&expected, &produced);
    let answer = spark.request(
        json!({"op": "stream_finish", "id": "appended", "expected": expected}),
        CHECK_TIMEOUT,
    );
    all.extend(problems(&answer));
    eprintln!(
        "appended: the stream received {} rows ({} distinct) in {} micro-batches; log {:?}",
        answer["rows"],
        answer["distinct"],
        answer["batches"],
        log_operations(&table).values().collect::<Vec<_>>()
    );
    // The compacted table, read as a batch, holds every record once too.
    let answer = check(
        spark,
        &Written {
            ingestion,
            expected,
        },
        all,
    );
    check_history("appended", &answer, true, all);
}
