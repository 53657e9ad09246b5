//! The limit: one plain rdkafka consumer fetching every message, touching only its length. No
//! group join (partitions are assigned), no parsing, no writing: what any ingestion on this
//! machine and this broker could at best reach.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::error::{BenchError, Result};

#[derive(Clone, Copy, Debug, Default)]
pub struct Consumed {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Mean time of one fetch_watermarks (ListOffsets) round trip on this consumer once it has
    /// read everything and its fetches wait at the end of the log: what a worker that asks for
    /// latest offsets partition by partition between fetches pays per partition.
    pub watermark_ms_while_fetching: f64,
}

/// How many partitions the watermark probe asks about (it is a diagnostic, not the run).
const WATERMARK_PROBES: usize = 16;

/// Reads partitions 0..ends.len() of `topic` from the start up to `ends` (their high
/// watermarks), or fails after `timeout`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    ends: &[i64],
    timeout: Duration,
) -> Result<Consumed> {
    let expected: i64 = ends.iter().sum();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-bench-limit")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // As the worker sets it: a full local queue postpones a partition's next fetch by
        // this much (librdkafka's default is 1 s).
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .map_err(BenchError::kafka("create the limit consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..ends.len() {
        let partition = i32::try_from(partition).unwrap_or(i32::MAX);
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(BenchError::kafka("build the assignment"))?;
    }
    let started = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(BenchError::kafka("assign"))?;
    let mut consumed = Consumed::default();
    while (consumed.messages as i64) < expected {
        if started.elapsed() > timeout {
            return Err(BenchError::Check(format!(
                "the limit consumer read {} of {expected} messages in {timeout:?}",
                consumed.messages
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                consumed.messages += 1;
                consumed.bytes += message.payload_len() as u64;
            }
            Some(Err(e)) => return Err(BenchError::kafka("consume")(e)),
            None => {}
        }
    }
    consumed.seconds = started.elapsed().as_secs_f64();
    let probes = ends.len().min(WATERMARK_PROBES);
    let probe_started = Instant::now();
    for partition in 0..probes {
        let partition = i32::try_from(partition).unwrap_or(0);
        consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(BenchError::kafka("probe the watermarks"))?;
    }
    consumed.watermark_ms_while_fetching =
        probe_started.elapsed().as_secs_f64() * 1000.0 / probes.max(1) as f64;
    Ok(consumed)
}
