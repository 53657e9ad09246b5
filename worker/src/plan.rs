//! A micro-batch being read: partition -> [start, end) planned -> records read so far, and the
//! read-ahead kept for later batches.
//!
//! Both are on the per-record path, so lookups go by the message's borrowed topic name and
//! partition (no allocation per record), and both count the bytes they hold: a batch stops
//! reading at its byte budget and the read-ahead pauses partitions at its own, which is what
//! keeps the worker's memory flat however large the backlog.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::source::{PartitionStart, Record, Tp};

/// Bytes a record holds in memory: its payload and key plus the struct and its bookkeeping.
pub fn record_bytes(record: &Record) -> usize {
    const OVERHEAD: usize = std::mem::size_of::<Record>() + 16;
    OVERHEAD
        + record.value.as_ref().map_or(0, Vec::len)
        + record.key.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// One partition's part of a batch.
#[derive(Debug)]
pub struct PlannedPartition {
    pub tp: Tp,
    pub start: PartitionStart,
    /// The first offset not in this batch.
    pub end: i64,
    /// The partition's latest offset as known when planning (for offsets-behind-latest).
    pub latest: i64,
    /// The next offset to read, as records arrive.
    pub cursor: i64,
    pub records: Vec<Record>,
}

/// Where a polled record belongs.
pub enum Placement {
    /// Below the cursor: already in this batch (a replay after a seek).
    Duplicate,
    /// Taken into the batch.
    Taken,
    /// Not for this batch (another partition, or at or past the planned end).
    Elsewhere(Record),
}

/// The partitions of one batch, in partition order.
#[derive(Debug, Default)]
pub struct Plan {
    partitions: Vec<PlannedPartition>,
    index: HashMap<Arc<str>, HashMap<i32, usize>>,
    /// Bytes of the records read so far.
    pub bytes: usize,
    /// Offsets read so far, over all partitions.
    pub offsets: i64,
    /// At most this many offsets (maxOffsetsPerTrigger), taken in the order records arrive.
    offset_cap: Option<i64>,
}

impl Plan {
    pub fn with_offset_cap(offset_cap: Option<i64>) -> Plan {
        Plan {
            offset_cap,
            ..Plan::default()
        }
    }

    /// The offset cap is reached: the batch is full.
    pub fn capped(&self) -> bool {
        self.offset_cap.is_some_and(|cap| self.offsets >= cap)
    }

    /// Offsets the cap still allows (unbounded without one).
    pub fn allowance(&self) -> i64 {
        self.offset_cap
            .map_or(i64::MAX, |cap| cap.saturating_sub(self.offsets))
    }

    pub fn push(&mut self, topic: Arc<str>, planned: PlannedPartition) {
        self.index
            .entry(topic)
            .or_default()
            .insert(planned.tp.1, self.partitions.len());
        self.partitions.push(planned);
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn partitions(&self) -> &[PlannedPartition] {
        &self.partitions
    }

    pub fn partitions_mut(&mut self) -> &mut [PlannedPartition] {
        &mut self.partitions
    }

    pub fn get(&self, tp: &Tp) -> Option<&PlannedPartition> {
        let slot = self.index.get(tp.0.as_str())?.get(&tp.1)?;
        self.partitions.get(*slot)
    }

    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PlannedPartition> {
        let slot = *self.index.get(topic)?.get(&partition)?;
        self.partitions.get_mut(slot)
    }

    /// Every partition has read up to its planned end.
    pub fn complete(&self) -> bool {
        self.partitions.iter().all(|p| p.cursor >= p.end)
    }

    /// Offers a polled record to the batch; `make` builds the owned record only when kept.
    pub fn offer(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        make: impl FnOnce() -> Record,
    ) -> Placement {
        let slot = self
            .index
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .copied();
        let Some(planned) = slot.and_then(|slot| self.partitions.get_mut(slot)) else {
            return Placement::Elsewhere(make());
        };
        if offset < planned.cursor {
            return Placement::Duplicate;
        }
        let record = make();
        let advance = offset + 1 - planned.cursor;
        let allowed = self
            .offset_cap
            .is_none_or(|cap| self.offsets + advance <= cap);
        if offset >= planned.end || !allowed {
            return Placement::Elsewhere(record);
        }
        self.bytes += record_bytes(&record);
        self.offsets += advance;
        planned.cursor = offset + 1;
        planned.records.push(record);
        Placement::Taken
    }

    /// Keeps only partitions that read something; the rest are not part of the commit.
    pub fn retain_read(&mut self) {
        self.retain(|p| p.cursor > p.start.offset);
    }

    fn retain(&mut self, keep: impl Fn(&PlannedPartition) -> bool) {
        self.partitions.retain(keep);
        self.index.clear();
        for (slot, planned) in self.partitions.iter().enumerate() {
            self.index
                .entry(Arc::from(planned.tp.0.as_str()))
                .or_default()
                .insert(planned.tp.1, slot);
        }
    }

    /// Moves every record out, partition after partition.
    pub fn take_records(&mut self) -> Vec<Record> {
        let total = self.partitions.iter().map(|p| p.records.len()).sum();
        let mut records = Vec::with_capacity(total);
        for planned in &mut self.partitions {
            records.append(&mut planned.records);
        }
        records
    }
}

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
    queues: BTreeMap<Tp, VecDeque<Record>>,
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
    pub fn push(&mut self, tp: Tp, record: Record) -> ReadAheadState {
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
    pub fn next_offset(&self, tp: &Tp) -> Option<i64> {
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
    pub fn forget(&mut self, tp: &Tp) {
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

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record {
            topic: Arc::from(topic),
            partition,
            offset,
            timestamp_ms: None,
            timestamp_type: -1,
            key: None,
            headers: Vec::new(),
            value: Some(vec![b'x'; 100]),
        }
    }

    fn planned(topic: &str, partition: i32, start: i64, end: i64) -> PlannedPartition {
        PlannedPartition {
            tp: (topic.to_string(), partition),
            start: PartitionStart {
                offset: start,
                table_version: None,
            },
            end,
            latest: end,
            cursor: start,
            records: Vec::new(),
        }
    }

    #[test]
    fn a_plan_takes_records_in_its_range_once() {
        let mut plan = Plan::default();
        plan.push(Arc::from("t"), planned("t", 0, 10, 12));
        assert!(matches!(
            plan.offer("t", 0, 10, || record("t", 0, 10)),
            Placement::Taken
        ));
        assert!(matches!(
            plan.offer("t", 0, 10, || record("t", 0, 10)),
            Placement::Duplicate
        ));
        assert!(!plan.complete());
        assert!(matches!(
            plan.offer("t", 0, 11, || record("t", 0, 11)),
            Placement::Taken
        ));
        assert!(plan.complete());
        assert!(matches!(
            plan.offer("t", 0, 12, || record("t", 0, 12)),
            Placement::Elsewhere(r) if r.offset == 12
        ));
        assert!(matches!(
            plan.offer("t", 1, 0, || record("t", 1, 0)),
            Placement::Elsewhere(_)
        ));
        assert_eq!(plan.bytes, 2 * record_bytes(&record("t", 0, 0)));
        let records = plan.take_records();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [10, 11]
        );
    }

    #[test]
    fn the_offset_cap_takes_records_in_arrival_order_and_never_more() {
        let mut plan = Plan::with_offset_cap(Some(3));
        plan.push(Arc::from("t"), planned("t", 0, 0, 100));
        plan.push(Arc::from("t"), planned("t", 1, 0, 100));
        for (partition, offset) in [(0, 0), (1, 0), (0, 1)] {
            assert!(matches!(
                plan.offer("t", partition, offset, || record("t", partition, offset)),
                Placement::Taken
            ));
        }
        assert!(plan.capped());
        assert_eq!(plan.allowance(), 0);
        assert!(matches!(
            plan.offer("t", 1, 1, || record("t", 1, 1)),
            Placement::Elsewhere(_)
        ));
        assert_eq!(plan.offsets, 3);

        // Draining read-ahead honours the allowance too.
        let mut ahead = ReadAhead::new(100, usize::MAX);
        let tp = ("t".to_string(), 2);
        for offset in 0..5 {
            ahead.push(tp.clone(), record("t", 2, offset));
        }
        let mut part = planned("t", 2, 0, 100);
        assert_eq!(ahead.drain_into(&mut part, 2).1, 2);
        assert_eq!(part.cursor, 2);
        assert_eq!(ahead.next_offset(&tp), Some(5));
    }

    #[test]
    fn retain_read_drops_partitions_without_records_and_keeps_lookups_right() {
        let mut plan = Plan::default();
        plan.push(Arc::from("a"), planned("a", 0, 0, 5));
        plan.push(Arc::from("b"), planned("b", 3, 7, 9));
        assert!(matches!(
            plan.offer("b", 3, 7, || record("b", 3, 7)),
            Placement::Taken
        ));
        plan.retain_read();
        assert_eq!(plan.partitions().len(), 1);
        assert!(plan.get(&("a".to_string(), 0)).is_none());
        assert!(matches!(
            plan.offer("b", 3, 8, || record("b", 3, 8)),
            Placement::Taken
        ));
        assert_eq!(plan.get(&("b".to_string(), 3)).map(|p| p.cursor), Some(9));
    }

    #[test]
    fn read_ahead_fills_by_records_or_bytes_and_drains_in_order() {
        let one = record_bytes(&record("t", 0, 0));
        let mut ahead = ReadAhead::new(3, 10 * one);
        let tp = ("t".to_string(), 0);
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
        let other = ("u".to_string(), 1);
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
