//! The command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use super::data::Malformed;

use super::broker::BrokerKind;
use super::versus::Versus;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench",
    about = "Tributary's benchmark: the worker's throughput, latency and memory against the \
             plain-consume limit, on one machine, with a broker on 127.0.0.1 (librdkafka's mock \
             cluster or Apache Kafka)"
)]
pub struct Args {
    /// The broker: librdkafka's mock cluster in this process, or Apache Kafka (one node, in its
    /// own JVM; installed by scripts/install-deps.sh).
    #[arg(long, value_enum, default_value = "mock")]
    pub broker: BrokerKind,
    /// Messages produced (before timing starts) for the limit and the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    pub messages: u64,
    /// Topic partitions. Default on Apache Kafka: 6. On the mock broker: enough to keep each
    /// under 4 MiB (it keeps at most 5 MiB per partition and silently drops older data), and at
    /// least 6.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Messages per second produced during the latency run.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds of the latency run's measured window (after the worker's first commit).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// The tributary-worker binary. Default: the one next to this binary.
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// maxOffsetsPerTrigger in the worker's manifests (0: unset, as Spark's default: batches
    /// are then bounded by the worker's byte budget only).
    #[arg(long, default_value_t = 0)]
    pub max_offsets_per_trigger: u64,
    /// A librdkafka option for the worker's consumer, KEY=VALUE, passed through the manifest's
    /// source.kafka.options (repeatable): for tuning experiments without changing the worker.
    #[arg(long = "kafka-option", value_parser = parse_option)]
    pub kafka_options: Vec<(String, String)>,
    /// A command the worker runs under, split on spaces, e.g. "perf record -g -o perf.data --"
    /// (figures then include the wrapper's own cost).
    #[arg(long, value_delimiter = ' ', num_args = 1)]
    pub worker_wrapper: Vec<String>,
    /// Skip the continuous latency run.
    #[arg(long)]
    pub skip_latency: bool,
    /// Only produce and measure the limit (no worker needed).
    #[arg(long)]
    pub skip_worker: bool,
    /// Also run the availableNow ingestion at each of --memory-sizes, to show whether peak RSS
    /// grows with the number of messages.
    #[arg(long)]
    pub memory: bool,
    #[arg(long, value_delimiter = ',', default_value = "1000000,4000000")]
    pub memory_sizes: Vec<u64>,
    /// Where tables, checkpoints, manifests, worker logs and report.json go (kept afterwards).
    /// Default: a new directory under the system's temp directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds after which a worker run is killed and the benchmark fails.
    #[arg(long, default_value_t = 900)]
    pub worker_timeout: u64,
    /// Percent of the messages of the throughput and memory runs written malformed (0 to 100):
    /// a third each truncated JSON, a field of the wrong type, not JSON at all. Which messages,
    /// and how, is a function of the message's sequence number, the same on every run; the
    /// table check then expects exactly those records rescued or dead-lettered. The latency
    /// run stays clean (it reads each row's timestamp back).
    #[arg(long, default_value_t = 0.0, value_parser = parse_percent)]
    pub malformed: f64,
    /// The manifest's format.json.onError for the throughput and memory runs (deadLetter
    /// writes a dead-letter table beside the table, which the check reads too).
    #[arg(long, value_enum, default_value_t = OnErrorMode::Rescue)]
    pub on_error: OnErrorMode,
    /// After the worker's availableNow run, run the pipeline it replaces on the same topic and
    /// print both side by side: `spark` is the seed's readStream kafka -> from_json ->
    /// writeStream delta with trigger(availableNow=True) in a local[2] Spark with delta-spark
    /// (scripts/install-deps.sh installs it). Best with --broker kafka.
    #[arg(long = "vs", value_enum)]
    pub versus: Option<Versus>,
}

/// The onError modes the benchmark runs (fail would stop at the first malformed record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum OnErrorMode {
    #[value(name = "rescue")]
    #[serde(rename = "rescue")]
    Rescue,
    #[value(name = "deadLetter")]
    #[serde(rename = "deadLetter")]
    DeadLetter,
}

impl OnErrorMode {
    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnErrorMode::Rescue => "rescue",
            OnErrorMode::DeadLetter => "deadLetter",
        }
    }
}

impl Args {
    pub fn max_offsets(&self) -> Option<u64> {
        (self.max_offsets_per_trigger > 0).then_some(self.max_offsets_per_trigger)
    }

    /// Which messages of the throughput and memory runs are malformed.
    pub fn malformed(&self) -> Malformed {
        Malformed::percent(self.malformed).unwrap_or(Malformed::NONE)
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("expected a percentage from 0 to 100, got {text:?}"))?;
    Malformed::percent(value)
        .map(|_| value)
        .ok_or_else(|| format!("expected a percentage from 0 to 100, got {text:?}"))
}

fn parse_option(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}
