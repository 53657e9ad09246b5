//! End-to-end suites, and the benchmark (`bench` binary) that measures the worker against the
//! machine's plain-consume limit.

pub mod bench;
pub mod cluster;
pub mod spark;
