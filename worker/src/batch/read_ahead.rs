//! Records read ahead of the batch that needs them, kept for later batches, and the topic
//! names they share. Both sit on the per-record path and count the bytes they hold: the
//! read-ahead pauses partitions at its bound, which keeps the worker's memory flat.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use super::plan::{PlannedPartition, record_bytes};
use crate::partition::TopicPartition;
use crate::record::Record;

/// What a record pushed into the read-ahead asks of the consumer.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAheadState {
    Room,
    /// The partition's queue or the whole read-ahead is full: pause the partition.
    Full,
}

/// Records read ahead of the batch that needs them, per partition, in offset order.
#[derive(Debug)]
pub struct ReadAhead {
    queues: BTreeMap<TopicPartition, VecDeque<Record>>,
    bytes: usize,
    max_records_per_partition: usize,
    max_bytes: usize,
}

impl ReadAhead {
    pub fn new(max_records_per_partition: usize, max_bytes: usize) -> ReadAhead {
        ReadAhead {
            queues: BTreeMap::new(),
            bytes: 0,
            max_records_per_partition,
            max_bytes,
        }
    }

    /// Keeps a record for a later batch (one older than the queue's tail is a replay after a
    /// seek, already queued or committed, and is dropped).
    pub fn push(&mut self, tp: TopicPartition, record: Record) -> ReadAheadState {
        let queue = self.queues.entry(tp).or_default();
        if queue.back().is_none_or(|last| record.offset > last.offset) {
            self.bytes += record_bytes(&record);
            queue.push_back(record);
        }
        if queue.len() >= self.max_records_per_partition || self.bytes >= self.max_bytes {
            ReadAheadState::Full
        } else {
            ReadAheadState::Room
        }
    }

    /// The offset after the last record kept for a partition.
    pub fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.queues.get(tp)?.back().map(|r| r.offset + 1)
    }

    /// Moves a partition's records in [cursor, end) into its planned part, dropping older ones,
    /// advancing its cursor by at most `allowance` offsets. Returns the bytes and offsets moved.
    pub fn drain_into(&mut self, planned: &mut PlannedPartition, allowance: i64) -> (usize, i64) {
        let Some(queue) = self.queues.get_mut(&planned.tp) else {
            return (0, 0);
        };
        let (mut moved, mut advanced) = (0, 0);
        while let Some(front) = queue.front() {
            if front.offset >= planned.end
                || (front.offset >= planned.cursor
                    && advanced + front.offset + 1 - planned.cursor > allowance)
            {
                break;
            }
            let Some(record) = queue.pop_front() else {
                break;
            };
            let size = record_bytes(&record);
            self.bytes = self.bytes.saturating_sub(size);
            if record.offset >= planned.cursor {
                advanced += record.offset + 1 - planned.cursor;
                planned.cursor = record.offset + 1;
                planned.records.push(record);
                moved += size;
            }
        }
        (moved, advanced)
    }

    /// Forgets a partition's records (revoked, or re-read from the table).
    pub fn forget(&mut self, tp: &TopicPartition) {
        if let Some(queue) = self.queues.remove(tp) {
            let size: usize = queue.iter().map(record_bytes).sum();
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

/// Interned topic names: every record of a topic shares one allocation.
#[derive(Debug, Default)]
pub struct TopicNames(HashSet<Arc<str>>);

impl TopicNames {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let interned: Arc<str> = Arc::from(name);
        self.0.insert(interned.clone());
        interned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::plan::tests::{planned, record};

    #[test]
    fn read_ahead_fills_by_records_or_bytes_and_drains_in_order() {
        let one = record_bytes(&record("t", 0, 0));
        let mut ahead = ReadAhead::new(3, 10 * one);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(
            ahead.push(tp.clone(), record("t", 0, 5)),
            ReadAheadState::Room
        );
        assert_eq!(
            ahead.push(tp.clone(), record("t", 0, 4)),
            ReadAheadState::Room
        );
        assert_eq!(
            ahead.push(tp.clone(), record("t", 0, 6)),
            ReadAheadState::Room
        );
        assert_eq!(
            ahead.push(tp.clone(), record("t", 0, 7)),
            ReadAheadState::Full
        );
        assert_eq!(ahead.next_offset(&tp), Some(8));

        let mut part = planned("t", 0, 6, 8);
        assert_eq!(ahead.drain_into(&mut part, i64::MAX), (2 * one, 2));
        assert_eq!(
            part.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [6, 7]
        );
        assert_eq!(part.cursor, 8);
        assert_eq!(ahead.bytes, 0);

        let mut by_bytes = ReadAhead::new(1000, 2 * one);
        assert_eq!(
            by_bytes.push(tp.clone(), record("t", 0, 0)),
            ReadAheadState::Room
        );
        let other = TopicPartition::new("u", 1);
        assert_eq!(
            by_bytes.push(other.clone(), record("u", 1, 0)),
            ReadAheadState::Full
        );
        by_bytes.forget(&other);
        assert_eq!(by_bytes.bytes, one);
    }

    #[test]
    fn topic_names_are_shared() {
        let mut names = TopicNames::default();
        let a = names.get("sensors");
        let b = names.get("sensors");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
