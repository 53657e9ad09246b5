//! A Spark query hands over to Tributary: the seed's own pipeline (`readStream` kafka ->
//! `from_json` -> `writeStream` delta with a checkpoint) ingests part of a topic on Apache Kafka
//! and stops, once cleanly and once killed in the middle of a batch; `tributary-worker run
//! --from-spark-checkpoint` then continues into the same table, and Spark must find every
//! produced offset in it exactly once across both writers. The refusals (a Spark query still
//! running, another query's checkpoint, other topics) are checked on the same checkpoints.
//!
//! The killed query's checkpoint is also copied to Azure Blob Storage (Azurite), and its
//! takeover reads it from there by an abfss:// URL, as a Databricks job's checkpoint on ADLS is
//! read: credentials from the environment (object_store's emulator switch here; AKS workload
//! identity's variables in a cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::data::{self, SENSOR};
use super::harness::{Spark, problems};
use super::lake::{Ingestion, Produced, Worker, log_operations, wait_for, write_expected};
use crate::kafka::Kafka;
use tributary_testkit::azurite::{ACCOUNT, Azurite};

const TIMEOUT: Duration = Duration::from_secs(300);
/// Records on each topic before Spark stops, and after.
const BEFORE: usize = 600;
const AFTER: usize = 400;
/// Spark reads this many records per batch, so that it stops with the topic half read.
const PER_BATCH: u64 = 40;
/// The worker's quiet period in the test: how long the Spark checkpoint must be unchanged.
const QUIET_SECONDS: u64 = 2;

/// A topic the test produces to, with each record's offset written down.
struct Topic {
    name: String,
    next: BTreeMap<i32, i64>,
    produced: Vec<Produced>,
}

impl Topic {
    fn new(kafka: &Kafka, name: &str) -> Topic {
        kafka.topic(name, 2);
        Topic {
            name: name.to_string(),
            next: BTreeMap::from([(0, 0), (1, 0)]),
            produced: Vec::new(),
        }
    }

    /// Sends readings `from..from + count` (alternating partitions) and checks that the broker
    /// numbered them as counted.
    fn produce(&mut self, kafka: &Kafka, from: usize, count: usize) {
        for n in from..from + count {
            let partition = (n % 2) as i32;
            let value = data::reading(n);
            kafka.send(&self.name, partition, None, value.as_bytes());
            let next = self
                .next
                .get_mut(&partition)
                .expect("a partition of the topic");
            self.produced.push(Produced {
                topic: self.name.clone(),
                partition,
                offset: *next,
                key: None,
                value,
                bad: false,
            });
            *next += 1;
        }
        kafka.flush();
        for (partition, next) in &self.next {
            assert_eq!(
                kafka.watermarks(&self.name, *partition).1,
                *next,
                "{}-{partition}: the broker's offsets are not the ones counted",
                self.name
            );
        }
    }
}

