//! The worker's throughput: availableNow ingestion of a topic produced beforehand into a fresh
//! Delta table, timed from process start to exit, and checked row by row afterwards: every
//! produced record exactly once, in the table or (deadLetter) its dead-letter table, and the
//! malformed ones exactly where the onError mode puts them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::broker::Broker;
use super::config::{OnErrorMode, Shape};
use super::data;
use super::data::Malformed;
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
    pub on_error: OnErrorMode,
    /// Which of the produced records are malformed (as `produced.malformed` counts them).
    pub malformed: Malformed,
    pub shape: Shape,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThroughputFigures {
    /// What the run did between decoding and the table.
    pub shape: Shape,
    pub messages: u64,
    pub partitions: usize,
    pub on_error: OnErrorMode,
    /// Messages written malformed on purpose, and their share in percent.
    pub malformed: u64,
    pub malformed_pct: f64,
    /// Rows with `_rescued_data` set (rescue), rows in the dead-letter table (deadLetter):
    /// counted in the tables, each checked to be one of the malformed records.
    pub rescued_rows: u64,
    pub dead_letter_rows: u64,
    pub wall_s: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_s_per_million_rows: f64,
    pub peak_rss_mib: f64,
    /// The worker's minor page faults per million rows (see [`super::worker::Finished`]).
    pub minor_faults_per_million_rows: f64,
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

/// Where a run in `dir` writes its table.
pub fn table_dir(dir: &Path) -> PathBuf {
    dir.join("table")
}

pub fn run(plan: &Plan<'_>) -> Result<ThroughputFigures> {
    std::fs::create_dir_all(&plan.dir).map_err(BenchError::io_path("create", &plan.dir))?;
    let table_dir = table_dir(&plan.dir);
    let checkpoint = plan.dir.join("checkpoint");
    let manifest = plan.dir.join("ingestion.yaml");
    let dead_letter_dir = plan.dir.join("dead-letter");
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
        on_error: plan.on_error,
        dead_letter: (plan.on_error == OnErrorMode::DeadLetter)
            .then_some(dead_letter_dir.as_path()),
        shape: plan.shape,
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

    let expected = plan.produced.messages;
    let checked = match plan.shape {
        Shape::Append => check(plan, &table_dir, &dead_letter_dir)?,
        Shape::Transform | Shape::Update => check_shaped(plan, &table_dir)?,
    };
    let counted = checked.table;
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
        shape: plan.shape,
        messages: expected,
        partitions: plan.ends.len(),
        on_error: plan.on_error,
        malformed: plan.produced.malformed,
        malformed_pct: stats::rate(plan.produced.malformed as f64 * 100.0, expected as f64),
        rescued_rows: checked.rescued_rows,
        dead_letter_rows: checked.dead_letter_rows,
        wall_s: finished.wall_s,
        // Records ingested: in the table, or (deadLetter) in the dead-letter table, or (a
        // transform, update) read, filtered out or merged.
        rows_per_s: stats::rate(expected as f64, finished.wall_s),
        mb_per_s: stats::rate(plan.produced.bytes as f64 / 1e6, finished.wall_s),
        cpu_user_s: finished.user_s,
        cpu_sys_s: finished.sys_s,
        cpu_s_per_million_rows: stats::rate(cpu * 1e6, expected as f64),
        peak_rss_mib: finished.max_rss_bytes as f64 / (1024.0 * 1024.0),
        minor_faults_per_million_rows: stats::rate(
            finished.minor_faults as f64 * 1e6,
            expected as f64,
        ),
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
        distinct_offsets: checked.distinct,
        duplicate_offsets: checked.duplicates,
    })
}

/// What the check of a run's tables found.
struct Checked {
    table: table::Counted,
    rescued_rows: u64,
    dead_letter_rows: u64,
    distinct: u64,
    duplicates: u64,
}

