//! The micro-batch loop that ties the stages together, by trigger, until done or stopped:
//!
//! ```text
//! Pipeline::open   (open.rs)    set-up: source, checkpoint, tables, offsets, consumer
//! loop             (this file)  wait for the trigger, then one batch:
//!   read_batch     (read.rs)    plan offsets, read records            -> source/, batch/
//!   decode         (commit.rs)  records -> rows                       -> decode/
//!                  (shape.rs)   SQL transform, last row per key       -> transform/
//!   hand_off       (commit.rs)  to the committer, which writes dead   -> sink/
//!                  (committer.rs) letters, then rows + txns (or MERGEs
//!                               them), on its own thread while the
//!                               next batch is read
//!   settle         (commit.rs)  wait for the batch in flight, then
//!   publish        (publish.rs) progress record, metrics, status      -> checkpoint/, outputs/
//! ```
//!
//! One batch at most is in flight: batch N+1 is read and decoded while N commits, and handed
//! over once N has landed.
//!
//! The pipeline is the only module that knows every stage; the stages know only the leaf
//! modules (`partition`, `record`, `error`, `secrets`, `store`, `tuning`, `arrow_types`), not
//! each other.

mod commit;
mod committer;
mod open;
mod publish;
mod read;
mod shape;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tracing::{info, info_span};
use tributary_crds::{StreamingIngestion, TriggerKind};

use crate::batch::{BatchOutcome, MinOffsets, Next, ReadAhead, Schedule, TopicNames};
use crate::checkpoint::CheckpointDir;
use crate::decode::Decoder;
use crate::error::Result;
use crate::outputs::Telemetry;
use crate::partition::{OffsetMap, TopicPartition};
use crate::record::{Payloads, Record};
use crate::sink::catalog::Renewal;
use crate::sink::{Finished, Maintenance, SharedTable, outcome_label};
use crate::source::{Fetched, Source, SparkTakeover};
use crate::tuning::Tuning;

/// Poll interval while idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub query_id: String,
    pub batches: i64,
    pub input_rows: i64,
    pub output_rows: i64,
    pub rescued_rows: i64,
    pub dead_letter_rows: i64,
    pub files: usize,
    pub delta_version: Option<i64>,
    pub table: String,
    /// False when stopped (SIGTERM) before an availableNow/once run reached its targets.
    pub completed: bool,
}

/// Runs one ingestion until its trigger says it is done, or `stop` is set.
pub fn run(
    ingestion: &StreamingIngestion,
    bootstrap_override: Option<&str>,
    tuning: &Tuning,
    stop: Arc<AtomicBool>,
    runtime: Handle,
    telemetry: Telemetry,
    takeover: Option<&SparkTakeover>,
) -> Result<RunSummary> {
    let span = info_span!("ingestion", ingestion = %open::Identity::of(ingestion));
    let _entered = span.enter();
    let mut pipeline = Pipeline::open(
        ingestion,
        bootstrap_override,
        tuning,
        stop,
        runtime,
        telemetry,
        takeover,
    )?;
    if let Err(error) = pipeline.run() {
        if error.is_refused_connection() {
            let Pipeline { source, .. } = pipeline;
            source.abandon();
        }
        return Err(error);
    }
    let Pipeline {
        source, summary, ..
    } = pipeline;
    source.close_within(CONSUMER_CLOSE_TIMEOUT);
    Ok(summary)
}

