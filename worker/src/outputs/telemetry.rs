//! Where a worker's state goes besides stdout and the checkpoint: Prometheus metrics always,
//! and the StreamingIngestion's status when the operator asked for it (in a pod).

use std::sync::Arc;

use tributary_crds::StreamingQueryProgress;

use super::metrics::{BatchMetrics, Metrics};
use super::report::{StatusReporter, WorkerReport};
use crate::partition::TopicPartition;

/// The pipeline's outlets for metrics and status.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub reporter: Option<Arc<StatusReporter>>,
}

impl Telemetry {
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
            reporter.report(WorkerReport {
                query_id: Some(progress.id.clone()),
                progress: Some(progress.clone()),
                partitions: assigned.iter().map(ToString::to_string).collect(),
                error: None,
                error_reason: None,
            });
        }
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

    #[test]
    fn lag_per_partition_comes_from_end_and_latest_offsets() {
        let offsets = |pairs: &[(&str, i64)]| {
            BTreeMap::from([(
                "t".to_string(),
                pairs
                    .iter()
                    .map(|(p, o)| (p.to_string(), *o))
                    .collect::<BTreeMap<_, _>>(),
            )])
        };
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