/// Every produced record exactly once across the table and its dead-letter table; the
/// malformed ones, and only they, rescued (rescue) or dead-lettered (deadLetter).
fn check(plan: &Plan<'_>, table_dir: &Path, dead_letter_dir: &Path) -> Result<Checked> {
    let expected = plan.produced.messages;
    let malformed = plan.produced.malformed;
    let partitions = plan.ends.len() as i64;
    // Reading `seq` went to partition `seq % partitions`, at offset `seq / partitions`.
    let mut not_malformed = Vec::new();
    let mut bad_seen = 0u64;
    let mut set_rows = 0u64;
    let mut is_bad = |p: i64, o: i64| {
        set_rows += 1;
        let seq = u64::try_from(o * partitions + p).unwrap_or(u64::MAX);
        if plan.malformed.kind(seq).is_some() {
            bad_seen += 1;
        } else if not_malformed.len() < 5 {
            not_malformed.push((p, o));
        }
    };
    let mut seen = table::Seen::new(plan.ends);
    let counted = table::count_into(table_dir, &mut seen)?;
    let (rescued, dead_letter_rows, bad_place) = match plan.on_error {
        OnErrorMode::Rescue => {
            table::coordinates_where_set(table_dir, "_rescued_data", &mut is_bad)?;
            (true, 0, format!("{} (_rescued_data)", table_dir.display()))
        }
        OnErrorMode::DeadLetter => {
            // A table that was never created reads as empty.
            let dead = table::count_into(dead_letter_dir, &mut seen)?.rows;
            table::coordinates_where_set(dead_letter_dir, "error", &mut is_bad)?;
            (false, dead, dead_letter_dir.display().to_string())
        }
    };
    let rescued_rows = if rescued { set_rows } else { 0 };
    let bad_rows = set_rows;
    let table_rows_expected = match plan.on_error {
        OnErrorMode::Rescue => expected,
        OnErrorMode::DeadLetter => expected - malformed,
    };
    if counted.rows != table_rows_expected
        || seen.distinct != expected
        || seen.duplicates != 0
        || bad_seen != malformed
        || bad_rows != malformed
        || dead_letter_rows + rescued_rows != malformed
        || !not_malformed.is_empty()
    {
        return Err(BenchError::Check(format!(
            "{}: {} rows (expected {table_rows_expected}); {} distinct (partition, offset) of \
             {expected} produced across the tables, {} duplicates; {bad_rows} bad rows in \
             {bad_place} of which {bad_seen} are among the {malformed} malformed records; \
             not malformed yet there: {not_malformed:?}",
            table_dir.display(),
            counted.rows,
            seen.distinct,
            seen.duplicates,
        )));
    }
    Ok(Checked {
        table: counted,
        rescued_rows,
        dead_letter_rows,
        distinct: seen.distinct,
        duplicates: seen.duplicates,
    })
}

/// The table of a transform or update run over clean data: with the transform, exactly the
/// records whose status it keeps, each once; with update, one row per device, each the
/// record of a distinct offset.
fn check_shaped(plan: &Plan<'_>, table_dir: &Path) -> Result<Checked> {
    if plan.produced.malformed != 0 {
        return Err(BenchError::Args(
            "--shapes runs on clean data: set --malformed 0".into(),
        ));
    }
    let partitions = plan.ends.len() as i64;
    let mut seen = table::Seen::new(plan.ends);
    let counted = table::count_into(table_dir, &mut seen)?;
    // Reading `seq` went to partition `seq % partitions`, at offset `seq / partitions`.
    let seqs = (0..partitions).flat_map(|p| {
        let end = plan.ends[p as usize];
        (0..end).map(move |o| (o * partitions + p) as u64)
    });
    let expected = match plan.shape {
        Shape::Transform => seqs
            .filter(|&seq| data::status(seq) != worker::FILTERED_STATUS)
            .count() as u64,
        Shape::Update => seqs
            .map(data::device)
            .collect::<std::collections::BTreeSet<u64>>()
            .len() as u64,
        Shape::Append => plan.produced.messages,
    };
    let mut filtered_in = 0u64;
    if plan.shape == Shape::Transform {
        table::coordinates_where_set(table_dir, "status", &mut |p, o| {
            let seq = u64::try_from(o * partitions + p).unwrap_or(u64::MAX);
            if data::status(seq) == worker::FILTERED_STATUS {
                filtered_in += 1;
            }
        })?;
    }
    if counted.rows != expected
        || seen.distinct != expected
        || seen.duplicates != 0
        || filtered_in != 0
    {
        return Err(BenchError::Check(format!(
            "{} ({}): {} rows, {} distinct (partition, offset), {} duplicates, {filtered_in} \
             rows the transform filters out; expected {expected} rows, each once",
            table_dir.display(),
            plan.shape.as_str(),
            counted.rows,
            seen.distinct,
            seen.duplicates,
        )));
    }
    Ok(Checked {
        table: counted,
        rescued_rows: 0,
        dead_letter_rows: 0,
        distinct: seen.distinct,
        duplicates: seen.duplicates,
    })
}
