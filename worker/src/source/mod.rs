//! The source stage: Kafka or Event Hubs, read exactly once into the table.
//!
//! Inside, each module uses only those listed before it: `security` (which connection failures
//! stop the worker), `config` (the consumer's settings), `offsets` (offset queries to the
//! brokers), `spark_checkpoint` (where a Spark query left off, for a takeover), `reset` (where a spec.reset moves partitions), `start` (where a partition reads next: the exactly-once core), `connection` (the
//! check before the query starts), `reach` (whether the brokers answer, for readiness), `fetch` (fetched records taken in batches), `consumer` (the group member, rebalances and polling).

mod config;
mod connection;
mod consumer;
mod fetch;
mod offsets;
mod reach;
mod reset;
mod security;
mod spark_checkpoint;
mod start;

pub use config::SourceConfig;
pub use connection::probe;
pub use consumer::{Polled, Source};
pub use fetch::Fetched;
pub use offsets::{
    RunTargets, available_now_targets, metadata_client, resolve_starting_offsets, run_end_offsets,
    subscription_partitions,
};
pub use reach::BrokerCheck;
pub use reset::reset_offsets;
pub use spark_checkpoint::{SparkCheckpoint, SparkTakeover};
pub use start::StartResolver;
