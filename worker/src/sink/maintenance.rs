//! Table maintenance beside a continuous query: small files -> compaction in the background.
//!
//! Each micro-batch of a continuous query commits its own files, a few hundred KB at common
//! rates; left alone a table collects thousands of them an hour and every reader pays for
//! opening each. Every interval the batch loop hands a second handle on the table to a
//! background task that rewrites the small files into target-sized ones (see [`super::compact`]),
//! so ingestion never waits for it. Appends and compactions commit independently; a
//! compaction that loses a race to another one (another replica's) gives up its bins.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::compact::{CompactionOutcome, CompactionPolicy, CompactionStatus};
use super::delta::DeltaSink;
use crate::error::Result;

type Run = JoinHandle<(DeltaSink, Result<CompactionOutcome>)>;

/// The background compaction of one table.
pub struct Maintenance {
    /// The table handle, here between runs and inside the task during one.
    idle: Option<DeltaSink>,
    running: Option<Run>,
    policy: CompactionPolicy,
    interval: Duration,
    last_started: Instant,
    runtime: Handle,
    /// Renewed storage credentials, for the handle before its next run.
    renewed_options: Option<HashMap<String, String>>,
}

impl Maintenance {
    /// Compaction of `sink`'s table every `interval`, of partitions with at least
    /// `min_small_files` small files (the policy's default when None).
    pub fn new(
        sink: DeltaSink,
        runtime: Handle,
        interval: Duration,
        min_small_files: Option<usize>,
    ) -> Maintenance {
        let mut policy = CompactionPolicy::default();
        if let Some(min_files) = min_small_files {
            policy.min_small_files = min_files;
        }
        Maintenance {
            idle: Some(sink),
            running: None,
            policy,
            interval,
            last_started: Instant::now(),
            runtime,
            renewed_options: None,
        }
    }

    /// Called between batches: collects a finished run and starts the next one when due.
    /// Returns the outcome of a run that finished since the last call.
    pub fn tick(&mut self) -> Option<CompactionOutcome> {
        let finished = self.collect();
        if self.running.is_none()
            && self.last_started.elapsed() >= self.interval
            && let Some(mut sink) = self.idle.take()
        {
            let policy = self.policy.clone();
            let renewed = self.renewed_options.take();
            self.last_started = Instant::now();
            self.running = Some(self.runtime.spawn(async move {
                if let Some(options) = renewed
                    && let Err(error) = sink.reopen_with(options).await
                {
                    return (sink, Err(error));
                }
                let result = sink.compact(&policy).await;
                (sink, result)
            }));
        }
        finished
    }

    /// Storage options with renewed credentials: the next run opens the table with them.
    pub fn renew_storage_options(&mut self, options: HashMap<String, String>) {
        self.renewed_options = Some(options);
    }

    fn collect(&mut self) -> Option<CompactionOutcome> {
        if !self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            return None;
        }
        let run = self.running.take()?;
        match self.runtime.block_on(run) {
            Ok((sink, result)) => {
                self.idle = Some(sink);
                match result {
                    Ok(outcome) => {
                        log(&outcome);
                        Some(outcome)
                    }
                    // The table is intact either way (nothing or everything of a run is
                    // committed), so ingestion goes on and the next run tries again.
                    Err(error) => {
                        warn!(%error, "compaction failed; ingestion goes on, the next run retries");
                        None
                    }
                }
            }
            Err(error) => {
                // A panic in the task loses the table handle: compaction stops, ingestion not.
                warn!(%error, "the compaction task died; compaction is off until the worker restarts");
                None
            }
        }
    }
}

/// The outcome's name in metrics; None for a run that found nothing to do.
pub fn outcome_label(outcome: &CompactionOutcome) -> Option<&'static str> {
    match outcome.status {
        CompactionStatus::NothingToDo => None,
        CompactionStatus::Committed => Some("committed"),
        CompactionStatus::Superseded => Some("superseded"),
        CompactionStatus::Abandoned(_) => Some("abandoned"),
    }
}

fn log(outcome: &CompactionOutcome) {
    match &outcome.status {
        CompactionStatus::NothingToDo => {}
        CompactionStatus::Committed => info!(
            planned_on = outcome.read_version,
            version = outcome.version,
            files_removed = outcome.files_removed,
            files_added = outcome.files_added,
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            "compacted small files"
        ),
        CompactionStatus::Superseded => {
            info!("another writer compacted the same files first")
        }
        CompactionStatus::Abandoned(reason) => {
            warn!(reason, "compaction gave up; the next run starts over")
        }
    }
}
