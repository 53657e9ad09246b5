//! The worker's integration tests: one binary (each tests/ file would link its own ~550 MB
//! binary). Brokers are Apache Kafka processes (tributary-testkit) or librdkafka's mock cluster
//! in the test process; the worker runs as a child process.

mod adls;
mod available_now;
mod catalog_tables;
mod checkpoint;
mod demo;
mod event_hubs;
mod exactly_once;
mod in_pod;
mod maintenance;
mod on_error;
mod readiness;
mod real_broker;
mod rebalance;
mod record_values;
mod reset;
mod schema_evolution;
mod secure_broker;
mod source_options;
mod support;
mod unity_catalog;
