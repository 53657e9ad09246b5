//! The sink stage: the Delta table a batch is committed to with its partitions' offsets, the
//! dead-letter table, and the table's upkeep (compaction of small files and VACUUM, in the
//! background).
//!
//! Inside, each module uses only those listed before it: `parquet` (writer settings),
//! `compact`, `delta` (the table writer), `table` (txn ids, the handle shared with the source), `dead_letter`, `maintenance`,
//! `catalog` (a table named through Unity Catalog: resolved to a location and credentials).

pub mod catalog;
mod compact;
mod dead_letter;
mod delta;
mod maintenance;
mod parquet;
mod table;

pub use dead_letter::{DeadLetterTable, schema as dead_letter_schema};
pub use delta::{BATCH_ID_KEY, CommitOutcome, DeltaSink, OpenOptions, QUERY_ID_KEY};
pub use maintenance::{Finished, Maintenance, VacuumPolicy, outcome_label};
pub use table::{PartitionCommit, ResetCommit, ResetOutcome, SharedTable, TxnIds};

#[cfg(test)]
pub use delta::{TxnUpdate, table_url};