/// The batch ids in a Spark checkpoint's `offsets/` or `commits/`.
fn batches(checkpoint: &Path, log: &str) -> BTreeSet<i64> {
    std::fs::read_dir(checkpoint.join(log))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// How long ago the newest file of `offsets/` and `commits/` changed.
fn quiet_for(checkpoint: &Path) -> Duration {
    ["offsets", "commits"]
        .iter()
        .flat_map(|log| {
            batches(checkpoint, log)
                .into_iter()
                .map(move |b| checkpoint.join(log).join(b.to_string()))
        })
        .filter_map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .map(|modified| {
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default()
        })
        .min()
        .unwrap_or(Duration::MAX)
}

/// The ingestion Tributary continues with: the table and topic Spark wrote, the Kafka
/// coordinates as columns (Spark's query selects them too), no `_rescued_data` (Spark's table
/// has none).
fn ingestion(dir: &Path, topic: &str) -> Ingestion {
    let mut ingestion = Ingestion::new(dir, topic, SENSOR);
    ingestion.on_error = "fail".into();
    ingestion
}

fn spark_checkpoint(ingestion: &Ingestion) -> PathBuf {
    ingestion.dir().join("spark-checkpoint")
}

/// Starts the seed's pipeline in `spark` for `ingestion`'s topic and table.
fn start_spark_query(spark: &mut Spark, kafka: &Kafka, ingestion: &Ingestion) -> String {
    let answer = spark.request(
        json!({
            "op": "ingest_start",
            "id": ingestion.name,
            "bootstrap": kafka.bootstrap,
            "topic": ingestion.topic,
            "columns": ingestion.columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "path": ingestion.table,
            "checkpoint": spark_checkpoint(ingestion),
            "trigger": "200 milliseconds",
            "max_offsets_per_trigger": PER_BATCH,
        }),
        TIMEOUT,
    );
    answer["query_id"]
        .as_str()
        .expect("the Spark query's id")
        .to_string()
}

/// Where a Spark checkpoint is, and the worker's environment to reach it.
struct SparkCheckpointAt {
    location: String,
    env: Vec<(String, String)>,
}

impl SparkCheckpointAt {
    fn path(path: &Path) -> SparkCheckpointAt {
        SparkCheckpointAt {
            location: path.to_str().expect("a UTF-8 path").to_string(),
            env: Vec::new(),
        }
    }

    /// `dir` copied into Azurite's container `spark` under `name`, read by URL with the
    /// emulator's well-known account (object_store's emulator switch, from the environment).
    fn adls(azurite: &Azurite, dir: &Path, name: &str) -> SparkCheckpointAt {
        let copied = azurite.upload(dir, "spark", name);
        assert!(copied > 3, "{copied} files in {}", dir.display());
        let mut env = azurite.env();
        env.push(("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()));
        SparkCheckpointAt {
            location: format!("abfss://spark@{ACCOUNT}.dfs.core.windows.net/{name}"),
            env,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Runs the worker with `--from-spark-checkpoint` to its end; returns its exit and log.
fn take_over(
    ingestion: &Ingestion,
    kafka: &Kafka,
    spark_checkpoint: &SparkCheckpointAt,
    quiet_seconds: u64,
) -> (bool, String) {
    let quiet = quiet_seconds.to_string();
    let mut worker = Worker::start_with_args(
        ingestion,
        &kafka.bootstrap,
        &spark_checkpoint.env(),
        &[
            "--from-spark-checkpoint",
            &spark_checkpoint.location,
            "--spark-quiet-seconds",
            &quiet,
        ],
    );
    let status = worker.wait(Duration::from_secs(180));
    (status.success(), worker.log())
}

/// Runs the worker on a manifest whose spec.checkpoint.fromSpark names the Spark checkpoint.
fn take_over_by_spec(
    ingestion: &Ingestion,
    kafka: &Kafka,
    spark_checkpoint: &SparkCheckpointAt,
) -> (bool, String) {
    let mut with_spec = ingestion.clone();
    with_spec.from_spark = Some((spark_checkpoint.location.clone(), QUIET_SECONDS));
    let mut worker =
        Worker::start_with_args(&with_spec, &kafka.bootstrap, &spark_checkpoint.env(), &[]);
    let status = worker.wait(Duration::from_secs(180));
    (status.success(), worker.log())
}

/// Refusals: the worker must fail, its error naming `wanted`, and write nothing to the table.
fn expect_refusal(
    what: &str,
    ingestion: &Ingestion,
    kafka: &Kafka,
    spark_checkpoint: &SparkCheckpointAt,
    quiet_seconds: u64,
    wanted: &str,
    all: &mut Vec<String>,
) {
    let versions_before = log_operations(&ingestion.table).len();
    let (ok, log) = take_over(ingestion, kafka, spark_checkpoint, quiet_seconds);
    let error = log
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("(no error line)")
        .to_string();
    if ok {
        all.push(format!(
            "{what}: the worker took over instead of refusing; log:\n{log}"
        ));
    } else if !error.contains(wanted) {
        all.push(format!(
            "{what}: the refusal does not say {wanted:?}: {error}"
        ));
    } else {
        eprintln!("{what}: refused as expected: {error}");
    }
    if log_operations(&ingestion.table).len() != versions_before {
        all.push(format!("{what}: the refusal wrote to the table"));
    }
}

/// The commits of each writer in a table: (Spark's streaming updates, Tributary's writes).
fn writers(table: &Path) -> (usize, usize) {
    let operations = log_operations(table);
    let spark = operations
        .values()
        .filter(|o| *o == "STREAMING UPDATE")
        .count();
    let tributary = operations.values().filter(|o| *o == "WRITE").count();
    (spark, tributary)
}

/// Checks a table against every record produced to its topic.
fn check_table(spark: &mut Spark, ingestion: &Ingestion, topic: &Topic, all: &mut Vec<String>) {
    let expected = ingestion.dir().join("expected.jsonl");
    write_expected(&expected, &topic.produced);
    let answer: Value = spark.request(ingestion.check_request(&expected), TIMEOUT);
    all.extend(problems(&answer));
    if answer["rows"] != json!(topic.produced.len()) {
        all.push(format!(
            "{}: Spark read {} rows, {} records were produced",
            ingestion.name,
            answer["rows"],
            topic.produced.len()
        ));
    }
    let (spark_commits, tributary_commits) = writers(&ingestion.table);
    if spark_commits == 0 || tributary_commits == 0 {
        all.push(format!(
            "{}: the table has {spark_commits} Spark and {tributary_commits} Tributary commits; both writers should have written",
            ingestion.name
        ));
    }
    eprintln!(
        "{}: {} rows, every offset once; {spark_commits} Spark batches then {tributary_commits} Tributary commits",
        ingestion.name, answer["rows"]
    );
}

#[test]
fn a_spark_query_hands_over_to_tributary_exactly_once() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("spark-takeover-")
        .tempdir()
        .expect("tempdir");
    let dir = dir.path();
    // Two drivers: the one killed mid-batch, and the one that stops cleanly and then checks.
    let mut doomed = Spark::start(&dir.join("spark-killed"));
    let mut spark = Spark::start(&dir.join("spark"));
    let kafka = Kafka::start();
    let azurite = Azurite::start();
    azurite.create_container("spark");
    let mut stopped_topic = Topic::new(&kafka, "stopped");
    let mut killed_topic = Topic::new(&kafka, "killed");
    stopped_topic.produce(&kafka, 0, BEFORE);
    killed_topic.produce(&kafka, 0, BEFORE);
    let stopped = ingestion(dir, "stopped");
    let killed = ingestion(dir, "killed");
    let mut all = Vec::new();

    doomed.wait_ready();
    spark.wait_ready();
    let killed_query = start_spark_query(&mut doomed, &kafka, &killed);
    let stopped_query = start_spark_query(&mut spark, &kafka, &stopped);
    eprintln!("Spark queries {stopped_query} (stopped) and {killed_query} (killed) running");

    // While the Spark query runs, a takeover is refused: its checkpoint keeps moving.
    wait_for(
        "Spark to commit three batches of `stopped`",
        TIMEOUT,
        || batches(&spark_checkpoint(&stopped), "commits").len() >= 3,
    );
    let mut running = ingestion(dir, "stopped");
    running.checkpoint = dir.join("refused-running");
    expect_refusal(
        "Spark still running",
        &running,
        &kafka,
        &SparkCheckpointAt::path(&spark_checkpoint(&stopped)),
        120,
        "may still be running",
        &mut all,
    );
    let answer = spark.request(json!({"op": "ingest_stop", "id": stopped.name}), TIMEOUT);
    assert!(
        answer["error"].is_null(),
        "the Spark query failed: {answer}"
    );

    // Kill the other driver while a batch is planned (offsets/N) and not committed (commits/N).
    let killed_checkpoint = spark_checkpoint(&killed);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let planned = batches(&killed_checkpoint, "offsets");
        let committed = batches(&killed_checkpoint, "commits");
        if committed.len() >= 3 && planned.last() > committed.last() {
            doomed.kill();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no batch of `killed` was in flight within {TIMEOUT:?}\n{}",
            doomed.log_tail()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let planned = batches(&killed_checkpoint, "offsets");
    let committed = batches(&killed_checkpoint, "commits");
    eprintln!(
        "killed Spark with batches {:?} planned and {:?} committed; the table's log: {:?}",
        planned.last(),
        committed.last(),
        log_operations(&killed.table).values().collect::<Vec<_>>()
    );
    assert!(
        planned.last() > committed.last(),
        "the kill did not land in the middle of a batch"
    );
    // The killed query's checkpoint on ADLS; just copied, so it looks like a running query's
    // (its objects' last-modified times are now).
    let killed_on_adls = SparkCheckpointAt::adls(&azurite, &killed_checkpoint, "killed");
    let mut running_on_adls = ingestion(dir, "killed");
    running_on_adls.checkpoint = dir.join("refused-running-adls");
    expect_refusal(
        "Spark still running, its checkpoint on ADLS",
        &running_on_adls,
        &kafka,
        &killed_on_adls,
        120,
        "may still be running",
        &mut all,
    );

    // Spark has stopped with part of each topic read; more records arrive.
    stopped_topic.produce(&kafka, BEFORE, AFTER);
    killed_topic.produce(&kafka, BEFORE, AFTER);
    wait_for(
        "the Spark checkpoints to be quiet",
        Duration::from_secs(60),
        || {
            quiet_for(&spark_checkpoint(&stopped)) > Duration::from_secs(QUIET_SECONDS + 1)
                && quiet_for(&killed_checkpoint) > Duration::from_secs(QUIET_SECONDS + 1)
        },
    );

    // Refusals: another query's checkpoint (the table has no commit of it), other topics.
    let mut wrong_checkpoint = ingestion(dir, "killed");
    wrong_checkpoint.checkpoint = dir.join("refused-checkpoint");
    expect_refusal(
        "another query's checkpoint",
        &wrong_checkpoint,
        &kafka,
        &SparkCheckpointAt::path(&spark_checkpoint(&stopped)),
        QUIET_SECONDS,
        "disagree",
        &mut all,
    );
    let mut wrong_topic = ingestion(dir, "stopped");
    wrong_topic.topic = "killed".into();
    wrong_topic.checkpoint = dir.join("refused-topic");
    expect_refusal(
        "other topics",
        &wrong_topic,
        &kafka,
        &SparkCheckpointAt::path(&spark_checkpoint(&stopped)),
        QUIET_SECONDS,
        "sources differ",
        &mut all,
    );

    // The takeovers: one by the command line's flag from a directory, one by the manifest's
    // spec.checkpoint.fromSpark (what the operator's workers run) from ADLS.
    let stopped_at = SparkCheckpointAt::path(&spark_checkpoint(&stopped));
    for (ingestion, topic, at, by_spec) in [
        (&stopped, &stopped_topic, &stopped_at, false),
        (&killed, &killed_topic, &killed_on_adls, true),
    ] {
        let (ok, log) = if by_spec {
            take_over_by_spec(ingestion, &kafka, at)
        } else {
            take_over(ingestion, &kafka, at, QUIET_SECONDS)
        };
        assert!(ok, "{}: the takeover failed; log:\n{log}", ingestion.name);
        let line = log
            .lines()
            .find(|l| l.contains("taking over from the Spark query"))
            .unwrap_or("(no takeover line in the log)");
        eprintln!("{}: {line}", ingestion.name);
        check_table(&mut spark, ingestion, topic, &mut all);
    }

    eprintln!(
        "takeover suite done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        all.is_empty(),
        "the takeover from Spark went wrong ({} problems):\n{}",
        all.len(),
        all.join("\n")
    );
}
