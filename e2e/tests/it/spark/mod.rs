//! Spark reads what Tributary writes: the reference implementation of Delta Lake (delta-spark,
//! in a local-mode Spark installed by scripts/install-deps.sh) reads every table shape the real
//! worker writes, and must find exactly the records that were produced, each with the values
//! Spark's own `from_json(value, schema)` gives (the pipeline Tributary replaces).
//!
//! Spark costs tens of seconds to start, so one session serves the whole suite: the test writes
//! its tables while Spark starts, then asks it about all of them and reports every difference
//! at once.

mod data;
mod harness;
mod lake;
mod spark_created;
mod tables;
mod takeover;
