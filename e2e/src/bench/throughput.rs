//! The worker's throughput: availableNow ingestion of a topic produced beforehand into a fresh
//! Delta table, timed from process start to exit, and checked row by row afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::broker::Broker;
use super::error::{BenchError, Result};
use super::produce::Produced;
use super::stats;
use super::table;
use super::worker::{self, Ingestion, ProgressSeen};

pub struct Plan<'a> {
    pub broker: &'a Broker,
    pub worker_bin: &'a Path,
    pub dir: PathBuf,
    pub topic: &'a str,
    /// High watermark of each partition (what the run must write).
    pub ends: &'a [i64],
    pub produced: Produced,
    pub max_offsets_per_trigger: Option<u64>,
    pub kafka_options: &'a [(String, String)],
    pub wrapper: &'a [String],
    pub timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThroughputFigures {
    pub messages: u64,
    pub partitions: usize,
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_s_per_million_rows: f64,
    pub peak_rss_mib: f64,
    /// CPU the broker spent meanwhile, serving the worker's fetches on the cores the worker
    /// uses too (the mock broker: this benchmark process; Apache Kafka: its JVM).
    pub broker_cpu_s: f64,
    /// Micro-batches, from the worker's progress lines (0 if it printed none).
    pub progress_lines: u64,
    /// When the first progress line arrived: start-up, group join and the first batch.
    pub first_batch_s: Option<f64>,
    /// Rows of the batches after the first over the time between the first and last progress
    /// lines: the rate once started (None with fewer than 2 batches).
    pub steady_rows_per_s: Option<f64>,
    /// The worker's own durationMs, summed over its batches: where its time went.
    pub phase_ms: BTreeMap<String, i64>,
    pub delta_versions: u64,
    pub files: u64,
    pub table_bytes: u64,
    pub rows_counted: u64,
    pub rows_in_stats: Option<u64>,
    pub distinct_offsets: u64,
    pub duplicate_offsets: u64,
}

/// CPU seconds (user + system) of this process so far.
pub fn own_cpu_s() -> f64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

/// The worker's durationMs per phase, summed over its progress lines.
pub fn phase_totals(progress: &[ProgressSeen]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for seen in progress {
        for (phase, ms) in &seen.progress.duration_ms {
            *totals.entry(phase.clone()).or_insert(0) += ms;
        }
    }
    totals
}

pub fn run(plan: &Plan<'_>) -> Result<ThroughputFigures> {
    std::fs::create_dir_all(&plan.dir).map_err(BenchError::io_path("create", &plan.dir))?;
    let table_dir = plan.dir.join("table");
    let checkpoint = plan.dir.join("checkpoint");
    let manifest = plan.dir.join("ingestion.yaml");
    let name = format!("bench-{}", plan.topic.trim_start_matches("bench-"));
    let ingestion = Ingestion {
        name: &name,
        bootstrap: &plan.broker.bootstrap,
        topic: plan.topic,
        table: &table_dir,
        checkpoint: &checkpoint,
        available_now: true,
        max_offsets_per_trigger: plan.max_offsets_per_trigger,
        kafka_options: plan.kafka_options,
    };
    std::fs::write(&manifest, ingestion.manifest())
        .map_err(BenchError::io_path("write", &manifest))?;

    let cpu_before = plan.broker.cpu_seconds();
    let log = plan.dir.join("worker.log");
    let finished = worker::spawn(
        plan.wrapper,
        plan.worker_bin,
        &manifest,
        &plan.broker.bootstrap,
        &log,
    )?
    .wait(plan.timeout)?;
    let broker_cpu_s = plan.broker.cpu_seconds() - cpu_before;
    if finished.exit_code != 0 {
        return Err(BenchError::Worker(format!(
            "exited with {} on {}; its log: {}\n{}",
            finished.exit_code,
            manifest.display(),
            log.display(),
            worker::tail(&log)
        )));
    }

    let counted = table::count(&table_dir, plan.ends)?;
    let expected = plan.produced.messages;
    if counted.rows != expected
        || counted.distinct_offsets != expected
        || counted.duplicate_offsets != 0
    {
        return Err(BenchError::Check(format!(
            "{}: {} rows, {} distinct (partition, offset) of {expected} produced, {} duplicates",
            table_dir.display(),
            counted.rows,
            counted.distinct_offsets,
            counted.duplicate_offsets
        )));
    }
    let cpu = finished.user_s + finished.sys_s;
    let progress = &finished.progress;
    let steady_rows_per_s = match (progress.first(), progress.last()) {
        (Some(first), Some(last)) if progress.len() > 1 => {
            let rows: i64 = progress[1..]
                .iter()
                .map(|p| p.progress.num_input_rows)
                .sum();
            Some(stats::rate(rows as f64, (last.at - first.at).as_secs_f64()))
        }
        _ => None,
    };
    let phase_ms = phase_totals(progress);
    Ok(ThroughputFigures {
        messages: expected,
        partitions: plan.ends.len(),
        wall_s: finished.wall_s,
        rows_per_s: stats::rate(counted.rows as f64, finished.wall_s),
        mb_per_s: stats::rate(plan.produced.bytes as f64 / 1e6, finished.wall_s),
        cpu_user_s: finished.user_s,
        cpu_sys_s: finished.sys_s,
        cpu_s_per_million_rows: stats::rate(cpu * 1e6, counted.rows as f64),
        peak_rss_mib: finished.max_rss_bytes as f64 / (1024.0 * 1024.0),
        broker_cpu_s,
        progress_lines: progress.len() as u64,
        first_batch_s: progress.first().map(|p| p.at.as_secs_f64()),
        steady_rows_per_s,
        phase_ms,
        delta_versions: counted.versions,
        files: counted.files,
        table_bytes: counted.bytes,
        rows_counted: counted.rows,
        rows_in_stats: counted.rows_stats,
        distinct_offsets: counted.distinct_offsets,
        duplicate_offsets: counted.duplicate_offsets,
    })
}
