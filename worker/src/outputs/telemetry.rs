//! Where a worker's state goes besides stdout and the checkpoint: Prometheus metrics always,
//! and the StreamingIngestion's status when the operator asked for it (in a pod).

use std::sync::{Arc, Mutex};

use tributary_crds::{AppliedReset, MaintenanceRun, StreamingQueryProgress};

use super::metrics::{BatchMetrics, Metrics};
use super::report::{StatusReporter, WorkerReport};
use crate::partition::TopicPartition;

/// The pipeline's outlets for metrics and status.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub reporter: Option<Arc<StatusReporter>>,
    /// What was last reported, so that a rebalance is reported before the next batch.
    reported: Arc<Mutex<Reported>>,
}

/// The last batch and the assignment a status report was made from.
#[derive(Default)]
struct Reported {
    progress: Option<StreamingQueryProgress>,
    /// The consumer's assignment generation last reported.
    generation: Option<u64>,
    /// What every report carries besides the last batch.
    standing: Standing,
    /// The query id, for a report made before the first batch.
    query_id: Option<String>,
    /// The report made last: what a report of standing facts repeats, and the lag an idle
    /// worker compares its own with.
    last: Option<WorkerReport>,
}

impl Reported {
    /// Reports `report` with the standing facts, and keeps it as the last report.
    fn send(&mut self, reporter: &StatusReporter, report: WorkerReport) {
        let report = with_standing(report, &self.standing);
        reporter.report(report.clone());
        self.last = Some(report);
    }
}

/// Facts a worker keeps reporting once known: the applied reset, the last upkeep runs.
#[derive(Clone, Default)]
struct Standing {
    reset: Option<AppliedReset>,
    last_vacuum: Option<MaintenanceRun>,
    last_compaction: Option<MaintenanceRun>,
}

impl Telemetry {
    pub fn new(metrics: Arc<Metrics>, reporter: Option<Arc<StatusReporter>>) -> Telemetry {
        Telemetry {
            metrics,
            reporter,
            reported: Arc::default(),
        }
    }

    /// The pipeline turned (a batch, or an idle poll): keeps /readyz green.
    pub fn heartbeat(&self) {
        self.metrics.heartbeat();
    }

    /// A batch is in the table: count it, update the lag, report it.
    pub fn batch_committed(
        &self,
        progress: &StreamingQueryProgress,
        batch: &BatchMetrics,
        assigned: &[TopicPartition],
    ) {
        self.metrics.record_batch(batch);
        self.metrics
            .update_offsets_behind(partition_lag(progress), assigned);
        if let Some(reporter) = &self.reporter {
            let mut reported = self.reported_lock();
            reported.send(reporter, report_of(progress, assigned));
            reported.progress = Some(progress.clone());
        }
    }

    /// The pipeline found nothing to read: `lag` is each owned partition's offsets behind the
    /// high watermark of its latest fetch. Reported when it is not what was reported last: a
    /// worker that got partitions back in a rebalance would otherwise keep saying the lag its
    /// last batch saw in them, though another worker has read them to the end since, and the
    /// operator would never scale down.
    pub fn idle(&self, lag: Vec<(TopicPartition, i64)>, assigned: &[TopicPartition]) {
        let total = lag.iter().map(|(_, behind)| behind).sum();
        self.metrics.update_offsets_behind(lag, assigned);
        let Some(reporter) = &self.reporter else {
            return;
        };
        let mut reported = self.reported_lock();
        if let Some(report) = idle_report(&reported, assigned, total) {
            reported.send(reporter, report);
        }
    }

    /// The table records spec.reset as applied (by this worker or an earlier one): said in
    /// the status at once, and with every report after.
    pub fn reset_applied(&self, query_id: &str, reset: AppliedReset) {
        self.update_standing(query_id, |standing| standing.reset = Some(reset));
    }