/// How long a finished run waits for its consumer to leave the group.
const CONSUMER_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One ingestion's stages, opened.
pub struct Pipeline {
    /// `namespace/name`.
    name: String,
    query_id: String,
    run_id: String,
    source: Source,
    table: SharedTable,
    sink_description: String,
    /// Commits batches (and their dead letters) beside the read of the next.
    committer: committer::Committer,
    /// The batch the committer holds.
    in_flight: Option<commit::InFlight>,
    /// The id of the next batch handed to the committer.
    next_batch_id: i64,
    /// Background compaction (queries that run for long).
    maintenance: Option<Maintenance>,
    decoder: Decoder,
    /// The transform and outputMode update, between decode and commit.
    shaping: shape::Shaping,
    checkpoint: CheckpointDir,
    runtime: Handle,
    schedule: Schedule,
    /// The end offsets of a run to completion.
    targets: Option<OffsetMap>,
    max_offsets_per_trigger: Option<i64>,
    /// minOffsetsPerTrigger with maxTriggerDelay (continuous triggers only).
    min_offsets: Option<MinOffsets>,
    /// Records read ahead of a batch's planned end, kept for the next batch.
    read_ahead: ReadAhead,
    /// Where the records' keys and values are copied to.
    payloads: Payloads,
    /// Records taken from the consumer and not yet placed (kept for its buffer).
    fetched: Fetched,
    /// Whether records keep their Kafka headers (includeHeaders).
    keep_headers: bool,
    /// The last batch's record vector, emptied, for the next batch's records.
    spare_records: Vec<Record>,
    topic_names: TopicNames,
    max_batch_bytes: usize,
    stop: Arc<AtomicBool>,
    /// Set when the broker no longer has an offset we read: every partition is re-resolved.
    offsets_lost: bool,
    /// Set when the broker said a topic being read is unknown: whether it was deleted is
    /// checked before the next batch.
    topic_missing: bool,
    /// Whether lost offsets (and a deleted topic) stop the query.
    fail_on_data_loss: bool,
    previous_start: Option<Instant>,
    /// Metrics, readiness and (in a pod) status.
    telemetry: Telemetry,
    summary: RunSummary,
    /// Storage credentials the catalog vended, renewed before they expire.
    renewal: Option<Renewal>,
    /// Checks that the brokers and the table can be reached, for /readyz; stops when dropped.
    _watch: Option<watch::Watch>,
}

impl Pipeline {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The loop, then the batch still in flight: whatever ended the loop (a stop, an error),
    /// the run never ends in the middle of a commit, and a batch that landed is published.
    fn run(&mut self) -> Result<()> {
        // Batch ids number the progress records; the table's commits count too, in case a
        // committed batch's progress record could not be written.
        let logged = self.runtime.block_on(self.checkpoint.last_batch_id())?;
        let committed = self.table.last_batch_id()?;
        self.next_batch_id = logged.max(committed).map_or(0, |b| b + 1);
        let ended = self.run_batches();
        let settled = self.settle();
        match (ended, settled) {
            (Err(error), Err(also)) => {
                tracing::warn!(error = %also, "the batch in flight did not land either");
                Err(error)
            }
            (Err(error), Ok(_)) | (Ok(()), Err(error)) => Err(error),
            (Ok(()), Ok(_)) => Ok(()),
        }
    }

    /// Waits for the trigger, then reads, decodes and hands over one batch, until done or
    /// stopped.
    fn run_batches(&mut self) -> Result<()> {
        loop {
            self.telemetry.heartbeat();
            self.maintain();
            self.renew_credentials()?;
            let wait = self.schedule.wait(Instant::now());
            if !wait.is_zero() {
                // Nothing is read meanwhile: the batch in flight is published now.
                self.settle()?;
            }
            self.poll_for(wait)?;
            if self.stopped() {
                info!("stopping: no batch being read");
                return Ok(());
            }
            // The positions count the batch in flight as landed: the run is complete only
            // once it has.
            if self
                .schedule
                .run_complete(self.targets.as_ref(), &self.source.assigned().0)
                && self.settle()?
            {
                return self.finish();
            }
            let started = Instant::now();
            self.schedule.batch_started(started);
            let span = info_span!("batch", batch = self.next_batch_id);
            let outcome = span.in_scope(|| self.batch(started))?;
            let assigned = self.source.assigned().0;
            match self
                .schedule
                .after_batch(outcome, self.targets.as_ref(), &assigned)
            {
                Next::Continue => {}
                Next::Idle => {
                    self.settle()?;
                    self.report_idle_lag();
                    self.poll_for(IDLE_POLL)?;
                }
                Next::Finish => {
                    if self.settle()? {
                        return self.finish();
                    }
                }
            }
        }
    }

