//! The worker's integration tests: one binary (each tests/ file would link its own ~550 MB
//! binary). A real broker runs in the test process; the worker runs as a child process.

mod adls;
mod available_now;
mod azurite;
mod catalog_tables;
mod checkpoint;
mod demo;
mod event_hubs;
mod exactly_once;
mod in_pod;
mod kafka;
mod on_error;
mod real_broker;
mod rebalance;
mod schema_evolution;
mod secure_broker;
mod source_options;
mod support;
mod transform;
mod unity_catalog;
