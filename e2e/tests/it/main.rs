//! tributary-e2e's integration tests: one binary (each file under tests/ would link
//! everything again), one module per suite.

mod bench_smoke;
mod cluster;
mod spark;
// Apache Kafka brokers: the harness the worker suites and the benchmark share.
use tributary_testkit::kafka;
