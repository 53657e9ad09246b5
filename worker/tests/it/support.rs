//! Test support: Apache Kafka brokers ([`Broker`], from tributary-testkit) or librdkafka's mock cluster
//! in the test process ([`MockBroker`]: no JVM, for the tests that only need records to read),
//! the worker as a real child process, and an independent Delta reader (the `_delta_log` JSON
//! replayed with serde_json, the Parquet files read with the parquet crate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

pub const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

/// Apache Kafka: the broker of every test that proves what the worker does with Kafka.
pub use tributary_testkit::kafka::Kafka as Broker;
pub use tributary_testkit::kafka::{producer, send};

/// librdkafka's mock cluster on 127.0.0.1, living as long as this value: the same interface as
/// [`Broker`] without a JVM, for tests about the table side (storage, pods).
pub struct MockBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl MockBroker {
    pub fn start() -> MockBroker {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let bootstrap = cluster.bootstrap_servers();
        let producer = producer(&bootstrap);
        MockBroker {
            cluster,
            bootstrap,
            producer,
        }
    }

    pub fn topic(&self, name: &str, partitions: i32) {
        self.cluster
            .create_topic(name, partitions, 1)
            .expect("create topic");
    }

    /// Produces to an explicit partition; the broker numbers offsets from 0 in order.
    pub fn send(&self, topic: &str, partition: i32, key: Option<&[u8]>, value: &[u8]) {
        send(&self.producer, topic, partition, key, value);
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

/// A test's directory: manifest, table, checkpoint, outputs.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Keep the directory for a post-mortem when asked.
        if std::env::var_os("TRIBUTARY_KEEP_TEST_DIRS").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            let _ = kept.keep();
        }
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("TRIBUTARY_KEEP_TEST_DIRS").is_some() {
            eprintln!("test directory {}", dir.path().display());
        }
        Workspace { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn table(&self) -> PathBuf {
        self.path("table")
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

/// The schema most tests use: a sensor reading.
pub const SENSOR_SCHEMA: &str = r#"
        - {name: device_id, type: string, nullable: false}
        - {name: site, type: string}
        - {name: temperature, type: double}
        - {name: battery_pct, type: int}
        - {name: timestamp, type: timestamp}"#;

/// A manifest with the given name, source block (under `kafka:`), extra format lines, trigger.
pub struct Manifest<'a> {
    pub name: &'a str,
    pub source: String,
    pub schema: &'a str,
    pub on_error: &'a str,
    pub extra_format: String,
    pub metadata: &'a str,
    pub table: PathBuf,
    pub checkpoint: PathBuf,
    pub trigger: &'a str,
    pub sink_extra: &'a str,
    /// Lines under `checkpoint:` (indented by four spaces), e.g. storage options.
    pub checkpoint_extra: String,
    /// librdkafka options. The mock broker makes a joining consumer wait a whole session
    /// timeout when the group had members before (even ones that left cleanly), so tests use a
    /// short one.
    pub options: Vec<(String, String)>,
    /// Lines at the end of `spec:` (indented by two spaces), e.g. a reset.
    pub spec_extra: String,
}

impl Manifest<'_> {
    pub fn subscribe<'a>(ws: &Workspace, name: &'a str, topic: &str) -> Manifest<'a> {
        Manifest {
            name,
            source: format!("subscribe: [{topic}]\n      startingOffsets: earliest"),
            schema: SENSOR_SCHEMA,
            on_error: "rescue",
            extra_format: String::new(),
            metadata: "[topic, partition, offset]",
            table: ws.table(),
            checkpoint: ws.path("checkpoint"),
            trigger: "{availableNow: true}",
            sink_extra: "",
            checkpoint_extra: String::new(),
            options: vec![
                ("session.timeout.ms".into(), "6000".into()),
                ("heartbeat.interval.ms".into(), "500".into()),
            ],
            spec_extra: String::new(),
        }
    }

    pub fn option(&mut self, key: &str, value: &str) {
        self.options.push((key.to_string(), value.to_string()));
    }

    pub fn render(&self) -> String {
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}: '{v}'"))
            .collect();
        let source = format!("{}\n      options: {{{}}}", self.source, options.join(", "));
        // A URL (an object store) needs no volume: `table` and `checkpoint` may hold one.
        let is_url = |p: &Path| p.to_string_lossy().contains("://");
        let table_volume = if is_url(&self.table) {
            ""
        } else {
            "\n      volume: {claimName: lake}"
        };
        let checkpoint_volume = if is_url(&self.checkpoint) {
            ""
        } else {
            "\n    volume: {size: 1Gi}"
        };
        format!(
            r#"apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: {name}
  namespace: test
spec:
  source:
    kafka:
      bootstrapServers: 127.0.0.1:1
      {source}
  format:
    json:
      schema:{schema}
      onError: {on_error}
{extra_format}
  metadataColumns: {metadata}
  sink:
    delta:
      uri: {table}{table_volume}
{sink_extra}
  checkpoint:
    location: {checkpoint}{checkpoint_volume}
{checkpoint_extra}
  trigger: {trigger}
{spec_extra}
"#,
            name = self.name,
            source = source,
            schema = self.schema,
            on_error = self.on_error,
            extra_format = self.extra_format,
            metadata = self.metadata,
            table = self.table.display(),
            sink_extra = self.sink_extra,
            checkpoint = self.checkpoint.display(),
            checkpoint_extra = self.checkpoint_extra,
            trigger = self.trigger,
            spec_extra = self.spec_extra,
        )
    }
}