    /// A VACUUM finished: when, and how many files it deleted.
    pub fn vacuumed(&self, query_id: &str, run: MaintenanceRun) {
        self.update_standing(query_id, |standing| standing.last_vacuum = Some(run));
    }

    /// A compaction committed: when, and how many files it replaced with how many.
    pub fn compacted(&self, query_id: &str, run: MaintenanceRun) {
        self.update_standing(query_id, |standing| standing.last_compaction = Some(run));
    }

    fn update_standing(&self, query_id: &str, change: impl FnOnce(&mut Standing)) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let mut reported = self.reported_lock();
        change(&mut reported.standing);
        reported.query_id = Some(query_id.to_string());
        let report = standing_report(&reported);
        reported.send(reporter, report);
    }

    /// The consumer's assignment may have changed (`generation` counts rebalances): a worker
    /// that lost partitions says so at once, with the lag of the partitions it keeps, rather
    /// than at its next batch, which may never come (an idle worker reads nothing). Without
    /// this the operator would count the lost partitions' lag twice, and autoscale on it.
    pub fn assignment_changed(
        &self,
        generation: u64,
        assigned: impl FnOnce() -> Vec<TopicPartition>,
    ) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let mut reported = self.reported_lock();
        if reported.generation == Some(generation) {
            return;
        }
        let first = reported.generation.is_none();
        reported.generation = Some(generation);
        // The first assignment is reported with the first batch.
        if first {
            return;
        }
        if let Some(progress) = &reported.progress {
            let report = report_of(progress, &assigned());
            reported.send(reporter, report);
        }
    }

    fn reported_lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.reported.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The report of a worker that owns `assigned` and whose last batch is `progress`: its lag
/// counts only the partitions it still owns.
fn report_of(progress: &StreamingQueryProgress, assigned: &[TopicPartition]) -> WorkerReport {
    let lag = partition_lag(progress)
        .into_iter()
        .filter(|(tp, _)| assigned.contains(tp))
        .map(|(_, lag)| lag)
        .sum();
    WorkerReport {
        query_id: Some(progress.id.clone()),
        progress: Some(progress.clone()),
        partitions: assigned.iter().map(ToString::to_string).collect(),
        lag: Some(lag),
        ..WorkerReport::default()
    }
}

/// What an idle worker owes the status, if anything: its last batch with `lag`, the offsets it
/// is behind now, unless that is what it said last. Nothing before its first batch (the first
/// report comes with it).
fn idle_report(reported: &Reported, assigned: &[TopicPartition], lag: i64) -> Option<WorkerReport> {
    let progress = reported.progress.as_ref()?;
    let said = reported.last.as_ref().and_then(|last| last.lag);
    (said != Some(lag)).then(|| WorkerReport {
        lag: Some(lag),
        ..report_of(progress, assigned)
    })
}

/// A report of changed standing facts: the last report again (its lag and partitions are
/// still what is known), or the query id alone before any.
fn standing_report(reported: &Reported) -> WorkerReport {
    reported.last.clone().unwrap_or_else(|| WorkerReport {
        query_id: reported.query_id.clone(),
        ..WorkerReport::default()
    })
}

fn with_standing(report: WorkerReport, standing: &Standing) -> WorkerReport {
    WorkerReport {
        reset: standing.reset.clone(),
        last_vacuum: standing.last_vacuum.clone(),
        last_compaction: standing.last_compaction.clone(),
        ..report
    }
}

