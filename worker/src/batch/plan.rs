//! A micro-batch being read: partition -> [start, end) planned and read so far, and the records
//! read, in the order they arrived.
//!
//! On the per-record path, so lookups go by the message's borrowed topic name and partition
//! (no allocation per record), and it counts the bytes it holds: a batch stops reading at its
//! byte budget, which with the read-ahead's bound keeps the worker's memory flat however large
//! the backlog.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::partition::{OffsetMap, PartitionStart, StartMap, TopicPartition};
use crate::record::Record;

/// Bytes a record holds in memory: its payload and key plus the struct and its bookkeeping.
pub fn record_bytes(record: &Record) -> usize {
    const OVERHEAD: usize = std::mem::size_of::<Record>() + 16;
    OVERHEAD
        + record.value.as_ref().map_or(0, Bytes::len)
        + record.key.as_ref().map_or(0, Bytes::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// One partition's part of a batch.
#[derive(Debug)]
pub struct PlannedPartition {
    pub tp: TopicPartition,
    pub start: PartitionStart,
    /// The first offset not in this batch.
    pub end: i64,
    /// The partition's latest offset as known when planning (for offsets-behind-latest).
    pub latest: i64,
    /// The next offset to read, as records arrive.
    pub cursor: i64,
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
    /// Every partition's records, in the order they arrived (in offset order within each).
    records: Vec<Record>,
    index: HashMap<Arc<str>, HashMap<i32, usize>>,
    /// The partition looked up last and its slot: records come in runs of one partition, and
    /// comparing costs less than hashing topic and partition for every record.
    recent: Option<(Arc<str>, i32, usize)>,
    /// Bytes of the records read so far.
    pub bytes: usize,
    /// Records taken so far, over all partitions: what the cap counts.
    pub offsets: i64,
    /// At most this many records (maxOffsetsPerTrigger), taken in the order they arrive.
    /// Offsets that hold no record (transaction markers, aborted records, records removed by
    /// compaction) cost nothing: a gap wider than the cap would otherwise never fit in a batch.
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

    /// Records the cap still allows (unbounded without one).
    pub fn allowance(&self) -> i64 {
        self.offset_cap
            .map_or(i64::MAX, |cap| cap.saturating_sub(self.offsets))
    }

    pub fn push(&mut self, topic: Arc<str>, planned: PlannedPartition) {
        self.recent = None;
        self.index
            .entry(topic)
            .or_default()
            .insert(planned.tp.partition, self.partitions.len());
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

    #[cfg(test)]
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
        let slot = self.slot(topic, partition);
        let capped = self.capped();
        let Some(planned) = slot.and_then(|slot| self.partitions.get_mut(slot)) else {
            return Placement::Elsewhere(make());
        };
        if offset < planned.cursor {
            return Placement::Duplicate;
        }
        let record = make();
        if offset >= planned.end || capped {
            return Placement::Elsewhere(record);
        }
        self.bytes += record_bytes(&record);
        self.offsets += 1;
        planned.cursor = offset + 1;
        self.records.push(record);
        Placement::Taken
    }

    /// Where a partition's plan is in `partitions`.
    fn slot(&mut self, topic: &str, partition: i32) -> Option<usize> {
        if let Some((recent_topic, recent_partition, slot)) = &self.recent
            && *recent_partition == partition
            && **recent_topic == *topic
        {
            return Some(*slot);
        }
        let (known_topic, partitions) = self.index.get_key_value(topic)?;
        let slot = *partitions.get(&partition)?;
        self.recent = Some((known_topic.clone(), partition, slot));
        Some(slot)
    }

    /// Keeps only partitions that read something; the rest are not part of the commit.
    pub fn retain_read(&mut self) {
        self.retain(|p| p.cursor > p.start.offset);
    }

    fn retain(&mut self, keep: impl Fn(&PlannedPartition) -> bool) {
        self.partitions.retain(keep);
        self.recent = None;
        self.index.clear();
        for (slot, planned) in self.partitions.iter().enumerate() {
            self.index
                .entry(Arc::from(planned.tp.topic.as_str()))
                .or_default()
                .insert(planned.tp.partition, slot);
        }
    }

    /// The partitions, and the records read, for moving records in from the read-ahead.
    pub fn partitions_and_records_mut(&mut self) -> (&mut [PlannedPartition], &mut Vec<Record>) {
        (&mut self.partitions, &mut self.records)
    }

    /// Reads into `records` (emptied first): the last batch's vector, so that this batch's
    /// records go into memory already in use instead of a vector that grows by doubling,
    /// copying them into fresh pages each time.
    pub fn reuse_records(&mut self, mut records: Vec<Record>) {
        records.clear();
        records.append(&mut self.records);
        self.records = records;
    }

    /// Moves every record out, in the order they arrived.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }
}

/// Plans a batch: for each owned partition (`assigned`, where each reads next), the offsets it
/// may cover. A run to completion reads up to its `targets`, and a partition that appeared
/// after the run was planned waits for the next run; a continuous query (no targets) takes
/// whatever arrives, the read loop bounding it. `cap` is maxOffsetsPerTrigger where the
/// trigger honours it, on the batch's offsets in total, taken in the order records arrive:
/// librdkafka fetches every partition in turn, so each gets its share, and no record waits
/// behind a fixed per-partition end (Spark instead splits the cap by backlog up front).
/// `latest` gives a partition's latest offset as last seen (for the lag; the start when
/// unknown), `topic` the shared name of a topic.
pub fn plan_batch(
    assigned: &StartMap,
    targets: Option<&OffsetMap>,
    cap: Option<i64>,
    mut latest: impl FnMut(&TopicPartition) -> Option<i64>,
    mut topic: impl FnMut(&str) -> Arc<str>,
) -> Plan {
    let mut plan = Plan::with_offset_cap(cap);
    for (tp, start) in assigned {
        let end = match targets {
            Some(targets) => match targets.get(tp) {
                Some(target) => *target,
                None => continue,
            },
            None => i64::MAX,
        };
        if end <= start.offset {
            continue;
        }
        plan.push(
            topic(&tp.topic),
            PlannedPartition {
                tp: tp.clone(),
                start: *start,
                end,
                latest: latest(tp).unwrap_or(start.offset),
                cursor: start.offset,
            },
        );
    }
    plan
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::read_ahead::ReadAhead;

    pub(crate) fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record {
            topic: Arc::from(topic),
            partition,
            offset,
            timestamp_ms: None,
            timestamp_type: -1,
            key: None,
            headers: Vec::new(),
            value: Some(vec![b'x'; 100].into()),
        }
    }

    pub(crate) fn planned(topic: &str, partition: i32, start: i64, end: i64) -> PlannedPartition {
        PlannedPartition {
            tp: TopicPartition::new(topic, partition),
            start: PartitionStart {
                offset: start,
                table_version: None,
            },
            end,
            latest: end,
            cursor: start,
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
        let tp = TopicPartition::new("t", 2);
        for offset in 0..5 {
            ahead.push(tp.clone(), record("t", 2, offset));
        }
        let mut part = planned("t", 2, 0, 100);
        assert_eq!(ahead.drain_into(&mut part, &mut Vec::new(), 2).1, 2);
        assert_eq!(part.cursor, 2);
        assert!(ahead.holds(&tp));

        // The cap counts records: offsets that hold none (markers, aborted or compacted
        // records) do not use it up.
        let mut sparse = Plan::with_offset_cap(Some(2));
        sparse.push(Arc::from("t"), planned("t", 0, 0, 1000));
        for offset in [10, 500] {
            assert!(matches!(
                sparse.offer("t", 0, offset, || record("t", 0, offset)),
                Placement::Taken
            ));
        }
        assert!(sparse.capped());
        assert_eq!(sparse.get_mut("t", 0).map(|p| p.cursor), Some(501));
    }

    #[test]
    fn records_of_partitions_in_turn_each_reach_their_own_partition() {
        let mut plan = Plan::default();
        plan.push(Arc::from("a"), planned("a", 0, 0, 5));
        plan.push(Arc::from("b"), planned("b", 0, 0, 5));
        plan.push(Arc::from("a"), planned("a", 1, 0, 5));
        for (topic, partition, offset) in [("a", 0, 0), ("b", 0, 0), ("b", 0, 1), ("a", 1, 0)] {
            assert!(matches!(
                plan.offer(topic, partition, offset, || record(
                    topic, partition, offset
                )),
                Placement::Taken
            ));
        }
        // Below its cursor in "b"/0, but not in "a"/0: the last lookup was "a"/1.
        assert!(matches!(
            plan.offer("b", 0, 1, || record("b", 0, 1)),
            Placement::Duplicate
        ));
        assert!(matches!(
            plan.offer("a", 0, 1, || record("a", 0, 1)),
            Placement::Taken
        ));
        let cursors: Vec<i64> = plan.partitions().iter().map(|p| p.cursor).collect();
        assert_eq!(cursors, [2, 2, 1]);
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
        assert!(plan.get_mut("a", 0).is_none());
        assert!(matches!(
            plan.offer("b", 3, 8, || record("b", 3, 8)),
            Placement::Taken
        ));
        assert_eq!(plan.get_mut("b", 3).map(|p| p.cursor), Some(9));
    }

    fn starts(pairs: &[(i32, i64)]) -> StartMap {
        pairs
            .iter()
            .map(|(p, o)| {
                (
                    TopicPartition::new("t", *p),
                    PartitionStart {
                        offset: *o,
                        table_version: Some(*o),
                    },
                )
            })
            .collect()
    }

    fn shared(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn a_run_to_completion_plans_up_to_its_targets_and_nothing_else() {
        let assigned = starts(&[(0, 10), (1, 50), (2, 0), (3, 7)]);
        // Partition 1 is at its target, 2 appeared after the run was planned, 3 has none left.
        let targets = OffsetMap::from([
            (TopicPartition::new("t", 0), 40),
            (TopicPartition::new("t", 1), 50),
            (TopicPartition::new("t", 3), 5),
        ]);
        let plan = plan_batch(&assigned, Some(&targets), None, |_| Some(60), shared);
        let planned: Vec<(i32, i64, i64, i64)> = plan
            .partitions()
            .iter()
            .map(|p| (p.tp.partition, p.start.offset, p.end, p.latest))
            .collect();
        assert_eq!(planned, [(0, 10, 40, 60)]);
        assert!(!plan.complete());
        assert_eq!(plan.allowance(), i64::MAX, "no cap given, none applied");
    }

    #[test]
    fn a_continuous_batch_is_open_ended_and_capped_in_total() {
        let assigned = starts(&[(0, 10), (1, 0)]);
        let plan = plan_batch(
            &assigned,
            None,
            Some(100),
            |tp| (tp.partition == 0).then_some(25),
            shared,
        );
        let planned: Vec<(i32, i64, i64)> = plan
            .partitions()
            .iter()
            .map(|p| (p.tp.partition, p.end, p.latest))
            .collect();
        // Without a cached high watermark the lag is counted from the start.
        assert_eq!(planned, [(0, i64::MAX, 25), (1, i64::MAX, 0)]);
        assert_eq!(plan.allowance(), 100);
        assert!(plan_batch(&StartMap::new(), None, None, |_| None, shared).is_empty());
    }
}
