//! `bench_vs_spark`: the seed's own pipeline in Spark (`readStream` kafka -> `from_json` ->
//! `writeStream` delta, `trigger(availableNow=True)`, local mode with 2 cores) against
//! `tributary-worker` (availableNow) on the same Apache Kafka broker and the same records, on
//! this machine. Ignored in the suite (minutes of CPU); README's Performance section says how
//! to run it. Both tables are checked: every produced offset exactly once.
//!
//! Measured for each: rows per second (from the start of the query to its end, and from the
//! start of the process), CPU seconds per million rows (the whole process tree: Python and the
//! JVM for Spark), the peak resident set of the process tree, and the time from the start of
//! the process to the first committed row.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::data::{self, SENSOR};
use super::harness::Spark;
use super::lake::{Ingestion, worker_bin};
use tributary_testkit::kafka::Kafka;

const PARTITIONS: i32 = 6;

fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

/// The peak resident set (VmHWM) of a process in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A process and its descendants.
fn tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut index = 0;
    while index < pids.len() {
        let parent = pids[index];
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        index += 1;
    }
    pids
}

/// The commit time (epoch ms) of the first commit with data in a table's log.
fn first_data_commit_ms(table: &Path) -> Option<i64> {
    let mut versions: Vec<(i64, std::path::PathBuf)> = std::fs::read_dir(table.join("_delta_log"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let version = path
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .parse()
                .ok()?;
            Some((version, path))
        })
        .collect();
    versions.sort();
    for (_, path) in versions {
        let text = std::fs::read_to_string(&path).ok()?;
        let actions: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if actions.iter().any(|a| a.get("add").is_some()) {
            return actions
                .iter()
                .find_map(|a| a.pointer("/commitInfo/timestamp").and_then(Value::as_i64));
        }
    }
    None
}

/// One side's figures.
struct Figures {
    name: &'static str,
    rows: u64,
    /// Start of the query (Spark) or process (Tributary) to its end.
    query_seconds: f64,
    /// Start of the process to the end of the query.
    total_seconds: f64,
    cpu_seconds: f64,
    peak_rss_mib: f64,
    first_row_seconds: f64,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.1} |",
            self.name,
            self.rows as f64 / self.query_seconds,
            self.rows as f64 / self.total_seconds,
            self.cpu_seconds / (self.rows as f64 / 1e6),
            self.peak_rss_mib,
            self.first_row_seconds,
        )
    }
}

