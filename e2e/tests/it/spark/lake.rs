//! The writing side of the Spark suite: a Kafka-protocol broker on 127.0.0.1 (librdkafka's mock
//! cluster, in the test process), records produced with their Kafka coordinates written down,
//! and the real `tributary-worker run -f manifest.yaml` writing the Delta tables.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

/// The worker binary: $TRIBUTARY_WORKER_BIN, else the one cargo built beside this test binary
/// (`cargo nextest run --workspace` builds it; `cargo build -p tributary-worker` otherwise).
pub fn worker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TRIBUTARY_WORKER_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/it-<hash> -> target/<profile>/tributary-worker
    let worker = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("tributary-worker"))
        .expect("the test binary's directory");
    assert!(
        worker.is_file(),
        "{} is missing: build it with `cargo build -p tributary-worker` (or set TRIBUTARY_WORKER_BIN)",
        worker.display()
    );
    worker
}

/// One record the test produced, as written to a table's `expected.jsonl`.
#[derive(Clone, Debug)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    /// Made bad on purpose (rescued or dead-lettered).
    pub bad: bool,
}

/// A broker on 127.0.0.1 that lives as long as this value.
pub struct Kafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// The next offset of each (topic, partition): the broker numbers a partition's records
    /// from 0 in the order an idempotent producer sends them.
    next: BTreeMap<(String, i32), i64>,
}

impl Kafka {
    pub fn start() -> Kafka {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let bootstrap = cluster.bootstrap_servers();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        Kafka {
            cluster,
            bootstrap,
            producer,
            next: BTreeMap::new(),
        }
    }

    pub fn topic(&mut self, name: &str, partitions: i32) {
        self.cluster
            .create_topic(name, partitions, 1)
            .expect("create topic");
        for partition in 0..partitions {
            self.next.insert((name.to_string(), partition), 0);
        }
    }

    /// Sends one record to an explicit partition and returns it with its offset.
    pub fn send(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&str>,
        value: &str,
        bad: bool,
    ) -> Produced {
        let mut record = BaseRecord::<str, str>::to(topic)
            .partition(partition)
            .payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
        let next = self
            .next
            .get_mut(&(topic.to_string(), partition))
            .unwrap_or_else(|| panic!("topic {topic} partition {partition} was not created"));
        let offset = *next;
        *next += 1;
        Produced {
            topic: topic.to_string(),
            partition,
            offset,
            key: key.map(str::to_string),
            value: value.to_string(),
            bad,
        }
    }

    /// Waits for every send, then checks that the broker holds exactly the offsets counted.
    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(60))
            .expect("flush the producer");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("consumer");
        for ((topic, partition), next) in &self.next {
            let (_, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                high, *next,
                "{topic}/{partition}: the broker's offsets are not the ones counted"
            );
        }
    }
}

/// Writes records as JSON lines, the form e2e/spark/checks.py reads them in.
pub fn write_expected(path: &Path, records: &[Produced]) {
    let mut file = std::fs::File::create(path).expect("create expected.jsonl");
    for r in records {
        let line = json!({
            "topic": r.topic, "partition": r.partition, "offset": r.offset,
            "key": r.key, "value": r.value, "bad": r.bad,
        });
        writeln!(file, "{line}").expect("write expected.jsonl");
    }
}

/// One ingestion, rendered as the manifest a user would apply.
#[derive(Clone, Debug)]
pub struct Ingestion {
    pub name: String,
    pub topic: String,
    /// (name, Spark type) of each declared field.
    pub columns: Vec<(String, String)>,
    pub on_error: String,
    pub dead_letter: Option<PathBuf>,
    pub metadata: Vec<String>,
    pub table: PathBuf,
    pub checkpoint: PathBuf,
    pub trigger: String,
    pub partition_by: Vec<String>,
    pub max_offsets_per_trigger: Option<u64>,
    pub checkpoint_interval: Option<u32>,
    /// A Spark checkpointLocation to take over from (spec.checkpoint.fromSpark), with the
    /// seconds it must have been quiet.
    /// spec.checkpoint.fromSpark: the location (a path, mounted from a claim, or a URL) and
    /// the quiet seconds.
    pub from_spark: Option<(String, u64)>,
    /// spec.reset, as a YAML flow mapping: {id: r1, offsets: latest}.
    pub reset: Option<String>,
}

