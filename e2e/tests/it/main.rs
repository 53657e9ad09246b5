//! tributary-e2e's integration tests: one binary (each file under tests/ would link
//! everything again), one module per suite.

mod bench_smoke;
mod cluster;
mod spark;
// Apache Kafka brokers: the worker suite's harness, compiled here from its source (it needs only
// std, rdkafka, futures, libc and tempfile). The cluster scenarios and the Spark takeover and
// benchmark use part of it.
#[allow(dead_code)]
#[path = "../../../worker/tests/it/kafka.rs"]
mod kafka;