/// Offsets behind the latest of each partition a batch read, from its progress record.
fn partition_lag(progress: &StreamingQueryProgress) -> Vec<(TopicPartition, i64)> {
    let mut lag = Vec::new();
    for source in &progress.sources {
        for (topic, partitions) in &source.latest_offset {
            for (partition, latest) in partitions {
                let Ok(number) = partition.parse::<i32>() else {
                    continue;
                };
                let end = source
                    .end_offset
                    .get(topic)
                    .and_then(|p| p.get(partition))
                    .copied()
                    .unwrap_or(*latest);
                lag.push((
                    TopicPartition::new(topic.clone(), number),
                    (latest - end).max(0),
                ));
            }
        }
    }
    lag
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_crds::SourceProgress;

    /// Offsets of topic `t`, by partition.
    fn offsets(pairs: &[(&str, i64)]) -> BTreeMap<String, BTreeMap<String, i64>> {
        BTreeMap::from([(
            "t".to_string(),
            pairs
                .iter()
                .map(|(p, o)| (p.to_string(), *o))
                .collect::<BTreeMap<_, _>>(),
        )])
    }

    #[test]
    fn a_worker_reports_the_lag_of_the_partitions_it_still_owns() {
        let progress = StreamingQueryProgress {
            id: "q".into(),
            sources: vec![SourceProgress {
                end_offset: offsets(&[("0", 90), ("1", 50), ("2", 10)]),
                latest_offset: offsets(&[("0", 100), ("1", 80), ("2", 10)]),
                ..SourceProgress::default()
            }],
            ..StreamingQueryProgress::default()
        };
        let all: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        let before = report_of(&progress, &all);
        assert_eq!(before.lag, Some(40));
        assert_eq!(before.partitions, ["t-0", "t-1", "t-2"]);
        // After a rebalance took t-1 away, its 30 offsets are another worker's.
        let after = report_of(&progress, &[all[0].clone(), all[2].clone()]);
        assert_eq!(after.lag, Some(10));
        assert_eq!(after.partitions, ["t-0", "t-2"]);
        // With nothing left, nothing behind.
        assert_eq!(report_of(&progress, &[]).lag, Some(0));
    }

    #[test]
    fn an_idle_worker_reports_its_lag_now_once_it_differs_from_what_it_said_last() {
        let progress = StreamingQueryProgress {
            id: "q".into(),
            sources: vec![SourceProgress {
                end_offset: offsets(&[("0", 90), ("1", 50)]),
                latest_offset: offsets(&[("0", 100), ("1", 80)]),
                ..SourceProgress::default()
            }],
            ..StreamingQueryProgress::default()
        };
        let all: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new("t", p)).collect();
        let mut reported = Reported {
            query_id: Some("q".into()),
            ..Reported::default()
        };
        // Before the first batch there is nothing to say, and standing facts go with the query
        // id alone.
        assert!(idle_report(&reported, &all, 0).is_none());
        let alone = standing_report(&reported);
        assert_eq!((alone.query_id.as_deref(), alone.lag), (Some("q"), None));
        reported.last = Some(report_of(&progress, &all));
        reported.progress = Some(progress);
        // Another worker read the partitions to the end meanwhile: 0 behind, said once.
        let report = idle_report(&reported, &all, 0).expect("a report");
        assert_eq!(report.lag, Some(0));
        assert_eq!(report.partitions, ["t-0", "t-1"]);
        assert_eq!(report.query_id.as_deref(), Some("q"));
        reported.last = Some(report);
        assert!(idle_report(&reported, &all, 0).is_none());
        assert_eq!(idle_report(&reported, &all, 7).and_then(|r| r.lag), Some(7));
        // A compaction's report repeats the lag said last, not the last batch's.
        assert_eq!(standing_report(&reported).lag, Some(0));
    }

    #[test]
    fn lag_per_partition_comes_from_end_and_latest_offsets() {
        let progress = StreamingQueryProgress {
            sources: vec![SourceProgress {
                end_offset: offsets(&[("0", 90), ("1", 50)]),
                latest_offset: offsets(&[("0", 100), ("1", 50)]),
                ..SourceProgress::default()
            }],
            ..StreamingQueryProgress::default()
        };
        assert_eq!(
            partition_lag(&progress),
            vec![
                (TopicPartition::new("t", 0), 10),
                (TopicPartition::new("t", 1), 0)
            ]
        );
    }
}