    /// Tells the status and the metrics how far behind the owned partitions are now that
    /// nothing came to read (`offsets_waiting`, as `minOffsetsPerTrigger` counts them).
    fn report_idle_lag(&self) {
        let (assigned, _) = self.source.assigned();
        let lag = assigned
            .iter()
            .map(|(tp, start)| (tp.clone(), self.offsets_waiting(tp, start.offset)))
            .collect();
        let partitions: Vec<TopicPartition> = assigned.into_keys().collect();
        self.telemetry.idle(lag, &partitions);
    }

    /// One micro-batch: read -> decode, then, once the batch before it has landed, hand over
    /// to the committer. `Committed` here means handed over: a batch abandoned later has its
    /// partitions re-read by the next.
    fn batch(&mut self, started: Instant) -> Result<BatchOutcome> {
        let read = match self.read_batch(started)? {
            read::Read::Batch(read) => read,
            read::Read::Idle => return Ok(BatchOutcome::Idle),
            read::Read::Abandoned => return Ok(BatchOutcome::Abandoned),
        };
        let decoded = self.decode(&read)?;
        // This batch starts where the one in flight ends: if that one did not land, neither
        // may this one.
        if !self.settle()? {
            self.resync_plan(&read.plan)?;
            return Ok(BatchOutcome::Abandoned);
        }
        let full = read.full;
        self.hand_off(started, read, decoded)?;
        Ok(BatchOutcome::Committed { full })
    }

    /// Between batches: serves the offsets client's events, and starts or collects background
    /// compaction.
    fn maintain(&mut self) {
        self.source.serve_offsets_client();
        let metrics = &self.telemetry.metrics;
        match self.maintenance.as_mut().and_then(Maintenance::tick) {
            Some(Finished::Compaction(outcome)) => {
                if let Some(label) = outcome_label(&outcome) {
                    metrics.record_compaction(label, outcome.files_removed);
                }
                if outcome.version.is_some() {
                    self.telemetry.compacted(
                        &self.query_id,
                        tributary_crds::MaintenanceRun {
                            time: chrono::Utc::now().to_rfc3339(),
                            files_removed: outcome.files_removed as i64,
                            files_added: Some(outcome.files_added as i64),
                        },
                    );
                }
            }
            Some(Finished::Vacuum(outcome)) => {
                metrics.record_vacuum("committed", outcome.files_deleted);
                self.telemetry.vacuumed(
                    &self.query_id,
                    tributary_crds::MaintenanceRun {
                        time: chrono::Utc::now().to_rfc3339(),
                        files_removed: outcome.files_deleted as i64,
                        files_added: None,
                    },
                );
            }
            Some(Finished::VacuumFailed) => metrics.record_vacuum("failed", 0),
            None => {}
        }
    }

    /// Between batches: new storage credentials from the catalog when the current ones are
    /// due for renewal, for the table and its compaction handle.
    fn renew_credentials(&mut self) -> Result<()> {
        let Some(renewal) = self.renewal.as_mut() else {
            return Ok(());
        };
        if !renewal.due(std::time::SystemTime::now()) {
            return Ok(());
        }
        let Some(options) = self.runtime.block_on(renewal.renew())? else {
            return Ok(());
        };
        self.table.reopen_with(options.clone())?;
        if let Some(maintenance) = self.maintenance.as_mut() {
            maintenance.renew_storage_options(options);
        }
        Ok(())
    }

    /// The run reached its end: an availableNow run is marked finished in the checkpoint, so
    /// the next run plans new targets.
    fn finish(&mut self) -> Result<()> {
        if self.schedule.kind() == TriggerKind::AvailableNow
            && let Some(mut run) = self.runtime.block_on(self.checkpoint.available_now())?
        {
            run.finished = true;
            self.runtime
                .block_on(self.checkpoint.save_available_now(&run))?;
        }
        self.summary.completed = true;
        info!(rows = self.summary.output_rows, "run complete");
        Ok(())
    }
}
