//! What the worker's Kafka harness (worker/tests/it/kafka.rs, shared by path) needs from its
//! test crate: a producer whose offsets follow the order of sends.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        // One request in flight, no reordering: a partition's offsets are the order of sends.
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: &[u8],
) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, returned)) => {
                // The queue is full: let deliveries drain it.
                record = returned;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}
