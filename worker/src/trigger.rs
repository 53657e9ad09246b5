//! Triggers (Spark's): when the next micro-batch starts, and when the query ends.

use std::time::{Duration, Instant};

use tributary_crds::TriggerKind;

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

#[cfg(test)]
mod tests {
    use super::*;

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
