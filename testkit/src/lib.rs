//! What the tests and the benchmark start around the code under test: Apache Kafka brokers
//! ([`kafka`]) and Azure Blob Storage's emulator ([`azurite`]). One copy, used by the worker's integration tests, the e2e suites and the
//! benchmark (`bench --broker kafka`).
//!
//! Test support: a broker that cannot start, or a request the test relies on that fails,
//! panics with the broker's log, which is what a test wants. Callers outside a test (the
//! benchmark) catch that panic at their boundary.

pub mod azurite;
pub mod kafka;
pub mod server;