impl Ingestion {
    pub fn new(dir: &Path, name: &str, columns: &[(&str, &str)]) -> Ingestion {
        Ingestion {
            name: name.to_string(),
            topic: name.to_string(),
            columns: columns
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            on_error: "rescue".into(),
            dead_letter: None,
            metadata: vec!["topic".into(), "partition".into(), "offset".into()],
            table: dir.join(name).join("table"),
            checkpoint: dir.join(name).join("checkpoint"),
            trigger: "{availableNow: true}".into(),
            partition_by: Vec::new(),
            max_offsets_per_trigger: None,
            checkpoint_interval: None,
            from_spark: None,
            reset: None,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.table.parent().expect("table dir").to_path_buf()
    }

    pub fn render(&self) -> String {
        let schema: String = self
            .columns
            .iter()
            .map(|(n, t)| format!("\n        - {{name: \"{n}\", type: \"{t}\"}}"))
            .collect();
        let mut source = format!(
            "subscribe: [{}]\n      startingOffsets: earliest",
            self.topic
        );
        if let Some(max) = self.max_offsets_per_trigger {
            source.push_str(&format!("\n      maxOffsetsPerTrigger: {max}"));
        }
        let dead_letter = self
            .dead_letter
            .as_ref()
            .map(|p| format!("\n      deadLetter: {{uri: {}}}", p.display()))
            .unwrap_or_default();
        let mut sink = String::new();
        if !self.partition_by.is_empty() {
            sink.push_str(&format!(
                "\n      partitionBy: [{}]",
                self.partition_by.join(", ")
            ));
        }
        if let Some(interval) = self.checkpoint_interval {
            sink.push_str(&format!("\n      checkpointInterval: {interval}"));
        }
        let from_spark = self
            .from_spark
            .as_ref()
            .map(|(location, quiet)| {
                // A path is on a claim (which a standalone worker ignores); a URL needs none.
                let volume = match Path::new(location).parent() {
                    Some(mount) if location.starts_with('/') => format!(
                        "\n      volume: {{claimName: spark, mountPath: {}}}",
                        mount.display()
                    ),
                    _ => String::new(),
                };
                format!(
                    "\n    fromSpark:\n      location: {location}{volume}\n      quietSeconds: {quiet}"
                )
            })
            .unwrap_or_default();
        format!(
            r#"apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: {name}
  namespace: spark-e2e
spec:
  source:
    kafka:
      bootstrapServers: 127.0.0.1:1
      {source}
  format:
    json:
      schema:{schema}
      onError: {on_error}{dead_letter}
  metadataColumns: [{metadata}]
  sink:
    delta:
      uri: {table}
      volume: {{claimName: lake}}{sink}
  checkpoint:
    location: {checkpoint}
    volume: {{size: 1Gi}}{from_spark}
  trigger: {trigger}{reset}
"#,
            reset = self
                .reset
                .as_ref()
                .map(|r| format!("\n  reset: {r}"))
                .unwrap_or_default(),
            name = self.name.replace('_', "-"),
            on_error = self.on_error,
            metadata = self.metadata.join(", "),
            table = self.table.display(),
            checkpoint = self.checkpoint.display(),
            trigger = self.trigger,
        )
    }

    /// The request fields e2e/spark/checks.py's check_table needs for this table.
    pub fn check_request(&self, expected: &Path) -> Value {
        json!({
            "op": "check_table",
            "name": self.name,
            "path": self.table,
            "expected": expected,
            "columns": self.columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "metadata": self.metadata,
            "rescue": self.on_error == "rescue",
            "bad_rows_in_table": self.on_error == "rescue",
        })
    }
}

/// A worker child process with its output in files.
pub struct Worker {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Worker {
    /// Starts `tributary-worker run -f <dir>/manifest.yaml` with extra environment variables.
    pub fn start(ingestion: &Ingestion, bootstrap: &str, env: &[(&str, &str)]) -> Worker {
        Worker::start_with_args(ingestion, bootstrap, env, &[])
    }

    /// Like [`Worker::start`], with extra arguments to `run`.
    pub fn start_with_args(
        ingestion: &Ingestion,
        bootstrap: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Worker {
        let dir = ingestion.dir();
        std::fs::create_dir_all(&dir).expect("create the ingestion's directory");
        let manifest = dir.join("manifest.yaml");
        std::fs::write(&manifest, ingestion.render()).expect("write the manifest");
        let stderr = dir.join("worker.stderr");
        let mut command = Command::new(worker_bin());
        command
            .args(["run", "-f"])
            .arg(&manifest)
            .args(["--bootstrap-servers", bootstrap])
            .args(args)
            .env("RUST_LOG", "warn,tributary_worker=info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("worker.stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start tributary-worker");
        Worker { child, stderr }
    }

    /// Waits for the worker to exit; panics with its log after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the worker did not exit within {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: the worker finishes or abandons its batch and exits.
    pub fn terminate(&self) {
        // SAFETY: signals our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an availableNow ingestion to its end and checks that it succeeded.
pub fn run_to_end(ingestion: &Ingestion, bootstrap: &str, env: &[(&str, &str)]) -> Worker {
    let mut worker = Worker::start(ingestion, bootstrap, env);
    let status = worker.wait(Duration::from_secs(180));
    assert!(
        status.success(),
        "{}: the worker failed ({status}); its log:\n{}",
        ingestion.name,
        worker.log()
    );
    worker
}

/// The commitInfo operation of every commit in a table's log, by version.
pub fn log_operations(table: &Path) -> BTreeMap<i64, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(version) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(action) = serde_json::from_str::<Value>(line)
                && let Some(operation) = action.pointer("/commitInfo/operation")
            {
                out.insert(version, operation.as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// Polls `condition` until it holds; panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