/// A worker child process with its output in files.
pub struct Worker {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Worker {
    pub fn start(ws: &Workspace, manifest: &Path, bootstrap: &str, tag: &str) -> Worker {
        // A small read-ahead, so that pausing and resuming partitions happens in every test.
        Self::start_with_env(
            ws,
            manifest,
            bootstrap,
            tag,
            &[("TRIBUTARY_READ_AHEAD_RECORDS", "150")],
        )
    }

    pub fn start_with_env(
        ws: &Workspace,
        manifest: &Path,
        bootstrap: &str,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Worker {
        let stdout = ws.path(&format!("{tag}.stdout"));
        let stderr = ws.path(&format!("{tag}.stderr"));
        let mut command = Command::new(WORKER);
        command
            .args(["run", "-f"])
            .arg(manifest)
            .args(["--bootstrap-servers", bootstrap])
            .env("RUST_LOG", "warn,tributary_worker=info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start the worker");
        Worker {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the worker to exit, failing the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "worker did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// How the worker ended, or None while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The progress records printed so far.
    pub fn progress(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Runs a worker to completion and returns it with its status.
pub fn run_to_end(
    ws: &Workspace,
    manifest: &Path,
    bootstrap: &str,
    tag: &str,
) -> (Worker, ExitStatus) {
    let mut worker = Worker::start(ws, manifest, bootstrap, tag);
    let status = worker.wait(Duration::from_secs(90));
    (worker, status)
}

/// Runs a worker that must stop with an error (a refused manifest, checkpoint or record) and
/// returns what it printed on stderr; `why` says why it must stop, for the failure message.
pub fn run_refused(
    ws: &Workspace,
    manifest: &Path,
    bootstrap: &str,
    tag: &str,
    why: &str,
) -> String {
    let (worker, status) = run_to_end(ws, manifest, bootstrap, tag);
    let stderr = worker.stderr_text();
    assert!(!status.success(), "{why}: {stderr}");
    stderr
}

/// Polls `condition` until it holds, failing after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    wait_for_or_explain(what, timeout, condition, String::new);
}

/// [`wait_for`], whose failure adds what `explain` says then (the last answer seen, a log).
pub fn wait_for_or_explain(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Delta table read without deltalake's table API.
pub struct TableSnapshot {
    /// The last version in the log.
    pub version: i64,
    pub txns: BTreeMap<String, i64>,
    pub batches: Vec<RecordBatch>,
    pub files: usize,
    pub schema_string: String,
    pub partition_columns: Vec<String>,
}

/// Replays `_delta_log/*.json` (add, remove, txn, metaData) and reads the live Parquet files.
pub fn read_table(table: &Path) -> TableSnapshot {
    try_read_table(table).unwrap_or_else(|e| panic!("{e}"))
}

/// [`read_table`] for a table that may not exist yet, or whose files a running VACUUM may
/// delete between the log replay and the Parquet reads: those two are errors, not panics.
pub fn try_read_table(table: &Path) -> Result<TableSnapshot, String> {
    let log = table.join("_delta_log");
    let mut commits: Vec<(i64, PathBuf)> = std::fs::read_dir(&log)
        .map_err(|e| format!("read {}: {e}", log.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            Some((stem.parse().ok()?, p))
        })
        .collect();
    commits.sort();
    let mut live: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut txns = BTreeMap::new();
    let mut schema_string = String::new();
    let mut partition_columns = Vec::new();
    let mut version = -1;
    for (commit_version, path) in &commits {
        assert_eq!(*commit_version, version + 1, "the log has no gaps");
        version = *commit_version;
        let text = std::fs::read_to_string(path).expect("read commit");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: Value = serde_json::from_str(line).expect("commit line is JSON");
            if let Some(add) = action.get("add") {
                let path = add["path"].as_str().expect("add.path").to_string();
                let values = add["partitionValues"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                live.insert(path, values);
            }
            if let Some(remove) = action.get("remove") {
                live.remove(remove["path"].as_str().expect("remove.path"));
            }
            if let Some(txn) = action.get("txn") {
                txns.insert(
                    txn["appId"].as_str().expect("appId").to_string(),
                    txn["version"].as_i64().expect("txn version"),
                );
            }
            if let Some(metadata) = action.get("metaData") {
                schema_string = metadata["schemaString"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                partition_columns = metadata["partitionColumns"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
    }
    let mut batches = Vec::new();
    for (file, partition_values) in &live {
        let decoded = percent_decode(file);
        let data_file = table.join(&decoded);
        let opened = std::fs::File::open(&data_file)
            .map_err(|e| format!("open {}: {e}", data_file.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(opened)
            .expect("parquet reader")
            .build()
            .expect("parquet batches");
        for batch in reader {
            let batch = batch.expect("parquet batch");
            batches.push(with_partition_values(batch, partition_values));
        }
    }
    Ok(TableSnapshot {
        version,
        txns,
        batches,
        files: live.len(),
        schema_string,
        partition_columns,
    })
}

/// Adds the partition columns (strings) a Parquet file of a partitioned table does not hold.
fn with_partition_values(
    batch: RecordBatch,
    values: &BTreeMap<String, Option<String>>,
) -> RecordBatch {
    use deltalake::arrow::array::StringArray;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    if values.is_empty() {
        return batch;
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns = batch.columns().to_vec();
    for (name, value) in values {
        fields.push(Field::new(name, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(vec![
            value.clone();
            batch.num_rows()
        ])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch with partitions")
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 path")
}

impl TableSnapshot {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// (topic, partition, offset) of every row, from the kafka_* columns.
    pub fn coordinates(&self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for batch in &self.batches {
            let topics = batch
                .column_by_name("kafka_topic")
                .expect("kafka_topic")
                .as_string::<i32>();
            let partitions = batch
                .column_by_name("kafka_partition")
                .expect("kafka_partition")
                .as_primitive::<Int32Type>();
            let offsets = batch
                .column_by_name("kafka_offset")
                .expect("kafka_offset")
                .as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                out.push((
                    topics.value(i).to_string(),
                    partitions.value(i),
                    offsets.value(i),
                ));
            }
        }
        out.sort();
        out
    }

    /// A string column by (partition, offset), None for nulls.
    pub fn strings_by_offset(&self, column: &str) -> BTreeMap<(i32, i64), Option<String>> {
        let mut out = BTreeMap::new();
        for batch in &self.batches {
            let partitions = batch
                .column_by_name("kafka_partition")
                .expect("kafka_partition")
                .as_primitive::<Int32Type>();
            let offsets = batch
                .column_by_name("kafka_offset")
                .expect("kafka_offset")
                .as_primitive::<Int64Type>();
            let values = batch
                .column_by_name(column)
                .unwrap_or_else(|| panic!("column {column}"));
            let values = values.as_string::<i32>();
            for i in 0..batch.num_rows() {
                let value = (!values.is_null(i)).then(|| values.value(i).to_string());
                out.insert((partitions.value(i), offsets.value(i)), value);
            }
        }
        out
    }

    /// The txn version of a partition (whatever the query id).
    pub fn txn_for(&self, topic: &str, partition: i32) -> Option<i64> {
        let suffix = format!("-{topic}-{partition}");
        self.txns
            .iter()
            .find(|(id, _)| id.ends_with(&suffix) && !id.contains("-deadletter-"))
            .map(|(_, v)| *v)
    }
}

/// Every (topic, partition, offset) below `ends`, in order.
pub fn expected_coordinates(ends: &BTreeMap<(String, i32), i64>) -> Vec<(String, i32, i64)> {
    let mut out = Vec::new();
    for ((topic, partition), end) in ends {
        for offset in 0..*end {
            out.push((topic.clone(), *partition, offset));
        }
    }
    out
}

/// A sensor reading as JSON.
pub fn reading(device: usize, site: &str, temperature: f64) -> String {
    format!(
        r#"{{"device_id":"d-{device}","site":"{site}","temperature":{temperature},"battery_pct":{},"timestamp":"2026-01-01T00:00:{:02}Z"}}"#,
        device % 100,
        device % 60
    )
}

/// The txn versions of a table's log (cheap: no data files read); empty before the first commit.
pub fn table_txns(table: &Path) -> BTreeMap<String, i64> {
    let mut txns = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) else {
        return txns;
    };
    let mut commits: Vec<(i64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    commits.sort();
    for (_, path) in commits {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(action) = serde_json::from_str::<Value>(line)
                && let Some(txn) = action.get("txn")
            {
                txns.insert(
                    txn["appId"].as_str().unwrap_or_default().to_string(),
                    txn["version"].as_i64().unwrap_or_default(),
                );
            }
        }
    }
    txns
}

/// A small deterministic generator for kill times; the seed is printed so a failure can be
/// replayed.
pub struct Random(u64);

impl Random {
    pub fn from_time() -> Random {
        let seed = std::env::var("TRIBUTARY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        eprintln!("random seed {seed} (set TRIBUTARY_TEST_SEED to replay)");
        Random(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The `commitInfo` of each commit in the table's log, in version order.
pub fn commit_infos(table: &Path) -> Vec<Value> {
    let mut commits: Vec<(i64, String)> = std::fs::read_dir(table.join("_delta_log"))
        .expect("the table's log")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "json").then_some(path)
        })
        .filter_map(|path| {
            let version = path.file_stem()?.to_str()?.parse().ok()?;
            Some((version, std::fs::read_to_string(&path).ok()?))
        })
        .collect();
    commits.sort();
    commits
        .iter()
        .flat_map(|(_, text)| text.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| {
            let mut action: Value = serde_json::from_str(&line).ok()?;
            Some(action.get_mut("commitInfo")?.take())
        })
        .collect()
}
