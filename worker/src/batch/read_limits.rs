//! When the read of one batch stops: the decisions of the read loop, apart from the consumer.

use std::time::{Duration, Instant};

use super::plan::Plan;

/// How long a batch waits for planned offsets that do not arrive before committing what it has.
pub const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A continuous batch ends when the consumer has had nothing for this long...
pub const OPEN_BATCH_QUIET: Duration = Duration::from_millis(20);
/// ...or after reading this long, so a steady stream still commits within about a second.
pub const OPEN_BATCH_MAX_READ: Duration = Duration::from_millis(500);
/// How long the first poll of a burst waits in a batch with planned ends.
const BOUNDED_BATCH_WAIT: Duration = Duration::from_millis(100);
/// Records polled in a row before the batch loop looks at the clock, the stop flag and the
/// assignment (each costs a lock or a system call, too much to pay per record).
pub const POLL_BURST: usize = 512;

/// The bounds of one batch's read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// A continuous batch takes what has arrived; a run to completion reads to planned ends.
    open_ended: bool,
    /// The byte budget ([`crate::tuning::Tuning::max_batch_bytes`]).
    max_bytes: usize,
    /// When an open-ended batch stops reading whatever still arrives.
    read_until: Instant,
}

impl ReadLimits {
    pub fn new(open_ended: bool, max_bytes: usize, now: Instant) -> ReadLimits {
        ReadLimits {
            open_ended,
            max_bytes,
            read_until: now + OPEN_BATCH_MAX_READ,
        }
    }

    pub fn open_ended(&self) -> bool {
        self.open_ended
    }

    /// How long the first poll of a burst waits: an open-ended batch ends when the consumer has
    /// been quiet this long.
    pub fn first_wait(&self) -> Duration {
        if self.open_ended {
            OPEN_BATCH_QUIET
        } else {
            BOUNDED_BATCH_WAIT
        }
    }

    /// The batch holds all it may: its offset cap or its byte budget is reached.
    pub fn full(&self, plan: &Plan) -> bool {
        plan.capped() || plan.bytes >= self.max_bytes
    }

    /// The read stops: every partition reached its planned end, or the batch is full; an
    /// open-ended batch also once the consumer had nothing (`drained`) or its read time is up.
    pub fn done(&self, plan: &Plan, drained: bool, now: Instant) -> bool {
        plan.complete()
            || self.full(plan)
            || (self.open_ended && (drained || now >= self.read_until))
    }

    /// Nothing planned has arrived for [`BATCH_READ_TIMEOUT`]: commit what was read.
    pub fn stalled(&self, last_progress: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_progress) > BATCH_READ_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::batch::plan::PlannedPartition;
    use crate::partition::{PartitionStart, TopicPartition};
    use crate::record::Record;

    fn plan(end: i64, cap: Option<i64>) -> Plan {
        let mut plan = Plan::with_offset_cap(cap);
        plan.push(
            Arc::from("t"),
            PlannedPartition {
                tp: TopicPartition::new("t", 0),
                start: PartitionStart {
                    offset: 0,
                    table_version: None,
                },
                end,
                latest: 0,
                cursor: 0,
            },
        );
        plan
    }

    fn take(plan: &mut Plan, offset: i64) {
        let record = Record {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: None,
            timestamp_type: -1,
            key: None,
            headers: Vec::new(),
            value: Some(vec![b'x'; 1000].into()),
        };
        plan.offer("t", 0, offset, || record);
    }

    #[test]
    fn a_batch_with_planned_ends_reads_until_they_arrive_or_it_is_full() {
        let now = Instant::now();
        let limits = ReadLimits::new(false, usize::MAX, now);
        let mut batch = plan(2, None);
        let late = now + Duration::from_secs(5);
        assert!(
            !limits.done(&batch, true, late),
            "a quiet consumer does not end it"
        );
        take(&mut batch, 0);
        assert!(!limits.done(&batch, false, now));
        take(&mut batch, 1);
        assert!(
            limits.done(&batch, false, now),
            "every planned offset is in"
        );
        assert_eq!(limits.first_wait(), BOUNDED_BATCH_WAIT);

        let mut capped = plan(100, Some(1));
        take(&mut capped, 0);
        assert!(limits.full(&capped) && limits.done(&capped, false, now));

        let small = ReadLimits::new(false, 1500, now);
        let mut by_bytes = plan(100, None);
        take(&mut by_bytes, 0);
        assert!(!small.done(&by_bytes, false, now));
        take(&mut by_bytes, 1);
        assert!(small.full(&by_bytes), "two records pass 1500 bytes");
        assert!(small.done(&by_bytes, false, now));
    }

    #[test]
    fn a_continuous_batch_ends_when_the_consumer_is_quiet_or_its_read_time_is_up() {
        let now = Instant::now();
        let limits = ReadLimits::new(true, usize::MAX, now);
        let batch = plan(i64::MAX, None);
        assert!(!limits.done(&batch, false, now));
        assert!(limits.done(&batch, true, now), "nothing more arrived");
        assert!(!limits.done(&batch, false, now + OPEN_BATCH_MAX_READ / 2));
        assert!(limits.done(&batch, false, now + OPEN_BATCH_MAX_READ));
        assert_eq!(limits.first_wait(), OPEN_BATCH_QUIET);
    }

    #[test]
    fn a_batch_waits_for_missing_offsets_only_so_long() {
        let now = Instant::now();
        let limits = ReadLimits::new(false, usize::MAX, now);
        assert!(!limits.stalled(now, now + BATCH_READ_TIMEOUT));
        assert!(limits.stalled(now, now + BATCH_READ_TIMEOUT + Duration::from_millis(1)));
    }
}
