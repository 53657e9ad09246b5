//! Continuous latency: a producer at a fixed rate while the worker runs with the default
//! trigger. Every message carries its produce time (the `timestamp` field); a poller notes when
//! each Delta version appears in `_delta_log`. A row's latency is the time its version was seen
//! less its produce time, for every row (not a sample) produced in the measured window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::broker::Broker;
use super::config::{OnErrorMode, Shape};
use super::data;
use super::error::{BenchError, Result};
use super::produce::{self, Produced};
use super::stats;
use super::table::{self, Added};
use super::throughput::phase_totals;
use super::worker::{self, Finished, Ingestion};

/// How often `_delta_log` is listed: bounds the error on "version seen" to this much.
const POLL: Duration = Duration::from_millis(10);
/// How long the worker gets to start and commit its first rows.
const FIRST_COMMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the worker gets to commit what was produced once the producer stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The window is also reported in this many equal slices (by produce time): a worker that
/// falls behind shows as latency rising from slice to slice.
const SLICES: usize = 5;

pub struct Plan<'a> {
    pub broker: &'a Broker,
    pub worker_bin: &'a Path,
    pub dir: PathBuf,
    pub partitions: i32,
    pub rate: u64,
    pub duration: Duration,
    pub max_offsets_per_trigger: Option<u64>,
    pub kafka_options: &'a [(String, String)],
    pub wrapper: &'a [String],
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyFigures {
    pub rate_target: u64,
    pub rate_achieved: f64,
    pub partitions: i32,
    /// From the worker's start to its first commit with rows: excluded from the figures.
    pub warmup_s: f64,
    pub window_s: f64,
    pub produced: u64,
    pub rows_committed: u64,
    pub rows_measured: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The window in [`SLICES`] equal slices by produce time, in order.
    pub slices: Vec<LatencySlice>,
    pub versions_in_window: u64,
    /// Delta commits per second in the window (a table read by others wants few).
    pub commits_per_s: f64,
    pub files_in_window: u64,
    pub files_per_minute: f64,
    pub median_file_bytes: u64,
    pub worker_cpu_s: f64,
    pub worker_cpu_s_per_million_rows: f64,
    pub worker_peak_rss_mib: f64,
    pub progress_lines: u64,
    /// The worker's own durationMs, summed over its batches.
    pub phase_ms: BTreeMap<String, i64>,
}

/// The latency of the rows produced in one slice of the window.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySlice {
    /// Seconds from the window's start to the slice's.
    pub from_s: f64,
    pub rows: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The rows' latencies in `SLICES` equal slices of the window, from (produce time, latency ms)
