//! The report: a table for people, one JSON line for machines.

use serde::Serialize;

use super::config::OnErrorMode;
use super::latency::LatencyFigures;
use super::limit::Consumed;
use super::machine::Machine;
use super::produce::Produced;
use super::stats;
use super::throughput::ThroughputFigures;
use super::versus::VersusFigures;

#[derive(Clone, Debug, Serialize)]
pub struct ConfigFigures {
    /// The broker measured against.
    pub broker: String,
    pub messages: u64,
    pub partitions: i32,
    pub partitions_why: String,
    pub rate: u64,
    pub duration_s: f64,
    pub max_offsets_per_trigger: Option<u64>,
    pub kafka_options: Vec<String>,
    pub worker_bin: Option<String>,
    pub out: String,
    /// --malformed: percent of the throughput and memory runs' messages written malformed.
    pub malformed_pct: f64,
    pub on_error: OnErrorMode,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProduceFigures {
    pub messages: u64,
    pub bytes: u64,
    pub avg_message_bytes: f64,
    pub seconds: f64,
    pub msgs_per_s: f64,
}

impl From<&Produced> for ProduceFigures {
    fn from(p: &Produced) -> Self {
        Self {
            messages: p.messages,
            bytes: p.bytes,
            avg_message_bytes: stats::rate(p.bytes as f64, p.messages as f64),
            seconds: p.seconds,
            msgs_per_s: stats::rate(p.messages as f64, p.seconds),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LimitFigures {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    pub watermark_ms_while_fetching: f64,
}

impl From<&Consumed> for LimitFigures {
    fn from(c: &Consumed) -> Self {
        Self {
            messages: c.messages,
            bytes: c.bytes,
            seconds: c.seconds,
            msgs_per_s: stats::rate(c.messages as f64, c.seconds),
            mb_per_s: stats::rate(c.bytes as f64 / 1e6, c.seconds),
            watermark_ms_while_fetching: c.watermark_ms_while_fetching,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub machine: Machine,
    pub config: ConfigFigures,
    pub produce: ProduceFigures,
    pub limit: LimitFigures,
    /// Mean milliseconds of one fetch_watermarks on an idle consumer (compare with
    /// limit.watermark_ms_while_fetching).
    pub watermark_ms_idle: f64,
    pub worker: Option<ThroughputFigures>,
    /// Worker rows/s over limit messages/s.
    pub ratio_worker_to_limit: Option<f64>,
    pub latency: Option<LatencyFigures>,
    pub memory: Vec<ThroughputFigures>,
    /// --vs: the worker's availableNow run beside the pipeline it replaces.
    pub versus: Option<VersusFigures>,
    /// --shapes: the same availableNow ingestion with a transform, or in update mode.
    pub shapes: Vec<ThroughputFigures>,
}

fn phases(phase_ms: &std::collections::BTreeMap<String, i64>) -> String {
    phase_ms
        .iter()
        .map(|(phase, ms)| format!("{phase} {ms}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn throughput_rows(label: &str, t: &ThroughputFigures) -> String {
    format!(
        "{label}: {} msgs, {} partitions, {:.2} s wall\n\
         \x20 rows/s {:>12.0}   MB/s {:>8.1}\n\
         \x20 CPU user+sys {:.2}+{:.2} s = {:.2} s per million rows   (broker meanwhile: {:.2} s)\n\
         \x20 peak RSS {:.1} MiB, {:.0} minor page faults per million rows; {} batches, first after {}, then {} rows/s\n\
         \x20 onError {}: {} malformed ({:.2} %), {} rescued, {} dead-lettered\n\
         \x20 worker's durationMs summed: {}\n\
         \x20 table: {} versions, {} files, {:.1} MB; rows counted {} (stats {}), distinct offsets {}, duplicates {}\n",
        t.messages,
        t.partitions,
        t.wall_s,
        t.rows_per_s,
        t.mb_per_s,
        t.cpu_user_s,
        t.cpu_sys_s,
        t.cpu_s_per_million_rows,
        t.broker_cpu_s,
        t.peak_rss_mib,
        t.minor_faults_per_million_rows,
        t.progress_lines,
        t.first_batch_s.map_or("-".into(), |s| format!("{s:.2} s")),
        t.steady_rows_per_s
            .map_or("-".into(), |r| format!("{r:.0}")),
        t.on_error.as_str(),
        t.malformed,
        t.malformed_pct,
        t.rescued_rows,
        t.dead_letter_rows,
        phases(&t.phase_ms),
        t.delta_versions,
        t.files,
        t.table_bytes as f64 / 1e6,
        t.rows_counted,
        t.rows_in_stats.map_or("-".into(), |r| r.to_string()),
        t.distinct_offsets,
        t.duplicate_offsets,
    )
}

impl Report {
    pub fn table(&self) -> String {
        let m = &self.machine;
        let c = &self.config;
        let mut out = format!(
            "Tributary benchmark\n\
             machine: {} x {} ({} GiB, Linux {}), load average at start {}\n\
             broker: {}\n\
             messages {}  partitions {} ({})\n\
             maxOffsetsPerTrigger {}  kafka options [{}]  out {}\n\n\
             produce:  {} msgs, avg {:.1} B, {:.2} s ({:.0} msg/s, before timing)\n\
             limit:    {:.2} s   msg/s {:>12.0}   MB/s {:>8.1}   (plain rdkafka consumer, no parsing, no writing; best of 3)\n\
             fetch_watermarks per partition: {:.2} ms on an idle consumer, {:.2} ms on one whose fetches wait at the log end\n",
            m.nproc,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            m.loadavg_at_start,
            c.broker,
            c.messages,
            c.partitions,
            c.partitions_why,
            c.max_offsets_per_trigger
                .map_or("unset".into(), |n| n.to_string()),
            c.kafka_options.join(", "),
            c.out,
            self.produce.messages,
            self.produce.avg_message_bytes,
            self.produce.seconds,
            self.produce.msgs_per_s,
            self.limit.seconds,
            self.limit.msgs_per_s,
            self.limit.mb_per_s,
            self.watermark_ms_idle,
            self.limit.watermark_ms_while_fetching,
        );
        if let Some(w) = &self.worker {
            out += &throughput_rows("worker (availableNow)", w);
        }
        if let Some(r) = self.ratio_worker_to_limit {
            out += &format!("ratio worker / limit: {:.1} %\n", r * 100.0);
        }
        if let Some(versus) = &self.versus {
            out += &versus.table();
        }
        if let Some(l) = &self.latency {
            out += &format!(
                "latency (default trigger): target {} msg/s, achieved {:.0}, {} partitions, warm-up {:.1} s excluded\n\
                 \x20 produce -> committed version: p50 {:.0} ms   p99 {:.0} ms   max {:.0} ms   over {} rows in {:.0} s\n\
                 \x20 p50 / p99 ms by fifth of the window: {}\n\
                 \x20 {} versions ({:.2} commits/s), {} files in the window: {:.1} files/min, median file {:.1} KB\n\
                 \x20 rows committed {} of {} produced; worker CPU {:.2} s ({:.2} s per million rows), peak RSS {:.1} MiB\n\
                 \x20 {} batches; worker's durationMs summed: {}\n",
                l.rate_target,
                l.rate_achieved,
                l.partitions,
                l.warmup_s,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.rows_measured,
                l.window_s,
                l.slices
                    .iter()
                    .map(|s| format!("{:.0}/{:.0}", s.p50_ms, s.p99_ms))
                    .collect::<Vec<_>>()
                    .join("   "),
                l.versions_in_window,
                l.commits_per_s,
                l.files_in_window,
                l.files_per_minute,
                l.median_file_bytes as f64 / 1e3,
                l.rows_committed,
                l.produced,
                l.worker_cpu_s,
                l.worker_cpu_s_per_million_rows,
                l.worker_peak_rss_mib,
                l.progress_lines,
                phases(&l.phase_ms),
            );
        }
        for t in &self.memory {
            out += &throughput_rows("memory run", t);
        }
        for t in &self.shapes {
            out += &throughput_rows(&format!("worker (availableNow, {})", t.shape.as_str()), t);
        }
        if let (Some(append), false) = (&self.worker, self.shapes.is_empty()) {
            out += "shape       rows/s   CPU s per M rows   peak RSS MiB   rows/s vs append\n";
            for t in std::iter::once(append).chain(&self.shapes) {
                out += &format!(
                    "{:<9} {:>9.0}   {:>16.2}   {:>12.1}   {:>15.1} %\n",
                    t.shape.as_str(),
                    t.rows_per_s,
                    t.cpu_s_per_million_rows,
                    t.peak_rss_mib,
                    stats::rate(t.rows_per_s * 100.0, append.rows_per_s),
                );
            }
        }
        out
    }
}