// The child is reaped by wait4 (which also gives its CPU time), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run_tributary(ingestion: &Ingestion, kafka: &Kafka) -> Figures {
    let dir = ingestion.dir();
    std::fs::create_dir_all(&dir).expect("create the ingestion's directory");
    let manifest = dir.join("manifest.yaml");
    std::fs::write(&manifest, ingestion.render()).expect("write the manifest");
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut child = std::process::Command::new(worker_bin())
        .args(["run", "-f"])
        .arg(&manifest)
        .args(["--bootstrap-servers", &kafka.bootstrap])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(dir.join("worker.stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("worker.stderr")).expect("stderr file"))
        .spawn()
        .expect("start tributary-worker");
    let pid = child.id();
    let mut peak = 0.0_f64;
    let deadline = started + Duration::from_secs(900);
    // wait4 with WNOHANG: the CPU time of exactly this child once it has exited.
    let (status, usage) = loop {
        peak = peak.max(peak_rss_mib(pid));
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; status and usage are valid for writes.
        let reaped = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid as i32 {
            break (status, usage);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the worker did not finish within 900 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let total_seconds = started.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the worker failed; its log:\n{}",
        std::fs::read_to_string(dir.join("worker.stderr")).unwrap_or_default()
    );
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let first = first_data_commit_ms(&ingestion.table).expect("a data commit");
    Figures {
        name: "Tributary (tributary-worker, availableNow)",
        rows: 0,
        query_seconds: total_seconds,
        total_seconds,
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        peak_rss_mib: peak,
        first_row_seconds: (first - epoch_ms(started_at)) as f64 / 1000.0,
    }
}

fn run_spark(dir: &Path, ingestion: &Ingestion, kafka: &Kafka) -> (Figures, Spark) {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut spark = Spark::start(&dir.join("spark"));
    spark.wait_ready();
    let pids = tree(spark.pid());
    let cpu_before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let answer = spark.request(
        json!({
            "op": "ingest_available_now",
            "id": ingestion.name,
            "bootstrap": kafka.bootstrap,
            "topic": ingestion.topic,
            "columns": ingestion.columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "path": ingestion.table,
            "checkpoint": dir.join("spark-checkpoint"),
        }),
        Duration::from_secs(900),
    );
    let total_seconds = started.elapsed().as_secs_f64();
    let pids = tree(spark.pid());
    let cpu_after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let peak: f64 = pids.iter().map(|p| peak_rss_mib(*p)).sum();
    let first = first_data_commit_ms(&ingestion.table).expect("a data commit");
    let figures = Figures {
        name: "Spark 4.2 + delta-spark 4.4 (local[2], availableNow)",
        rows: 0,
        query_seconds: answer["query_seconds"].as_f64().unwrap_or(f64::NAN),
        total_seconds,
        cpu_seconds: cpu_after - cpu_before,
        peak_rss_mib: peak,
        first_row_seconds: (first - epoch_ms(started_at)) as f64 / 1000.0,
    };
    eprintln!(
        "Spark: session ready after {:.1} s; the query ran {:.1} s; start-up CPU {:.1} s (not counted per row)",
        spark.startup_seconds.unwrap_or_default(),
        figures.query_seconds,
        cpu_before
    );
    (figures, spark)
}

#[test]
#[ignore = "a benchmark (minutes of CPU): run it with --run-ignored only -E 'test(bench_vs_spark)' and a release worker in TRIBUTARY_WORKER_BIN"]
fn bench_vs_spark() {
    let messages: usize = std::env::var("TRIBUTARY_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::Builder::new()
        .prefix("bench-vs-spark-")
        .tempdir()
        .expect("tempdir");
    let dir = dir.path();
    let kafka = Kafka::start();
    kafka.topic("readings", PARTITIONS);
    let produce_started = Instant::now();
    for n in 0..messages {
        let partition = (n % PARTITIONS as usize) as i32;
        kafka.send("readings", partition, None, data::reading(n).as_bytes());
    }
    kafka.flush();
    let held: i64 = (0..PARTITIONS)
        .map(|p| kafka.watermarks("readings", p).1)
        .sum();
    assert_eq!(held, messages as i64, "the broker holds {held} records");
    eprintln!(
        "produced {messages} sensor readings to {PARTITIONS} partitions in {:.1} s",
        produce_started.elapsed().as_secs_f64()
    );

    let table_of = |name: &str| {
        let mut ingestion = Ingestion::new(dir, name, SENSOR);
        ingestion.topic = "readings".into();
        // Spark's from_json never fails a record; the data is all good either way.
        ingestion.on_error = "fail".into();
        ingestion
    };
    // One at a time: each has the machine to itself.
    let tributary_ingestion = table_of("tributary");
    let mut tributary = run_tributary(&tributary_ingestion, &kafka);
    let spark_ingestion = table_of("spark");
    let (mut spark_figures, mut spark) =
        run_spark(&dir.join("spark-run"), &spark_ingestion, &kafka);

    for (figures, ingestion) in [
        (&mut tributary, &tributary_ingestion),
        (&mut spark_figures, &spark_ingestion),
    ] {
        let count = spark.request(
            json!({"op": "count", "path": ingestion.table}),
            Duration::from_secs(600),
        );
        assert_eq!(
            (count["rows"].as_u64(), count["distinct"].as_u64()),
            (Some(messages as u64), Some(messages as u64)),
            "{}: the table does not hold every offset once",
            figures.name
        );
        figures.rows = messages as u64;
    }
    eprintln!(
        "\n{messages} sensor readings (~{} B each), {PARTITIONS} partitions, Apache Kafka {} on 127.0.0.1, {} cores\n\
         | | rows/s (query) | rows/s (incl. start-up) | CPU s per million rows | peak RSS MiB (process tree) | first committed row after (s) |\n\
         |---|---|---|---|---|---|\n{}\n{}",
        data::reading(messages / 2).len(),
        crate::kafka::version(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tributary.line(),
        spark_figures.line()
    );
}
