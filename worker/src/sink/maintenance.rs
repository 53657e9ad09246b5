//! Table maintenance beside a query: small files -> compaction, unreferenced files -> VACUUM,
//! both in the background.
//!
//! Each micro-batch of a continuous query commits its own files, a few hundred KB at common
//! rates; left alone a table collects thousands of them an hour and every reader pays for
//! opening each. Every interval the batch loop hands a second handle on the table to a
//! background task that rewrites the small files into target-sized ones (see [`super::compact`]),
//! so ingestion never waits for it. Appends and compactions commit independently; a
//! compaction that loses a race to another one (another replica's) gives up its bins.
//!
//! Compaction only marks the small files removed; they stay on storage for readers of older
//! versions until a VACUUM (`sink.delta.vacuum`) deletes the ones unreferenced for longer than
//! the retention. VACUUM runs on the same handle, never at the same time as a compaction.
//!
//! The runs have a runtime of their own, one thread at a lower priority (nice 10 by default):
//! a compaction encodes Parquet for seconds, and on the query's runtime it held one of its
//! worker threads all that time while the kernel shared the cores evenly with ingestion.
//! Niced, it takes what ingestion leaves; it is not urgent (the next interval waits for it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::compact::{CompactionOutcome, CompactionPolicy, CompactionStatus};
use super::delta::{DeltaSink, VacuumOutcome};
use crate::error::{Error, Result};
use crate::tuning::Tuning;

/// What a background run did.
#[derive(Debug)]
pub enum Finished {
    Compaction(CompactionOutcome),
    Vacuum(VacuumOutcome),
    /// A VACUUM failed (logged); the next interval retries.
    VacuumFailed,
}

enum Job {
    Compaction(CompactionPolicy),
    Vacuum(VacuumPolicy),
}

enum Work {
    Compaction(Result<CompactionOutcome>),
    Vacuum(Result<VacuumOutcome>),
}

type Run = JoinHandle<(DeltaSink, Work)>;

/// When and how VACUUM runs.
#[derive(Clone, Debug, PartialEq)]
pub struct VacuumPolicy {
    pub interval: Duration,
    /// Hours a file must have been unreferenced before it is deleted.
    pub retain_hours: i32,
    /// Whether deltalake refuses a retention under the table's deletedFileRetentionDuration.
    pub enforce_retention: bool,
}

/// A recurring piece of maintenance.
struct Schedule {
    interval: Duration,
    last_started: Instant,
}

impl Schedule {
    fn new(interval: Duration) -> Schedule {
        Schedule {
            interval,
            last_started: Instant::now(),
        }
    }

    fn due(&self) -> bool {
        self.last_started.elapsed() >= self.interval
    }
}

/// The background maintenance of one table.
pub struct Maintenance {
    /// The table handle, here between runs and inside the task during one.
    idle: Option<DeltaSink>,
    running: Option<Run>,
    compaction: Option<(CompactionPolicy, Schedule)>,
    vacuum: Option<(VacuumPolicy, Schedule)>,
    /// The runs' own runtime (see the module comment); None only while dropping.
    runtime: Option<Runtime>,
    /// Renewed storage credentials, for the handle before its next run.
    renewed_options: Option<HashMap<String, String>>,
}

impl Maintenance {
    /// Compaction of `sink`'s table as `tuning`'s compaction knobs say (its interval, None:
    /// never; the small files a partition needs; the row group size), and VACUUM as `vacuum`
    /// says, on a thread of `tuning.maintenance_nice`. None when there is nothing to do.
    pub fn new(
        sink: DeltaSink,
        tuning: &Tuning,
        vacuum: Option<VacuumPolicy>,
    ) -> Result<Option<Maintenance>> {
        let compaction_interval = tuning.compaction_interval();
        if compaction_interval.is_none() && vacuum.is_none() {
            return Ok(None);
        }
        let compaction = compaction_interval
            .map(|interval| (CompactionPolicy::tuned(tuning), Schedule::new(interval)));
        let runtime = upkeep_runtime(tuning.maintenance_nice)
            .map_err(|e| Error::Runtime(format!("cannot start the maintenance thread: {e}")))?;
        Ok(Some(Maintenance {
            idle: Some(sink),
            running: None,
            compaction,
            vacuum: vacuum.map(|policy| {
                let schedule = Schedule::new(policy.interval);
                (policy, schedule)
            }),
            runtime: Some(runtime),
            renewed_options: None,
        }))
    }

    /// Called between batches: collects a finished run and starts the next one when due
    /// (VACUUM first: it is rare and deletes what compaction left behind).
    pub fn tick(&mut self) -> Option<Finished> {
        let finished = self.collect();
        if self.running.is_some() || self.idle.is_none() {
            return finished;
        }
        let Some(job) = self.next_job() else {
            return finished;
        };
        let Some(runtime) = self.runtime.as_ref() else {
            return finished;
        };
        let Some(mut sink) = self.idle.take() else {
            return finished;
        };
        let renewed = self.renewed_options.take();
        self.running = Some(runtime.spawn(async move {
            let reopened = match renewed {
                Some(options) => sink.reopen_with(options).await,
                None => Ok(()),
            };
            let work = match job {
                Job::Vacuum(policy) => Work::Vacuum(match reopened {
                    Ok(()) => {
                        sink.vacuum(policy.retain_hours, policy.enforce_retention)
                            .await
                    }
                    Err(error) => Err(error),
                }),
                Job::Compaction(policy) => Work::Compaction(match reopened {
                    Ok(()) => sink.compact(&policy).await,
                    Err(error) => Err(error),
                }),
            };
            (sink, work)
        }));
        finished
    }

