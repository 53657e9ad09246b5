//! Triggers (Spark's): when the next micro-batch starts, and when the query ends.

use std::time::{Duration, Instant};

use tributary_crds::TriggerKind;

use crate::partition::{OffsetMap, StartMap};

/// The default trigger starts a batch as soon as the previous one completes (Spark's
/// semantics), but not sooner than this after the previous one started. Under a steady trickle,
/// back-to-back batches of a few hundred rows would each commit a Delta version and a file, some
/// ten a second; at most two a second keeps the log and the files in proportion, and the wait it
/// adds to a row's latency stays under half a second.
pub const DEFAULT_TRIGGER_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Schedules micro-batches.
pub struct Schedule {
    kind: TriggerKind,
    next: Option<Instant>,
}

impl Schedule {
    pub fn new(kind: TriggerKind) -> Schedule {
        Schedule { kind, next: None }
    }

    pub fn kind(&self) -> TriggerKind {
        self.kind
    }

    /// Marks the start of a batch; processingTime schedules the next start one interval later
    /// (or at once, if the batch overruns the interval, as Spark does), the default trigger
    /// [`DEFAULT_TRIGGER_MIN_INTERVAL`] later.
    pub fn batch_started(&mut self, at: Instant) {
        match self.kind {
            TriggerKind::ProcessingTime(interval) => self.next = Some(at + interval),
            TriggerKind::Default => self.next = Some(at + DEFAULT_TRIGGER_MIN_INTERVAL),
            TriggerKind::AvailableNow | TriggerKind::Once => {}
        }
    }

    /// The last batch stopped at its cap or byte budget with more waiting: the default trigger
    /// starts the next one at once (its minimum interval is for a trickle, not a backlog).
    pub fn backlog_remains(&mut self) {
        if self.kind == TriggerKind::Default {
            self.next = None;
        }
    }

    /// The last attempt found nothing to read: the default trigger looks again as soon as
    /// something arrives (processingTime keeps its interval, as Spark does).
    pub fn nothing_read(&mut self) {
        self.backlog_remains();
    }

    /// How long to wait before planning the next batch.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next
            .map(|next| next.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// The cap on a batch's offsets: maxOffsetsPerTrigger, except for once, which takes
    /// everything up to its targets in one batch (as Spark).
    pub fn offset_cap(&self, max_offsets_per_trigger: Option<i64>) -> Option<i64> {
        max_offsets_per_trigger.filter(|_| self.kind != TriggerKind::Once)
    }

    /// Before planning a batch: an availableNow run is complete once every target is reached.
    pub fn run_complete(&self, targets: Option<&OffsetMap>, assigned: &StartMap) -> bool {
        self.kind == TriggerKind::AvailableNow
            && targets.is_some_and(|targets| targets_reached(targets, assigned))
    }

    /// After a batch: what the run does next. A committed batch that stopped full has more
    /// waiting (the default trigger then starts the next at once); once ends after its one
    /// committed batch, or when it finds nothing left below its targets.
    pub fn after_batch(
        &mut self,
        outcome: BatchOutcome,
        targets: Option<&OffsetMap>,
        assigned: &StartMap,
    ) -> Next {
        match outcome {
            BatchOutcome::Committed { full } => {
                if full {
                    self.backlog_remains();
                }
                if self.kind == TriggerKind::Once {
                    Next::Finish
                } else {
                    Next::Continue
                }
            }
            BatchOutcome::Abandoned => Next::Continue,
            BatchOutcome::Idle => {
                self.nothing_read();
                let nothing_left = targets.is_none_or(|t| targets_reached(t, assigned));
                if self.kind == TriggerKind::Once && nothing_left {
                    Next::Finish
                } else {
                    Next::Idle
                }
            }
        }
    }

    /// Human form for logs and status: default, processingTime=10s, availableNow, once.
    pub fn describe(kind: TriggerKind) -> String {
        match kind {
            TriggerKind::Default => "default".into(),
            TriggerKind::ProcessingTime(interval) => format!("processingTime={interval:?}"),
            TriggerKind::AvailableNow => "availableNow".into(),
            TriggerKind::Once => "once".into(),
        }
    }
}

/// How a batch attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Nothing to read now.
    Idle,
    /// Committed; `full` when the batch stopped at its cap or byte budget with more to read.
    Committed { full: bool },
    /// Abandoned without committing (revocation, conflict or stop).
    Abandoned,
}

/// What the run does after a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Plan the next batch when the trigger says.
    Continue,
    /// Nothing was there: wait a little for records, then plan again.
    Idle,
    /// The run is complete.
    Finish,
}

