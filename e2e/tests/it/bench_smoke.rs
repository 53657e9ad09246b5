//! Runs the `bench` binary with tiny numbers against the real worker and checks that its JSON
//! line is complete and self-consistent. Figures are not asserted against targets: a smoke test
//! on a shared machine can only say the harness measures something sane.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MESSAGES: u64 = 20_000;
const RATE: u64 = 2_000;

/// The worker binary: $TRIBUTARY_WORKER_BIN, else the one in the same target directory as
/// `bench`, else built now. It is not rebuilt when present: `cargo build -p tributary-worker`
/// alone unifies features differently from a workspace build and recompiles kube and deltalake,
/// which does not fit in the test's time limit. Build the worker first for a fresh one.
fn worker_bin(bench: &Path) -> PathBuf {
    if let Some(bin) = std::env::var_os("TRIBUTARY_WORKER_BIN") {
        return PathBuf::from(bin);
    }
    let profile_dir = bench.parent().unwrap();
    let worker = profile_dir.join("tributary-worker");
    if worker.is_file() {
        return worker;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut build = Command::new(cargo);
    build.current_dir(&workspace).args([
        "build",
        "-p",
        "tributary-worker",
        "--bin",
        "tributary-worker",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "cannot build tributary-worker");
    assert!(worker.is_file(), "{} is missing", worker.display());
    worker
}

fn f64_at(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number in {report}"))
}

fn u64_at(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing or not an integer in {report}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn bench_reports_sane_consistent_figures() {
    let r = bench_on("mock", &["--shapes", "transform,update"]);
    assert!(
        f64_at(&r, "/worker/broker_cpu_s") > 0.0,
        "the in-process broker served the worker"
    );
    // The shapes: the bench itself checked each table against the produced data (exactly the
    // records the transform keeps; one row per device); here, that the figures are there.
    for (i, shape) in ["transform", "update"].into_iter().enumerate() {
        let at = |field: &str| format!("/shapes/{i}/{field}");
        assert_eq!(
            r.pointer(&at("shape")).and_then(Value::as_str),
            Some(shape),
            "{r}"
        );
        assert_eq!(u64_at(&r, &at("messages")), MESSAGES);
        let rows = u64_at(&r, &at("rows_counted"));
        assert!(rows > 0 && rows < MESSAGES, "{shape}: {rows} rows");
        assert_eq!(u64_at(&r, &at("distinct_offsets")), rows);
        assert_eq!(u64_at(&r, &at("duplicate_offsets")), 0);
        let wall = f64_at(&r, &at("wall_s"));
        assert!(close(f64_at(&r, &at("rows_per_s")), MESSAGES as f64 / wall));
        assert!(f64_at(&r, &at("cpu_s_per_million_rows")) > 0.0);
        assert!(f64_at(&r, &at("peak_rss_mib")) > 1.0);
    }
}

#[test]
fn bench_on_apache_kafka_reports_sane_consistent_figures() {
    // And the pipeline it replaces beside it: Spark's side of the comparison is checked too.
    let r = bench_on("kafka", &["--vs", "spark"]);
    let broker = r
        .pointer("/config/broker")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(broker.starts_with("Apache Kafka"), "{broker}");
    assert!(
        f64_at(&r, "/worker/broker_cpu_s") > 0.0,
        "the broker's JVM served the worker"
    );

    // Both sides read every offset once (bench checks each table and fails otherwise), and
    // each side's rates come from its own rows.
    for side in ["tributary", "spark"] {
        let at = |field: &str| format!("/versus/{side}/{field}");
        assert_eq!(u64_at(&r, &at("rows")), MESSAGES, "{side}");
        let query = f64_at(&r, &at("rows_per_s_query"));
        let total = f64_at(&r, &at("rows_per_s_total"));
        assert!(
            0.0 < total && total <= query * (1.0 + 1e-9),
            "{side}: {total} > {query}"
        );
        assert!(f64_at(&r, &at("cpu_s_per_million_rows")) > 0.0, "{side}");
        let first = f64_at(&r, &at("first_commit_s"));
        assert!(
            first > 0.0 && first < 600.0,
            "{side}: first commit after {first} s"
        );
    }
    // Spark's process tree is Python and a JVM: far more than a few MiB, and its session's
    // start-up is reported apart.
    assert!(f64_at(&r, "/versus/spark/peak_rss_mib") > 100.0);
    assert!(f64_at(&r, "/versus/spark_startup_s") > 0.0);
    assert!(u64_at(&r, "/versus/spark_delta_versions") >= 1);
    assert!(
        f64_at(&r, "/versus/tributary/rows_per_s_query") == f64_at(&r, "/worker/rows_per_s"),
        "the worker's side is the throughput run's"
    );
}

/// Runs the benchmark against `broker` and checks its report's consistency; returns it.
fn bench_on(broker: &str, extra_args: &[&str]) -> Value {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench"));
    let worker = worker_bin(&bench);
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(&bench)
        .args(["--broker", broker])
        .args(["--messages", &MESSAGES.to_string(), "--partitions", "4"])
        .args(["--rate", &RATE.to_string(), "--duration", "3"])
        .arg("--worker-bin")
        .arg(&worker)
        .arg("--out")
        .arg(out.path())
        .args(extra_args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line:\n{stdout}"));
    let r: Value = serde_json::from_str(line).unwrap();
    assert!(
        stdout.contains("ratio worker / limit"),
        "no table:\n{stdout}"
    );
    assert!(out.path().join("report.json").is_file());

    // Produce and limit: every message, and rates computed from the same numbers.
    assert_eq!(u64_at(&r, "/produce/messages"), MESSAGES);
    assert_eq!(u64_at(&r, "/limit/messages"), MESSAGES);
    let bytes = u64_at(&r, "/produce/bytes");
    assert_eq!(u64_at(&r, "/limit/bytes"), bytes);
    let avg = f64_at(&r, "/produce/avg_message_bytes");
    assert!((120.0..=200.0).contains(&avg), "average message {avg} B");
    let limit_s = f64_at(&r, "/limit/seconds");
    let limit_rate = f64_at(&r, "/limit/msgs_per_s");
    assert!(limit_s > 0.0 && limit_rate > 0.0);
    assert!(close(limit_rate, MESSAGES as f64 / limit_s));
    assert!(close(
        f64_at(&r, "/limit/mb_per_s"),
        bytes as f64 / 1e6 / limit_s
    ));

    // The worker: every row exactly once, counted independently of it.
    assert_eq!(u64_at(&r, "/worker/rows_counted"), MESSAGES);
    assert_eq!(u64_at(&r, "/worker/distinct_offsets"), MESSAGES);
    assert_eq!(u64_at(&r, "/worker/duplicate_offsets"), 0);
    if let Some(stats) = r.pointer("/worker/rows_in_stats").and_then(Value::as_u64) {
        assert_eq!(stats, MESSAGES);
    }
    assert!(u64_at(&r, "/worker/files") >= 1);
    assert!(u64_at(&r, "/worker/delta_versions") >= 1);
    let wall = f64_at(&r, "/worker/wall_s");
    let rows_rate = f64_at(&r, "/worker/rows_per_s");
    assert!(wall > 0.0 && rows_rate > 0.0);
    assert!(close(rows_rate, MESSAGES as f64 / wall));
    assert!(close(
        f64_at(&r, "/worker/mb_per_s"),
        bytes as f64 / 1e6 / wall
    ));
    let cpu = f64_at(&r, "/worker/cpu_user_s") + f64_at(&r, "/worker/cpu_sys_s");
    assert!(cpu > 0.0);
    assert!(close(
        f64_at(&r, "/worker/cpu_s_per_million_rows"),
        cpu * 1e6 / MESSAGES as f64
    ));
    let rss = f64_at(&r, "/worker/peak_rss_mib");
    assert!(rss > 1.0 && rss < 4096.0, "peak RSS {rss} MiB");
    // A process that ran faulted pages in (its binary's, its heap's): the count is wait4's.
    let faults = f64_at(&r, "/worker/minor_faults_per_million_rows");
    assert!(faults > 0.0, "minor page faults per million rows {faults}");
    assert!(close(
        f64_at(&r, "/ratio_worker_to_limit"),
        rows_rate / limit_rate
    ));

    // Latency: everything produced was committed; percentiles are ordered.
    let produced = u64_at(&r, "/latency/produced");
    assert!(produced > 0);
    assert_eq!(u64_at(&r, "/latency/rows_committed"), produced);
    let measured = u64_at(&r, "/latency/rows_measured");
    assert!(measured > 0 && measured <= produced);
    let (p50, p99, max) = (
        f64_at(&r, "/latency/p50_ms"),
        f64_at(&r, "/latency/p99_ms"),
        f64_at(&r, "/latency/max_ms"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "p50 {p50} p99 {p99} max {max}"
    );
    assert!(max < 60_000.0, "max latency {max} ms");
    assert!(f64_at(&r, "/latency/rate_achieved") > 0.5 * RATE as f64);
    assert!(f64_at(&r, "/latency/files_per_minute") > 0.0);
    assert!(u64_at(&r, "/latency/median_file_bytes") > 0);
    r
}
