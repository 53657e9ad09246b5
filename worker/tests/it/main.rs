//! The worker's integration tests: one binary (each tests/ file would link its own ~550 MB
//! binary). A real broker runs in the test process; the worker runs as a child process.

mod available_now;
mod checkpoint;
mod demo;
mod exactly_once;
mod in_pod;
mod on_error;
mod rebalance;
mod source_options;
mod support;