/// pairs whose produce times lie in `start_us..start_us + window_us`.
fn slices(produced_latency: &[(i64, f64)], start_us: i64, window_us: i64) -> Vec<LatencySlice> {
    let slice_us = (window_us / SLICES as i64).max(1);
    let mut by_slice: Vec<Vec<f64>> = vec![Vec::new(); SLICES];
    for &(at_us, latency_ms) in produced_latency {
        let index = usize::try_from((at_us - start_us) / slice_us).unwrap_or(0);
        by_slice[index.min(SLICES - 1)].push(latency_ms);
    }
    by_slice
        .into_iter()
        .enumerate()
        .map(|(index, latencies)| {
            let latencies = stats::sorted(latencies);
            LatencySlice {
                from_s: (index as i64 * slice_us) as f64 / 1e6,
                rows: latencies.len() as u64,
                p50_ms: stats::quantile(&latencies, 0.5).unwrap_or(f64::NAN),
                p99_ms: stats::quantile(&latencies, 0.99).unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// A version as the poller saw it.
struct Seen {
    at_us: i64,
    adds: Vec<Added>,
}

impl Seen {
    fn rows(&self, table: &Path) -> Result<u64> {
        self.adds.iter().try_fold(0, |sum, add| {
            Ok(sum
                + match add.num_records {
                    Some(n) => n,
                    None => table::parquet_rows(&table::file_path(table, &add.path))?,
                })
        })
    }
}

pub fn run(plan: &Plan<'_>) -> Result<LatencyFigures> {
    let topic = "bench-latency";
    plan.broker.create_topic(topic, plan.partitions)?;
    let table_dir = plan.dir.join("table");
    let checkpoint = plan.dir.join("checkpoint");
    let manifest = plan.dir.join("ingestion.yaml");
    let ingestion = Ingestion {
        name: "bench-latency",
        bootstrap: &plan.broker.bootstrap,
        topic,
        table: &table_dir,
        checkpoint: &checkpoint,
        available_now: false,
        max_offsets_per_trigger: plan.max_offsets_per_trigger,
        kafka_options: plan.kafka_options,
        // The latency run is clean: every row's timestamp is read back.
        on_error: OnErrorMode::Rescue,
        dead_letter: None,
        shape: Shape::Append,
    };
    std::fs::write(&manifest, ingestion.manifest())
        .map_err(BenchError::io_path("write", &manifest))?;

    let running = worker::spawn(
        plan.wrapper,
        plan.worker_bin,
        &manifest,
        &plan.broker.bootstrap,
        &plan.dir.join("worker.log"),
    )?;
    let stop = AtomicBool::new(false);
    let (seen, produced, warmup_end_us, warmup_s) = std::thread::scope(|scope| {
        // The broker is not Sync: the producer thread only gets what it needs.
        let (bootstrap, partitions, rate, stop) =
            (&plan.broker.bootstrap, plan.partitions, plan.rate, &stop);
        let producer =
            scope.spawn(move || produce::produce_at_rate(bootstrap, topic, partitions, rate, stop));
        let watched = watch(plan, &table_dir, &running, stop, producer);
        // Whatever happened, the producer must stop for the scope to end.
        stop.store(true, Ordering::Relaxed);
        watched
    })?;
    running.terminate();
    let finished = running.wait(Duration::from_secs(60))?;
    figures(
        plan,
        &table_dir,
        &seen,
        &produced,
        warmup_end_us,
        warmup_s,
        &finished,
    )
}

type Watched = (Vec<Seen>, Produced, i64, f64);

/// Polls the log until the window is over and everything produced is committed.
fn watch(
    plan: &Plan<'_>,
    table_dir: &Path,
    running: &worker::Running,
    stop: &AtomicBool,
    producer: std::thread::ScopedJoinHandle<'_, Result<Produced>>,
) -> Result<Watched> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut next_version = 0i64;
    let mut warmup: Option<(i64, f64, Instant)> = None;
    let mut producer = Some(producer);
    let mut produced: Option<Produced> = None;
    let mut stopped_at: Option<Instant> = None;
    let mut committed = 0u64;
    loop {
        std::thread::sleep(POLL);
        for version in table::versions(table_dir)? {
            if version < next_version {
                continue;
            }
            let at_us = data::now_micros();
            let commit = table::read_commit(table_dir, version)?;
            // Compaction's files hold rows committed before: they are not new rows, and
            // counting them would date those rows to the compaction.
            let entry = Seen {
                at_us,
                adds: commit.adds.into_iter().filter(|a| a.data_change).collect(),
            };
            let rows = entry.rows(table_dir)?;
            committed += rows;
            if warmup.is_none() && rows > 0 {
                warmup = Some((at_us, running.elapsed().as_secs_f64(), Instant::now()));
            }
            seen.push(entry);
            next_version = version + 1;
        }
        if running.has_exited() {
            return Err(BenchError::Worker(format!(
                "exited during the latency run; its log: {}\n{}",
                running.log().display(),
                worker::tail(running.log())
            )));
        }
        match warmup {
            None if running.elapsed() > FIRST_COMMIT_TIMEOUT => {
                return Err(BenchError::Worker(format!(
                    "no rows committed within {FIRST_COMMIT_TIMEOUT:?}; its log: {}\n{}",
                    running.log().display(),
                    worker::tail(running.log())
                )));
            }
            Some((_, _, since)) if stopped_at.is_none() && since.elapsed() >= plan.duration => {
                stop.store(true, Ordering::Relaxed);
                let result = producer
                    .take()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(BenchError::Check("the producer panicked".into()))
                        })
                    })
                    .unwrap_or_else(|| Err(BenchError::Check("no producer".into())))?;
                produced = Some(result);
                stopped_at = Some(Instant::now());
            }
            _ => {}
        }
        if let (Some(p), Some(at)) = (produced, stopped_at) {
            if committed >= p.messages {
                break;
            }
            if at.elapsed() > DRAIN_TIMEOUT {
                return Err(BenchError::Check(format!(
                    "{committed} of {} produced rows committed {DRAIN_TIMEOUT:?} after the producer stopped",
                    p.messages
                )));
            }
        }
    }
    let (warmup_end_us, warmup_s, _) =
        warmup.ok_or_else(|| BenchError::Check("no warm-up".into()))?;
    let produced = produced.ok_or_else(|| BenchError::Check("nothing produced".into()))?;
    Ok((seen, produced, warmup_end_us, warmup_s))
}

