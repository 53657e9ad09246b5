//! tributary-e2e's integration tests: one binary (each file under tests/ would link
//! everything again), one module per suite.

mod bench_smoke;
mod spark;

// Apache Kafka for the suites that need a real broker (Spark's Java client among them): the
// worker suite's harness, shared by path rather than copied; `support` and `secure_broker` are
// the modules it calls into.
#[allow(dead_code)]
#[path = "../../../worker/tests/it/kafka.rs"]
mod kafka;
#[allow(dead_code)]
#[path = "../../../worker/tests/it/secure_broker.rs"]
mod secure_broker;
mod support;