    /// The work that is due, marking it started.
    fn next_job(&mut self) -> Option<Job> {
        if let Some((policy, schedule)) = self.vacuum.as_mut().filter(|(_, s)| s.due()) {
            schedule.last_started = Instant::now();
            return Some(Job::Vacuum(policy.clone()));
        }
        if let Some((policy, schedule)) = self.compaction.as_mut().filter(|(_, s)| s.due()) {
            schedule.last_started = Instant::now();
            return Some(Job::Compaction(policy.clone()));
        }
        None
    }

    /// Storage options with renewed credentials: the next run opens the table with them.
    pub fn renew_storage_options(&mut self, options: HashMap<String, String>) {
        self.renewed_options = Some(options);
    }

    fn collect(&mut self) -> Option<Finished> {
        if !self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            return None;
        }
        let run = self.running.take()?;
        match self.runtime.as_ref()?.block_on(run) {
            Ok((sink, work)) => {
                self.idle = Some(sink);
                match work {
                    Work::Compaction(Ok(outcome)) => {
                        log(&outcome);
                        Some(Finished::Compaction(outcome))
                    }
                    // The table is intact either way (nothing or everything of a run is
                    // committed), so ingestion goes on and the next run tries again.
                    Work::Compaction(Err(error)) => {
                        warn!(%error, "compaction failed; ingestion goes on, the next run retries");
                        None
                    }
                    Work::Vacuum(Ok(outcome)) => {
                        info!(
                            files_deleted = outcome.files_deleted,
                            retain_hours = outcome.retain_hours,
                            "vacuumed files unreferenced for longer than the retention"
                        );
                        Some(Finished::Vacuum(outcome))
                    }
                    Work::Vacuum(Err(error)) => {
                        warn!(%error, "VACUUM failed; ingestion goes on, the next interval retries");
                        Some(Finished::VacuumFailed)
                    }
                }
            }
            Err(error) => {
                // A panic in the task loses the table handle: maintenance stops, ingestion not.
                warn!(%error, "the maintenance task died; compaction and VACUUM are off until the worker restarts");
                None
            }
        }
    }
}

impl Drop for Maintenance {
    /// A run in progress is abandoned where it stands (a compaction commits all or nothing;
    /// files it wrote and did not commit are left for VACUUM), without waiting for it.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The runtime the runs run on: one worker thread, it and the blocking pool's threads (local
/// file reads and writes) at `nice`, so that all of a run's CPU is niced.
fn upkeep_runtime(nice: i32) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tributary-upkeep")
        .on_thread_start(move || lower_thread_priority(nice))
        .enable_all()
        .build()
}

/// Lowers the calling thread's scheduling priority to `nice` (0-19; 0 leaves it). On Linux the
/// nice value is a thread's, and `setpriority` with id 0 sets the calling thread's. A thread
/// already at `nice` or lower in priority (a worker started under `nice`) is left as it is: the
/// call would ask for a higher priority, which needs a privilege. A refusal leaves the thread
/// at the priority it had: slower ingestion beside a run, not an error.
fn lower_thread_priority(nice: i32) {
    if nice <= 0 || thread_nice() >= nice {
        return;
    }
    // SAFETY: setpriority with integer arguments only.
    let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0;
    if refused {
        warn!(
            nice,
            error = %std::io::Error::last_os_error(),
            "cannot lower the maintenance thread's priority"
        );
    }
}

/// The calling thread's nice value. getpriority's -1 may also mean an error; read as nice -1
/// it only leads [`lower_thread_priority`] to try setting the value.
fn thread_nice() -> i32 {
    // SAFETY: getpriority with integer arguments only.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upkeep_threads_run_at_the_nice_value_and_the_caller_stays_as_it_was() {
        let before = thread_nice();
        let runtime = upkeep_runtime(before + 7).expect("runtime");
        let (worker, blocking) = runtime.block_on(async {
            let worker = tokio::spawn(async { thread_nice() }).await.expect("task");
            let blocking = tokio::task::spawn_blocking(thread_nice)
                .await
                .expect("blocking task");
            (worker, blocking)
        });
        assert_eq!((worker, blocking), (before + 7, before + 7));
        assert_eq!(
            thread_nice(),
            before,
            "the thread that built it is untouched"
        );
        runtime.shutdown_background();
        for (nice, why) in [
            (0, "0 leaves the priority alone"),
            (before, "already there"),
        ] {
            let level = upkeep_runtime(nice).expect("runtime");
            let same = level.block_on(async { tokio::spawn(async { thread_nice() }).await });
            assert_eq!(same.expect("task"), before, "{why}");
            level.shutdown_background();
        }
    }
}