/// Every target is reached: each partition of `targets` is owned and reads next at or past
/// its target (a partition not assigned yet is not reached).
pub fn targets_reached(targets: &OffsetMap, assigned: &StartMap) -> bool {
    targets.iter().all(|(tp, target)| {
        assigned
            .get(tp)
            .is_some_and(|start| start.offset >= *target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{PartitionStart, TopicPartition};

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn at(pairs: &[(i32, i64)]) -> StartMap {
        pairs
            .iter()
            .map(|(p, offset)| {
                (
                    tp(*p),
                    PartitionStart {
                        offset: *offset,
                        table_version: Some(*offset),
                    },
                )
            })
            .collect()
    }

    fn targets(pairs: &[(i32, i64)]) -> OffsetMap {
        pairs.iter().map(|(p, o)| (tp(*p), *o)).collect()
    }

    #[test]
    fn targets_are_reached_when_every_partition_is_owned_and_at_or_past_its_target() {
        let goal = targets(&[(0, 100), (1, 50)]);
        assert!(targets_reached(&goal, &at(&[(0, 100), (1, 60)])));
        assert!(!targets_reached(&goal, &at(&[(0, 99), (1, 50)])));
        assert!(
            !targets_reached(&goal, &at(&[(0, 100)])),
            "a partition not assigned yet is not reached"
        );
        assert!(
            targets_reached(&goal, &at(&[(0, 100), (1, 50), (2, 0)])),
            "a partition outside the targets does not hold the run"
        );
        assert!(targets_reached(&OffsetMap::new(), &StartMap::new()));
    }

    #[test]
    fn only_an_available_now_run_completes_on_its_targets_before_a_batch() {
        let goal = targets(&[(0, 10)]);
        let done = at(&[(0, 10)]);
        assert!(Schedule::new(TriggerKind::AvailableNow).run_complete(Some(&goal), &done));
        assert!(
            !Schedule::new(TriggerKind::AvailableNow).run_complete(Some(&goal), &at(&[(0, 9)]))
        );
        for kind in [
            TriggerKind::Once,
            TriggerKind::Default,
            TriggerKind::ProcessingTime(Duration::from_secs(1)),
        ] {
            assert!(
                !Schedule::new(kind).run_complete(Some(&goal), &done),
                "{kind:?}"
            );
        }
        assert!(!Schedule::new(TriggerKind::AvailableNow).run_complete(None, &done));
    }

    #[test]
    fn once_takes_everything_up_to_its_targets_in_one_batch() {
        let once = Schedule::new(TriggerKind::Once);
        assert_eq!(
            once.offset_cap(Some(1000)),
            None,
            "maxOffsetsPerTrigger is ignored"
        );
        for kind in [TriggerKind::AvailableNow, TriggerKind::Default] {
            assert_eq!(Schedule::new(kind).offset_cap(Some(1000)), Some(1000));
        }
        let goal = targets(&[(0, 10), (1, 10)]);
        let mut once = Schedule::new(TriggerKind::Once);
        assert_eq!(
            once.after_batch(
                BatchOutcome::Committed { full: true },
                Some(&goal),
                &at(&[(0, 3), (1, 3)])
            ),
            Next::Finish,
            "one committed batch ends it, even one that stopped at its byte budget"
        );
        assert_eq!(
            once.after_batch(BatchOutcome::Idle, Some(&goal), &at(&[(0, 10), (1, 10)])),
            Next::Finish,
            "nothing below the targets: done without a batch"
        );
        assert_eq!(
            once.after_batch(BatchOutcome::Idle, Some(&goal), &at(&[(0, 10)])),
            Next::Idle,
            "a partition not assigned yet is waited for"
        );
        assert_eq!(
            once.after_batch(BatchOutcome::Abandoned, Some(&goal), &at(&[(0, 3)])),
            Next::Continue,
            "an abandoned batch is tried again"
        );
    }

    #[test]
    fn continuous_and_available_now_runs_go_on_after_a_batch() {
        let start = Instant::now();
        let mut schedule = Schedule::new(TriggerKind::Default);
        schedule.batch_started(start);
        assert_eq!(
            schedule.after_batch(
                BatchOutcome::Committed { full: false },
                None,
                &StartMap::new()
            ),
            Next::Continue
        );
        assert!(
            schedule.wait(start) > Duration::ZERO,
            "a trickle keeps the interval"
        );
        schedule.batch_started(start);
        assert_eq!(
            schedule.after_batch(
                BatchOutcome::Committed { full: true },
                None,
                &StartMap::new()
            ),
            Next::Continue
        );
        assert_eq!(
            schedule.wait(start),
            Duration::ZERO,
            "a full batch is followed at once"
        );
        schedule.batch_started(start);
        assert_eq!(
            schedule.after_batch(BatchOutcome::Idle, None, &StartMap::new()),
            Next::Idle
        );
        assert_eq!(
            schedule.wait(start),
            Duration::ZERO,
            "the next arrival is read at once"
        );

        let goal = targets(&[(0, 10)]);
        let mut run = Schedule::new(TriggerKind::AvailableNow);
        assert_eq!(
            run.after_batch(BatchOutcome::Idle, Some(&goal), &at(&[(0, 10)])),
            Next::Idle,
            "availableNow completes on its targets before the next batch, not here"
        );
    }

    #[test]
    fn processing_time_waits_for_the_rest_of_the_interval() {
        let mut schedule = Schedule::new(TriggerKind::ProcessingTime(Duration::from_secs(10)));
        let start = Instant::now();
        schedule.batch_started(start);
        assert_eq!(
            schedule.wait(start + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(
            schedule.wait(start + Duration::from_secs(12)),
            Duration::ZERO
        );
        assert_eq!(
            Schedule::new(TriggerKind::Default).wait(start),
            Duration::ZERO
        );
    }

    #[test]
    fn default_trigger_runs_back_to_back_but_at_most_twice_a_second() {
        let start = Instant::now();
        let mut schedule = Schedule::new(TriggerKind::Default);
        schedule.batch_started(start);
        assert_eq!(
            schedule.wait(start + Duration::from_millis(100)),
            Duration::from_millis(400)
        );
        // A batch that took longer than the interval is followed at once.
        assert_eq!(
            schedule.wait(start + Duration::from_millis(900)),
            Duration::ZERO
        );
        schedule.batch_started(start);
        schedule.backlog_remains();
        assert_eq!(
            schedule.wait(start + Duration::from_millis(100)),
            Duration::ZERO,
            "a backlog is read back to back"
        );
        let mut run = Schedule::new(TriggerKind::AvailableNow);
        run.batch_started(start);
        assert_eq!(run.wait(start), Duration::ZERO);
    }
}
