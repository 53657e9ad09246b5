//! `--vs spark`: the pipeline Tributary replaces, on the same broker and topic the worker has
//! just read, after it, so each has the machine to itself.
//!
//! Spark (local[2]): readStream kafka -> from_json(value, schema) -> writeStream delta,
//! trigger(availableNow=True), into its own table, which is then checked like the worker's:
//! every produced (partition, offset) exactly once.
//!
//! Spark's CPU and memory are its whole process tree's (Python and the JVM). Its session start-up
//! is reported on its own and left out of the per-row CPU figure: the comparison is Spark's best
//! case, a session that is already up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use serde::Serialize;
use serde_json::json;

use crate::spark::{self, Driver};

use super::data;
use super::error::{BenchError, Result};
use super::procfs;
use super::stats;
use super::table;
use super::throughput::ThroughputFigures;

/// What the worker is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Versus {
    /// The seed's pipeline in a local-mode Spark with delta-spark (installed by
    /// scripts/install-deps.sh).
    #[value(name = "spark")]
    #[serde(rename = "spark")]
    Spark,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub name: String,
    pub rows: u64,
    /// Rows over the query's own time: Spark's start() to awaitTermination(); the worker's
    /// process life (it has no separate start-up).
    pub rows_per_s_query: f64,
    /// Rows over the time from the process start to the query's end.
    pub rows_per_s_total: f64,
    pub cpu_s_per_million_rows: f64,
    /// The peak resident set, summed over the process tree.
    pub peak_rss_mib: f64,
    /// From the process start to the first commit that added rows (commitInfo.timestamp).
    pub first_commit_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VersusFigures {
    pub tributary: Side,
    pub spark: Side,
    pub spark_version: String,
    pub delta_version: String,
    /// Spark's process start to a usable session, and the CPU it spent on that (not counted
    /// in its per-row figure).
    pub spark_startup_s: f64,
    pub spark_startup_cpu_s: f64,
    /// Spark's table, counted like the worker's.
    pub spark_delta_versions: u64,
    pub spark_files: u64,
}

pub struct Plan<'a> {
    pub bootstrap: &'a str,
    pub dir: PathBuf,
    pub topic: &'a str,
    /// High watermark of each partition (what the run must write).
    pub ends: &'a [i64],
    pub messages: u64,
    pub timeout: Duration,
}

pub fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds from `started` to the first data commit of `table`.
pub fn first_commit_after(table: &Path, started: SystemTime) -> Result<Option<f64>> {
    Ok(table::first_data_commit_ms(table)?
        .map(|committed| (committed - epoch_ms(started)) as f64 / 1000.0))
}

/// The worker's side, from its throughput run (which started at `started`).
pub fn tributary_side(
    figures: &ThroughputFigures,
    table: &Path,
    started: SystemTime,
) -> Result<Side> {
    let rows = figures.rows_counted;
    Ok(Side {
        name: "Tributary (tributary-worker, availableNow)".into(),
        rows,
        rows_per_s_query: figures.rows_per_s,
        rows_per_s_total: figures.rows_per_s,
        cpu_s_per_million_rows: figures.cpu_s_per_million_rows,
        peak_rss_mib: figures.peak_rss_mib,
        first_commit_s: first_commit_after(table, started)?,
    })
}

fn tree_cpu_seconds(root: u32) -> f64 {
    procfs::tree(root)
        .into_iter()
        .map(procfs::cpu_seconds)
        .sum()
}

