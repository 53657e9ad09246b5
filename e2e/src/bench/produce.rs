//! Producers: everything as fast as possible before timing starts, or a fixed rate while the
//! worker runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::data::{self, Malformed};
use super::error::{BenchError, Result};

/// Counts failed deliveries: a benchmark over lost messages would be meaningless.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Produced {
    pub messages: u64,
    pub bytes: u64,
    /// From the first send to the end of the flush (every message acknowledged).
    pub seconds: f64,
    /// From the first send to the last: the rate the producer kept.
    pub sending_seconds: f64,
    /// Of `messages`, those written malformed on purpose ([`Malformed`]).
    pub malformed: u64,
}

struct Sender {
    producer: BaseProducer<Deliveries>,
    topic: String,
    partitions: i32,
    buf: String,
    malformed: Malformed,
    produced: Produced,
}

impl Sender {
    fn new(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        linger_ms: &str,
        malformed: Malformed,
    ) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", linger_ms)
            .set("batch.size", "1000000")
            .set("batch.num.messages", "100000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("compression.type", "none")
            .create_with_context(Deliveries::default())
            .map_err(BenchError::kafka("create a producer"))?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            partitions,
            buf: String::with_capacity(256),
            malformed,
            produced: Produced::default(),
        })
    }

    /// Sends reading `seq`, stamped now, round-robin over the partitions (exactly even, so no
    /// partition outgrows the mock broker's cap before the others): reading `seq` is at offset
    /// `seq / partitions` of partition `seq % partitions` of a new topic.
    fn send(&mut self, seq: u64) -> Result<()> {
        if data::message(seq, data::now_micros(), self.malformed, &mut self.buf).is_some() {
            self.produced.malformed += 1;
        }
        let partition = i32::try_from(seq % self.partitions as u64).unwrap_or(0);
        loop {
            let record: BaseRecord<'_, (), str> = BaseRecord::to(&self.topic)
                .payload(self.buf.as_str())
                .partition(partition);
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(BenchError::kafka("produce")(e)),
            }
        }
        self.produced.messages += 1;
        self.produced.bytes += self.buf.len() as u64;
        Ok(())
    }

    fn finish(self, started: Instant) -> Result<Produced> {
        let sending_seconds = started.elapsed().as_secs_f64();
        self.producer
            .flush(Duration::from_secs(120))
            .map_err(BenchError::kafka("flush the producer"))?;
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(BenchError::Check(format!(
                "{failed} messages were not delivered"
            )));
        }
        Ok(Produced {
            seconds: started.elapsed().as_secs_f64(),
            sending_seconds,
            ..self.produced
        })
    }
}

/// Produces `count` readings as fast as the broker takes them.
pub fn produce_all(bootstrap: &str, topic: &str, partitions: i32, count: u64) -> Result<Produced> {
    produce_mixed(bootstrap, topic, partitions, count, Malformed::NONE)
}

/// Produces `count` readings as fast as the broker takes them, the share `malformed` says
/// broken.
pub fn produce_mixed(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: u64,
    malformed: Malformed,
) -> Result<Produced> {
    let started = Instant::now();
    // Large batches: this is set-up, not measured.
    let mut sender = Sender::new(bootstrap, topic, partitions, "50", malformed)?;
    for seq in 0..count {
        sender.send(seq)?;
        if seq % 10_000 == 0 {
            sender.producer.poll(Duration::ZERO);
        }
    }
    sender.finish(started)
}

/// Produces `rate` readings per second until `stop` is set, each stamped with its produce time.
/// linger.ms=20: the wait is part of the measured latency, and it is needed with the mock
/// broker, which returns one producer batch per partition per fetch (librdkafka's "FIXME:
/// Multiple messageSets?"): with 5 ms batches a consumer needs 200 fetch round trips a second
/// per partition just to keep up, and at 20k msg/s it fell behind whatever read it.
pub fn produce_at_rate(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rate: u64,
    stop: &AtomicBool,
) -> Result<Produced> {
    let started = Instant::now();
    let mut sender = Sender::new(bootstrap, topic, partitions, "20", Malformed::NONE)?;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Catch up to where the schedule says we should be, then sleep a tick: messages go out
        // in bursts of rate/1000, each stamped when it is handed to the client.
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while seq < due {
            sender.send(seq)?;
            seq += 1;
        }
        sender.producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1));
    }
    sender.finish(started)
}
