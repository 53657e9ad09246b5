//! The commit of one batch on a thread of its own while the pipeline reads and decodes the
//! next: a hand-off with one slot.
//!
//! Reading waits on the broker and committing on storage (Parquet, then the log entry): done one
//! after the other, each leaves the cores idle while the other runs. Overlapping them keeps
//! exactly once as it was, because nothing about what a commit holds changes: each batch is
//! still one Delta commit carrying its rows and every partition's next offset, and commits land
//! in batch order, since batch N+1 is handed over only once batch N's commit has ended. Batch
//! N+1 is planned as if N had landed (its partitions start at N's ends, expecting the table's
//! txns there); if N does not land (another writer moved a partition), N+1 is abandoned with
//! it, and were it committed anyway its txn check would refuse it, as the table is not where
//! it expects.

use std::collections::HashMap;
use std::time::Instant;

use deltalake::arrow::record_batch::RecordBatch;
use tracing::warn;

use crate::error::{Error, Result};
use crate::job_thread::JobThread;
use crate::partition::OffsetMap;
use crate::record::{BadRecord, Record};
use crate::sink::{CommitOutcome, DeadLetterTable, PartitionCommit, SharedTable};
use crate::transform::DELETE_COLUMN;

/// What a batch's commit writes.
pub(super) struct Job {
    /// The rows, in the parts they were decoded in (written one after the other).
    pub parts: Vec<RecordBatch>,
    /// outputMode update: MERGE these rows by key instead of appending `parts`.
    pub merge: Option<Merge>,
    pub partitions: Vec<PartitionCommit>,
    /// Each partition of the batch and the next offset after it.
    pub ends: OffsetMap,
    pub metadata: HashMap<String, serde_json::Value>,
    /// The batch's bad records (deadLetter), indexed by `bad`.
    pub bad_records: Vec<Record>,
    pub bad: Vec<BadRecord>,
}

/// The rows of an outputMode update batch (the last per key) and the keys to MERGE them by.
pub(super) struct Merge {
    pub rows: RecordBatch,
    pub keys: Vec<String>,
}

/// A batch in the table.
#[derive(Debug)]
pub(super) struct Committed {
    pub version: i64,
    pub files: usize,
    /// Commits retried after another replica's commit.
    pub retries: u64,
    pub dead_letter_rows: i64,
    /// Writing the batch's dead letters (onError: deadLetter), then its rows.
    pub dead_letter_ms: Option<i64>,
    /// Writing the batch's Parquet files, part of `commit_ms`.
    pub write_ms: i64,
    pub commit_ms: i64,
}

/// How a batch's commit ended.
#[derive(Debug)]
pub(super) enum Landed {
    Committed(Committed),
    /// Another writer moved one of the batch's partitions: nothing of the batch was written
    /// to the table (its dead letters may have been, under their own txns).
    Abandoned(String),
}

/// The committing thread, which holds the table and the dead-letter table, and whether a batch
/// is in its hands. One thread for the pipeline's life rather than one per batch: the memory a
/// commit frees (the Parquet writer's buffers) goes back to the heap of the thread that
/// allocated it, and a thread that ends with each batch leaves the next batch fresh pages to
/// fault in.
pub(super) struct Committer {
    /// Each job with the span of the batch it belongs to, so the commit's logs name the batch.
    thread: JobThread<(Job, tracing::Span), Result<Landed>>,
    in_flight: bool,
}

impl Committer {
    /// Starts the thread; it ends when the committer is dropped.
    pub fn start_thread(
        table: SharedTable,
        mut dead_letter: Option<DeadLetterTable>,
    ) -> Result<Committer> {
        let thread = JobThread::start(
            "tributary-commit".into(),
            move |(job, span): (Job, tracing::Span)| {
                span.in_scope(|| commit(&table, dead_letter.as_mut(), job))
            },
        )
        .map_err(|e| Error::Runtime(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            thread,
            in_flight: false,
        })
    }

    /// Starts committing `job`; the slot must be free ([`Committer::wait`] first).
    pub fn start(&mut self, job: Job) -> Result<()> {
        if self.in_flight {
            return Err(Error::Runtime(
                "internal: a batch was handed to the committer while another was in flight".into(),
            ));
        }
        if !self.thread.hand((job, tracing::Span::current())) {
            return Err(Error::Runtime("the commit thread stopped".into()));
        }
        self.in_flight = true;
        Ok(())
    }

    /// Waits for the batch in flight, if any, to land or be abandoned.
    pub fn wait(&mut self) -> Option<Result<Landed>> {
        if !std::mem::take(&mut self.in_flight) {
            return None;
        }
        Some(match self.thread.next_answer() {
            Some(landed) => landed,
            // Nothing is known of what the commit did: the query stops, and a restart reads
            // where each partition stands from the table.
            None => Err(Error::Runtime("the commit thread panicked".into())),
        })
    }
}

/// Dead letters first (idempotent through their own txns), then the batch's rows with every
/// partition's next offset, in one Delta commit.
fn commit(
    table: &SharedTable,
    dead_letter: Option<&mut DeadLetterTable>,
    job: Job,
) -> Result<Landed> {
    let started = Instant::now();
    let dead_letter_ms;
    let dead_letter_rows = match dead_letter {
        None => {
            dead_letter_ms = None;
            0
        }
        Some(dead_letter) => {
            let written = dead_letter.write(&job.bad_records, &job.bad, &job.ends)?;
            dead_letter_ms = Some(started.elapsed().as_millis() as i64);
            let Some(rows) = written else {
                return Ok(Landed::Abandoned(
                    "another worker wrote dead letters for these partitions".into(),
                ));
            };
            rows
        }
    };
    let started = Instant::now();
    let outcome = match &job.merge {
        Some(merge) => table.upsert(
            &merge.rows,
            &merge.keys,
            DELETE_COLUMN,
            &job.partitions,
            job.metadata,
        )?,
        None => table.commit(&job.parts, &job.partitions, job.metadata)?,
    };
    match outcome {
        CommitOutcome::Committed {
            version,
            files,
            retries,
            write_ms,
        } => Ok(Landed::Committed(Committed {
            version,
            files,
            retries,
            dead_letter_rows,
            dead_letter_ms,
            write_ms,
            commit_ms: started.elapsed().as_millis() as i64,
        })),
        CommitOutcome::Conflict(reason) => {
            warn!(reason, "another writer moved these partitions");
            Ok(Landed::Abandoned(reason))
        }
    }
}
