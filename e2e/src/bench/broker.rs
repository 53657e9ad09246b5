//! The broker the benchmark measures against, on 127.0.0.1:
//!
//! - `mock`: librdkafka's mock cluster, in this process (random port). It speaks the real
//!   protocol, so the worker (another process) reads from it like from any Kafka, but each
//!   partition keeps at most 5 MiB (and 100,000 produce batches) and silently drops older data.
//!   Hence many partitions (see [`auto_partitions`]) and [`Broker::check_complete`] after
//!   producing.
//! - `kafka`: Apache Kafka (one KRaft node in its own JVM, from `scripts/install-deps.sh`),
//!   started by the same harness as the test suites (tributary-testkit), with a larger heap and
//!   the optimising JIT. It keeps everything, so the benchmark uses 6 partitions.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tributary_testkit::kafka::{Kafka, KafkaConfig};

use super::error::{BenchError, Result};
use super::procfs;

/// Which broker to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// librdkafka's mock cluster, in the benchmark's process.
    Mock,
    /// Apache Kafka, one node in its own JVM.
    Kafka,
}

/// librdkafka's per-partition cap in the mock broker (rdkafka_mock.c: `max_size`).
pub const MOCK_PARTITION_CAP_BYTES: u64 = 5 * 1024 * 1024;

/// Bytes a partition may be filled to: the cap less a margin for batch headers.
const PARTITION_FILL_BYTES: u64 = 4 * 1024 * 1024;

/// Per-record overhead in the log beyond the payload (varint lengths, attributes, deltas).
const RECORD_OVERHEAD_BYTES: u64 = 16;

/// Partitions of the benchmark's topics on a broker without a per-partition cap.
pub const PARTITIONS: i32 = 6;

/// The benchmark's broker JVM: Kafka's own default heap (1 GiB) and the optimising JIT (the
/// test harness starts small and stops at the quick compiler, for start-up time).
const KAFKA_JVM_OPTIONS: &[&str] = &["-Xms1g", "-Xmx1g", "-XX:TieredStopAtLevel=4"];

/// Enough partitions for `messages` of `payload_bytes` each to stay under the mock broker's cap,
/// and never fewer than 6; on Apache Kafka, 6.
pub fn auto_partitions(kind: BrokerKind, messages: u64, payload_bytes: u64) -> i32 {
    if kind == BrokerKind::Kafka {
        return PARTITIONS;
    }
    let total = messages.saturating_mul(payload_bytes + RECORD_OVERHEAD_BYTES);
    let needed = total.div_ceil(PARTITION_FILL_BYTES);
    i32::try_from(needed.max(PARTITIONS as u64)).unwrap_or(i32::MAX)
}

enum Running {
    // Dropping either stops the broker: kept for the life of the benchmark.
    Mock(MockCluster<'static, DefaultProducerContext>),
    Kafka(Box<Kafka>),
}

pub struct Broker {
    running: Running,
    pub kind: BrokerKind,
    pub bootstrap: String,
}

/// Runs a call into the test harness, which panics (with the broker's log on stderr) when the
/// broker fails: the benchmark reports that as an error instead.
fn harness<T>(what: &str, call: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("see the broker's log above");
        BenchError::Broker(format!("{what}: {message}"))
    })
}

impl Broker {
    pub fn start(kind: BrokerKind) -> Result<Self> {
        match kind {
            BrokerKind::Mock => {
                let cluster =
                    MockCluster::new(1).map_err(BenchError::kafka("start the mock cluster"))?;
                let bootstrap = cluster.bootstrap_servers();
                Ok(Self {
                    running: Running::Mock(cluster),
                    kind,
                    bootstrap,
                })
            }
            BrokerKind::Kafka => {
                let kafka = harness("start Apache Kafka", || {
                    Kafka::start_with(KafkaConfig {
                        jvm_options: KAFKA_JVM_OPTIONS.iter().map(|o| o.to_string()).collect(),
                        ..KafkaConfig::default()
                    })
                })?;
                Ok(Self {
                    bootstrap: kafka.bootstrap.clone(),
                    running: Running::Kafka(Box::new(kafka)),
                    kind,
                })
            }
        }
    }

    /// What the report says the broker is.
    pub fn describe(&self) -> String {
        match self.kind {
            BrokerKind::Mock => "librdkafka's mock cluster (in the benchmark's process)".into(),
            BrokerKind::Kafka => format!(
                "Apache Kafka {} (one KRaft node, its own JVM: {})",
                tributary_testkit::kafka::version(),
                KAFKA_JVM_OPTIONS.join(" ")
            ),
        }
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        match &self.running {
            Running::Mock(cluster) => cluster
                .create_topic(topic, partitions, 1)
                .map_err(BenchError::kafka(format!("create topic {topic}"))),
            Running::Kafka(kafka) => harness(&format!("create topic {topic}"), || {
                kafka.topic(topic, partitions)
            }),
        }
    }

    /// CPU seconds the broker has used so far: the benchmark's own process for the in-process
    /// mock cluster (almost all of it the broker while the worker runs), the JVM's for Kafka.
    pub fn cpu_seconds(&self) -> f64 {
        match &self.running {
            Running::Mock(_) => super::throughput::own_cpu_s(),
            Running::Kafka(kafka) => kafka.pids().into_iter().map(procfs::cpu_seconds).sum(),
        }
    }

    /// The (low, high) watermarks of every partition, and the mean milliseconds per partition
    /// of asking (an idle consumer: the cost of one ListOffsets round trip).
    pub fn watermarks(&self, topic: &str, partitions: i32) -> Result<(Vec<(i64, i64)>, f64)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "tributary-bench-watermarks")
            .create()
            .map_err(BenchError::kafka("create a consumer"))?;
        let started = Instant::now();
        let marks = (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map_err(BenchError::kafka(format!("watermarks of {topic}-{p}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let per_call_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(partitions.max(1));
        Ok((marks, per_call_ms))
    }

    /// Fails unless the topic holds every produced message from offset 0 (the mock broker drops
    /// old data silently when a partition outgrows its cap). Returns the high watermarks and the
    /// mean milliseconds per watermark request.
    pub fn check_complete(
        &self,
        topic: &str,
        partitions: i32,
        produced: u64,
    ) -> Result<(Vec<i64>, f64)> {
        let (marks, per_call_ms) = self.watermarks(topic, partitions)?;
        let dropped: Vec<i32> = marks
            .iter()
            .zip(0..)
            .filter(|((low, _), _)| *low != 0)
            .map(|(_, p)| p)
            .collect();
        let held: i64 = marks.iter().map(|(low, high)| high - low).sum();
        if !dropped.is_empty() || u64::try_from(held).ok() != Some(produced) {
            let hint = match self.kind {
                BrokerKind::Mock => "it keeps at most 5 MiB per partition: raise --partitions",
                BrokerKind::Kafka => "see the broker's log in its temporary directory",
            };
            return Err(BenchError::Check(format!(
                "the broker holds {held} of {produced} messages in {topic} (partitions that \
                 dropped data: {dropped:?}); {hint}"
            )));
        }
        Ok((
            marks.into_iter().map(|(_, high)| high).collect(),
            per_call_ms,
        ))
    }
}
