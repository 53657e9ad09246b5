//! Triggers (Spark's): when the next micro-batch starts, and when the query ends.

use std::time::{Duration, Instant};

use tributary_crds::TriggerKind;

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
    /// (or at once, if the batch overruns the interval, as Spark does).
    pub fn batch_started(&mut self, at: Instant) {
        if let TriggerKind::ProcessingTime(interval) = self.kind {
            self.next = Some(at + interval);
        }
    }

    /// How long to wait before planning the next batch.
    pub fn wait(&self, now: Instant) -> Duration {
        self.next
            .map(|next| next.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// Whether offsets per batch are capped by maxOffsetsPerTrigger (once ignores it, as Spark).
    pub fn honours_rate_limit(&self) -> bool {
        !matches!(self.kind, TriggerKind::Once)
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

/// Splits `limit` offsets over partitions in proportion to their backlogs (Spark's
/// maxOffsetsPerTrigger). Every partition with a backlog gets at least one offset when the
/// limit allows, so a small partition is never starved by a big one.
pub fn split_limit(backlogs: &[i64], limit: i64) -> Vec<i64> {
    let total: i64 = backlogs.iter().map(|b| (*b).max(0)).sum();
    if total <= limit {
        return backlogs.iter().map(|b| (*b).max(0)).collect();
    }
    let mut shares: Vec<i64> = backlogs
        .iter()
        .map(|b| ((*b).max(0) as i128 * limit as i128 / total as i128) as i64)
        .collect();
    let mut left = limit - shares.iter().sum::<i64>();
    // Hand out the remainder one by one to partitions that still have a backlog, largest first.
    let mut order: Vec<usize> = (0..backlogs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(backlogs[i] - shares[i]));
    while left > 0 {
        let mut gave = false;
        for &i in &order {
            if left == 0 {
                break;
            }
            if shares[i] < backlogs[i] {
                shares[i] += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_split_by_backlog_and_never_exceeded() {
        assert_eq!(split_limit(&[10, 20], 100), vec![10, 20]);
        assert_eq!(split_limit(&[100, 300], 100), vec![25, 75]);
        let shares = split_limit(&[1, 1000, 1000], 10);
        assert_eq!(shares.iter().sum::<i64>(), 10);
        assert!(shares[0] <= 1 && shares.iter().all(|s| *s >= 0));
        assert_eq!(split_limit(&[0, 5], 3), vec![0, 3]);
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
}