fn tree_peak_rss_mib(root: u32) -> f64 {
    let bytes: u64 = procfs::tree(root)
        .into_iter()
        .filter_map(procfs::peak_rss_bytes)
        .sum();
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs the seed's pipeline in Spark over the topic and checks its table; `tributary` is the
/// worker's side, measured before.
pub fn run_spark(plan: &Plan<'_>, tributary: Side) -> Result<VersusFigures> {
    let (spark_version, delta_version) = spark::versions()?;
    std::fs::create_dir_all(&plan.dir).map_err(BenchError::io_path("create", &plan.dir))?;
    let table_dir = plan.dir.join("table");
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut driver = Driver::start(&plan.dir.join("spark"))?;
    driver.wait_ready()?;
    let spark_startup_s = started.elapsed().as_secs_f64();
    let spark_startup_cpu_s = tree_cpu_seconds(driver.pid());
    let columns: Vec<_> = data::COLUMNS
        .iter()
        .map(|(name, kind, _)| json!({"name": name, "type": kind}))
        .collect();
    let answer = driver.request(
        json!({
            "op": "ingest_available_now",
            "id": "bench-spark",
            "bootstrap": plan.bootstrap,
            "topic": plan.topic,
            "columns": columns,
            "path": table_dir,
            "checkpoint": plan.dir.join("checkpoint"),
        }),
        plan.timeout,
    )?;
    let total_s = started.elapsed().as_secs_f64();
    // Read while the processes live: VmHWM and the CPU counters go with them.
    let cpu_s = tree_cpu_seconds(driver.pid()) - spark_startup_cpu_s;
    let peak_rss_mib = tree_peak_rss_mib(driver.pid());
    drop(driver);
    let query_s = answer["query_seconds"].as_f64().ok_or_else(|| {
        BenchError::Check(format!("Spark's answer has no query_seconds: {answer}"))
    })?;

    let counted = table::count(&table_dir, plan.ends)?;
    if counted.distinct_offsets != plan.messages || counted.duplicate_offsets != 0 {
        return Err(BenchError::Check(format!(
            "Spark's table {} holds {} of the {} produced offsets ({} twice)",
            table_dir.display(),
            counted.distinct_offsets,
            plan.messages,
            counted.duplicate_offsets
        )));
    }
    let rows = counted.rows;
    let spark = Side {
        name: format!(
            "Spark {spark_version} + delta-spark {delta_version} (local[2], availableNow)"
        ),
        rows,
        rows_per_s_query: stats::rate(rows as f64, query_s),
        rows_per_s_total: stats::rate(rows as f64, total_s),
        cpu_s_per_million_rows: stats::rate(cpu_s, rows as f64 / 1e6),
        peak_rss_mib,
        first_commit_s: first_commit_after(&table_dir, started_at)?,
    };
    Ok(VersusFigures {
        tributary,
        spark,
        spark_version,
        delta_version,
        spark_startup_s,
        spark_startup_cpu_s,
        spark_delta_versions: counted.versions,
        spark_files: counted.files,
    })
}

impl VersusFigures {
    /// The side-by-side table (Markdown, as README's Performance section shows it).
    pub fn table(&self) -> String {
        let line = |side: &Side| {
            format!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {} |\n",
                side.name,
                side.rows_per_s_query,
                side.rows_per_s_total,
                side.cpu_s_per_million_rows,
                side.peak_rss_mib,
                side.first_commit_s
                    .map_or("-".into(), |s| format!("{s:.1} s")),
            )
        };
        format!(
            "versus Spark, same topic, one after the other:\n\
             | | rows/s (query) | rows/s (from process start) | CPU s per million rows | peak RSS MiB (process tree) | first committed row after |\n\
             |---|---|---|---|---|---|\n{}{}\
             Spark's session was ready after {:.1} s and {:.1} CPU s (not in its per-row CPU); its table: {} versions, {} files, every offset once\n",
            line(&self.tributary),
            line(&self.spark),
            self.spark_startup_s,
            self.spark_startup_cpu_s,
            self.spark_delta_versions,
            self.spark_files,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(name: &str, first: Option<f64>) -> Side {
        Side {
            name: name.into(),
            rows: 1_000,
            rows_per_s_query: 2_000.4,
            rows_per_s_total: 1_000.0,
            cpu_s_per_million_rows: 2.345,
            peak_rss_mib: 200.2,
            first_commit_s: first,
        }
    }

    #[test]
    fn the_table_has_one_row_per_side_and_says_what_start_up_cost() {
        let figures = VersusFigures {
            tributary: side("Tributary", Some(0.61)),
            spark: side("Spark", None),
            spark_version: "4.2.0".into(),
            delta_version: "4.4.0".into(),
            spark_startup_s: 5.04,
            spark_startup_cpu_s: 4.66,
            spark_delta_versions: 1,
            spark_files: 2,
        };
        let table = figures.table();
        assert!(
            table.contains("| Tributary | 2000 | 1000 | 2.35 | 200 | 0.6 s |\n"),
            "{table}"
        );
        assert!(
            table.contains("| Spark | 2000 | 1000 | 2.35 | 200 | - |\n"),
            "{table}"
        );
        assert!(table.contains("ready after 5.0 s and 4.7 CPU s"), "{table}");
    }

    #[test]
    fn first_commit_is_measured_from_the_start_of_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let started = UNIX_EPOCH + Duration::from_millis(1_000_000);
        std::fs::write(
            log.join(format!("{:020}.json", 0)),
            "{\"commitInfo\":{\"timestamp\":1000500}}\n{\"metaData\":{}}\n",
        )
        .unwrap();
        assert_eq!(first_commit_after(dir.path(), started).unwrap(), None);
        std::fs::write(
            log.join(format!("{:020}.json", 1)),
            "{\"commitInfo\":{\"timestamp\":1002500}}\n{\"add\":{\"path\":\"a.parquet\",\"size\":1}}\n",
        )
        .unwrap();
        assert_eq!(first_commit_after(dir.path(), started).unwrap(), Some(2.5));
    }
}