fn figures(
    plan: &Plan<'_>,
    table_dir: &Path,
    seen: &[Seen],
    produced: &Produced,
    window_start_us: i64,
    warmup_s: f64,
    finished: &Finished,
) -> Result<LatencyFigures> {
    let window_us = i64::try_from(plan.duration.as_micros()).unwrap_or(i64::MAX);
    let window_end_us = window_start_us + window_us;
    let mut produced_latency = Vec::new();
    let mut stamps = Vec::new();
    let mut rows_committed = 0u64;
    for version in seen {
        for add in &version.adds {
            stamps.clear();
            table::timestamps_micros(
                &table::file_path(table_dir, &add.path),
                data::TIMESTAMP_COLUMN,
                &mut stamps,
            )?;
            rows_committed += stamps.len() as u64;
            produced_latency.extend(
                stamps
                    .iter()
                    .filter(|t| (window_start_us..window_end_us).contains(*t))
                    .map(|t| (*t, (version.at_us - t) as f64 / 1000.0)),
            );
        }
    }
    let slices = slices(&produced_latency, window_start_us, window_us);
    let latencies: Vec<f64> = produced_latency.iter().map(|(_, ms)| *ms).collect();
    let in_window: Vec<&Seen> = seen
        .iter()
        .filter(|s| (window_start_us..window_end_us).contains(&s.at_us))
        .collect();
    let file_sizes = stats::sorted(
        in_window
            .iter()
            .flat_map(|s| s.adds.iter().map(|a| a.size as f64))
            .collect(),
    );
    let latencies = stats::sorted(latencies);
    let minutes = plan.duration.as_secs_f64() / 60.0;
    let cpu = finished.user_s + finished.sys_s;
    Ok(LatencyFigures {
        rate_target: plan.rate,
        rate_achieved: stats::rate(produced.messages as f64, produced.sending_seconds),
        partitions: plan.partitions,
        warmup_s,
        window_s: plan.duration.as_secs_f64(),
        produced: produced.messages,
        rows_committed,
        rows_measured: latencies.len() as u64,
        p50_ms: stats::quantile(&latencies, 0.5).unwrap_or(f64::NAN),
        p99_ms: stats::quantile(&latencies, 0.99).unwrap_or(f64::NAN),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        slices,
        versions_in_window: in_window.len() as u64,
        commits_per_s: stats::rate(in_window.len() as f64, plan.duration.as_secs_f64()),
        files_in_window: file_sizes.len() as u64,
        files_per_minute: stats::rate(file_sizes.len() as f64, minutes),
        median_file_bytes: stats::quantile(&file_sizes, 0.5).unwrap_or(0.0) as u64,
        worker_cpu_s: cpu,
        worker_cpu_s_per_million_rows: stats::rate(cpu * 1e6, rows_committed as f64),
        worker_peak_rss_mib: finished.max_rss_bytes as f64 / (1024.0 * 1024.0),
        progress_lines: finished.progress.len() as u64,
        phase_ms: phase_totals(&finished.progress),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fall_into_the_slice_of_their_produce_time() {
        // A 10 s window from t = 100 s: slices of 2 s. The last row (at 9.999 s) is in the
        // fifth slice; latency rises in the third.
        let start = 100_000_000;
        let rows = [
            (start, 10.0),
            (start + 1_999_999, 20.0),
            (start + 2_000_000, 30.0),
            (start + 4_500_000, 900.0),
            (start + 4_600_000, 700.0),
            (start + 9_999_999, 40.0),
        ];
        let sliced = slices(&rows, start, 10_000_000);
        let counts: Vec<u64> = sliced.iter().map(|s| s.rows).collect();
        assert_eq!(counts, [2, 1, 2, 0, 1]);
        let starts: Vec<f64> = sliced.iter().map(|s| s.from_s).collect();
        assert_eq!(starts, [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(sliced[0].p99_ms, 20.0);
        assert_eq!(sliced[2].p50_ms, 700.0);
        assert_eq!(sliced[2].p99_ms, 900.0);
        assert!(sliced[3].p99_ms.is_nan());
    }
}
