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

    /// Moves a partition's records in [cursor, end) into the batch's `records`, dropping older
    /// ones, taking at most `allowance` records and moving the partition's cursor past them.
    /// Returns the bytes and records moved.
    ///
    /// The cursor then also passes the offsets before the first record left behind (or up to
    /// the planned end): records reach the read-ahead in offset order, only once the batch
    /// reading them refused them, so the offsets between the last record a batch took and the
    /// first one kept here hold no record (transaction markers, aborted transactions,
    /// compaction) and are read.
    pub fn drain_into(
        &mut self,
        planned: &mut PlannedPartition,
        records: &mut Vec<Record>,
        allowance: i64,
    ) -> (usize, i64) {
        let Some(queue) = self.queues.get_mut(&planned.tp) else {
            return (0, 0);
        };
        let (mut moved, mut taken) = (0, 0);
        while let Some(front) = queue.front() {
            if front.offset >= planned.end || (front.offset >= planned.cursor && taken >= allowance)
            {
                break;
            }
            let Some(record) = queue.pop_front() else {
                break;
            };
            let size = record_bytes(&record);
            self.bytes = self.bytes.saturating_sub(size);
            if record.offset >= planned.cursor {
                taken += 1;
                planned.cursor = record.offset + 1;
                records.push(record);
                moved += size;
            }
        }
        if let Some(front) = queue.front() {
            planned.cursor = planned.cursor.max(front.offset.min(planned.end));
        }
        (moved, taken)
    }

    /// Passes the gap before a partition's first record kept here (see [`Self::drain_into`]):
    /// true when the cursor moved.
    pub fn pass_gap(&self, planned: &mut PlannedPartition) -> bool {
        let Some(front) = self.queues.get(&planned.tp).and_then(VecDeque::front) else {
            return false;
        };
        let to = front.offset.min(planned.end);
        if to > planned.cursor {
            planned.cursor = to;
            return true;
        }
        false
    }

    /// The offset after the last record kept for a partition.
    pub fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.queues.get(tp)?.back().map(|r| r.offset + 1)
    }

    /// Whether records of a partition are kept here.
    pub fn holds(&self, tp: &TopicPartition) -> bool {
        self.queues.get(tp).is_some_and(|q| !q.is_empty())
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
pub struct TopicNames {
    known: HashSet<Arc<str>>,
    /// The name asked for last: records come in runs of one topic, and comparing a short name
    /// costs less than hashing it for every record.
    last: Option<Arc<str>>,
}

impl TopicNames {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(last) = &self.last
            && **last == *name
        {
            return last.clone();
        }
        let interned = match self.known.get(name) {
            Some(known) => known.clone(),
            None => {
                let interned: Arc<str> = Arc::from(name);
                self.known.insert(interned.clone());
                interned
            }
        };
        self.last = Some(interned.clone());
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
        assert!(ahead.holds(&tp));

        let mut part = planned("t", 0, 6, 8);
        let mut records = Vec::new();
        assert_eq!(
            ahead.drain_into(&mut part, &mut records, i64::MAX),
            (2 * one, 2)
        );
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [6, 7]);
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
    fn the_offsets_before_the_first_record_kept_hold_no_record_and_are_passed() {
        // Offsets 3..=5 are a transaction marker and aborted records: the consumer delivered
        // 2 and then 6.
        let tp = TopicPartition::new("t", 0);
        let mut ahead = ReadAhead::new(100, usize::MAX);
        ahead.push(tp.clone(), record("t", 0, 6));
        ahead.push(tp.clone(), record("t", 0, 7));

        // A gap wider than the cap costs nothing: the batch takes its records.
        let mut part = planned("t", 0, 3, 100);
        let mut records = Vec::new();
        assert_eq!(ahead.drain_into(&mut part, &mut records, 1).1, 1);
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), [6]);
        assert_eq!(part.cursor, 7, "7 is a record, left for the next batch");

        // A batch that ends inside a gap reads up to its planned end, never past it.
        let mut ahead = ReadAhead::new(100, usize::MAX);
        ahead.push(tp.clone(), record("t", 0, 9));
        let mut part = planned("t", 0, 3, 8);
        assert_eq!(
            ahead.drain_into(&mut part, &mut Vec::new(), i64::MAX),
            (0, 0)
        );
        assert_eq!(part.cursor, 8);

        // pass_gap: only forward, up to the first record kept or the end.
        let mut part = planned("t", 0, 3, 100);
        assert!(ahead.pass_gap(&mut part));
        assert_eq!(part.cursor, 9);
        assert!(!ahead.pass_gap(&mut part));
        let empty = ReadAhead::new(100, usize::MAX);
        let mut part = planned("t", 0, 3, 100);
        assert!(!empty.pass_gap(&mut part) && part.cursor == 3);
    }

    #[test]
    fn topic_names_are_shared() {
        let mut names = TopicNames::default();
        let a = names.get("sensors");
        let b = names.get("sensors");
        assert!(Arc::ptr_eq(&a, &b));
        // Another topic between two records of the first still finds the first's name.
        let other = names.get("alerts");
        assert_eq!(&*other, "alerts");
        assert!(Arc::ptr_eq(&names.get("sensors"), &a));
        assert!(Arc::ptr_eq(&names.get("alerts"), &other));
    }
}
