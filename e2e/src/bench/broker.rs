//! The broker: librdkafka's mock cluster, in this process, on 127.0.0.1 (random port). It speaks
//! the real protocol, so the worker (another process) reads from it like from any Kafka.
//!
//! Its limit, which shapes the benchmark: each partition keeps at most 5 MiB (and 100,000
//! produce batches) and silently drops older data. Hence many partitions (see
//! [`auto_partitions`]) and [`Broker::check_complete`] after producing.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::error::{BenchError, Result};

/// librdkafka's per-partition cap in the mock broker (rdkafka_mock.c: `max_size`).
pub const MOCK_PARTITION_CAP_BYTES: u64 = 5 * 1024 * 1024;

/// Bytes a partition may be filled to: the cap less a margin for batch headers.
const PARTITION_FILL_BYTES: u64 = 4 * 1024 * 1024;

/// Per-record overhead in the log beyond the payload (varint lengths, attributes, deltas).
const RECORD_OVERHEAD_BYTES: u64 = 16;

/// Enough partitions for `messages` of `payload_bytes` each to stay under the mock broker's cap,
/// and never fewer than the 6 the issue asks for.
pub fn auto_partitions(messages: u64, payload_bytes: u64) -> i32 {
    let total = messages.saturating_mul(payload_bytes + RECORD_OVERHEAD_BYTES);
    let needed = total.div_ceil(PARTITION_FILL_BYTES);
    i32::try_from(needed.max(6)).unwrap_or(i32::MAX)
}

pub struct Broker {
    // Dropping the cluster stops the broker: kept for the life of the benchmark.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

impl Broker {
    pub fn start() -> Result<Self> {
        let cluster = MockCluster::new(1).map_err(BenchError::kafka("start the mock cluster"))?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Self {
            _cluster: cluster,
            bootstrap,
        })
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        self._cluster
            .create_topic(topic, partitions, 1)
            .map_err(BenchError::kafka(format!("create topic {topic}")))
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

    /// Fails unless the topic holds every produced message from offset 0: the mock broker drops
    /// old data silently when a partition outgrows its cap. Returns the high watermarks and the
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
            return Err(BenchError::Check(format!(
                "the mock broker holds {held} of {produced} messages in {topic} (partitions that \
                 dropped data: {dropped:?}); it keeps at most 5 MiB per partition: raise --partitions"
            )));
        }
        Ok((
            marks.into_iter().map(|(_, high)| high).collect(),
            per_call_ms,
        ))
    }
}
