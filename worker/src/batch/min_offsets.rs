//! Spark's `minOffsetsPerTrigger` with `maxTriggerDelay`: a continuous micro-batch is put off
//! until enough offsets are waiting, or until the delay has passed since the last batch that
//! was allowed to run.

use std::time::{Duration, Instant};

/// Decides whether the next continuous micro-batch waits for more offsets.
#[derive(Debug)]
pub struct MinOffsets {
    min: i64,
    max_delay: Duration,
    /// When a batch was last allowed to run; None before the first, which is never put off
    /// (Spark's last trigger time starts at zero, so its first check finds the delay passed).
    last_trigger: Option<Instant>,
}

impl MinOffsets {
    pub fn new(min: i64, max_delay: Duration) -> MinOffsets {
        MinOffsets {
            min,
            max_delay,
            last_trigger: None,
        }
    }

    /// Whether the batch waits, given the offsets available over all owned partitions. A batch
    /// allowed to run restarts the delay.
    pub fn put_off(&mut self, available: i64, now: Instant) -> bool {
        let delay_passed = self
            .last_trigger
            .is_none_or(|last| now.saturating_duration_since(last) >= self.max_delay);
        if !delay_passed && available < self.min {
            return true;
        }
        self.last_trigger = Some(now);
        false
    }

    pub fn min(&self) -> i64 {
        self.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_for_the_minimum_or_the_delay() {
        let start = Instant::now();
        let mut min = MinOffsets::new(100, Duration::from_secs(10));
        assert!(!min.put_off(1, start), "the first batch is never put off");
        assert!(min.put_off(99, start + Duration::from_secs(1)));
        assert!(!min.put_off(100, start + Duration::from_secs(2)), "enough");
        // The delay restarts at the batch that ran (2 s).
        assert!(min.put_off(5, start + Duration::from_secs(11)));
        assert!(
            !min.put_off(5, start + Duration::from_secs(12)),
            "the delay passed: what is there is read"
        );
        assert!(min.put_off(0, start + Duration::from_secs(13)));
    }
}
